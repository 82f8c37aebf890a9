"""Streaming CFP (combined frequency and periodicity) front end.

One implementation serves live audio and files: :class:`StreamingCFP` consumes blocks of
any size at the analysis rate and emits one 3 x 360 frame per hop, computed on a causal
window that ends at the newest sample. A whole file is the same stream fed in one block
(:func:`cfp_from_signal`).

Per frame (MF-TFA reference, section 2): window, zero-pad to ``n_fft``, ``S = |FFT| ** g0``;
generalised cepstrum ``GC = max(Re FFT(S) / sqrt(N), 0)`` with a high-pass lifter, ``** g1``;
GCoS ``= max(Re FFT(GC) / sqrt(N), 0)`` with a low-cut, ``** g2``; then triangular
log-frequency filterbanks (60 bins per octave from 32 Hz) give the channels
``[spectrum, GCoS, GC]``. ``S`` and ``GC`` are even, so both cosine transforms run as DCT-I
through an ``N/2``-point FFT (see :mod:`melodyrt.rt._kernels`): the same numbers for half the
work, which is what keeps a hop inside its budget.

Multi-resolution (``window: multires``): the same transform runs on two causal windows that
end at the newest sample, the long asymmetric window (frequency resolution for low voices)
and a short one (4 ms falling side, a few ms of delay), each through its own
:class:`CfpFrame`. The output row ``i`` is ``(1 - w_i) * long + w_i * g_i * short`` in linear
CFP units (before ``log1p``), with ``w_i`` a raised-cosine crossfade in rows around
``split_hz`` (:func:`blend_weights`) and ``g_i`` per-channel, per-row factors that remove the
short branch's smaller FFT from its levels (:func:`branch_gains`). Blending linear values with
fixed coefficients keeps each channel a fixed power of the input gain.

Two deliberate differences from the reference code, both about exactness rather than
design: FFT bin ``j`` is placed at ``j * fs / N`` Hz (the reference uses
``linspace(0, fs/2, N/2)``, 0.05 % off), and a bin that falls exactly on a triangle's
centre gets weight 1 (the reference's strict inequalities would give 0, which never
happens there because of the offset grid).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from . import _kernels as K
from .config import CfpConfig, NormConfig
from .errors import AudioInputError

N_CHANNELS = 3
N_BINS = 360


def blackman_harris(length: int) -> NDArray[np.float64]:
    """Symmetric 4-term Blackman-Harris window.

    Parameters
    ----------
    length : int [samples]

    Returns
    -------
    window : ndarray [shape=(length,)] [float64]
    """
    n = np.arange(length)
    a = (0.35875, 0.48829, 0.14128, 0.01168)
    x = 2.0 * np.pi * n / (length - 1)
    return a[0] - a[1] * np.cos(x) + a[2] * np.cos(2 * x) - a[3] * np.cos(3 * x)


def analysis_window(cfg: CfpConfig) -> NDArray[np.float64]:
    """The analysis window, oldest sample first, scaled to unit L2 norm.

    The reference divides each frame by the norm of the window part it used; a stream always
    uses the whole window (the history before the first sample is silence), so the
    normalisation is one constant. A ``multires`` config has two windows: ask for those of
    :func:`branch_configs`.
    """
    if cfg.window == "multires":
        raise ValueError("a multires CFP has two windows: use analysis_window(c) for c in branch_configs(cfg)")
    if cfg.window == "symmetric":
        w = blackman_harris(cfg.win_length)
    else:
        rise = cfg.win_length - cfg.asym_fall
        w = np.concatenate(
            [blackman_harris(2 * rise)[:rise], blackman_harris(2 * cfg.asym_fall)[cfg.asym_fall :]]
        )
    return w / np.linalg.norm(w)


def window_delay(window: NDArray[np.float64]) -> tuple[float, int]:
    """Effective delay of a causal window whose last sample is the newest.

    Returns
    -------
    centroid : float [samples]
        Energy centroid (``sum(age * w**2) / sum(w**2)``): the time the frame describes.
    peak : int [samples]
        Age of the window's maximum.
    """
    age = np.arange(window.shape[0])[::-1]
    energy = window**2
    return float((age * energy).sum() / energy.sum()), int(age[np.argmax(window)])


def branch_configs(cfg: CfpConfig) -> tuple[CfpConfig, CfpConfig]:
    """The two single-window configs a ``multires`` config blends.

    Returns
    -------
    long, short : CfpConfig
        Both ``window: asymmetric``: ``long`` is ``cfg`` with only the window kind changed
        (its output equals the ``asymmetric`` CFP bit for bit); ``short`` has
        ``win_length=short_length``, ``asym_fall=short_fall``, ``n_fft=short_n_fft``.
    """
    if cfg.window != "multires":
        raise ValueError(f"branch_configs needs window 'multires', got {cfg.window!r}")
    long = replace(cfg, window="asymmetric")
    short = replace(
        cfg, window="asymmetric", win_length=cfg.short_length, asym_fall=cfg.short_fall, n_fft=cfg.short_n_fft
    )
    return long, short


def blend_weights(cfg: CfpConfig) -> NDArray[np.float64]:
    """Weight of the short window in each output row of a ``multires`` CFP.

    0 below the crossfade, 1 above it, a raised cosine over ``crossfade_bins`` rows centred
    on the row of ``split_hz`` (fractional: ``bins_per_octave * log2(split_hz / fmin)``).

    Returns
    -------
    w : ndarray [shape=(360,)] [float64], in [0, 1], non-decreasing
    """
    centre = cfg.bins_per_octave * np.log2(cfg.split_hz / cfg.fmin)
    t = np.clip((np.arange(N_BINS) - centre) / cfg.crossfade_bins + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def branch_gains(cfg: CfpConfig) -> NDArray[np.float64]:
    """Per-row factors that put the short branch's channels on the long branch's scale.

    The two branches differ in FFT size (``r = n_fft / short_n_fft``), which changes the
    levels but not the information: the spectral filterbank rows sum fewer, wider bins
    (factor: ratio of the two filterbanks' row sums, ``r`` where rows span many bins), the
    cepstrum ``Re FFT_N(S) / sqrt(N)`` of the same spectrum grows as ``sqrt(N)`` (GC:
    ``r ** (g1 / 2)`` after its power) and the GCoS, a transform of that cepstrum,
    as ``N ** ((g1 - 1) / 2)`` (``r ** (-(1 - g1) g2 / 2)`` after its power, times the row
    sums). With these factors a window gives the same features at either FFT size (up to
    the rows' bin quantisation); what is left between the branches is the windows' own
    difference in resolution and coherent gain.

    Returns
    -------
    gains : ndarray [shape=(3, 360)] [float64]
        For the channels ``[spectrum, GCoS, GC]`` of the short branch (1 in row 0, which is
        empty).
    """
    long, short = branch_configs(cfg)
    g0, g1, g2 = cfg.gammas
    r = long.n_fft / short.n_fft
    rows_long = spectral_filterbank(long).sum(axis=1)
    rows_short = spectral_filterbank(short).sum(axis=1)
    density = np.ones(N_BINS)
    used = rows_short > 0
    density[used] = rows_long[used] / rows_short[used]
    return np.stack([density, density * r ** (-(1.0 - g1) * g2 / 2.0), np.full(N_BINS, r ** (g1 / 2.0))])


def centre_frequencies(cfg: CfpConfig) -> NDArray[np.float64]:
    """Log-frequency centres ``fmin * 2 ** (i / bpo)`` below ``fmax`` [Hz], 361 by default."""
    n_max = int(np.ceil(np.log2(cfg.fmax / cfg.fmin) * cfg.bins_per_octave)) + 1
    c = cfg.fmin * 2.0 ** (np.arange(n_max) / cfg.bins_per_octave)
    return c[c < cfg.fmax]


def bin_frequencies(cfg: CfpConfig) -> NDArray[np.float64]:
    """Centre frequency of each of the 360 output rows [Hz] (row 0 is 32 Hz)."""
    return centre_frequencies(cfg)[:N_BINS]


def _triangle(freqs: NDArray, lo: float, mid: float, hi: float) -> NDArray:
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    w = np.where(freqs <= mid, up, down)
    return np.where((freqs > lo) & (freqs < hi), w, 0.0)


def spectral_filterbank(cfg: CfpConfig) -> NDArray[np.float64]:
    """Dense (360, n_freq_kept) triangular filterbank on the FFT-bin axis.

    Row 0 is zero (reference); where a triangle is narrower than a bin, the row takes the
    single bin nearest its lower neighbour, as the reference does.
    """
    c = centre_frequencies(cfg)
    fr = cfg.freq_resolution
    freqs = np.arange(cfg.n_freq_kept) * fr
    m = np.zeros((len(c) - 1, cfg.n_freq_kept))
    for i in range(1, len(c) - 1):
        lo_bin = int(round(c[i - 1] / fr))
        hi_bin = int(round(c[i + 1] / fr)) + 1
        if lo_bin >= hi_bin - 1:
            m[i, lo_bin] = 1.0
        else:
            m[i, lo_bin:hi_bin] = _triangle(freqs[lo_bin:hi_bin], c[i - 1], c[i], c[i + 1])
    return m


def cepstral_filterbank(cfg: CfpConfig) -> NDArray[np.float64]:
    """Dense (360, n_quef_kept) triangular filterbank on the axis ``f = fs / j``."""
    c = centre_frequencies(cfg)
    fs = cfg.sample_rate
    m = np.zeros((len(c) - 1, cfg.n_quef_kept))
    for i in range(1, len(c) - 1):
        j = np.arange(int(round(fs / c[i + 1])), int(round(fs / c[i - 1])) + 1)
        m[i, j] = _triangle(fs / j, c[i - 1], c[i], c[i + 1])
    return m


def _to_csr(m: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    rows, cols = np.nonzero(m)
    indptr = np.zeros(m.shape[0] + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(np.int64), m[rows, cols].astype(np.float64)


@dataclass(frozen=True)
class FeatureStats:
    """Fixed normalisation statistics stored with a model.

    Features are ``(log1p(cfp) - offset) / scale``.

    Attributes
    ----------
    offset, scale : ndarray [shape=(3, 360)] [float64]
    """

    offset: NDArray[np.float64]
    scale: NDArray[np.float64]

    @classmethod
    def identity(cls) -> "FeatureStats":
        """Statistics that leave ``log1p(cfp)`` unchanged."""
        return cls(np.zeros((N_CHANNELS, N_BINS)), np.ones((N_CHANNELS, N_BINS)))

    @classmethod
    def from_lists(cls, offset: list, scale: list) -> "FeatureStats":
        """Build from nested lists (as stored in YAML/JSON), broadcasting (3,) or (3, 1)."""
        off = np.broadcast_to(np.asarray(offset, np.float64).reshape(N_CHANNELS, -1), (N_CHANNELS, N_BINS))
        sc = np.broadcast_to(np.asarray(scale, np.float64).reshape(N_CHANNELS, -1), (N_CHANNELS, N_BINS))
        if np.any(sc <= 0) or not np.all(np.isfinite(sc)) or not np.all(np.isfinite(off)):
            raise ValueError("feature statistics must be finite with positive scale")
        return cls(np.ascontiguousarray(off), np.ascontiguousarray(sc))


class CfpFrame:
    """The per-frame CFP transform with all work buffers preallocated.

    Parameters
    ----------
    cfg : CfpConfig
    """

    def __init__(self, cfg: CfpConfig) -> None:
        self.cfg = cfg
        n = cfg.n_fft
        half = n // 2
        self.window = analysis_window(cfg)
        self._spec_fb = _to_csr(spectral_filterbank(cfg))
        self._quef_fb = _to_csr(cepstral_filterbank(cfg))
        self._frame = np.zeros(n)
        self._fft = np.zeros(half + 1, np.complex128)
        self._mag = np.zeros(half + 1)
        self._twiddled = np.zeros(half)
        self._half_fft = np.zeros(half // 2 + 1, np.complex128)
        self._gc = np.zeros(half + 1)
        self._gcos = np.zeros(cfg.n_freq_kept)
        k = np.arange(half)
        self._sin = np.sin(np.pi * k / half)
        self._cos = np.cos(np.pi * k / half)
        # Re FFT_N(x) / sqrt(N) of an even x is 2 / sqrt(N) times its DCT-I.
        self._scale = 2.0 / float(np.sqrt(n))
        lift = cfg.lifter_quefrency
        self._edge_cos = np.cos(2 * np.pi * lift * np.arange(cfg.n_freq_kept) / n) / np.sqrt(n)

    def compute(self, ring: NDArray[np.float64], pos: int, raw: NDArray[np.float64]) -> None:
        """Linear CFP of the ``win_length`` newest samples held in ``ring``.

        Parameters
        ----------
        ring : ndarray [shape=(n,)] [float64], ``n >= win_length``
        pos : int
            Index of the oldest sample in ``ring`` (the next to be overwritten).
        raw : ndarray [shape=(3, 360)] [float64]
            Output: ``[spectrum, GCoS, GC]`` before ``log1p``.
        """
        cfg = self.cfg
        g0, g1, g2 = cfg.gammas
        K.ring_read_windowed(ring, pos, self.window, self._frame)
        np.fft.rfft(self._frame, out=self._fft)
        first = K.spectrum_stage(self._fft, g0, self._mag, self._twiddled, self._sin, self._cos)
        np.fft.rfft(self._twiddled, out=self._half_fft)
        first = K.cepstrum_stage(
            self._half_fft, first, self._scale, cfg.lifter_quefrency, g1,
            self._gc, self._twiddled, self._sin, self._cos,
        )
        np.fft.rfft(self._twiddled, out=self._half_fft)
        K.gcos_filterbank_stage(
            self._half_fft, first, self._scale, self._gc[cfg.lifter_quefrency], self._edge_cos,
            cfg.lifter_frequency, g2, self._gcos,
            self._mag, self._gc, *self._spec_fb, *self._quef_fb, raw,
        )


class StreamingCFP:
    """Causal streaming CFP: blocks of samples in, completed frames out.

    Frame ``k`` (0-based) is emitted when sample ``(k + 1) * hop - 1`` arrives and is computed
    on the ``win_length`` newest samples (silence before the stream started). It describes
    the audio around sample ``(k + 1) * hop - latency_samples``.

    With ``window: multires`` the rows have different delays: the upper rows (short window)
    describe the audio ``delay_samples`` before the frame's end, the low rows (long window)
    later; :attr:`row_delay_samples` gives every row's.

    Attributes
    ----------
    delay_samples : float [samples at ``cfg.sample_rate``]
        Energy centroid of the analysis window: the age of the audio a frame describes.
        For ``multires``, that of the short window, which holds the rows that decide timing
        (an onset shows first in the rows above the crossfade).
    peak_delay_samples : int [samples]
        Age of the (short, for ``multires``) window's maximum.
    row_delay_samples : ndarray [shape=(360,)] [float64] [samples]
        Per-row delay: the blend-weighted energy centroids ``(1 - w) * long + w * short``
        (``w`` from :func:`blend_weights`); all equal ``delay_samples`` for single windows.

    Parameters
    ----------
    cfg : CfpConfig
    norm : NormConfig
        Feature scaling; ``song`` mode returns ``log1p`` frames (the caller normalises the
        whole song, see :func:`song_normalise`).
    stats : FeatureStats, optional
        Required for ``norm.mode == "fixed"``.
    max_block : int [samples]
        Initial size of the output buffer; grows once if a bigger block arrives.
    """

    def __init__(
        self,
        cfg: CfpConfig | None = None,
        norm: NormConfig | None = None,
        stats: FeatureStats | None = None,
        max_block: int = 4096,
    ) -> None:
        self.cfg = cfg or CfpConfig()
        self.norm = norm or NormConfig(mode="none")
        if self.norm.mode == "fixed" and stats is None:
            raise ValueError("norm mode 'fixed' needs FeatureStats (they ship with the model)")
        self.stats = stats if stats is not None else FeatureStats.identity()
        self._raw = np.zeros((N_CHANNELS, N_BINS))
        self._short: CfpFrame | None = None
        if self.cfg.window == "multires":
            long, short = branch_configs(self.cfg)
            self._core, self._short = CfpFrame(long), CfpFrame(short)
            w = blend_weights(self.cfg)
            self._coef_long = np.ascontiguousarray(np.broadcast_to(1.0 - w, (N_CHANNELS, N_BINS)))
            self._coef_short = branch_gains(self.cfg) * w
            self._raw_long = np.zeros((N_CHANNELS, N_BINS))
            self._raw_short = np.zeros((N_CHANNELS, N_BINS))
            long_delay = window_delay(self._core.window)[0]
            self.delay_samples, self.peak_delay_samples = window_delay(self._short.window)
            self.row_delay_samples = (1.0 - w) * long_delay + w * self.delay_samples
        else:
            self._core = CfpFrame(self.cfg)
            self.delay_samples, self.peak_delay_samples = window_delay(self._core.window)
            self.row_delay_samples = np.full(N_BINS, self.delay_samples)
        self._ring = np.zeros(self.cfg.win_length)
        self._peak = np.zeros(N_CHANNELS)
        self._decay = float(np.exp(-self.cfg.hop_seconds / self.norm.running_release))
        self._out = np.zeros((max_block // self.cfg.hop + 1, N_CHANNELS, N_BINS), np.float32)
        self.reset()

    @property
    def latency_samples(self) -> int:
        """:attr:`delay_samples` rounded [samples at ``cfg.sample_rate``].

        The age of the audio a frame describes, counted back from the frame's newest sample
        (the energy centroid of the window; for ``multires`` of the short window, so the
        rows below the crossfade are later: see :attr:`row_delay_samples`). It does not
        include the wait for a hop to fill (up to ``hop - 1`` samples) nor compute time.
        """
        return int(round(self.delay_samples))

    def reset(self) -> None:
        """Forget all audio: silence history, counters and running statistics to zero."""
        self._ring[:] = 0.0
        self._pos = 0
        self._since_hop = 0
        self._peak[:] = 0.0
        self.frames_emitted = 0
        self.samples_seen = 0
        self.samples_sanitised = 0

    def warmup(self) -> None:
        """Compile (or load) the numba kernels and run one frame, leaving no state behind."""
        K.warm_up()
        self._compute()
        self._finish(self._out[0])
        self.reset()

    def process(self, block: NDArray) -> NDArray[np.float32]:
        """Feed samples at ``cfg.sample_rate``; return the frames this block completed.

        Parameters
        ----------
        block : ndarray [shape=(n,)] [float32 or float64]
            Mono samples; NaN/inf are replaced by 0 and counted in ``samples_sanitised``.

        Returns
        -------
        frames : ndarray [shape=(k, 3, 360)] [float32]
            A view into an internal buffer, valid until the next call: copy to keep it.
        """
        block = _as_mono_float(block)
        n = block.shape[0]
        hop = self.cfg.hop
        needed = (self._since_hop + n) // hop
        if needed > self._out.shape[0]:
            self._out = np.zeros((needed, N_CHANNELS, N_BINS), np.float32)
        i = k = 0
        while i < n:
            take = min(n - i, hop - self._since_hop)
            self._pos, bad = K.ring_write(self._ring, self._pos, block, i, take)
            self.samples_sanitised += bad
            self._since_hop += take
            i += take
            if self._since_hop == hop:
                self._since_hop = 0
                self._compute()
                self._finish(self._out[k])
                k += 1
        self.samples_seen += n
        self.frames_emitted += k
        return self._out[:k]

    def _compute(self) -> None:
        """Linear CFP of the newest window(s) into ``self._raw``."""
        if self._short is None:
            self._core.compute(self._ring, self._pos, self._raw)
            return
        self._core.compute(self._ring, self._pos, self._raw_long)
        self._short.compute(self._ring, self._pos, self._raw_short)
        K.blend_rows(self._raw_long, self._coef_long, self._raw_short, self._coef_short, self._raw)

    def _finish(self, out: NDArray[np.float32]) -> None:
        mode = self.norm.mode
        if mode == "running":
            K.log_running_peak(self._raw, self._peak, self._decay, 1e-3, out)
        else:
            st = self.stats if mode == "fixed" else _IDENTITY
            K.log_affine(self._raw, st.offset, st.scale, out)


_IDENTITY = FeatureStats.identity()


def _as_mono_float(block: NDArray) -> NDArray:
    block = np.asarray(block)
    if block.ndim == 2 and block.shape[1] == 1:
        block = block[:, 0]
    if block.ndim != 1:
        raise AudioInputError(f"expected mono samples of shape (n,), got shape {block.shape}")
    if block.dtype not in (np.float32, np.float64):
        if not np.issubdtype(block.dtype, np.number):
            raise AudioInputError(f"audio samples must be numeric, got {block.dtype}")
        block = block.astype(np.float64)
    return block


def cfp_from_signal(
    x: NDArray,
    cfg: CfpConfig | None = None,
    norm: NormConfig | None = None,
    stats: FeatureStats | None = None,
) -> NDArray[np.float32]:
    """CFP of a whole signal: the streaming front end fed from a file.

    Parameters
    ----------
    x : ndarray [shape=(n,)]
        Mono samples at ``cfg.sample_rate``.

    Returns
    -------
    frames : ndarray [shape=(n // hop, 3, 360)] [float32]
        With ``norm.mode == "song"``, min-max normalised over the whole signal.
    """
    norm = norm or NormConfig(mode="none")
    stream = StreamingCFP(cfg, norm, stats, max_block=len(x) + 1)
    frames = stream.process(x).copy()
    if norm.mode == "song":
        frames = song_normalise(frames)
    return frames


def song_normalise(frames: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-channel min-max over a whole song (the paper's offline normalisation).

    Parameters
    ----------
    frames : ndarray [shape=(T, 3, 360)]
    """
    lo = frames.min(axis=(0, 2), keepdims=True)
    hi = frames.max(axis=(0, 2), keepdims=True)
    return ((frames - lo) / np.maximum(hi - lo, 1e-8)).astype(np.float32)

"""Streaming resampling from the device rate to the analysis rate (8 kHz), with a short delay.

One implementation serves live audio and files: :class:`StreamingResampler` is a rational
polyphase FIR resampler and :func:`melodyrt.rt.audio_io.load_audio` feeds it a whole file
(through :func:`resample_signal`, which removes the delay).

Design
------
The analysis only looks at 0..2050 Hz (the CFP front end's top frequency), so the
anti-alias low-pass can have a wide transition band and therefore a short impulse response.
For a conversion ``in_rate -> out_rate`` with ``g = gcd``, ``up = out_rate / g`` and
``down = in_rate / g``, the stream evaluates one linear-phase prototype low-pass, defined at
``up * in_rate``, only where the output needs it (``up`` polyphase rows of
``taps_per_phase`` taps each). The prototype is a Kaiser-windowed sinc designed per (rates,
quality) at construction (:func:`design_filter`, cached); its edges are fractions of the
narrower of the two rates ``r`` (8 kHz here):

======= ========= ========= ========== =========================== ==============================
quality passband  stopband  stopband   latency at 8 kHz            measured worst stopband [dB]
        edge [Hz] edge [Hz] [dB], min  [samples] / [ms]            over all supported rates
======= ========= ========= ========== =========================== ==============================
QQ      2200      5900      70         5 / 0.625                   71.7
LQ      2200      5900      80         6 / 0.75                    85.7
MQ      2200      4000      70         10 / 1.25                   70.9
HQ      2200      4000      80         12 / 1.5 (default)          84.6
VHQ     3000      4000      100        26 / 3.25                   100.6
======= ========= ========= ========== =========================== ==============================

(for ``out_rate = 8000``; the edges scale with ``r``: 0.275 r, 0.7375 r, 0.5 r, 0.375 r; the
latency is the same from every input rate). With a 4 kHz stopband ("MQ", "HQ", "VHQ")
nothing folds anywhere into 0..4 kHz above the stopband level; "QQ" and "LQ" only keep
what would fold into 0..2.1 kHz out (input between 4 and 5.9 kHz folds, attenuated only by
the roll-off, into 2.1-4 kHz, above the CFP's band but inside the cepstrum's input). The
passband ripple is below 0.003 dB in every recipe (0.0006 dB for "HQ"). Between the
passband and stopband edges the response rolls off (-6 dB half way, at 3.1 kHz for "HQ"):
audio there is attenuated, not lost.

Timing
------
The prototype is symmetric about ``latency_samples * down`` (its length is ``2 *
latency_samples * down + 1`` at ``up * in_rate``), so the group delay is exactly
``latency_samples`` output samples, an integer by construction (the length is rounded up
to make it one). The stream starts at time 0 with zeros in the history and releases
output sample ``i`` as soon as the input has passed time ``i / out_rate``: after ``n``
input samples it has emitted exactly ``floor(n * out_rate / in_rate)`` output samples (no
bursts, no stalls), and output sample ``i`` describes input time ``(i - latency_samples) /
out_rate``. :meth:`StreamingResampler.flush` feeds zeros to emit the samples still owed at
the end of a signal, up to the last one whose time lies within the signal.

Cost: one multiply-add per tap and output sample (145 at 48 kHz and 133 at 44.1 kHz for
"HQ"), a few microseconds per 128-frame device block, most of it call overhead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import _resample_kernels as _k
from .errors import AudioInputError

#: Input rates accepted (the usual device and file rates) [Hz].
SUPPORTED_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
#: Filter recipes, fastest first (names kept from the soxr recipes the config accepts).
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
#: quality -> (passband edge, stopband edge) as fractions of the narrower rate, stopband
#: attenuation [dB].
RECIPES: dict[str, tuple[float, float, float]] = {
    "QQ": (0.275, 0.7375, 70.0),
    "LQ": (0.275, 0.7375, 80.0),
    "MQ": (0.275, 0.5, 70.0),
    "HQ": (0.275, 0.5, 80.0),
    "VHQ": (0.375, 0.5, 100.0),
}
DEFAULT_QUALITY = "HQ"

# Input block the buffers are first sized for [samples]; a bigger block grows them once.
_INITIAL_BLOCK = 4096
# out_stop when nothing limits the output (the kernel compares with int64).
_NO_STOP = 1 << 62


def check_rate(rate: object, what: str = "sample rate") -> int:
    """Validate a device or file rate.

    Parameters
    ----------
    rate : int [Hz]
    what : str
        Names the rate in the error message (e.g. the file it came from).

    Returns
    -------
    rate : int [Hz]

    Raises
    ------
    AudioInputError
        When the rate is not one of :data:`SUPPORTED_RATES`.
    """
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or int(rate) not in SUPPORTED_RATES:
        listed = ", ".join(str(r) for r in SUPPORTED_RATES)
        raise AudioInputError(f"unsupported {what} {rate!r} Hz (supported: {listed})")
    return int(rate)


def _check_quality(quality: object) -> str:
    if quality not in QUALITIES:
        raise AudioInputError(f"resampler quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    return str(quality)


def _kaiser_beta(atten_db: float) -> float:
    """Kaiser's window parameter for a stopband attenuation [dB]."""
    if atten_db > 50.0:
        return 0.1102 * (atten_db - 8.7)
    if atten_db >= 21.0:
        return 0.5842 * (atten_db - 21.0) ** 0.4 + 0.07886 * (atten_db - 21.0)
    return 0.0


@dataclass(frozen=True, eq=False)
class FilterDesign:
    """One rational resampler's low-pass and its measured response.

    Attributes
    ----------
    in_rate, out_rate : int [Hz]
    up, down : int
        ``out_rate / in_rate = up / down`` in lowest terms.
    quality : str
    latency_samples : int [samples at out_rate]
        Group delay of the filter (exact: the prototype is symmetric).
    passband_hz, stopband_hz : float [Hz]
        Design edges.
    beta : float
        Kaiser window parameter.
    prototype : ndarray [shape=(2 * latency_samples * down + 1,)] [float64]
        The low-pass at ``up * in_rate``, DC gain ``up``.
    phases : ndarray [shape=(up, taps_per_phase)] [float64]
        Polyphase rows, each reversed (see :func:`melodyrt.rt._resample_kernels.polyphase_block`).
    stopband_db : float [dB]
        Measured: worst attenuation from ``stopband_hz`` up to ``up * in_rate / 2``
        (positive number).
    passband_ripple_db : float [dB]
        Measured: largest deviation from 0 dB over 0..``passband_hz``.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    quality: str
    latency_samples: int
    passband_hz: float
    stopband_hz: float
    beta: float
    prototype: NDArray[np.float64]
    phases: NDArray[np.float64]
    stopband_db: float
    passband_ripple_db: float

    @property
    def taps_per_phase(self) -> int:
        """Multiply-adds per output sample."""
        return int(self.phases.shape[1])

    @property
    def latency_ms(self) -> float:
        """Group delay [ms]."""
        return 1000.0 * self.latency_samples / self.out_rate

    def response(self, n_fft: int | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Magnitude response of the prototype, normalised to 1 at DC.

        Returns
        -------
        freqs : ndarray [Hz], 0 .. ``up * in_rate / 2``
        magnitude : ndarray (linear)
        """
        return _response(self.prototype, self.up, self.in_rate, n_fft)


def _response(h: NDArray, up: int, in_rate: int, n_fft: int | None = None) -> tuple[NDArray, NDArray]:
    if n_fft is None:
        n_fft = max(1 << 14, 1 << int(math.ceil(math.log2(16 * h.shape[0]))))
    mag = np.abs(np.fft.rfft(h, n_fft)) / up
    return np.fft.rfftfreq(n_fft, 1.0 / (up * in_rate)), mag


def _kaiser_sinc(up: int, down: int, in_rate: int, latency: int, fp: float, fs_: float, atten: float):
    """Prototype of ``2 * latency * down + 1`` taps at ``up * in_rate``, and its beta."""
    centre = latency * down
    n = 2 * centre + 1
    # Attenuation the length allows for this transition width (Kaiser's formula), >= atten.
    half_width_s = latency / (up * in_rate / down)
    reach = 2.285 * (2.0 * half_width_s) * 2.0 * math.pi * (fs_ - fp) + 7.95
    beta = _kaiser_beta(max(atten, reach))
    cutoff = 0.5 * (fp + fs_)
    q = np.arange(n, dtype=np.float64) - centre
    h = np.sinc(2.0 * cutoff * q / (up * in_rate)) * np.kaiser(n, beta)
    h *= up / h.sum()
    return h, beta


@functools.lru_cache(maxsize=None)
def design_filter(in_rate: int, out_rate: int = 8000, quality: str = DEFAULT_QUALITY) -> FilterDesign:
    """The low-pass of one conversion (cached).

    Starts from the shortest latency (an integer number of output samples) that Kaiser's
    length estimate allows for the recipe, measures the response, and lengthens the filter
    one output sample at a time until the measured stopband meets the recipe.

    Raises
    ------
    AudioInputError
        Unsupported rate or quality; ``in_rate == out_rate`` (nothing to design).
    """
    in_rate = check_rate(in_rate, "input sample rate")
    quality = _check_quality(quality)
    if not isinstance(out_rate, (int, np.integer)) or isinstance(out_rate, bool) or out_rate <= 0:
        raise AudioInputError(f"output sample rate must be a positive integer, got {out_rate!r}")
    out_rate = int(out_rate)
    if in_rate == out_rate:
        raise AudioInputError("no filter to design: input and output rates are equal")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    narrow = min(in_rate, out_rate)
    p_frac, s_frac, atten = RECIPES[quality]
    fp, fs_ = p_frac * narrow, s_frac * narrow
    half_width_s = (atten - 7.95) / (2.285 * 2.0 * math.pi * (fs_ - fp)) / 2.0
    latency = max(1, math.ceil(half_width_s * out_rate - 1e-9))
    while True:
        h, beta = _kaiser_sinc(up, down, in_rate, latency, fp, fs_, atten)
        freqs, mag = _response(h, up, in_rate)
        with np.errstate(divide="ignore"):
            stop_db = float(-20.0 * np.log10(mag[freqs >= fs_].max()))
            ripple_db = float(np.abs(20.0 * np.log10(mag[freqs <= fp])).max())
        if stop_db >= atten or latency > 4 * out_rate:  # the second: never, but bounded
            break
        latency += 1
    k_taps = -(-h.shape[0] // up)
    padded = np.zeros(up * k_taps)
    padded[: h.shape[0]] = h
    # Row p holds taps h[p], h[p + up], ...; reversed so the kernel walks forward in time.
    phases = np.ascontiguousarray(padded.reshape(k_taps, up).T[:, ::-1])
    h.setflags(write=False)
    phases.setflags(write=False)
    return FilterDesign(
        in_rate=in_rate, out_rate=out_rate, up=up, down=down, quality=quality, latency_samples=latency,
        passband_hz=fp, stopband_hz=fs_, beta=beta, prototype=h, phases=phases,
        stopband_db=stop_db, passband_ripple_db=ripple_db,
    )


class StreamingResampler:
    """Block-by-block resampling of mono audio with a short, constant, reported latency.

    Parameters
    ----------
    in_rate : int [Hz]
        Device or file rate, one of :data:`SUPPORTED_RATES`.
    out_rate : int [Hz]
        Analysis rate (8000 for the CFP front end).
    quality : {"QQ", "LQ", "MQ", "HQ", "VHQ"}
        Filter recipe (see the module docstring); the latency depends on it ("HQ": 12
        samples = 1.5 ms at 8 kHz from every input rate).

    Attributes
    ----------
    design : FilterDesign or None
        The low-pass (``None`` when passing through).
    late_samples : int
        Always 0: kept from the soxr version; output is never late.

    Notes
    -----
    Output sample ``i`` describes input time ``(i - latency_samples) / out_rate``: the
    stream begins with the filter's response to the zeros before time 0. After ``n`` input
    samples it has emitted exactly ``floor(n * out_rate / in_rate)`` samples. At equal rates
    samples pass through unchanged (non-finite ones still replaced by 0), latency 0.

    Buffers are allocated at construction for blocks up to 4096 input samples and grown
    once if a bigger block arrives; :meth:`process` allocates nothing else (a non-float32
    or non-contiguous block is converted into a preallocated buffer). The numba kernel is
    compiled or loaded from its disk cache at construction, not in the first block.
    """

    def __init__(self, in_rate: int, out_rate: int = 8000, quality: str = DEFAULT_QUALITY) -> None:
        self.in_rate = check_rate(in_rate, "input sample rate")
        if not isinstance(out_rate, (int, np.integer)) or isinstance(out_rate, bool) or out_rate <= 0:
            raise AudioInputError(f"output sample rate must be a positive integer, got {out_rate!r}")
        self.quality = _check_quality(quality)
        self.out_rate = int(out_rate)
        self.passthrough = self.in_rate == self.out_rate
        self.design = None if self.passthrough else design_filter(self.in_rate, self.out_rate, self.quality)
        if self.design is None:
            self._up = self._down = 1
            self._phases = np.ones((1, 1))
            self._phases.setflags(write=False)  # same numba signature as the designs
            self._latency = 0
        else:
            self._up, self._down = self.design.up, self.design.down
            self._phases = self.design.phases
            self._latency = self.design.latency_samples
        self._k_taps = int(self._phases.shape[1])
        self._state = np.zeros(_k.STATE_SIZE, np.int64)
        self._in = self._hist = self._out = np.zeros(0, np.float32)
        self._capacity = 0
        self._ensure_capacity(_INITIAL_BLOCK)
        self.late_samples = 0
        self.reset()
        # Compile or load the kernel now, with the very array types process() passes (an
        # empty block changes no state), so the first real block does not wait.
        _k.polyphase_block(
            self._in[:0], 0, self._hist, self._state, self._phases, self._up, self._down, _NO_STOP, self._out
        )

    @property
    def latency_samples(self) -> int:
        """Constant delay of the output [samples at ``out_rate``]; 0 when passing through."""
        return self._latency

    @property
    def latency_seconds(self) -> float:
        """Constant delay of the output [s]."""
        return self._latency / self.out_rate

    @property
    def samples_in(self) -> int:
        """Input samples consumed since the last reset."""
        return int(self._state[_k.IN_TOTAL])

    @property
    def samples_out(self) -> int:
        """Output samples emitted since the last reset (by :meth:`process`)."""
        return int(self._state[_k.OUT_TOTAL])

    @property
    def samples_sanitised(self) -> int:
        """Non-finite input samples replaced by 0 since the last reset."""
        return int(self._state[_k.SANITISED])

    def reset(self) -> None:
        """Start a new stream: zero history and counters (no reallocation)."""
        self._hist[:] = 0.0
        self._state[:] = 0
        self._state[_k.HELD] = self._k_taps - 1  # zeros standing for the samples before time 0
        self.late_samples = 0

    def _ensure_capacity(self, n_in: int) -> None:
        if n_in <= self._capacity:
            return
        held = int(self._state[_k.HELD])
        hist = np.zeros(self._k_taps + self._down // self._up + 2 + n_in, np.float32)
        hist[:held] = self._hist[:held]
        self._hist = hist
        self._in = np.zeros(n_in, np.float32)
        self._out = np.zeros(n_in * self._up // self._down + 2, np.float32)
        self._capacity = n_in

    def _as_input(self, block: NDArray) -> NDArray[np.float32]:
        block = np.asarray(block)
        if block.ndim == 2 and block.shape[1] == 1:
            block = block[:, 0]
        if block.ndim != 1:
            raise AudioInputError(f"expected mono samples of shape (n,), got shape {block.shape}")
        if block.dtype != np.float32 or not block.flags.c_contiguous or not block.flags.writeable:
            if not np.issubdtype(block.dtype, np.number) or np.issubdtype(block.dtype, np.complexfloating):
                raise AudioInputError(f"audio samples must be real numbers, got {block.dtype}")
            n = block.shape[0]
            self._ensure_capacity(n)
            buf = self._in[:n]
            with np.errstate(over="ignore", invalid="ignore"):
                buf[:] = block  # converts by value into the preallocated buffer
            return buf
        self._ensure_capacity(block.shape[0])
        return block

    def process(self, block: NDArray) -> NDArray[np.float32]:
        """Resample one block.

        Parameters
        ----------
        block : ndarray [shape=(n,) or (n, 1)] [float32 or float64]
            Mono samples at ``in_rate``, any length (0 included). Other real dtypes are
            converted by value (integer PCM is not rescaled). NaN and inf become 0 and are
            counted in :attr:`samples_sanitised`.

        Returns
        -------
        out : ndarray [shape=(m,)] [float32]
            Samples at ``out_rate``; ``m`` keeps the output exactly ``floor(samples_in *
            out_rate / in_rate)`` long. A view into an internal buffer, overwritten by the
            next call: copy it to keep it.
        """
        x = self._as_input(block)
        n = x.shape[0]
        if self.passthrough:
            out = self._out[:n]
            n_out = _k.polyphase_block(x, n, self._hist, self._state, self._phases, 1, 1, _NO_STOP, out)
            return out[:n_out]
        n_out = _k.polyphase_block(
            x, n, self._hist, self._state, self._phases, self._up, self._down, _NO_STOP, self._out
        )
        return self._out[:n_out]

    def flush(self) -> NDArray[np.float32]:
        """End the stream: return the samples still owed, then :meth:`reset`.

        After ``n > 0`` input samples, the stream's whole output (everything
        :meth:`process` returned plus this tail) is ``latency_samples + ceil(n * out_rate /
        in_rate)`` samples long: its last sample describes the last instant of the input
        (the filter sees zeros after the end). Nothing is owed when nothing was fed, or
        when passing through.

        Returns
        -------
        tail : ndarray [shape=(m,)] [float32]
            A new array (not a view).
        """
        n_in = self.samples_in
        if self.passthrough or n_in == 0:
            self.reset()
            return np.zeros(0, np.float32)
        up, down = self._up, self._down
        target = self._latency + -(-n_in * up // down)
        # Output m is released once m < (inputs consumed) * up // down: feed zeros until
        # ceil(target * down / up) inputs (out_stop keeps the count at target).
        zeros_needed = -(-target * down // up) - n_in
        parts = []
        zeros = self._in
        zeros[:] = 0.0
        while True:
            z = min(max(zeros_needed, 0), zeros.shape[0])
            n_out = _k.polyphase_block(
                zeros, z, self._hist, self._state, self._phases, up, down, target, self._out
            )
            parts.append(self._out[:n_out].copy())
            zeros_needed -= z
            if zeros_needed <= 0:
                break
        tail = np.concatenate(parts)
        self.reset()
        return tail


def resample_signal(
    x: NDArray, in_rate: int, out_rate: int = 8000, quality: str = DEFAULT_QUALITY
) -> NDArray[np.float32]:
    """Resample a whole signal through :class:`StreamingResampler`, latency removed.

    Output sample ``i`` describes input time ``i / out_rate`` exactly (the latency is an
    integer number of output samples).

    Parameters
    ----------
    x : ndarray [shape=(n,)]
        Mono samples at ``in_rate``.

    Returns
    -------
    y : ndarray [shape=(ceil(n * out_rate / in_rate),)] [float32]
    """
    stream = StreamingResampler(in_rate, out_rate, quality)
    x = np.asarray(x)
    chunk = 1 << 16  # bounded working memory for long files
    parts = [stream.process(x[i : i + chunk]).copy() for i in range(0, x.shape[0], chunk)]
    latency = stream.latency_samples
    parts.append(stream.flush())
    y = np.concatenate(parts)
    return y[latency:]

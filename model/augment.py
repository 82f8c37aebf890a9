"""Training segments rendered from audio: remixed, pitch-shifted, produced and mastered.

:class:`AudioSegmentSampler` replaces the cached-feature ``SegmentSampler`` of
:mod:`melodyrt.model.train` when the training config enables ``augment`` (same
``batch(rng) -> (x, classes, mask)``). It holds every training clip's voice and
accompaniment at the analysis rate in memory and renders each segment anew:

1. **Remix**: the voice of one clip over the accompaniment of another training clip (at a
   random offset), or over its own, or alone; random SNR of whole-clip RMS levels.
2. **Voice pitch shift** by resampling the voice alone (:func:`pitch_shift`): the voice
   gets higher *and* shorter by the same ratio, and the labels are read at the matching
   times of the original annotation and scaled by the ratio.
3. **Production** on the mix: random EQ (:func:`random_eq`), reverb with a synthetic IR
   (:func:`synthetic_ir`), RMS compression (:func:`compress`).
4. **Mastering levels** (:func:`master_level`): occasional look-ahead limiting, then peak
   or gated-loudness normalisation to a random target, clipped to full scale.
5. **The live input path**: sometimes up to 44.1 or 48 kHz and back down through the
   live :class:`~melodyrt.rt.resample.StreamingResampler` (:func:`through_device_rate`).
6. **CFP** by the one streaming front end (:class:`~melodyrt.rt.cfp.StreamingCFP`,
   ``NormConfig(mode="none")``), fed a window's worth of audio before the segment so that
   its first frame sees real history; then the normalisation ``SegmentSampler`` uses
   (:func:`melodyrt.model.train.normalise`). Labels come from
   :func:`~melodyrt.model.features.frame_times` with the front end's ``delay_samples`` and
   :func:`~melodyrt.model.datasets.labels_on_frames`, exactly as ``FeatureCache.labels``
   computes them, so any ``CfpConfig`` (window kind, delay) stays aligned.

Every random choice of a batch comes from one seed drawn from the generator passed to
:meth:`AudioSegmentSampler.batch`, so a batch is the same whether it was rendered in the
training process or ahead of time by a background worker (``augment.workers``).

numpy and scipy only (scipy comes with mir_eval in the ``[train]`` extra).
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import functools
import math
import multiprocessing
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy import signal as sps

from melodyrt.rt.cfp import FeatureStats, StreamingCFP
from melodyrt.rt.config import CfpConfig, NormConfig
from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.pitch import hz_to_class
from melodyrt.rt.resample import resample_signal

from .datasets import Track, labels_on_frames, load_track_audio
from .features import frame_times
from .train import normalise
from .train_config import AugmentConfig, TrainConfig

#: Denominator of the rational pitch-shift ratios: shifts come in steps of about 17 cents
#: (the labels use the exact ratio, so this only quantises the random draw).
SHIFT_DENOMINATOR = 100
_SEED_HIGH = 2**63


# --------------------------------------------------------------------------- levels


def rms(x: NDArray) -> float:
    """Root mean square of a signal (0 for an empty one)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def db(x: float) -> float:
    """Amplitude ratio to dB (-inf for 0)."""
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def from_db(v: float) -> float:
    """dB to amplitude ratio."""
    return 10.0 ** (v / 20.0)


def accompaniment_gain(snr_db: float, voice_rms: float, accomp_rms: float) -> float:
    """Gain ``g`` on the accompaniment so that ``voice_rms / (g * accomp_rms)`` is ``snr_db``.

    Parameters
    ----------
    snr_db : float [dB]
    voice_rms, accomp_rms : float
        Reference levels (whole-clip RMS in the sampler). A silent accompaniment gets 0.
    """
    if accomp_rms <= 0.0:
        return 0.0
    return voice_rms / accomp_rms * from_db(-snr_db)


def gated_loudness(x: NDArray, sr: int, block_s: float = 0.05, rel_gate_db: float = -20.0,
                   abs_gate_dbfs: float = -70.0) -> float:
    """Gated RMS level [dBFS] (in the spirit of EBU R128's gating, not its K-weighting).

    Block powers over ``block_s``; blocks under ``abs_gate_dbfs`` are dropped, then those
    more than ``rel_gate_db`` under the mean of the rest. Rests and silence between phrases
    therefore do not pull the level of a sung segment down.

    Returns
    -------
    level : float [dBFS], -inf when every block is under the absolute gate
    """
    n = max(1, int(round(block_s * sr)))
    k = x.shape[0] // n
    if k == 0:
        p = np.array([np.mean(np.square(x, dtype=np.float64))]) if x.size else np.zeros(0)
    else:
        p = np.mean(np.square(x[: k * n].astype(np.float64)).reshape(k, n), axis=1)
    p = p[p > 10.0 ** (abs_gate_dbfs / 10.0)]
    if p.size == 0:
        return -math.inf
    p = p[p > p.mean() * 10.0 ** (rel_gate_db / 10.0)]
    return 10.0 * math.log10(float(p.mean()))


def limit(x: NDArray, ceiling: float, sr: int, window_s: float = 0.005) -> NDArray[np.float64]:
    """Look-ahead brick-wall limiter: no sample leaves ``[-ceiling, ceiling]``.

    The gain each sample needs is spread to ``2 w + 1`` neighbours (running minimum) and
    smoothed over ``w`` samples, so it falls before a peak and recovers after it without
    steps; the few samples the smoothing leaves over the ceiling are clipped.
    """
    x = np.asarray(x, np.float64)
    w = max(1, int(round(window_s * sr)))
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(x), 1e-12))
    gain = ndimage.uniform_filter1d(ndimage.minimum_filter1d(need, 2 * w + 1, mode="nearest"), w, mode="nearest")
    return np.clip(x * gain, -ceiling, ceiling)


def master_level(x: NDArray, rng: np.random.Generator, acfg: AugmentConfig, sr: int) -> tuple[NDArray[np.float64], dict]:
    """Levels as a song master would have them.

    With probability ``limit_prob`` the peaks are first driven ``limit_drive_db`` over a
    limiter's ceiling; then the signal is peak-normalised (probability ``peak_prob``) or
    gated-loudness-normalised to a random target, and clipped to full scale.

    Returns
    -------
    y : ndarray [shape=x.shape] [float64]
    info : dict
        ``mode`` ("peak", "loudness" or "silent"), ``target_dbfs``, ``limited`` (bool).
    """
    y = np.asarray(x, np.float64)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    info: dict[str, Any] = {"limited": False}
    if peak <= 1e-6:
        info.update(mode="silent", target_dbfs=-math.inf)
        return y, info
    if rng.random() < acfg.limit_prob:
        drive = float(rng.uniform(*acfg.limit_drive_db))
        y = limit(y * (from_db(drive) / peak), 1.0, sr)
        info["limited"] = True
    if rng.random() < acfg.peak_prob:
        target = float(rng.uniform(*acfg.peak_dbfs))
        y = y * (from_db(target) / float(np.max(np.abs(y))))
        info.update(mode="peak", target_dbfs=target)
    else:
        target = float(rng.uniform(*acfg.loudness_dbfs))
        level = gated_loudness(y, sr)
        if math.isfinite(level):
            y = y * from_db(target - level)
            info.update(mode="loudness", target_dbfs=target)
        else:  # nothing above the gate: leave the (near) silence as it is
            info.update(mode="silent", target_dbfs=-math.inf)
    return np.clip(y, -1.0, 1.0), info


# --------------------------------------------------------------------------- pitch


def shift_ratio(semitones: float, denominator: int = SHIFT_DENOMINATOR) -> tuple[int, int]:
    """Rational pitch ratio ``p / q`` nearest ``2 ** (semitones / 12)``, in lowest terms."""
    p = max(1, int(round(denominator * 2.0 ** (semitones / 12.0))))
    g = math.gcd(p, denominator)
    return p // g, denominator // g


def pitch_shift(x: NDArray, p: int, q: int) -> NDArray[np.float64]:
    """Transpose by the ratio ``r = p / q`` through band-limited resampling.

    Output sample ``i`` is the input at position ``i * r``: every frequency is multiplied
    by ``r`` and the signal lasts ``1 / r`` as long (formants move with the pitch).

    Parameters
    ----------
    x : ndarray [shape=(n,)]
    p, q : int

    Returns
    -------
    y : ndarray [shape=(ceil(n * q / p),)] [float64]
    """
    x = np.asarray(x, np.float64)
    if p == q:
        return x.copy()
    return sps.resample_poly(x, q, p)


# --------------------------------------------------------------------------- production


def _rbj(kind: str, f0: float, gain_db: float, q: float, sr: int) -> NDArray[np.float64]:
    """One biquad section ``[b0, b1, b2, a0, a1, a2]`` (normalised, a0 = 1) from the
    well-known "Audio EQ Cookbook" design equations (peaking, low shelf, high shelf)."""
    a = 10.0 ** (gain_db / 40.0)
    w = 2.0 * math.pi * f0 / sr
    cw, sw = math.cos(w), math.sin(w)
    if kind == "peak":
        alpha = sw / (2.0 * q)
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    else:
        alpha = sw / 2.0 * math.sqrt(2.0)  # shelf slope 1
        sa = 2.0 * math.sqrt(a) * alpha
        if kind == "low":
            b = [a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw), a * ((a + 1) - (a - 1) * cw - sa)]
            den = [(a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - sa]
        else:
            b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa)]
            den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa]
    return np.array(b + den) / den[0]


def random_eq_sections(rng: np.random.Generator, max_gain_db: float, sr: int) -> NDArray[np.float64]:
    """Second-order sections of a random EQ (each band present with probability 1/2).

    Bands: low shelf at 60-400 Hz, high shelf at 1-3.5 kHz, up to two peaks at 150 Hz-3 kHz
    with Q 0.5-3; frequencies log-uniform, gains uniform in ``[-max_gain_db, max_gain_db]``.

    Returns
    -------
    sos : ndarray [shape=(n_sections, 6)] (possibly 0 sections)
    """
    def logu(lo: float, hi: float) -> float:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    sections = []
    if rng.random() < 0.5:
        sections.append(_rbj("low", logu(60, 400), rng.uniform(-max_gain_db, max_gain_db), 0.7, sr))
    if rng.random() < 0.5:
        sections.append(_rbj("high", logu(1000, min(3500, 0.45 * sr)), rng.uniform(-max_gain_db, max_gain_db), 0.7, sr))
    for _ in range(2):
        if rng.random() < 0.5:
            sections.append(_rbj("peak", logu(150, min(3000, 0.4 * sr)), rng.uniform(-max_gain_db, max_gain_db),
                                 rng.uniform(0.5, 3.0), sr))
    return np.array(sections).reshape(-1, 6)


def random_eq(x: NDArray, rng: np.random.Generator, max_gain_db: float, sr: int) -> NDArray[np.float64]:
    """Filter ``x`` through :func:`random_eq_sections`."""
    sos = random_eq_sections(rng, max_gain_db, sr)
    return sps.sosfilt(sos, x) if sos.shape[0] else np.asarray(x, np.float64)


def synthetic_ir(rng: np.random.Generator, rt60_s: float, sr: int) -> NDArray[np.float64]:
    """A room's late reverberation: exponentially decaying noise, unit energy.

    Decays 60 dB over ``rt60_s`` (truncated at 2 s), starts after a 5-30 ms pre-delay
    and is darkened by a random one-pole low-pass (absorbing walls).
    """
    n = max(8, int(min(rt60_s, 2.0) * sr))
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60_s)
    damp = float(rng.uniform(0.0, 0.7))
    ir = sps.lfilter([1.0 - damp], [1.0, -damp], ir)
    ir = np.concatenate([np.zeros(int(rng.uniform(0.005, 0.03) * sr)), ir])
    return ir / np.sqrt(np.sum(ir**2))


def reverb(x: NDArray, ir: NDArray, wet: float) -> NDArray[np.float64]:
    """``x`` plus ``wet`` times its convolution with ``ir`` (same length as ``x``)."""
    return np.asarray(x, np.float64) + wet * sps.oaconvolve(x, ir)[: x.shape[0]]


def compress(x: NDArray, sr: int, threshold_db: float, ratio: float, attack_s: float = 0.01,
             release_s: float = 0.1) -> NDArray[np.float64]:
    """Feed-forward RMS compressor (no make-up gain: the level step follows).

    The level is a one-pole RMS over ``attack_s``; above ``threshold_db`` [dBFS] it is
    reduced by ``1 - 1 / ratio`` dB per dB, and the gain reduction is smoothed over
    ``release_s``.
    """
    x = np.asarray(x, np.float64)
    a = math.exp(-1.0 / (attack_s * sr))
    env = sps.lfilter([1.0 - a], [1.0, -a], x * x)
    over = np.maximum(10.0 * np.log10(np.maximum(env, 1e-12)) - threshold_db, 0.0)
    rel = math.exp(-1.0 / (release_s * sr))
    reduction = sps.lfilter([1.0 - rel], [1.0, -rel], over * (1.0 - 1.0 / ratio))
    return x * 10.0 ** (-reduction / 20.0)


@functools.lru_cache(maxsize=8)
def _interpolator(up: int, taps_per_side: int = 40) -> NDArray[np.float64]:
    """Low-pass for upsampling by ``up``: flat to ~3.75 kHz at 8 kHz, -6 dB at 4 kHz.

    ``scipy.signal.resample_poly``'s default (10 taps per side and phase) already rolls
    off from ~3.4 kHz, which would add to the live resampler's roll-off; the images this
    longer filter leaves above 4 kHz are in the live resampler's stopband.
    """
    return sps.firwin(2 * taps_per_side * up + 1, 1.0 / up, window=("kaiser", 8.0))


def through_device_rate(x: NDArray, rate: int, sr: int, quality: str = "HQ") -> NDArray[np.float64]:
    """Up to a device rate and back down through the live resampler, time-aligned.

    The way up is a clean band-limited interpolation (what the microphone would have
    delivered, up to ``sr / 2``; :func:`_interpolator`); the way down is :func:`melodyrt.rt.resample.resample_signal`,
    i.e. the live :class:`~melodyrt.rt.resample.StreamingResampler` with its latency
    removed, so the result carries exactly the live input's roll-off above 2.2 kHz.

    Returns
    -------
    y : ndarray [shape=x.shape] [float64]
    """
    g = math.gcd(rate, sr)
    up = sps.resample_poly(np.asarray(x, np.float64), rate // g, sr // g, window=_interpolator(rate // g))
    y = resample_signal(up.astype(np.float32), rate, sr, quality).astype(np.float64)
    n = x.shape[0]
    return y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))


# --------------------------------------------------------------------------- sampler


@dataclass(frozen=True)
class Clip:
    """One training clip held in memory.

    Attributes
    ----------
    name : str
    voice : ndarray [shape=(n,)] [float32]
    accomp : ndarray [shape=(n,)] [float32] or None
    label_times : ndarray [shape=(L,)] [s]
    label_f0 : ndarray [shape=(L,)] [Hz], 0 = unvoiced
    voice_rms, accomp_rms : float
        Whole-clip RMS levels (the SNR reference).
    """

    name: str
    voice: NDArray[np.float32]
    accomp: NDArray[np.float32] | None
    label_times: NDArray[np.float64]
    label_f0: NDArray[np.float64]
    voice_rms: float
    accomp_rms: float

    @classmethod
    def of(cls, name: str, voice: NDArray, accomp: NDArray | None, label_times: NDArray, label_f0: NDArray) -> "Clip":
        """Build a clip, measuring its levels."""
        v = np.ascontiguousarray(voice, np.float32)
        a = None if accomp is None else np.ascontiguousarray(accomp, np.float32)
        return cls(name, v, a, np.asarray(label_times, np.float64), np.asarray(label_f0, np.float64),
                   rms(v), rms(a) if a is not None else 0.0)


def load_clips(tracks: list[Track], sample_rate: int) -> list[Clip]:
    """Voice and accompaniment of every multitrack track at ``sample_rate``.

    Raises
    ------
    MelodyRTError
        When no track has a separate voice (the remix needs isolated voices).
    """
    clips = []
    for t in tracks:
        if t.voice_channel is None:
            continue
        voice, accomp = load_track_audio(t, sample_rate)
        clips.append(Clip.of(t.name, voice, accomp, t.label_times, t.label_f0))
    if not clips:
        raise MelodyRTError("augment needs multitrack training data (a voice channel apart from the "
                            "accompaniment, as MIR-1K has); none of the training tracks has one")
    return clips


def _window(x: NDArray, start: int, n: int) -> NDArray[np.float64]:
    """``x[start : start + n]`` with zeros outside ``x``."""
    out = np.zeros(n)
    lo, hi = max(start, 0), min(start + n, x.shape[0])
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


@dataclass
class Rendered:
    """One rendered segment before the front end (what the tests inspect).

    Attributes
    ----------
    audio : ndarray [shape=(n_cfp,)] [float64]
        The samples fed to the CFP: ``history_frames * hop`` of window history, then the
        segment's ``segment_frames * hop``.
    f0 : ndarray [shape=(segment_frames,)] [Hz]
        Label of each output frame (already moved by the pitch shift), 0 = unvoiced.
    valid : ndarray [shape=(segment_frames,)] [bool]
        False where a voiced label left the 360 rows.
    info : dict
        What was drawn: clip, kind, accompaniment clip, SNR, ratio, effects, level, rate.
    voice, accomp : ndarray [shape=(n_chunk,)] [float64] or None
        The voice (shifted) and the scaled accompaniment of the whole chunk, effects
        margin included, before production (``voice + accomp`` is the raw mix).
    """

    audio: NDArray[np.float64]
    f0: NDArray[np.float64]
    valid: NDArray[np.bool_]
    info: dict
    voice: NDArray[np.float64]
    accomp: NDArray[np.float64] | None


class AudioSegmentSampler:
    """Random training segments rendered from audio, with the CFP computed in the loader.

    Parameters
    ----------
    tracks : list of Track
        Training tracks (only multitrack ones are used: voice apart from accompaniment).
    cfg : TrainConfig
        ``cfg.augment`` says what to do; ``cfg.cfp``, ``segment_frames``,
        ``warmup_frames`` and ``batch_size`` shape the segments as for ``SegmentSampler``.
    stats : FeatureStats
        Normalisation (the run's, as ``SegmentSampler`` gets it).
    lookahead : int [frames]
        Targets are the labels of ``lookahead`` frames earlier.
    clips : list of Clip, optional
        Audio already in memory (tests); default: loaded from ``tracks``.

    Notes
    -----
    ``batch(rng)`` draws one seed from ``rng`` per batch and renders the batch from it;
    with ``cfg.augment.workers > 0`` background processes (forked, so the audio is shared
    copy-on-write) render the batches of the next seeds ``rng`` will give while the
    network trains. The result does not depend on the number of workers.
    """

    def __init__(self, tracks: list[Track], cfg: TrainConfig, stats: FeatureStats, lookahead: int,
                 clips: list[Clip] | None = None) -> None:
        self.cfg, self.acfg, self.stats, self.lookahead = cfg, cfg.augment, stats, int(lookahead)
        self.cfp: CfpConfig = cfg.cfp
        self.sr = self.cfp.sample_rate
        self.clips = clips if clips is not None else load_clips(tracks, self.sr)
        if not self.clips:
            raise MelodyRTError("AudioSegmentSampler needs at least one clip")
        lengths = np.array([c.voice.shape[0] for c in self.clips], float)
        self.weights = lengths / lengths.sum()
        self.with_accomp = np.array([i for i, c in enumerate(self.clips) if c.accomp is not None and c.accomp_rms > 0])
        hop = self.cfp.hop
        #: Frames computed before the segment and dropped, so that the window of the
        #: segment's first frame lies on real audio (``win_length`` samples of history).
        self.history_frames = -(-self.cfp.win_length // hop)
        self.fx_samples = int(round(self.acfg.history_s * self.sr))
        self.cfp_samples = (self.history_frames + cfg.segment_frames) * hop
        self.chunk_samples = self.fx_samples + self.cfp_samples
        self.stream = StreamingCFP(self.cfp, NormConfig(mode="none"), max_block=self.cfp_samples + 1)
        self.stream.warmup()
        #: The time each frame describes lags its end by this (as in ``FeatureCache``).
        self.delay_samples = self.stream.delay_samples
        self._frame_pos = frame_times(self.history_frames + cfg.segment_frames, self.cfp, self.delay_samples)[
            self.history_frames:] * self.sr - self.lookahead * hop  # [samples from the CFP input's start]
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pending: dict[int, concurrent.futures.Future] = {}

    # ------------------------------------------------------------------ one segment
    def render(self, rng: np.random.Generator, start: int | None = None) -> Rendered:
        """Draw and render one segment's audio and labels (no CFP yet).

        Parameters
        ----------
        rng : numpy Generator
        start : int, optional [samples]
            Segment start in the (shifted) voice instead of a random one (tests).
        """
        a, cfg, sr = self.acfg, self.cfg, self.sr
        hop, T = self.cfp.hop, cfg.segment_frames
        i = int(rng.choice(len(self.clips), p=self.weights))
        clip = self.clips[i]
        u = rng.random()
        others = self.with_accomp[self.with_accomp != i] if self.with_accomp.size else self.with_accomp
        if u < a.voice_only_prob:
            kind = "voice"
        elif u < a.voice_only_prob + a.own_accomp_prob and clip.accomp is not None and clip.accomp_rms > 0:
            kind = "own"
        elif u < a.voice_only_prob + a.own_accomp_prob + a.accomp_only_prob and others.size:
            kind = "accomp"
        elif others.size:
            kind = "cross"
        elif clip.accomp is not None and clip.accomp_rms > 0:
            kind = "own"
        else:
            kind = "voice"
        # The voice over its own accompaniment stays in tune and in time with it.
        p = q = 1
        if kind not in ("own", "accomp") and a.pitch_shift_semitones > 0 and rng.random() < a.pitch_shift_prob:
            p, q = shift_ratio(float(rng.uniform(-a.pitch_shift_semitones, a.pitch_shift_semitones)))
        r = p / q
        n_shifted = clip.voice.shape[0] * q / p
        seg = T * hop
        drawn = int(rng.integers(0, max(int(n_shifted) - seg, 0) + 1))  # segment start, shifted timeline
        start = drawn if start is None else int(start)
        c0 = start - self.cfp_samples + seg - self.fx_samples  # chunk start, shifted timeline
        n = self.chunk_samples
        b = math.floor(c0 * r)  # chunk sample j <-> original voice sample b + j * r
        if p == q:
            voice = _window(clip.voice, b, n)
        else:
            voice = pitch_shift(_window(clip.voice, b, int(math.ceil(n * r)) + 64), p, q)[:n]
        if kind == "accomp":
            # The rests of a song: the backing alone, at the level it has under this voice.
            voice = np.zeros(n)
        info: dict[str, Any] = {"clip": clip.name, "kind": kind, "ratio": (p, q), "start": start}
        accomp = None
        if kind != "voice":
            j = i if kind == "own" else int(others[rng.integers(others.size)])
            src = self.clips[j]
            assert src.accomp is not None
            off = b if kind == "own" else int(rng.integers(0, max(src.accomp.shape[0] - n, 0) + 1))
            snr = float(rng.uniform(*a.snr_db))
            accomp = _window(src.accomp, off, n) * accompaniment_gain(snr, clip.voice_rms, src.accomp_rms)
            info.update(accomp_clip=src.name, accomp_offset=off, snr_db=snr)
        mix = voice + accomp if accomp is not None else voice.copy()
        if rng.random() < a.eq_prob:
            mix = random_eq(mix, rng, a.eq_gain_db, sr)
            info["eq"] = True
        if rng.random() < a.reverb_prob:
            rt60 = float(rng.uniform(*a.reverb_rt60_s))
            mix = reverb(mix, synthetic_ir(rng, rt60, sr), float(rng.uniform(*a.reverb_wet)))
            info["reverb_rt60_s"] = rt60
        if rng.random() < a.compress_prob:
            level = db(rms(mix[self.fx_samples :]))
            if math.isfinite(level):
                thr = level + float(rng.uniform(*a.compress_threshold_db))
                mix = compress(mix, sr, thr, float(rng.uniform(*a.compress_ratio)))
                info["compress_threshold_dbfs"] = thr
        mix, info["level"] = master_level(mix, rng, a, sr)
        if rng.random() < a.resample_prob:
            rate = int(a.resample_rates[rng.integers(len(a.resample_rates))])
            mix = through_device_rate(mix, rate, sr, a.resample_quality)
            info["device_rate"] = rate
        # Labels: each frame's time in the chunk, mapped to the original voice's time.
        pos = self.fx_samples + self._frame_pos
        f0 = labels_on_frames(clip.label_times, clip.label_f0, (b + pos * r) / sr) * r
        if kind == "accomp":
            f0 = np.zeros_like(f0)
        classes = hz_to_class(f0, self.cfp)
        valid = ~((f0 > 0) & (classes == 0))
        return Rendered(mix[self.fx_samples :], f0, valid, info, voice, accomp)

    def features(self, audio: NDArray) -> NDArray[np.float32]:
        """Network input ``(3, 360, segment_frames)`` of a rendered segment's audio.

        The streaming CFP (``NormConfig(mode="none")``, i.e. ``log1p``) over the whole
        input; the history frames are dropped; then ``SegmentSampler``'s normalisation.
        """
        self.stream.reset()
        frames = self.stream.process(np.asarray(audio, np.float64))[self.history_frames :]
        return normalise(np.expm1(frames.astype(np.float64)), self.stats)

    def segment(self, rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
        """One segment: input (3, 360, T), classes (T,), loss mask (T,)."""
        seg = self.render(rng)
        x = self.features(seg.audio)
        classes = hz_to_class(seg.f0, self.cfp)
        mask = seg.valid.astype(np.float32)
        mask[: self.cfg.warmup_frames] = 0.0
        return x, classes, mask

    # ------------------------------------------------------------------ batches
    def arrays(self, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
        """The batch of one seed as numpy arrays: (B, 3, 360, T), (B, T), (B, T)."""
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        T = cfg.segment_frames
        xs = np.zeros((cfg.batch_size, 3, 360, T), np.float32)
        ys = np.zeros((cfg.batch_size, T), np.int64)
        mask = np.zeros((cfg.batch_size, T), np.float32)
        for k in range(cfg.batch_size):
            xs[k], ys[k], mask[k] = self.segment(rng)
        return xs, ys, mask

    def batch(self, rng: np.random.Generator) -> tuple[Any, Any, Any]:
        """One batch: inputs (B, 3, 360, T) float32, classes (B, T) int64, loss mask (B, T)
        float32, as torch tensors (the ``SegmentSampler.batch`` contract).

        Draws exactly one integer from ``rng``.
        """
        import torch

        seed = int(rng.integers(0, _SEED_HIGH))
        if self.acfg.workers <= 0:
            arrays = self.arrays(seed)
        else:
            arrays = self._from_workers(seed, rng)
        return tuple(torch.from_numpy(a) for a in arrays)  # type: ignore[return-value]

    def _from_workers(self, seed: int, rng: np.random.Generator) -> tuple[NDArray, NDArray, NDArray]:
        global _WORKER_SAMPLER
        future = self._pending.pop(seed, None)
        if self._pool is None:
            # fork: the children share the audio copy-on-write and need no pickling. A fork
            # pool starts all its processes at the first submit; after that the module
            # global no longer keeps this sampler alive (its __del__ stops the workers).
            _WORKER_SAMPLER = self
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.acfg.workers, mp_context=multiprocessing.get_context("fork"))
            future = self._pool.submit(_worker_arrays, seed)
            _WORKER_SAMPLER = None
        elif future is None:
            future = self._pool.submit(_worker_arrays, seed)
        # The seeds of the next batches, as rng will give them (rng itself is not advanced).
        ahead = copy.deepcopy(rng)
        upcoming = [int(ahead.integers(0, _SEED_HIGH)) for _ in range(self.acfg.prefetch)]
        for stale in [s for s in self._pending if s not in upcoming]:
            self._pending.pop(stale).cancel()
        for s in upcoming:
            if s not in self._pending:
                self._pending[s] = self._pool.submit(_worker_arrays, s)
        return future.result()

    def close(self) -> None:
        """Stop the background workers (if any)."""
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"], state["_pending"] = None, {}
        return state


_WORKER_SAMPLER: AudioSegmentSampler | None = None


def _worker_arrays(seed: int) -> tuple[NDArray, NDArray, NDArray]:
    assert _WORKER_SAMPLER is not None, "augment worker started without a sampler"
    return _WORKER_SAMPLER.arrays(seed)


# --------------------------------------------------------------------------- throughput


def measure_throughput(cfg: TrainConfig, tracks: list[Track], batches: int = 8, train_steps: int = 0,
                       seed: int = 0) -> dict[str, float]:
    """Time the sampler (and optionally the training step it feeds) on this machine.

    Parameters
    ----------
    cfg : TrainConfig
        With ``augment`` as it should be measured (``enabled`` is implied).
    tracks : list of Track
        Training tracks to load.
    batches : int
        Batches rendered in this process (one core) to time rendering and CFP apart.
    train_steps : int
        If > 0, also time that many SD-MS steps of ``cfg.model`` (``cfg.threads`` torch
        threads), twice each in interleaved rounds: on pre-rendered batches (the step
        alone), with the sampler inline, and with ``max(1, augment.workers)`` background
        workers.

    Returns
    -------
    dict
        ``load_s``; ``render_ms`` and ``cfp_ms`` per segment; ``frames_per_s`` (segment
        frames, warm-up included) and ``supervised_frames_per_s``; ``cfp_share``; with
        ``train_steps``: ``step_s``, ``step_inline_s``, ``step_background_s``.
    """
    import time

    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, enabled=True, workers=0))
    t0 = time.perf_counter()
    sampler = AudioSegmentSampler(tracks, cfg, FeatureStats.identity(), 0)
    out: dict[str, float] = {"load_s": time.perf_counter() - t0, "clips": float(len(sampler.clips))}
    rng = np.random.default_rng(seed)
    render = cfp = 0.0
    n = batches * cfg.batch_size
    for _ in range(n):
        t0 = time.perf_counter()
        seg = sampler.render(rng)
        t1 = time.perf_counter()
        sampler.features(seg.audio)
        render += t1 - t0
        cfp += time.perf_counter() - t1
    per_seg = (render + cfp) / n
    out.update(render_ms=1e3 * render / n, cfp_ms=1e3 * cfp / n, cfp_share=cfp / (render + cfp),
               frames_per_s=cfg.segment_frames / per_seg,
               supervised_frames_per_s=(cfg.segment_frames - cfg.warmup_frames) / per_seg)
    if train_steps > 0:
        out.update(_time_train_steps(cfg, sampler, train_steps, seed))
    sampler.close()
    return out


def _time_train_steps(cfg: TrainConfig, sampler: AudioSegmentSampler, steps: int, seed: int) -> dict[str, float]:
    import time

    import torch

    from .config import load_model_config
    from .network import build_model
    from .sdms import sdms_loss

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    model = build_model(load_model_config(cfg.model))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(x: Any, y: Any, mask: Any) -> None:
        if cfg.channels_last:
            x = x.to(memory_format=torch.channels_last)
        loss, _ = sdms_loss(model(x), y, mask, cfg.loss_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rng = np.random.default_rng(seed)
    ready = [sampler.batch(rng) for _ in range(steps)]
    for b in ready[:2]:  # allocations, oneDNN kernel choice
        step(*b)
    times: dict[str, list[float]] = {"step_s": [], "step_inline_s": [], "step_background_s": []}
    workers = {"step_inline_s": 0, "step_background_s": max(1, sampler.acfg.workers)}
    # Interleaved rounds (the machine is shared: its speed drifts): the step on pre-rendered
    # batches, then with the sampler inline, then with background workers.
    for _ in range(2):
        for name in times:
            if name == "step_s":
                t0 = time.perf_counter()
                for b in ready:
                    step(*b)
            else:
                sampler.acfg = dataclasses.replace(sampler.acfg, workers=workers[name])
                step(*sampler.batch(rng))  # starts the workers and fills the prefetch queue
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(*sampler.batch(rng))
                sampler.close()
            times[name].append((time.perf_counter() - t0) / steps)
    return {k: float(np.mean(v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m melodyrt.model.augment --data DIR``: the sampler's throughput here."""
    import argparse
    import json

    from .datasets import discover, split_by_singer
    from .train_config import load_train_config

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--config", default="rt2_aug", help="training config name or YAML path")
    ap.add_argument("--data", required=True, help="MIR-1K folder")
    ap.add_argument("--batches", type=int, default=8, help="batches rendered on one core")
    ap.add_argument("--train-steps", type=int, default=0, help="also time this many training steps")
    ap.add_argument("--threads", type=int, help="torch threads for the training steps (default: the config's)")
    ap.add_argument("--max-tracks", type=int, help="load only N training tracks")
    args = ap.parse_args(argv)
    cfg = load_train_config(args.config)
    if args.threads:
        cfg = cfg.replace(threads=args.threads)
    _, tracks = discover(args.data)
    train_t, _ = split_by_singer(tracks, cfg.val_singers)
    res = measure_throughput(cfg, train_t[: args.max_tracks] if args.max_tracks else train_t, args.batches,
                             args.train_steps)
    print(json.dumps({k: round(v, 4) for k, v in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

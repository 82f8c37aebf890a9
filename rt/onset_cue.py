"""Fast onset cues: a sung note seen in the newest few milliseconds, between frames.

The network calls a frame voiced about 15-20 ms into a note and its frames describe audio
21 ms old (the CFP window), so a note-on decided from frames comes 30 ms after the singer
starts. A dry voice is periodic long before that: :class:`OnsetCueDetector` looks every
``step`` analysis samples (1.25 ms at 8 kHz) at the newest audio only, and when a loud,
clearly periodic stretch follows a rest it emits one cue with a pitch estimate. The MIDI
note logic may start a note on it (``MidiConfig.fast_onset``), which the frames confirm or
take back a few frames later (:meth:`melodyrt.rt.midi_out.MidiNoteLogic.cue`).

The periodicity is a normalised cross-correlation of the newest ``W(tau)`` samples with the
``W(tau)`` before them, ``W(tau) = max(window, tau)``::

    r(tau) = sum x[n] x[n - tau] / sqrt(sum x[n]^2 * sum x[n - tau]^2)

It is blind to a level change between the two stretches, so a note's attack (the level
rising by 10-20 dB within the window) still reads as periodic; a difference function (YIN)
or the NSDF would read the same attack as less periodic. The period is the smallest local
maximum within 8 % of the best one (so a voice does not drop an octave on its second
period), refined by a parabola. Three consecutive evaluations must agree within
``agree_cents``: a voice needs about two periods plus two steps, 9-14 ms for the notes G3-A#4.

The defaults were chosen on the MIR-1K validation voices (``melodyrt bench onset``): a level
floor of -35 dBFS, 3 agreeing looks and a 60 ms re-arm cut the false onsets of the
fast-onset note logic from 27.6 to 14.4 a minute for 2.3 ms of note-on delay on the e2e
bench's phrases (README, "Fast onset"). Most of what remains are cues 1-3 semitones off the
labelled note in the first periods of a sung onset, which the first voiced frame corrects.

One cue per onset: after a cue the detector waits for ``rearm_ms`` of audio that is quiet
or aperiodic before it can cue again. It runs on the tracker's analysis stream (after the
resampler), so cues are the same for every block size, like frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

from .errors import ConfigError

#: Evaluation state slots (a float64 array the kernel owns between calls).
_ARMED, _QUIET, _RUN, _LAST = 0, 1, 2, 3


@dataclass(frozen=True)
class CueConfig:
    """Settings of :class:`OnsetCueDetector` (``tracker: cue:`` in YAML).

    Attributes
    ----------
    enabled : bool
        Compute cues at all (the MIDI setting ``fast_onset`` decides whether notes start on them).
    step : int [analysis samples]
        Samples between evaluations (10 = 1.25 ms at 8 kHz); must divide the 80-sample hop.
    fmin_hz, fmax_hz : float [Hz]
        Pitch range searched.
    window : int [analysis samples]
        Shortest correlation window (32 = 4 ms); a period longer than that uses its own length.
    periodicity : float [0..1]
        Normalised correlation an evaluation needs.
    min_db : float [dBFS]
        Level of the newest ``level_window`` samples an evaluation needs.
    level_window : int [analysis samples]
    agree_steps : int
        Consecutive periodic evaluations within ``agree_cents`` of each other before a cue.
    agree_cents : float [cents]
    rearm_ms : float [ms]
        Quiet or aperiodic audio after which the detector may cue again.
    """

    enabled: bool = True
    step: int = 10
    fmin_hz: float = 80.0
    fmax_hz: float = 1000.0
    window: int = 32
    periodicity: float = 0.9
    min_db: float = -35.0
    level_window: int = 40
    agree_steps: int = 3
    agree_cents: float = 50.0
    rearm_ms: float = 60.0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"tracker.cue: {what}")

        need(isinstance(self.step, int) and self.step >= 1, f"step must be a whole number >= 1, got {self.step!r}")
        need(0 < self.fmin_hz < self.fmax_hz, f"need 0 < fmin_hz < fmax_hz, got {self.fmin_hz!r}, {self.fmax_hz!r}")
        need(isinstance(self.window, int) and self.window >= 8, f"window must be >= 8 samples, got {self.window!r}")
        need(0.0 < self.periodicity < 1.0, f"periodicity must be between 0 and 1, got {self.periodicity!r}")
        need(isinstance(self.level_window, int) and self.level_window >= 1, "level_window must be >= 1 sample")
        need(isinstance(self.agree_steps, int) and self.agree_steps >= 1, "agree_steps must be >= 1")
        need(self.agree_cents > 0, "agree_cents must be > 0")
        need(self.rearm_ms >= 0, "rearm_ms must be >= 0")


@dataclass(frozen=True)
class Cue:
    """One cue on the analysis timeline.

    Attributes
    ----------
    newest : int [analysis samples]
        Index of the newest sample of the evaluation that cued.
    f0_hz : float [Hz]
    periodicity : float [0..1]
    level_db : float [dBFS]
        Level of the newest ``level_window`` samples.
    """

    newest: int
    f0_hz: float
    periodicity: float
    level_db: float


class OnsetCueDetector:
    """Streaming detector of periodic onsets on the analysis-rate signal (8 kHz).

    Parameters
    ----------
    config : CueConfig
    sample_rate : int [Hz]
        Analysis rate.
    hop : int [analysis samples]
        The frame hop; ``config.step`` must divide it, so every frame boundary is an
        evaluation too.

    Attributes
    ----------
    samples_seen : int [analysis samples]
    cues_emitted : int
    """

    def __init__(self, config: CueConfig, sample_rate: int = 8000, hop: int = 80) -> None:
        if hop % config.step:
            raise ConfigError(f"tracker.cue.step ({config.step}) must divide the hop ({hop} samples)")
        self.config = config
        self.sample_rate = int(sample_rate)
        self.tau_min = max(2, int(math.floor(sample_rate / config.fmax_hz)))
        self.tau_max = int(math.ceil(sample_rate / config.fmin_hz))
        need = self.tau_max + 1 + max(config.window, self.tau_max + 1) + 1
        self._cap = max(need, config.level_window) + 1
        self._ring = np.zeros(2 * self._cap)   # each sample twice: any newest-span is contiguous
        self._corr = np.zeros(self.tau_max + 3)
        self._state = np.zeros(4)
        self._params = np.array([
            self.tau_min, self.tau_max, config.window, config.periodicity, 10.0 ** (config.min_db / 10.0),
            config.level_window, config.agree_steps, config.agree_cents / 100.0,
            round(config.rearm_ms * 1e-3 * sample_rate), config.step, sample_rate], dtype=np.float64)
        self._out = np.zeros((64, 4))
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Centre of the newest ``level_window`` samples, behind the evaluation's newest sample
        [analysis samples]: what a cue's timestamp subtracts."""
        return self.config.level_window // 2

    def reset(self) -> None:
        """Forget the audio and re-arm."""
        self._ring[:] = 0.0
        self._state[:] = 0.0
        self._state[_ARMED] = 1.0
        self.samples_seen = 0
        self.cues_emitted = 0

    def warmup(self) -> None:
        """Compile (or load) the kernel, then reset."""
        self.process(np.zeros(2 * self.config.step, np.float32))
        self.reset()

    def process(self, y: NDArray) -> list[Cue]:
        """Feed analysis-rate samples; return the cues of the evaluations they completed.

        Parameters
        ----------
        y : ndarray [shape=(n,)] [float32 or float64]
            Finite samples (the resampler has sanitised them).
        """
        x = np.ascontiguousarray(y, dtype=np.float64)
        cues: list[Cue] = []
        start = 0
        max_span = self._out.shape[0] * self.config.step
        while start < x.shape[0]:
            part = x[start : start + max_span]
            n = _cue_scan(part, self._ring, self._cap, self.samples_seen, self._state, self._params,
                          self._corr, self._out)
            for k in range(n):
                row = self._out[k]
                cues.append(Cue(int(row[0]), float(row[1]), float(row[2]), float(row[3])))
            self.samples_seen += part.shape[0]
            start += part.shape[0]
        self.cues_emitted += len(cues)
        return cues


@njit(cache=True, nogil=True)
def _periodicity(ring, j, tau_min, tau_max, w0, corr):  # pragma: no cover - numba
    """Best period of the span ending at ``ring[j]``: ``(tau, r)``; (0, 0) when none."""
    lo = tau_min - 1
    for tau in range(lo, tau_max + 2):
        w = w0 if w0 > tau else tau
        sxy = 0.0
        sxx = 0.0
        syy = 0.0
        for i in range(j - w + 1, j + 1):
            u = ring[i]
            v = ring[i - tau]
            sxy += u * v
            sxx += u * u
            syy += v * v
        d = math.sqrt(sxx * syy)
        corr[tau - lo] = sxy / d if d > 0.0 else 0.0
    m = tau_max - lo + 1
    best = -1.0
    for k in range(1, m):
        if corr[k] > best:
            best = corr[k]
    for k in range(1, m):
        c = corr[k]
        if c >= corr[k - 1] and c >= corr[k + 1] and c >= 0.92 * best:
            a = corr[k - 1]
            b = corr[k + 1]
            den = a - 2.0 * c + b
            off = 0.5 * (a - b) / den if den < 0.0 else 0.0
            return lo + k + off, c
    return 0.0, 0.0


@njit(cache=True, nogil=True)
def _cue_scan(x, ring, cap, seen, state, params, corr, out):  # pragma: no cover - numba
    """Append ``x`` to the doubled ring and evaluate at every ``step``-th sample; write
    ``(newest, f0, r, level_db)`` rows to ``out``; return how many."""
    tau_min = int(params[0])
    tau_max = int(params[1])
    w0 = int(params[2])
    r_min = params[3]
    p_min = params[4]
    lw = int(params[5])
    agree = params[6]
    agree_st = params[7]
    rearm = params[8]
    step = int(params[9])
    sr = params[10]
    n_out = 0
    for k in range(x.shape[0]):
        idx = seen + k
        p = idx % cap
        ring[p] = x[k]
        ring[p + cap] = x[k]
        if (idx + 1) % step != 0:
            continue
        j = p + cap
        power = 0.0
        for i in range(j - lw + 1, j + 1):
            power += ring[i] * ring[i]
        power /= lw
        tau, r = 0.0, 0.0
        if power >= p_min:
            tau, r = _periodicity(ring, j, tau_min, tau_max, w0, corr)
        if tau <= 0.0 or r < r_min:
            state[_QUIET] += step
            state[_RUN] = 0.0
            if state[_QUIET] >= rearm:
                state[_ARMED] = 1.0
            continue
        state[_QUIET] = 0.0
        f0 = sr / tau
        st = 12.0 * math.log2(f0 / 440.0)
        if state[_RUN] > 0.0 and abs(st - state[_LAST]) > agree_st:
            state[_RUN] = 0.0
        state[_RUN] += 1.0
        state[_LAST] = st
        if state[_ARMED] > 0.0 and state[_RUN] >= agree and n_out < out.shape[0]:
            out[n_out, 0] = idx
            out[n_out, 1] = f0
            out[n_out, 2] = r
            out[n_out, 3] = 10.0 * math.log10(power)
            n_out += 1
            state[_ARMED] = 0.0
    return n_out

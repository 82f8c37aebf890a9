"""The tracker: the one streaming path from input samples to :class:`PitchFrame` records.

::

    block (input rate) -> StreamingResampler -> StreamingCFP (bundle's front end, fixed stats)
                       -> Engine.step -> Decoder -> PitchFrame list

:class:`Tracker` serves a live device and a file alike: :func:`transcribe_signal` and
:func:`transcribe_file` are the same stream fed from memory, and produce the same frames as
feeding the same samples in device-sized blocks (any block size gives identical frames).

Timing
------
Frame ``k`` (one per 10 ms hop) is computed when the analysis stream (8 kHz) has received
sample ``j = (k + 1) * hop - 1``. On the input timeline that sample sits at input sample
``j * R / 8000`` (``R`` the input rate): the hop's newest sample. The frame describes the
audio ``D`` earlier, ``D`` the total algorithmic delay (resampler + CFP window centroid +
model look-ahead + decoder smoothing + any processing declared before the tracker with
``pre_delay_samples``, see :class:`LatencyReport`)::

    frame.sample = round(j * R / 8000 - D)          [input samples]
    frame.time   = frame.sample / R                 [s]

so ``arrival - frame.sample`` measures the real latency. The first few frames describe the
silence before the stream began and have negative ``sample``. A frame reaches the caller at
the end of the :meth:`Tracker.process` call whose block completed its hop: the *hop wait*,
from the hop's newest sample to the last sample of that block, is reported separately
(mean and worst over the block/hop phase pattern).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .bundle import ModelBundle, load_bundle
from .cfp import StreamingCFP
from .config import ResampleConfig, _from_mapping, load_yaml
from .decode import Decoder, DecoderConfig
from .engine import Engine, create_engine
from .errors import AudioInputError
from .frames import OnsetCue, PitchFrame
from .onset_cue import Cue, CueConfig, OnsetCueDetector
from .resample import StreamingResampler, check_rate

#: Largest piece of a block processed at once [input samples]; bigger blocks are split
#: (results are identical, only the loudness history buffer stays small).
CHUNK = 4096
#: Silence floor of :attr:`PitchFrame.loudness_db` [dBFS].
SILENCE_DB = -120.0


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of the tracker beyond what the model bundle fixes (front end, statistics).

    Attributes
    ----------
    resample : ResampleConfig
        Resampler recipe (latency grows with quality).
    decoder : DecoderConfig
        Voicing hysteresis and pitch smoothing.
    timing_hops : int [hops]
        Capacity of the per-hop compute-time arrays (the newest are kept).
    cue : CueConfig
        Fast onset cues between frames (:mod:`melodyrt.rt.onset_cue`).
    """

    resample: ResampleConfig = field(default_factory=ResampleConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    cue: CueConfig = field(default_factory=CueConfig)
    timing_hops: int = 1 << 15

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrackerConfig":
        """Build from a nested mapping (unknown keys are an error)."""
        return _from_mapping(cls, data or {}, "tracker.")

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "tracker") -> "TrackerConfig":
        """Load from a YAML file: its ``tracker:`` section (or the whole file if ``section`` is None)."""
        data = load_yaml(path)
        return cls.from_dict(data.get(section) if section else data)


@dataclass(frozen=True)
class LatencyReport:
    """Where the delay of a frame comes from, per stage [input samples].

    The algorithmic stages add up to :attr:`algorithmic`, the delay built into every
    timestamp. The hop wait and the audio buffering come on top for a live stream; compute
    time is measured separately (:class:`StageTimings`).

    Attributes
    ----------
    input_rate : int [Hz]
    analysis_rate : int [Hz]
    hop : float [input samples]
        One 10 ms hop.
    resampler : float [input samples]
        Group delay of the resampler's low-pass.
    cfp_window : float [input samples]
        Energy centroid of the CFP analysis window before its newest sample.
    model : float [input samples]
        The model's look-ahead (``delay_frames`` hops).
    smoothing : float [input samples]
        Decoder smoothing lag.
    input_processing : float [input samples]
        Processing before the tracker (an effects chain), as the caller declared it.
    hop_wait_mean, hop_wait_worst : float [input samples]
        From a hop's newest sample to the end of the block that delivers it (0..blocksize
        plus the resampler's release granularity ``R / 8000 - 1``), over the block/hop phases.
    buffering : float [input samples]
        Audio buffering before the tracker sees a block (device input latency, given by the
        source; 0 for files).
    blocksize : int or None [input samples]
    """

    input_rate: int
    analysis_rate: int
    hop: float
    resampler: float
    cfp_window: float
    model: float
    smoothing: float
    input_processing: float = 0.0
    hop_wait_mean: float = 0.0
    hop_wait_worst: float = 0.0
    buffering: float = 0.0
    blocksize: int | None = None

    @property
    def algorithmic(self) -> float:
        """Delay built into every timestamp [input samples]."""
        return self.input_processing + self.resampler + self.cfp_window + self.model + self.smoothing

    @property
    def total_mean(self) -> float:
        """Algorithmic delay + mean hop wait + buffering [input samples] (compute time excluded)."""
        return self.algorithmic + self.hop_wait_mean + self.buffering

    @property
    def total_worst(self) -> float:
        """Algorithmic delay + worst hop wait + buffering [input samples]."""
        return self.algorithmic + self.hop_wait_worst + self.buffering

    def ms(self, samples: float) -> float:
        """Input samples to milliseconds."""
        return 1000.0 * samples / self.input_rate

    def rows(self) -> list[tuple[str, float, float]]:
        """``(stage, input samples, ms)`` for every stage and the totals."""
        names = [
            ("input processing", self.input_processing), ("resampler", self.resampler), ("cfp window", self.cfp_window), ("model look-ahead", self.model),
            ("decoder smoothing", self.smoothing), ("= algorithmic (in timestamps)", self.algorithmic),
            ("hop wait, mean", self.hop_wait_mean), ("hop wait, worst", self.hop_wait_worst),
            ("audio buffering", self.buffering), ("= total, mean", self.total_mean),
            ("= total, worst", self.total_worst),
        ]
        return [(n, float(v), self.ms(v)) for n, v in names]

    def as_dict(self) -> dict[str, Any]:
        """``{stage: {"samples": ..., "ms": ...}}`` plus the rates and block size."""
        out: dict[str, Any] = {"input_rate": self.input_rate, "blocksize": self.blocksize}
        for name, samples, ms in self.rows():
            key = name.lstrip("= ").split(" (")[0].replace(", ", "_").replace(" ", "_").replace("-", "_")
            out[key] = {"samples": round(samples, 3), "ms": round(ms, 3)}
        return out

    def table(self) -> str:
        """A small text table of :meth:`rows`."""
        head = f"latency at {self.input_rate} Hz" + (f", {self.blocksize}-sample blocks" if self.blocksize else "")
        lines = [head] + [f"  {n:<31}{s:9.1f} samples {ms:7.2f} ms" for n, s, ms in self.rows()]
        return "\n".join(lines)


class StageTimings:
    """Compute time per stage, ``perf_counter_ns`` deltas in preallocated arrays.

    Per hop: ``cfp`` (the CFP call that completed the hop), ``engine``, ``decode`` and
    ``hop`` (all of them plus building the frame). Per processed chunk (at most
    :data:`CHUNK` input samples, normally one device block): ``resample`` and ``block``
    (the whole chunk, every hop in it included). Arrays wrap, keeping the newest entries.

    Parameters
    ----------
    capacity : int [entries]
    """

    HOP_STAGES = ("cfp", "engine", "decode", "hop")
    BLOCK_STAGES = ("resample", "block")

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._hop = np.zeros((len(self.HOP_STAGES), self.capacity), np.int64)
        self._block = np.zeros((len(self.BLOCK_STAGES), self.capacity), np.int64)
        self.hops = 0
        self.blocks = 0

    def clear(self) -> None:
        """Forget all measurements (no reallocation)."""
        self._hop[:] = 0
        self._block[:] = 0
        self.hops = 0
        self.blocks = 0

    def add_hop(self, cfp: int, engine: int, decode: int, hop: int) -> None:
        i = self.hops % self.capacity
        h = self._hop
        h[0, i], h[1, i], h[2, i], h[3, i] = cfp, engine, decode, hop
        self.hops += 1

    def add_block(self, resample: int, block: int) -> None:
        i = self.blocks % self.capacity
        self._block[0, i], self._block[1, i] = resample, block
        self.blocks += 1

    @staticmethod
    def _ordered(arr: NDArray[np.int64], count: int, capacity: int) -> NDArray[np.int64]:
        if count <= capacity:
            return arr[:count].copy()
        i = count % capacity
        return np.concatenate([arr[i:], arr[:i]])

    def snapshot(self) -> dict[str, NDArray[np.int64]]:
        """Oldest-first copies of every stage's kept measurements [ns]."""
        out = {s: self._ordered(self._hop[k], self.hops, self.capacity) for k, s in enumerate(self.HOP_STAGES)}
        out |= {s: self._ordered(self._block[k], self.blocks, self.capacity) for k, s in enumerate(self.BLOCK_STAGES)}
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n", "p50_ms", "p99_ms", "max_ms"}}`` over the kept measurements."""
        out = {}
        for name, ns in self.snapshot().items():
            if ns.size:
                p50, p99 = np.percentile(ns, [50, 99]) / 1e6
                out[name] = {"n": int(ns.size), "p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(ns.max() / 1e6)}
        return out


def hop_wait(input_rate: int, blocksize: int, hop: int = 80, analysis_rate: int = 8000) -> tuple[float, float]:
    """Mean and worst wait from a hop's newest sample to the end of the block delivering it.

    Exact over the whole phase pattern of hops against blocks (it repeats every
    ``100 * blocksize / gcd(R * hop / 80, 100 * blocksize)`` hops for a 10 ms hop).

    Parameters
    ----------
    input_rate : int [Hz]
    blocksize : int [input samples]
    hop : int [samples at analysis_rate]
    analysis_rate : int [Hz]

    Returns
    -------
    mean, worst : float [input samples]
    """
    num, den = input_rate * hop, analysis_rate  # one hop = num / den input samples
    period = blocksize * den // math.gcd(num, blocksize * den)
    k = np.arange(1, period + 1, dtype=np.int64)  # hop k completes at analysis sample k*hop - 1
    n_needed = -((-k * num) // den)  # input samples fed when analysis sample k*hop - 1 is out
    block_end = -((-n_needed) // blocksize) * blocksize - 1  # last input sample of that block
    newest = (k * hop - 1) * input_rate / analysis_rate
    wait = block_end - newest
    return float(wait.mean()), float(wait.max())


class Tracker:
    """Streaming melody tracker: input blocks of any size in, :class:`PitchFrame` records out.

    Parameters
    ----------
    input_rate : int [Hz]
        Rate of the blocks given to :meth:`process`; one of
        :data:`melodyrt.rt.resample.SUPPORTED_RATES`.
    bundle : ModelBundle, str, Path or None
        Exported model (None: the packaged default, ``model/weights/rt``). It fixes the CFP
        front end and its normalisation statistics.
    backend : {"auto", "ort", "tensorrt", "torch"}
        Inference engine (see :func:`melodyrt.rt.engine.create_engine`).
    config : TrackerConfig, optional
    engine : Engine, optional
        An engine already made for ``bundle`` (``backend`` is then ignored).
    pre_delay_samples : float [input samples]
        Delay of processing applied to the audio before the tracker (an effects chain);
        added to every timestamp and reported as ``input_processing``.

    Attributes
    ----------
    resampler : StreamingResampler
    cfp : StreamingCFP
    engine : Engine
    decoder : Decoder
    timings : StageTimings
    frames_emitted : int
    samples_in : int [input samples]
        Samples fed since the last :meth:`reset`.

    Notes
    -----
    Not thread-safe: one thread feeds one tracker (the source's worker). Everything is
    allocated at construction except the returned frame objects.
    """

    def __init__(
        self,
        input_rate: int,
        bundle: ModelBundle | str | Path | None = None,
        backend: str = "auto",
        config: TrackerConfig | None = None,
        engine: Engine | None = None,
        pre_delay_samples: float = 0.0,
    ) -> None:
        self.config = config or TrackerConfig()
        if not pre_delay_samples >= 0:
            raise AudioInputError(f"pre_delay_samples must be >= 0, got {pre_delay_samples}")
        self.pre_delay_samples = float(pre_delay_samples)
        self.input_rate = check_rate(input_rate, "input sample rate")
        self.bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
        cfp_cfg = self.bundle.cfp
        self.analysis_rate = cfp_cfg.sample_rate
        self.hop = cfp_cfg.hop
        self.engine = engine if engine is not None else create_engine(backend, self.bundle)
        self.resampler = StreamingResampler(self.input_rate, self.analysis_rate, self.config.resample.quality)
        self.cfp = StreamingCFP(cfp_cfg, self.bundle.norm, self.bundle.stats, max_block=CHUNK)
        self.decoder = Decoder(self.config.decoder, cfp_cfg)
        self.cue = OnsetCueDetector(self.config.cue, self.analysis_rate, self.hop) if self.config.cue.enabled else None
        self.timings = StageTimings(self.config.timing_hops)
        self._ratio = self.input_rate / self.analysis_rate  # input samples per analysis sample
        self._delay_analysis = (
            self.resampler.latency_samples + self.cfp.delay_samples
            + self.hop * (self.bundle.delay_frames + self.decoder.latency_frames)
        )
        hop_in = self.hop * self._ratio
        self._loud_len = max(1, int(round(hop_in)))
        cap = CHUNK + int(math.ceil(self.delay_samples + hop_in)) + 2 * self._loud_len
        self._power = np.zeros(cap)  # squared input samples, indexed by absolute sample mod cap
        self.reset()

    # ------------------------------------------------------------------ properties

    @property
    def delay_samples(self) -> float:
        """Total algorithmic delay ``D`` [input samples] (see the module docstring)."""
        return self._delay_analysis * self._ratio + self.pre_delay_samples

    @property
    def latency_samples(self) -> int:
        """:attr:`delay_samples` rounded (the streaming-processor convention)."""
        return int(round(self.delay_samples))

    @property
    def cue_delay_samples(self) -> float:
        """What a cue's timestamp subtracts from its evaluation's newest sample [input samples]
        (resampler + half the cue's level window + ``pre_delay_samples``); 0 without cues."""
        if self.cue is None:
            return 0.0
        return (self.resampler.latency_samples + self.cue.latency_samples) * self._ratio + self.pre_delay_samples

    @property
    def samples_sanitised(self) -> int:
        """Non-finite input samples replaced by 0 since the last reset."""
        return int(self.resampler.samples_sanitised)

    def latency(self, blocksize: int | None = None, buffering_samples: float = 0.0) -> LatencyReport:
        """Per-stage delays, from what each processor reports.

        Parameters
        ----------
        blocksize : int, optional [input samples]
            Device block size, for the hop wait (None: none reported).
        buffering_samples : float [input samples]
            Device input latency the source reports.
        """
        r = self._ratio
        wait = hop_wait(self.input_rate, blocksize, self.hop, self.analysis_rate) if blocksize else (0.0, 0.0)
        return LatencyReport(
            input_rate=self.input_rate,
            analysis_rate=self.analysis_rate,
            hop=self.hop * r,
            resampler=self.resampler.latency_samples * r,
            cfp_window=self.cfp.delay_samples * r,
            model=self.bundle.delay_frames * self.hop * r,
            smoothing=self.decoder.latency_frames * self.hop * r,
            input_processing=self.pre_delay_samples,
            hop_wait_mean=wait[0],
            hop_wait_worst=wait[1],
            buffering=float(buffering_samples),
            blocksize=blocksize,
        )

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Start a new stream: every stage's state, counters and the loudness history zeroed."""
        self.resampler.reset()
        self.cfp.reset()
        self.engine.reset()
        self.decoder.reset()
        if self.cue is not None:
            self.cue.reset()
        self._power[:] = 0.0
        self.samples_in = 0
        self.frames_emitted = 0

    def warmup(self) -> None:
        """Compile or load every numba kernel and run the engine, before any stream opens.

        Runs a quarter second of a quiet tone through the whole path and resets, so the
        first real block pays no compilation or first-call cost.
        """
        self.cfp.warmup()
        self.engine.warmup()
        if self.cue is not None:
            self.cue.warmup()
        n = self.input_rate // 4
        t = np.arange(n) / self.input_rate
        self.process((0.05 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32))
        self.reset()
        self.timings.clear()

    # ------------------------------------------------------------------ streaming

    def process(self, block: NDArray) -> list[PitchFrame]:
        """Feed input samples; return the frames whose hops they completed.

        Parameters
        ----------
        block : ndarray [shape=(n,) or (n, 1)] [float32 or float64]
            Mono samples at :attr:`input_rate`, any ``n`` (0 included). NaN and inf are
            replaced by 0 (counted in :attr:`samples_sanitised`).

        Returns
        -------
        frames : list of PitchFrame
            In stream order; usually 0 or 1 per device block.
        """
        out: list[PitchFrame] = []
        self._feed(block, out, None)
        return out

    def process_events(self, block: NDArray) -> list[PitchFrame | OnsetCue]:
        """Like :meth:`process`, with the :class:`OnsetCue` records between the frames.

        The same frames as :meth:`process`, in stream order with the cues the block's audio
        raised (none when ``config.cue.enabled`` is off). A cue at a frame boundary comes
        before that frame.
        """
        out: list[PitchFrame | OnsetCue] = []
        self._feed(block, out, out)
        return out

    def _feed(self, block: NDArray, out: list, cues: list | None) -> None:
        x = np.asarray(block)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise AudioInputError(f"expected mono samples of shape (n,), got shape {x.shape}")
        for start in range(0, x.shape[0], CHUNK):
            self._process_chunk(x[start : start + CHUNK], out, cues)

    def flush(self) -> list[PitchFrame]:
        """Feed silence until every sample fed so far is described by a frame.

        For the end of a file: afterwards the stream holds trailing silence, so call
        :meth:`reset` before reusing the tracker.
        """
        n = int(math.ceil(self.delay_samples + 2 * self.hop * self._ratio)) + 1
        return self.process(np.zeros(n, np.float32))

    def _process_chunk(self, x: NDArray, out: list, cues: list | None) -> None:
        clock = time.perf_counter_ns
        t0 = clock()
        self._store_power(x)
        y = self.resampler.process(x)
        t1 = clock()
        hop, cfp, engine, decoder = self.hop, self.cfp, self.engine, self.decoder
        i, n = 0, y.shape[0]
        while i < n:
            take = min(n - i, hop - cfp.samples_seen % hop)  # up to the end of the current hop
            ta = clock()
            piece = y[i : i + take]
            if self.cue is not None:
                # the detector sees every sample even when nobody takes cues (process()), so
                # process_events() after it raises the same cues as a stream that only used it
                for c in self.cue.process(piece):
                    if cues is not None:
                        cues.append(self._cue(c))
            frames = cfp.process(piece)
            i += take
            if frames.shape[0] == 0:
                continue
            tb = clock()
            salience, _ = engine.step(frames)
            tc = clock()
            decoded = decoder.step(salience[0])
            td = clock()
            out.append(self._frame(decoded.f0_hz, decoded.voiced, decoded.confidence))
            self.timings.add_hop(tb - ta, tc - tb, td - tc, clock() - ta)
        self.timings.add_block(t1 - t0, clock() - t0)

    def _store_power(self, x: NDArray) -> None:
        """Squared input samples into the loudness history (non-finite -> 0).

        Squared in float64, so no float32 sample overflows (a float32 square of 1e20 would be
        inf, and read as silence); a float64 sample whose square overflows counts as 0 like
        NaN and inf, without a RuntimeWarning on the console.
        """
        cap = self._power.shape[0]
        n = x.shape[0]
        start = self.samples_in % cap
        first = min(n, cap - start)
        with np.errstate(over="ignore", invalid="ignore"):
            for dst, src in ((self._power[start : start + first], x[:first]), (self._power[: n - first], x[first:])):
                if src.shape[0]:
                    np.square(src, out=dst, dtype=np.float64)
                    np.nan_to_num(dst, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        self.samples_in += n

    def _loudness_db(self, centre: float) -> float:
        """RMS level of the hop centred on input position ``centre`` [dBFS]."""
        m = self._loud_len
        a = int(math.floor(centre - 0.5 * m + 0.5))
        b = min(a + m, self.samples_in)
        a = max(a, 0)
        if b <= a:
            return SILENCE_DB
        cap = self._power.shape[0]
        i, n = a % cap, b - a
        if i + n <= cap:
            total = float(self._power[i : i + n].sum())
        else:
            total = float(self._power[i:].sum()) + float(self._power[: i + n - cap].sum())
        ms = total / m
        return 10.0 * math.log10(ms) if ms > 1e-12 else SILENCE_DB

    def _cue(self, c: Cue) -> OnsetCue:
        position = (c.newest - self.resampler.latency_samples - self.cue.latency_samples) * self._ratio
        sample = int(math.floor(position - self.pre_delay_samples + 0.5))
        return OnsetCue(self.frames_emitted, sample, sample / self.input_rate, c.f0_hz, c.periodicity, c.level_db)

    def _frame(self, f0_hz: float, voiced: bool, confidence: float) -> PitchFrame:
        k = self.frames_emitted
        self.frames_emitted += 1
        newest = ((k + 1) * self.hop - 1) * self._ratio
        position = newest - self._delay_analysis * self._ratio  # in the audio the tracker received
        sample = int(math.floor(position - self.pre_delay_samples + 0.5))
        return PitchFrame(
            index=k,
            sample=sample,
            time=sample / self.input_rate,
            f0_hz=f0_hz,
            voiced=voiced,
            confidence=confidence,
            loudness_db=self._loudness_db(position),
        )


# ---------------------------------------------------------------------------- offline


@dataclass(frozen=True)
class Transcription:
    """The frames of a signal fed through a :class:`Tracker`.

    Attributes
    ----------
    frames : list of PitchFrame
        Those describing the signal, ``0 <= frame.sample < n_samples``.
    rate : int [Hz]
    n_samples : int [input samples]
    latency : LatencyReport
    cues : list of OnsetCue
        The fast onset cues the stream raised, ``0 <= cue.sample < n_samples``
        (:meth:`Tracker.process_events`).
    """

    frames: list[PitchFrame]
    rate: int
    n_samples: int
    latency: LatencyReport
    cues: list[OnsetCue] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length of the signal [s]."""
        return self.n_samples / self.rate

    def events(self) -> list[PitchFrame | OnsetCue]:
        """Frames and cues in stream order, as :meth:`Tracker.process_events` gave them."""
        return merge_events(self.frames, self.cues)


def merge_events(frames: Sequence[PitchFrame], cues: Sequence[OnsetCue]) -> list[PitchFrame | OnsetCue]:
    """Frames and cues of one stream in stream order: each cue before the frame numbered
    ``cue.index`` (the order :meth:`Tracker.process_events` emits them in)."""
    out: list[PitchFrame | OnsetCue] = []
    k = 0
    for f in frames:
        while k < len(cues) and cues[k].index <= f.index:
            out.append(cues[k])
            k += 1
        out.append(f)
    return out + list(cues[k:])


def transcribe_signal(
    x: NDArray,
    sr: int,
    bundle: ModelBundle | str | Path | None = None,
    backend: str = "auto",
    config: TrackerConfig | None = None,
    *,
    tracker: Tracker | None = None,
    block: int = CHUNK,
) -> Transcription:
    """Track a whole signal: the live stream fed from memory, then flushed.

    Parameters
    ----------
    x : ndarray [shape=(n,)]
        Mono samples at ``sr``.
    sr : int [Hz]
    bundle, backend, config
        As :class:`Tracker` (ignored when ``tracker`` is given).
    tracker : Tracker, optional
        Reuse a (warmed-up) tracker with ``input_rate == sr``; it is reset first.
    block : int [samples]
        Feeding block size (any size gives the same frames).

    Returns
    -------
    Transcription
    """
    if tracker is None:
        tracker = Tracker(sr, bundle, backend, config)
    elif tracker.input_rate != sr:
        raise AudioInputError(f"tracker runs at {tracker.input_rate} Hz, signal is at {sr} Hz")
    if block <= 0:
        raise AudioInputError(f"block size must be positive, got {block}")
    x = np.asarray(x)
    tracker.reset()
    events: list[PitchFrame | OnsetCue] = []
    for i in range(0, x.shape[0], block):
        events += tracker.process_events(x[i : i + block])
    events += tracker.flush()
    n = int(x.shape[0])
    kept = [f for f in events if isinstance(f, PitchFrame) and 0 <= f.sample < n]
    cues = [c for c in events if isinstance(c, OnsetCue) and 0 <= c.sample < n]
    return Transcription(kept, sr, n, tracker.latency(), cues)


def transcribe_file(
    path: str | Path,
    bundle: ModelBundle | str | Path | None = None,
    backend: str = "auto",
    config: TrackerConfig | None = None,
    *,
    channel: int | str | None = None,
    tracker: Tracker | None = None,
) -> Transcription:
    """Track an audio file (WAV, FLAC, OGG, MP3, AIFF...) at its own rate.

    Parameters
    ----------
    path : str or Path
    bundle, backend, config
        As :class:`Tracker`.
    channel : None, "mix" or int
        For multi-channel files (see :func:`melodyrt.rt.audio_io.read_audio`).
    tracker : Tracker, optional
        Reused when its rate matches the file's; otherwise a new one is made with its
        bundle and engine.

    Raises
    ------
    AudioInputError
        Unreadable, corrupt, unsupported or too short files (one line naming the file).
    """
    from .audio_io import read_audio

    x, rate = read_audio(path, channel)
    if tracker is not None and tracker.input_rate != rate:
        tracker = Tracker(rate, tracker.bundle, config=tracker.config, engine=tracker.engine,
                          pre_delay_samples=tracker.pre_delay_samples * rate / tracker.input_rate)
    return transcribe_signal(x, rate, bundle, backend, config, tracker=tracker)

"""A processing chain from YAML: source -> processors -> (tracker) -> sinks.

Example (every stage is a plugin found by name, see :mod:`melodyrt.rt.plugins`)::

    sample_rate: 48000        # optional when a source is given (it knows its rate)
    block_size: 128           # [samples] per block, passed to processors
    source: {plugin: synth, args: {seed: 1}}
    processors:
      - {plugin: highpass, args: {cutoff_hz: 90, order: 2}}
      - noise-gate                       # a bare name: default arguments
    sinks:
      - {plugin: midi, args: {virtual: true, api: jack, bend_range: 2}}
      - {plugin: osc, args: {host: 127.0.0.1, port: 9000}}

The tracker is not a plugin: the caller (``melodyrt live``, a test) owns it and connects it
with :meth:`Chain.run`, or calls :meth:`Chain.process` and :meth:`Chain.send` itself. The
chain's ``latency_samples`` (source + processors) must be added to the tracker's own delay
when frames are time-stamped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import yaml
from numpy.typing import NDArray

from . import plugins
from .errors import ConfigError
from .frames import OnsetCue, PitchFrame, Sink
from .plugins import Processor, Source

log = logging.getLogger(__name__)

TOP_KEYS = ("sample_rate", "block_size", "source", "processors", "sinks")
STAGE_KEYS = ("plugin", "args")


class Tracker(Protocol):
    """What :meth:`Chain.run` needs from the tracker: audio block in, frames out."""

    def process(self, block: NDArray[np.float32]) -> list[PitchFrame]: ...


@dataclass(frozen=True)
class StageSpec:
    """One stage of a chain file: plugin name and its keyword arguments."""

    plugin: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, item: Any, where: str) -> "StageSpec":
        """From ``"name"`` or ``{plugin: name, args: {...}}``."""
        if isinstance(item, str) and item:
            return cls(item)
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a plugin name or {{plugin: NAME, args: {{...}}}}, got {item!r}")
        unknown = sorted(set(item) - set(STAGE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: plugin, args")
        name, args = item.get("plugin"), item.get("args") or {}
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: 'plugin' must be a plugin name")
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise ConfigError(f"{where}: 'args' must be a mapping of argument names to values")
        return cls(name, dict(args))


@dataclass(frozen=True)
class ChainSpec:
    """A parsed chain file (nothing built yet)."""

    source: StageSpec | None = None
    processors: tuple[StageSpec, ...] = ()
    sinks: tuple[StageSpec, ...] = ()
    sample_rate: int | None = None
    block_size: int = 128

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "chain") -> "ChainSpec":
        """Validate a mapping (as loaded from YAML)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
        unknown = sorted(set(data) - set(TOP_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(TOP_KEYS)}")

        def stages(key: str) -> tuple[StageSpec, ...]:
            items = data.get(key) or []
            if not isinstance(items, Sequence) or isinstance(items, str):
                raise ConfigError(f"{where}: '{key}' must be a list")
            return tuple(StageSpec.parse(it, f"{where}: {key}[{i}]") for i, it in enumerate(items))

        rate, block = data.get("sample_rate"), data.get("block_size", 128)
        if rate is not None and (not isinstance(rate, int) or rate <= 0):
            raise ConfigError(f"{where}: sample_rate must be a positive integer [Hz], got {rate!r}")
        if not isinstance(block, int) or block <= 0:
            raise ConfigError(f"{where}: block_size must be a positive integer [samples], got {block!r}")
        src = data.get("source")
        return cls(
            source=StageSpec.parse(src, f"{where}: source") if src is not None else None,
            processors=stages("processors"),
            sinks=stages("sinks"),
            sample_rate=rate,
            block_size=block,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ChainSpec":
        """Read and validate a chain file.

        Raises
        ------
        ConfigError
            Missing file, YAML syntax error, or invalid content (one line).
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read chain file ({exc.strerror or exc})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"{p}: invalid YAML{at}") from None
        return cls.from_mapping(data or {}, where=str(p))


class Chain:
    """Built stages, wired in order.

    Attributes
    ----------
    source : Source or None
    processors : list of Processor
    sinks : list of Sink
    sample_rate : int [Hz]
    block_size : int [samples]
    """

    def __init__(self, source: Source | None, processors: Sequence[Processor], sinks: Sequence[Sink],
                 sample_rate: int, block_size: int) -> None:
        self.source = source
        self.processors = list(processors)
        self.sinks = list(sinks)
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.sink_errors = 0
        self._closed = False

    @property
    def processor_latency_samples(self) -> int:
        """Sum of the processors' latencies [samples at ``sample_rate``]."""
        return int(sum(int(p.latency_samples) for p in self.processors))

    @property
    def latency_samples(self) -> int:
        """Delay the chain adds before the tracker: source + processors [samples]."""
        src = int(getattr(self.source, "latency_samples", 0) or 0) if self.source is not None else 0
        return src + self.processor_latency_samples

    @property
    def sink_latency_samples(self) -> int:
        """Largest delay a sink adds after the tracker [samples]."""
        return max((int(getattr(s, "latency_samples", 0) or 0) for s in self.sinks), default=0)

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run one audio block through the processors (``[shape=(n,)] [float32]``)."""
        for p in self.processors:
            block = p.process(block)
        return block

    def reset(self) -> None:
        """Reset every processor."""
        for p in self.processors:
            p.reset()

    def send(self, frame: PitchFrame) -> None:
        """Give a frame to every sink; a failing sink is logged and does not stop the others."""
        for s in self.sinks:
            try:
                s.send(frame)
            except Exception:
                self.sink_errors += 1
                log.exception("sink %s failed on frame %d", type(s).__name__, frame.index)

    def cue(self, cue: OnsetCue) -> None:
        """Give an onset cue to every sink that takes cues (``cue()``: MIDI, OSC)."""
        for s in self.sinks:
            take = getattr(s, "cue", None)
            if not callable(take):
                continue
            try:
                take(cue)
            except Exception:
                self.sink_errors += 1
                log.exception("sink %s failed on the cue before frame %d", type(s).__name__, cue.index)

    def run(self, tracker: Tracker, *, stop: threading.Event | None = None) -> int:
        """Stream the source through processors, ``tracker`` and sinks until it ends.

        Returns
        -------
        frames : int
            Number of frames sent to the sinks.
        """
        if self.source is None:
            raise ConfigError("this chain has no source; give one in the chain file or feed Chain.process yourself")
        n = 0
        for block in self.source:
            if stop is not None and stop.is_set():
                break
            for event in tracker.process_events(self.process(block)):
                if isinstance(event, OnsetCue):
                    self.cue(event)
                    continue
                self.send(event)
                n += 1
        return n

    def close(self) -> None:
        """Close the source and every sink (each even if another fails); idempotent."""
        if self._closed:
            return
        self._closed = True
        stages: list[Any] = ([self.source] if self.source is not None else []) + self.sinks
        for s in stages:
            try:
                s.close()
            except Exception:
                log.exception("closing %s failed", type(s).__name__)

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_chain(
    spec: ChainSpec | Mapping[str, Any] | str | Path,
    *,
    source: Source | None = None,
    sample_rate: int | None = None,
    block_size: int | None = None,
    extra_sinks: Sequence[Sink] = (),
) -> Chain:
    """Create every stage of a chain.

    Parameters
    ----------
    spec : ChainSpec, mapping or path of a YAML file
    source : Source, optional
        Use this source instead of the file's.
    sample_rate : int [Hz], optional
        The caller supplies the audio at this rate (e.g. the device chosen on the command
        line): the file's ``source`` is not built and processors run at this rate.
    block_size : int [samples], optional
        Overrides the file's block size.
    extra_sinks : sequence of Sink
        Appended after the file's sinks (e.g. ``--midi-port`` on the command line).

    Raises
    ------
    ConfigError
        Unknown plugin (one line listing the available ones), bad arguments, no sample rate.
        Stages built before the failure are closed.
    """
    if isinstance(spec, (str, Path)):
        spec = ChainSpec.from_yaml(spec)
    elif not isinstance(spec, ChainSpec):
        spec = ChainSpec.from_mapping(spec)
    built: list[Any] = []
    try:
        src = source
        if src is None and sample_rate is None and spec.source is not None:
            src = plugins.create("source", spec.source.plugin, **spec.source.args)
            built.append(src)
        rate = int(src.sample_rate) if src is not None else (sample_rate or spec.sample_rate)
        if not rate:
            raise ConfigError("chain: no sample rate: give a source, 'sample_rate' in the file, or sample_rate=")
        block = int(block_size or getattr(src, "block_size", 0) or spec.block_size)
        procs = []
        for st in spec.processors:
            procs.append(plugins.create("processor", st.plugin, sample_rate=rate, block_size=block, **st.args))
        sinks = []
        for st in spec.sinks:
            s = plugins.create("sink", st.plugin, **st.args)
            built.append(s)
            sinks.append(s)
    except BaseException:
        for obj in reversed(built):
            try:
                obj.close()
            except Exception:
                pass
        raise
    return Chain(src, procs, [*sinks, *extra_sinks], rate, block)


# ------------------------------------------------------------------------- built-in source


class SynthSource:
    """The synthetic sung melody of :func:`melodyrt.rt.synth.sung_melody`, in blocks.

    Parameters
    ----------
    sample_rate : int [Hz]
    block_size : int [samples]
    seed : int
    repeat : int
        Times the melody is played.
    realtime : bool
        Pace the blocks at the audio rate (sleep between them), as a live input would.
    """

    latency_samples = 0

    def __init__(self, sample_rate: int = 48000, block_size: int = 128, seed: int = 0, repeat: int = 1,
                 realtime: bool = False) -> None:
        from .synth import sung_melody

        if sample_rate <= 0 or block_size <= 0 or repeat <= 0:
            raise ConfigError("synth source: sample_rate, block_size and repeat must be positive")
        self.sample_rate, self.block_size = int(sample_rate), int(block_size)
        self.song = sung_melody(sr=self.sample_rate, seed=seed)
        self.repeat, self.realtime = int(repeat), bool(realtime)
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[NDArray[np.float32]]:
        audio, n = self.song.audio, self.block_size
        t0, sent = time.monotonic(), 0
        for _ in range(self.repeat):
            for i in range(0, audio.shape[0], n):
                if self._stop.is_set():
                    return
                block = audio[i:i + n]
                if self.realtime:
                    wait = t0 + sent / self.sample_rate - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
                sent += block.shape[0]
                yield block

    def close(self) -> None:
        """Stop iterating (idempotent)."""
        self._stop.set()


__all__ = ["Chain", "ChainSpec", "StageSpec", "SynthSource", "Tracker", "build_chain"]

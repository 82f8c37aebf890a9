"""Plugin host: sources, processors and sinks found by name through entry points.

A plugin is a factory (a class or a function) registered in the entry-point group
``melodyrt.plugins`` under the name ``KIND.NAME``, where KIND is ``source``, ``processor``
or ``sink``::

    [project.entry-points."melodyrt.plugins"]
    "sink.vibrato-meter" = "melodyrt_vibrato:VibratoMeter"

Discovery reads only the installed packages' metadata; a plugin's module is imported when a
chain asks for it, so a broken third-party plugin cannot break the others.

What each kind's factory receives and returns (all keyword arguments; ``args`` come from the
chain YAML):

- ``source``: ``factory(**args)`` -> :class:`Source`.
- ``processor``: ``factory(*, sample_rate, block_size, **args)`` -> :class:`Processor`.
- ``sink``: ``factory(**args)`` -> :class:`~melodyrt.rt.frames.Sink`.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .frames import PitchFrame, Sink

GROUP = "melodyrt.plugins"
KINDS = ("source", "processor", "sink")


@runtime_checkable
class Source(Protocol):
    """Where audio comes from: blocks of mono float32 samples at ``sample_rate``.

    Attributes
    ----------
    sample_rate : int [Hz]
    block_size : int [samples]
        Length of the blocks it yields (the last one may be shorter).
    latency_samples : int [samples]
        Delay of the audio it delivers behind real time (0 for files).
    """

    sample_rate: int
    block_size: int
    latency_samples: int

    def __iter__(self) -> Iterator[NDArray[np.float32]]:
        """Blocks, shape ``(n,)``, until the source ends or is closed."""

    def close(self) -> None:
        """Stop and release (idempotent)."""


@runtime_checkable
class Processor(Protocol):
    """Audio block in, audio block of the same length out (before the tracker).

    Attributes
    ----------
    latency_samples : int [samples]
        How late its output is relative to its input.
    """

    latency_samples: int

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        """``block`` [shape=(n,)] [float32] -> [shape=(n,)] [float32]."""

    def reset(self) -> None:
        """Clear the streaming state (as if no audio had been seen)."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, not yet imported.

    Attributes
    ----------
    kind : {"source", "processor", "sink"}
    name : str
        Name used in a chain YAML.
    value : str
        ``module:attribute`` of the factory.
    distribution : str
        Package that registered it ("" when unknown).
    """

    kind: str
    name: str
    value: str
    distribution: str
    entry_point: Any

    def load(self) -> Callable[..., Any]:
        """Import the factory.

        Raises
        ------
        ConfigError
            The module cannot be imported (one line naming the plugin and package).
        """
        try:
            return self.entry_point.load()
        except Exception as exc:   # ImportError, or whatever the plugin's import raises
            origin = f" (from {self.distribution})" if self.distribution else ""
            raise ConfigError(f"{self.kind} plugin {self.name!r}{origin} cannot be loaded: {type(exc).__name__}: {exc}") from None


def discover(kind: str | None = None) -> dict[str, PluginInfo]:
    """Installed plugins of ``kind`` (all kinds when None), keyed by ``"kind.name"``.

    Read fresh on every call, so a package installed while the process runs is found.
    Entry points whose name has no known ``KIND.`` prefix are ignored.
    """
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=GROUP):
        k, sep, name = ep.name.partition(".")
        if not sep or k not in KINDS or not name or (kind is not None and k != kind):
            continue
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        found.setdefault(ep.name, PluginInfo(k, name, ep.value, dist, ep))
    return dict(sorted(found.items()))


def available(kind: str) -> list[str]:
    """Sorted names of the installed plugins of one kind."""
    return [p.name for p in discover(kind).values()]


def find(kind: str, name: str) -> PluginInfo:
    """The plugin ``name`` of ``kind``.

    Raises
    ------
    ConfigError
        Unknown name: one line listing the available plugins of that kind (and saying so
        when the name exists under another kind).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    every = discover()
    info = every.get(f"{kind}.{name}")
    if info is not None:
        return info
    names = [p.name for p in every.values() if p.kind == kind]
    other = [p.kind for p in every.values() if p.name == name]
    hint = f" ({name!r} is a {other[0]}, not a {kind})" if other else ""
    raise ConfigError(f"unknown {kind} plugin {name!r}{hint}; available {kind}s: {', '.join(names) or 'none'}")


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Find, import and call the factory of plugin ``name``.

    Raises
    ------
    ConfigError
        Unknown plugin, import failure, or arguments the factory does not accept.
        Errors the factory itself raises pass through unchanged.
    """
    factory = find(kind, name).load()
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{kind} plugin {name!r}: {exc}") from None
    except ValueError:   # no signature (some builtins): let the call decide
        pass
    return factory(**kwargs)


def describe() -> str:
    """Human-readable listing of all plugins, one line per kind."""
    return "\n".join(f"{k}s: {', '.join(available(k)) or 'none'}" for k in KINDS)


# ------------------------------------------------------------------------- built-in sinks


class CsvSink:
    """Write frames as CSV with the header ``time,f0_hz,confidence`` (one row per 10 ms frame).

    Parameters
    ----------
    path : str or Path
        Output file; rows go to a temporary file next to it that :meth:`close` renames, so
        an interrupted run never leaves a half-written file.

    Notes
    -----
    ``time`` [s] is the frame's audio time, ``f0_hz`` [Hz] is 0 when unvoiced, both with
    3 decimals; ``confidence`` 0..1 with 4.
    """

    latency_samples = 0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path}: folder {self.path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh: IO[str] | None = os.fdopen(fd, "w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(("time", "f0_hz", "confidence"))

    def send(self, frame: PitchFrame) -> None:
        """Append one row."""
        if self._fh is None:
            return
        f0 = frame.f0_hz if frame.voiced and frame.f0_hz > 0 else 0.0
        self._writer.writerow((f"{frame.time:.3f}", f"{f0:.3f}", f"{frame.confidence:.4f}"))

    def close(self) -> None:
        """Finish the file and move it into place (idempotent)."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial output, leaving any earlier file at ``path`` untouched."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        fh.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()


__all__ = ["GROUP", "KINDS", "CsvSink", "PluginInfo", "Processor", "Sink", "Source", "available", "create",
           "describe", "discover", "find"]

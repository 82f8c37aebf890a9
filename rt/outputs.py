"""Where tracked frames go besides MIDI ports and OSC: files, and the console readout.

- CSV: header ``time,f0_hz,confidence``, one row every 10 ms from 0 to the end of the audio,
  ``f0_hz = 0`` when unvoiced (:func:`write_csv`).
- Standard MIDI file: the notes (and, optionally, pitch bend) that the live MIDI sink would
  play for the same frames, from :class:`~melodyrt.rt.midi_out.MidiNoteLogic`
  (:func:`write_midi`).
- PNG: the contour on a log-frequency axis labelled with note names, confidence below
  (:func:`plot_contour`).
- :class:`ReadoutSink`: the one-line live display (note name, cents, confidence).

Files are written to a temporary name next to the target and renamed when complete, so an
interrupted run never leaves a half-written file or spoils an earlier one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np
from numpy.typing import NDArray

from .errors import MelodyRTError
from .frames import PitchFrame
from .readout import NOTE_NAMES, note_name

#: Output formats :func:`write_outputs` knows, by file suffix.
FORMATS = ("csv", "mid", "png")
#: Spacing of CSV rows [s].
GRID_S = 0.01


@dataclass(frozen=True)
class FrameTrack:
    """Frames as arrays (what the file writers work on).

    Attributes
    ----------
    time : ndarray [shape=(T,)] [s]
        Time each frame describes.
    f0_hz : ndarray [shape=(T,)] [Hz]
        Best pitch guess (also for unvoiced frames).
    voiced : ndarray [shape=(T,)] [bool]
    confidence : ndarray [shape=(T,)] [0..1]
    loudness_db : ndarray [shape=(T,)] [dBFS]
    """

    time: NDArray[np.float64]
    f0_hz: NDArray[np.float64]
    voiced: NDArray[np.bool_]
    confidence: NDArray[np.float64]
    loudness_db: NDArray[np.float64]

    @classmethod
    def from_frames(cls, frames: Sequence[PitchFrame]) -> "FrameTrack":
        """Collect the fields of ``frames`` (in stream order)."""
        return cls(
            np.array([f.time for f in frames], np.float64),
            np.array([f.f0_hz for f in frames], np.float64),
            np.array([f.voiced for f in frames], np.bool_),
            np.array([f.confidence for f in frames], np.float64),
            np.array([f.loudness_db for f in frames], np.float64),
        )

    @property
    def voiced_f0(self) -> NDArray[np.float64]:
        """f0 [Hz] with 0 where unvoiced."""
        return np.where(self.voiced & (self.f0_hz > 0), self.f0_hz, 0.0)

    def on_grid(self, duration: float, step: float = GRID_S) -> tuple[NDArray, NDArray, NDArray]:
        """Resample to times ``0, step, 2 step, ... < duration``.

        Between two voiced frames the pitch is interpolated linearly in cents; next to an
        unvoiced frame the nearer frame decides. Confidence is interpolated linearly.

        Returns
        -------
        time, f0_hz, confidence : ndarray [shape=(ceil(duration / step),)]
            ``f0_hz`` is 0 where unvoiced.
        """
        n = max(0, int(math.ceil(duration / step - 1e-9)))
        t = np.arange(n) * step
        if self.time.size == 0:
            return t, np.zeros(n), np.zeros(n)
        if self.time.size == 1:
            return t, np.full(n, self.voiced_f0[0]), np.full(n, self.confidence[0])
        b = np.clip(np.searchsorted(self.time, t, side="right"), 1, self.time.size - 1)
        a = b - 1
        span = np.maximum(self.time[b] - self.time[a], 1e-12)
        w = np.clip((t - self.time[a]) / span, 0.0, 1.0)
        f0 = self.voiced_f0
        both = (f0[a] > 0) & (f0[b] > 0)
        log_a = np.log2(np.where(f0[a] > 0, f0[a], 1.0))
        log_b = np.log2(np.where(f0[b] > 0, f0[b], 1.0))
        nearest = np.where(w < 0.5, f0[a], f0[b])
        out_f0 = np.where(both, 2.0 ** ((1 - w) * log_a + w * log_b), nearest)
        conf = (1 - w) * self.confidence[a] + w * self.confidence[b]
        return t, out_f0, conf


# ------------------------------------------------------------------------------ files


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    Raises
    ------
    MelodyRTError
        The target folder does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MelodyRTError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_csv(track: FrameTrack, path: str | Path, duration: float) -> Path:
    """CSV ``time,f0_hz,confidence`` on the 10 ms grid over ``[0, duration)``.

    Parameters
    ----------
    track : FrameTrack
    path : str or Path
    duration : float [s]
        Length of the audio.

    Returns
    -------
    path : Path
    """
    t, f0, conf = track.on_grid(duration)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write("time,f0_hz,confidence\n")
            for row in zip(t, f0, conf):
                fh.write(f"{row[0]:.2f},{row[1]:.3f},{row[2]:.4f}\n")
    return path


def read_csv(path: str | Path) -> NDArray[np.float64]:
    """Read a CSV written by :func:`write_csv` as an ``(n, 3)`` array (for checks)."""
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def _midi_module() -> Any:
    try:
        from . import midi_out
    except ImportError as exc:
        raise MelodyRTError(f"MIDI output is not available in this installation ({exc})") from None
    return midi_out


def write_midi(frames: Sequence[PitchFrame], path: str | Path, bend: bool = True, **settings: Any) -> Path:
    """Standard MIDI file of the notes the live MIDI sink plays for ``frames``.

    Notes come from :class:`~melodyrt.rt.midi_out.MidiNoteLogic`: the nearest semitone of
    each voiced segment, with onset/change/release hysteresis and a minimum note length;
    velocity from the frames' loudness.

    Parameters
    ----------
    frames : sequence of PitchFrame
    path : str or Path
    bend : bool
        Keep the continuous pitch bend (relative to the held note, range announced with
        RPN 0); False writes plain notes.
    **settings
        :class:`~melodyrt.rt.midi_out.MidiConfig` fields (channel, bend_range,
        min_note_frames, ...).

    Returns
    -------
    path : Path
    """
    mo = _midi_module()
    events = [(t, m) for t, m in mo.frames_to_messages(frames, mo.MidiConfig(**settings))
              if bend or m.type != "pitchwheel"]
    return Path(mo.write_midi_file(path, events))


def midi_notes(path: str | Path) -> list[tuple[float, float, int, int]]:
    """Notes of a MIDI file as ``(start [s], end [s], note, velocity)`` (for checks and plots)."""
    import mido

    held: dict[tuple[int, int], tuple[float, int]] = {}
    notes = []
    t = 0.0
    for msg in mido.MidiFile(str(path)):
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            held[(msg.channel, msg.note)] = (t, msg.velocity)
        elif msg.type in ("note_off", "note_on") and (msg.channel, msg.note) in held:
            start, vel = held.pop((msg.channel, msg.note))
            notes.append((start, t, msg.note, vel))
    return sorted(notes)


def _note_ticks(lo_hz: float, hi_hz: float) -> tuple[list[float], list[str]]:
    lo, hi = 69 + 12 * math.log2(lo_hz / 440.0), 69 + 12 * math.log2(hi_hz / 440.0)
    every = (0, 2, 4, 5, 7, 9, 11) if hi - lo <= 24 else (0,) if hi - lo > 48 else (0, 4, 7)
    midi = [m for m in range(int(math.ceil(lo)), int(math.floor(hi)) + 1) if m % 12 in every]
    return [440.0 * 2 ** ((m - 69) / 12) for m in midi], [f"{NOTE_NAMES[m % 12]}{m // 12 - 1}" for m in midi]


def plot_contour(
    track: FrameTrack,
    path: str | Path,
    *,
    title: str = "",
    duration: float | None = None,
    reference: tuple[NDArray, NDArray] | None = None,
) -> Path:
    """PNG of the pitch contour on a log-frequency axis with note names, confidence below.

    Parameters
    ----------
    track : FrameTrack
    path : str or Path
    title : str
    duration : float, optional [s]
        x-axis end (default: the last frame).
    reference : (time [s], f0 [Hz]) arrays, optional
        A known contour drawn underneath (0 = not drawn), e.g. the synthesized truth.

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    f0 = track.voiced_f0
    shown = [f0[f0 > 0]]
    if reference is not None:
        shown.append(np.asarray(reference[1])[np.asarray(reference[1]) > 0])
    values = np.concatenate(shown)
    lo, hi = (float(values.min()) / 1.2, float(values.max()) * 1.2) if values.size else (80.0, 1000.0)
    lo, hi = max(lo, 25.0), max(hi, lo * 1.5)
    fig, (ax, ac) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=(4, 1), constrained_layout=True)
    if reference is not None:
        rt, rf = np.asarray(reference[0]), np.asarray(reference[1], np.float64)
        ax.plot(rt, np.where(rf > 0, rf, np.nan), color="0.75", linewidth=3.5, label="reference")
    ax.plot(track.time, np.where(f0 > 0, f0, np.nan), color="C0", linewidth=1.4, label="tracked f0")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ticks, names = _note_ticks(lo, hi)
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FixedFormatter(names))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, axis="y", color="0.9")
    ax.set_ylabel("pitch (note)")
    hz = ax.secondary_yaxis("right")
    hz.set_ylabel("Hz")
    hz.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    if reference is not None:
        ax.legend(loc="upper right", fontsize=8)
    ac.fill_between(track.time, 0, track.voiced.astype(float), color="C2", alpha=0.15, step="mid", label="voiced")
    ac.plot(track.time, track.confidence, color="C1", linewidth=1.0, label="confidence")
    ac.set_ylim(0, 1.05)
    ac.set_ylabel("conf.")
    ac.set_xlabel("time [s]")
    ac.legend(loc="upper right", fontsize=7, ncols=2)
    end = duration if duration is not None else (float(track.time[-1]) if track.time.size else 1.0)
    ac.set_xlim(0, max(end, 1e-3))
    if title:
        ax.set_title(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def parse_formats(text: str) -> tuple[str, ...]:
    """``"csv,mid,png"`` to a tuple of known formats (``midi`` is accepted for ``mid``).

    Raises
    ------
    MelodyRTError
        Unknown or no format.
    """
    out: list[str] = []
    for part in text.split(","):
        f = part.strip().lower().lstrip(".")
        f = "mid" if f == "midi" else f
        if not f:
            continue
        if f not in FORMATS:
            raise MelodyRTError(f"unknown output format {part.strip()!r} (choose from {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    if not out:
        raise MelodyRTError(f"no output format given (choose from {', '.join(FORMATS)})")
    return tuple(out)


def write_outputs(
    frames: Sequence[PitchFrame],
    stem: str | Path,
    formats: Sequence[str],
    duration: float,
    *,
    title: str = "",
    bend: bool = True,
    reference: tuple[NDArray, NDArray] | None = None,
    midi: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``stem.csv`` / ``stem.mid`` / ``stem.png`` for the requested formats.

    ``midi``: :class:`~melodyrt.rt.midi_out.MidiConfig` settings for ``stem.mid`` (the
    ``midi:`` section of a ``--config`` file), so a file gets the notes the live sink would
    play with the same settings.

    Returns
    -------
    paths : list of Path
        In the order of ``formats``.
    """
    stem = Path(stem)
    track = FrameTrack.from_frames(frames)
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "csv":
            written.append(write_csv(track, target, duration))
        elif fmt == "mid":
            written.append(write_midi(frames, target, bend=bend, **(midi or {})))
        elif fmt == "png":
            written.append(plot_contour(track, target, title=title, duration=duration, reference=reference))
        else:
            raise MelodyRTError(f"unknown output format {fmt!r}")
    return written


# ---------------------------------------------------------------------------- console


class ReadoutSink:
    """The live one-line display: time, note name with cents, confidence, level.

    On a terminal the line is rewritten in place about ``refresh_s`` apart; otherwise (a
    pipe, a log) one line is printed every ``every`` frames.

    Parameters
    ----------
    stream : text stream
        Default ``sys.stdout``.
    every : int [frames]
        Frames between printed lines when not on a terminal.
    refresh_s : float [s]
        Minimum wall-clock time between redraws on a terminal.
    status : callable, optional
        Returns extra text appended to the line (e.g. the xrun counter).
    tty : bool, optional
        Force terminal (True) or line (False) mode.
    """

    latency_samples = 0

    def __init__(
        self,
        stream: TextIO | None = None,
        every: int = 10,
        refresh_s: float = 0.05,
        status: Callable[[], str] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.every = max(1, int(every))
        self.refresh_s = refresh_s
        self.status = status
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self._last = 0.0
        self._width = 0
        self._count = 0
        self._closed = False

    @staticmethod
    def line(frame: PitchFrame) -> str:
        """The readout text of one frame."""
        note = note_name(frame.f0_hz) if frame.voiced else "-"
        bar = "#" * int(round(10 * min(max(frame.confidence, 0.0), 1.0)))
        return (f"{frame.time:7.2f}s  {note:<9} conf {frame.confidence:4.2f} {bar:<10} "
                f"{frame.loudness_db:6.1f} dBFS")

    def send(self, frame: PitchFrame) -> None:
        """Show the frame (rate-limited; frames from before the stream began are skipped)."""
        if self._closed or frame.sample < 0:
            return
        self._count += 1
        if self.tty:
            import time

            now = time.monotonic()
            if now - self._last < self.refresh_s:
                return
            self._last = now
            text = self.line(frame) + (self.status() if self.status else "")
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif (self._count - 1) % self.every == 0:
            self.stream.write(self.line(frame) + (self.status() if self.status else "") + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line (idempotent)."""
        if not self._closed and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True

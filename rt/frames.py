"""The record every stage after the engine passes on: one tracked 10 ms frame.

Sinks (MIDI, OSC, files, karaoke) consume :class:`PitchFrame` objects and nothing else,
so a new sink never needs to know how the pitch was computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PitchFrame:
    """One decoded frame.

    Attributes
    ----------
    index : int
        Frame number in the stream (0-based, one per 10 ms hop).
    sample : int [samples at the input rate]
        Position, in the input's own timeline, of the audio this frame describes (the
        newest sample minus every reported stage delay), so latency is measurable as
        ``arrival - sample``.
    time : float [s]
        ``sample / input_rate``.
    f0_hz : float [Hz]
        Pitch estimate; meaningful when ``voiced`` (otherwise the best guess).
    voiced : bool
        Decoder decision after hysteresis.
    confidence : float
        0..1, probability mass of the pitch rows near the peak.
    loudness_db : float [dBFS]
        RMS level of the hop at the input, for note velocity.
    """

    index: int
    sample: int
    time: float
    f0_hz: float
    voiced: bool
    confidence: float
    loudness_db: float


@dataclass(frozen=True, slots=True)
class OnsetCue:
    """A fast, provisional onset: a loud periodic stretch after a rest in the newest audio.

    Emitted between frames by :meth:`melodyrt.rt.tracker.Tracker.process_events` (see
    :mod:`melodyrt.rt.onset_cue`). A sink with a ``cue(cue)`` method may act on it (the MIDI
    note logic starts a note when ``fast_onset`` is on); the frames after it confirm it or
    not. Sinks without that method never see cues.

    Attributes
    ----------
    index : int
        Index of the next frame: the cue comes after frame ``index - 1`` in the stream.
    sample : int [samples at the input rate]
        Position of the audio it describes (its evaluation's newest sample minus the
        resampler's delay and half the level window), on the same timeline as frames.
    time : float [s]
        ``sample / input_rate``.
    f0_hz : float [Hz]
        Pitch estimate of the newest few periods.
    periodicity : float [0..1]
        Normalised correlation at that period.
    loudness_db : float [dBFS]
        Level of the newest 5 ms, for note velocity.
    """

    index: int
    sample: int
    time: float
    f0_hz: float
    periodicity: float
    loudness_db: float


@runtime_checkable
class Sink(Protocol):
    """Where frames go: MIDI, OSC, files, a karaoke scorer, ..."""

    latency_samples: int

    def send(self, frame: PitchFrame) -> None:
        """Consume one frame (called from the worker thread, every 10 ms)."""

    def close(self) -> None:
        """Flush and release; must be safe to call twice (MIDI: all notes off)."""

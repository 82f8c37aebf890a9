"""A melodyrt sink plugin: vibrato rate [Hz] and extent [cents] of the sung pitch.

Registered in ``pyproject.toml`` under the entry-point group ``melodyrt.plugins`` as
``sink.vibrato-meter``; a chain file then uses it by name::

    sinks:
      - {plugin: vibrato-meter, args: {window_s: 0.8, print_every: 50}}

It needs nothing from melodyrt but the frame's fields (duck typing); the Sink protocol is
``send(frame)``, ``close()`` (idempotent) and a ``latency_samples`` attribute.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Vibrato:
    """One reading.

    Attributes
    ----------
    time : float [s]
        Time of the newest frame in the window.
    rate_hz : float [Hz]
        Oscillation rate (0 when no oscillation was found).
    extent_cents : float [cents]
        Half the peak-to-peak deviation around the local trend.
    """

    time: float
    rate_hz: float
    extent_cents: float


class VibratoMeter:
    """Measure vibrato over a sliding window of voiced frames.

    Parameters
    ----------
    window_s : float [s]
        Analysis window (at least two vibrato periods: 0.8 s covers rates above 2.5 Hz).
    frame_s : float [s]
        Frame hop of the tracker (10 ms).
    print_every : int [frames]
        Print a reading every this many frames (0: never).
    """

    latency_samples = 0

    def __init__(self, window_s: float = 0.8, frame_s: float = 0.01, print_every: int = 0) -> None:
        self.n = max(8, int(round(window_s / frame_s)))
        self.frame_s = frame_s
        self.print_every = int(print_every)
        self._cents: deque[float] = deque(maxlen=self.n)
        self.readings: list[Vibrato] = []
        self.closed = False

    def send(self, frame) -> None:  # noqa: ANN001 (a melodyrt PitchFrame)
        """Take one frame; a reading is made whenever the window is full of voiced frames."""
        if self.closed:
            return
        if not frame.voiced or frame.f0_hz <= 0:
            self._cents.clear()
            return
        self._cents.append(1200.0 * math.log2(frame.f0_hz / 440.0))
        if len(self._cents) == self.n:
            reading = self._measure(frame.time)
            self.readings.append(reading)
            if self.print_every and frame.index % self.print_every == 0:
                print(f"{reading.time:7.2f}s vibrato {reading.rate_hz:4.1f} Hz +-{reading.extent_cents:3.0f} cents")

    def _measure(self, t: float) -> Vibrato:
        c = np.asarray(self._cents)
        x = np.arange(c.shape[0])
        dev = c - np.polyval(np.polyfit(x, c, 1), x)          # remove the glide / note trend
        signs = np.signbit(dev)
        crossings = np.flatnonzero(signs[1:] != signs[:-1])
        if crossings.shape[0] < 2:
            return Vibrato(t, 0.0, 0.0)
        period_frames = 2.0 * (crossings[-1] - crossings[0]) / (crossings.shape[0] - 1)
        return Vibrato(t, 1.0 / (period_frames * self.frame_s), float(np.ptp(dev) / 2.0))

    def close(self) -> None:
        """Nothing to release (idempotent)."""
        self.closed = True

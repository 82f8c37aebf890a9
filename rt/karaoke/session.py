"""A karaoke session: the scorer plus the state the live views show.

:class:`KaraokeSession` is a :class:`~melodyrt.rt.frames.Sink`: the tracker's worker thread
(or a test, or a file transcription) sends it :class:`~melodyrt.rt.frames.PitchFrame` objects;
the web server and the terminal view read :meth:`KaraokeSession.snapshot` from their own
threads. The live part, which plays the backing track and captures the microphone, is in
:mod:`melodyrt.rt.karaoke.live`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from ..frames import PitchFrame
from .scoring import FrameResult, ScoreConfig, Scorer, SongScore
from .song import KaraokeSong

#: Sung points kept for the views (60 s at one frame per 10 ms).
HISTORY = 6000
#: Most points one snapshot carries (a view that fell behind gets the newest ones).
MAX_POINTS = 600


class KaraokeSession:
    """Scorer + live view state, fed frame by frame.

    Parameters
    ----------
    song : KaraokeSong
    config : ScoreConfig, optional
    offset_s : float [s]
        Input time at which song time 0 reached the singer (see :mod:`.scoring`).
    clock : callable, optional
        Returns the current song time [s] as the singer hears it (the backing track's
        playback position). Without one, "now" is the time of the newest frame.

    Attributes
    ----------
    scorer : Scorer
    final : SongScore or None
        Set by :meth:`finish`.
    """

    latency_samples: int = 0

    def __init__(
        self,
        song: KaraokeSong,
        config: ScoreConfig | None = None,
        offset_s: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.song = song
        self.scorer = Scorer(song, config, offset_s)
        self.clock = clock
        self._cond = threading.Condition()
        self._seq = 0
        self._points: deque[tuple[int, float, float | None, bool]] = deque(maxlen=HISTORY)
        self._last: FrameResult | None = None
        self._last_wall = 0.0
        self.final: SongScore | None = None
        self.started_wall = time.monotonic()

    # ------------------------------------------------------------------------ feeding

    @property
    def offset_s(self) -> float:
        return self.scorer.offset_s

    @offset_s.setter
    def offset_s(self, value: float) -> None:
        self.scorer.offset_s = float(value)

    @property
    def frames(self) -> int:
        """Frames received so far."""
        return self._seq

    def send(self, frame: PitchFrame) -> FrameResult:
        """Score a frame and publish it to the views (Sink protocol)."""
        res = self.scorer.send(frame)
        self._publish(res)
        return res

    def judge(self, t: float, f0_hz: float, voiced: bool) -> FrameResult:
        """Like :meth:`send` for a bare observation at song time ``t`` [s]."""
        res = self.scorer.judge(t, f0_hz, voiced)
        self._publish(res)
        return res

    def _publish(self, res: FrameResult) -> None:
        # Shown pitch: in the target's octave when octave-agnostic scoring moved it there.
        shown = res.midi
        if res.midi is not None and res.target is not None and res.cents is not None:
            shown = res.target + res.cents / 100.0
        with self._cond:
            self._seq += 1
            self._points.append((self._seq, res.t, shown, res.hit))
            self._last = res
            self._last_wall = time.monotonic()
            self._cond.notify_all()

    def finish(self) -> SongScore:
        """End the song: compute the final score (every line bonus counts) and tell the views."""
        with self._cond:
            if self.final is None:
                self.final = self.scorer.score()
            self._cond.notify_all()
            return self.final

    def close(self) -> None:
        """Sink protocol: finish (safe to call twice)."""
        self.finish()

    # ------------------------------------------------------------------------ viewing

    def now(self) -> float:
        """Current song time [s]: the playback clock, else the newest frame's time."""
        if self.clock is not None:
            return float(self.clock())
        last = self._last
        return last.t if last is not None else self.song.start - 1.0

    def wait(self, seq: int, timeout: float) -> bool:
        """Block until a frame newer than ``seq`` arrives, the song finishes, or ``timeout`` [s]."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seq or self.final is not None, timeout)

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """What a view needs to draw, as plain JSON-able data.

        Parameters
        ----------
        since : int
            The ``seq`` of the previous snapshot this view received: only newer sung points
            are included (at most :data:`MAX_POINTS`).

        Returns
        -------
        state : dict
            ``seq`` (frames so far), ``now`` [s song time], ``t`` (newest frame's song
            time), ``f0_hz``, ``midi`` (shown pitch or None), ``note`` / ``target`` /
            ``cents`` / ``hit`` for the newest frame, ``syllable``, ``line`` (index of the
            line being sung), ``score`` (running total), ``max_score``, ``lines_done``
            ([index, rating, perfection, points] of finished lines), ``points``
            ([t, midi or None, hit] since ``since``), ``finished`` and, once finished,
            ``final`` (total and per-line results).
        """
        with self._cond:
            seq = self._seq
            last = self._last
            pts = [p for p in self._points if p[0] > since] if since < seq else []
            final = self.final
        pts = pts[-MAX_POINTS:]
        now = self.now()
        song = self.song
        score = final if final is not None else self.scorer.score(now, with_sung=False)
        note = last.note if last is not None else -1
        lines_done = [[ln.index, ln.rating, round(ln.perfection, 3), round(ln.points, 1)]
                      for ln in score.lines if ln.rating != "-" and (final is not None or now >= ln.end)]
        state: dict[str, Any] = {
            "seq": seq,
            "now": round(now, 4),
            "t": round(last.t, 4) if last is not None else None,
            "f0_hz": round(last.f0_hz, 2) if last is not None else 0.0,
            "midi": None if last is None or last.midi is None else round(last.midi, 3),
            "note": note,
            "target": None if last is None or last.target is None else round(last.target, 3),
            "cents": None if last is None or last.cents is None else round(last.cents, 1),
            "hit": bool(last.hit) if last is not None else False,
            "syllable": song.notes[note].text if note >= 0 else "",
            "line": song.line_at(now),
            "score": score.total,
            "max_score": score.config.max_score,
            "lines_done": lines_done,
            "points": [[round(t, 3), None if m is None else round(m, 3), int(h)] for _s, t, m, h in pts],
            "finished": final is not None,
        }
        if final is not None:
            state["final"] = {"total": final.total, "note_points": round(final.note_points, 1),
                              "line_points": round(final.line_points, 1)}
        return state

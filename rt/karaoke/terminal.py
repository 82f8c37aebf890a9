"""The terminal live view, for machines without a browser.

One status line, redrawn in place on a terminal (printed every ``every`` seconds otherwise)::

    12.34s  "lit|tle| star"  target E4  sung E4 +12c  [------|--o---]  hit   score 4520

plus a line each time a lyric line ends: ``line 2  perfect  97%  +125``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .session import KaraokeSession

NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(midi: float | None) -> str:
    """``"E4"`` for 64.2; ``"-"`` for None."""
    if midi is None:
        return "-"
    n = int(round(midi))
    return f"{NAMES[n % 12]}{n // 12 - 1}"


def meter(cents: float | None, tolerance: float, width: int = 21) -> str:
    """A needle for cents off the note over +-200 cents: ``[----|-o-|----]``; the bars
    mark the tolerance."""
    half = width // 2
    cells = ["-"] * width
    edge = max(1, min(half, round(half * tolerance / 200.0)))
    cells[half - edge] = cells[half + edge] = "|"
    if cents is not None:
        pos = half + round(max(-200.0, min(200.0, cents)) / 200.0 * half)
        cells[max(0, min(width - 1, pos))] = "o"
    return "[" + "".join(cells) + "]"


def render(state: dict[str, Any], session: KaraokeSession) -> str:
    """The status line for one snapshot (no colour codes, no newline)."""
    song = session.song
    line_idx = state["line"]
    lyric = ""
    if 0 <= line_idx < len(song.lines):
        parts = []
        for i in song.lines[line_idx].notes:
            text = song.notes[i].text
            parts.append(f"[{text.strip()}]" if i == state["note"] else text)
        lyric = "".join(parts).strip()
    tgt = note_name(state["target"])
    sung = note_name(state["midi"])
    cents = "" if state["cents"] is None else f" {state['cents']:+.0f}c"
    verdict = "hit " if state["hit"] else ("miss" if state["cents"] is not None else "    ")
    tol = session.scorer.config.tolerance
    return (f"{state['now']:7.2f}s  {lyric[:36]:<36}  target {tgt:<4} sung {sung:<4}{cents:<6} "
            f"{meter(state['cents'], tol)} {verdict}  score {state['score']:>5}")


class TerminalView:
    """Draw a session's state on a text stream; call :meth:`update` regularly (e.g. the
    audio source's ``on_tick``, every 100 ms).

    Parameters
    ----------
    session : KaraokeSession
    stream : text stream (default stdout)
    every : float [s]
        On a non-terminal stream, print a status line this often.
    """

    def __init__(self, session: KaraokeSession, stream: TextIO | None = None, every: float = 1.0) -> None:
        self.session = session
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last_print = -1e9
        self._rated: set[int] = set()
        self._width = 0

    def header(self) -> None:
        song = self.session.song
        cfg = self.session.scorer.config
        self._write(f"{song.title}{' - ' + song.artist if song.artist else ''}: {len(song.notes)} notes, "
                    f"{len(song.lines)} lines, {song.end:.1f} s; {cfg.difficulty} (+-{cfg.tolerance:.0f} cents"
                    f"{', any octave' if cfg.octave_agnostic else ''})\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def update(self) -> None:
        state = self.session.snapshot(self.session.frames)  # no points needed
        for idx, rating, perfection, points in state["lines_done"]:
            if idx in self._rated:
                continue
            self._rated.add(idx)
            text = self.session.song.lines[idx].text
            self._clear()
            self._write(f"line {idx + 1:<3} {rating:<8} {100 * perfection:3.0f}%  +{points:.0f}  {text}\n")
        line = render(state, self.session)
        if self.tty:
            pad = max(0, self._width - len(line))
            self._write("\r" + line + " " * pad)
            self._width = len(line)
        elif state["now"] - self._last_print >= self.every:
            self._last_print = state["now"]
            self._write(line + "\n")

    def _clear(self) -> None:
        if self.tty and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def finish(self) -> None:
        """Print the final score and the line table."""
        self.update()
        self._clear()
        final = self.session.finish()
        for ln in final.lines:
            if ln.index not in self._rated and ln.rating != "-":
                self._write(f"line {ln.index + 1:<3} {ln.rating:<8} {100 * ln.perfection:3.0f}%  +{ln.points:.0f}  {ln.text}\n")
        self._write(f"score {final.total} / {final.config.max_score:.0f} (notes {final.note_points:.0f} + "
                    f"line bonus {final.line_points:.0f})\n")

"""Karaoke pitch feedback: sing along to a song, see your pitch against the melody, get scored.

- :mod:`.song`: reference melodies (UltraStar ``.txt``, MIDI, f0 CSV) as timed notes and lines.
- :mod:`.scoring`: the scorer, a :class:`~melodyrt.rt.frames.Sink` of tracked frames.
- :mod:`.session`: a live session (scorer + shared view state + backing track + microphone).
- :mod:`.server`: the web live view (stdlib HTTP server + server-sent events), :mod:`.terminal`
  the text view, :mod:`.report` the PNG + JSON written after the song.
"""

from __future__ import annotations

from .scoring import DIFFICULTIES, ScoreConfig, Scorer, SongScore, score_frames
from .song import KaraokeSong, Line, Note, SongError, load_song

__all__ = [
    "DIFFICULTIES", "KaraokeSong", "Line", "Note", "ScoreConfig", "Scorer", "SongError", "SongScore",
    "load_song", "score_frames",
]

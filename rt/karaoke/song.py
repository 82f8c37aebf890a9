"""Reference melodies: UltraStar ``.txt``, MIDI files and f0 CSV files as timed notes and lines.

Every format becomes a :class:`KaraokeSong`: notes with start and end times [s] on the song's
own timeline (time 0 = the first sample of the backing track), a target pitch as a MIDI note
number, a kind (normal, golden, freestyle, rap), a syllable, and the lyric line each belongs
to. A problem in the file raises :class:`SongError` whose message names the file and, where
there is one, the line: ``song.txt:12: ...``.

UltraStar conventions (from "The UltraStar File Format (Unversioned)", UltraStar-Deluxe/format
on GitHub, sections 3.3, 3.8, 4.1 and 4.2; UltraStar Deluxe, Performous and Vocaluxe read the
same files):

- ``#BPM`` is "implicitly quadrupled": one beat of the note lines lasts ``60 / (4 * BPM)`` s.
- ``#GAP`` is the time [ms] from the start of the audio to beat 0.
- Note lines are ``TYPE START LENGTH PITCH TEXT`` with ``TYPE`` ``:`` (normal), ``*`` (golden),
  ``F`` (freestyle, never scored), ``R`` / ``G`` (rap / golden rap: pitch ignored).
- "The pitch of a note is encoded as the number of half-steps relative to C4": pitch 0 is
  C4 = MIDI 60, 5 is F4, -2 is A#3.
- ``- START [END]`` ends a phrase (a lyric line); ``E`` ends the song; ``P1``/``P2`` start the
  voices of a duet (only the first voice is read here).
- ``#RELATIVE:yes`` (appendix A): beats count from an offset that each ``- START OFFSET``
  advances by ``OFFSET``.
"""

from __future__ import annotations

import csv
import io
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import MelodyRTError

#: UltraStar pitch 0 is C4, MIDI note 60 (format spec section 4.1).
ULTRASTAR_C4 = 60
#: Note kinds; ``freestyle`` is never scored, ``rap`` kinds are scored on voicing only.
KINDS = ("normal", "golden", "freestyle", "rap", "rap_golden")
_ULTRASTAR_KIND = {":": "normal", "*": "golden", "F": "freestyle", "R": "rap", "G": "rap_golden"}
#: A rest at least this long starts a new lyric line in formats without line marks (MIDI, CSV).
LINE_REST_S = 0.6
#: ...and a line longer than this breaks at the next rest, however short.
LINE_MAX_S = 8.0


class SongError(MelodyRTError):
    """A reference melody file is missing, unreadable or malformed (message names file and line)."""


@dataclass(frozen=True)
class Note:
    """One target note.

    Attributes
    ----------
    start, end : float [s]
        On the song timeline (0 = first sample of the backing track).
    midi : float or None
        Target pitch (MIDI note number); ``None`` for notes without a defined pitch.
    kind : str
        One of :data:`KINDS`.
    text : str
        The syllable sung on the note (may be empty).
    line : int
        Index of the lyric line the note belongs to.
    source_line : int
        Line number in the song file (0 when the format has none).
    contour : (times [s], midi) arrays or None
        A continuous target inside the note (f0 CSV references); scoring follows it.
    """

    start: float
    end: float
    midi: float | None
    kind: str = "normal"
    text: str = ""
    line: int = 0
    source_line: int = 0
    contour: tuple[NDArray[np.float64], NDArray[np.float64]] | None = field(default=None, compare=False, repr=False)

    @property
    def duration(self) -> float:
        """Length [s]."""
        return self.end - self.start

    @property
    def scored(self) -> bool:
        """False for freestyle notes, which never earn points."""
        return self.kind != "freestyle"

    @property
    def pitched(self) -> bool:
        """True when the sung pitch is compared with a target (normal and golden notes)."""
        return self.kind in ("normal", "golden") and self.midi is not None

    @property
    def golden(self) -> bool:
        return self.kind in ("golden", "rap_golden")

    def target_midi(self, t: float) -> float | None:
        """Target pitch at song time ``t`` [s]: the contour when there is one, else ``midi``."""
        if self.contour is None or self.midi is None:
            return self.midi
        times, midi = self.contour
        return float(np.interp(t, times, midi))


@dataclass(frozen=True)
class Line:
    """One lyric line (an UltraStar phrase).

    Attributes
    ----------
    index : int
    start, end : float [s]
        From the first note's start to the last note's end.
    notes : tuple of int
        Indices into :attr:`KaraokeSong.notes`.
    text : str
        The syllables joined as written (UltraStar keeps the spaces inside the syllables).
    """

    index: int
    start: float
    end: float
    notes: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class KaraokeSong:
    """A reference melody, whatever format it came from.

    Attributes
    ----------
    title, artist : str
    notes : tuple of Note
        Sorted by start, not overlapping.
    lines : tuple of Line
    source : Path or None
    format : str
        ``"ultrastar"``, ``"midi"`` or ``"f0csv"``.
    meta : dict
        Format details (``bpm``, ``gap_ms``, ``track``, ``audio`` file named by the song...).
    """

    title: str
    artist: str
    notes: tuple[Note, ...]
    lines: tuple[Line, ...]
    source: Path | None = None
    format: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [n.start for n in self.notes])

    @property
    def start(self) -> float:
        """Start of the first note [s]."""
        return self.notes[0].start if self.notes else 0.0

    @property
    def end(self) -> float:
        """End of the last note [s]."""
        return max((n.end for n in self.notes), default=0.0)

    def note_at(self, t: float) -> int:
        """Index of the note sounding at song time ``t`` [s], or -1 between notes."""
        i = bisect_right(self._starts, t) - 1  # type: ignore[attr-defined]
        if i >= 0 and t < self.notes[i].end:
            return i
        return -1

    def line_at(self, t: float) -> int:
        """Index of the line being sung (or coming next) at ``t``; -1 after the last one."""
        for line in self.lines:
            if t < line.end:
                return line.index
        return -1

    def pitch_range(self) -> tuple[float, float]:
        """Lowest and highest target MIDI pitch (60, 72 when nothing is pitched)."""
        pitches = [n.midi for n in self.notes if n.midi is not None]
        if not pitches:
            return 60.0, 72.0
        lo, hi = min(pitches), max(pitches)
        for n in self.notes:
            if n.contour is not None:
                lo, hi = min(lo, float(n.contour[1].min())), max(hi, float(n.contour[1].max()))
        return float(lo), float(hi)

    def to_json(self) -> dict[str, Any]:
        """The song as plain data, for the web page and the report."""
        notes = []
        for n in self.notes:
            d: dict[str, Any] = {"start": round(n.start, 4), "end": round(n.end, 4), "midi": n.midi,
                                 "kind": n.kind, "text": n.text, "line": n.line}
            if n.contour is not None:
                step = max(1, len(n.contour[0]) // 200)
                d["contour"] = [[round(float(t), 3), round(float(m), 3)]
                                for t, m in zip(n.contour[0][::step], n.contour[1][::step])]
            notes.append(d)
        lines = [{"index": ln.index, "start": round(ln.start, 4), "end": round(ln.end, 4),
                  "notes": list(ln.notes), "text": ln.text} for ln in self.lines]
        lo, hi = self.pitch_range()
        return {"title": self.title, "artist": self.artist, "format": self.format,
                "source": str(self.source) if self.source else None, "notes": notes, "lines": lines,
                "pitch_range": [lo, hi], "start": self.start, "end": self.end,
                "meta": {k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool, type(None)))}}


# ------------------------------------------------------------------------------ loading


def load_song(path: str | Path, track: int | str | None = None) -> KaraokeSong:
    """Read a reference melody, choosing the parser by the file's suffix.

    Parameters
    ----------
    path : str or Path
        ``.txt`` (UltraStar), ``.mid`` / ``.midi`` / ``.kar`` (MIDI) or ``.csv`` (f0 track,
        columns ``time,f0_hz``).
    track : int or str, optional
        MIDI only: track index, or a substring of the track name (default: the first
        track with notes).

    Raises
    ------
    SongError
    """
    path = Path(path)
    if not path.exists():
        raise SongError(f"{path}: song file not found")
    if path.is_dir():
        raise SongError(f"{path}: is a directory, not a song file")
    suffix = path.suffix.lower()
    if track is not None and suffix not in (".mid", ".midi", ".kar"):
        raise SongError(f"{path}: --track applies to MIDI songs only")
    if suffix == ".txt":
        return load_ultrastar(path)
    if suffix in (".mid", ".midi", ".kar"):
        return load_midi(path, track)
    if suffix == ".csv":
        return load_f0_csv(path)
    raise SongError(f"{path}: unknown song format '{suffix or '(no suffix)'}' "
                    "(expected UltraStar .txt, MIDI .mid/.midi/.kar or f0 .csv)")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SongError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise SongError(f"{path}: empty file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Older UltraStar files are often Windows-1252 (the spec's #ENCODING:CP1252).
        return data.decode("cp1252", errors="replace")


# ---------------------------------------------------------------------------- UltraStar

_NOTE_RE = re.compile(r"^([:*FRG])[ \t]+(-?\d+)[ \t]+(-?\d+)[ \t]+(-?\d+)(?:[ \t](.*))?$")
_BREAK_RE = re.compile(r"^-[ \t]*(-?\d+)(?:[ \t]+(-?\d+))?[ \t]*$")
_VOICE_RE = re.compile(r"^P[ \t]*(\d+)[ \t]*$")


def _number(value: str, path: Path, lineno: int, key: str) -> float:
    try:
        return float(value.strip().replace(",", "."))
    except ValueError:
        raise SongError(f"{path}:{lineno}: #{key} must be a number, got {value.strip()!r}") from None


def parse_ultrastar(text: str, path: str | Path = "<song>") -> KaraokeSong:
    """Parse the text of an UltraStar song (see the module docstring for the conventions).

    Raises
    ------
    SongError
        ``path:line: reason`` for a malformed line; ``path: reason`` for a missing ``#BPM``
        or a song without notes.
    """
    path = Path(path)
    headers: dict[str, str] = {}
    header_lines: dict[str, int] = {}
    raw_notes: list[tuple[int, str, int, int, int, str]] = []  # lineno, kind, start, length, pitch, text
    breaks: list[tuple[int, int, int | None]] = []  # lineno, beat, second number
    body_started = False
    voice = 1
    voices_seen: set[int] = set()
    sung_voice: int | None = None  # the voice read: the first that has a note
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("#") and not body_started:
            key, sep, value = line[1:].partition(":")
            if not sep:
                raise SongError(f"{path}:{lineno}: header line without ':' ({line.strip()!r}); expected #KEY:VALUE")
            headers[key.strip().upper()] = value.strip()
            header_lines[key.strip().upper()] = lineno
            continue
        body_started = True
        stripped = line.strip()
        if stripped == "E":
            break
        if m := _VOICE_RE.match(stripped):
            voice = int(m.group(1))
            voices_seen.add(voice)
            continue
        if stripped.startswith("#"):
            raise SongError(f"{path}:{lineno}: header {stripped.split(':')[0]!r} after the notes began "
                            "(headers belong at the top of the file)")
        if m := _NOTE_RE.match(line.lstrip(" \t")):
            kind_char, start, length, pitch, syllable = m.groups()
            if int(length) <= 0:
                raise SongError(f"{path}:{lineno}: note length must be positive, got {length}")
            sung_voice = voice if sung_voice is None else sung_voice
            if voice == sung_voice:
                raw_notes.append((lineno, _ULTRASTAR_KIND[kind_char], int(start), int(length), int(pitch),
                                  syllable if syllable is not None else ""))
            continue
        if m := _BREAK_RE.match(stripped):
            if voice == (sung_voice if sung_voice is not None else voice):
                second = m.group(2)
                breaks.append((lineno, int(m.group(1)), int(second) if second is not None else None))
            continue
        raise SongError(f"{path}:{lineno}: {_why_not(stripped)}")

    if "BPM" not in headers or not headers["BPM"]:
        raise SongError(f"{path}: missing #BPM header (beats per minute, required by the UltraStar format)")
    bpm = _number(headers["BPM"], path, header_lines["BPM"], "BPM")
    if not bpm > 0:
        raise SongError(f"{path}:{header_lines['BPM']}: #BPM must be positive, got {headers['BPM']!r}")
    gap_ms = _number(headers["GAP"], path, header_lines["GAP"], "GAP") if headers.get("GAP") else 0.0
    relative = headers.get("RELATIVE", "").strip().lower() == "yes"
    if not raw_notes:
        raise SongError(f"{path}: no notes (expected lines like ': 0 4 0 la' after the # headers)")

    beat_s = 60.0 / (4.0 * bpm)
    # Relative mode: beats count from an offset that each line break advances (appendix A).
    # Walk notes and breaks in file order to apply it; in normal mode the offset stays 0.
    events = sorted([(ln, "note", i) for i, (ln, *_rest) in enumerate(raw_notes)]
                    + [(ln, "break", i) for i, (ln, *_rest) in enumerate(breaks)])
    rel = 0
    abs_notes: list[tuple[int, str, int, int, int, str]] = []
    break_beats: list[int] = []
    for _ln, what, i in events:
        if what == "note":
            lineno, kind, start, length, pitch, syllable = raw_notes[i]
            abs_notes.append((lineno, kind, start + rel, length, pitch, syllable))
        else:
            lineno, beat, second = breaks[i]
            break_beats.append(beat + rel)
            if relative:
                if second is None:
                    raise SongError(f"{path}:{lineno}: in #RELATIVE mode a line break needs two numbers "
                                    "('- START OFFSET')")
                rel += second

    abs_notes.sort(key=lambda n: n[2])
    notes: list[Note] = []
    line_of = np.searchsorted(np.asarray(sorted(break_beats), dtype=np.int64),
                              np.asarray([n[2] for n in abs_notes], dtype=np.int64), side="right")
    # Renumber lines densely (several breaks between two notes, or a break before the first note).
    dense = {v: k for k, v in enumerate(sorted(set(int(x) for x in line_of)))}
    for (lineno, kind, start, length, pitch, syllable), li in zip(abs_notes, line_of):
        # Rounded to 1 ns so that float noise does not move a boundary off a frame time.
        t0 = round(gap_ms / 1000.0 + start * beat_s, 9)
        t1 = round(gap_ms / 1000.0 + (start + length) * beat_s, 9)
        midi = float(ULTRASTAR_C4 + pitch) if kind != "freestyle" else None
        notes.append(Note(t0, t1, midi, kind, syllable, dense[int(li)], lineno))
    notes = _clip_overlaps(notes)
    meta = {"bpm": bpm, "gap_ms": gap_ms, "beat_s": beat_s, "relative": relative,
            "audio": headers.get("AUDIO") or headers.get("MP3") or None,
            "voices": len(voices_seen) or 1}
    return KaraokeSong(headers.get("TITLE") or path.stem, headers.get("ARTIST", ""), tuple(notes),
                       _lines_from_notes(notes), path, "ultrastar", meta)


def _why_not(line: str) -> str:
    """Explain a body line that matches nothing."""
    head = line[0]
    if head in _ULTRASTAR_KIND:
        parts = line[1:].split()
        names = ("start beat", "length", "pitch")
        for name, value in zip(names, parts[:3]):
            if not re.fullmatch(r"-?\d+", value):
                return f"note {name} must be a whole number, got {value!r} in {line!r}"
        return (f"incomplete note {line!r}: expected '{head} START LENGTH PITCH SYLLABLE' "
                "(whole numbers in beats and half-steps from C4)")
    if head == "-":
        return f"malformed line break {line!r}: expected '- START' or '- START END' (whole beats)"
    return (f"unrecognised line {line!r}: expected a note (': START LENGTH PITCH SYLLABLE', '*' golden, "
            "'F' freestyle, 'R'/'G' rap), a line break ('- START') or 'E'")


def load_ultrastar(path: str | Path) -> KaraokeSong:
    """Read an UltraStar ``.txt`` song (UTF-8, or CP1252 for legacy files)."""
    path = Path(path)
    return parse_ultrastar(_read_text(path), path)


# -------------------------------------------------------------------------- shared bits


def _clip_overlaps(notes: list[Note]) -> list[Note]:
    """Sort by start and cut a note short where the next one starts (the melody is one voice)."""
    notes = sorted(notes, key=lambda n: (n.start, -(n.midi or 0.0)))
    out: list[Note] = []
    for n in notes:
        if out and n.start < out[-1].end:
            prev = out[-1]
            if n.start <= prev.start:  # same onset (a chord): keep the first (highest) note
                continue
            out[-1] = Note(prev.start, n.start, prev.midi, prev.kind, prev.text, prev.line, prev.source_line, prev.contour)
        out.append(n)
    return out


def _lines_from_notes(notes: Sequence[Note]) -> tuple[Line, ...]:
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(notes):
        groups.setdefault(n.line, []).append(i)
    lines = []
    for k, idx in enumerate(sorted(groups, key=lambda li: notes[groups[li][0]].start)):
        members = groups[idx]
        text = "".join(notes[i].text for i in members)
        lines.append(Line(k, notes[members[0]].start, max(notes[i].end for i in members), tuple(members),
                          text.strip() if text.strip() else ""))
    # Make line indices of the notes agree with the Line objects' order.
    return tuple(lines)


def _assign_lines(notes: list[Note], breaks_before: set[int] | None = None) -> list[Note]:
    """Group notes into lines at long rests (``LINE_REST_S``), at lines longer than
    ``LINE_MAX_S``, and before the note indices in ``breaks_before``."""
    out: list[Note] = []
    line, line_start = 0, notes[0].start if notes else 0.0
    for i, n in enumerate(notes):
        if i > 0:
            rest = n.start - notes[i - 1].end
            if (breaks_before and i in breaks_before) or rest >= LINE_REST_S or (
                n.start - line_start > LINE_MAX_S and rest > 0
            ):
                line, line_start = line + 1, n.start
        out.append(Note(n.start, n.end, n.midi, n.kind, n.text, line, n.source_line, n.contour))
    return out


# --------------------------------------------------------------------------------- MIDI


def load_midi(path: str | Path, track: int | str | None = None) -> KaraokeSong:
    """Read the melody of one track of a standard MIDI file.

    Parameters
    ----------
    path : str or Path
    track : int or str, optional
        Track index, or a case-insensitive substring of the track name; default the
        first track with notes. Chords are reduced to their highest note and notes are cut
        where the next begins. ``lyrics`` meta events (or ``text`` events, as in .kar files)
        in the same track become the syllables; a syllable starting with ``/`` or ``\\``
        starts a new line, otherwise lines break at rests of ``LINE_REST_S`` or more.
    """
    import mido

    path = Path(path)
    try:
        mf = mido.MidiFile(str(path))
    except OSError as exc:
        raise SongError(f"{path}: cannot read MIDI file ({exc.strerror or exc})") from None
    except (EOFError, ValueError, KeyError, IndexError) as exc:
        raise SongError(f"{path}: not a valid MIDI file ({type(exc).__name__}: {str(exc) or 'truncated'})") from None
    if mf.type == 2:
        raise SongError(f"{path}: MIDI type 2 (independent sequences) is not supported")
    tpb = mf.ticks_per_beat
    if not tpb or tpb <= 0:
        raise SongError(f"{path}: MIDI file uses SMPTE time division, which is not supported")

    # Tempo map from every track (type 1 files keep it in track 0).
    tempos: list[tuple[int, int]] = []
    for trk in mf.tracks:
        tick = 0
        for msg in trk:
            tick += msg.time
            if msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
    tempos.sort()
    if not tempos or tempos[0][0] != 0:
        tempos.insert(0, (0, 500000))
    seg_ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    seg_tempo = np.array([tp for _, tp in tempos], dtype=np.float64)
    seg_secs = np.concatenate([[0.0], np.cumsum(np.diff(seg_ticks) * seg_tempo[:-1] / tpb / 1e6)])

    def seconds(tick: float) -> float:
        k = int(np.searchsorted(seg_ticks, tick, side="right") - 1)
        return float(seg_secs[k] + (tick - seg_ticks[k]) * seg_tempo[k] / tpb / 1e6)

    with_notes = [i for i, trk in enumerate(mf.tracks) if any(m.type == "note_on" and m.velocity > 0 for m in trk)]
    if not with_notes:
        raise SongError(f"{path}: no notes in any track")
    names = [(trk.name or "").strip() for trk in mf.tracks]
    listing = ", ".join(f"{i} {names[i]!r}" if names[i] else str(i) for i in with_notes)
    if track is None:
        chosen = with_notes[0]
    elif isinstance(track, int) or (isinstance(track, str) and track.strip().isdigit()):
        chosen = int(track)
        if chosen not in with_notes:
            raise SongError(f"{path}: track {chosen} has no notes (tracks with notes: {listing})")
    else:
        matches = [i for i in with_notes if track.lower() in names[i].lower()]
        if not matches:
            raise SongError(f"{path}: no track with notes is named like {track!r} (tracks with notes: {listing})")
        chosen = matches[0]

    spans: list[tuple[int, int, int]] = []  # start tick, end tick, note
    syllables: list[tuple[int, str]] = []
    open_notes: dict[tuple[int, int], int] = {}
    tick = 0
    for msg in mf.tracks[chosen]:
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            key = (msg.channel, msg.note)
            if key in open_notes:  # re-struck without a note-off
                spans.append((open_notes[key], tick, msg.note))
            open_notes[key] = tick
        elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
            start = open_notes.pop((msg.channel, msg.note), None)
            if start is not None and tick > start:
                spans.append((start, tick, msg.note))
        elif msg.type in ("lyrics", "text") and msg.text and not msg.text.startswith("@"):
            syllables.append((tick, msg.text))
    for (_ch, note), start in open_notes.items():  # never released: end at the track's end
        if tick > start:
            spans.append((start, tick, note))

    notes = [Note(seconds(s), seconds(e), float(n), "normal") for s, e, n in spans]
    notes = _clip_overlaps(notes)
    breaks: set[int] = set()
    if syllables:
        starts = np.array([n.start for n in notes])
        texts = [""] * len(notes)
        for stick, word in syllables:
            i = int(np.argmin(np.abs(starts - seconds(stick))))
            if abs(starts[i] - seconds(stick)) > 0.1:
                continue
            if word[:1] in "/\\":
                breaks.add(i)
                word = word[1:]
            texts[i] += word.replace("\r", "").replace("\n", "")
        notes = [Note(n.start, n.end, n.midi, n.kind, texts[i]) for i, n in enumerate(notes)]
    notes = _assign_lines(notes, breaks)
    title = path.stem
    meta = {"track": chosen, "track_name": names[chosen], "tracks_with_notes": listing, "ticks_per_beat": tpb}
    return KaraokeSong(title, "", tuple(notes), _lines_from_notes(notes), path, "midi", meta)


# ------------------------------------------------------------------------------- f0 CSV

#: A jump of more than this from the current note's pitch for ``_SPLIT_FRAMES`` frames
#: starts a new note when an f0 track is cut into notes.
_SPLIT_SEMITONES = 0.5
_SPLIT_FRAMES = 3
_MIN_NOTE_S = 0.05


def read_f0_csv(path: str | Path) -> tuple[NDArray[np.float64], NDArray[np.float64], list[int]]:
    """Rows of an f0 CSV: ``time,f0_hz`` (comma, tab, semicolon or spaces; an optional header
    row naming the columns; ``#`` comments; 0, negative, empty or NaN f0 = unvoiced).

    Returns
    -------
    times : ndarray [shape=(T,)] [s], increasing
    f0_hz : ndarray [shape=(T,)] [Hz], 0 where unvoiced
    line_numbers : list of int
    """
    path = Path(path)
    text = _read_text(path)
    rows: list[tuple[float, float, int]] = []
    t_col, f_col = 0, 1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = next(csv.reader(io.StringIO(line), delimiter="\t" if "\t" in line else ","))
        if len(cells) == 1:
            cells = line.split(";") if ";" in line else line.split()
        cells = [c.strip() for c in cells]
        if not rows and not _is_float(cells[0]):
            lower = [c.lower() for c in cells]
            t_col = next((i for i, c in enumerate(lower) if c.startswith("time") or c in ("t", "sec", "seconds")), 0)
            f_col = next((i for i, c in enumerate(lower) if "f0" in c or "freq" in c or "hz" in c or "pitch" in c),
                         1 if t_col == 0 else 0)
            continue
        if len(cells) <= max(t_col, f_col):
            raise SongError(f"{path}:{lineno}: expected two columns time,f0_hz, got {line.strip()!r}")
        try:
            t = float(cells[t_col])
            f = float(cells[f_col]) if cells[f_col] not in ("", "nan", "NaN") else 0.0
        except ValueError:
            raise SongError(f"{path}:{lineno}: time and f0 must be numbers, got {line.strip()!r}") from None
        if not np.isfinite(t):
            raise SongError(f"{path}:{lineno}: time must be finite, got {cells[t_col]!r}")
        if rows and t <= rows[-1][0]:
            raise SongError(f"{path}:{lineno}: times must increase (got {t} after {rows[-1][0]})")
        rows.append((t, f if np.isfinite(f) and f > 0 else 0.0, lineno))
    if not rows:
        raise SongError(f"{path}: no rows (expected lines 'time,f0_hz')")
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), [r[2] for r in rows])


def load_f0_csv(path: str | Path) -> KaraokeSong:
    """Read an f0 track (see :func:`read_f0_csv`) as a reference melody.

    The voiced stretches are cut into notes where the pitch moves by more than half a
    semitone for three frames; each note keeps the contour, and scoring follows the contour
    (vibrato and glides included), not the note's median.
    """
    path = Path(path)
    times, f0, lines_no = read_f0_csv(path)
    notes = _notes_from_f0(times, f0, lines_no)
    if not notes:
        raise SongError(f"{path}: the f0 track has no voiced frames (f0 > 0)")
    notes = _assign_lines(notes)
    return KaraokeSong(path.stem, "", tuple(notes), _lines_from_notes(notes), path, "f0csv",
                       {"frames": int(times.size)})


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _notes_from_f0(times: NDArray, f0: NDArray, lines_no: Sequence[int]) -> list[Note]:
    hop = float(np.median(np.diff(times))) if times.size > 1 else 0.01
    voiced = f0 > 0
    midi = np.where(voiced, 69.0 + 12.0 * np.log2(np.where(voiced, f0, 440.0) / 440.0), 0.0)
    notes: list[Note] = []

    def emit(a: int, b: int) -> None:  # frames a..b-1
        if b <= a:
            return
        t0, t1 = times[a] - hop / 2, times[b - 1] + hop / 2
        seg_t, seg_m = times[a:b].copy(), midi[a:b].copy()
        note = Note(float(t0), float(t1), float(np.median(seg_m)), "normal", "", 0, lines_no[a], (seg_t, seg_m))
        if notes and t1 - t0 < _MIN_NOTE_S and abs(notes[-1].end - t0) < 1.5 * hop:
            prev = notes[-1]  # too short to be a note of its own: a piece of the glide before
            ct = np.concatenate([prev.contour[0], seg_t])  # type: ignore[index]
            cm = np.concatenate([prev.contour[1], seg_m])  # type: ignore[index]
            notes[-1] = Note(prev.start, float(t1), prev.midi, "normal", "", 0, prev.source_line, (ct, cm))
        else:
            notes.append(note)

    i, n = 0, times.size
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and voiced[j + 1] and times[j + 1] - times[j] < 1.5 * hop:
            j += 1
        # Voiced run i..j: split where the pitch leaves the current note for a few frames.
        a = i
        k = i + 1
        while k <= j:
            ref = float(np.median(midi[max(a, k - 20):k]))
            if abs(midi[k] - ref) > _SPLIT_SEMITONES and k + _SPLIT_FRAMES - 1 <= j and all(
                abs(midi[k + q] - ref) > _SPLIT_SEMITONES for q in range(_SPLIT_FRAMES)
            ):
                emit(a, k)
                a = k
            k += 1
        emit(a, j + 1)
        i = j + 1
    return notes

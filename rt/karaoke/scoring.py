"""Scoring a sung performance against a reference melody, in the spirit of UltraStar Deluxe and
Performous.

How a score is made (every number is a :class:`ScoreConfig` field):

- Each tracked frame is judged at its song time ``frame.time - offset_s``. Inside a note it
  is a *hit* when the frame is voiced and its pitch is strictly within the tolerance of the
  note's target: ``easy`` 100 cents, ``medium`` 50, ``hard`` 30 (``tolerance_cents``
  overrides). With ``octave_agnostic`` the sung pitch is first moved by whole octaves to the
  octave nearest the target (UltraStar Deluxe always does this, ``UNote.pas``; here it is an
  option). Rap notes need voicing only; freestyle notes are never scored.
- A note's *hit ratio* is the share of its frames that hit; the frames in its first
  ``onset_grace_s`` (at most a quarter of the note) are not counted, as a singer needs a
  moment to land on a note. A note that gets fewer frames than its length holds (the song
  was stopped) counts the missing ones as misses.
- Notes are weighted by length, golden notes ``golden_factor`` (2) times more. The notes
  share ``max_score - line_bonus`` = 9000 points in proportion to weight x hit ratio.
- Line bonus: ``line_bonus`` = 1000 points split evenly over the lines with scored notes;
  a line earns its share times its *perfection* (the weighted hit ratio of its notes).
  Perfection is also shown as a rating, ``round(8 * perfection)`` into :data:`RATINGS` (as
  UltraStar Deluxe rates lines in eight steps). The total is out of 10,000.

Timing: :attr:`PitchFrame.time <melodyrt.rt.frames.PitchFrame.time>` already has the
tracker's reported delay subtracted (it is the time of the audio the frame describes), so the
scorer never subtracts latency again (its own ``latency_samples`` is 0). The only shift it
applies is ``offset_s``: the input time at which song time 0 (the first sample of the backing
track) reached the singer; song time = ``frame.time - offset_s``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from ..frames import PitchFrame
from .song import KaraokeSong

#: Tolerance [cents] of each difficulty.
DIFFICULTIES: dict[str, float] = {"easy": 100.0, "medium": 50.0, "hard": 30.0}
#: Line ratings by ``round(8 * perfection)``.
RATINGS = ("awful", "poor", "bad", "weak", "not bad", "good", "great", "awesome", "perfect")


@dataclass(frozen=True)
class ScoreConfig:
    """How strictly to score.

    Attributes
    ----------
    difficulty : str
        ``easy`` / ``medium`` / ``hard`` (tolerance 100 / 50 / 30 cents).
    tolerance_cents : float or None [cents]
        Overrides the difficulty's tolerance.
    octave_agnostic : bool
        Accept the right note in any octave.
    golden_factor : float
        Weight of golden notes relative to normal ones.
    line_bonus : float [points]
        Part of ``max_score`` given per line for line perfection.
    max_score : float [points]
    onset_grace_s : float [s]
        Start of each note not counted (capped at a quarter of the note).
    hop_s : float [s]
        Frame spacing (the tracker's 10 ms hop), for notes that got fewer frames than
        their length holds.
    """

    difficulty: str = "medium"
    tolerance_cents: float | None = None
    octave_agnostic: bool = False
    golden_factor: float = 2.0
    line_bonus: float = 1000.0
    max_score: float = 10000.0
    onset_grace_s: float = 0.05
    hop_s: float = 0.01

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {self.difficulty!r}")
        if self.tolerance_cents is not None and not self.tolerance_cents > 0:
            raise ConfigError(f"tolerance must be positive [cents], got {self.tolerance_cents}")
        if not 0 <= self.line_bonus <= self.max_score:
            raise ConfigError(f"line bonus must be within 0..{self.max_score}, got {self.line_bonus}")
        if not self.hop_s > 0 or self.onset_grace_s < 0 or self.golden_factor < 0:
            raise ConfigError("hop_s must be positive; onset_grace_s and golden_factor non-negative")

    @property
    def tolerance(self) -> float:
        """Tolerance in force [cents]."""
        return float(self.tolerance_cents if self.tolerance_cents is not None else DIFFICULTIES[self.difficulty])


@dataclass(frozen=True)
class FrameResult:
    """What the scorer made of one frame (for live views).

    Attributes
    ----------
    t : float [s]
        Song time of the frame.
    f0_hz : float [Hz]
        0 when unvoiced.
    midi : float or None
        Sung pitch (None when unvoiced).
    note : int
        Index of the note at ``t`` (-1 between notes).
    target : float or None
        Target MIDI pitch at ``t`` (None between notes or for unpitched notes).
    cents : float or None [cents]
        Sung minus target (after octave folding when octave-agnostic).
    hit : bool
    """

    t: float
    f0_hz: float
    midi: float | None
    note: int
    target: float | None
    cents: float | None
    hit: bool


@dataclass
class NoteScore:
    index: int
    hit_ratio: float
    weight: float
    points: float


@dataclass
class LineScore:
    index: int
    text: str
    start: float
    end: float
    perfection: float
    rating: str
    points: float


@dataclass
class SongScore:
    """A finished (or running) score.

    Attributes
    ----------
    total : int [points] out of ``config.max_score``
    note_points, line_points : float
    notes : list of NoteScore
    lines : list of LineScore
    config : ScoreConfig
    sung : dict of lists
        ``t`` [s song time], ``f0_hz``, ``hit`` per received frame.
    """

    total: int
    note_points: float
    line_points: float
    notes: list[NoteScore]
    lines: list[LineScore]
    config: ScoreConfig
    offset_s: float = 0.0
    sung: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["tolerance"] = self.config.tolerance
        return {
            "total": self.total, "max_score": self.config.max_score,
            "note_points": round(self.note_points, 2), "line_points": round(self.line_points, 2),
            "config": cfg, "offset_s": self.offset_s,
            "notes": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(n).items()} for n in self.notes],
            "lines": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(ln).items()} for ln in self.lines],
            "sung": self.sung,
        }


def _rating(perfection: float) -> str:
    return RATINGS[int(round(8 * min(1.0, max(0.0, perfection))))]


class Scorer:
    """Streaming scorer: a :class:`~melodyrt.rt.frames.Sink` of tracked frames.

    Parameters
    ----------
    song : KaraokeSong
    config : ScoreConfig, optional
    offset_s : float [s]
        Input time of song time 0 (see the module docstring); 0 for a recording of the
        performance that starts with the backing track.

    Notes
    -----
    ``send`` may be called from the tracker's worker thread while a view calls ``score`` or
    ``snapshot``: a lock guards the counters.
    """

    #: The scorer adds no delay of its own (``PitchFrame.time`` is already corrected).
    latency_samples: int = 0

    def __init__(self, song: KaraokeSong, config: ScoreConfig | None = None, offset_s: float = 0.0) -> None:
        self.song = song
        self.config = config or ScoreConfig()
        self.offset_s = float(offset_s)
        n = len(song.notes)
        factor = {"normal": 1.0, "rap": 1.0, "golden": self.config.golden_factor,
                  "rap_golden": self.config.golden_factor, "freestyle": 0.0}
        self.weights = np.array([n_.duration * factor[n_.kind] for n_ in song.notes], dtype=np.float64)
        grace = self.config.onset_grace_s
        self._from = np.array([nt.start + min(grace, 0.25 * nt.duration) for nt in song.notes])
        self._span = np.array([nt.end for nt in song.notes]) - self._from
        self.hits = np.zeros(n, np.int64)  # frames on pitch, per note
        self.judged = np.zeros(n, np.int64)  # frames whose time fell inside the scored span
        self._lock = threading.Lock()
        self.sung_t: list[float] = []
        self.sung_f0: list[float] = []
        self.sung_hit: list[bool] = []
        self.last: FrameResult | None = None
        self.closed = False

    # ------------------------------------------------------------------------ streaming

    def reset(self) -> None:
        """Forget every frame (a new attempt at the same song)."""
        with self._lock:
            self.hits[:] = 0
            self.judged[:] = 0
            self.sung_t.clear()
            self.sung_f0.clear()
            self.sung_hit.clear()
            self.last = None

    def judge(self, t: float, f0_hz: float, voiced: bool) -> FrameResult:
        """Score one observation at song time ``t`` [s] (the core of :meth:`send`)."""
        cfg = self.config
        song = self.song
        voiced = bool(voiced) and f0_hz > 0
        midi = 69.0 + 12.0 * math.log2(f0_hz / 440.0) if voiced else None
        i = song.note_at(t)
        target = cents = None
        hit = False
        with self._lock:
            if i >= 0:
                note = song.notes[i]
                tgt = note.target_midi(t)
                if note.pitched and midi is not None and tgt is not None:
                    cents = 100.0 * (midi - tgt)
                    if cfg.octave_agnostic:
                        cents -= 1200.0 * round(cents / 1200.0)
                    target = tgt
                if not note.scored:
                    hit = False
                elif note.pitched:
                    # Strictly inside: on easy (100 cents) the neighbouring semitone is never a hit.
                    hit = cents is not None and round(abs(cents), 3) < cfg.tolerance
                else:  # rap: voicing is enough
                    hit = voiced
                if t >= self._from[i] and note.scored:
                    self.judged[i] += 1
                    self.hits[i] += int(hit)
            result = FrameResult(t, f0_hz if voiced else 0.0, midi, i, target, cents, hit)
            self.sung_t.append(t)
            self.sung_f0.append(f0_hz if voiced else 0.0)
            self.sung_hit.append(hit)
            self.last = result
        return result

    def send(self, frame: PitchFrame) -> FrameResult:  # type: ignore[override]
        """Consume one tracked frame (Sink protocol); returns the judgement for views."""
        # Rounded to 1 ns: float noise from the subtraction must not move a frame across a
        # note boundary that it sits on.
        return self.judge(round(frame.time - self.offset_s, 9), frame.f0_hz, frame.voiced)

    def close(self) -> None:
        """Sink protocol: nothing to release (safe to call twice)."""
        self.closed = True

    # --------------------------------------------------------------------------- scores

    def hit_ratios(self) -> np.ndarray:
        """Hit ratio of every note so far, shape (n_notes,), in 0..1.

        Frames on pitch over frames judged; a note not yet (or never) sung to its end counts
        against the frames its length holds, ``span / hop - 1`` (one less, as a span holds
        ``floor`` or ``ceil`` of ``span / hop`` frame times depending on the grid's phase).
        """
        with self._lock:
            expected = np.maximum(self.judged, self._span / self.config.hop_s - 1.0)
            return np.clip(self.hits / np.maximum(expected, 1.0), 0.0, 1.0)

    def score(self, now: float | None = None, with_sung: bool = True) -> SongScore:
        """The score so far.

        Parameters
        ----------
        now : float [s], optional
            Song time; line bonuses count only for lines ended by then. ``None``: the song
            is over, every line counts (the final score).
        with_sung : bool
            Copy the sung track into the result (``False`` for cheap running totals).
        """
        cfg = self.config
        ratios = self.hit_ratios()
        w = self.weights
        total_w = float(w.sum())
        note_pool = cfg.max_score - cfg.line_bonus
        if total_w <= 0:
            note_pool, w_pts = 0.0, np.zeros_like(w)
        else:
            w_pts = note_pool * w * ratios / total_w
        notes = [NoteScore(i, float(ratios[i]), float(w[i]), float(w_pts[i])) for i in range(len(w))]
        # Every scored note belongs to a line, so there are scored lines whenever total_w > 0.
        scored_lines = [ln for ln in self.song.lines if w[list(ln.notes)].sum() > 0]
        share = cfg.line_bonus / len(scored_lines) if scored_lines else 0.0
        lines = []
        for ln in self.song.lines:
            idx = list(ln.notes)
            lw = float(w[idx].sum())
            perfection = float((w[idx] * ratios[idx]).sum() / lw) if lw > 0 else 0.0
            done = now is None or now >= ln.end
            pts = share * perfection if (lw > 0 and done) else 0.0
            lines.append(LineScore(ln.index, ln.text, ln.start, ln.end, perfection,
                                   _rating(perfection) if lw > 0 else "-", pts))
        note_points = float(w_pts.sum())
        line_points = float(sum(ln.points for ln in lines))
        sung: dict[str, list[Any]] = {}
        if with_sung:
            with self._lock:
                sung = {"t": [round(x, 4) for x in self.sung_t], "f0_hz": [round(x, 3) for x in self.sung_f0],
                        "hit": list(self.sung_hit)}
        total = int(min(cfg.max_score, round(note_points + line_points)))
        return SongScore(total, note_points, line_points, notes, lines, cfg, self.offset_s, sung)

    def running_total(self, now: float) -> int:
        """Points earned up to song time ``now`` (notes so far + bonuses of finished lines)."""
        return self.score(now, with_sung=False).total


def score_frames(
    song: KaraokeSong, frames: Iterable[PitchFrame], config: ScoreConfig | None = None, offset_s: float = 0.0
) -> SongScore:
    """Score a whole performance (e.g. from ``transcribe_file``) with the streaming scorer."""
    scorer = Scorer(song, config, offset_s)
    for frame in frames:
        scorer.send(frame)
    scorer.close()
    return scorer.score()


def frames_from_f0(times: np.ndarray, f0_hz: np.ndarray, rate: int = 8000) -> list[PitchFrame]:
    """PitchFrames from an f0 track (``f0 <= 0`` = unvoiced), e.g. a time,f0_hz CSV from
    another tracker or a synthesized performance."""
    out = []
    for k, (t, f) in enumerate(zip(np.asarray(times, np.float64), np.asarray(f0_hz, np.float64))):
        voiced = bool(f > 0 and np.isfinite(f))
        out.append(PitchFrame(k, int(round(t * rate)), float(t), float(f) if voiced else 0.0, voiced,
                              1.0 if voiced else 0.0, -20.0 if voiced else -90.0))
    return out

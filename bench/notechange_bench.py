"""``melodyrt bench notes``: how fast the MIDI note logic follows a pitch step, and what it costs in chatter.

The tracker runs once per clip and condition (:func:`melodyrt.bench.onset_bench.collect`:
MIR-1K, the 0 dB mix L+R and the voice alone) and once on the e2e bench's synthetic phrases
(:func:`melodyrt.bench.e2e_bench.make_signal`: a rest, a note, a step of 2-5 semitones,
tracked at four phases of the step against the 10 ms hop); its frames are then replayed
through :class:`melodyrt.rt.midi_out.MidiNoteLogic` once per note-change setting
(:func:`melodyrt.bench.onset_bench.replay`), so every setting sees the same frames.

Definitions (times are ``PitchFrame.time``, the tracker's reported delay subtracted, against
the labels' times; the *sounding pitch* after a frame is the held note plus the pitch bend
sent so far, what a synth plays):

- **Labelled step**: two consecutive voiced labels whose pitch differs by at least
  :data:`STEP_MIN` (1.5) semitones; it happens half-way between them. Synthetic clips are
  labelled on a 10 ms grid whose boundaries fall on the steps.
- **Step delay**: time from the step to the first frame whose sounding pitch is within
  :data:`CENTS_OK` (50) cents of the label nearest that frame (the step's first label while
  the nearest is still one before it), searched until the next step,
  the end of the voiced region or :data:`MAX_DELAY_S` (0.3 s), whichever comes first; no such
  frame: the step is *missed*. The same search on the tracker's own f0 (voiced frames) gives
  the *f0 delay*, the bound no note logic beats; *added delay* = step delay - f0 delay on the
  steps both reach, what the note logic costs on top of the f0.
- **Note change**: a note-on in the same frame as the previous note's note-off.
- **Spurious change**: a note change at ``t`` whose labels in ``[t - 150 ms, t + 50 ms]``
  (:data:`JUSTIFY_BEFORE_S`, :data:`JUSTIFY_AFTER_S`) are all unvoiced (*in silence*) or span
  less than :data:`CHANGE_MIN` (1) semitone (*steady*): the sung pitch did not move a
  semitone, the tracker or the rule did. Rates per minute of labelled voiced audio.
- **Wrong-pitch change**: a change to a note more than 1 semitone from every voiced label in
  its first 50 ms.
- **Held-note and vibrato time**: labels whose neighbours within +-150 ms (:data:`HELD_S`) are
  all voiced and span less than :data:`HELD_SPAN` (1.25) semitones (a held note, vibrato
  included); *vibrato* when that span is at least :data:`VIBRATO_SPAN` (0.5) semitone.
  *Churn*: note changes per minute inside that time (every one of them is unneeded).
- **Short note**: a note ended by a change before it was :data:`SHORT_FRAMES` (5, today's
  ``min_note_frames``) frames old (its first frame and the frame of the change counted, as the
  logic counts); a *bounce* is a short note
  started by a change and followed by the note before it (A, B, A): chatter.

Step delays are measured on the timestamps: the real MIDI pitch-change latency adds the
algorithmic delay, the hop wait and the buffering (the report states the sum).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from melodyrt.rt.bundle import ModelBundle, load_bundle
from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.midi_out import MidiConfig
from melodyrt.rt.pitch import hz_to_midi

from .cfp_bench import machine_info, machine_line, save_figure
from .onset_bench import Clip, Note, collect, data_text, model_text, panels, replay, report_tail, table

STEP_MIN = 1.5            # [semitones] a labelled step
CENTS_OK = 50.0           # the sounding pitch is "there" within this [cents]
MAX_DELAY_S = 0.3         # a step not reached by then is missed [s]
CHANGE_MIN = 1.0          # [semitones] the labels must move this much to justify a change
JUSTIFY_BEFORE_S = 0.15   # ... within this long before the change [s]
JUSTIFY_AFTER_S = 0.05    # ... or this long after it [s]
WRONG_WINDOW_S = 0.05     # a changed note is checked against the labels of its first 50 ms [s]
HELD_S = 0.15             # held-note test: labels within +-150 ms [s]
HELD_SPAN = 1.25          # [semitones] peak to peak below this: a held note
VIBRATO_SPAN = 0.5        # [semitones] peak to peak from this: vibrato
SHORT_FRAMES = 5          # [frames] a note changed younger than this is short (today's min_note_frames)
SIZE_CLASSES = ((STEP_MIN, 2.5, "1.5-2.5"), (2.5, 4.0, "2.5-4"), (4.0, 99.0, ">=4"))
SYNTH_PHASES = (0.0, 0.0025, 0.005, 0.0075)   # [s] silence before the synthetic phrases: step phases vs the hop


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NoteSetting:
    """One note-change rule replayed through the note logic.

    Attributes
    ----------
    name : str
    overrides : tuple of (str, value)
        :class:`MidiConfig` fields set for this rule (everything else at ``base``).
    """

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def config(self, base: MidiConfig) -> MidiConfig:
        return replace(base, **dict(self.overrides))


JUMP_CENTS = (150, 200, 250)
JUMP_GATES = (None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
JUMP_MIN_FRAMES: tuple[int | None, ...] = (1, 3, None)   # None: min_note_frames

#: Today's rule (before the fast path): the reference of the paired figures.
OLD = "3 frames (old)"
OLD_RULE = (("change_frames", 3), ("min_note_frames", 5), ("jump_cents", None))
#: The shipped defaults of :class:`MidiConfig` as they are (no overrides).
DEFAULTS = "defaults"


def jump_setting(cents: float, frames: int, confidence: float | None, min_frames: int | None) -> NoteSetting:
    """Today's rule plus the fast path (``jump_*`` fields of :class:`MidiConfig`)."""
    conf = "any conf" if confidence is None else f"conf {confidence:g}"
    age = "min note" if min_frames is None else f"min {min_frames}"
    return NoteSetting(f"jump {cents:g} c x{frames}, {conf}, {age}", OLD_RULE[:2] + (
        ("jump_cents", cents), ("jump_frames", frames), ("jump_confidence", confidence), ("jump_min_frames", min_frames)))


def default_settings(quick: bool = False) -> list[NoteSetting]:
    """The old rule first (the reference), the shipped defaults, shorter ``change_frames``
    without a fast path, then the fast path over its threshold, frames, confidence gate and the
    note age it needs."""
    out = [NoteSetting(OLD, OLD_RULE), NoteSetting(DEFAULTS),
           NoteSetting("2 frames", (("change_frames", 2),) + OLD_RULE[1:]),
           NoteSetting("1 frame", (("change_frames", 1),) + OLD_RULE[1:])]
    if quick:
        return out[:2] + [jump_setting(250, 1, None, 1)]
    out += [NoteSetting("2 frames, min 3", (("change_frames", 2), ("min_note_frames", 3), ("jump_cents", None)))]
    for cents in JUMP_CENTS:
        for min_frames in JUMP_MIN_FRAMES:
            out += [jump_setting(cents, 1, conf, min_frames) for conf in JUMP_GATES]
            out.append(jump_setting(cents, 2, None, min_frames))
    return out


# ---------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Step:
    """A labelled pitch step: ``time`` [s] half-way between labels ``index - 1`` and ``index``."""

    time: float
    index: int
    size: float   # [semitones], signed


def label_steps(clip: Clip) -> list[Step]:
    """Steps of at least :data:`STEP_MIN` semitones between consecutive voiced labels."""
    lm = clip.label_midi
    d = np.diff(lm)
    hit = np.flatnonzero((lm[:-1] > 0) & (lm[1:] > 0) & (np.abs(d) >= STEP_MIN)) + 1
    return [Step(float(clip.label_times[i] - clip.half_hop), int(i), float(d[i - 1])) for i in hit]


def nearest_label(clip: Clip, times: NDArray[np.float64]) -> NDArray[np.int64]:
    """Index of the label nearest each time (clipped to the labels)."""
    lt = clip.label_times
    j = np.searchsorted(lt, times)
    j = np.clip(j, 1, max(lt.shape[0] - 1, 1))
    left = np.abs(times - lt[j - 1]) <= np.abs(lt[np.minimum(j, lt.shape[0] - 1)] - times)
    return np.where(left, j - 1, j).astype(np.int64)


def label_span(clip: Clip, lo: float, hi: float) -> float | None:
    """Peak-to-peak [semitones] of the voiced labels in ``[lo, hi]``; None when there are none."""
    lt, lm = clip.label_times, clip.label_midi
    v = lm[(lt >= lo) & (lt <= hi) & (lm > 0)]
    return float(v.max() - v.min()) if v.size else None


def held_labels(clip: Clip) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Per label: in a held note, and in a held note with vibrato (module docstring)."""
    lt, lm = clip.label_times, clip.label_midi
    held = np.zeros(lt.shape[0], bool)
    vib = np.zeros(lt.shape[0], bool)
    w = max(1, int(round(HELD_S / (2 * clip.half_hop))))
    for i in range(w, lt.shape[0] - w):
        seg = lm[i - w: i + w + 1]
        if np.all(seg > 0):
            span = float(seg.max() - seg.min())
            held[i] = span < HELD_SPAN
            vib[i] = held[i] and span >= VIBRATO_SPAN
    return held, vib


# ---------------------------------------------------------------------------------- scoring


def step_delays(clip: Clip, sounding: NDArray[np.float64], steps: Sequence[Step] | None = None) -> list[float | None]:
    """Per labelled step, the delay [s] until ``sounding`` (per frame, NaN = silent) is within
    :data:`CENTS_OK` of the nearest label, or None when missed (module docstring)."""
    steps = label_steps(clip) if steps is None else steps
    times = np.array([f.time for f in clip.frames])
    near = nearest_label(clip, times) if times.size else np.zeros(0, np.int64)
    ends = [e for _, e in clip.regions]
    out: list[float | None] = []
    for n, st in enumerate(steps):
        end = st.time + MAX_DELAY_S
        if n + 1 < len(steps):
            end = min(end, steps[n + 1].time)
        k = int(np.searchsorted(ends, st.time))
        if k < len(ends):
            end = min(end, ends[k])
        lo, hi = np.searchsorted(times, st.time), np.searchsorted(times, end)
        target = clip.label_midi[np.maximum(near[lo:hi], st.index)]   # never a label before the step
        hit = np.flatnonzero((target > 0) & (np.abs(sounding[lo:hi] - target) * 100.0 <= CENTS_OK))   # NaN: False
        out.append(float(times[lo + hit[0]] - st.time) if hit.size else None)
    return out


def f0_sounding(frames: Sequence[PitchFrame]) -> NDArray[np.float64]:
    """The tracker's own pitch per frame [MIDI note], NaN when unvoiced."""
    return np.array([hz_to_midi(f.f0_hz) if f.voiced and f.f0_hz > 0 else np.nan for f in frames])


def classify_change(clip: Clip, note: Note) -> str:
    """``"stepped"``, ``"steady"`` or ``"silence"`` for a note change (module docstring)."""
    span = label_span(clip, note.on - JUSTIFY_BEFORE_S, note.on + JUSTIFY_AFTER_S)
    if span is None:
        return "silence"
    return "stepped" if span >= CHANGE_MIN else "steady"


def wrong_pitch(clip: Clip, note: Note) -> bool:
    """The note is more than 1 semitone from every voiced label in its first 50 ms."""
    lt, lm = clip.label_times, clip.label_midi
    cells = (lt + clip.half_hop > note.on) & (lt - clip.half_hop < note.on + WRONG_WINDOW_S) & (lm > 0)
    return bool(cells.any()) and not bool(np.any(np.abs(lm[cells] - note.note) <= 1.0))


def score_clip(clip: Clip, notes: list[Note], sounding: NDArray[np.float64],
               f0_delays: list[float | None] | None = None) -> dict[str, Any]:
    """Step delays, change counts and churn of one clip's replay (module docstring)."""
    steps = label_steps(clip)
    delays = step_delays(clip, sounding, steps)
    f0d = f0_delays if f0_delays is not None else step_delays(clip, f0_sounding(clip.frames), steps)
    changes = [n for n in notes if n.change]
    kinds = [classify_change(clip, n) for n in changes]
    held, vib = held_labels(clip)
    if clip.frames:
        frame_times = np.array([n.on for n in changes])
        j = nearest_label(clip, frame_times) if changes else np.zeros(0, np.int64)
    else:
        j = np.zeros(0, np.int64)
    cut = [k for k, n in enumerate(notes[:-1]) if not n.closed and notes[k + 1].change and notes[k + 1].on_index == n.off_index]
    # the logic counts a note's first frame and the frame that changes it: frames = off - on + 1
    short = [k for k in cut if notes[k].off_index - notes[k].on_index + 1 < SHORT_FRAMES]
    bounces = sum(1 for k in short if k > 0 and notes[k - 1].note == notes[k + 1].note
                  and notes[k].change and notes[k - 1].off_index == notes[k].on_index)
    return {
        "steps": len(steps), "step_sizes": [s.size for s in steps], "step_delays": delays, "f0_delays": f0d,
        "notes": len(notes), "changes": len(changes), "stepped": kinds.count("stepped"),
        "steady": kinds.count("steady"), "silence": kinds.count("silence"),
        "wrong_pitch": sum(wrong_pitch(clip, n) for n in changes),
        "held_changes": int(np.sum(held[j])) if j.size else 0, "vibrato_changes": int(np.sum(vib[j])) if j.size else 0,
        "short_notes": len(short), "bounces": bounces,
        "shortest_changed_frames": min((notes[k].off_index - notes[k].on_index + 1 for k in cut), default=None),
        "seconds": clip.duration, "voiced_s": float(np.sum(clip.label_midi > 0)) * 2 * clip.half_hop,
        "held_s": float(np.sum(held)) * 2 * clip.half_hop, "vibrato_s": float(np.sum(vib)) * 2 * clip.half_hop,
    }


COUNTS = ("steps", "notes", "changes", "stepped", "steady", "silence", "wrong_pitch", "held_changes",
          "vibrato_changes", "short_notes", "bounces", "seconds", "voiced_s", "held_s", "vibrato_s")


def _stats(ms: NDArray[np.float64]) -> dict[str, float] | None:
    if not ms.size:
        return None
    return {"median": float(np.median(ms)), "mean": float(ms.mean()), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99))}


def summarise(per_clip: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool :func:`score_clip` results: counts, rates per minute and delay statistics [ms]."""
    tot = {k: sum(c[k] for c in per_clip) for k in COUNTS}
    size = np.array([s for c in per_clip for s in c["step_sizes"]])
    d = np.array([np.nan if x is None else x for c in per_clip for x in c["step_delays"]]) * 1000.0
    f = np.array([np.nan if x is None else x for c in per_clip for x in c["f0_delays"]]) * 1000.0
    both = ~np.isnan(d) & ~np.isnan(f)
    voiced_min = max(tot["voiced_s"], 1e-9) / 60.0
    spurious = tot["steady"] + tot["silence"]
    by_size = {}
    for lo, hi, name in SIZE_CLASSES:
        k = (np.abs(size) >= lo) & (np.abs(size) < hi) if size.size else np.zeros(0, bool)
        by_size[name] = {"steps": int(k.sum()), "found": int(np.sum(~np.isnan(d[k]))) if k.size else 0,
                         "delay_ms": _stats(d[k & ~np.isnan(d)]) if k.size else None,
                         "added_ms": _stats(d[k & both] - f[k & both]) if k.size else None}
    return {
        **tot,
        "found": int(np.sum(~np.isnan(d))), "found_pct": 100.0 * float(np.mean(~np.isnan(d))) if d.size else 0.0,
        "f0_found_pct": 100.0 * float(np.mean(~np.isnan(f))) if f.size else 0.0,
        "delay_ms": _stats(d[~np.isnan(d)]), "f0_delay_ms": _stats(f[~np.isnan(f)]),
        "added_ms": _stats(d[both] - f[both]),
        "by_size": by_size,
        "spurious": spurious,
        "spurious_per_min": spurious / voiced_min,
        "steady_per_min": tot["steady"] / voiced_min,
        "changes_per_min": tot["changes"] / voiced_min,
        "wrong_pitch_per_min": tot["wrong_pitch"] / voiced_min,
        "changes_per_step": tot["stepped"] / max(tot["steps"], 1),
        "held_churn_per_min": tot["held_changes"] / max(tot["held_s"] / 60.0, 1e-9),
        "vibrato_churn_per_min": tot["vibrato_changes"] / max(tot["vibrato_s"] / 60.0, 1e-9),
        "short_notes_per_min": tot["short_notes"] / voiced_min,
        "bounces_per_min": tot["bounces"] / voiced_min,
        "shortest_changed_frames": min((c["shortest_changed_frames"] for c in per_clip
                                        if c["shortest_changed_frames"] is not None), default=None),
    }


def evaluate(clips: Sequence[Clip], settings: Sequence[NoteSetting], base: MidiConfig | None = None
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{condition: {setting: summary}}`` of every setting replayed on every clip.

    Each summary also has ``paired_gain_ms``: the mean step delay saved against the first
    setting over the steps both reach.
    """
    base = base or MidiConfig()
    f0_cache = {id(c): step_delays(c, f0_sounding(c.frames)) for c in clips}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    delays: dict[tuple[str, str], list[float | None]] = {}
    for s in settings:
        cfg = s.config(base)
        per_cond: dict[str, list[dict[str, Any]]] = {}
        for clip in clips:
            notes, sounding = replay(clip.frames, cfg)
            sc = score_clip(clip, notes, sounding, f0_cache[id(clip)])
            per_cond.setdefault(clip.condition, []).append(sc)
            delays.setdefault((clip.condition, s.name), []).extend(sc["step_delays"])
        for cond, rows in per_cond.items():
            out.setdefault(cond, {})[s.name] = summarise(rows)
    first = settings[0].name
    for (cond, name), mine in delays.items():
        gains = [a - b for a, b in zip(delays[cond, first], mine) if a is not None and b is not None]
        out[cond][name]["paired_gain_ms"] = 1000.0 * float(np.mean(gains)) if gains else None
    return out


# ---------------------------------------------------------------------------------- choice

MAX_INCREASE = 0.10        # the default may add at most 10 % spurious / wrong-pitch changes and vibrato churn
TIE_MS = 0.05              # [ms] mean delays this close are a tie
MEASURED = ("mix", "voice")   # conditions whose rates constrain the choice (the real recordings)
DELAY_CONDITIONS = ("mix", "voice", "synthetic")   # conditions whose mean step delays are averaged


def recommend(scores: dict[str, dict[str, dict[str, Any]]], settings: Sequence[NoteSetting],
              reference: str = OLD, max_increase: float = MAX_INCREASE) -> dict[str, Any] | None:
    """The setting with the lowest mean step delay (averaged over :data:`DELAY_CONDITIONS`
    present) among those that, in every condition of :data:`MEASURED` present, against the
    reference (today's rule):

    - add at most ``max_increase`` spurious changes per minute, wrong-pitch changes per minute
      and vibrato churn per minute (+0.1 / min, for counts near zero),
    - add no bounces (no chatter faster than the reference allows),
    - reach at least 99 % as many steps.

    Ties (within :data:`TIE_MS`, 0.05 ms) go to the setting with the fewest spurious changes
    per minute (summed over those conditions); the shipped defaults as such
    (:data:`DEFAULTS`) are not a candidate (``is_default`` says whether the pick equals them).
    None when nothing qualifies."""
    conds = [c for c in DELAY_CONDITIONS if c in scores] or list(scores)
    checked = [c for c in MEASURED if c in scores] or list(scores)

    def allowed(name: str) -> bool:
        for c in checked:
            r, v = scores[c][reference], scores[c][name]
            for key in ("spurious_per_min", "wrong_pitch_per_min", "vibrato_churn_per_min"):
                if v[key] > (1.0 + max_increase) * r[key] + (0.1 if key == "vibrato_churn_per_min" else 1e-9):
                    return False
            if v["bounces_per_min"] > r["bounces_per_min"] + 1e-9 or v["found"] < 0.99 * r["found"]:
                return False
        return True

    cands: list[tuple[float, float, NoteSetting]] = []
    for s in settings:
        if s.name == DEFAULTS or any(s.name not in scores[c] or scores[c][s.name]["delay_ms"] is None for c in conds) \
                or not allowed(s.name):
            continue
        mean = float(np.mean([scores[c][s.name]["delay_ms"]["mean"] for c in conds]))
        cands.append((mean, sum(scores[c][s.name]["spurious_per_min"] for c in checked), s))
    if not cands:
        return None
    fastest = min(c[0] for c in cands)
    mean, _, s = min((c for c in cands if c[0] <= fastest + TIE_MS), key=lambda c: (c[1], c[0]))
    return {"setting": s.name, "overrides": dict(s.overrides), "mean_delay_ms": mean,
            "is_default": s.config(MidiConfig()) == MidiConfig(),
            "gain_ms": {c: rows[s.name]["paired_gain_ms"] for c, rows in scores.items()},
            "rule": f"lowest mean step delay over {', '.join(conds)} among the settings that add at most "
                    f"{100 * max_increase:.0f} % spurious changes, wrong-pitch changes and vibrato churn per minute "
                    f"and no bounces to '{reference}' in {', '.join(checked)}, reaching at least 99 % as many steps "
                    f"(ties within {TIE_MS:g} ms: fewest spurious changes)"}


# ---------------------------------------------------------------------------------- data


def synthetic_clips(bundle: ModelBundle, phrases: int = 60, rate: int = 8000,
                    phases: Sequence[float] = SYNTH_PHASES) -> list[Clip]:
    """The e2e bench's sung phrases (:func:`~melodyrt.bench.e2e_bench.make_signal`), tracked once
    per phase (silence prepended, so the steps fall at other points of the 10 ms hop), labelled
    from the phrases' notes on a 10 ms grid whose label boundaries fall on the steps."""
    from melodyrt.rt.tracker import Tracker, transcribe_signal

    from .e2e_bench import make_signal

    x, ph = make_signal(phrases, rate)
    tracker = Tracker(rate, bundle, backend="ort")
    clips = []
    for phase in phases:
        pad = int(round(phase * rate))
        res = transcribe_signal(np.concatenate([np.zeros(pad, x.dtype), x]), rate, tracker=tracker)
        lt = phase + 0.005 + 0.01 * np.arange(int(res.duration / 0.01))
        lm = np.zeros(lt.shape[0])
        for p in ph:
            a, b, c = (phase + s / rate for s in (p.onset, p.step, p.end))
            lm[(lt >= a) & (lt < b)] = p.first
            lm[(lt >= b) & (lt < c)] = p.second
        clips.append(Clip(f"synthetic+{1000 * phase:g}ms", "synthetic", res.frames,
                          np.array([f.confidence for f in res.frames]), lt, lm, res.duration))
    return clips


# ---------------------------------------------------------------------------------- run


def run(bundle: ModelBundle | str | Path | None, data: Path | None, out_dir: Path, *, singers: Sequence[str] | None = None,
        max_tracks: int | None = None, quick: bool = False, plots: bool = True, phrases: int = 60,
        settings: Sequence[NoteSetting] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every note-change setting; write ``notes_bench.json/.md`` and the plot.

    Parameters
    ----------
    data : Path or None
        MIR-1K-style folder (:func:`~melodyrt.bench.accuracy_bench.load_tracks`); None: the
        synthetic phrases alone.
    phrases : int
        Synthetic phrases per phase (each one step); 0: none.
    """
    from melodyrt.rt.engine import create_engine
    from melodyrt.rt.tracker import Tracker

    from .accuracy_bench import ReplayEngine, load_tracks, setting_latency_ms

    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    settings = list(settings or default_settings(quick))
    t0 = time.perf_counter()
    clips: list[Clip] = []
    layout, names = None, []
    max_s = 4.0 if quick else None
    if data is not None:
        layout, tracks = load_tracks(data, singers, 2 if quick and not max_tracks else max_tracks)
        names = [t.name for t in tracks]
        clips += collect(bundle, tracks, max_s, progress=progress)
    n_phrases = max(0, min(phrases, 6) if quick else phrases)
    phases = SYNTH_PHASES[:2] if quick else SYNTH_PHASES
    if n_phrases:
        clips += synthetic_clips(bundle, n_phrases, phases=phases)
    t_model = time.perf_counter() - t0
    scores = evaluate(clips, settings)
    base = MidiConfig()
    result: dict[str, Any] = {
        "benchmark": "notes", "quick": quick, "machine": machine,
        "data": {"dir": None if data is None else str(data), "layout": layout, "tracks": len(names),
                 "singers": list(singers or []), "seconds_per_track": max_s, "names": names[:100],
                 "synthetic_phrases": n_phrases, "synthetic_phases_ms": [1000 * p for p in phases] if n_phrases else []},
        "model": {"name": bundle.name, "dir": str(bundle.root), "delay_frames": bundle.delay_frames,
                  "untrained": not (bundle.meta.get("training_state") or {}).get("global_step")},
        "note_logic": {k: getattr(base, k) for k in NOTE_FIELDS},
        "settings": {s.name: dict(s.overrides) for s in settings},
        "scores": scores,
        "recommended": recommend(scores, settings),
        "latency_on_top_ms": setting_latency_ms(Tracker(8000, bundle, engine=ReplayEngine(create_engine("ort", bundle)))),
        "definitions": DEFINITIONS,
        "wall_s": {"model": t_model, "total": time.perf_counter() - t0},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plots:
        result["plots"] = write_plot(result, out_dir)
    (out_dir / "notes_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "notes_bench.md").write_text(markdown(result))
    return result


NOTE_FIELDS = ("bend_range", "hysteresis_cents", "change_frames", "min_note_frames", "jump_cents", "jump_frames",
               "jump_confidence", "jump_min_frames", "onset_confidence", "release_frames")

DEFINITIONS = [
    f"labelled step: consecutive voiced labels at least {STEP_MIN:g} semitones apart (half-way between them); "
    "synthetic: the e2e bench's phrases, labelled on a 10 ms grid whose boundaries fall on the steps",
    f"step delay: to the first frame whose sounding pitch (note + bend) is within {CENTS_OK:.0f} cents of the "
    f"nearest label, searched until the next step, the region's end or {1000 * MAX_DELAY_S:.0f} ms (else missed); "
    "f0 delay: the same on the tracker's own voiced f0 (the bound); added: step - f0 delay on the steps both reach; "
    "gain: mean delay saved against the old rule on the steps both reach",
    f"spurious change: a note change whose labels in [t - {1000 * JUSTIFY_BEFORE_S:.0f} ms, t + "
    f"{1000 * JUSTIFY_AFTER_S:.0f} ms] are unvoiced or span less than {CHANGE_MIN:g} semitone; per minute of "
    "labelled voiced audio",
    f"wrong-pitch change: to a note more than 1 semitone from every voiced label of its first "
    f"{1000 * WRONG_WINDOW_S:.0f} ms",
    f"vibrato churn: note changes per minute inside labelled held notes (labels within +-{1000 * HELD_S:.0f} ms all "
    f"voiced, peak to peak < {HELD_SPAN:g} semitones) whose peak to peak is at least {VIBRATO_SPAN:g} semitone",
    f"short note: changed before it was {SHORT_FRAMES} frames old (first frame and change frame counted); bounce: "
    "a short note between two of the same pitch (A, B, A)",
]


# ---------------------------------------------------------------------------------- report

COLUMNS = ("found %", "delay ms median / mean / p90", "added ms", "gain ms", "mean by size ms",
           "spurious / min", "wrong pitch / min", "vibrato churn / min", "short / min", "bounces / min")


def _row(name: str, v: dict[str, Any]) -> str:
    d, a = v["delay_ms"], v["added_ms"]
    delay = "-" if d is None else f"{d['median']:.0f} / {d['mean']:.1f} / {d['p90']:.0f}"
    gain = "-" if v.get("paired_gain_ms") is None else f"{v['paired_gain_ms']:+.1f}"
    sizes = " / ".join("-" if x["delay_ms"] is None else f"{x['delay_ms']['mean']:.0f}" for x in v["by_size"].values())
    return (f"| {name} | {v['found_pct']:.1f} | {delay} | {'-' if a is None else format(a['mean'], '.1f')} | {gain} | "
            f"{sizes} | {v['spurious_per_min']:.1f} | {v['wrong_pitch_per_min']:.1f} | {v['vibrato_churn_per_min']:.0f} | "
            f"{v['short_notes_per_min']:.1f} | {v['bounces_per_min']:.2f} |")


def markdown(result: dict[str, Any]) -> str:
    d, m = result["data"], result["machine"]
    lines = [f"# melodyrt bench notes{' (quick mode)' if result['quick'] else ''}", "", machine_line(m),
             f"Data: {data_text(result) if d['dir'] else 'no recordings'}; synthetic: {d['synthetic_phrases']} e2e "
             f"phrases at phases {d['synthetic_phases_ms']} ms; {model_text(result)}. "
             f"Note logic defaults: {result['note_logic']}.", ""]
    for cond, rows in result["scores"].items():
        first = next(iter(rows.values()))
        f0 = first["f0_delay_ms"]
        sizes = ", ".join(f"{k}: {x['steps']}" for k, x in first["by_size"].items())
        lines += [f"## {cond} ({first['voiced_s'] / 60:.1f} min voiced, {first['steps']} steps: {sizes} semitones)", "",
                  f"The tracker's own f0 reaches {first['f0_found_pct']:.1f} % of the steps"
                  + ("" if f0 is None else f", delay median {f0['median']:.0f} / mean {f0['mean']:.1f} / p90 {f0['p90']:.0f} ms")
                  + ": no note rule does better.", ""] + table(rows, COLUMNS, _row)
    rec = result.get("recommended")
    if rec:
        gains = ", ".join(f"{c} {g:+.1f} ms" for c, g in rec["gain_ms"].items() if g is not None)
        lines += [f"**Recommended: {rec['setting']}** ({rec['rule']}; mean step delay {rec['mean_delay_ms']:.1f} ms; "
                  f"saved against the old rule: {gains}). As MidiConfig fields: `{rec['overrides']}`"
                  f"{' (the shipped defaults)' if rec.get('is_default') else ' (NOT the shipped defaults)'}.", ""]
    else:
        lines += ["No setting stays within the allowances: keep the old rule.", ""]
    return "\n".join(lines + report_tail(result, "MIDI pitch-change latency = step delay")) + "\n"


def write_plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    """Spurious changes per minute (synthetic: wrong-pitch ones) against mean step delay, one
    panel per condition: the fast path at the recommended threshold as one line per
    ``jump_min_frames`` over the confidence gates, every other fast-path setting as a grey dot,
    the rules without a fast path as squares, the recommendation as a star."""
    fig, axes = panels(result, 6.0)
    rec = (result.get("recommended") or {}).get("setting")
    cents = (result.get("recommended") or {}).get("overrides", {}).get("jump_cents", 250)
    for ax, cond in axes:
        lines: dict[str, list[tuple[float, float]]] = {}
        for name, v in result["scores"][cond].items():
            if v["delay_ms"] is None:
                continue
            o = result["settings"][name]
            xy = (v["delay_ms"]["mean"], v["spurious_per_min"] if cond != "synthetic" else v["wrong_pitch_per_min"])
            if name == rec:
                ax.plot(*xy, "*", ms=12, color="k", zorder=5, label=f"recommended: {name}")
            if not o or o.get("jump_cents") is None:
                ax.plot(*xy, "s", ms=5, color="tab:red" if o else "tab:green")
                ax.annotate(name, xy, fontsize=6, xytext=(3, 3), textcoords="offset points")
            elif o.get("jump_cents") == cents and o.get("jump_frames", 1) == 1:
                age = "min note" if o.get("jump_min_frames") is None else f"min {o['jump_min_frames']}"
                lines.setdefault(f"jump {cents:g} c x1, {age} (gates)", []).append(xy)
            else:
                ax.plot(*xy, ".", ms=4, color="0.6")
        for label, pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=label)
        ax.set_xlabel("mean step delay after the labelled step [ms] (timestamps)")
        ax.set_ylabel("spurious changes per minute" if cond != "synthetic" else "wrong-pitch changes per minute")
        ax.set_title(f"{cond}: chatter vs step delay (grey: other fast-path settings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return [save_figure(fig, out_dir, "notes_tradeoff.png")]

"""``melodyrt bench onset``: false onsets, missed onsets and onset delay of the MIDI note logic.

The network runs once per clip and condition (:func:`melodyrt.rt.tracker.transcribe_signal`,
the live path fed from memory; MIR-1K: the 0 dB mix L+R and the voice alone, the right
channel); its frames are then replayed through :class:`melodyrt.rt.midi_out.MidiNoteLogic`
once per onset setting, so every setting sees the same frames. The engine's salience is
recorded on the way (:class:`~melodyrt.bench.accuracy_bench.ReplayEngine`) for p(voiced),
which :class:`~melodyrt.rt.frames.PitchFrame` does not carry. The *study* settings (rules the
note logic does not implement) rewrite the frames before the replay and so run the same logic:
they gate the onset on p(voiced) or on its rise since the previous frame instead of the
confidence, or (``early``) also start a note on a frame the decoder still calls unvoiced when
p(voiced) > 0.3 rose by the threshold into it. The *fast onset* setting (``MidiConfig.fast_onset``)
also replays the tracker's onset cues (:mod:`melodyrt.rt.onset_cue`) between the frames.

Definitions (times are ``PitchFrame.time``, with the tracker's reported delay subtracted,
against the labels' times):

- **Labels**: each label covers half a label hop on each side of its time (MIR-1K: one every
  20 ms, label ``i`` at ``0.02 (i + 1)`` s covers ``+-10 ms``); a *labelled voiced region* is a
  run of voiced labels, from half a hop before its first label (half-way from the last
  unvoiced one) to half a hop after its last.
- **Onset**: a note-on with no note sounding before it (a note started from silence);
  note-ons of a note change (note-off + note-on in one frame) are counted apart.
- **False onset**: an onset whose first 50 ms ``[t, t + 0.05)`` overlap no voiced label
  within 1 semitone of the note (``|label - note| <= 1``). Split into *unvoiced* (no voiced
  label at all in that window) and *wrong pitch*.
- **Reference onset**: the start ``s`` of a labelled voiced region. It is *found* when a
  note-on (onset or change) falls in ``[s - 0.05, min(s + 0.15, end))``, matched one to one
  in time order; the *onset delay* is ``t - s`` of that note-on. Otherwise it is *missed*:
  *merged* when a note was already sounding at ``s`` (held over a short gap), else *silent*.
- **Re-onset**: an onset that is neither false nor matched: voice inside a labelled region
  that had already started (the note dropped out and came back), the measure of chatter.
- **Rates**: false onsets per minute of audio, unvoiced false onsets per second of labelled
  unvoiced audio (the time in which any onset is false), and shares of all onsets.

Onset delay is measured on the timestamps: the real note-on latency adds the algorithmic delay,
the hop wait and the buffering (the report states the sum at 48 kHz / 128, 26.2 ms with rt2).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from melodyrt.rt.bundle import ModelBundle, load_bundle
from melodyrt.rt.frames import OnsetCue, PitchFrame
from melodyrt.rt.midi_out import BEND_CENTRE, MidiConfig, MidiNoteLogic
from melodyrt.rt.pitch import hz_to_midi
from melodyrt.rt.tracker import merge_events

from .accuracy_bench import ReplayEngine, conditions, load_tracks
from .cfp_bench import machine_info, machine_line, save_figure

FALSE_WINDOW_S = 0.05    # a note's first 50 ms are checked against the labels [s]
PITCH_TOL = 1.0          # [semitones]
EARLY_S = 0.05           # a reference onset is found by a note-on up to 50 ms before it ...
LATE_S = 0.15            # ... and up to 150 ms after it (or the end of its region) [s]


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class OnsetSetting:
    """One onset rule replayed through the note logic.

    Attributes
    ----------
    name : str
    onset_frames : int [frames]
    onset_confidence : float or None
        ``MidiConfig.onset_confidence`` (None: the 2-frame rule alone).
    onset_rest_frames : int or None [frames]
        ``MidiConfig.onset_rest_frames`` (None: the config's default).
    study : str or None
        A rule the note logic does not implement, key of :data:`STUDIES`: the frames are
        rewritten (what the gate reads put in ``confidence``) before the replay.
    fast_onset : bool
        ``MidiConfig.fast_onset``: the clip's onset cues are replayed between its frames.
    """

    name: str
    onset_frames: int = 2
    onset_confidence: float | None = None
    onset_rest_frames: int | None = None
    study: str | None = None
    fast_onset: bool = False

    def config(self, base: MidiConfig) -> MidiConfig:
        cfg = replace(base, onset_frames=self.onset_frames, onset_confidence=self.onset_confidence,
                      fast_onset=self.fast_onset)
        return cfg if self.onset_rest_frames is None else replace(cfg, onset_rest_frames=self.onset_rest_frames)

    def frames(self, clip: "Clip") -> list[PitchFrame]:
        return clip.frames if self.study is None else STUDIES[self.study](clip, self)


def _rise(clip: "Clip") -> NDArray[np.float64]:
    """Rise of p(voiced) since the previous frame, clipped to 0..1."""
    return np.clip(np.diff(clip.p_voiced, prepend=0.0), 0.0, 1.0)


def _study_p_voiced(clip: "Clip", s: OnsetSetting) -> list[PitchFrame]:
    """Gate on p(voiced) instead of the confidence."""
    return [replace(f, confidence=float(p)) for f, p in zip(clip.frames, clip.p_voiced)]


def _study_rise(clip: "Clip", s: OnsetSetting) -> list[PitchFrame]:
    """Gate on the rise of p(voiced) into the frame."""
    return [replace(f, confidence=float(r)) for f, r in zip(clip.frames, _rise(clip))]


EARLY_P = 0.3   # [p(voiced)] the "early" study may start a note on a frame above this


def _study_early(clip: "Clip", s: OnsetSetting) -> list[PitchFrame]:
    """Gate on the rise of p(voiced), and let a frame with p(voiced) > :data:`EARLY_P` that rose
    by the threshold start a note although the decoder still calls it unvoiced."""
    rise = _rise(clip)
    t = s.onset_confidence if s.onset_confidence is not None else 1.0
    return [replace(f, voiced=True, confidence=float(r)) if not f.voiced and p > EARLY_P and r >= t
            else replace(f, confidence=float(r)) for f, p, r in zip(clip.frames, clip.p_voiced, rise)]


#: Study rules (``OnsetSetting.study``): frames rewritten for the replay.
STUDIES: dict[str, Callable[["Clip", OnsetSetting], list[PitchFrame]]] = {
    "p_voiced": _study_p_voiced, "rise": _study_rise, "early": _study_early}

GATES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OLD = "2 frames (old)"
FAST = "fast onset (cues), gate conf 0.7"


def default_settings(quick: bool = False) -> list[OnsetSetting]:
    """The old 2-frame rule (first: the reference of the paired gains), 1 frame always, the
    confidence gate at :data:`GATES`, then the studies."""
    out = [OnsetSetting(OLD, 2, None), OnsetSetting("1 frame", 1, None)]
    fast = OnsetSetting(FAST, 2, 0.7, fast_onset=True)
    if quick:
        return out + [OnsetSetting(f"gate conf {t:.1f}", 2, t) for t in (0.5, 0.7)] + [fast]
    out += [OnsetSetting(f"gate conf {t:.1f}", 2, t) for t in GATES]
    out += [OnsetSetting(f"gate conf {t:.1f}, rest {r}", 2, t, r) for t in (0.6, 0.7) for r in (0, 5)]
    out += [OnsetSetting(f"study: gate p(voiced) {t:.2f}", 2, t, study="p_voiced") for t in (0.7, 0.8, 0.9)]
    out += [OnsetSetting(f"study: gate rise {t:.1f}", 2, t, study="rise") for t in (0.2, 0.3, 0.4)]
    out += [OnsetSetting(f"study: early on rise {t:.1f}", 2, t, study="early") for t in (0.2, 0.3)]
    out += [OnsetSetting("3 frames", 3, None), fast]
    return out


# ---------------------------------------------------------------------------------- data


@dataclass
class Clip:
    """The tracker's frames of one signal, with its labels.

    Attributes
    ----------
    name, condition : str
    frames : list of PitchFrame
    p_voiced : ndarray [shape=(len(frames),)]
        ``1 - salience[0]`` of each frame's engine step.
    label_times : ndarray [shape=(L,)] [s]
    label_midi : ndarray [shape=(L,)] [MIDI note], 0 = unvoiced
    duration : float [s]
    regions : list of (start, end) [s]
        Labelled voiced regions (set from the labels).
    half_hop : float [s]
        Half the label hop (set from the labels; 10 ms for MIR-1K).
    cues : list of OnsetCue
        The tracker's onset cues on the same stream.
    cue_shift : float [s]
        Added to a cue's time to put a note it starts on the frames' time scale: a frame's
        note-on is *decided* ``delay_samples`` after its ``time``, a cue's
        ``cue_delay_samples`` after its own, so a cue note's ``on`` is its decision time minus
        the frames' delay and onset delays compare decisions.
    """

    name: str
    condition: str
    frames: list[PitchFrame]
    p_voiced: NDArray[np.float64]
    label_times: NDArray[np.float64]
    label_midi: NDArray[np.float64]
    duration: float
    regions: list[tuple[float, float]] = field(default_factory=list)
    half_hop: float = 0.01
    cues: list[OnsetCue] = field(default_factory=list)
    cue_shift: float = 0.0

    def __post_init__(self) -> None:
        lt = self.label_times
        self.half_hop = 0.5 * float(np.median(np.diff(lt))) if lt.shape[0] > 1 else 0.01
        v = self.label_midi > 0
        edges = np.diff(np.r_[0, v.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        self.regions = [(float(lt[a] - self.half_hop), float(lt[b] + self.half_hop)) for a, b in zip(starts, ends)]

    @property
    def unvoiced_s(self) -> float:
        """Labelled unvoiced time inside the clip [s]."""
        inside = self.label_times < self.duration
        return float(np.sum(self.label_midi[inside] <= 0)) * 2 * self.half_hop


def collect(bundle: ModelBundle, tracks: Sequence[Any], max_seconds: float | None = None,
            progress: Callable[[str], None] | None = None, engine: ReplayEngine | None = None) -> list[Clip]:
    """Run the tracker once per track and condition; keep frames, p(voiced) and labels.

    Parameters
    ----------
    engine : ReplayEngine, optional
        Records the salience (default: one around ONNX Runtime for ``bundle``).
    """
    from melodyrt.rt.engine import create_engine
    from melodyrt.rt.tracker import Tracker, transcribe_signal

    rec = engine or ReplayEngine(create_engine("ort", bundle))
    rec.recording = True
    trackers: dict[int, Tracker] = {}
    clips = []
    for tr in tracks:
        for cond, (x, sr) in conditions(tr).items():
            if max_seconds is not None:
                x = x[: int(max_seconds * sr)]
            if sr not in trackers:
                trackers[sr] = Tracker(sr, bundle, engine=rec)
            rec.record = []
            res = transcribe_signal(x, sr, tracker=trackers[sr])
            sal = np.concatenate(rec.record)
            lag = trackers[sr].decoder.latency_frames          # output k describes step k - lag
            idx = np.array([f.index - lag for f in res.frames], int)
            keep = slice(None) if max_seconds is None else tr.label_times <= max_seconds
            t = trackers[sr]
            clips.append(Clip(tr.name, cond, res.frames, 1.0 - sal[idx, 0].astype(np.float64),
                              tr.label_times[keep], hz_to_midi(tr.label_f0[keep]), res.duration,
                              cues=res.cues, cue_shift=(t.cue_delay_samples - t.delay_samples) / sr))
        if progress is not None:
            progress(tr.name)
    return clips


# ---------------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class Note:
    """One note the logic played.

    Attributes
    ----------
    note : int [MIDI note]
    on, off : float [s]
        Times of the frames that sent its note-on and note-off.
    on_index, off_index : int [frames]
    change : bool
        Started by a note change (the previous note's note-off in the same frame).
    closed : bool
        Released by :meth:`MidiNoteLogic.stop` at the end of the stream.
    """

    note: int
    on: float
    off: float
    on_index: int
    off_index: int
    change: bool
    closed: bool = False


def replay(frames: Sequence[PitchFrame], config: MidiConfig, cues: Sequence[OnsetCue] = (),
           cue_shift: float = 0.0) -> tuple[list[Note], NDArray[np.float64]]:
    """The notes :class:`MidiNoteLogic` plays for ``frames`` (then stopped), and the pitch a
    receiver sounds after each frame's messages.

    ``cues`` (with ``config.fast_onset``) are fed before the frame numbered ``cue.index``; a
    note a cue starts has ``on = cue.time + cue_shift`` (see :attr:`Clip.cue_shift`) and
    ``on_index = cue.index``.

    Returns
    -------
    notes : list of Note
    sounding : ndarray [shape=(len(frames),)] [MIDI note, fractional]
        Held note + pitch bend (scaled by ``config.bend_range``) after the frame; NaN when
        no note sounds.
    """
    logic = MidiNoteLogic(config)
    notes: list[Note] = []
    sounding = np.full(len(frames), np.nan)
    held: tuple[int, float, int, bool] | None = None
    bend: dict[int, float] = {}   # per channel [semitones]
    channel = 0
    k = 0                         # frames replayed so far
    for e in merge_events(frames, cues):
        is_cue = isinstance(e, OnsetCue)
        t = e.time + cue_shift if is_cue else e.time
        off_here = False
        for m in (logic.cue(e) if is_cue else logic.process(e)):
            if m.type == "note_off" and held is not None:
                notes.append(Note(held[0], held[1], t, held[2], e.index, held[3]))
                held, off_here = None, True
            elif m.type == "note_on" and m.velocity > 0:
                held, channel = (m.note, t, e.index, off_here), m.channel
            elif m.type == "pitchwheel":
                bend[m.channel] = m.pitch / BEND_CENTRE * config.bend_range
        if is_cue:
            continue
        if held is not None:
            sounding[k] = held[0] + bend.get(channel, 0.0)
        k += 1
    if held is not None and frames:
        notes.append(Note(held[0], held[1], frames[-1].time, held[2], frames[-1].index, held[3], closed=True))
    logic.stop()
    return notes, sounding


def play(frames: Sequence[PitchFrame], config: MidiConfig, cues: Sequence[OnsetCue] = (),
         cue_shift: float = 0.0) -> list[Note]:
    """The notes :class:`MidiNoteLogic` plays for ``frames`` and ``cues`` (then stopped)."""
    return replay(frames, config, cues, cue_shift)[0]


# ---------------------------------------------------------------------------------- scoring


def classify_onset(clip: Clip, note: Note) -> str:
    """``"ok"``, ``"unvoiced"`` or ``"pitch"`` for the note's first :data:`FALSE_WINDOW_S`."""
    lt, lm = clip.label_times, clip.label_midi
    cells = (lt + clip.half_hop > note.on) & (lt - clip.half_hop < note.on + FALSE_WINDOW_S)
    voiced = cells & (lm > 0)
    if not voiced.any():
        return "unvoiced"
    return "ok" if np.any(np.abs(lm[voiced] - note.note) <= PITCH_TOL) else "pitch"


def score_clip(clip: Clip, notes: list[Note]) -> dict[str, Any]:
    """Counts and onset delays of one clip's notes against its labels (module docstring).

    ``region_delays`` holds, per labelled region, the onset delay [s] or None when missed.
    """
    onsets = [n for n in notes if not n.change]
    kinds = [classify_onset(clip, n) for n in onsets]
    ons = sorted(notes, key=lambda n: n.on)
    region_delays: list[float | None] = []
    merged = silent = 0
    matched: set[int] = set()
    j = 0
    for s, e in clip.regions:
        while j < len(ons) and ons[j].on < s - EARLY_S:
            j += 1
        if j < len(ons) and ons[j].on < min(s + LATE_S, e):
            region_delays.append(ons[j].on - s)
            matched.add(id(ons[j]))
            j += 1
            continue
        region_delays.append(None)
        if any(n.on < s <= n.off for n in notes):
            merged += 1
        else:
            silent += 1
    return {
        "onsets": len(onsets), "changes": len(notes) - len(onsets),
        "false_unvoiced": kinds.count("unvoiced"), "false_pitch": kinds.count("pitch"),
        "reonsets": sum(1 for n, k in zip(onsets, kinds) if k == "ok" and id(n) not in matched),
        "references": len(clip.regions), "found": sum(d is not None for d in region_delays),
        "merged": merged, "silent": silent, "region_delays": region_delays,
        "shortest_note_frames": min((n.off_index - n.on_index for n in notes if not n.closed), default=None),
        "seconds": clip.duration, "unvoiced_s": clip.unvoiced_s,
    }


COUNTS = ("onsets", "changes", "false_unvoiced", "false_pitch", "reonsets", "references", "found", "merged",
          "silent", "seconds", "unvoiced_s")


def summarise(per_clip: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool :func:`score_clip` results: counts, rates and onset-delay statistics [ms]."""
    tot = {k: sum(c[k] for c in per_clip) for k in COUNTS}
    false = tot["false_unvoiced"] + tot["false_pitch"]
    d = 1000.0 * np.array([x for c in per_clip for x in c["region_delays"] if x is not None])
    refs = max(tot["references"], 1)
    minutes = max(tot["seconds"], 1e-9) / 60.0
    return {
        **tot,
        "false": false,
        "false_pct": 100.0 * false / max(tot["onsets"], 1),
        "false_per_min": false / minutes,
        "false_unvoiced_per_unvoiced_s": tot["false_unvoiced"] / max(tot["unvoiced_s"], 1e-9),
        "reonsets_per_min": tot["reonsets"] / minutes,
        "found_pct": 100.0 * tot["found"] / refs,
        "missed_pct": 100.0 * (tot["merged"] + tot["silent"]) / refs,
        "delay_ms": ({"median": float(np.median(d)), "mean": float(d.mean()), "p10": float(np.percentile(d, 10)),
                      "p90": float(np.percentile(d, 90))} if d.size else None),
        # from the frame of the note-on to that of the note-off (not counting notes cut by the stream's end)
        "shortest_note_frames": min((c["shortest_note_frames"] for c in per_clip if c["shortest_note_frames"] is not None),
                                    default=None),
    }


def evaluate(clips: Sequence[Clip], settings: Sequence[OnsetSetting], base: MidiConfig | None = None
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{condition: {setting: summary}}`` of every setting replayed on every clip.

    Each summary also has ``paired_gain_ms``: the mean onset delay saved against the first
    setting over the reference onsets both found.
    """
    base = base or MidiConfig()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    region_delays: dict[tuple[str, str], list[float | None]] = {}
    for s in settings:
        cfg = s.config(base)
        per_cond: dict[str, list[dict[str, Any]]] = {}
        for clip in clips:
            sc = score_clip(clip, play(s.frames(clip), cfg, clip.cues if s.fast_onset else (), clip.cue_shift))
            per_cond.setdefault(clip.condition, []).append(sc)
            region_delays.setdefault((clip.condition, s.name), []).extend(sc["region_delays"])
        for cond, rows in per_cond.items():
            out.setdefault(cond, {})[s.name] = summarise(rows)
    first = settings[0].name
    for (cond, name), mine in region_delays.items():
        gains = [a - b for a, b in zip(region_delays[cond, first], mine) if a is not None and b is not None]
        out[cond][name]["paired_gain_ms"] = 1000.0 * float(np.mean(gains)) if gains else None
    return out


# ---------------------------------------------------------------------------------- choice

MAX_FALSE_INCREASE = 0.10   # the default threshold may add at most 10 % false onsets per minute


def recommend(scores: dict[str, dict[str, dict[str, Any]]], settings: Sequence[OnsetSetting],
              max_increase: float = MAX_FALSE_INCREASE) -> dict[str, Any] | None:
    """The lowest confidence gate whose false onsets per minute stay within ``1 + max_increase``
    times the 2-frame rule's in every condition (the most latency saved for that price).

    Only the gate as :class:`MidiNoteLogic` implements it counts (``onset_frames`` 2, the
    config's ``onset_rest_frames``, no study). None when no gate qualifies.
    """
    gates = sorted((s for s in settings if s.study is None and not s.fast_onset and s.onset_frames == 2 and s.onset_confidence is not None
                    and s.onset_rest_frames is None), key=lambda s: float(s.onset_confidence or 0.0))
    for s in gates:
        if all(rows[s.name]["false_per_min"] <= (1.0 + max_increase) * rows[OLD]["false_per_min"] + 1e-9
               for rows in scores.values() if OLD in rows and s.name in rows):
            return {"setting": s.name, "onset_confidence": s.onset_confidence,
                    "gain_ms": {c: rows[s.name]["paired_gain_ms"] for c, rows in scores.items()},
                    "rule": f"lowest gate with at most {100 * max_increase:.0f} % more false onsets per minute "
                            f"than '{OLD}' in every condition"}
    return None


# ---------------------------------------------------------------------------------- run


def run(bundle: ModelBundle | str | Path | None, data: Path, out_dir: Path, *, singers: Sequence[str] | None = None,
        max_tracks: int | None = None, quick: bool = False, plots: bool = True,
        settings: Sequence[OnsetSetting] | None = None) -> dict[str, Any]:
    """Measure every onset setting on the tracks; write ``onset_bench.json/.md`` and the plot."""
    from tqdm import tqdm

    from melodyrt.rt.engine import create_engine
    from melodyrt.rt.tracker import Tracker

    from .accuracy_bench import setting_latency_ms

    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    layout, tracks = load_tracks(data, singers, 2 if quick and not max_tracks else max_tracks)
    settings = list(settings or default_settings(quick))
    max_s = 4.0 if quick else None
    t0 = time.perf_counter()
    engine = ReplayEngine(create_engine("ort", bundle))
    bar = tqdm(total=len(tracks), desc="onset bench", unit="track", disable=quick or len(tracks) < 2)
    clips = collect(bundle, tracks, max_s, progress=lambda name: bar.update(), engine=engine)
    bar.close()
    t_model = time.perf_counter() - t0
    scores = evaluate(clips, settings)
    base = MidiConfig()
    result: dict[str, Any] = {
        "benchmark": "onset", "quick": quick, "machine": machine,
        "data": {"dir": str(data), "layout": layout, "tracks": len(tracks), "singers": list(singers or []),
                 "seconds_per_track": max_s, "names": [t.name for t in tracks][:100],
                 "seconds": {c: rows[OLD]["seconds"] if OLD in rows else None for c, rows in scores.items()}},
        "model": {"name": bundle.name, "dir": str(bundle.root), "delay_frames": bundle.delay_frames,
                  "untrained": not (bundle.meta.get("training_state") or {}).get("global_step")},
        "note_logic": {k: v for k, v in base.__dict__.items() if k in (
            "onset_frames", "onset_confidence", "onset_rest_frames", "min_note_frames", "release_frames",
            "change_frames", "hysteresis_cents", "cue_confirm_frames")},
        "settings": {s.name: {"onset_frames": s.onset_frames, "onset_confidence": s.onset_confidence,
                              "onset_rest_frames": base.onset_rest_frames if s.onset_rest_frames is None else s.onset_rest_frames,
                              "study": s.study, "fast_onset": s.fast_onset} for s in settings},
        "scores": scores,
        "recommended": recommend(scores, settings),
        "latency_on_top_ms": setting_latency_ms(Tracker(8000, bundle, engine=engine)),
        "definitions": DEFINITIONS,
        "wall_s": {"model": t_model, "total": time.perf_counter() - t0},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plots:
        result["plots"] = write_plot(result, out_dir)
    (out_dir / "onset_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "onset_bench.md").write_text(markdown(result))
    return result


DEFINITIONS = [
    "onset: a note-on with no note sounding before it; note changes are counted apart",
    f"false onset: an onset whose first {1000 * FALSE_WINDOW_S:.0f} ms overlap no voiced label within "
    f"{PITCH_TOL:g} semitone of the note ('unvoiced': no voiced label at all, else 'wrong pitch')",
    f"reference onset: start of a labelled voiced region (half a label hop before its first label); found by "
    f"the first unused note-on (onset or change) in [start - {1000 * EARLY_S:.0f} ms, min(start + "
    f"{1000 * LATE_S:.0f} ms, region end)); missed ones are 'merged' (a note sounding at the start) or 'silent'",
    "onset delay: note-on frame time - reference start, on the tracker's timestamps (its reported delay "
    "already subtracted); paired gain: mean delay saved against the 2-frame rule over the references both found",
    "re-onset: an onset on voice (not false) that matched no reference: a note that dropped out and came back",
    "shortest note: frames from note-on to note-off (notes cut by the end of a clip not counted); the logic "
    "counts a note's first frame, so min_note_frames 5 gives 4 here",
]


# ---------------------------------------------------------------------------------- report

COLUMNS = ("onsets", "false %", "false / min", "unvoiced false / unvoiced s", "re-onsets / min", "found %",
           "merged / silent", "delay ms median / mean / p90", "gain ms")


def _row(name: str, v: dict[str, Any]) -> str:
    d = v["delay_ms"]
    delay = "-" if d is None else f"{d['median']:.0f} / {d['mean']:.1f} / {d['p90']:.0f}"
    gain = "-" if v.get("paired_gain_ms") is None else f"{v['paired_gain_ms']:+.1f}"
    return (f"| {name} | {v['onsets']} | {v['false_pct']:.1f} | {v['false_per_min']:.2f} | "
            f"{v['false_unvoiced_per_unvoiced_s']:.3f} | {v['reonsets_per_min']:.2f} | {v['found_pct']:.1f} | "
            f"{v['merged']} / {v['silent']} | {delay} | {gain} |")


def data_text(result: dict[str, Any]) -> str:
    """``folder (layout, N tracks, singers ..., first S s of each)`` of a replay bench's data."""
    d = result["data"]
    return (f"{d['dir']} ({d['layout']}, {d['tracks']} tracks{', singers ' + ', '.join(d['singers']) if d['singers'] else ''}"
            f"{', first %g s of each' % d['seconds_per_track'] if d['seconds_per_track'] else ''})")


def model_text(result: dict[str, Any]) -> str:
    """``model NAME`` and a warning when it is untrained."""
    return f"model {result['model']['name']}{' (UNTRAINED: figures are meaningless)' if result['model']['untrained'] else ''}"


def table(rows: dict[str, dict[str, Any]], columns: Sequence[str], row: Callable[[str, dict[str, Any]], str]) -> list[str]:
    """A markdown table: one ``row(name, summary)`` per setting, then a blank line."""
    return ["| setting | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns),
            *[row(k, v) for k, v in rows.items()], ""]


def markdown(result: dict[str, Any]) -> str:
    d, m = result["data"], result["machine"]
    lines = [f"# melodyrt bench onset{' (quick mode)' if result['quick'] else ''}", "", machine_line(m),
             f"Data: {data_text(result)}; {model_text(result)}. "
             f"Note logic otherwise at its defaults: {result['note_logic']}.", ""]
    for cond, rows in result["scores"].items():
        secs = d["seconds"].get(cond)
        lines += [f"## {cond}" + (f" ({secs / 60:.1f} min of audio)" if secs else ""), ""] + table(rows, COLUMNS, _row)
    rec = result.get("recommended")
    if rec:
        gains = ", ".join(f"{c} {g:+.1f} ms" for c, g in rec["gain_ms"].items() if g is not None)
        lines += [f"**Recommended `onset_confidence`: {rec['onset_confidence']:g}** ({rec['rule']}; mean onset "
                  f"delay saved: {gains}).", ""]
    else:
        lines += ["No confidence gate stays within the false-onset allowance: keep the 2-frame rule.", ""]
    return "\n".join(lines + report_tail(result, "Note-on latency = onset delay")) + "\n"


def report_tail(result: dict[str, Any], latency: str) -> list[str]:
    """The last lines of a replay bench's report: ``latency`` + the latency on top, the
    definitions, the plots."""
    lines = [f"{latency} + {result['latency_on_top_ms']:.1f} ms (algorithmic delay + mean hop wait + one "
             "128-frame block at 48 kHz).", "", "Definitions:", ""]
    lines += [f"- {x}" for x in result["definitions"]]
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return lines


def panels(result: dict[str, Any], width: float = 6.5) -> tuple[Any, list[tuple[Any, str]]]:
    """A matplotlib figure (Agg) with one panel per condition of ``result["scores"]``:
    ``(figure, [(axes, condition), ...])``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(result["scores"])
    fig, axes = plt.subplots(1, len(conds), figsize=(width * len(conds), 4.8), squeeze=False)
    return fig, list(zip(axes[0], conds))


def write_plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    """False onsets per minute against mean onset delay, one panel per condition."""
    fig, axes = panels(result)
    for ax, cond in axes:
        rows = result["scores"][cond]
        families: dict[str, list[tuple[float, float, str]]] = {}
        for name, v in rows.items():
            if v["delay_ms"] is None:
                continue
            st = result["settings"][name]
            fam = ("gate (rest default)" if st["study"] is None and st["onset_confidence"] is not None
                   and ", rest" not in name else f"study: {st['study']}" if st["study"] else
                   "gate, other rest" if st["onset_confidence"] is not None else "fixed frames")
            families.setdefault(fam, []).append((v["delay_ms"]["mean"], v["false_per_min"], name))
        for fam, pts in families.items():
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, "o-" if fam.startswith(("gate (", "study")) else "s", label=fam, ms=5)
            for x, y, n in pts:
                ax.annotate(n.replace("study: ", "").replace("gate conf ", "c"), (x, y), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("mean onset delay after the labelled voicing start [ms] (timestamps)")
        ax.set_ylabel("false onsets per minute")
        ax.set_title(f"{cond}: false onsets vs onset delay")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, out_dir, "onset_tradeoff.png")]

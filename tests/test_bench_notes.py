"""`melodyrt bench notes`: the metrics on constructed clips, then `--quick` on two MIR-1K clips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from melodyrt.bench import notechange_bench as nb
from melodyrt.bench import onset_bench as ob
from melodyrt.rt.cli import main
from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.midi_out import MidiConfig

DATA = Path(os.environ.get("MELODYRT_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k")
MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "rt"
OLD = MidiConfig(jump_cents=None)


def clip(label_midi: list[float], track: list[tuple[float, float] | None]) -> ob.Clip:
    """A clip with MIR-1K-style labels (20 ms hop, label i at 0.02 (i + 1) s) and 10 ms frames."""
    fr = []
    for k, item in enumerate(track):
        m, c = item if item is not None else (0.0, 0.05)
        f0 = 440.0 * 2.0 ** ((m - 69.0) / 12.0) if item is not None else 0.0
        fr.append(PitchFrame(k, k * 80, k * 0.01, f0, item is not None, c, -20.0))
    lt = 0.02 * (np.arange(len(label_midi)) + 1)
    return ob.Clip("c", "voice", fr, np.zeros(len(fr)), lt, np.asarray(label_midi, float), len(track) * 0.01)


def test_step_delay_against_the_f0_and_the_old_rule():
    # labels: silence, 60 from label 5 (0.12 s), a step to 64 at label 25 (half-way: 0.51 s), silence
    labels = [0.0] * 5 + [60.0] * 20 + [64.0] * 20 + [0.0] * 5
    # frames: the tracker follows the labels one frame late, confidently
    track: list[tuple[float, float] | None] = [None] * 12 + [(60.0, 0.9)] * 40 + [(64.0, 0.9)] * 40 + [None] * 8
    c = clip(labels, track)
    steps = nb.label_steps(c)
    assert [(round(s.time, 3), s.size) for s in steps] == [(0.51, 4.0)]
    f0 = nb.step_delays(c, nb.f0_sounding(c.frames))
    assert f0 == [pytest.approx(0.01)]                        # the f0 reaches 64 at frame 52 (0.52 s)
    for cfg, delay in ((OLD, 0.03), (MidiConfig(), 0.01)):    # old: 2 more frames; fast path: with the f0
        notes, sounding = ob.replay(c.frames, cfg)
        sc = nb.score_clip(c, notes, sounding)
        assert sc["step_delays"] == [pytest.approx(delay)] and sc["f0_delays"] == f0
        assert sc["changes"] == 1 and sc["stepped"] == 1 and sc["steady"] == sc["silence"] == 0
        assert sc["wrong_pitch"] == 0 and sc["short_notes"] == sc["bounces"] == 0
    # a 2-semitone step: the bend gets there with the f0, under either rule
    c2 = clip([0.0] * 5 + [60.0] * 20 + [62.0] * 20 + [0.0] * 5,
              [None] * 12 + [(60.0, 0.9)] * 40 + [(62.0, 0.9)] * 40 + [None] * 8)
    for cfg in (OLD, MidiConfig()):
        notes, sounding = ob.replay(c2.frames, cfg)
        assert nb.score_clip(c2, notes, sounding)["step_delays"] == [pytest.approx(0.01)]
    # never reached (the tracker stays on the old note): missed
    c3 = clip(labels, [None] * 12 + [(60.0, 0.9)] * 80 + [None] * 8)
    notes, sounding = ob.replay(c3.frames, MidiConfig())
    assert nb.score_clip(c3, notes, sounding)["step_delays"] == [None]


def test_spurious_wrong_pitch_bounces_and_vibrato():
    # labels: one held note with vibrato of +-40 cents for 1 s
    lab = [0.0] * 5 + [60.0 + 0.4 * np.sin(2 * np.pi * 5.5 * 0.02 * i) for i in range(50)] + [0.0] * 5
    # frames: the tracker jumps an octave up for 6 frames (confidently), then back
    track: list[tuple[float, float] | None] = [None] * 12 + [(60.0, 0.9)] * 40 + [(72.0, 0.9)] * 6 + [(60.0, 0.9)] * 50 + [None] * 12
    c = clip(lab, track)
    held, vib = nb.held_labels(c)
    assert held.sum() > 30 and vib.sum() > 30
    notes, sounding = ob.replay(c.frames, MidiConfig())
    sc = nb.score_clip(c, notes, sounding)
    assert [n.note for n in notes] == [60, 72, 60]
    assert sc["changes"] == 2 and sc["steady"] == 2 and sc["wrong_pitch"] == 1
    assert sc["vibrato_changes"] == 2 and sc["short_notes"] == 0      # 6 frames: not short
    # a 2-frame octave blip with jump_min_frames 1: a short note that bounces back
    blip = clip(lab, [None] * 12 + [(60.0, 0.9)] * 40 + [(72.0, 0.9)] * 2 + [(60.0, 0.9)] * 54 + [None] * 12)
    cfg = MidiConfig(jump_min_frames=1)
    notes, sounding = ob.replay(blip.frames, cfg)
    sc = nb.score_clip(blip, notes, sounding)
    assert [n.note for n in notes] == [60, 72, 60] and sc["short_notes"] == 1 and sc["bounces"] == 1
    assert nb.score_clip(blip, *ob.replay(blip.frames, MidiConfig()))["bounces"] == 0   # min_note_frames holds


def test_evaluate_and_recommend():
    labels = [0.0] * 5 + [60.0] * 20 + [64.0] * 20 + [0.0] * 5
    clips = [clip(labels, [None] * 12 + [(60.0, 0.9)] * 40 + [(64.0, conf)] * 40 + [None] * 8) for conf in (0.3, 0.6, 0.95)]
    settings = [nb.NoteSetting(nb.OLD, nb.OLD_RULE), nb.jump_setting(250, 1, 0.5, None), nb.jump_setting(250, 1, 0.9, None)]
    res = nb.evaluate(clips, settings)
    rows = res["voice"]
    assert rows[nb.OLD]["paired_gain_ms"] == 0.0
    assert rows[settings[1].name]["paired_gain_ms"] == pytest.approx(20.0 * 2 / 3)   # two clips of three 2 frames sooner
    assert rows[settings[2].name]["paired_gain_ms"] == pytest.approx(20.0 / 3)
    assert rows[nb.OLD]["f0_delay_ms"]["mean"] == pytest.approx(10.0)
    rec = nb.recommend(res, settings)
    assert rec["setting"] == settings[1].name and rec["overrides"]["jump_confidence"] == 0.5
    rows[settings[1].name]["spurious_per_min"] = 1.2 * rows[nb.OLD]["spurious_per_min"] + 1.0   # over the allowance
    assert nb.recommend(res, settings)["setting"] == settings[2].name
    rows[settings[2].name]["bounces_per_min"] = 0.5                                          # chatter: never
    assert nb.recommend(res, settings) is None or nb.recommend(res, settings)["setting"] == nb.OLD


def test_notes_quick_on_two_clips(tmp_path):
    if not (DATA / "audio").is_dir():
        pytest.skip(f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
    if not (MODEL / "model.json").is_file():
        pytest.skip("no trained model in model/weights/rt")
    out = tmp_path / "notes"
    code = main(["bench", "notes", "--quick", "--model", str(MODEL), "--data", str(DATA), "--singers", "--out", str(out)])
    assert code == 0
    r = json.loads((out / "notes_bench.json").read_text())
    assert r["data"]["tracks"] == 2 and all(n.split("_")[0] in ("Kenshin", "annar") for n in r["data"]["names"])
    assert Path(r["model"]["dir"]) == MODEL and not r["model"]["untrained"]
    assert set(r["scores"]) == {"mix", "voice", "synthetic"}
    names = [s.name for s in nb.default_settings(quick=True)]
    for cond, rows in r["scores"].items():
        assert list(rows) == names
        for v in rows.values():
            assert v["steady"] + v["silence"] == v["spurious"] <= v["changes"]
            assert v["found"] <= v["steps"] and sum(x["steps"] for x in v["by_size"].values()) == v["steps"]
        assert rows[nb.OLD]["short_notes"] == rows[nb.OLD]["bounces"] == 0
    assert r["scores"]["synthetic"][nb.OLD]["steps"] > 0 and r["data"]["synthetic_phrases"] == 6
    assert r["latency_on_top_ms"] > 20
    md = (out / "notes_bench.md").read_text()
    assert "spurious change:" in md and f"| {nb.OLD} |" in md
    assert (out / "notes_tradeoff.png").stat().st_size > 10_000

"""`melodyrt bench onset`: the metrics on constructed clips, then `--quick` on two MIR-1K clips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from melodyrt.bench import onset_bench as ob
from melodyrt.rt.cli import main
from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.midi_out import MidiConfig

DATA = Path(os.environ.get("MELODYRT_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k")
MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "rt"


def clip(label_midi: list[float], track: list[tuple[float, float] | None]) -> ob.Clip:
    """A clip with MIR-1K-style labels (20 ms hop, label i at 0.02 (i + 1) s) and 10 ms frames."""
    fr = []
    for k, item in enumerate(track):
        m, c = item if item is not None else (0.0, 0.05)
        f0 = 440.0 * 2.0 ** ((m - 69.0) / 12.0) if item is not None else 0.0
        fr.append(PitchFrame(k, k * 80, k * 0.01, f0, item is not None, c, -20.0))
    lt = 0.02 * (np.arange(len(label_midi)) + 1)
    return ob.Clip("c", "voice", fr, np.array([f.confidence for f in fr]), lt, np.asarray(label_midi, float),
                   len(track) * 0.01)


def test_metrics_on_a_constructed_clip():
    # labels: label 10 (at 0.22 s) is the first voiced one, so the region starts at 0.21 s; 60 until 0.61 s
    labels = [0.0] * 10 + [60.0] * 20 + [0.0] * 20
    # frames: a blip at 0.05 s (silence in the labels), the sung note from 0.23 s on, then silence
    track: list[tuple[float, float] | None] = [None] * 5 + [(72.0, 0.9)] + [None] * 17 + [(60.2, 0.9)] * 35 + [None] * 43
    c = clip(labels, track)
    assert c.regions == [pytest.approx((0.21, 0.61))]
    assert c.unvoiced_s == pytest.approx(0.6)
    notes = ob.play(c.frames, MidiConfig())
    assert [(n.note, round(n.on, 2), n.change) for n in notes] == [(72, 0.05, False), (60, 0.23, False)]
    assert ob.classify_onset(c, notes[0]) == "unvoiced" and ob.classify_onset(c, notes[1]) == "ok"
    sc = ob.score_clip(c, notes)
    assert sc["false_unvoiced"] == 1 and sc["false_pitch"] == 0 and sc["reonsets"] == 0
    assert sc["found"] == 1 and sc["region_delays"] == [pytest.approx(0.02)]
    assert sc["shortest_note_frames"] == 4
    old = ob.score_clip(c, ob.play(c.frames, MidiConfig(onset_confidence=None)))
    assert old["onsets"] == 1 and old["region_delays"] == [pytest.approx(0.03)]   # the 2-frame rule: 10 ms later
    # a note at the wrong pitch: false ("pitch"), still finds the reference onset
    wrong = clip(labels, [None] * 23 + [(63.0, 0.9)] * 35 + [None] * 43)
    sc = ob.score_clip(wrong, ob.play(wrong.frames, MidiConfig()))
    assert sc["false_pitch"] == 1 and sc["found"] == 1
    # nothing sung: missed ("silent"); a note held over from before the region: missed ("merged")
    assert ob.score_clip(c, [])["silent"] == 1
    held = ob.Note(60, 0.1, 0.5, 10, 50, change=False)
    assert ob.score_clip(c, [held])["merged"] == 1


def test_evaluate_pairs_delays_and_recommend_picks_the_lowest_allowed_gate():
    labels = [0.0] * 10 + [60.0] * 20 + [0.0] * 20
    clips = [clip(labels, [None] * 23 + [(60.0, conf)] * 35 + [None] * 43) for conf in (0.45, 0.65, 0.95)]
    settings = [ob.OnsetSetting(ob.OLD, 2, None), ob.OnsetSetting("g0.5", 2, 0.5), ob.OnsetSetting("g0.9", 2, 0.9)]
    res = ob.evaluate(clips, settings)
    rows = res["voice"]
    assert rows[ob.OLD]["paired_gain_ms"] == 0.0
    assert rows["g0.5"]["paired_gain_ms"] == pytest.approx(10.0 * 2 / 3)    # two clips of three fire a frame early
    assert rows["g0.9"]["paired_gain_ms"] == pytest.approx(10.0 / 3)
    assert all(r["false"] == 0 for r in rows.values())
    assert ob.recommend(res, settings)["onset_confidence"] == 0.5
    rows["g0.5"]["false_per_min"] = 1.2 * rows[ob.OLD]["false_per_min"] + 1.0   # over the allowance
    assert ob.recommend(res, settings)["onset_confidence"] == 0.9


def test_onset_quick_on_two_clips(tmp_path):
    if not (DATA / "audio").is_dir():
        pytest.skip(f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
    if not (MODEL / "model.json").is_file():
        pytest.skip("no trained model in model/weights/rt")
    out = tmp_path / "onset"
    code = main(["bench", "onset", "--quick", "--model", str(MODEL), "--data", str(DATA), "--singers", "--out", str(out)])
    assert code == 0
    r = json.loads((out / "onset_bench.json").read_text())
    assert r["data"]["tracks"] == 2 and all(n.split("_")[0] in ("Kenshin", "annar") for n in r["data"]["names"])
    assert Path(r["model"]["dir"]) == MODEL and not r["model"]["untrained"]
    assert set(r["scores"]) == {"mix", "voice"}
    names = [ob.OLD, "1 frame", "gate conf 0.5", "gate conf 0.7", ob.FAST]
    for rows in r["scores"].values():
        assert list(rows) == names
        for name, v in rows.items():
            assert v["false_unvoiced"] + v["false_pitch"] == v["false"] and v["false"] + v["reonsets"] <= v["onsets"]
            assert v["found"] + v["merged"] + v["silent"] == v["references"] > 0
            assert 0 <= v["false_pct"] <= 100
            # min_note_frames 5, first frame counted; a cue's note that its first voiced frame
            # moves to another semitone may end on that frame
            shortest = 1 if name == ob.FAST else 4
            assert v["shortest_note_frames"] is None or v["shortest_note_frames"] >= shortest
    assert r["settings"]["gate conf 0.7"]["onset_confidence"] == 0.7
    assert r["settings"][ob.FAST]["fast_onset"] is True and r["settings"]["gate conf 0.7"]["fast_onset"] is False
    # the onset cues start the voice's notes sooner than the same gate on the frames alone
    voice = r["scores"]["voice"]
    assert voice[ob.FAST]["delay_ms"]["mean"] < voice["gate conf 0.7"]["delay_ms"]["mean"] - 5.0
    assert r["latency_on_top_ms"] > 20
    md = (out / "onset_bench.md").read_text()
    assert "false onset:" in md and "| 2 frames (old) |" in md
    assert (out / "onset_tradeoff.png").stat().st_size > 10_000

"""`melodyrt bench accuracy --quick` on two MIR-1K clips with the untrained bundle (machinery only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from melodyrt.rt.cli import main

DATA = Path(os.environ.get("MELODYRT_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k")


@pytest.fixture
def mir1k() -> Path:
    if not (DATA / "audio").is_dir():
        pytest.skip(f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
    return DATA


def test_accuracy_quick_scores_mix_and_voice_with_a_sweep(untrained_bundle, mir1k, tmp_path):
    out = tmp_path / "acc"
    code = main(["bench", "accuracy", "--quick", "--model", str(untrained_bundle.root), "--data", str(mir1k),
                 "--singers", "--out", str(out)])
    assert code == 0
    r = json.loads((out / "accuracy_bench.json").read_text())
    assert r["data"]["tracks"] == 2 and r["data"]["layout"] == "mir1k"
    assert all(n.split("_")[0] in ("Kenshin", "annar") for n in r["data"]["names"])
    assert set(r["scores"]) == {"mix", "voice"}
    for cond in r["scores"].values():
        assert set(cond) == {"default", "median 5", "on_frames 2"}
        for s in cond.values():
            assert set(s) == {"VR", "VFA", "RPA", "RCA", "OA"} and all(0 <= v <= 100 for v in s.values())
    for cond, rows in r["onsets"].items():
        assert set(rows) == {"default", "median 5", "on_frames 2"}
        assert all(o["onsets"] > 0 and 0 <= o["missed_pct"] + o["bridged_pct"] <= 100 for o in rows.values())
    lat = r["latency_ms"]
    assert lat["median 5"] == pytest.approx(lat["default"] + 20.0) and lat["on_frames 2"] == pytest.approx(lat["default"] + 10.0)
    assert (out / "accuracy_vs_latency.png").is_file()
    assert "UNTRAINED" in (out / "accuracy_bench.md").read_text()


def test_replayed_salience_gives_the_engine_frames(untrained_bundle, song_8k):
    """The sweep's replay engine: same frames as running the network."""
    import numpy as np

    from melodyrt.bench.accuracy_bench import ReplayEngine
    from melodyrt.rt.engine import create_engine
    from melodyrt.rt.tracker import Tracker, transcribe_signal

    x = song_8k.audio[:16000]
    direct = transcribe_signal(x, 8000, tracker=Tracker(8000, untrained_bundle, "ort")).frames
    replay = ReplayEngine(create_engine("ort", untrained_bundle))
    transcribe_signal(x, 8000, tracker=Tracker(8000, untrained_bundle, engine=replay))
    replay.recording = False
    again = transcribe_signal(x, 8000, tracker=Tracker(8000, untrained_bundle, engine=replay)).frames
    assert np.array_equal([f.f0_hz for f in direct], [f.f0_hz for f in again])
    assert [f.voiced for f in direct] == [f.voiced for f in again]


def test_onset_lags_match_late_bridged_and_missed_onsets():
    import numpy as np

    from melodyrt.bench.accuracy_bench import onset_lags, onset_summary

    t = np.arange(300) * 0.01
    f0 = np.zeros(300)
    for a, b in ((50, 80), (120, 150), (200, 240)):
        f0[a:b] = 220.0
    v = np.zeros(300, bool)
    v[53:80] = True          # 30 ms late
    v[100:150] = True        # voiced through the second rest: bridged
    # third note: never voiced -> missed
    r = onset_lags(t, f0, t, v)
    assert r["lags_ms"] == [pytest.approx(30.0)] and r["bridged"] == 1 and r["missed"] == 1
    s = onset_summary([r, onset_lags(t, f0, t - 0.02, v)])   # second copy: output 20 ms earlier
    assert s["onsets"] == 6 and s["lag_p50_ms"] == pytest.approx(20.0)
    assert s["missed_pct"] == pytest.approx(100 / 3) and s["bridged_pct"] == pytest.approx(100 / 3)

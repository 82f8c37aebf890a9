"""`melodyrt bench latency` and `bench --check` in quick mode: report fields and exit codes, no timing asserts."""

from __future__ import annotations

import json

import yaml

from melodyrt.rt.cli import main


def test_latency_quick_reports_stages_and_check_exit_codes(untrained_bundle, tmp_path, capsys):
    out = tmp_path / "lat"
    loose = tmp_path / "loose.yaml"
    loose.write_text(yaml.safe_dump({"e2e_note_on_p50_ms": 1e6, "hop_compute_p99_ms": 1e6, "cfp_hop_p99_ms": 1e6,
                                     "offline_cfp_min_x_realtime": 30}))
    code = main(["bench", "latency", "--quick", "--model", str(untrained_bundle.root), "--out", str(out),
                 "--check", "--budget", str(loose)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| e2e_note_on_p50_ms |" in printed and "within budget" in printed and "not measured here" in printed

    r = json.loads((out / "latency_bench.json").read_text())
    assert r["quick"] is True and r["settings"]["hops"] == 300 and r["settings"]["rate"] == 48000
    alg = r["algorithmic"]
    assert alg["audio_buffering"]["samples"] == 128 and alg["cfp_window"]["ms"] > 0 and alg["resampler"]["ms"] > 0
    for stage in ("resample", "cfp", "engine", "decode", "sinks", "hop_total"):
        s = r["compute"][stage]
        assert 0 <= s["p50_ms"] <= s["p99_ms"] <= s["p99.9_ms"] <= s["max_ms"]
    assert r["compute"]["hop_total"]["n"] == 300
    assert r["deadline"]["misses"] >= 0 and "hop_total_std_ms" in r["jitter"]
    assert r["machine"]["cpu_model"]
    for png in ("latency_stages.png", "latency_hist.png"):
        assert (out / png).stat().st_size > 1000

    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump({"e2e_note_on_p50_ms": 15, "hop_compute_p99_ms": 1e-9}))
    code = main(["bench", "--check", "--quick", "--model", str(untrained_bundle.root), "--out", str(out), "--budget", str(tight)])
    assert code == 1
    cap = capsys.readouterr()
    assert "over budget: hop_compute_p99_ms" in cap.err
    # the design's CFP window alone is over the 15 ms goal: the report names it
    assert "CFP window's effective delay alone" in cap.out
    assert "Budget check" in (out / "latency_bench.md").read_text()

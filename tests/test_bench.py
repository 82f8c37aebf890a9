"""The benchmark machinery in quick mode: reports exist with sane fields. No timing asserts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from melodyrt.bench.cfp_bench import BUDGET_FILE, check_budget, load_budget, measured_for_budget
from melodyrt.rt.cli import main


def test_quick_bench_writes_reports_and_check_flags_budget(tmp_path, capsys):
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(yaml.safe_dump({"cfp_hop_p99_ms": 1e-9, "offline_cfp_min_x_realtime": 1e12}))
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    out = tmp_path / "bench"
    code = main(["bench", "cfp", "--quick", "--out", str(out), "--check", "--budget", str(impossible)])
    assert code == 1, "an impossible budget must fail --check"
    err = capsys.readouterr().err
    assert "over budget: cfp_hop_p99_ms" in err and "offline_cfp_min_x_realtime" in err
    if affinity is not None:
        assert os.sched_getaffinity(0) == affinity, "CPU pinning must be undone"

    result = json.loads((out / "cfp_bench.json").read_text())
    assert result["quick"] is True
    for window in ("symmetric", "asymmetric", "multires"):
        stats = result["cfp_hop"][window]
        assert stats["n"] == 300
        assert 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["p99.9_ms"] <= stats["max_ms"]
    assert result["cfp_hop"]["symmetric"]["latency_samples"] == 384
    multires = result["cfp_hop"]["multires"]
    assert multires["latency_samples"] == 52 and multires["low_rows_latency_samples"] == 167
    assert result["offline_multires"]["frames"] == 200
    assert result["resampler"]["latency_samples"] > 0 and result["resampler_plus_cfp"]["n"] == 300
    assert result["offline"]["x_realtime"] > 0 and result["offline"]["frames"] == 200
    machine = result["machine"]
    assert machine["cpu_model"] and machine["cores_logical"] >= 1 and "numpy" in machine["libraries"]

    report = (out / "cfp_bench.md").read_text()
    assert "quick mode" in report and machine["cpu_model"] in report and "x real time" in report

    generous = {key: (1e9 if not key.endswith("_min_x_realtime") else 0.0) for key in measured_for_budget(result)}
    assert check_budget(result, generous) == []


#: Budget keys of benches with their own tests (soak).
OTHER_BENCH_KEYS = {k for k in load_budget(BUDGET_FILE) if k.startswith("soak_")}


def test_budget_file_names_only_measured_figures():
    budget = load_budget(BUDGET_FILE)
    assert budget["cfp_hop_p99_ms"] == 0.3
    fake = {
        "cfp_hop": {w: {"p99_ms": 0.0, "p99.9_ms": 0.0} for w in ("symmetric", "asymmetric")},
        "resampler": {"p99_ms": 0.0},
        "resampler_plus_cfp": {"p99_ms": 0.0},
        "offline": {"x_realtime": 1e9},
    }
    from melodyrt.bench.e2e_bench import measured_for_budget as e2e_measured
    from melodyrt.bench.latency_bench import measured_for_budget as latency_measured

    lat = {"algorithmic": {k: {"ms": 0.0} for k in ("resampler", "cfp_window", "model_look_ahead", "decoder_smoothing",
                                                    "hop_wait_worst", "audio_buffering")},
           "compute": {k: {"p99_ms": 0.0, "p99.9_ms": 0.0} for k in ("hop_total", "cfp", "engine", "decode", "resample", "sinks")},
           "deadline": {"miss_percent": 0.0}, "e2e_estimate": {"p50_ms": 0.0, "p99_ms": 0.0}}
    e2e = {"latency": {"midi_note_on": {"p50_ms": 0.0, "p99_ms": 0.0, "slope_ms_per_min": 0.0}}}
    measured = set(measured_for_budget(fake)) | set(latency_measured(lat)) | set(e2e_measured(e2e))
    assert set(budget) <= measured | OTHER_BENCH_KEYS, "every budget item is measured somewhere"
    assert Path(BUDGET_FILE).parent.name == "bench"


def test_engine_bench_quick_reports_every_backend(untrained_bundle, tmp_path):
    from melodyrt.bench.engine_bench import run

    result = run(str(untrained_bundle.root), tmp_path, quick=True, batches=(1, 4))
    rows = result["rows"]
    timed = [r for r in rows if "skipped" not in r]
    assert {(r["backend"], r["batch"]) for r in timed} >= {("ort fp32", 1), ("ort fp32", 4)}
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in timed)
    names = {r["backend"] for r in rows}
    assert "tensorrt" in names  # measured or skipped with a reason, never silently absent
    md = (tmp_path / "engine_bench.md").read_text()
    assert "ort fp32" in md and result["machine"]["cpu_model"] in md

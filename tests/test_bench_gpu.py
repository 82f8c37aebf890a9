"""`melodyrt bench gpu`: here (no TensorRT, no GPU) it says why and exits 0, or 3 with --strict."""

from __future__ import annotations

import json

from melodyrt.bench.gpu_bench import batches_up_to, capacity
from melodyrt.rt.cli import main
from melodyrt.rt.trt_engine import tensorrt_available


def test_gpu_bench_reports_why_it_cannot_run(tmp_path, capsys):
    ok, why = tensorrt_available()
    if ok:
        import pytest

        pytest.skip("a GPU with TensorRT is here: the full benchmark is for a manual run")
    out = tmp_path / "gpu"
    assert main(["bench", "gpu", "--quick", "--out", str(out)]) == 0
    assert why in capsys.readouterr().out
    r = json.loads((out / "gpu_bench.json").read_text())
    assert r["available"] is False and r["reason"] == why
    assert main(["bench", "gpu", "--quick", "--strict", "--out", str(out)]) == 3


def test_capacity_from_step_times():
    rows = [{"batch": b, "p99_ms": 1.0 + 0.1 * b} for b in batches_up_to(64)]
    assert batches_up_to(64) == [1, 2, 4, 8, 16, 32, 64]
    assert capacity(rows) == 64 and capacity(rows, per_stream_cpu_ms=0.3) == 16
    assert capacity([{"batch": 1, "p99_ms": 11.0}]) == 0

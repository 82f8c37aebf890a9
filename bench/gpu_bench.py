"""``melodyrt bench gpu``: TensorRT FP16 step time per batch and multi-stream capacity.

Where TensorRT and a CUDA GPU exist (:func:`melodyrt.rt.trt_engine.tensorrt_available`): the
FP16 engine's step time for batch 1..N (each batch row is one singer's stream with its own
state), and the capacity: the largest number of concurrent streams whose batched step holds
the 10 ms hop deadline at p99, on the GPU alone and with each stream's CFP (measured per hop
on this CPU) done serially on one core. Elsewhere it writes a report that says it cannot run
and why, and exits 0 (``--strict``: exit 3).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .cfp_bench import machine_info

HOP_MS = 10.0
EXIT_UNAVAILABLE = 3


def batches_up_to(n: int) -> list[int]:
    out, b = [], 1
    while b < n:
        out.append(b)
        b *= 2
    return out + [n]


def capacity(rows: list[dict[str, Any]], per_stream_cpu_ms: float = 0.0, deadline_ms: float = HOP_MS) -> int:
    """Largest batch whose step p99 (+ serial per-stream CPU work) fits the deadline; 0 if none."""
    ok = [r["batch"] for r in rows if r["p99_ms"] + r["batch"] * per_stream_cpu_ms <= deadline_ms]
    return max(ok, default=0)


def run(bundle_dir: str | None, out_dir: Path, max_batch: int = 64, steps: int = 2000, quick: bool = False) -> dict[str, Any]:
    from melodyrt.rt.trt_engine import tensorrt_available

    out_dir.mkdir(parents=True, exist_ok=True)
    ok, why = tensorrt_available()
    result: dict[str, Any] = {"benchmark": "gpu", "quick": quick, "machine": machine_info(), "available": ok,
                              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if not ok:
        result["reason"] = why
    else:
        from melodyrt.rt.bundle import load_bundle
        from melodyrt.rt.trt_engine import TrtEngine

        from .cfp_bench import BenchSettings, bench_cfp_hops
        from .engine_bench import real_frames, time_engine

        bundle = load_bundle(bundle_dir)
        engine = TrtEngine(bundle, max_batch=max_batch, opt_batch=1)
        frames = real_frames(bundle, 2000)
        rows = []
        for b in batches_up_to(max_batch):
            r = time_engine(engine, frames, b, steps if b <= 8 else max(200, steps // 4), 20 if quick else 200)
            rows.append({"batch": b, **r})
        from melodyrt.rt.synth import sung_melody

        cfp = bench_cfp_hops(bundle.cfp, sung_melody(sr=8000, seed=0).audio, BenchSettings.quick() if quick else BenchSettings())
        result.update({
            "device": engine.device, "model": bundle.name, "precision": "fp16", "steps": rows,
            "cfp_hop_p99_ms": cfp["p99_ms"],
            "capacity_gpu_only": capacity(rows),
            "capacity_with_cfp_on_one_core": capacity(rows, cfp["p99_ms"]),
        })
    (out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "gpu_bench.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# melodyrt bench gpu", "", f"Machine: {m['cpu_model']}, {m['cores_usable']}/{m['cores_logical']} cores"]
    if not result["available"]:
        return "\n".join(lines + ["", f"Cannot run here: {result['reason']}. The GPU benchmark needs TensorRT >= 10, "
                                  "cuda-python and a CUDA GPU (pip install 'melodyrt[tensorrt]')."]) + "\n"
    lines += [f"GPU: {result['device']}; model {result['model']}, TensorRT FP16", "",
              "| batch (streams) | p50 ms | p99 ms | p99.9 ms | max ms |", "|---:|---:|---:|---:|---:|"]
    for r in result["steps"]:
        lines.append(f"| {r['batch']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p99.9_ms']:.3f} | {r['max_ms']:.3f} |")
    lines += ["", f"Streams holding the {HOP_MS:g} ms hop at p99: {result['capacity_gpu_only']} (GPU step alone), "
              f"{result['capacity_with_cfp_on_one_core']} with every stream's CFP (p99 {result['cfp_hop_p99_ms']:.3f} ms) "
              "on one CPU core."]
    return "\n".join(lines) + "\n"

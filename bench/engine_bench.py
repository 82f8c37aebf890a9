"""Engine step time per backend and batch size, FP32 vs FP16 on ONNX Runtime.

Each figure is a distribution of per-call times of ``engine.step`` on real CFP frames of
the bundled sung melody, after a warm-up; nothing is a single number.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from melodyrt.rt.bundle import ModelBundle, load_bundle
from melodyrt.rt.cfp import cfp_from_signal
from melodyrt.rt.engine import OrtEngine, available_backends, create_engine
from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.synth import sung_melody

from .cfp_bench import machine_info, summarise


def real_frames(bundle: ModelBundle, n: int) -> np.ndarray:
    """``n`` normalised CFP frames (n, 3, 360) of the bundled melody, looped."""
    song = sung_melody(sr=bundle.cfp.sample_rate, seed=0)
    frames = cfp_from_signal(song.audio, bundle.cfp, bundle.norm, bundle.stats)
    return np.resize(frames, (n, 3, 360)).astype(np.float32)


def time_engine(engine: Any, frames: np.ndarray, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Per-step times of ``engine`` stepping ``batch`` streams."""
    state = engine.new_state(batch)
    idx = np.arange(batch)
    clock = time.perf_counter_ns
    ns = np.empty(steps, np.int64)
    for i in range(warmup + steps):
        x = frames[(i + idx) % frames.shape[0]]
        t0 = clock()
        engine.step(x, state)
        if i >= warmup:
            ns[i - warmup] = clock() - t0
    return summarise(ns)


def run(bundle_dir: str | None, out_dir: Path, steps: int = 10000, batches: tuple[int, ...] = (1, 16, 64),
        quick: bool = False) -> dict[str, Any]:
    """Measure every backend present; write ``engine_bench.json`` and ``.md`` to ``out_dir``."""
    bundle = load_bundle(bundle_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = real_frames(bundle, 2000)
    warmup = 20 if quick else 200
    rows: list[dict[str, Any]] = []
    engines: list[tuple[str, Any]] = [("ort fp32", OrtEngine(bundle, precision="fp32"))]
    try:
        engines.append(("ort fp16", OrtEngine(bundle, precision="fp16")))
    except MelodyRTError as exc:
        rows.append({"backend": "ort fp16", "skipped": str(exc)})
    avail = available_backends()
    for name in ("tensorrt", "torch"):
        if avail[name]:
            engines.append((name, create_engine(name, bundle)))
        else:
            rows.append({"backend": name, "skipped": f"{name} not available here"})
    for label, eng in engines:
        eng.warmup()
        for b in batches:
            # Large batches cost more per call; scale the count so a run stays bounded.
            n = max(50, steps // max(1, b // 4)) if not quick else 30
            if label == "torch":
                n = min(n, 300)
            s = time_engine(eng, frames, b, n, warmup)
            rows.append({"backend": label, "batch": b, **s, "per_stream_p50_ms": s["p50_ms"] / b})
    result = {"benchmark": "engine", "quick": quick, "model": bundle.name, "bundle": str(bundle.root),
              "machine": machine_info(), "rows": rows, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out_dir / "engine_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "engine_bench.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Engine step time: {result['model']}", "",
             f"Machine: {m['cpu_model']}, {m['cores_usable']} usable cores, load {m['load_avg_1min']:.2f} (1 min), "
             f"onnxruntime {m['libraries'].get('onnxruntime', '?')}. Times per `engine.step` call, all streams of the batch.",
             "" if not result["quick"] else "**Quick mode: checks the machinery, says nothing about speed.**", "",
             "| backend | batch | p50 ms | p99 ms | p99.9 ms | max ms | per stream p50 ms | n |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | - | skipped: {r['skipped']} | | | | | |")
        else:
            lines.append(f"| {r['backend']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p99.9_ms']:.3f} | "
                         f"{r['max_ms']:.3f} | {r['per_stream_p50_ms']:.4f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def pin_one_cpu() -> None:
    """Time on one core, as the budget says ("on one core")."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

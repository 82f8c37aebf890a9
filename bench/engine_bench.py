"""Engine step time per backend and batch size, FP32 vs FP16 on ONNX Runtime.

Each figure is a distribution of per-call times of ``engine.step`` on real CFP frames of
the bundled sung melody, after a warm-up; nothing is a single number.

:func:`precision_study` (``python -m melodyrt.bench.engine_bench precision --data DIR``)
asks what faster arithmetic buys the step: the bundle's FP32 and FP16 files and three int8
copies of the FP32 step (:func:`melodyrt.model.size_sweep.quantize_step`: dynamic, static
QDQ and static QOperator, calibrated on CFP frames of every third validation clip), each
in a temporary bundle folder run by :class:`OrtEngine`. It reports

- step time, interleaved A/B in one process (blocks of steps, the engine order reversed
  every round, one core): p50/p99 wall and thread-CPU time and their ratios to FP32;
- accuracy through the streaming tracker on the MIR-1K validation singers, 0 dB mix
  (L+R) and voice (R), pooled mir_eval VR/VFA/RPA/RCA/OA, with the ``melodyrt eval``
  decision (p(voiced) > 0.5) and the live decoder's hysteresis;
- equivalence with FP32 on whole clips (salience max/mean abs difference, voicing
  agreement, pitch within 50 cents), and over one long stream (every calibration clip
  back to back, 8-9 minutes) the worst difference per minute: quantized carries and
  window sums would show as a difference that grows along the stream;
- optionally (``--torch``) the torch reference step in FP32, BF16 weights and BF16
  autocast, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from melodyrt.rt.bundle import METADATA_FILE, ModelBundle, load_bundle, sha256_of
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
    return _save(out_dir, "engine_bench", result, markdown(result))


def _save(out_dir: Path, stem: str, result: dict[str, Any], md: str) -> dict[str, Any]:
    """Write ``<stem>.json`` and ``<stem>.md`` to ``out_dir``; returns ``result``."""
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(md)
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


@contextlib.contextmanager
def pinned(enabled: bool = True) -> Iterator[None]:
    """Pin to one core (:func:`pin_one_cpu`) for the block only; the affinity is restored after."""
    if not (enabled and hasattr(os, "sched_getaffinity")):
        yield
        return
    before = os.sched_getaffinity(0)
    pin_one_cpu()
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------------------- precision study
class RecordingEngine:
    """Wraps an engine; keeps the frames it is given and the salience it returns (per stream 0)."""

    def __init__(self, inner: Any, frames: bool = False) -> None:
        self.inner, self.keep_frames = inner, frames
        self.name, self.device, self.bundle = inner.name, inner.device, inner.bundle
        self.frames: list[np.ndarray] = []
        self.salience: list[np.ndarray] = []

    def step(self, frames: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        if self.keep_frames:
            self.frames.append(np.array(frames[0], np.float32))
        sal, st = self.inner.step(frames, state)
        self.salience.append(np.array(sal[0], np.float32))
        return sal, st

    def reset(self, state: Any = None, streams: list[int] | None = None) -> None:
        self.frames, self.salience = [], []
        self.inner.reset(state, streams)

    def warmup(self) -> None:
        self.inner.warmup()

    def new_state(self, n_streams: int = 1) -> Any:
        return self.inner.new_state(n_streams)


def variant_bundle(bundle: ModelBundle, onnx_file: Path, root: Path) -> ModelBundle:
    """A bundle folder whose FP32 entry is ``onnx_file`` (copied), model.json hashes fixed up."""
    root.mkdir(parents=True, exist_ok=True)
    dst = root / "step.onnx"
    shutil.copyfile(onnx_file, dst)
    meta = {**bundle.meta, "onnx": {"fp32": dst.name}, "sha256": {dst.name: sha256_of(dst)},
            "io_dtypes": {"fp32": "float32 (all inputs and outputs)"}, "derived_from": str(bundle.root)}
    (root / METADATA_FILE).write_text(json.dumps(meta, indent=1))
    return load_bundle(root)


def tracker_frames(bundle: ModelBundle, signals: Sequence[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """The CFP frames (T, 3, 360) the tracker gives its engine for each signal."""
    from melodyrt.rt.tracker import Tracker, transcribe_signal

    out = []
    for x, sr in signals:
        rec = RecordingEngine(OrtEngine(bundle), frames=True)
        transcribe_signal(x, sr, tracker=Tracker(sr, bundle, engine=rec))
        out.append(np.stack(rec.frames))
    return out


def interleaved_times(engines: dict[str, Any], frames: np.ndarray, rounds: int, block: int
                      ) -> dict[str, dict[str, np.ndarray]]:
    """Wall and thread-CPU ns of ``block`` steps per engine per round, engine order reversed every round."""
    clock, tclock = time.perf_counter_ns, time.thread_time_ns
    ns = {n: {"wall": np.empty((rounds, block), np.int64), "cpu": np.empty((rounds, block), np.int64)}
          for n in engines}
    pos = dict.fromkeys(engines, 0)
    cast = {n: frames.astype(e.dtype) for n, e in engines.items()}
    for r in range(rounds):
        for n in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            eng, x, w, c, i = engines[n], cast[n], ns[n]["wall"][r], ns[n]["cpu"][r], pos[n]
            for k in range(block):
                f = x[(i + k) % x.shape[0]][None]
                c0, t0 = tclock(), clock()
                eng.step(f)
                t1, c1 = clock(), tclock()
                w[k], c[k] = t1 - t0, c1 - c0
            pos[n] = i + block
    return ns


def _timing_rows(ns: dict[str, dict[str, np.ndarray]], ref: str = "fp32") -> list[dict[str, Any]]:
    rows = []
    base = ns[ref]
    for n, d in ns.items():
        w, c = d["wall"] * 1e-6, d["cpu"] * 1e-6
        per_round = np.median(d["wall"], 1) / np.median(base["wall"], 1)
        rows.append({"engine": n, "p50_ms": float(np.percentile(w, 50)), "p99_ms": float(np.percentile(w, 99)),
                     "cpu_p50_ms": float(np.percentile(c, 50)), "cpu_p99_ms": float(np.percentile(c, 99)),
                     "p50_ratio": float(np.percentile(w, 50) / np.percentile(base["wall"] * 1e-6, 50)),
                     "p99_ratio": float(np.percentile(w, 99) / np.percentile(base["wall"] * 1e-6, 99)),
                     "cpu_p99_ratio": float(np.percentile(c, 99) / np.percentile(base["cpu"] * 1e-6, 99)),
                     "round_p50_ratio_median": float(np.median(per_round)),
                     "round_p50_ratio_range": [float(per_round.min()), float(per_round.max())], "n": int(w.size)})
    return rows


def _accuracy(bundles: dict[str, tuple[ModelBundle, str]], tracks: list[Any]) -> tuple[dict, dict]:
    """Pooled scores per (engine, condition, decoder) and equivalence with the first engine."""
    from melodyrt.model.metrics import MelodyScorer
    from melodyrt.rt.decode import DecoderConfig
    from melodyrt.rt.tracker import Tracker, TrackerConfig, transcribe_signal

    from .accuracy_bench import ReplayEngine, conditions

    live = DecoderConfig()
    decoders = {"eval": replace(live, voicing_off=live.voicing_on, off_frames=1), "live": live}
    runs = {}
    for n, (b, precision) in bundles.items():
        rec = RecordingEngine(OrtEngine(b, precision=precision))
        rep = ReplayEngine(rec)
        runs[n] = (rec, rep, {k: Tracker(8000, b, config=TrackerConfig(decoder=d), engine=rep) for k, d in decoders.items()})
    scorers: dict[tuple[str, str, str], MelodyScorer] = {}
    eq: dict[tuple[str, str], dict[str, float]] = {}
    for tr in tracks:
        for cond, (x, sr) in conditions(tr).items():
            ref: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            for n, (rec, rep, trackers) in runs.items():
                rep.recording, rep.record = True, []
                out = {}
                for k, trk in trackers.items():  # the first decoder runs the engine, the other replays it
                    if trk.input_rate != sr:
                        raise ValueError(f"{tr.name}: {sr} Hz; the study reads 8 kHz data")
                    out[k] = transcribe_signal(x, sr, tracker=trk).frames
                    rep.recording = False
                    sc = scorers.setdefault((n, cond, k), MelodyScorer())
                    sc.add(tr.name, tr.label_times, tr.label_f0, np.array([f.time for f in out[k]]),
                           np.array([f.f0_hz for f in out[k]]), np.array([f.voiced for f in out[k]], bool))
                sal = np.stack(rep.record)[:, 0]
                f0 = np.array([f.f0_hz for f in out["eval"]])
                vo = np.array([f.voiced for f in out["eval"]], bool)
                if ref is None:
                    ref = (sal, f0, vo)
                e = eq.setdefault((n, cond), dict(max_abs=0.0, abs_sum=0.0, frames=0, kept=0, voicing_same=0, both_voiced=0,
                                                  within_50c=0, cents_sum=0.0))
                diff = np.abs(sal - ref[0])
                both = vo & ref[2]
                cents = np.abs(1200 * np.log2(np.maximum(f0[both], 1e-3) / np.maximum(ref[1][both], 1e-3)))
                e["max_abs"] = max(e["max_abs"], float(diff.max()))
                e["abs_sum"] += float(diff.mean(1).sum())
                e["frames"] += sal.shape[0]
                e["kept"] += vo.shape[0]
                e["voicing_same"] += int((vo == ref[2]).sum())
                e["both_voiced"] += int(both.sum())
                e["within_50c"] += int((cents <= 50).sum())
                e["cents_sum"] += float(cents.sum())
    scores = {f"{n}|{c}|{k}": s.pooled() for (n, c, k), s in scorers.items()}
    equiv = {f"{n}|{c}": {"max_abs": e["max_abs"], "mean_abs": e["abs_sum"] / e["frames"],
                          "voicing_agreement": e["voicing_same"] / e["kept"],
                          "pitch_within_50c": e["within_50c"] / max(1, e["both_voiced"]),
                          "mean_cents": e["cents_sum"] / max(1, e["both_voiced"]), "frames": e["frames"]}
             for (n, c), e in eq.items()}
    return scores, equiv


def _drift(engines: dict[str, Any], sequences: list[np.ndarray], minute: int = 6000) -> dict[str, list[float]]:
    """Worst |salience - FP32| per minute of one long stream of ``sequences`` back to back."""
    stream = np.concatenate(sequences)
    sal = {}
    for n, e in engines.items():
        e.reset()
        x = stream.astype(e.dtype)
        sal[n] = np.stack([e.step(x[t][None])[0][0].astype(np.float32) for t in range(x.shape[0])])
    ref = sal["fp32"]
    return {n: [float(np.abs(s[i:i + minute] - ref[i:i + minute]).max()) for i in range(0, len(ref), minute)]
            for n, s in sal.items() if n != "fp32"}


def torch_step_times(bundle: ModelBundle, frames: np.ndarray, rounds: int = 10, block: int = 100) -> list[dict[str, Any]]:
    """The torch reference step (one thread) in FP32, BF16 weights and FP32 + BF16 autocast, interleaved."""
    import copy

    import torch

    from melodyrt.model.streaming import StreamingStep
    from melodyrt.model.train import load_checkpoint, model_from_checkpoint

    torch.set_num_threads(1)
    model, _ = model_from_checkpoint(load_checkpoint(bundle.root / "checkpoint.pt"))
    fp32 = StreamingStep(model).eval()
    variants = {"torch fp32": (fp32, torch.float32, False),
                "torch bf16 weights": (copy.deepcopy(fp32).to(torch.bfloat16), torch.bfloat16, False),
                "torch fp32 + bf16 autocast": (fp32, torch.float32, True)}
    x = torch.from_numpy(frames)
    states = {n: v[0].initial_state(1, v[1]) for n, v in variants.items()}
    ns: dict[str, list[int]] = {n: [] for n in variants}

    def one(n: str, t: int) -> None:  # window sums not kept: the time of a step, not its output
        step, dtype, autocast = variants[n]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = step(x[t % x.shape[0]][None].to(dtype), *states[n])
        states[n] = [o.to(dtype) for o in out[1:]]

    for n in variants:
        for t in range(20):
            one(n, t)
    for r in range(rounds):
        for n in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            for t in range(block):
                t0 = time.perf_counter_ns()
                one(n, t)
                ns[n].append(time.perf_counter_ns() - t0)
    base = np.median(ns["torch fp32"])
    return [{"engine": n, **summarise(np.asarray(v)), "p50_ratio": float(np.median(v) / base)} for n, v in ns.items()]


def precision_study(bundle_dir: str | None, data: Path, out_dir: Path, *, rounds: int = 40, block: int = 250,
                    max_tracks: int | None = None, accuracy: Sequence[str] | None = None,
                    with_torch: bool = False, pin: bool = True, timing_only: bool = False) -> dict[str, Any]:
    """Time, accuracy and equivalence of FP32, FP16 and int8 steps; writes ``precision_bench.json/.md``.

    The timing runs pinned to one core (``pin``); calibration and accuracy run unpinned.
    ``timing_only`` skips the drift and accuracy passes (a repeat of the timing).
    """
    from melodyrt.model.size_sweep import INT8_KINDS, quantize_step

    from .accuracy_bench import VAL_SINGERS, conditions, load_tracks

    bundle = load_bundle(bundle_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    _, tracks = load_tracks(data, VAL_SINGERS, max_tracks)
    calib = tracker_frames(bundle, [sig for tr in tracks[::3] for sig in conditions(tr).values()])
    result: dict[str, Any] = {"benchmark": "precision", "model": bundle.name, "bundle": str(bundle.root),
                              "data": str(data), "tracks": len(tracks), "calibration_sequences": len(calib),
                              "calibration_frames": int(sum(c.shape[0] for c in calib)), "machine": machine_info(),
                              "load_avg_start": load_start, "rounds": rounds, "block": block}
    with tempfile.TemporaryDirectory() as tmp:
        bundles: dict[str, tuple[ModelBundle, str]] = {"fp32": (bundle, "fp32"), "fp16": (bundle, "fp16")}
        for kind in INT8_KINDS:
            q = quantize_step(bundle.onnx_path("fp32"), Path(tmp) / f"{kind}.onnx", kind, list(bundle.states), calib)
            bundles[f"int8 {kind}"] = (variant_bundle(bundle, q, Path(tmp) / kind), "fp32")
        engines = {n: OrtEngine(b, precision=p) for n, (b, p) in bundles.items()}
        for e in engines.values():
            e.warmup(200)
        frames = np.concatenate(calib[:8])
        with pinned(pin):
            result["timing"] = _timing_rows(interleaved_times(engines, frames, rounds, block))
            result["load_avg_after_timing"] = os.getloadavg()
            if with_torch:
                result["torch"] = torch_step_times(bundle, frames)
        if timing_only:
            result["drift_per_minute"], result["scores"], result["equivalence"] = {}, {}, {}
        else:
            result["drift_per_minute"] = _drift(engines, calib)
            chosen = ["fp32"] + [n for n in bundles if n != "fp32" and (accuracy is None or n in accuracy)]
            result["scores"], result["equivalence"] = _accuracy({n: bundles[n] for n in chosen}, tracks)
    result["load_avg_end"] = os.getloadavg()
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return _save(out_dir, "precision_bench", result, precision_markdown(result))


def precision_markdown(r: dict[str, Any]) -> str:
    la = r["load_avg_start"]
    lines = [f"# Step precision: {r['model']}", "",
             f"Machine: {r['machine']['cpu_model']}, load average (1/5/15 min) {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} at "
             f"the start, {r['load_avg_end'][0]:.2f} at the end. Timing: {r['rounds']} rounds x {r['block']} steps per "
             f"engine, interleaved, one thread; accuracy on {r['tracks'] if r['scores'] else 0} clips; int8 calibrated on "
             f"{r['calibration_frames']} frames ({r['calibration_sequences']} streams).", "",
             "| engine | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | p50 / fp32 | p99 / fp32 | CPU p99 / fp32 | "
             "per-round p50 / fp32 (median, range) | n |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["timing"]:
        lo, hi = t["round_p50_ratio_range"]
        lines.append(f"| {t['engine']} | {t['p50_ms']:.3f} | {t['p99_ms']:.3f} | {t['cpu_p50_ms']:.3f} | {t['cpu_p99_ms']:.3f} "
                     f"| {t['p50_ratio']:.2f} | {t['p99_ratio']:.2f} | {t['cpu_p99_ratio']:.2f} | "
                     f"{t['round_p50_ratio_median']:.2f} ({lo:.2f}-{hi:.2f}) | {t['n']} |")
    for t in r.get("torch", []):
        lines.append(f"| {t['engine']} | {t['p50_ms']:.3f} | {t['p99_ms']:.3f} | | | {t['p50_ratio']:.2f} | | | | {t['n']} |")
    lines += ["", "| engine | input | decoder | VR | VFA | RPA | RCA | OA |", "|---|---|---|---|---|---|---|---|"]
    for key, s in r["scores"].items():
        n, c, k = key.split("|")
        lines.append(f"| {n} | {c} | {k} | " + " | ".join(f"{s[m]:.1f}" for m in ("VR", "VFA", "RPA", "RCA", "OA")) + " |")
    lines += ["", "| engine | input | salience max abs diff | mean abs diff | voicing agreement | pitch within 50 c | "
              "mean cents | worst diff per minute of one long stream |", "|---|---|---|---|---|---|---|---|"]
    for key, e in r["equivalence"].items():
        n, c = key.split("|")
        drift = r["drift_per_minute"].get(n)
        lines.append(f"| {n} | {c} | {e['max_abs']:.4f} | {e['mean_abs']:.2e} | {100 * e['voicing_agreement']:.2f} % | "
                     f"{100 * e['pitch_within_50c']:.2f} % | {e['mean_cents']:.2f} | "
                     + (" ".join(f"{d:.3f}" for d in drift) if drift else "-") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m melodyrt.bench.engine_bench",
                                 description="engine studies beyond `melodyrt bench engine`")
    sub = ap.add_subparsers(dest="study", required=True)
    p = sub.add_parser("precision", help="FP32 vs FP16 vs int8 steps: time, accuracy, equivalence")
    p.add_argument("--data", required=True, help="MIR-1K folder (validation singers Kenshin, annar)")
    p.add_argument("--model", help="exported model folder (default: the packaged model)")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--block", type=int, default=250, help="steps per engine per round")
    p.add_argument("--max-tracks", type=int, help="first N validation clips only (a check, not the figures)")
    p.add_argument("--accuracy", help="comma-separated engines to score besides fp32 (default all)")
    p.add_argument("--torch", action="store_true", help="also time the torch step in FP32 / BF16")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--timing-only", action="store_true", help="time only (no drift, no accuracy)")
    p.add_argument("--no-pin", action="store_true", help="do not pin to one CPU while timing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    precision_study(args.model, Path(args.data), out, rounds=args.rounds, block=args.block, max_tracks=args.max_tracks,
                    accuracy=args.accuracy.split(",") if args.accuracy else None, with_torch=args.torch,
                    pin=not args.no_pin, timing_only=args.timing_only)
    print((out / "precision_bench.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

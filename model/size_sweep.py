"""Size sweep of causal MF-TFA candidates against the real-time budget.

For each candidate config prints: trainable parameters (with / without aux heads), past
receptive field, MACs per streamed frame (convs + linears of the step), state size
[thousands of floats], onnxruntime step time p50/p99 on ONE thread (batch 1, >= 2000
steps after warm-up, interleaved over the candidates in 10 rounds so that load swings
on a shared machine hit all alike) and the torch training step time (forward +
backward of a (6, 3, 360, 128) batch with all heads on 2 threads, fp32 and bf16
autocast).

Usage::

    python -m melodyrt.model.size_sweep                # all candidates
    python -m melodyrt.model.size_sweep rt rt_w16 --steps 3000 --no-train
    python -m melodyrt.model.size_sweep --config my.yaml --no-train
    python -m melodyrt.model.size_sweep --grid --int8 --engine --no-train   # width x depth, fp32 vs int8

``--grid`` runs the width x depth grid ``c{16,24,32}_n{2,3,4}`` instead of the default
candidates (the rt2 topology with 16, 24 or 32 channels and 2, 3 or 4 MF-TFA modules;
``c16_n2`` is rt2, ``c16_n3`` rt).
``--int8`` also times a static QDQ int8 copy of every candidate (:func:`quantize_step`,
calibrated on real CFP frames of the bundled sung melody: the weights are untrained, so
the copy says how fast int8 runs, not how accurate it is), interleaved with the FP32 ones.
``--engine`` times through :class:`melodyrt.rt.engine.OrtEngine` (I/O binding, no
spinning, denormals flushed: what the tracker runs) instead of plain ``session.run``.

The budget: p99 step <= ~1.0 ms (the whole pipeline has 2 ms per 10 ms hop, CFP
included). Timings depend on machine load: on the 2-vCPU development VM a busy second
core (e.g. a training run) slowed the one-thread step ~2x even at higher priority, so
compare rows of one run and check the chosen config on an idle machine. The 1-minute
load average is printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from melodyrt.rt.bundle import CARRY, ModelBundle, StateSpec, load_bundle
from melodyrt.rt.window_sums import WindowSums

from .config import ModelConfig, load_model_config
from .network import MFTFA
from .streaming import StreamingStep, export_step_onnx, ort_session


def _rt(**over: Any) -> ModelConfig:
    return load_model_config("rt").replace(**over)


#: Full paper kernels (time extent 3/5/7 in every MSC, 3/5 in the TFA, 5 in the head).
_PAPER_K = dict(msc_kernels=((3, 3), (5, 5), (7, 7)), tfa_kernels=((3, 3), (5, 5)),
                head_kernels=((5, 5), (5, 5)), stem_channels=(8, 16), freq_window=16)

#: Candidates: name -> factory (configs are built lazily so a bad one fails alone).
CANDIDATES: dict[str, Callable[[], ModelConfig]] = {
    # the reference size, causal (W = 128): far outside the budget, for scale
    "paper_causal": lambda: load_model_config("paper_causal"),
    # half-width paper topology (Res2Net scale 4 of 8-ch groups), paper kernels
    "c16_m32_g4_n3_pk": lambda: _rt(name="c16_m32_g4_n3_pk", mid_channels=32, groups=4,
                                    **_PAPER_K),
    # scale 2 (one 8-ch MSC per module), paper kernels
    "c16_m16_g2_n3_pk": lambda: _rt(name="c16_m16_g2_n3_pk", **_PAPER_K),
    # 8 wide, 4 modules, paper kernels: fewer MACs but 8-ch convs run inefficiently
    "c8_m16_g2_n4_pk": lambda: _rt(name="c8_m16_g2_n4_pk", channels=8, n_modules=4,
                                   taps=(2, 3), **dict(_PAPER_K, stem_channels=(8, 8))),
    # rt family: time extent 3 only in the first conv of each chain
    "rt_g4": lambda: _rt(name="rt_g4", groups=4),  # 3 MSCs of 4 channels
    "rt_w16": lambda: _rt(name="rt_w16", freq_window=16),
    "rt_n4": lambda: _rt(name="rt_n4", n_modules=4, taps=(2, 3)),
    # the 3-module rt config (shipped up to 0.3.0)
    "rt": lambda: load_model_config("rt"),
    # rt with its last module dropped: ~50 fewer ONNX nodes per step
    "rt2": lambda: load_model_config("rt2"),
}


def _grid(channels: int, modules: int) -> ModelConfig:
    """rt2 topology at another width (stem, trunk and MSC/TFA width) and depth."""
    return load_model_config("rt2").replace(
        name=f"c{channels}_n{modules}", channels=channels, mid_channels=channels,
        stem_channels=(channels,), n_modules=modules, taps=(1, 2) if modules <= 3 else (2, 3))


#: Width x depth grid (``--grid``); untrained, for the step time only.
GRID: dict[str, Callable[[], ModelConfig]] = {
    f"c{c}_n{n}": (lambda c=c, n=n: _grid(c, n)) for c in (16, 24, 32) for n in (2, 3, 4)}


#: Far too slow to stream: timed over 200 steps only and not trained unless asked
#: (its training step needs ~8 GB and minutes on 2 cores).
HEAVY = {"paper_causal"}


# ---------------------------------------------------------------------------- measures
def macs_per_frame(step: StreamingStep) -> int:
    """Multiply-accumulates of one streamed frame (Conv2d + Linear), batch 1."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    hs = [m.register_forward_hook(hook) for m in step.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        step(torch.zeros(1, step.cfg.in_channels, step.cfg.n_bins), *step.initial_state(1))
    for h in hs:
        h.remove()
    return total


def stream_feeds(path: str | Path, specs: list[StateSpec], sequences: list[np.ndarray],
                 every: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of every ``every``-th step of the FP32 step streamed over ``sequences``.

    Each sequence (T, 3, 360) starts from the zero state; window sums are kept as the
    engine keeps them (:class:`WindowSums`), so the state inputs are the real ones.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    carries = [s for s in specs if s.kind == CARRY]
    for seq in sequences:
        st = [np.zeros((1, *s.shape), np.float32) for s in carries]
        windows = WindowSums(specs, 1, np.float32)
        outs = ["salience"] + [s.output_name for s in carries] + [s.output_name for s in windows.specs]
        for t in range(seq.shape[0]):
            feeds = {"frame": np.ascontiguousarray(seq[t : t + 1], np.float32)}
            feeds |= {s.input_name: a for s, a in zip(carries, st)}
            feeds |= {s.input_name: a.copy() for s, a in zip(windows.specs, windows.sum_in)}
            if t % every == 0:
                yield feeds
            _, *new = sess.run(outs, feeds)
            st = new[: len(carries)]
            windows.push(new[len(carries):])


class _Feeds:
    """``onnxruntime.quantization`` calibration reader over an iterator of feeds."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


#: int8 variants :func:`quantize_step` makes.
INT8_KINDS = ("dynamic", "qdq", "qoperator")


def quantize_step(src: str | Path, dst: str | Path, kind: str = "qdq",
                  specs: list[StateSpec] | None = None, sequences: list[np.ndarray] | None = None,
                  every: int = 12) -> Path:
    """An int8 copy of an exported FP32 step (ONNX Runtime's quantization tool).

    Parameters
    ----------
    src, dst : path
        FP32 step ONNX in, int8 ONNX out (float inputs and outputs, same names).
    kind : {"dynamic", "qdq", "qoperator"}
        ``dynamic``: Conv weights uint8 per tensor, activations quantized at run time
        (ConvInteger). ``qdq`` / ``qoperator``: static, uint8 activations and int8
        per-channel weights (U8S8, the VNNI path), every supported op but the output
        softmax quantized (state concats included), as QuantizeLinear/DequantizeLinear
        pairs or as QLinear ops; MinMax ranges calibrated on the streamed feeds of
        ``sequences``.
    specs, sequences, every
        States of the step and the real CFP frame sequences (T, 3, 360) to calibrate
        on, streamed with :func:`stream_feeds` (static kinds only).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if kind not in INT8_KINDS:
        raise ValueError(f"kind must be one of {INT8_KINDS}, got {kind!r}")
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        if kind == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
            return dst
        if specs is None or not sequences:
            raise ValueError("static quantization needs the state specs and calibration sequences")
        fmt = QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator
        # the output softmax stays float: quantized, its 361 probabilities came in steps of
        # 1/255 (every row under 0.002 read 0), which the decoder's peak average needs
        softmax = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Softmax"]
        quantize_static(str(pre), str(dst), _Feeds(stream_feeds(src, specs, sequences, every)),
                        quant_format=fmt, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=softmax, extra_options={"CalibMaxIntermediateOutputs": 64})
    return dst


def path_bundle(path: Path, specs: list[StateSpec], delay_frames: int = 0) -> ModelBundle:
    """An in-memory bundle around one step file (the packaged model's front end), for OrtEngine."""
    shipped = load_bundle()
    meta = {**shipped.meta, "onnx": {"fp32": path.name}, "sha256": {}}
    return ModelBundle(path.parent, meta, shipped.cfp, shipped.stats, tuple(specs), delay_frames)


class OrtStepBench:
    """Times the exported step of one config with onnxruntime, a block of steps at a time.

    Single intra/inter-op thread, sequential, all graph optimisations, batch 1, the
    state fed back every step. Blocks of several configs are interleaved by
    :func:`main`, so that load changes on a shared machine hit every config alike.
    ``int8`` times a static QDQ copy (:func:`quantize_step`, calibrated on ``calib``
    frames, which are then also the timed input instead of random ones); ``engine`` steps
    through :class:`~melodyrt.rt.engine.OrtEngine`.
    """

    def __init__(self, step: StreamingStep, path: Path, warmup: int = 200, *, int8: bool = False,
                 engine: bool = False, calib: np.ndarray | None = None) -> None:
        export_step_onnx(step, path, sidecar=False)
        self.specs = step.state_specs()
        if int8:
            if calib is None:
                calib = _calibration_frames()
            path = quantize_step(path, path.with_suffix(".int8.onnx"), "qdq", self.specs, [calib], every=2)
        self.engine = None
        if engine:
            from melodyrt.rt.engine import OrtEngine

            self.engine = OrtEngine(path_bundle(path, self.specs, step.delay_frames))
        else:
            self.sess = ort_session(path, threads=1)
            self.names = [i.name for i in self.sess.get_inputs()]
        if calib is not None:  # real frames, in stream order
            self.frames = np.ascontiguousarray(calib[:64, None], np.float32)
        else:
            rng = np.random.default_rng(0)
            self.frames = rng.random((64, 1, step.cfg.in_channels, step.cfg.n_bins),
                                     dtype=np.float32)
        self.states = [s.numpy() for s in step.initial_state(1)]
        self.windows = WindowSums(self.specs, 1, np.float32)
        self._window_idx = [i for i, s in enumerate(self.specs) if s.kind != CARRY]
        for i, a in zip(self._window_idx, self.windows.sum_in):
            self.states[i] = a
        self.i = 0
        self.wall: list[int] = []
        self.cpu: list[int] = []
        self.run(warmup, record=False)

    def run(self, n: int, record: bool = True) -> None:
        """Run ``n`` steps, recording wall and thread-CPU time [ns] of each."""
        if self.engine is not None:
            self._run_engine(n, record)
            return
        for _ in range(n):
            feeds = dict(zip(self.names, [self.frames[self.i % 64], *self.states]))
            self.i += 1
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            out = self.sess.run(None, feeds)
            sums = self.windows.push([out[1 + i] for i in self._window_idx])
            for i, a in zip(self._window_idx, sums):
                out[1 + i] = a
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            self.states = out[1:]
            if record:
                self.wall.append(t1 - t0)
                self.cpu.append(c1 - c0)

    def _run_engine(self, n: int, record: bool) -> None:
        for _ in range(n):
            frame = self.frames[self.i % 64]
            self.i += 1
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            self.engine.step(frame)
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            if record:
                self.wall.append(t1 - t0)
                self.cpu.append(c1 - c0)

    def percentiles(self) -> tuple[float, float, float, float]:
        """Wall and thread-CPU ``(p50, p99, cpu_p50, cpu_p99)`` [ms].

        CPU time (``CLOCK_THREAD_CPUTIME_ID``; ORT runs on the calling thread with one
        intra-op thread) leaves out time the thread was descheduled, not the slowdown
        from sharing caches and cores.
        """
        w = np.asarray(self.wall) * 1e-6
        c = np.asarray(self.cpu) * 1e-6
        return (float(np.percentile(w, 50)), float(np.percentile(w, 99)),
                float(np.percentile(c, 50)), float(np.percentile(c, 99)))


def _calibration_frames(n: int = 600) -> np.ndarray:
    """Real CFP frames (T, 3, 360) of the bundled sung melody, normalised as the packaged model is."""
    from .export import validation_frames

    b = load_bundle()
    return validation_frames(b.cfp, b.stats, n)


def ort_step_times(step: StreamingStep, steps: int = 2000, warmup: int = 200
                   ) -> tuple[float, float, float, float]:
    """``(p50, p99, cpu_p50, cpu_p99)`` [ms] of one config timed on its own."""
    with tempfile.TemporaryDirectory() as d:
        bench = OrtStepBench(step, Path(d) / "step.onnx", warmup)
        bench.run(steps)
        return bench.percentiles()


def train_step_time(cfg: ModelConfig, bf16: bool, reps: int = 3, threads: int = 2,
                    shape: tuple[int, ...] = (6, 3, 360, 128)) -> float:
    """Median seconds of forward + backward (all heads, SD-MS-like loss) on a batch."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MFTFA(cfg).train()
    x = torch.rand(*shape)
    target = torch.zeros(shape[0], cfg.n_classes, shape[-1])
    target[:, 0] = 1.0

    def once() -> float:
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.zeros(())
        for k in ("main", "aux1", "aux2"):
            if out[k] is not None:
                loss = loss + nn.functional.binary_cross_entropy(
                    out[k].float().clamp(1e-7, 1 - 1e-7), target)
        for k in ("feat1", "feat2"):
            loss = loss + nn.functional.mse_loss(out[k].float(), out["feat3"].float().detach())
        loss.backward()
        return time.perf_counter() - t0

    once()  # warm-up (allocator, oneDNN primitive cache)
    return statistics.median(once() for _ in range(reps))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help=f"candidates (default all): {', '.join(CANDIDATES)}")
    ap.add_argument("--config", action="append", default=[], help="extra YAML config path")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--no-train", action="store_true", help="skip the training-time columns")
    ap.add_argument("--train-reps", type=int, default=3)
    ap.add_argument("--train-heavy", action="store_true",
                    help=f"also time training of {sorted(HEAVY)}")
    ap.add_argument("--grid", action="store_true",
                    help=f"the width x depth grid ({', '.join(GRID)}) instead of the default candidates")
    ap.add_argument("--int8", action="store_true",
                    help="also time a static QDQ int8 copy of every candidate (interleaved)")
    ap.add_argument("--engine", action="store_true",
                    help="time through rt.engine.OrtEngine, as the tracker runs the step")
    ap.add_argument("--pin", action="store_true", help="pin the process to one CPU while timing")
    args = ap.parse_args(argv)

    known = {**CANDIDATES, **GRID}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        ap.error(f"unknown candidates {unknown}; known: {', '.join(known)}")
    cands = {n: known[n] for n in (args.names or (GRID if args.grid else CANDIDATES))}
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    for p in args.config:
        cands[Path(p).stem] = (lambda p=p: load_model_config(p))

    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}; torch {torch.__version__}")
    torch.set_num_threads(1)
    rows: dict[str, dict[str, Any]] = {}
    benches: dict[str, OrtStepBench] = {}
    calib = _calibration_frames() if (args.int8 or args.engine) else None
    with tempfile.TemporaryDirectory() as d:
        for name, make in cands.items():
            cfg = make()
            torch.manual_seed(0)
            model = MFTFA(cfg).eval()
            step = StreamingStep(model)
            rows[name] = dict(cfg=cfg, params=model.param_count(),
                              no_aux=model.param_count(include_aux=False),
                              rf=model.receptive_field_frames, macs=macs_per_frame(step),
                              state=step.state_numel)
            benches[name] = OrtStepBench(step, Path(d) / f"{name}.onnx", engine=args.engine, calib=calib)
            if args.int8:
                benches[name + "/int8"] = OrtStepBench(step, Path(d) / f"{name}_q.onnx", int8=True,
                                                       engine=args.engine, calib=calib)
        # Interleave blocks of steps over the configs (see OrtStepBench).
        rounds = 10
        for r in range(rounds):
            for key in (list(benches) if r % 2 == 0 else list(benches)[::-1]):
                n = (min(args.steps, 200) if key.split("/")[0] in HEAVY else args.steps) // rounds
                benches[key].run(max(n, 1))
        for key, bench in benches.items():
            name, _, kind = key.partition("/")
            rows[name]["int8" if kind else "ort"] = bench.percentiles()
        benches.clear()

    if not args.no_train:
        for name, row in rows.items():
            if name in HEAVY and not args.train_heavy:
                continue
            row["t32"] = train_step_time(row["cfg"], bf16=False, reps=args.train_reps)
            row["t16"] = train_step_time(row["cfg"], bf16=True, reps=args.train_reps)

    hdr = (f"| {'config':16s} | params | no-aux | RF fr | MMAC/fr | state kf | "
           f"ORT p50 ms | ORT p99 ms | CPU p99 ms | train fp32 s | train bf16 s |"
           + (" int8 p50 ms | int8 p99 ms | int8 CPU p99 ms | int8/fp32 p50 | int8/fp32 CPU p50 | "
              "int8/fp32 CPU p99 |" if args.int8 else ""))
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    nan = float("nan")
    for name, r in rows.items():
        p50, p99, _, c99 = r["ort"]
        label = name + ("*" if name in HEAVY else "")
        print(f"| {label:16s} | {r['params']:6d} | {r['no_aux']:6d} | {r['rf']:5d} | "
              f"{r['macs'] / 1e6:7.2f} | {r['state'] / 1e3:8.1f} | {p50:10.3f} | "
              f"{p99:10.3f} | {c99:10.3f} | {r.get('t32', nan):12.2f} | "
              f"{r.get('t16', nan):12.2f} |" + (_int8_cells(r) if args.int8 else ""), flush=True)
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"
          + ("; timed through OrtEngine" if args.engine else "; timed with session.run"))
    if any(n in HEAVY for n in cands):
        print("* timed over 200 steps only; training not timed (--train-heavy)")
    return 0


def _int8_cells(r: dict[str, Any]) -> str:
    (q50, q99, qc50, qc99), (f50, _, fc50, fc99) = r["int8"], r["ort"]
    return (f" {q50:11.3f} | {q99:11.3f} | {qc99:15.3f} | {q50 / f50:13.2f} | {qc50 / fc50:17.2f} | "
            f"{qc99 / fc99:17.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())

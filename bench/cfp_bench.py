"""Benchmark of the streaming front end against the latency budget.

Measures, on realistic audio (the synthetic sung melody of :mod:`melodyrt.rt.synth`):

- per-hop CFP cost: one 80-sample hop per ``StreamingCFP.process`` call, exactly as a live
  stream feeds it, for each analysis window (symmetric, asymmetric, multires; kernels
  warmed up first);
- resampler cost per 128-frame 48 kHz device block, and resampler + CFP per block;
- offline CFP speed (the same stream fed a whole signal) as a multiple of real time.

Results go to ``<out>/cfp_bench.json`` and ``<out>/cfp_bench.md`` with the machine they ran
on; :func:`check_budget` compares them with ``bench/budget.yaml``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from melodyrt.rt.cfp import StreamingCFP, cfp_from_signal
from melodyrt.rt.config import CfpConfig, NormConfig
from melodyrt.rt.resample import StreamingResampler
from melodyrt.rt.synth import looped, sung_melody

BUDGET_FILE = Path(__file__).resolve().parent / "budget.yaml"
PERCENTILES = (50.0, 99.0, 99.9)
#: Windows timed per hop. ``multires`` runs two CFPs per hop (the asymmetric one plus a
#: 1000-point one); the per-hop budget keys hold for every window measured.
WINDOWS = ("symmetric", "asymmetric", "multires")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure.

    Attributes
    ----------
    hops : int
        Timed CFP hops per window (>= 10,000 for the budget figures).
    blocks : int
        Timed 128-frame device blocks for the resampler.
    device_rate : int [Hz]
    device_block : int [frames]
    offline_seconds : float [s]
        Audio length for the offline speed figure.
    warmup_hops : int
        Untimed hops before timing (caches, branch predictors, allocator).
    pin_cpu : bool
        Pin the process to one core while timing (the budget is per core).
    """

    hops: int = 20000
    blocks: int = 20000
    device_rate: int = 48000
    device_block: int = 128
    offline_seconds: float = 60.0
    warmup_hops: int = 500
    pin_cpu: bool = True

    @classmethod
    def quick(cls) -> "BenchSettings":
        """A few hundred hops: checks the machinery in CI, says nothing about speed."""
        return cls(hops=300, blocks=300, offline_seconds=2.0, warmup_hops=20)


def summarise(ns: np.ndarray) -> dict[str, float]:
    """Timing statistics of per-call durations given in nanoseconds, in milliseconds."""
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    out = {f"p{p:g}_ms": float(np.percentile(ms, p)) for p in PERCENTILES}
    out.update(mean_ms=float(ms.mean()), max_ms=float(ms.max()), n=int(ms.shape[0]))
    return out


def _time_calls(fn: Callable[[np.ndarray], Any], blocks: list[np.ndarray] | np.ndarray) -> np.ndarray:
    clock = time.perf_counter_ns
    out = np.empty(len(blocks), np.int64)
    for i, b in enumerate(blocks):
        t0 = clock()
        fn(b)
        out[i] = clock() - t0
    return out


def bench_cfp_hops(window: str | CfpConfig, audio_8k: np.ndarray, settings: BenchSettings) -> dict[str, float]:
    """Per-hop cost of ``StreamingCFP.process`` fed one hop per call.

    Parameters
    ----------
    window : str or CfpConfig
        A window kind (with the default parameters) or a whole CFP configuration (a
        bundle's).
    """
    cfg = window if isinstance(window, CfpConfig) else CfpConfig(window=window)
    stream = StreamingCFP(cfg, NormConfig(mode="running"))
    stream.warmup()
    hop = cfg.hop
    n = settings.warmup_hops + settings.hops
    need = n * hop
    x = np.resize(audio_8k, need).astype(np.float32)  # wraps the song if it is shorter
    hops = x.reshape(n, hop)
    for h in hops[: settings.warmup_hops]:
        stream.process(h)
    ns = _time_calls(stream.process, hops[settings.warmup_hops :])
    stats = summarise(ns)
    stats["latency_samples"] = stream.latency_samples
    stats["low_rows_latency_samples"] = int(round(float(stream.row_delay_samples[0])))  # differs for multires
    return stats


def bench_resampler(audio_dev: np.ndarray, settings: BenchSettings) -> dict[str, Any]:
    """Cost per device block of the resampler alone and of resampler + CFP (symmetric)."""
    b = settings.device_block
    n = settings.blocks + settings.warmup_hops
    x = np.resize(audio_dev, n * b).astype(np.float32).reshape(n, b)
    res = StreamingResampler(settings.device_rate)
    for blk in x[: settings.warmup_hops]:
        res.process(blk)
    alone = summarise(_time_calls(res.process, x[settings.warmup_hops :]))
    alone["latency_samples"] = res.latency_samples

    res = StreamingResampler(settings.device_rate)
    cfp = StreamingCFP(CfpConfig(), NormConfig(mode="running"))
    cfp.warmup()

    def both(blk: np.ndarray) -> None:
        cfp.process(res.process(blk))

    for blk in x[: settings.warmup_hops]:
        both(blk)
    chain = summarise(_time_calls(both, x[settings.warmup_hops :]))
    return {"resampler": alone, "resampler_plus_cfp": chain}


def bench_offline(audio_8k: np.ndarray, settings: BenchSettings, window: str = "symmetric") -> dict[str, float]:
    """Offline CFP speed: the stream fed the whole signal in one block."""
    cfg = CfpConfig(window=window)
    x = np.resize(audio_8k, int(settings.offline_seconds * cfg.sample_rate)).astype(np.float32)
    StreamingCFP(cfg).warmup()
    t0 = time.perf_counter()
    frames = cfp_from_signal(x, cfg)
    elapsed = time.perf_counter() - t0
    seconds = x.shape[0] / cfg.sample_rate
    return {
        "audio_s": seconds,
        "elapsed_s": elapsed,
        "frames": int(frames.shape[0]),
        "x_realtime": seconds / elapsed,
    }


def machine_line(m: dict[str, Any]) -> str:
    """The one-line machine header of the bench reports (``m`` from :func:`machine_info`)."""
    return (f"Machine: {m['cpu_model']}, {m['cores_usable']}/{m['cores_logical']} cores, "
            f"load {m['load_avg_1min']:.2f} (1 min)")


def save_figure(fig: Any, out_dir: Path, filename: str) -> str:
    """Write a matplotlib figure as ``out_dir / filename`` (100 dpi), close it, return the name."""
    import matplotlib.pyplot as plt

    fig.savefig(out_dir / filename, dpi=100)
    plt.close(fig)
    return filename


def machine_info() -> dict[str, Any]:
    """CPU model, core counts and library versions."""
    from melodyrt.rt.commands import library_versions

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        policy = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}.get(
            os.sched_getscheduler(0), str(os.sched_getscheduler(0))
        )
    except (AttributeError, OSError):
        policy = "unknown"
    return {
        "cpu_model": model,
        # Other work on the machine shows up in the tails: record how busy it was.
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "sched_policy": policy,
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libraries": library_versions(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ},
    }


def run(settings: BenchSettings, out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Run every measurement and write ``cfp_bench.json`` and ``cfp_bench.md`` to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()  # before pinning, so it reports the cores the machine has
    pinned = None
    if settings.pin_cpu and hasattr(os, "sched_setaffinity"):
        before = os.sched_getaffinity(0)
        pinned = max(before)
        os.sched_setaffinity(0, {pinned})
    try:
        song_8k = sung_melody(sr=8000, seed=0)
        song_dev = sung_melody(sr=settings.device_rate, seed=0)
        audio_8k = looped(song_8k, max(song_8k.duration, settings.offline_seconds))
        result: dict[str, Any] = {
            "benchmark": "cfp",
            "quick": quick,
            "settings": settings.__dict__,
            "pinned_cpu": pinned,
            "machine": machine,
            "cfp_hop": {w: bench_cfp_hops(w, song_8k.audio, settings) for w in WINDOWS},
            **bench_resampler(song_dev.audio, settings),
            "offline": bench_offline(audio_8k, settings),
            "offline_multires": bench_offline(audio_8k, settings, "multires"),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_avg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, before)
    (out_dir / "cfp_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "cfp_bench.md").write_text(markdown_report(result))
    return result


def load_budget(path: Path | None = None) -> dict[str, float]:
    """The latency budget (``bench/budget.yaml``): name -> limit."""
    from .budget import load_budget as _load

    return _load(path)


def measured_for_budget(result: dict[str, Any]) -> dict[str, float]:
    """The figures the budget names, from a result (same keys as budget.yaml)."""
    hops = result["cfp_hop"].values()  # every window the run timed
    return {
        "cfp_hop_p99_ms": max(s["p99_ms"] for s in hops),
        "cfp_hop_p999_ms": max(s["p99.9_ms"] for s in hops),
        "resample_block_p99_ms": result["resampler"]["p99_ms"],
        "pipeline_block_p99_ms": result["resampler_plus_cfp"]["p99_ms"],
        "offline_cfp_min_x_realtime": min(result[k]["x_realtime"] for k in ("offline", "offline_multires") if k in result),
    }


def check_budget(result: dict[str, Any], budget: dict[str, float]) -> list[str]:
    """Budget items the result misses, as lines; empty when everything is within budget.

    Keys ending in ``_min_x_realtime`` are lower bounds; all others are upper bounds.
    """
    measured = measured_for_budget(result)
    problems = []
    for key, limit in budget.items():
        if key not in measured:  # another benchmark's figure (bench/budget.py lists who measures what)
            continue
        value = measured[key]
        lower_bound = key.endswith("_min_x_realtime")
        if (value < limit) if lower_bound else (value > limit):
            relation = "below the minimum" if lower_bound else "over the limit"
            problems.append(f"{key}: {value:.4g} {relation} {limit:g}")
    return problems


def markdown_report(result: dict[str, Any]) -> str:
    """Human-readable report of one run."""
    m = result["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    lines = [
        "# CFP front-end benchmark",
        "",
        f"- when: {result['timestamp']}{' (quick mode: machinery check only, figures meaningless)' if result['quick'] else ''}",
        f"- machine: {m['cpu_model']}, {m['cores_logical']} logical cores ({m['cores_usable']} usable), {m['platform']}",
        f"- pinned to CPU: {result['pinned_cpu']}; scheduling {m['sched_policy']}; "
        f"load average (1 min) at start: {m['load_avg_1min']}, at the end: {result.get('load_avg_1min_end')}",
        f"- libraries: {libs}",
        "",
        "## Per-call cost [ms]",
        "",
        "| what | calls | p50 | p99 | p99.9 | max | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(f"CFP hop, {w} window (80 samples, 1 frame)", s) for w, s in result["cfp_hop"].items()]
    rate, blk = result["settings"]["device_rate"], result["settings"]["device_block"]
    rows.append((f"resampler, {blk}-frame block at {rate} Hz", result["resampler"]))
    rows.append((f"resampler + CFP, {blk}-frame block at {rate} Hz", result["resampler_plus_cfp"]))
    for name, s in rows:
        lines.append(
            f"| {name} | {s['n']} | {s['p50_ms']:.4f} | {s['p99_ms']:.4f} | {s['p99.9_ms']:.4f} | "
            f"{s['max_ms']:.4f} | {s['mean_ms']:.4f} |"
        )
    off = result["offline"]
    lines += [
        "",
        f"Offline CFP: {off['audio_s']:.0f} s of audio in {off['elapsed_s']:.2f} s = "
        f"**{off['x_realtime']:.0f}x real time** (one core, symmetric window)"
        + (f"; multires window {result['offline_multires']['x_realtime']:.0f}x." if "offline_multires" in result else "."),
        "",
        "Latency [samples at 8 kHz]: "
        + ", ".join(f"{w} window {_latency(s)}" for w, s in result["cfp_hop"].items())
        + f", resampler from {rate} Hz {result['resampler']['latency_samples']}.",
        "",
    ]
    return "\n".join(lines)


def _latency(stats: dict[str, float]) -> str:
    low = stats.get("low_rows_latency_samples", stats["latency_samples"])
    if low == stats["latency_samples"]:
        return f"{stats['latency_samples']}"
    return f"{stats['latency_samples']} (rows below its crossfade {low})"

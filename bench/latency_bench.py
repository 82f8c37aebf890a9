"""``melodyrt bench latency``: algorithmic latency per stage next to measured compute per hop.

Algorithmic latency comes from what each processor reports (:meth:`Tracker.latency`), with
audio buffering = one device block. Compute is measured on the tracker's real streaming path:
the synthetic sung melody (:func:`melodyrt.rt.synth.sung_melody`) at 48 kHz fed in 128-frame
blocks, unpaced, every block timed (``Tracker.timings`` per stage plus the sinks: an
:class:`OscSink` to 127.0.0.1 and the MIDI sink's note logic, or a real JACK MIDI port when
``midi_port`` is given).

Per 10 ms hop, "compute" is everything the worker did for that hop's audio: the blocks since
the previous frame (resampler, CFP, engine, decoder) plus the sinks for the frame. A deadline
miss is a hop whose compute exceeds the hop (10 ms); a block miss is a block whose compute
exceeds the block period (2.67 ms at 48 kHz/128).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from melodyrt.rt.bundle import ModelBundle, load_bundle
from melodyrt.rt.decode import DecoderConfig
from melodyrt.rt.midi_out import MidiConfig, MidiNoteLogic
from melodyrt.rt.osc_out import OscSink
from melodyrt.rt.synth import looped, sung_melody
from melodyrt.rt.tracker import Tracker, TrackerConfig

from .budget import held_back_by
from .cfp_bench import machine_info, save_figure, summarise

GOAL_P50_KEY, GOAL_P99_KEY = "e2e_note_on_p50_ms", "e2e_note_on_p99_ms"
#: Stages whose delay the design fixes (compute and waits are not in it).
FIXED = {"resampler delay", "CFP window's effective delay", "model look-ahead", "decoder smoothing", "input processing",
         "audio buffering (one block)", "voicing decision lag", "MIDI onset frames"}


def run(
    bundle: ModelBundle | str | Path | None,
    out_dir: Path,
    *,
    hops: int = 12000,
    rate: int = 48000,
    blocksize: int = 128,
    backend: str = "auto",
    decoder: DecoderConfig | None = None,
    pin_cpu: bool = True,
    quick: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Measure and write ``latency_bench.json``, ``latency_bench.md`` and the PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    blocks_per_hop = -(-rate // 100 // blocksize) + 1
    cfg = TrackerConfig(decoder=decoder or DecoderConfig(), timing_hops=max(1 << 15, hops * blocks_per_hop + 64))
    tracker = Tracker(rate, bundle, backend, cfg)
    tracker.warmup()
    # a UDP receiver that never reads: sends go to a real socket, the kernel drops overflow
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    osc = OscSink("127.0.0.1", rx.getsockname()[1])
    midi = MidiNoteLogic(MidiConfig())
    song = sung_melody(sr=rate, seed=0)
    audio = looped(song, (hops + 10) * tracker.hop / tracker.analysis_rate + 0.5)
    n_blocks = audio.shape[0] // blocksize
    block_ns = np.zeros(n_blocks, np.int64)
    hop_total = np.zeros(hops, np.int64)
    sink_ns = np.zeros(hops, np.int64)
    pinned = None
    if pin_cpu and hasattr(os, "sched_setaffinity"):
        before = os.sched_getaffinity(0)
        pinned = max(before)
        os.sched_setaffinity(0, {pinned})
    clock = time.perf_counter_ns
    h = 0
    acc = 0
    wall0 = time.perf_counter()
    try:
        tracker.reset()
        tracker.timings.clear()
        for b in range(n_blocks):
            blk = audio[b * blocksize : (b + 1) * blocksize]
            t0 = clock()
            frames = tracker.process(blk)
            t1 = clock()
            for fr in frames:
                midi.process(fr)
                osc.send(fr)
            t2 = clock()
            block_ns[b] = t2 - t0
            acc += t2 - t0
            if frames and h < hops:
                sink_ns[h] = t2 - t1
                hop_total[h] = acc
                acc = 0
                h += 1
                if h == hops:
                    n_blocks = b + 1
                    break
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, before)
        osc.close()
        rx.close()
    wall = time.perf_counter() - wall0
    block_ns = block_ns[:n_blocks]
    hop_total, sink_ns = hop_total[:h], sink_ns[:h]
    snap = tracker.timings.snapshot()
    hop_s = tracker.hop / tracker.analysis_rate
    block_s = blocksize / rate
    lat = tracker.latency(blocksize, buffering_samples=float(blocksize))
    compute = {
        "resample": summarise(snap["resample"]),
        "cfp": summarise(snap["cfp"]),
        "engine": summarise(snap["engine"]),
        "decode": summarise(snap["decode"]),
        "sinks": summarise(sink_ns),
        "hop_total": summarise(hop_total),
        "block_total": summarise(block_ns),
    }
    ms = hop_total / 1e6
    misses = int((ms > hop_s * 1000).sum())
    block_misses = int((block_ns / 1e6 > block_s * 1000).sum())
    jitter = {
        "hop_total_std_ms": float(ms.std()),
        "hop_total_p99_minus_p50_ms": compute["hop_total"]["p99_ms"] - compute["hop_total"]["p50_ms"],
        "hop_total_max_minus_p50_ms": compute["hop_total"]["max_ms"] - compute["hop_total"]["p50_ms"],
    }
    alg = {name: ms_ for name, _, ms_ in lat.rows()}
    stages_p50 = {
        "resampler delay": alg["resampler"], "CFP window's effective delay": alg["cfp window"],
        "model look-ahead": alg["model look-ahead"], "decoder smoothing": alg["decoder smoothing"],
        "input processing": alg["input processing"], "hop wait (mean)": alg["hop wait, mean"],
        "audio buffering (one block)": alg["audio buffering"],
        "voicing decision lag": tracker.decoder.decision_lag_frames[0] * hop_s * 1000,
        # a confident first frame starts the note at once (onset_confidence); p99: it is not
        "MIDI onset frames": (0 if midi.config.onset_confidence is not None else midi.config.onset_frames - 1) * hop_s * 1000,
        "compute (hop p50)": compute["hop_total"]["p50_ms"],
    }
    stages_p99 = dict(stages_p50)
    stages_p99["MIDI onset frames"] = (midi.config.onset_frames - 1) * hop_s * 1000
    stages_p99.pop("hop wait (mean)")
    stages_p99.pop("compute (hop p50)")
    stages_p99["hop wait (worst)"] = alg["hop wait, worst"]
    stages_p99["compute (hop p99)"] = compute["hop_total"]["p99_ms"]
    est_p50, est_p99 = sum(stages_p50.values()), sum(stages_p99.values())
    result: dict[str, Any] = {
        "benchmark": "latency",
        "quick": quick,
        "model": {"name": bundle.name, "dir": str(bundle.root) if hasattr(bundle, "root") else None,
                  "backend": type(tracker.engine).__name__},
        "settings": {"rate": rate, "blocksize": blocksize, "hops": h, "blocks": int(n_blocks),
                     "decoder": tracker.decoder.cfg.__dict__, "fed": "unpaced, every block timed",
                     "audio": "rt.synth.sung_melody (voice + accompaniment), looped"},
        "pinned_cpu": pinned,
        "machine": machine,
        "algorithmic": lat.as_dict(),
        "compute": compute,
        "deadline": {"hop_ms": hop_s * 1000, "misses": misses, "miss_percent": 100.0 * misses / max(h, 1),
                     "block_ms": block_s * 1000, "block_misses": block_misses},
        "jitter": jitter,
        "e2e_estimate": {"p50_ms": est_p50, "p99_ms": est_p99, "stages_p50_ms": stages_p50, "stages_p99_ms": stages_p99,
                         "note": "sum of the stages a note-on passes through, with the CFP window counted at its "
                                 "energy-centroid delay: an upper estimate (a loud onset can be detected before the "
                                 "centroid reaches it); the measured figure is `bench e2e`"},
        "wall_s": wall,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plots:
        result["plots"] = write_plots(result, hop_total, out_dir)
    (out_dir / "latency_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "latency_bench.md").write_text(markdown(result))
    return result


def measured_for_budget(result: dict[str, Any]) -> dict[str, float]:
    """Budget keys measured by this benchmark."""
    a, c = result["algorithmic"], result["compute"]
    return {
        GOAL_P50_KEY: result["e2e_estimate"]["p50_ms"],
        GOAL_P99_KEY: result["e2e_estimate"]["p99_ms"],
        "hop_compute_p99_ms": c["hop_total"]["p99_ms"],
        "deadline_miss_percent": result["deadline"]["miss_percent"],
        "resampler_delay_ms": a["resampler"]["ms"],
        "cfp_window_delay_ms": a["cfp_window"]["ms"],
        "model_lookahead_ms": a["model_look_ahead"]["ms"],
        "smoothing_delay_ms": a["decoder_smoothing"]["ms"],
        "hop_wait_worst_ms": a["hop_wait_worst"]["ms"],
        "audio_buffering_ms": a["audio_buffering"]["ms"],
        "cfp_hop_p99_ms": c["cfp"]["p99_ms"],
        "cfp_hop_p999_ms": c["cfp"]["p99.9_ms"],
        "engine_step_p99_ms": c["engine"]["p99_ms"],
        "decode_p99_ms": c["decode"]["p99_ms"],
        "resample_block_p99_ms": c["resample"]["p99_ms"],
        "sinks_p99_ms": c["sinks"]["p99_ms"],
    }


def diagnosis(result: dict[str, Any], budget: dict[str, float]) -> list[str]:
    """Sentences naming the stage that holds each e2e goal back."""
    est = result["e2e_estimate"]
    out = []
    if GOAL_P50_KEY in budget:
        out.append(held_back_by(est["stages_p50_ms"], budget[GOAL_P50_KEY], "e2e note-on p50", FIXED))
    if GOAL_P99_KEY in budget:
        out.append(held_back_by(est["stages_p99_ms"], budget[GOAL_P99_KEY], "e2e note-on p99", FIXED))
    return out


def write_plots(result: dict[str, Any], hop_total_ns: np.ndarray, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    est = result["e2e_estimate"]["stages_p50_ms"]
    names = list(est)
    left = 0.0
    cmap = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        ax1.barh([0], [est[n]], left=left, color=cmap(i % 10), label=f"{n} {est[n]:.2f} ms")
        left += est[n]
    ax1.set_yticks([])
    ax1.set_xlabel("ms")
    ax1.set_title(f"note-on latency by stage (p50 estimate {left:.1f} ms)")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    c = result["compute"]
    stages = ["resample", "cfp", "engine", "decode", "sinks", "hop_total"]
    x = np.arange(len(stages))
    for j, (p, lab) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"), ("p99.9_ms", "p99.9"))):
        ax2.bar(x + (j - 1) * 0.27, [c[s][p] for s in stages], 0.27, label=lab)
    ax2.axhline(2.0, color="r", lw=0.8, ls="--", label="2 ms goal (hop p99)")
    ax2.set_xticks(x, stages)
    ax2.set_ylabel("ms per hop (resample: per block)")
    ax2.set_yscale("log")
    ax2.set_title("measured compute per stage")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir, "latency_stages.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ms = hop_total_ns / 1e6
    if ms.size:
        bins = np.logspace(np.log10(max(ms.min(), 1e-3)), np.log10(max(ms.max(), 1e-2)), 60)
        ax.hist(ms, bins=bins)
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(result["deadline"]["hop_ms"], color="r", ls="--", label="deadline (hop)")
    ax.set_xlabel("compute per 10 ms hop [ms]")
    ax.set_ylabel("hops")
    ax.set_title(f"compute per hop, {ms.size} hops")
    ax.legend()
    fig.tight_layout()
    files.append(save_figure(fig, out_dir, "latency_hist.png"))
    return files


def _machine_line(m: dict[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    return (f"{m['cpu_model']}, {m['cores_usable']}/{m['cores_logical']} cores usable, load {m['load_avg_1min']:.2f} "
            f"(1 min), {m['platform']}; {libs}")


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"# melodyrt bench latency{' (quick mode: checks the machinery, not the speed)' if result['quick'] else ''}", "",
             f"Machine: {_machine_line(result['machine'])}", "",
             f"Model {result['model']['name']} on {result['model']['backend']}; {s['rate']} Hz, {s['blocksize']}-frame blocks, "
             f"{s['hops']} hops ({s['blocks']} blocks) {s['fed']}; pinned to CPU {result['pinned_cpu']}.", "",
             "## Algorithmic latency (what each processor reports)", "", "| stage | samples | ms |", "|---|---:|---:|"]
    for k, v in result["algorithmic"].items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['samples']:.1f} | {v['ms']:.2f} |")
    lines += ["", "## Measured compute (ms; per hop, resample and block_total per block)", "",
              "| stage | p50 | p99 | p99.9 | max | n |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in result["compute"].items():
        lines.append(f"| {k} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | {v['p99.9_ms']:.3f} | {v['max_ms']:.3f} | {v['n']} |")
    d, j = result["deadline"], result["jitter"]
    lines += ["", f"Deadline misses: {d['misses']} of {s['hops']} hops over {d['hop_ms']:.0f} ms ({d['miss_percent']:.3f} %); "
              f"{d['block_misses']} blocks took longer than the {d['block_ms']:.2f} ms block period (a block that completes a hop "
              "carries its engine step; the worker reads from a ring buffer, so such a block is not an xrun: only a hop "
              "over 10 ms is a growing backlog).",
              f"Jitter of compute per hop: sd {j['hop_total_std_ms']:.3f} ms, p99 - p50 {j['hop_total_p99_minus_p50_ms']:.3f} ms, "
              f"max - p50 {j['hop_total_max_minus_p50_ms']:.3f} ms.", "",
              "## Note-on latency estimated from the stages", "", "| stage | p50 path ms | p99 path ms |", "|---|---:|---:|"]
    e = result["e2e_estimate"]
    for k in dict.fromkeys(list(e["stages_p50_ms"]) + list(e["stages_p99_ms"])):
        a, b = e["stages_p50_ms"].get(k), e["stages_p99_ms"].get(k)
        lines.append(f"| {k} | {'' if a is None else f'{a:.2f}'} | {'' if b is None else f'{b:.2f}'} |")
    lines.append(f"| **sum** | **{e['p50_ms']:.2f}** | **{e['p99_ms']:.2f}** |")
    lines += ["", e["note"] + "."]
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return "\n".join(lines) + "\n"

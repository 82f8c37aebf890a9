"""``melodyrt bench peers``: other pitch trackers beside melodyrt, same data, same metrics, same run.

Peers (extra ``[peers]``), each skipped with the reason when it cannot run:

- PESTO (``pesto-pitch``, checkpoint ``mir-1k_g7``) in its streaming mode (``streaming=True``):
  one 10 ms buffer per call at 16 kHz. Trained on MIR-1K: its MIR-1K figures are in-domain.
- aubio ``yinfft`` streaming: 10 ms hops, 64 ms window, at the file's own rate; voiced when it
  answers a pitch (tolerance 0.85, silence gate -50 dB).
- swift-f0 per file (``SwiftF0.detect``). swift-f0 0.3.0 also has ``SwiftF0.stream()``; the bench
  does not use it yet.
- torchcrepe per file (``tiny`` model, viterbi decoding, periodicity > 0.21 voiced): no streaming mode.

For the streaming peers, compute is timed per call (p50/p99/max per 10 ms hop) and their
algorithmic delay is *measured*: the shift (in hops) of their output that maximises raw pitch
accuracy on the synthetic sung melody, whose true f0 is known; their timestamps are shifted
by it before scoring. Per-file peers see the whole file (latency: the file), their cost is
given as a real-time factor.

pesto and torchcrepe import ``torchaudio`` only to read files, which the bench does itself;
where torchaudio cannot load (no build for this torch) a stub module stands in for it.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cfp_bench import summarise

HOP_S = 0.01


def _torchaudio_stub() -> None:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # OSError: its binary does not match the installed torch
        for k in [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]:
            del sys.modules[k]
        stub = types.ModuleType("torchaudio")

        def load(*a: Any, **k: Any) -> Any:
            raise RuntimeError("torchaudio stub (melodyrt bench): reading files is not available")
        stub.load = load  # type: ignore[attr-defined]
        sys.modules["torchaudio"] = stub


def _resample(x: np.ndarray, sr: int, to: int) -> np.ndarray:
    if sr == to:
        return x.astype(np.float32)
    import soxr

    return soxr.resample(x.astype(np.float32), sr, to).astype(np.float32)


class AubioPeer:
    name, streaming = "aubio yinfft (streaming)", True

    def __init__(self) -> None:
        import aubio

        self.aubio = aubio
        self.sr = 0

    def start(self, sr: int) -> None:
        self.sr, self.hop = sr, int(round(HOP_S * sr))
        self.o = self.aubio.pitch("yinfft", int(round(0.064 * sr)), self.hop, sr)
        self.o.set_unit("Hz")
        self.o.set_tolerance(0.85)
        self.o.set_silence(-50)

    def step(self, chunk: np.ndarray) -> tuple[float, bool]:
        f = float(self.o(chunk.astype(np.float32))[0])
        return f, f > 0  # aubio answers 0 Hz below its tolerance or the silence gate


class PestoPeer:
    name, streaming = "PESTO mir-1k_g7 (streaming)", True
    rate = 16000

    def __init__(self) -> None:
        _torchaudio_stub()
        import pesto
        import torch

        self.torch, self.pesto = torch, pesto
        torch.set_num_threads(1)

    def start(self, sr: int) -> None:
        self.sr, self.hop = self.rate, int(round(HOP_S * self.rate))
        self.model = self.pesto.load_model("mir-1k_g7", step_size=HOP_S * 1000, sampling_rate=self.rate,
                                           streaming=True, max_batch_size=1)

    def step(self, chunk: np.ndarray) -> tuple[float, bool]:
        with self.torch.inference_mode():
            pitch, conf, _ = self.model(self.torch.from_numpy(chunk[None, :]), convert_to_freq=True, return_activations=False)
        f = float(pitch.reshape(-1)[-1])
        return f, bool(float(conf.reshape(-1)[-1]) >= 0.5)


class SwiftPeer:
    name, streaming = "swift-f0 (per file)", False

    def __init__(self) -> None:
        from swift_f0 import SwiftF0

        self.det = SwiftF0(threads=1)

    def track(self, x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = self.det.detect(x, sr)
        return r.timestamps, r.pitch_hz, r.confidence >= 0.5


class CrepePeer:
    name, streaming = "torchcrepe tiny (per file)", False

    def __init__(self) -> None:
        _torchaudio_stub()
        import torch
        import torchcrepe

        self.torch, self.crepe = torch, torchcrepe
        torch.set_num_threads(1)

    def track(self, x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = _resample(x, sr, 16000)
        with self.torch.inference_mode():
            f, per = self.crepe.predict(self.torch.from_numpy(y)[None, :], 16000, 160, 50.0, 1100.0, "tiny",
                                        return_periodicity=True, batch_size=512, device="cpu")
        f, per = f[0].numpy().astype(float), per[0].numpy().astype(float)
        return np.arange(f.shape[0]) * 0.01, f, per > 0.21


PEERS: dict[str, Callable[[], Any]] = {"pesto": PestoPeer, "aubio": AubioPeer, "swift-f0": SwiftPeer, "torchcrepe": CrepePeer}
INSTALL = {"pesto": "pip install pesto-pitch", "aubio": "pip install aubio", "swift-f0": "pip install swift-f0",
           "torchcrepe": "pip install torchcrepe"}


def stream(peer: Any, x: np.ndarray, sr: int, timings: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed ``x`` hop by hop; per-hop f0/voicing at the time of the hop's newest sample (no delay removed)."""
    peer.start(sr)
    y = _resample(x, sr, peer.sr)
    hop = peer.hop
    n = y.shape[0] // hop
    f0, v = np.zeros(n), np.zeros(n, bool)
    clock = time.perf_counter_ns
    for k in range(n):
        t0 = clock()
        f0[k], v[k] = peer.step(y[k * hop : (k + 1) * hop])
        if timings is not None:
            timings.append(clock() - t0)
    return (np.arange(n) + 1) * hop / peer.sr, f0, v


def measure_delay(peer: Any, max_hops: int = 40) -> int:
    """Hops of delay that maximise raw pitch accuracy on the synthetic sung melody."""
    from melodyrt.rt.synth import sung_melody

    song = sung_melody(sr=16000, seed=0)
    t, f, v = stream(peer, song.audio, 16000)
    ref = song.f0_at(t)
    best, best_acc = 0, -1.0
    for d in range(max_hops + 1):
        r = ref[: ref.shape[0] - d] if d else ref
        est = f[d:]
        ok = (r > 0) & (est > 0)
        acc = float(np.mean(np.abs(1200 * np.log2(np.where(ok, est, 1) / np.where(ok, r, 1)))[ok] <= 50)) * ok.mean() if ok.any() else 0.0
        if acc > best_acc:
            best, best_acc = d, acc
    return best


def add_peers(names: list[str], result_peers: dict[str, Any]) -> Callable[..., None]:
    """An ``extra`` hook for :func:`melodyrt.bench.accuracy_bench.run` that scores the peers on the same tracks."""
    from .accuracy_bench import score_runner

    def extra(tracks: list[Any], per_condition: dict[str, Any], latency: dict[str, float], max_seconds: float | None) -> None:
        for key in names:
            try:
                peer = PEERS[key]()
            except Exception as exc:  # not installed, or broken against this torch
                result_peers[key] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                                                f"(install: {INSTALL[key]})"}
                continue
            info: dict[str, Any] = {"name": peer.name, "streaming": peer.streaming}
            try:
                if peer.streaming:
                    delay = measure_delay(peer)
                    info["measured_delay_ms"] = delay * HOP_S * 1000
                    timings: list[int] = []

                    def run(x: np.ndarray, sr: int, peer: Any = peer, delay: int = delay, timings: list = timings) -> Any:
                        t, f, v = stream(peer, x, sr, timings)
                        return t - delay * HOP_S, f, v
                    t0 = time.perf_counter()
                    score_runner(peer.name, tracks, run, per_condition, max_seconds)
                    info["compute_per_hop"] = summarise(np.asarray(timings))
                    info["deadline_misses"] = int((np.asarray(timings) > HOP_S * 1e9).sum())
                    latency[peer.name] = info["measured_delay_ms"]
                else:
                    audio_s = [0.0]

                    def run(x: np.ndarray, sr: int, peer: Any = peer, audio_s: list = audio_s) -> Any:
                        audio_s[0] += x.shape[0] / sr
                        return peer.track(x, sr)
                    t0 = time.perf_counter()
                    score_runner(peer.name, tracks, run, per_condition, max_seconds)
                    info["x_realtime"] = audio_s[0] / (time.perf_counter() - t0)
                    info["latency"] = "whole file (no streaming mode used)"
                info["wall_s"] = time.perf_counter() - t0
            except Exception as exc:
                info["skipped"] = f"failed: {type(exc).__name__}: {exc}"
            result_peers[key] = info
    return extra


def markdown_peers(peers: dict[str, Any]) -> str:
    lines = ["## Peers", "", "| peer | mode | latency | compute |", "|---|---|---|---|"]
    for k, p in peers.items():
        if "skipped" in p:
            lines.append(f"| {k} | skipped | {p['skipped']} | |")
        elif p["streaming"]:
            c = p["compute_per_hop"]
            lines.append(f"| {p['name']} | streaming, 10 ms hops | {p['measured_delay_ms']:.0f} ms (measured alignment) | "
                         f"per hop p50 {c['p50_ms']:.3f} / p99 {c['p99_ms']:.3f} / max {c['max_ms']:.2f} ms, "
                         f"{p['deadline_misses']} over 10 ms |")
        else:
            lines.append(f"| {p['name']} | per file | {p['latency']} | {p['x_realtime']:.1f} x real time |")
    return "\n".join(lines) + "\n"


def run(bundle: Any, data: Path, out_dir: Path, names: list[str], **kw: Any) -> dict[str, Any]:
    import json

    from .accuracy_bench import run as accuracy_run

    peers: dict[str, Any] = {}
    result = accuracy_run(bundle, data, out_dir, sweep=False, extra=add_peers(names, peers), name="peers",
                          own="melodyrt", **kw)
    result["peers"] = peers
    (out_dir / "peers_bench.json").write_text(json.dumps(result, indent=1))
    md = (out_dir / "peers_bench.md").read_text()
    (out_dir / "peers_bench.md").write_text(md + "\n" + markdown_peers(peers))
    return result

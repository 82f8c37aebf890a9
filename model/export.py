"""``melodyrt export``: a trained checkpoint to the bundle the runtime loads (no torch there).

A bundle folder holds ``step.onnx`` (FP32, the ONNX Runtime default), ``step.fp16.onnx``
(FP16 end to end, inputs and outputs included, for strongly typed TensorRT networks),
optionally ``step.int8.onnx`` (static QDQ int8, float inputs and outputs, calibrated on
training-singer clips; ONNX Runtime uses it when ``model.json`` says ``cpu_precision: int8``),
``checkpoint.pt`` (weights for the torch reference backend) and ``model.json``: the
metadata the runtime checks before it runs anything (front end, normalisation
statistics, delay, state names and shapes, hashes) plus the export-time validation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from melodyrt.rt.bundle import CARRY, FORMAT, FORMAT_VERSION, METADATA_FILE, StateSpec, sha256_of
from melodyrt.rt.cfp import cfp_from_signal
from melodyrt.rt.config import CfpConfig, NormConfig, _from_mapping
from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.window_sums import WindowSums

from .streaming import StreamingStep, export_step_onnx
from .train import load_checkpoint, model_from_checkpoint

#: Version of the shipped weights; bump whenever model/weights/rt changes.
MODEL_VERSION = "0.4.0"


def validation_frames(cfp: CfpConfig, stats, n_frames: int = 300, audio: np.ndarray | None = None) -> np.ndarray:
    """Normalised CFP frames (T, 3, 360) of real audio (default: the bundled sung melody)."""
    if audio is None:
        from melodyrt.rt.synth import sung_melody

        audio = sung_melody(sr=cfp.sample_rate, seed=7).audio
    frames = cfp_from_signal(np.asarray(audio, np.float32), cfp, NormConfig(mode="fixed"), stats)
    return frames[:n_frames]


def _ort_run(path: Path, frames: np.ndarray, specs: list[StateSpec]) -> np.ndarray:
    """Plain ``session.run`` from the zero state, windows kept by :class:`WindowSums`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    carries = [s for s in specs if s.kind == CARRY]
    st = [np.zeros((1, *s.shape), frames.dtype) for s in carries]
    windows = WindowSums(specs, 1, frames.dtype)
    outs = ["salience"] + [s.output_name for s in carries] + [s.output_name for s in windows.specs]
    res = []
    for t in range(frames.shape[0]):
        feeds = {"frame": frames[t : t + 1]} | {s.input_name: a for s, a in zip(carries, st)}
        feeds |= {s.input_name: a for s, a in zip(windows.specs, windows.sum_in)}
        sal, *new = sess.run(outs, feeds)
        st = new[: len(carries)]
        windows.push(new[len(carries):])
        res.append(sal[0])
    return np.stack(res).astype(np.float32)


@torch.no_grad()
def _torch_run(step: StreamingStep, frames: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    x = torch.from_numpy(frames).to(dtype).permute(1, 2, 0)[None]  # (1, 3, 360, T)
    sal, _ = step.to(dtype).run(x)
    return sal[0].float().numpy().T


def calibration_sequences(data: str | Path, ckpt: dict[str, Any], cfp: CfpConfig, stats: Any,
                          tracks: int = 8, frames: int = 1000) -> tuple[list[np.ndarray], list[str]]:
    """Normalised CFP frames (T, 3, 360) of training-singer clips, to calibrate int8 ranges.

    Never a validation singer's clip (the checkpoint's ``val_singers``), so the int8 model's
    validation scores stay honest. Tracks are spread over the sorted training list; each
    gives its 0 dB mix and, for multitrack clips, its dry voice (the two conditions the
    model card scores).

    Returns
    -------
    sequences : list of ndarray [shape=(T, 3, 360)]
    names : list of str
        ``track/variant`` of each sequence.
    """
    from .datasets import discover, split_by_singer
    from .features import render_variant, variants_of

    val = tuple((ckpt.get("train_config") or {}).get("val_singers") or ())
    _, all_tracks = discover(data)
    train, _ = split_by_singer(all_tracks, val)
    if not train:
        raise MelodyRTError(f"{data}: no training-singer clips to calibrate int8 on (validation singers {val})")
    pick = [train[i] for i in np.linspace(0, len(train) - 1, min(tracks, len(train))).round().astype(int)]
    seqs, names = [], []
    for t in pick:
        for variant in [v for v in ("mix0", "voice") if v in variants_of(t)] or ["mix"]:
            audio = render_variant(t, variant, cfp.sample_rate)
            seqs.append(cfp_from_signal(audio, cfp, NormConfig(mode="fixed"), stats)[:frames])
            names.append(f"{t.name}/{variant}")
    return seqs, names


def export_bundle(checkpoint: str | Path, out_dir: str | Path, n_validate: int = 300,
                  audio: np.ndarray | None = None, name: str | None = None,
                  version: str = MODEL_VERSION, int8_data: str | Path | None = None,
                  cpu_precision: str = "fp32", int8_tracks: int = 8) -> dict[str, Any]:
    """Export ``checkpoint`` into ``out_dir`` and validate it.

    ``name`` (default: the model config's name) and ``version`` label the bundle
    (``model_name``, ``model_version`` in ``model.json``; ``ModelBundle.name``).
    ``int8_data`` (a data folder) also writes ``step.int8.onnx``, calibrated on its
    training-singer clips (``int8_tracks`` of them, :func:`calibration_sequences`);
    ``cpu_precision`` ("fp32" or "int8") is the file ONNX Runtime runs by default.

    Returns
    -------
    dict
        The metadata written to ``model.json``.

    Raises
    ------
    MelodyRTError
        When the checkpoint is not causal or the ONNX Runtime output disagrees with torch
        beyond 1e-4 (FP32).
    """
    threads = torch.get_num_threads()
    # One thread: frame-by-frame steps are tiny, and spinning OpenMP workers on a busy
    # machine made them ten times slower.
    torch.set_num_threads(1)
    try:
        return _export_bundle(checkpoint, out_dir, n_validate, audio, name, version, int8_data, cpu_precision,
                              int8_tracks)
    finally:
        torch.set_num_threads(threads)


def _export_bundle(checkpoint: str | Path, out_dir: str | Path, n_validate: int,
                   audio: np.ndarray | None, name: str | None, version: str,
                   int8_data: str | Path | None = None, cpu_precision: str = "fp32",
                   int8_tracks: int = 8) -> dict[str, Any]:
    if cpu_precision not in ("fp32", "int8"):
        raise MelodyRTError(f"cpu_precision must be fp32 or int8, got {cpu_precision!r}")
    if cpu_precision == "int8" and int8_data is None:
        raise MelodyRTError("an int8 default needs the int8 file: give the data to calibrate it on (--int8-data DIR)")
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    if not model.cfg.causal:
        raise MelodyRTError(f"{checkpoint} holds the non-causal {model.cfg.name!r} model; only causal models stream")
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    step = StreamingStep(model).eval()
    fp32_path = export_step_onnx(step, out / "step.onnx", sidecar=False)
    step16 = copy.deepcopy(step).half()
    fp16_path = export_step_onnx(step16, out / "step.fp16.onnx", sidecar=False, dtype=torch.float16)
    for p in (fp32_path, fp16_path):
        onnx.checker.check_model(str(p), full_check=True)

    slim = {k: v for k, v in ckpt.items() if k in ("format", "model_config", "train_config", "cfp_config", "stats")}
    slim["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("aux.")}
    slim["state"] = {"note": "weights only; see model.json for provenance"}
    torch.save(slim, out / "checkpoint.pt")

    frames = validation_frames(cfp, stats, n_validate, audio)
    specs = step.state_specs()
    ref = _torch_run(step, frames, torch.float32)
    ort32 = _ort_run(fp32_path, frames, specs)
    err32 = float(np.abs(ort32 - ref).max())
    if err32 > 1e-4:
        raise MelodyRTError(f"ONNX Runtime FP32 differs from torch by {err32:.2e} (> 1e-4): export is broken")
    validation: dict[str, Any] = {
        "frames": int(frames.shape[0]),
        "features": "bundled sung melody (rt.synth)" if audio is None else "caller audio",
        "fp32_ort_vs_torch_max_abs": err32,
    }
    t16 = _torch_run(copy.deepcopy(step).half(), frames, torch.float16)
    validation["fp16_torch_half_vs_fp32_max_abs"] = float(np.abs(t16 - ref).max())
    validation["fp16_torch_half_argmax_agreement"] = float((t16.argmax(1) == ref.argmax(1)).mean())
    try:
        o16 = _ort_run(fp16_path, frames.astype(np.float16), specs)
        validation["fp16_ort_vs_fp32_max_abs"] = float(np.abs(o16 - ref).max())
        validation["fp16_ort_argmax_agreement"] = float((o16.argmax(1) == ref.argmax(1)).mean())
    except Exception as exc:  # ORT's CPU provider lacks some FP16 kernels
        validation["fp16_ort"] = f"not run: {str(exc).splitlines()[0][:200]}"
    validation["fp16_arithmetic_note"] = (
        "torch float16 on CPU computes in FP16 (honest FP16 arithmetic); ONNX Runtime's CPU provider may "
        "insert casts and compute some ops in FP32, so its figure mostly reflects weight rounding"
    )

    files = [fp32_path, fp16_path]
    onnx_files = {"fp32": fp32_path.name, "fp16": fp16_path.name}
    io_dtypes = {"fp32": "float32 (all inputs and outputs)", "fp16": "float16 (all inputs and outputs)"}
    if int8_data is not None:
        from .size_sweep import quantize_step

        seqs, names = calibration_sequences(int8_data, ckpt, cfp, stats, tracks=int8_tracks)
        int8_path = quantize_step(fp32_path, out / "step.int8.onnx", "qdq", specs, seqs, every=4)
        onnx.checker.check_model(str(int8_path))
        o8 = _ort_run(int8_path, frames, specs)
        validation["int8_calibration"] = {"clips": names, "frames": int(sum(x.shape[0] for x in seqs)), "every": 4,
                                          "method": "static QDQ, MinMax, per-channel int8 weights, uint8 activations"}
        validation["int8_ort_vs_fp32_max_abs"] = float(np.abs(o8 - ref).max())
        validation["int8_ort_argmax_agreement"] = float((o8.argmax(1) == ref.argmax(1)).mean())
        files.append(int8_path)
        onnx_files["int8"] = int8_path.name
        io_dtypes["int8"] = "float32 (all inputs and outputs; int8 inside)"

    tc = ckpt.get("train_config", {})
    run = ckpt.get("state", {})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": name or model.cfg.name,
        "model_version": version,
        "onnx": onnx_files,
        "cpu_precision": cpu_precision,
        "sha256": {p.name: sha256_of(p) for p in (*files, out / "checkpoint.pt")},
        "io_dtypes": io_dtypes,
        "sample_rate": cfp.sample_rate,
        "hop": cfp.hop,
        "cfp": _plain(ckpt["cfp_config"]),
        "norm": {"mode": "fixed", "offset": np.round(stats.offset, 6).tolist(), "scale": np.round(stats.scale, 6).tolist()},
        "n_bins": 360,
        "n_classes": 361,
        "delay_frames": int(model.delay_frames),
        "receptive_field_frames": int(step.receptive_field_frames),
        "states": [s.to_meta() for s in specs],
        "model_config": model.cfg.to_dict(),
        "trained_on": {"data": tc.get("data"), "val_singers": tc.get("val_singers"), "ablation": tc.get("ablation"),
                       # a fine-tuned model's steps start from these weights, not from scratch
                       "init_from": run.get("init_from") or None, "init_modules": list(run.get("init_modules") or ()) or None},
        "training_state": {k: run.get(k) for k in ("epoch", "global_step", "best_oa", "wall_seconds")},
        "validation": validation,
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def _plain(d: Any) -> Any:
    return json.loads(json.dumps(d))

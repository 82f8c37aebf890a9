"""Engines: parity across the backends present, per-stream state, reset, bad model files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from melodyrt.rt.bundle import FORMAT_VERSION, load_bundle
from melodyrt.rt.engine import BackendUnavailable, OrtEngine, available_backends, create_engine
from melodyrt.rt.errors import MelodyRTError, ModelError


def frames(rng, n=1):
    return rng.standard_normal((n, 3, 360)).astype(np.float32)


def run(engine, seq, state=None):
    return np.stack([engine.step(f[None], state)[0][0].copy() for f in seq])


def test_ort_matches_torch_reference_over_a_sequence(untrained_bundle, rng):
    pytest.importorskip("torch")
    seq = frames(rng, 30)
    ort = run(create_engine("ort", untrained_bundle), seq)
    ref = run(create_engine("torch", untrained_bundle), seq)
    assert np.abs(ort - ref).max() <= 1e-5
    assert np.allclose(ort.sum(axis=1), 1.0, atol=1e-5)


def test_streams_in_one_batch_are_independent(untrained_bundle, rng):
    eng = OrtEngine(untrained_bundle)
    seq = frames(rng, 12)
    alone = run(eng, seq, eng.new_state(1))
    st = eng.new_state(4)
    other = frames(rng, 12 * 4).reshape(12, 4, 3, 360)
    batched = []
    for t in range(12):
        x = other[t].copy()
        x[2] = seq[t]  # stream 2 sees the same frames as the lone stream
        batched.append(eng.step(x, st)[0][2].copy())
    assert np.abs(np.stack(batched) - alone).max() <= 1e-5


def test_reset_of_one_stream_leaves_the_others(untrained_bundle, rng):
    eng = OrtEngine(untrained_bundle)
    st = eng.new_state(2)
    seq = frames(rng, 8)
    for f in seq:
        eng.step(np.stack([f, f]), st)
    eng.reset(st, streams=[0])
    out = eng.step(np.stack([seq[0], seq[0]]), st)[0].copy()
    fresh = eng.step(seq[0][None], eng.new_state(1))[0][0]
    assert np.abs(out[0] - fresh).max() <= 1e-6  # stream 0 starts over
    assert np.abs(out[1] - fresh).max() > 1e-6  # stream 1 kept its history


def test_engine_reset_restarts_the_default_stream(untrained_bundle, rng):
    eng = OrtEngine(untrained_bundle)
    seq = frames(rng, 10)
    first = run(eng, seq)
    eng.reset()
    assert np.array_equal(run(eng, seq), first)


def test_fp16_model_runs_and_agrees(untrained_bundle, rng):
    try:
        eng = OrtEngine(untrained_bundle, precision="fp16")
    except ModelError as exc:  # pragma: no cover - depends on the ORT build
        pytest.skip(f"ONNX Runtime cannot run the FP16 model on this CPU: {exc}")
    seq = frames(rng, 10)
    a = run(eng, seq).astype(np.float32)
    b = run(OrtEngine(untrained_bundle), seq)
    assert np.abs(a - b).max() < 1e-3


def test_corrupt_onnx_is_a_clear_error(untrained_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(untrained_bundle.root, root)
    (root / "step.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="does not match its metadata hash"):
        OrtEngine(load_bundle(root))


def test_mismatched_metadata_is_refused(untrained_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(untrained_bundle.root, root)
    meta = json.loads((root / "model.json").read_text())
    meta["format_version"] = 99
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format version 99"):
        load_bundle(root)
    meta["format_version"] = FORMAT_VERSION
    meta["cfp"]["hop"] = 160
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="hop 160"):
        load_bundle(root)
    meta["cfp"]["hop"] = 80
    window = next(s for s in meta["states"] if s["kind"] == "window_sum")
    window["kind"] = "ring"
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown kind 'ring'"):
        load_bundle(root)
    window["kind"], window["window"] = "window_sum", 1
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="needs window >= 2"):
        load_bundle(root)
    (root / "model.json").write_text("{broken")
    with pytest.raises(ModelError, match="cannot read"):
        load_bundle(root)
    with pytest.raises(ModelError, match="not an exported melodyrt model"):
        load_bundle(tmp_path)


def test_state_names_in_metadata_must_match_the_graph(untrained_bundle, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(untrained_bundle.root, root)
    meta = json.loads((root / "model.json").read_text())
    meta["states"][0]["name"] = "renamed"
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="inputs do not match"):
        OrtEngine(load_bundle(root))


def test_missing_backends_name_their_extra(untrained_bundle):
    if not available_backends()["tensorrt"]:
        with pytest.raises(BackendUnavailable, match=r"melodyrt\[tensorrt\]"):
            create_engine("tensorrt", untrained_bundle)
    with pytest.raises(MelodyRTError, match="unknown backend"):
        create_engine("cuda", untrained_bundle)
    assert create_engine("auto", untrained_bundle).name in ("onnxruntime", "tensorrt")


def test_export_metadata_and_validation(untrained_bundle):
    meta = untrained_bundle.meta
    v = meta["validation"]
    assert v["fp32_ort_vs_torch_max_abs"] <= 1e-4
    assert 0.0 <= v["fp16_torch_half_argmax_agreement"] <= 1.0
    assert set(meta["onnx"]) == {"fp32", "fp16"}
    assert len(meta["states"]) == len(untrained_bundle.states) > 0
    assert meta["delay_frames"] == 0
    import onnx

    m = onnx.load(str(untrained_bundle.onnx_path("fp16")))
    elem = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    assert elem["frame"] == onnx.TensorProto.FLOAT16
    assert m.opset_import[0].version >= 17


def test_int8_export_calibrates_on_training_singers_and_tracks_like_fp32(tmp_path):
    """``melodyrt export --int8-data`` on the packaged (trained) checkpoint: the int8 file is
    calibrated only on training-singer clips, the bundle runs it by default, and the sung
    melody it tracks stays within a semitone of what FP32 tracks on nearly every frame."""
    pytest.importorskip("torch", reason="exporting needs the [train] extra (torch)")
    from pathlib import Path

    from melodyrt.model.export import export_bundle
    from melodyrt.rt.synth import sung_melody
    from melodyrt.rt.tracker import transcribe_signal

    root = Path(__file__).resolve().parents[1]
    ckpt = root / "model" / "weights" / "rt" / "checkpoint.pt"
    data = Path(__import__("os").environ.get("MELODYRT_DATA", root.parent / "shared" / "data" / "mir1k8k"))
    if not ckpt.exists() or not (data / "audio").is_dir():
        pytest.skip(f"needs the packaged checkpoint and MIR-1K at {data}")
    with pytest.raises(MelodyRTError, match="int8-data"):
        export_bundle(ckpt, tmp_path / "nodata", n_validate=24, cpu_precision="int8")
    meta = export_bundle(ckpt, tmp_path / "b", n_validate=100, int8_data=data, cpu_precision="int8", int8_tracks=1)
    v = meta["validation"]
    clips = v["int8_calibration"]["clips"]
    assert clips and not any(c.split("_")[0] in ("Kenshin", "annar") for c in clips)
    assert meta["onnx"]["int8"] == "step.int8.onnx" and meta["cpu_precision"] == "int8"
    bundle = load_bundle(tmp_path / "b")
    int8, fp32 = OrtEngine(bundle), OrtEngine(bundle, precision="fp32")
    assert int8.precision == "int8" and fp32.precision == "fp32"
    song = sung_melody(sr=8000, seed=2)
    got = {}
    for name, engine in (("int8", int8), ("fp32", fp32)):
        from melodyrt.rt.tracker import Tracker

        res = transcribe_signal(song.audio, 8000, tracker=Tracker(8000, bundle, engine=engine))
        got[name] = np.array([f.f0_hz if f.voiced else 0.0 for f in res.frames])
    both = (got["int8"] > 0) & (got["fp32"] > 0)
    assert both.mean() > 0.5
    cents = 1200 * np.abs(np.log2(got["int8"][both] / got["fp32"][both]))
    assert np.mean(cents < 50) > 0.95
    assert np.mean((got["int8"] > 0) == (got["fp32"] > 0)) > 0.9

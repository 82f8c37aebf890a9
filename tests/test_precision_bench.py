"""The precision study's machinery: int8 copies of a step, their bundles, and the study on two clips.

The figures themselves (model card, "Inference precision and size") come from
``python -m melodyrt.bench.engine_bench precision`` on the shipped model; with the untrained
bundle these tests check that int8 copies load, stream and stay close to FP32, not accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the study imports the model package (the [train] extra)")

from melodyrt.bench.engine_bench import precision_study, tracker_frames, variant_bundle  # noqa: E402
from melodyrt.model.size_sweep import INT8_KINDS, quantize_step  # noqa: E402
from melodyrt.rt.engine import OrtEngine  # noqa: E402
from melodyrt.rt.errors import ModelError  # noqa: E402

DATA = Path(os.environ.get("MELODYRT_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k")


def _stream(engine: OrtEngine, frames: np.ndarray) -> np.ndarray:
    engine.reset()
    return np.stack([engine.step(f[None])[0][0].copy() for f in frames])


@pytest.mark.parametrize("kind", INT8_KINDS)
def test_int8_copy_streams_close_to_fp32(untrained_bundle, song_8k, tmp_path, kind):
    frames = tracker_frames(untrained_bundle, [(song_8k.audio[: 4 * 8000], 8000)])[0]
    assert frames.shape[1:] == (3, 360) and frames.shape[0] > 300
    q = quantize_step(untrained_bundle.onnx_path("fp32"), tmp_path / "q.onnx", kind,
                      list(untrained_bundle.states), [frames[:200]], every=4)
    bundle = variant_bundle(untrained_bundle, q, tmp_path / "bundle")
    ref = _stream(OrtEngine(untrained_bundle), frames)
    got = _stream(OrtEngine(bundle), frames)
    assert got.shape == ref.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-4)  # still a softmax over the 361 rows
    # quantized carries and window sums must not drift: the frames after calibration (the
    # last third) stay as close as the first; 0.1 is loose for 8-bit arithmetic on a
    # near-uniform untrained softmax and catches a broken state feed by orders of magnitude
    diff = np.abs(got - ref).max(1)
    assert diff.max() < 0.1
    third = len(diff) // 3
    assert diff[-third:].max() <= 4 * diff[:third].max() + 1e-3


def test_variant_bundle_is_hash_checked(untrained_bundle, tmp_path):
    bundle = variant_bundle(untrained_bundle, untrained_bundle.onnx_path("fp32"), tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["onnx"] == {"fp32": "step.onnx"} and set(meta["sha256"]) == {"step.onnx"}
    with open(tmp_path / "b" / "step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="hash"):
        OrtEngine(bundle)


def test_precision_study_on_two_clips(untrained_bundle, tmp_path):
    if not (DATA / "audio").is_dir():
        pytest.skip(f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
    r = precision_study(str(untrained_bundle.root), DATA, tmp_path, rounds=2, block=10, max_tracks=2,
                        accuracy=["int8 qdq"])
    assert [t["engine"] for t in r["timing"]] == ["fp32", "fp16"] + [f"int8 {k}" for k in INT8_KINDS]
    assert all(t["p50_ms"] > 0 and t["n"] == 20 for t in r["timing"])
    assert set(r["scores"]) == {f"{n}|{c}|{k}" for n in ("fp32", "int8 qdq") for c in ("mix", "voice")
                                for k in ("eval", "live")}
    for c in ("mix", "voice"):
        self_eq = r["equivalence"][f"fp32|{c}"]
        assert self_eq["max_abs"] == 0 and self_eq["voicing_agreement"] == 1 and self_eq["pitch_within_50c"] == 1
    assert set(r["drift_per_minute"]) == {"fp16"} | {f"int8 {k}" for k in INT8_KINDS}
    md = (tmp_path / "precision_bench.md").read_text()
    assert "int8 qdq" in md and "load average" in md

"""Shared fixtures: a seeded generator, synthetic signals with known pitch, a list sink.

The synthesis itself lives in :mod:`melodyrt.rt.synth` so the demo and the benchmarks use
the same signals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.synth import sung_melody


class ListSink:
    """A sink that keeps every frame it is sent and counts ``close()`` calls."""

    latency_samples = 0

    def __init__(self) -> None:
        self.frames: list[PitchFrame] = []
        self.closed = 0

    def send(self, frame: PitchFrame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def list_sink() -> ListSink:
    """A fresh :class:`ListSink`."""
    return ListSink()

HERE = Path(__file__).resolve().parent


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator with a fixed seed: every run sees the same random numbers."""
    return np.random.default_rng(20251125)


@pytest.fixture(scope="session")
def song_8k():
    """The demo melody (voice + accompaniment) at 8 kHz, with its per-sample f0."""
    return sung_melody(sr=8000, seed=0)


@pytest.fixture(scope="session")
def speechy_8k() -> np.ndarray:
    """Two seconds of the demo mix at 8 kHz, float64: a realistic, never-silent test signal."""
    return sung_melody(sr=8000, seed=3).audio[: 2 * 8000].astype(np.float64)


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory):
    """An exported bundle of a randomly initialised ``rt`` model (needs torch).

    Pitch accuracy is meaningless with it; it exercises export, engines and the
    streaming path exactly as a trained bundle would.
    """
    pytest.importorskip("torch", reason="exporting a model needs the [train] extra (torch)")
    import torch

    from melodyrt.model.export import export_bundle
    from melodyrt.model.network import build_model
    from melodyrt.model.train import RunState, save_checkpoint
    from melodyrt.model.train_config import TrainConfig
    from melodyrt.rt.cfp import FeatureStats

    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    model = build_model("rt").eval()
    stats = FeatureStats(np.full((3, 360), 0.5), np.full((3, 360), 0.8))
    save_checkpoint(root / "untrained.pt", model, TrainConfig(), stats, RunState(history=[]))
    export_bundle(root / "untrained.pt", root / "bundle", n_validate=24)
    from melodyrt.rt.bundle import load_bundle

    return load_bundle(root / "bundle")

"""Shared fixtures: a seeded generator and synthetic signals with known pitch.

The synthesis itself lives in :mod:`melodyrt.rt.synth` so the demo and the benchmarks use
the same signals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.synth import sung_melody

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

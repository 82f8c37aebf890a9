"""Host-side windows of the streaming step: exact sums, per-stream reset, no drift."""
from __future__ import annotations

import numpy as np
import pytest

from melodyrt.rt.bundle import StateSpec
from melodyrt.rt.window_sums import WindowSums

SPECS = [
    StateSpec("conv", (3, 2, 360)),  # a carry: not kept here
    StateSpec("a", (4, 1, 6), "window_sum", 5),
    StateSpec("b", (2, 1, 3), "window_sum", 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sum_in_is_the_sum_of_the_last_w_minus_1_frames(rng, dtype):
    ws = WindowSums(SPECS, 3, dtype)
    assert [s.name for s in ws.specs] == ["a", "b"]
    assert all(a.dtype == dtype for a in ws.sum_in + ws.frame_out)
    history: list[list[np.ndarray]] = []
    for _ in range(40):
        new = [rng.standard_normal((3, *s.shape)).astype(dtype) for s in ws.specs]
        assert ws.push(new) is ws.sum_in
        history.append(new)
        for k, s in enumerate(ws.specs):
            past = [h[k].astype(np.float64) for h in history[-(s.window - 1):]]
            want = np.sum(past, axis=0).astype(dtype)
            np.testing.assert_array_equal(ws.sum_in[k], want)


def test_zeroing_some_streams_empties_only_their_windows(rng):
    ws = WindowSums(SPECS, 2)
    for _ in range(6):
        ws.push([rng.random((2, *s.shape), np.float32) for s in ws.specs])
    kept = [a[1].copy() for a in ws.sum_in]
    ws.zero([0])
    assert all(not a[0].any() for a in ws.sum_in)
    assert all(np.array_equal(a[1], k) for a, k in zip(ws.sum_in, kept))
    one = [np.ones((2, *s.shape), np.float32) for s in ws.specs]
    ws.push(one)
    assert all(np.all(a[0] == 1) for a in ws.sum_in)  # stream 0 restarted from an empty window


def test_no_drift_over_a_long_stream(rng):
    """After W-1 silent frames the sum is exactly zero again, even after 100k frames spanning
    six decades; a float32 running sum is off by far more after the same stream."""
    spec = StateSpec("a", (8, 1, 16), "window_sum", 12)
    ws = WindowSums([spec], 1)
    f32_sum = np.zeros((1, *spec.shape), np.float32)
    ring = []
    for _ in range(100_000 // 50):
        block = (rng.random((50, 1, *spec.shape)) * 10.0 ** rng.integers(-3, 3, (50, 1, 8, 1, 1))).astype(np.float32)
        for f in block:
            ws.push([f])
            ring.append(f)
            f32_sum += f
            if len(ring) > spec.window - 1:
                f32_sum -= ring.pop(0)
    for _ in range(spec.window - 1):
        ws.push([np.zeros((1, *spec.shape), np.float32)])
        f32_sum -= ring.pop(0)
    assert not ws.sum_in[0].any()
    assert np.abs(f32_sum).max() > 1e-4  # what the float64 sum avoids

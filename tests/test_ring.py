"""RingBuffer against collections.deque: random writes and reads, overflow drops included."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from melodyrt.rt.ring import RingBuffer


@pytest.mark.parametrize("capacity", (1, 7, 64, 257))
def test_ring_matches_deque_model(capacity, rng):
    ring = RingBuffer(capacity)
    model: deque[float] = deque()
    dropped = 0
    counter = 0.0
    for _ in range(3000):
        if rng.random() < 0.55:
            n = int(rng.integers(0, 2 * capacity + 3))
            block = (counter + np.arange(n)).astype(np.float32)
            counter += n
            room = capacity - len(model)
            model.extend(block[:room].tolist())  # the newest samples that do not fit are dropped
            dropped += max(0, n - room)
            assert ring.write(block) == min(n, room)
        else:
            n = int(rng.integers(0, 2 * capacity + 3))
            out = np.full(n, -1.0, np.float32)
            got = ring.read(out)
            expect = [model.popleft() for _ in range(min(n, len(model)))]
            assert got == len(expect)
            np.testing.assert_array_equal(out[:got], np.array(expect, np.float32))
            assert np.all(out[got:] == -1.0), "read wrote past what it returned"
        assert len(ring) == len(model)
        assert ring.dropped == dropped


def test_reset_empties_without_reallocating(rng):
    ring = RingBuffer(16)
    backing = ring._buf
    ring.write(rng.standard_normal(20).astype(np.float32))
    ring.reset()
    assert len(ring) == 0 and ring.dropped == 0 and ring._buf is backing


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        RingBuffer(0)

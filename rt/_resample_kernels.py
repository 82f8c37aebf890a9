"""Numba kernel of the streaming polyphase resampler (:mod:`melodyrt.rt.resample`).

Private: the kernel writes into arrays the caller owns and validates nothing; the public
:class:`~melodyrt.rt.resample.StreamingResampler` sizes the buffers and checks its input once.
``cache=True`` keeps the compiled code on disk, so a stream never waits for the compiler;
:func:`warm_up` compiles (or loads) the one signature the stream uses.

State vector (int64, length 4), carried across calls:

- ``state[0]``: input samples consumed since the start of the stream;
- ``state[1]``: output samples emitted since the start of the stream;
- ``state[2]``: samples held in ``hist`` (``hist[0]`` is input sample ``state[0] - state[2]``;
  before the stream starts ``hist`` holds ``taps_per_phase - 1`` zeros standing for the
  samples at negative times);
- ``state[3]``: non-finite input samples replaced by 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

IN_TOTAL, OUT_TOTAL, HELD, SANITISED = 0, 1, 2, 3
STATE_SIZE = 4


@njit(cache=True, nogil=True)
def polyphase_block(x, n_x, hist, state, phases, up, down, out_stop, out):  # pragma: no cover - numba
    """Append ``x[:n_x]`` to the history and emit every output sample now due.

    Output ``m`` is ``sum_i phases[p, i] * in[n - K + 1 + i]`` with ``n = (m * down) // up``,
    ``p = (m * down) % up`` and ``K = phases.shape[1]`` (each phase row is stored reversed, so
    the inner loop runs forward through memory). Output ``m`` is due once ``m <
    (inputs consumed) * up // down`` and ``m < out_stop``. The sum for a given ``m`` always
    runs over the same numbers in the same order, so the result does not depend on how the
    input was cut into blocks.

    Parameters
    ----------
    x : float32 (n,) -- new input (non-finite samples are written as 0 and counted).
    hist : float32 (cap,) -- history; ``cap >= K + ceil(down / up) + n_x``.
    state : int64 (4,) -- see the module docstring; updated in place.
    phases : float64 (up, K)
    out : float32 -- receives the output; long enough for ``n_x * up // down + 1`` samples.

    Returns
    -------
    n_out : int -- samples written to ``out[:n_out]``.
    """
    n_in = state[0]
    m = state[1]
    held = state[2]
    k_taps = phases.shape[1]
    bad = 0
    for k in range(n_x):
        v = x[k]
        if not math.isfinite(v):
            v = 0.0
            bad += 1
        hist[held + k] = v
    held += n_x
    n_in += n_x
    base = n_in - held  # input index of hist[0]
    due = (n_in * up) // down
    if due > out_stop:
        due = out_stop
    j = 0
    while m < due:
        num = m * down
        n_m = num // up
        p = num - n_m * up
        s = n_m - (k_taps - 1) - base
        acc = 0.0
        for i in range(k_taps):
            acc += phases[p, i] * hist[s + i]
        out[j] = acc
        j += 1
        m += 1
    # Keep only what the next output needs: inputs from (m*down)//up - (K-1) on.
    drop = (m * down) // up - (k_taps - 1) - base
    if drop > 0:
        keep = held - drop
        for i in range(keep):
            hist[i] = hist[drop + i]
        held = keep
    state[0] = n_in
    state[1] = m
    state[2] = held
    state[3] += bad
    return j


def warm_up() -> None:
    """Compile or load from the numba cache the signature :class:`StreamingResampler` uses."""
    hist = np.zeros(8, np.float32)
    state = np.zeros(STATE_SIZE, np.int64)
    state[HELD] = 1
    phases = np.ones((1, 2))
    phases.setflags(write=False)  # the designs are read-only, a distinct numba type
    polyphase_block(np.zeros(2, np.float32), 2, hist, state, phases, 1, 2, 1 << 62, np.zeros(2, np.float32))

"""Host-side running sums for the step's causal window means (TFA frequency attention).

A causal window mean over the last W frames needs the W-1 frames before the current one.
Passing those frames through the ONNX step as state made every step concatenate and
slice ``(C, W-1, F)`` tensors (removing them made the ``rt`` model's step 14 % faster). Instead the
step takes their *sum* and returns the new frame; this module keeps the frames in a ring
and updates the sum by one add and one subtract per element.

The running sum is kept in float64: frames enter and leave it as exact float32 values,
so it does not drift over hours of streaming the way a float32 (or float16) running sum
would.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from .bundle import WINDOW_SUM, StateSpec

__all__ = ["WindowSums"]


@numba.njit(cache=True, nogil=True, fastmath=False)
def _push(ring: NDArray, slot: int, sums: NDArray, new: NDArray, sum_out: NDArray) -> None:  # pragma: no cover
    # ring (W-1, N, L) float64, sums (N, L) float64, new / sum_out (N, L) float32
    for n in range(sums.shape[0]):
        for i in range(sums.shape[1]):
            x = np.float64(new[n, i])
            s = sums[n, i] + x - ring[slot, n, i]
            ring[slot, n, i] = x
            sums[n, i] = s
            sum_out[n, i] = np.float32(s)


class WindowSums:
    """Ring buffers and running sums of every window state of ``N`` streams.

    Parameters
    ----------
    specs : sequence of StateSpec
        All the step's states; those of kind ``window_sum`` are kept here.
    n_streams : int
    dtype : numpy dtype
        Element type of the step's inputs and outputs (float32 or float16).

    Attributes
    ----------
    specs : list of StateSpec
        The window states, in step order.
    sum_in : list of ndarray [shape=(N, C, 1, F)]
        What the step reads (``window_sum_<name>``): the sum of the last W-1 frames.
    frame_out : list of ndarray [shape=(N, C, 1, F)]
        Where the step writes the new frame (``window_frame_<name>``).

    Notes
    -----
    After each step call :meth:`advance`: it moves every ``frame_out`` into its ring,
    drops the frame that left the window and refreshes ``sum_in``. The arrays are
    allocated once, so engines can bind them (IOBinding, pinned memory) for good.
    """

    def __init__(self, specs: Sequence[StateSpec], n_streams: int, dtype: np.dtype | type = np.float32) -> None:
        self.specs = [s for s in specs if s.kind == WINDOW_SUM]
        self.n = int(n_streams)
        self.dtype = np.dtype(dtype)
        self.sum_in = [np.zeros((self.n, *s.shape), self.dtype) for s in self.specs]
        self.frame_out = [np.zeros((self.n, *s.shape), self.dtype) for s in self.specs]
        self._ring = [np.zeros((s.window - 1, self.n, int(np.prod(s.shape))), np.float64) for s in self.specs]
        self._sums = [np.zeros((self.n, int(np.prod(s.shape))), np.float64) for s in self.specs]
        self._slot = [0] * len(self.specs)
        # float16 I/O goes through float32 scratch arrays (new frame in, sum out): the
        # kernel is compiled for float32 only, and the real-time step must not allocate
        self._scratch = (
            [(np.zeros((self.n, int(np.prod(s.shape))), np.float32),
              np.zeros((self.n, int(np.prod(s.shape))), np.float32)) for s in self.specs]
            if self.dtype != np.float32 else None
        )

    def __len__(self) -> int:
        return len(self.specs)

    def advance(self) -> None:
        """Take the step's new frames into the windows (call once after every step)."""
        for k, spec in enumerate(self.specs):
            new = self.frame_out[k].reshape(self.n, -1)
            out = self.sum_in[k].reshape(self.n, -1)
            if self._scratch is None:
                _push(self._ring[k], self._slot[k], self._sums[k], new, out)
            else:
                new32, sum32 = self._scratch[k]
                np.copyto(new32, new)
                _push(self._ring[k], self._slot[k], self._sums[k], new32, sum32)
                np.copyto(out, sum32, casting="same_kind")
            self._slot[k] = (self._slot[k] + 1) % (spec.window - 1)

    def push(self, frames: Sequence[NDArray]) -> list[NDArray]:
        """Copy the step's new frames in (one per window, in step order) and :meth:`advance`.

        Returns
        -------
        list of ndarray
            :attr:`sum_in`, the next step's window inputs.
        """
        for buf, frame in zip(self.frame_out, frames, strict=True):
            buf[...] = frame
        self.advance()
        return self.sum_in

    def zero(self, streams: list[int] | None = None) -> None:
        """Empty the windows of all streams, or of ``streams`` (= the zero padding of a fresh start)."""
        idx = slice(None) if streams is None else streams
        for k in range(len(self.specs)):
            self.sum_in[k][idx] = 0
            self.frame_out[k][idx] = 0
            self._ring[k][:, idx] = 0
            self._sums[k][idx] = 0

"""A preallocated single-producer ring buffer of audio samples."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class RingBuffer:
    """Fixed-capacity FIFO of float samples that wraps with two slices.

    No allocation after construction: :meth:`write` and :meth:`read` copy through at most
    two contiguous slices of the backing array.

    Parameters
    ----------
    capacity : int [samples]
        Maximum number of samples held.
    dtype : numpy dtype
        Sample type (float32 by default).
    """

    def __init__(self, capacity: int, dtype: np.dtype | type = np.float32) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=dtype)
        self._read = 0
        self._size = 0
        self.dropped = 0

    @property
    def capacity(self) -> int:
        """Samples the buffer can hold."""
        return self._buf.shape[0]

    def __len__(self) -> int:
        return self._size

    def reset(self) -> None:
        """Empty the buffer and zero the drop counter (no reallocation)."""
        self._buf[:] = 0
        self._read = 0
        self._size = 0
        self.dropped = 0

    def write(self, block: NDArray) -> int:
        """Append samples; when full, the newest samples that do not fit are dropped.

        Returns
        -------
        written : int [samples]
            How many samples were stored; the rest are added to :attr:`dropped`.
        """
        n = min(block.shape[0], self.capacity - self._size)
        self.dropped += block.shape[0] - n
        start = (self._read + self._size) % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = block[:first]
        self._buf[: n - first] = block[first:n]
        self._size += n
        return n

    def read(self, out: NDArray) -> int:
        """Move up to ``len(out)`` of the oldest samples into ``out``.

        Returns
        -------
        n : int [samples]
            Samples copied into ``out[:n]``.
        """
        n = min(out.shape[0], self._size)
        first = min(n, self.capacity - self._read)
        out[:first] = self._buf[self._read : self._read + first]
        out[first:n] = self._buf[: n - first]
        self._read = (self._read + n) % self.capacity
        self._size -= n
        return n

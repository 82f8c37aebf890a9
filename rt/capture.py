"""A PortAudio input callback that never takes the GIL.

PortAudio calls an input stream's callback from the audio server's real-time thread (JACK's
process thread, ALSA's callback thread). A Python callback has to take the GIL there, so
anything else holding it (the tracker's Python code between kernels, a garbage collection,
the CLI's status line, another library's set-up) makes the callback late; on JACK that is an
xrun for the whole graph and a lost period of input. Here the callback is a numba ``cfunc``
(machine code, no interpreter) that PortAudio calls directly through sounddevice's low-level
``_StreamBase``, the route python-rtmixer takes.

The callback and the worker thread share one preallocated float64 array (:class:`CaptureState`):
a header of counters, a single-producer single-consumer ring of mono samples and a ring of
per-callback time stamps. The callback copies the wanted channel into the ring, publishes the
new write count behind a release fence, and wakes the worker by writing one byte to a
non-blocking pipe. The worker (:meth:`CaptureState.wait`, :meth:`CaptureState.pop`) sleeps in
``select`` with the GIL released and copies out what arrived. A full ring drops the newest
samples and counts them; nothing in the callback allocates, locks or blocks.

Counters are float64 (exact up to 2**53 samples, 5,900 years at 48 kHz) so that one array
holds everything the callback touches and one pointer (``userData``) reaches it.
"""

from __future__ import annotations

import ctypes
import os
import select
from typing import Any

import numpy as np
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic
from numpy.typing import NDArray

# Header slots of the shared state array.
_WRITE, _READ, _CALLBACKS, _FLAGGED, _OVERFLOWS, _DROPPED = 0, 1, 2, 3, 4, 5
_CHANNEL, _CHANNELS, _CAPACITY, _WAKE_FD, _STAMP_CAP, _STAMPS = 6, 7, 8, 9, 10, 11
_LOGGED, _LOG = 12, 13           # first _LOG_LEN flagged callbacks: (callback number, flags)
_LOG_LEN = 16
_HEADER = _LOG + 2 * _LOG_LEN     # ring data starts here
#: Values per stamp: samples delivered before this callback, ADC time of its first sample,
#: PortAudio's current time [s, the stream's clock], status flags.
STAMP_WIDTH = 4

#: PortAudio's ``paInputOverflow`` status flag.
PA_INPUT_OVERFLOW = 0x2


@intrinsic
def _fence(typingctx):  # type: ignore[no-untyped-def]
    """A sequentially consistent memory fence (orders the ring's data and index accesses)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


_libc = ctypes.CDLL(None, use_errno=True)
_write = _libc.write
_write.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
_write.restype = ctypes.c_ssize_t

_ULONG = types.uint64 if ctypes.sizeof(ctypes.c_ulong) == 8 else types.uint32
#: ``int PaStreamCallback(const void *input, void *output, unsigned long frameCount,
#: const PaStreamCallbackTimeInfo *timeInfo, PaStreamCallbackFlags statusFlags, void *userData)``
_PA_CALLBACK_SIG = types.int32(types.voidptr, types.voidptr, _ULONG, types.voidptr, _ULONG, types.voidptr)


# Not cached: numba refuses to cache a function that calls through a ctypes pointer; it
# compiles (~0.3 s) when this module is first imported, before any stream opens.
@cfunc(_PA_CALLBACK_SIG, nopython=True)
def _input_callback(inp, out, frames, time_info, status, user):  # type: ignore[no-untyped-def]
    head = carray(user, (_HEADER,), np.float64)
    cap = np.int64(head[_CAPACITY])
    scap = np.int64(head[_STAMP_CAP])
    st = carray(user, (_HEADER + cap + scap * STAMP_WIDTH,), np.float64)
    n_ch = np.int64(st[_CHANNELS])
    ch = np.int64(st[_CHANNEL])
    nf = np.int64(frames)
    w = np.int64(st[_WRITE])
    r = np.int64(st[_READ])
    n = min(nf, cap - (w - r))
    if n > 0:  # no input buffer (PortAudio may pass NULL while priming): nothing to copy
        x = carray(inp, (nf * n_ch,), np.float32)
        mask = cap - 1
        for i in range(n):
            st[_HEADER + ((w + i) & mask)] = x[i * n_ch + ch]
    if nf > n:
        st[_DROPPED] += nf - n
    # the stamp names the samples before this callback, whether or not they fit in the ring
    k = np.int64(st[_STAMPS])
    base = _HEADER + cap + (k % scap) * STAMP_WIDTH
    t = carray(time_info, (3,), np.float64)
    st[base] = st[_WRITE] + st[_DROPPED] - (nf - n)
    st[base + 1] = t[0]
    st[base + 2] = t[1]
    st[base + 3] = np.float64(status)
    st[_CALLBACKS] += 1
    if status != 0:
        st[_FLAGGED] += 1
        if status & PA_INPUT_OVERFLOW:
            st[_OVERFLOWS] += 1
        logged = np.int64(st[_LOGGED])
        if logged < _LOG_LEN:
            st[_LOG + 2 * logged] = st[_CALLBACKS]
            st[_LOG + 2 * logged + 1] = np.float64(status)
            st[_LOGGED] = logged + 1
    _fence()  # the samples and stamp are visible before the counts that publish them
    st[_STAMPS] = k + 1
    st[_WRITE] = w + n
    _write(np.int32(st[_WAKE_FD]), user, 1)  # a full pipe (EAGAIN) is harmless: already awake
    return 0  # paContinue


@njit(cache=True, nogil=True)
def _pop(st: NDArray[np.float64], out: NDArray[np.float32]) -> int:
    cap = np.int64(st[_CAPACITY])
    w = np.int64(st[_WRITE])
    _fence()  # read the samples only after the count that published them
    r = np.int64(st[_READ])
    n = min(out.shape[0], w - r)
    mask = cap - 1
    for i in range(n):
        out[i] = np.float32(st[_HEADER + ((r + i) & mask)])
    _fence()  # done reading before the callback may overwrite
    st[_READ] = r + n
    return n


class CaptureState:
    """The memory a native input callback shares with the worker thread.

    Parameters
    ----------
    capacity : int [samples]
        Ring size; rounded up to a power of two.
    channel, channels : int
        Channel to keep (0-based) and the stream's channel count.
    stamps : int
        Per-callback time stamps kept (a ring; read them faster than they wrap).
    """

    def __init__(self, capacity: int, channel: int, channels: int, stamps: int = 1024) -> None:
        if not 0 <= channel < channels:
            raise ValueError(f"channel {channel} outside 0..{channels - 1}")
        cap = 1 << max(4, int(np.ceil(np.log2(max(2, capacity)))))
        self.capacity = cap
        self.stamp_capacity = int(stamps)
        self.array = np.zeros(_HEADER + cap + self.stamp_capacity * STAMP_WIDTH, np.float64)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self.array[_CHANNEL], self.array[_CHANNELS] = channel, channels
        self.array[_CAPACITY], self.array[_STAMP_CAP] = cap, self.stamp_capacity
        self.array[_WAKE_FD] = self._wfd
        self._stamps_read = 0

    # ------------------------------------------------------------------ stream side

    def callback_pointer(self, ffi: Any) -> Any:
        """The C callback as the given CFFI instance's ``PaStreamCallback*``."""
        return ffi.cast("PaStreamCallback*", _input_callback.address)

    def user_data(self, ffi: Any) -> Any:
        """``userData`` for the callback: the address of the shared array."""
        return ffi.cast("void*", self.array.ctypes.data)

    # ------------------------------------------------------------------ worker side

    def wait(self, timeout: float) -> bool:
        """Sleep (GIL released) until the callback signals or ``timeout`` [s] passes.

        Returns
        -------
        woken : bool
            True when the callback signalled (samples or stamps may have arrived).
        """
        ready, _, _ = select.select([self._rfd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def pop(self, out: NDArray[np.float32]) -> int:
        """Move up to ``len(out)`` of the oldest samples into ``out``; returns how many."""
        return int(_pop(self.array, out))

    def __len__(self) -> int:
        a = self.array
        return int(a[_WRITE] - a[_READ])

    def new_stamps(self) -> NDArray[np.float64]:
        """Stamps written since the last call, oldest first.

        Returns
        -------
        stamps : ndarray [shape=(k, 4)] [float64]
            Per callback: samples delivered before it, ADC time of its first sample [s],
            PortAudio's current time [s], status flags. Stamps overwritten before they were
            read are skipped.
        """
        total = int(self.array[_STAMPS])
        first = max(self._stamps_read, total - self.stamp_capacity)
        base = _HEADER + self.capacity
        idx = np.arange(first, total) % self.stamp_capacity
        rows = self.array[base:base + self.stamp_capacity * STAMP_WIDTH].reshape(-1, STAMP_WIDTH)[idx].copy()
        self._stamps_read = total
        return rows

    @property
    def callbacks(self) -> int:
        return int(self.array[_CALLBACKS])

    @property
    def flagged(self) -> int:
        return int(self.array[_FLAGGED])

    @property
    def overflows(self) -> int:
        return int(self.array[_OVERFLOWS])

    @property
    def dropped(self) -> int:
        """Samples dropped because the ring was full [samples]."""
        return int(self.array[_DROPPED])

    @property
    def written(self) -> int:
        """Samples stored in the ring since the start [samples]."""
        return int(self.array[_WRITE])

    def status_log(self) -> list[tuple[int, int]]:
        """The first flagged callbacks: ``(callback number, PortAudio status flags)``."""
        n = int(self.array[_LOGGED])
        log = self.array[_LOG:_LOG + 2 * n].reshape(-1, 2)
        return [(int(c), int(f)) for c, f in log]

    def close(self) -> None:
        """Close the wake-up pipe (after the stream is closed)."""
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._rfd = self._wfd = -1


def warm_up() -> None:
    """Compile (or load) the worker-side kernel; the callback compiled at import."""
    st = CaptureState(16, 0, 1, stamps=4)
    try:
        st.pop(np.zeros(4, np.float32))
    finally:
        st.close()


def flags_text(flags: int) -> str:
    """PortAudio status flags as words, like sounddevice's ``CallbackFlags``."""
    names = ((0x1, "input underflow"), (0x2, "input overflow"), (0x4, "output underflow"),
             (0x8, "output overflow"), (0x10, "priming output"))
    return ", ".join(n for bit, n in names if flags & bit) or "none"

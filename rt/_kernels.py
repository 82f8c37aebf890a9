"""Numba kernels of the streaming front end.

Private: each kernel writes into arrays the caller owns and validates nothing; the public
classes in :mod:`melodyrt.rt.cfp` and :mod:`melodyrt.rt.ring` check inputs once, then call
these in the hot path. ``cache=True`` keeps compiled code on disk so a stream never waits for
the compiler; :func:`warm_up` compiles (or loads) every signature before a stream opens.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def ring_write(ring, pos, block, start, count):  # pragma: no cover - numba
    """Copy ``block[start:start+count]`` into ``ring`` at ``pos`` (wrapping).

    Non-finite samples are written as 0. Returns ``(new_pos, n_sanitised)``.
    """
    cap = ring.shape[0]
    bad = 0
    for k in range(count):
        v = block[start + k]
        if not math.isfinite(v):
            v = 0.0
            bad += 1
        ring[pos] = v
        pos += 1
        if pos == cap:
            pos = 0
    return pos, bad


@njit(cache=True, nogil=True)
def ring_read_windowed(ring, pos, window, out):  # pragma: no cover - numba
    """``out[:L] = ring (oldest first, starting at pos) * window``; ``out[L:]`` untouched."""
    cap = ring.shape[0]
    j = pos
    for k in range(cap):
        out[k] = ring[j] * window[k]
        j += 1
        if j == cap:
            j = 0


@njit(cache=True, nogil=True)
def magnitude_power(spec, gamma, out):  # pragma: no cover - numba
    """``out = |spec| ** gamma`` for a complex half spectrum."""
    for k in range(spec.shape[0]):
        m = math.sqrt(spec[k].real * spec[k].real + spec[k].imag * spec[k].imag)
        out[k] = m**gamma if m > 0.0 else 0.0


@njit(cache=True, nogil=True)
def rectify_lifter_power(x, scale, cut, gamma):  # pragma: no cover - numba
    """In place: ``x = max(x * scale, 0)``, zero ``cut`` bins at both ends, then ``x ** gamma``."""
    n = x.shape[0]
    for k in range(n):
        if k < cut or k >= n - cut:
            x[k] = 0.0
        else:
            v = x[k] * scale
            if v <= 0.0:
                x[k] = 0.0
            elif gamma == 1.0:
                x[k] = v
            else:
                x[k] = v**gamma


@njit(cache=True, nogil=True)
def real_rectify_power(spec, scale, cut, gamma, out):  # pragma: no cover - numba
    """``out = max(Re(spec) * scale, 0) ** gamma`` with the first ``cut`` bins zeroed.

    Only the first half of the spectrum is kept downstream, so the mirrored lifter at the
    top end never reaches a kept bin.
    """
    for k in range(spec.shape[0]):
        v = spec[k].real * scale
        if k < cut or v <= 0.0:
            out[k] = 0.0
        elif gamma == 1.0:
            out[k] = v
        else:
            out[k] = v**gamma


@njit(cache=True, nogil=True)
def csr_matvec(indptr, indices, data, x, out):  # pragma: no cover - numba
    """Sparse ``out = M @ x`` with ``M`` in CSR form (the log-frequency filterbank)."""
    for i in range(out.shape[0]):
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        out[i] = acc


@njit(cache=True, nogil=True)
def log_affine(raw, offset, scale, out):  # pragma: no cover - numba
    """``out = (log1p(raw) - offset) / scale`` elementwise over (C, F) arrays."""
    for c in range(raw.shape[0]):
        for f in range(raw.shape[1]):
            out[c, f] = (math.log1p(raw[c, f]) - offset[c, f]) / scale[c, f]


@njit(cache=True, nogil=True)
def log_running_peak(raw, peak, decay, floor, out):  # pragma: no cover - numba
    """``out = log1p(raw) / peak_c`` with a per-channel peak that rises at once and decays.

    ``peak`` (C,) is the causal running estimate, updated in place.
    """
    for c in range(raw.shape[0]):
        m = 0.0
        for f in range(raw.shape[1]):
            v = math.log1p(raw[c, f])
            out[c, f] = v
            if v > m:
                m = v
        p = peak[c] * decay
        if m > p:
            p = m
        if p < floor:
            p = floor
        peak[c] = p
        for f in range(raw.shape[1]):
            out[c, f] = out[c, f] / p


def warm_up() -> None:
    """Compile or load from the numba cache every kernel signature the stream uses."""
    ring = np.zeros(8, np.float64)
    for dtype in (np.float32, np.float64):
        ring_write(ring, 0, np.zeros(4, dtype), 0, 4)
    buf = np.zeros(16, np.float64)
    ring_read_windowed(ring, 0, np.ones(8), buf)
    spec = np.fft.rfft(buf)
    mag = np.zeros(spec.shape[0])
    magnitude_power(spec, 0.24, mag)
    rectify_lifter_power(buf, 1.0, 1, 0.6)
    real_rectify_power(spec, 1.0, 1, 1.0, mag)
    csr_matvec(np.array([0, 1], np.int64), np.array([0], np.int64), np.ones(1), mag, np.zeros(1))
    raw = np.zeros((3, 4))
    out = np.zeros((3, 4), np.float32)
    log_affine(raw, np.zeros((3, 4)), np.ones((3, 4)), out)
    log_running_peak(raw, np.ones(3), 0.9, 1e-3, out)

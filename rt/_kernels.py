"""Numba kernels of the streaming front end.

Private: each kernel writes into arrays the caller owns and validates nothing; the public
classes in :mod:`melodyrt.rt.cfp` and :mod:`melodyrt.rt.ring` check inputs once, then call
these in the hot path. ``cache=True`` keeps compiled code on disk so a stream never waits for
the compiler; :func:`warm_up` compiles (or loads) every signature before a stream opens.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


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
    """``out[:L] = (the L newest samples of ring, oldest first) * window``, ``L = len(window)``.

    ``pos`` is the ring's oldest sample (the ring holds ``len(ring) >= L`` samples);
    ``out[L:]`` is untouched.
    """
    cap = ring.shape[0]
    n = window.shape[0]
    j = pos + cap - n
    if j >= cap:
        j -= cap
    for k in range(n):
        out[k] = ring[j] * window[k]
        j += 1
        if j == cap:
            j = 0


# ------------------------------------------------------------------ a vectorisable power
#
# libm's pow costs ~15 ns a call and stops LLVM from vectorising the loop around it; the CFP
# needs two powers per FFT bin per hop, which made them the largest cost of a hop. This one
# is exp(g * log(v)) from bit fields and short polynomials: max relative error 3e-11 (the
# CFP's float32 output resolves 6e-8), branch-free, and vectorised by LLVM.

_MANTISSA = (1 << 52) - 1
_EXP_ONE = 1023 << 52
_SQRT2 = math.sqrt(2.0)
_LN2 = math.log(2.0)
_INV_LN2 = 1.0 / _LN2
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so n * ln2 subtracts exactly
_LN2_LO = 1.90821492927058770002e-10
POW_TINY = 1e-300  # below this the power is 0 (avoids subnormal bit fields)


@intrinsic
def _bits(typingctx, x):  # pragma: no cover - compile time
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, x):  # pragma: no cover - compile time
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def pow_positive(v, g):  # pragma: no cover - numba
    """``v ** g`` for ``v > POW_TINY``, else 0 (``|g| <= 1``)."""
    b = _bits(v)
    e = float((b >> 52) - 1023)
    m = _from_bits((b & _MANTISSA) | _EXP_ONE)  # v = m * 2**e, 1 <= m < 2
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)  # ln m = 2 atanh(s), |s| <= 0.172
    z = s * s
    p = 1.0 / 11.0
    p = 1.0 / 9.0 + z * p
    p = 1.0 / 7.0 + z * p
    p = 1.0 / 5.0 + z * p
    p = 1.0 / 3.0 + z * p
    p = 1.0 + z * p
    y = g * (e * _LN2 + 2.0 * s * p)
    n = math.floor(y * _INV_LN2 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln2 / 2
    q = 1.0 / 362880.0
    q = 1.0 / 40320.0 + r * q
    q = 1.0 / 5040.0 + r * q
    q = 1.0 / 720.0 + r * q
    q = 1.0 / 120.0 + r * q
    q = 1.0 / 24.0 + r * q
    q = 1.0 / 6.0 + r * q
    q = 0.5 + r * q
    q = 1.0 + r * q
    q = 1.0 + r * q
    out = _from_bits(_bits(q) + (np.int64(n) << 52))
    return out if v > POW_TINY else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def power_array(x, g, out):  # pragma: no cover - numba
    """``out = x ** g`` elementwise where ``x > POW_TINY``, else 0."""
    for k in range(x.shape[0]):
        out[k] = pow_positive(x[k], g)


# ------------------------------------------------------------------ CFP stages
#
# The cepstrum and the GCoS are cosine transforms of even length-N sequences. Each is a
# DCT-I of the N/2 + 1 unique samples, computed as an N/2-point real FFT of a pre-twiddled
# sequence plus a running sum over the odd outputs (Numerical Recipes, cosft1): half the
# FFT work of the full transform, and the powers only run over the unique half.


@njit(cache=True, nogil=True)
def dct1_prepare(f, y, sin_t, cos_t):  # pragma: no cover - numba
    """Pre-twiddle ``f`` (M + 1,) into ``y`` (M,) for a DCT-I by an M-point real FFT.

    ``sin_t[k] = sin(pi k / M)``, ``cos_t[k] = cos(pi k / M)``. Returns the first odd
    output ``F_1``, which the FFT does not give.
    """
    m_len = y.shape[0]
    y[0] = 0.5 * (f[0] + f[m_len])
    first_odd = 0.5 * (f[0] - f[m_len])
    for k in range(1, m_len):
        a = f[k]
        b = f[m_len - k]
        y[k] = 0.5 * (a + b) - sin_t[k] * (a - b)
        first_odd += a * cos_t[k]
    return first_odd


@njit(cache=True, nogil=True)
def dct1_finish(spec, first_odd, scale, out):  # pragma: no cover - numba
    """``out[j] = scale * F_j`` for ``j < len(out)``, where
    ``F_j = (f_0 + (-1)**j f_M) / 2 + sum_{k=1}^{M-1} f_k cos(pi j k / M)``.

    ``spec`` is ``numpy.fft.rfft`` of the sequence :func:`dct1_prepare` made.
    """
    odd = first_odd
    for j in range(out.shape[0]):
        m = j >> 1
        if j & 1 == 0:
            out[j] = scale * spec[m].real
        else:
            if j > 1:
                odd -= spec[m].imag
            out[j] = scale * odd


@njit(cache=True, nogil=True)
def spectrum_stage(spec, gamma, mag, y, sin_t, cos_t):  # pragma: no cover - numba
    """``mag = |spec| ** gamma`` (M + 1 bins), pre-twiddled for the cepstrum's DCT-I.

    Returns ``F_1`` of that DCT (see :func:`dct1_prepare`).
    """
    half = 0.5 * gamma
    for k in range(mag.shape[0]):
        re = spec[k].real
        im = spec[k].imag
        mag[k] = pow_positive(re * re + im * im, half)
    return dct1_prepare(mag, y, sin_t, cos_t)


@njit(cache=True, nogil=True)
def rectify_power(x, start, gamma):  # pragma: no cover - numba
    """In place: ``x = max(x, 0) ** gamma``, with ``x[:start] = 0``."""
    # Loops start at 0 and select instead of branching so that LLVM vectorises them.
    if gamma == 1.0:
        for k in range(x.shape[0]):
            x[k] = max(x[k], 0.0) if k >= start else 0.0
    else:
        for k in range(x.shape[0]):
            v = max(x[k], 0.0) if k >= start else 0.0
            x[k] = pow_positive(v, gamma)


@njit(cache=True, nogil=True)
def cepstrum_stage(spec, first_odd, scale, cut, gamma, gc, y, sin_t, cos_t):  # pragma: no cover
    """Generalised cepstrum: ``gc = max(scale * DCT, 0) ** gamma``, lifter below ``cut``.

    ``gc`` holds the M + 1 unique quefrencies (the top lifter never reaches them).
    Returns ``F_1`` of the GCoS DCT-I that follows.
    """
    dct1_finish(spec, first_odd, scale, gc)
    rectify_power(gc, cut, gamma)
    return dct1_prepare(gc, y, sin_t, cos_t)


@njit(cache=True, nogil=True)
def csr_matvec(indptr, indices, data, x, out):  # pragma: no cover - numba
    """Sparse ``out = M @ x`` with ``M`` in CSR form (the log-frequency filterbank)."""
    for i in range(out.shape[0]):
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        out[i] = acc


@njit(cache=True, nogil=True)
def gcos_filterbank_stage(
    spec, first_odd, scale, edge, edge_cos, cut, gamma, gcos, mag, gc,
    s_ptr, s_idx, s_val, q_ptr, q_idx, q_val, raw,
):  # pragma: no cover - numba
    """GCoS on the kept bins, then the three log-frequency filterbanks into ``raw`` (3, 360).

    The reference lifter zeroes quefrency ``N - L`` but keeps ``L``, so GC is even except
    for that one sample: the DCT-I of the even sequence minus ``edge * edge_cos`` (``edge``
    is GC at quefrency L, ``edge_cos[k] = cos(2 pi L k / N) / sqrt(N)``) is the exact GCoS.
    """
    dct1_finish(spec, first_odd, scale, gcos)
    for k in range(gcos.shape[0]):
        gcos[k] -= edge * edge_cos[k]
    rectify_power(gcos, cut, gamma)
    csr_matvec(s_ptr, s_idx, s_val, mag, raw[0])
    csr_matvec(s_ptr, s_idx, s_val, gcos, raw[1])
    csr_matvec(q_ptr, q_idx, q_val, gc, raw[2])


@njit(cache=True, nogil=True)
def blend_rows(a, a_coef, b, b_coef, out):  # pragma: no cover - numba
    """``out = a_coef * a + b_coef * b`` elementwise over (C, F) arrays (multires blend)."""
    for c in range(out.shape[0]):
        for f in range(out.shape[1]):
            out[c, f] = a_coef[c, f] * a[c, f] + b_coef[c, f] * b[c, f]


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
    frame = np.zeros(16, np.float64)
    ring_read_windowed(ring, 0, np.ones(8), frame)
    spec = np.fft.rfft(frame)  # 9 bins: M = 8
    m_len = 8
    mag, y, gc, gcos = np.zeros(m_len + 1), np.zeros(m_len), np.zeros(m_len + 1), np.zeros(5)
    trig = np.zeros(m_len)
    first = spectrum_stage(spec, 0.24, mag, y, trig, trig)
    half = np.fft.rfft(y)
    first = cepstrum_stage(half, first, 1.0, 1, 0.6, gc, y, trig, trig)
    ptr, idx, val = np.array([0, 1], np.int64), np.array([0], np.int64), np.ones(1)
    raw = np.zeros((3, 1))
    gcos_filterbank_stage(half, first, 1.0, 0.0, gcos, 1, 1.0, gcos, mag, gc, ptr, idx, val, ptr, idx, val, raw)
    power_array(mag, 0.5, gc)
    out = np.zeros((3, 4), np.float32)
    raw = np.zeros((3, 4))
    blend_rows(raw, raw, raw, raw, np.zeros((3, 4)))
    log_affine(raw, np.zeros((3, 4)), np.ones((3, 4)), out)
    log_running_peak(raw, np.ones(3), 0.9, 1e-3, out)

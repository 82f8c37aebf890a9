"""The CFP front end against an independent dense reference, known answers and streaming rules.

The reference below is written from the MF-TFA reference text (section 2) alone: full
complex FFTs of length N, dense filterbank matrices, the window from its formula, one frame
at a time. It shares no code with ``melodyrt.rt.cfp`` except the configuration values.
"""

from __future__ import annotations

import numpy as np
import pytest

from melodyrt.rt.cfp import (
    FeatureStats,
    StreamingCFP,
    analysis_window,
    bin_frequencies,
    cfp_from_signal,
)
from melodyrt.rt.config import CfpConfig, NormConfig
from melodyrt.rt.errors import AudioInputError
from melodyrt.rt.synth import harmonic_tone, pure_tone

SR = 8000
BLOCK_SIZES = (1, 64, 100, 441, 4096)
WINDOWS = ("symmetric", "asymmetric")


# ------------------------------------------------------------------ dense reference


def ref_blackman_harris(length: int) -> np.ndarray:
    """4-term Blackman-Harris, symmetric (both ends near zero)."""
    n = np.arange(length)
    a0, a1, a2, a3 = 0.35875, 0.48829, 0.14128, 0.01168
    t = 2 * np.pi * n / (length - 1)
    return a0 - a1 * np.cos(t) + a2 * np.cos(2 * t) - a3 * np.cos(3 * t)


def ref_window(cfg: CfpConfig) -> np.ndarray:
    """Oldest sample first, unit L2 norm. Asymmetric: the rising half of a long
    Blackman-Harris window (length 2 * rise) joined to the falling half of a short one
    (length 2 * asym_fall)."""
    if cfg.window == "symmetric":
        w = ref_blackman_harris(cfg.win_length)
    else:
        rise = cfg.win_length - cfg.asym_fall
        w = np.concatenate([ref_blackman_harris(2 * rise)[:rise], ref_blackman_harris(2 * cfg.asym_fall)[cfg.asym_fall :]])
    return w / np.sqrt(np.sum(w**2))


def ref_centres(cfg: CfpConfig) -> np.ndarray:
    """32 * 2 ** (i / 60) below 2050 Hz: 361 values, 32 .. 2048 Hz."""
    c = cfg.fmin * 2.0 ** (np.arange(400) / cfg.bins_per_octave)
    return c[c < cfg.fmax]


def ref_triangles(freqs: np.ndarray, cfg: CfpConfig, narrow_rule: bool) -> np.ndarray:
    """Dense (360, len(freqs)) triangles; row 0 zero. ``freqs`` may hold inf (weight 0).

    ``narrow_rule``: the reference's treatment of triangles narrower than an FFT bin (both
    neighbours round to the same bin): that bin gets weight 1.
    """
    c = ref_centres(cfg)
    m = np.zeros((360, freqs.shape[0]))
    for i in range(1, 360):
        lo, mid, hi = c[i - 1], c[i], c[i + 1]
        inside = (freqs > lo) & (freqs < hi)
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        m[i] = np.where(inside, np.where(freqs <= mid, up, down), 0.0)
        fr = cfg.freq_resolution
        if narrow_rule and round(lo / fr) == round(hi / fr):
            m[i] = 0.0
            m[i, round(lo / fr)] = 1.0
    return m


def ref_cfp(x: np.ndarray, cfg: CfpConfig) -> np.ndarray:
    """log1p CFP [T, 3, 360] of causal frames: frame k ends at sample (k + 1) * hop - 1."""
    n_fft, hop, L = cfg.n_fft, cfg.hop, cfg.win_length
    g0, g1, g2 = cfg.gammas
    w = ref_window(cfg)
    padded = np.concatenate([np.zeros(L), np.asarray(x, np.float64)])
    T = x.shape[0] // hop
    frames = np.stack([padded[(k + 1) * hop : (k + 1) * hop + L] for k in range(T)]) * w
    buf = np.zeros((T, n_fft))
    buf[:, :L] = frames
    spec = np.abs(np.fft.fft(buf, axis=1)) ** g0  # full, length N
    ceps = np.real(np.fft.fft(spec, axis=1)) / np.sqrt(n_fft)
    ceps = np.maximum(ceps, 0.0)
    q = round(cfg.sample_rate / cfg.fmax)  # 4
    ceps[:, :q] = 0.0
    ceps[:, n_fft - q :] = 0.0
    ceps = ceps**g1
    gcos = np.real(np.fft.fft(ceps, axis=1)) / np.sqrt(n_fft)
    gcos = np.maximum(gcos, 0.0)
    k = round(cfg.fmin / cfg.freq_resolution)  # 16
    gcos[:, :k] = 0.0
    gcos[:, n_fft - k :] = 0.0
    gcos = gcos**g2
    nf = round(cfg.fmax / cfg.freq_resolution) + 1  # bins 0..1025
    nq = round(cfg.sample_rate / cfg.fmin) + 1  # quefrencies 0..250
    f_axis = np.arange(nf) * cfg.freq_resolution
    with np.errstate(divide="ignore"):
        q_axis = cfg.sample_rate / np.arange(nq)  # f = 1 / q; j = 0 -> inf
    fb_f = ref_triangles(f_axis, cfg, narrow_rule=True)
    fb_q = ref_triangles(q_axis, cfg, narrow_rule=False)
    out = np.stack([spec[:, :nf] @ fb_f.T, gcos[:, :nf] @ fb_f.T, ceps[:, :nq] @ fb_q.T], axis=1)
    return np.log1p(out)


def ref_running(logs: np.ndarray, cfg: CfpConfig, release: float, floor: float = 1e-3) -> np.ndarray:
    """Causal running-peak normalisation: a per-channel peak that jumps up and decays."""
    decay = np.exp(-cfg.hop_seconds / release)
    peak = np.zeros(3)
    out = np.empty_like(logs)
    for t in range(logs.shape[0]):
        peak = np.maximum(np.maximum(peak * decay, logs[t].max(axis=1)), floor)
        out[t] = logs[t] / peak[:, None]
    return out


# ------------------------------------------------------------------ helpers


def cents(a, b):
    return 1200.0 * np.log2(np.asarray(a, float) / np.asarray(b, float))


FREQS = bin_frequencies(CfpConfig())


def local_maxima(ch: np.ndarray) -> np.ndarray:
    i = np.arange(1, ch.shape[0] - 1)
    return i[(ch[i] > 0) & (ch[i] >= ch[i - 1]) & (ch[i] >= ch[i + 1])]


def has_local_max_near(ch: np.ndarray, hz: float, tol: float = 50.0) -> bool:
    return bool(np.any(np.abs(cents(FREQS[local_maxima(ch)], hz)) <= tol))


# Below ~250 Hz a 20-cent row spans only one or two 2 Hz FFT bins, so the rows' total
# weights (and with them the spectrum and GCoS channels) zigzag from row to row, and some
# rows are empty (as in the reference). Peak checks on these channels therefore look at the
# mean per unit weight of each non-empty row.
ROW_WEIGHT = ref_triangles(np.arange(1026) * 2.0, CfpConfig(), narrow_rule=True).sum(axis=1)


def per_weight(ch: np.ndarray) -> np.ndarray:
    out = np.zeros_like(ch)
    used = ROW_WEIGHT > 0
    out[used] = ch[used] / ROW_WEIGHT[used]
    # An empty row takes its lower neighbour's value so it neither makes nor breaks a peak.
    for i in np.flatnonzero(~used):
        out[i] = out[i - 1] if i > 0 else 0.0
    return out


def quefrency_rows_ok(row_hz: float, hz: float, tol: float = 50.0) -> bool:
    """Within ``tol`` cents of ``hz``, or of one of the two integer quefrencies bracketing
    it: GC samples periodicity at q = fs / j, coarser than 50 cents above ~500 Hz."""
    q = SR / hz
    targets = [hz, SR / np.floor(q), SR / np.ceil(q)]
    return any(abs(cents(row_hz, t)) <= tol for t in targets)


def linear(frames: np.ndarray) -> np.ndarray:
    return np.expm1(frames.astype(np.float64))


# ------------------------------------------------------------------ signals


def click_train(n: int) -> np.ndarray:
    x = np.zeros(n)
    x[::997] = 0.8
    return x


@pytest.fixture
def signals(speechy_8k, rng):
    n = speechy_8k.shape[0] // 2
    return {
        "song": speechy_8k[:n],
        "noise": 0.1 * rng.standard_normal(n),
        "tone+clicks": harmonic_tone(196.0, n / SR, SR) + click_train(n),
    }


# ------------------------------------------------------------------ reference equality


@pytest.mark.parametrize("window", WINDOWS)
def test_matches_dense_reference(window, signals):
    cfg = CfpConfig(window=window)
    for name, x in signals.items():
        got = cfp_from_signal(x, cfg, NormConfig(mode="none"))
        ref = ref_cfp(x, cfg)
        assert got.shape == ref.shape == (x.shape[0] // 80, 3, 360), name
        err = np.max(np.abs(got - ref))
        assert err <= 1e-6 * np.max(np.abs(ref)) + 1e-6, f"{name}: max abs diff {err:.3g}"


def test_window_matches_formula():
    for window in WINDOWS:
        cfg = CfpConfig(window=window)
        np.testing.assert_allclose(analysis_window(cfg), ref_window(cfg), rtol=0, atol=1e-12)


def test_fixed_and_running_norms_match_reference(signals, rng):
    cfg = CfpConfig()
    x = signals["song"]
    logs = ref_cfp(x, cfg)
    offset, scale = rng.uniform(0, 1, (3, 1)), rng.uniform(0.5, 2, (3, 1))
    stats = FeatureStats.from_lists(offset.tolist(), scale.tolist())
    fixed = cfp_from_signal(x, cfg, NormConfig(mode="fixed"), stats)
    np.testing.assert_allclose(fixed, (logs - offset) / scale, rtol=1e-5, atol=1e-5)
    running = cfp_from_signal(x, cfg, NormConfig(mode="running", running_release=0.5))
    np.testing.assert_allclose(running, ref_running(logs, cfg, 0.5), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ known answers

HARMONIC_F0 = (82.41, 110.0, 146.83, 220.0, 293.66, 440.0, 587.33, 698.46, 783.99)


def steady_frames(x: np.ndarray, cfg: CfpConfig) -> np.ndarray:
    """Linear CFP frames once the window is full of the tone."""
    return linear(cfp_from_signal(x, cfg, NormConfig(mode="none")))[cfg.win_length // cfg.hop + 1 :]


@pytest.mark.parametrize("f0", HARMONIC_F0)
def test_harmonic_tone_peaks_where_the_method_predicts(f0):
    """Symmetric (paper) window, a harmonic tone with a vowel-like formant envelope.

    - Z = GCoS * GC peaks at f0 in every frame (within 50 cents, or at the quefrency bin
      next to f0 where GC's grid q = fs / j is coarser than that, above ~500 Hz);
    - GC alone peaks at f0 or at a sub-harmonic f0 / k (its known failure: sub-octaves);
    - spectrum and GCoS have local maxima at f0 and 2 f0 (their global maximum is the
      strongest partial, near the formant, as section 2.8 says).
    """
    cfg = CfpConfig()
    frames = steady_frames(harmonic_tone(f0, 1.0, SR), cfg)
    z_rows = np.argmax(frames[:, 1] * frames[:, 2], axis=1)
    bad = [FREQS[r] for r in z_rows if not quefrency_rows_ok(FREQS[r], f0)]
    assert not bad, f"Z peak off f0={f0} in {len(bad)}/{len(z_rows)} frames, e.g. {bad[0]:.1f} Hz"
    mean = frames.mean(axis=0)
    gc_hz = FREQS[np.argmax(mean[2])]
    assert any(quefrency_rows_ok(gc_hz, f0 / k) for k in range(1, 9)), f"GC peak {gc_hz:.1f} Hz"
    for ch in (0, 1):
        norm = per_weight(mean[ch])
        assert has_local_max_near(norm, f0) and has_local_max_near(norm, 2 * f0), ch


@pytest.mark.parametrize("f0", (110.0, 196.0, 293.66, 440.0))
def test_pure_tone_ghosts(f0):
    """A sine: GCoS shows a harmonic ghost at 2 f0 and GC a sub-harmonic ghost at f0 / 2
    (a single spectral line is 'periodic' at every multiple of its period); their product
    cancels the ghosts and keeps a local maximum at f0. Its global maximum is only within
    ~1.5 semitones of f0 (measured): with one line, GCoS's f0 peak is the window's broad main
    lobe and GC's is one coarse cepstral ripple, so the product's top row wanders."""
    cfg = CfpConfig()
    mean = steady_frames(pure_tone(f0, 1.0, SR), cfg).mean(axis=0)
    spectrum, gcos, gc = mean
    assert has_local_max_near(per_weight(spectrum), f0)
    assert has_local_max_near(per_weight(gcos), 2 * f0), "no harmonic ghost in GCoS"
    assert any(quefrency_rows_ok(FREQS[i], f0 / 2) for i in local_maxima(gc)), "no sub-harmonic ghost in GC"
    z = gcos * gc
    assert any(abs(cents(FREQS[i], f0)) <= 50 for i in local_maxima(z)), "Z has no local max at f0"
    assert abs(cents(FREQS[np.argmax(z)], f0)) <= 150


@pytest.mark.parametrize(("window", "at_least"), [("symmetric", 0.90), ("asymmetric", 0.90), ("multires", 0.85)])
def test_sung_melody_z_peak_accuracy(window, at_least, song_8k):
    """Section 2.8's check on our synthetic melody (reference: 98 % within 50 cents; measured
    here 96.4 / 98.0 / 89.5 %, see bench/cfp_multires.py: multires loses the frames whose
    f0 sits above its split, where the short window's Z often peaks at 2 f0)."""
    cfg = CfpConfig(window=window)
    stream = StreamingCFP(cfg)
    frames = linear(cfp_from_signal(song_8k.audio, cfg))
    times = ((np.arange(frames.shape[0]) + 1) * cfg.hop - stream.latency_samples) / SR
    truth = song_8k.f0_at(times)
    voiced = truth > 0
    peak = FREQS[np.argmax(frames[:, 1] * frames[:, 2], axis=1)]
    within = np.abs(cents(peak[voiced], truth[voiced])) <= 50
    assert within.mean() >= at_least, f"{window}: {100 * within.mean():.1f} % within 50 cents"


@pytest.mark.xfail(
    strict=True,
    reason="known defect of the asymmetric window (asym_fall=64): its spectrum skirt is wide "
    "(-40 dB at +-160 Hz vs +-33 Hz symmetric); after |X|**0.24 the harmonics of low voices "
    "merge and Z picks a partial near the formant. Remove this marker once the window is fixed.",
)
def test_asymmetric_window_on_low_harmonic_tones():
    cfg = CfpConfig(window="asymmetric")
    failures = []
    for f0 in (82.41, 87.31, 123.47, 155.56):
        frames = steady_frames(harmonic_tone(f0, 1.0, SR), cfg)
        rows = np.argmax(frames[:, 1] * frames[:, 2], axis=1)
        ok = np.mean([quefrency_rows_ok(FREQS[r], f0) for r in rows])
        if ok < 0.95:
            failures.append(f"{f0} Hz: {100 * ok:.0f} % of frames")
    assert not failures, "; ".join(failures)


# ------------------------------------------------------------------ streaming


def stream_in_blocks(x: np.ndarray, stream: StreamingCFP, block: int) -> np.ndarray:
    parts = [stream.process(x[i : i + block]).copy() for i in range(0, x.shape[0], block)]
    return np.concatenate([p for p in parts if p.shape[0]] or [np.zeros((0, 3, 360), np.float32)])


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mode", ("none", "fixed", "running"))
def test_streaming_equals_one_block(window, mode, speechy_8k):
    x = speechy_8k[: SR // 2 + 37]
    cfg = CfpConfig(window=window)
    norm = NormConfig(mode=mode)
    stats = FeatureStats.from_lists([0.1, 0.2, 0.3], [1.5, 2.0, 0.5]) if mode == "fixed" else None
    whole = StreamingCFP(cfg, norm, stats).process(x).copy()
    assert whole.shape[0] == x.shape[0] // cfg.hop
    for block in BLOCK_SIZES:
        got = stream_in_blocks(x, StreamingCFP(cfg, norm, stats), block)
        assert got.shape == whole.shape, block
        assert np.max(np.abs(got - whole)) <= 1e-5, block


def test_reset_gives_identical_output(speechy_8k):
    stream = StreamingCFP(CfpConfig(), NormConfig(mode="running"))
    x = speechy_8k[:4000]
    first = stream_in_blocks(x, stream, 441)
    stream.reset()
    second = stream_in_blocks(x, stream, 441)
    np.testing.assert_array_equal(first, second)
    assert stream.frames_emitted == first.shape[0]


def test_latency_values():
    sym = StreamingCFP(CfpConfig(window="symmetric"))
    asym = StreamingCFP(CfpConfig(window="asymmetric"))
    assert sym.latency_samples == 384
    assert asym.latency_samples < sym.latency_samples / 2


@pytest.mark.parametrize("window", WINDOWS)
def test_click_shows_up_where_the_latency_says(window):
    """A click's energy over frames, weighted by each frame's end, centres at click time +
    latency: the reported delay is the time a frame describes."""
    cfg = CfpConfig(window=window)
    stream = StreamingCFP(cfg)
    t0 = 4321
    x = np.zeros(8000)
    x[t0] = 1.0
    frames = linear(cfp_from_signal(x, cfg))
    rows = frames[:, 0, :]
    used = rows.sum(axis=0) > 0
    # For a click |X| is flat: every row of the spectrum channel is w(age) ** 0.24 * const.
    level = rows[:, used].mean(axis=1)
    energy = level ** (2.0 / cfg.gammas[0])
    ends = (np.arange(frames.shape[0]) + 1) * cfg.hop - 1
    centroid_age = np.sum(energy * (ends - t0)) / np.sum(energy)
    assert abs(centroid_age - stream.latency_samples) <= cfg.hop / 2
    assert abs((ends[np.argmax(energy)] - t0) - stream.peak_delay_samples) <= cfg.hop


def main_lobe_3db_hz(w: np.ndarray, n: int = 1 << 17) -> float:
    mag = np.abs(np.fft.rfft(w, n))
    db = 20 * np.log10(mag / mag[0] + 1e-300)
    first_below = int(np.argmax(db < -10 * np.log10(2)))
    return 2 * first_below * SR / n


def test_asymmetric_resolution_no_worse():
    sym = main_lobe_3db_hz(analysis_window(CfpConfig(window="symmetric")))
    asym = main_lobe_3db_hz(analysis_window(CfpConfig(window="asymmetric")))
    assert 15 < sym < 25
    assert asym <= sym


# ------------------------------------------------------------------ bad input


def test_nan_and_inf_are_sanitised_and_counted(speechy_8k):
    x = speechy_8k[:4000].copy()
    bad = x.copy()
    bad[[10, 500, 501, 3000]] = [np.nan, np.inf, -np.inf, np.nan]
    clean = x.copy()
    clean[[10, 500, 501, 3000]] = 0.0
    stream = StreamingCFP()
    got = stream_in_blocks(bad, stream, 100)
    assert stream.samples_sanitised == 4
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, stream_in_blocks(clean, StreamingCFP(), 100))
    assert stream.process(np.zeros(80)).shape[0] == 1  # the stream goes on


def test_multichannel_block_raises():
    with pytest.raises(AudioInputError, match="mono"):
        StreamingCFP().process(np.zeros((100, 2)))


# ------------------------------------------------------------------ kernels


def test_fast_power_matches_numpy_over_the_whole_range(rng):
    from melodyrt.rt import _kernels as K

    x = np.abs(rng.standard_normal(20000)) * 10.0 ** rng.uniform(-290, 290, 20000)
    x[::97] = 0.0
    x[1::97] = -x[1::97]  # rectification leaves no negatives, but they must give 0, not garbage
    for g in (0.12, 0.24, 0.3, 0.6, 1.0):
        got = np.empty_like(x)
        K.power_array(x, g, got)
        want = np.where(x > 0, np.abs(x) ** g, 0.0)
        rel = np.abs(got - want) / np.maximum(want, 1e-300)
        assert rel.max() < 1e-10, (g, rel.max())


def test_dct1_identity_equals_the_full_cosine_transform(rng):
    """The half-length DCT-I path equals Re FFT of the even length-N extension."""
    from melodyrt.rt import _kernels as K

    m = 2000
    f = rng.standard_normal(m + 1)
    even = np.concatenate([f, f[-2:0:-1]])  # length 2m, even
    want = np.fft.fft(even).real
    k = np.arange(m)
    y = np.zeros(m)
    first = K.dct1_prepare(f, y, np.sin(np.pi * k / m), np.cos(np.pi * k / m))
    got = np.zeros(m + 1)
    K.dct1_finish(np.fft.rfft(y), first, 2.0, got)
    np.testing.assert_allclose(got, want[: m + 1], rtol=0, atol=1e-10 * np.abs(want).max())


def test_fft_size_must_allow_the_half_length_transforms():
    from melodyrt.rt.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 4"):
        CfpConfig(n_fft=4002)

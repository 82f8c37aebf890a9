"""The multi-resolution CFP (``window: multires``): blend, delays, streaming rules, gain law.

The single-window CFP is checked against an independent dense reference in
``test_cfp.py``; here each branch is that same (already verified) transform on a derived
config, so these tests check what multires adds: which rows come from which window, at
which level, with which delay.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from melodyrt.model.features import gain_exponents
from melodyrt.rt.cfp import (
    FeatureStats,
    StreamingCFP,
    analysis_window,
    bin_frequencies,
    blend_weights,
    branch_configs,
    branch_gains,
    cfp_from_signal,
    window_delay,
)
from melodyrt.rt.config import CfpConfig, NormConfig, PipelineConfig
from melodyrt.rt.errors import ConfigError
from melodyrt.rt.synth import harmonic_tone

SR = 8000
MULTI = CfpConfig(window="multires")
BLOCK_SIZES = (1, 64, 100, 441, 4096)
FREQS = bin_frequencies(MULTI)


def linear(frames: np.ndarray) -> np.ndarray:
    return np.expm1(frames.astype(np.float64))


def stream_in_blocks(x: np.ndarray, stream: StreamingCFP, block: int) -> np.ndarray:
    parts = [stream.process(x[i : i + block]).copy() for i in range(0, x.shape[0], block)]
    return np.concatenate([p for p in parts if p.shape[0]])


# ------------------------------------------------------------------ the blend


def test_rows_below_the_crossfade_are_the_asymmetric_cfp_bit_for_bit(speechy_8k):
    x = speechy_8k[:6000]
    w = blend_weights(MULTI)
    multi = cfp_from_signal(x, MULTI)
    asym = cfp_from_signal(x, CfpConfig(window="asymmetric"))
    low = w == 0
    assert low.sum() > 200  # every row below ~370 Hz
    np.testing.assert_array_equal(multi[:, :, low], asym[:, :, low])


def test_rows_above_the_crossfade_are_the_short_window_at_long_branch_scale(speechy_8k):
    x = speechy_8k[:6000]
    _, short = branch_configs(MULTI)
    w = blend_weights(MULTI)
    high = w == 1
    got = linear(cfp_from_signal(x, MULTI))[:, :, high]
    want = linear(cfp_from_signal(x, short))[:, :, high] * branch_gains(MULTI)[:, high]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_crossfade_rows_mix_both_windows(speechy_8k):
    x = speechy_8k[:6000]
    long, short = branch_configs(MULTI)
    w = blend_weights(MULTI)
    mid = (w > 0) & (w < 1)
    a = linear(cfp_from_signal(x, long))[:, :, mid]
    b = linear(cfp_from_signal(x, short))[:, :, mid] * branch_gains(MULTI)[:, mid]
    got = linear(cfp_from_signal(x, MULTI))[:, :, mid]
    np.testing.assert_allclose(got, (1 - w[mid]) * a + w[mid] * b, rtol=1e-5, atol=1e-6)


def test_blend_weights_are_a_raised_cosine_around_the_split():
    centre = 240  # split at fmin * 2 ** (240 / 60) = 512 Hz: an integer row
    cfg = replace(MULTI, split_hz=32.0 * 2 ** 4, crossfade_bins=12)
    w = blend_weights(cfg)
    assert w.shape == (360,)
    assert np.all(np.diff(w) >= 0)
    assert w[centre] == pytest.approx(0.5)
    k = np.arange(1, 10)
    np.testing.assert_allclose(w[centre - k] + w[centre + k], 1.0, atol=1e-12)  # odd around the centre
    assert np.all(w[: centre - 6] == 0) and np.all(w[centre + 6 :] == 1)
    assert 10 <= np.count_nonzero((w > 0) & (w < 1)) <= 12
    # The default split sits where the measurement put it (README "Front end design").
    default = blend_weights(MULTI)
    assert FREQS[np.argmax(default >= 0.5)] == pytest.approx(MULTI.split_hz, rel=0.012)


def test_branch_gains_make_the_fft_size_invisible():
    """The same short window at n_fft=1000 (times the gains) and at n_fft=4000 gives the
    same levels: the gains remove the FFT size and nothing else."""
    _, short = branch_configs(MULTI)
    x = harmonic_tone(310.0, 1.0, SR)
    rows = FREQS >= 250  # above the rows that a 2 Hz or an 8 Hz bin quantises coarsely
    small = linear(cfp_from_signal(x, short))[10:].mean(axis=0) * branch_gains(MULTI)
    big = linear(cfp_from_signal(x, replace(short, n_fft=MULTI.n_fft)))[10:].mean(axis=0)
    ratio = small[:, rows].sum(axis=1) / big[:, rows].sum(axis=1)
    np.testing.assert_allclose(ratio, 1.0, atol=0.02)
    # ... whereas without them the short branch sits 1.5-4x lower.
    raw = linear(cfp_from_signal(x, short))[10:].mean(axis=0)
    assert np.all(raw[:, rows].sum(axis=1) / big[:, rows].sum(axis=1) < 0.7)


def test_short_branch_lifters_and_filterbanks_fit_the_small_fft():
    _, short = branch_configs(MULTI)
    assert short.n_quef_kept <= short.n_fft // 2 + 1  # GC quefrencies up to fs / fmin = 250
    assert short.lifter_frequency == 4  # round(32 Hz / 8 Hz)
    assert short.lifter_quefrency == MULTI.lifter_quefrency  # quefrency is time: FFT-size free
    assert short.n_freq_kept == 257  # 0 .. 2048 Hz in 8 Hz bins


# ------------------------------------------------------------------ gain law


@pytest.mark.parametrize("window", ("asymmetric", "multires"))
def test_each_channel_scales_as_a_fixed_power_of_input_gain(window, speechy_8k):
    """What exact gain augmentation of cached linear features relies on (model/features.py)."""
    cfg = CfpConfig(window=window)
    x = speechy_8k[:4000]
    base = linear(cfp_from_signal(x, cfg))
    expo = gain_exponents(cfg)
    for gain in (0.1, 3.0):
        scaled = linear(cfp_from_signal(gain * x, cfg))
        want = base * (gain ** expo)[None, :, None]
        np.testing.assert_allclose(scaled, want, rtol=2e-5, atol=1e-6 * want.max())


# ------------------------------------------------------------------ delays


def test_reported_delays():
    stream = StreamingCFP(MULTI)
    long, short = branch_configs(MULTI)
    d_long = window_delay(analysis_window(long))[0]
    d_short, peak = window_delay(analysis_window(short))
    assert stream.delay_samples == d_short
    assert stream.peak_delay_samples == peak
    assert stream.latency_samples == round(d_short)
    assert 40 <= stream.delay_samples <= 64  # 5-8 ms, the goal of issue 13
    w = blend_weights(MULTI)
    assert stream.row_delay_samples.shape == (360,)
    np.testing.assert_allclose(stream.row_delay_samples[w == 0], d_long)
    np.testing.assert_allclose(stream.row_delay_samples[w == 1], d_short)
    assert np.all(np.diff(stream.row_delay_samples) <= 1e-12)  # later in the low rows
    single = StreamingCFP(CfpConfig(window="asymmetric"))
    np.testing.assert_array_equal(single.row_delay_samples, np.full(360, single.delay_samples))


def click_centroid_age(frames: np.ndarray, rows: np.ndarray, t0: int, cfg: CfpConfig) -> float:
    """Energy-weighted age (frame end - click time) of a click in the spectrum rows given."""
    level = linear(frames)[:, 0, rows]
    level = level[:, level.sum(axis=0) > 0].mean(axis=1)
    energy = level ** (2.0 / cfg.gammas[0])  # |X| ** 0.24 of a flat spectrum, back to energy
    ends = (np.arange(frames.shape[0]) + 1) * cfg.hop - 1
    return float(np.sum(energy * (ends - t0)) / np.sum(energy))


def test_a_click_shows_in_the_upper_rows_at_the_reported_delay():
    stream = StreamingCFP(MULTI)
    t0 = 4321
    x = np.zeros(8000)
    x[t0] = 1.0
    frames = cfp_from_signal(x, MULTI)
    w = blend_weights(MULTI)
    upper = click_centroid_age(frames, w == 1, t0, MULTI)
    lower = click_centroid_age(frames, w == 0, t0, MULTI)
    assert abs(upper - stream.delay_samples) <= MULTI.hop / 2
    assert abs(lower - stream.row_delay_samples[0]) <= MULTI.hop / 2
    assert lower - upper > 80  # the low rows describe the audio ~13 ms earlier


# ------------------------------------------------------------------ streaming rules


@pytest.mark.parametrize("mode", ("none", "fixed", "running"))
def test_streaming_is_bit_exact_for_any_block_size(mode, speechy_8k):
    x = speechy_8k[: SR // 2 + 37]
    norm = NormConfig(mode=mode)
    stats = FeatureStats.from_lists([0.1, 0.2, 0.3], [1.5, 2.0, 0.5]) if mode == "fixed" else None
    whole = StreamingCFP(MULTI, norm, stats).process(x).copy()
    assert whole.shape == (x.shape[0] // MULTI.hop, 3, 360)
    for block in BLOCK_SIZES:
        np.testing.assert_array_equal(stream_in_blocks(x, StreamingCFP(MULTI, norm, stats), block), whole)


def test_reset_and_warmup_leave_no_state(speechy_8k):
    x = speechy_8k[:4000]
    stream = StreamingCFP(MULTI, NormConfig(mode="running"))
    first = stream_in_blocks(x, stream, 441)
    stream.reset()
    stream.warmup()
    second = stream_in_blocks(x, stream, 441)
    np.testing.assert_array_equal(first, second)
    assert stream.frames_emitted == first.shape[0]


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"short_length": 0}, "short_length must be positive"),
        ({"short_fall": -1}, "short_fall must be positive"),
        ({"short_n_fft": 0}, "short_n_fft must be positive"),
        ({"crossfade_bins": 0}, "crossfade_bins must be positive"),
        ({"short_length": 768}, "shorter than cfp.win_length"),
        ({"short_fall": 192}, "short_fall must be in 1..191"),
        ({"short_n_fft": 1002}, "short_n_fft must be a multiple of 4"),
        ({"short_length": 600, "short_n_fft": 520}, "short_length must not exceed cfp.short_n_fft"),
        ({"short_n_fft": 4004}, "short_n_fft must not exceed cfp.n_fft"),
        ({"short_length": 128, "short_n_fft": 400}, "at least 2 \\* sample_rate / fmin = 500"),
        ({"split_hz": 20.0}, "split_hz must lie between fmin and fmax"),
        ({"split_hz": 3000.0}, "split_hz must lie between fmin and fmax"),
    ],
)
def test_bad_multires_settings_raise_clear_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        CfpConfig(window="multires", **changes)


def test_multires_fields_are_ignored_by_single_window_kinds():
    for window in ("symmetric", "asymmetric"):
        CfpConfig(window=window, short_length=5000, split_hz=-1.0)  # no error: not used


def test_multires_from_yaml_mapping():
    cfg = PipelineConfig.from_dict({"cfp": {"window": "multires", "split_hz": 300, "short_length": 256}}).cfp
    assert cfg.split_hz == 300.0 and isinstance(cfg.split_hz, float) and cfg.short_length == 256
    assert PipelineConfig.from_dict(PipelineConfig(cfp=cfg).to_dict()).cfp == cfg
    with pytest.raises(ConfigError, match="split_hz must be a number"):
        PipelineConfig.from_dict({"cfp": {"window": "multires", "split_hz": "high"}})


def test_one_window_questions_are_refused_for_multires():
    with pytest.raises(ValueError, match="two windows"):
        analysis_window(MULTI)
    with pytest.raises(ValueError, match="needs window 'multires'"):
        branch_configs(CfpConfig())

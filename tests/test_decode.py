"""Streaming decoder: equals the batch decoder, voicing hysteresis and smoothing delay on
constructed salience sequences with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from melodyrt.rt.decode import Decoder, DecoderConfig, decode_salience
from melodyrt.rt.errors import ConfigError
from melodyrt.rt.pitch import row_cents

CENTS = row_cents()


def salience(row: int, p_voiced: float = 0.9) -> np.ndarray:
    """A (361,) softmax-like vector: a symmetric 3-row bump centred on pitch row ``row``."""
    s = np.zeros(361)
    s[0] = 1.0 - p_voiced
    s[1 + row - 1 : 1 + row + 2] = p_voiced * np.array([0.25, 0.5, 0.25])
    return s


def no_hysteresis(threshold: float = 0.5, **kw) -> DecoderConfig:
    return DecoderConfig(voicing_on=threshold, voicing_off=threshold, on_frames=1, off_frames=1, **kw)


def test_streaming_decoder_equals_batch_decoder(rng):
    logits = rng.standard_normal((200, 361)) * 3
    sal = np.exp(logits) / np.exp(logits[:, 1:]).sum(axis=1, keepdims=True)
    unvoiced = rng.uniform(0, 1, 200)  # voicing on both sides of 0.5
    sal[:, 1:] *= (1 - unvoiced)[:, None]
    sal[:, 0] = unvoiced
    f0, voiced, conf = decode_salience(sal, half_width=4, voicing_threshold=0.5)
    dec = Decoder(no_hysteresis(0.5))
    sf0, svoiced, sconf = dec.decode(sal)
    assert dec.latency_frames == 0
    np.testing.assert_allclose(sf0, f0, rtol=1e-12)
    np.testing.assert_array_equal(svoiced, voiced)
    np.testing.assert_allclose(sconf, conf, rtol=1e-12)
    assert 0 < voiced.sum() < 200


def test_pitch_is_the_weighted_mean_in_cents():
    dec = Decoder(no_hysteresis())
    out = dec.step(salience(150))
    assert out.f0_hz == pytest.approx(10 * 2 ** (CENTS[150] / 1200), rel=1e-12)
    assert out.confidence == pytest.approx(0.9)
    lopsided = salience(150)
    lopsided[1 + 151] = 0.4  # a heavier upper neighbour (still below the peak) pulls the estimate up
    assert dec.step(lopsided).f0_hz > out.f0_hz


@pytest.mark.parametrize(
    "on_frames, off_frames, expected",
    [
        # p(voiced): 0.2  0.6  0.45 0.3  0.35 0.6  0.7  0.3  0.3  0.3
        (1, 1, [0, 1, 1, 0, 0, 1, 1, 0, 0, 0]),
        (1, 2, [0, 1, 1, 1, 0, 1, 1, 1, 0, 0]),
        (2, 2, [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]),
        (1, 3, [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]),
    ],
)
def test_voicing_hysteresis_known_answers(on_frames, off_frames, expected):
    p = [0.2, 0.6, 0.45, 0.3, 0.35, 0.6, 0.7, 0.3, 0.3, 0.3]
    dec = Decoder(DecoderConfig(voicing_on=0.5, voicing_off=0.4, on_frames=on_frames, off_frames=off_frames))
    got = [dec.step(salience(100, pv)).voiced for pv in p]
    assert got == [bool(e) for e in expected]
    assert dec.decision_lag_frames == (on_frames - 1, off_frames - 1)


def test_between_thresholds_keeps_the_current_state():
    dec = Decoder(DecoderConfig(voicing_on=0.6, voicing_off=0.3, off_frames=1))
    assert [dec.step(salience(100, pv)).voiced for pv in (0.5, 0.7, 0.5, 0.4, 0.31, 0.29, 0.5)] == [
        False, True, True, True, True, False, False]


@pytest.mark.parametrize("kind", ["median", "ema"])
@pytest.mark.parametrize("n", [3, 5, 7])
def test_smoothing_delay_on_a_ramp(kind, n):
    """A pitch rising one row (20 cents) per frame: the output lags by exactly (n - 1) / 2 frames."""
    dec = Decoder(no_hysteresis(smoothing=kind, smoothing_frames=n))
    lag = dec.latency_frames
    assert lag == (n - 1) // 2
    rows = np.arange(100, 170)
    out = [dec.step(salience(int(r))) for r in rows]
    assert not any(o.voiced for o in out[:lag])  # they describe frames before the stream
    cents_out = 1200 * np.log2(np.array([o.f0_hz for o in out]) / 10)
    t = np.arange(50, rows.size)
    expected = CENTS[rows[t - lag]]
    tol = 1e-6 if kind == "median" else 1e-3  # the EMA's lag is exact only in the steady state
    np.testing.assert_allclose(cents_out[t], expected, atol=tol)


def test_median_removes_a_one_frame_octave_jump():
    dec = Decoder(no_hysteresis(smoothing="median", smoothing_frames=3))
    rows = [120] * 5 + [180] + [120] * 5  # 180 = one octave up (60 rows)
    out = [dec.step(salience(r)) for r in rows]
    f = np.array([o.f0_hz for o in out[2:]])
    np.testing.assert_allclose(f, 10 * 2 ** (CENTS[120] / 1200), rtol=1e-12)


def test_median_stays_inside_the_voiced_run():
    """Frames of another run (across a silence) never enter the median."""
    dec = Decoder(no_hysteresis(smoothing="median", smoothing_frames=5))
    seq = [(100, 0.9)] * 6 + [(100, 0.1)] + [(200, 0.9)] * 6
    out = [dec.step(salience(r, p)) for r, p in seq]
    lag = dec.latency_frames
    described = [seq[i - lag] for i in range(lag, len(seq))]
    for o, (row, p) in zip(out[lag:], described):
        assert o.voiced == (p > 0.5)
        if o.voiced:
            assert o.f0_hz == pytest.approx(10 * 2 ** (CENTS[row] / 1200), rel=1e-12)


def test_reset_reproduces(rng):
    sal = rng.dirichlet(np.ones(361), size=40)
    dec = Decoder(DecoderConfig(smoothing="median", smoothing_frames=5, voicing_on=0.99, voicing_off=0.98))
    first = dec.decode(sal)
    dec.reset()
    second = dec.decode(sal)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [dict(smoothing_frames=4), dict(smoothing="mean"), dict(voicing_on=0.3, voicing_off=0.5),
     dict(on_frames=0), dict(half_width=-1)],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        DecoderConfig(**kwargs)

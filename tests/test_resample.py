"""StreamingResampler: block-size independence, passband, alias rejection, exact latency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from melodyrt.rt._resample_kernels import polyphase_block
from melodyrt.rt.errors import AudioInputError
from melodyrt.rt.resample import (
    QUALITIES,
    RECIPES,
    SUPPORTED_RATES,
    StreamingResampler,
    design_filter,
    resample_signal,
)

BLOCK_SIZES = (1, 64, 100, 441, 4096)
OUT = 8000
NON_8K = tuple(r for r in SUPPORTED_RATES if r != OUT)


def stream(x: np.ndarray, rs: StreamingResampler, block: int, flush: bool = True) -> np.ndarray:
    parts = []
    for i in range(0, x.shape[0], block):
        parts.append(rs.process(x[i : i + block]).copy())
        # output keeps pace with input exactly: no bursts, no stalls
        assert rs.samples_out == rs.samples_in * rs.out_rate // rs.in_rate
    if flush:
        parts.append(rs.flush())
    return np.concatenate(parts)


def fit_sine(y: np.ndarray, f: float, rate: int) -> tuple[float, float, float]:
    """Least-squares ``y[m] ~ a * sin(w m + theta)``: amplitude, phase, residual RMS."""
    m = np.arange(y.shape[0])
    w = 2 * np.pi * f / rate
    basis = np.stack([np.sin(w * m), np.cos(w * m)], axis=1)
    (c_s, c_c), *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    resid = y - basis @ np.array([c_s, c_c])
    return float(np.hypot(c_s, c_c)), float(np.arctan2(c_c, c_s)), float(np.sqrt(np.mean(resid**2)))


@pytest.mark.parametrize("rate", (16000, 22050, 44100, 48000))
def test_streaming_equals_one_block(rate, rng):
    x = (0.3 * rng.standard_normal(rate // 4 + 123)).astype(np.float32)
    rs = StreamingResampler(rate)
    whole = np.concatenate([rs.process(x).copy(), rs.flush()])
    n_expected = rs.latency_samples + math.ceil(x.shape[0] * OUT / rate)
    assert whole.shape[0] == n_expected
    for block in BLOCK_SIZES:
        y = stream(x, rs, block)
        assert y.shape == whole.shape
        np.testing.assert_allclose(y, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", (48000, 44100, 22050, 16000, 11025, 96000))
def test_passband_sine_right_frequency_amplitude_and_time(rate):
    """A sine comes out at its frequency and amplitude, delayed by exactly latency_samples."""
    n = int(0.3 * rate)
    t = np.arange(n) / rate
    for f in (100.0, 440.0, 1000.0, 1500.0, 2000.0, 2050.0):
        amp, phi = 0.5, 0.3
        rs = StreamingResampler(rate)
        y = stream((amp * np.sin(2 * np.pi * f * t + phi)).astype(np.float32), rs, 128, flush=False)
        lat = rs.latency_samples
        start = 2 * lat + 2  # first output whose whole filter span saw the tone
        a, theta, resid = fit_sine(y[start:], f, OUT)
        w = 2 * np.pi * f / OUT
        # y[m] = amp * sin(w (m - d) + phi) and theta is the phase at m = start; the phase
        # gives d modulo one period (100 Hz: 80 samples, so no ambiguity there)
        period = 2 * np.pi / w
        err = ((phi - theta) / w + start - lat + period / 2) % period - period / 2
        assert abs(20 * np.log10(a / amp)) < 0.01, (f, a)
        assert abs(err) < 0.01, (f, err, lat)  # timing within 1/100 sample
        assert resid < 1e-4 * amp, (f, resid)  # nothing but the one sine


@pytest.mark.parametrize("rate", (48000, 44100, 22050, 16000, 96000))
def test_alias_into_analysis_band_is_rejected(rate):
    """Tones that fold into 0..4 kHz (0..2.1 kHz above all) come out >= 80 dB down at "HQ"."""
    n = int(0.2 * rate)
    t = np.arange(n) / rate
    tones = [f for f in (4100.0, 5000.0, 5950.0, 6500.0, 8000.0, 9000.0, 10100.0, 14000.0, 22000.0, 47000.0)
             if f < rate / 2 - 50]
    assert tones
    for f in tones:
        rs = StreamingResampler(rate)
        y = stream((0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), rs, 256, flush=False)
        rms = np.sqrt(np.mean(y[3 * rs.latency_samples :].astype(np.float64) ** 2))
        assert 20 * np.log10(rms / (0.5 / np.sqrt(2))) < -80, (f, rms)


def test_alias_6500_hz_from_48k():
    """The brief's example: 6.5 kHz at 48 kHz would fold to 1.5 kHz."""
    t = np.arange(48000) / 48000
    y = resample_signal((0.5 * np.sin(2 * np.pi * 6500.0 * t)).astype(np.float32), 48000)
    tone = resample_signal((0.5 * np.sin(2 * np.pi * 1500.0 * t)).astype(np.float32), 48000)
    ratio = np.sqrt(np.mean(y[100:-100].astype(np.float64) ** 2) / np.mean(tone[100:-100].astype(np.float64) ** 2))
    assert 20 * np.log10(ratio) < -80


@pytest.mark.parametrize("quality", QUALITIES)
def test_every_design_meets_its_recipe(quality):
    """Measured on a finer grid than the design's own check, at every supported rate."""
    p_frac, s_frac, atten = RECIPES[quality]
    for rate in NON_8K:
        d = design_filter(rate, OUT, quality)
        freqs, mag = d.response(n_fft=4 * max(1 << 14, 1 << math.ceil(math.log2(16 * d.prototype.size))))
        db = 20 * np.log10(np.maximum(mag, 1e-30))
        assert d.passband_hz == pytest.approx(p_frac * OUT) and d.stopband_hz == pytest.approx(s_frac * OUT)
        # CFP range flat: 0..2050 Hz within 0.005 dB (0.001 dB for HQ and up)
        flat = 0.001 if quality in ("HQ", "VHQ") else 0.005
        assert np.abs(db[freqs <= 2200]).max() < flat, (rate, quality)
        # everything above the stopband edge, images of the zero-stuffed input included
        assert db[freqs >= d.stopband_hz].max() < -atten + 0.2, (rate, quality)
        # whatever folds into 0..2.1 kHz at 8 kHz: >= 70 dB in every recipe
        fold = np.abs(freqs - OUT * np.round(freqs / OUT))
        folds_in = (fold <= 2100) & (freqs > 2100)
        assert db[folds_in].max() < -70 + 0.2, (rate, quality)
        # the group delay is the prototype's symmetry centre
        h = d.prototype
        assert h.shape[0] == 2 * d.latency_samples * d.down + 1
        np.testing.assert_allclose(h, h[::-1], rtol=0, atol=1e-15)


def test_latency_table():
    """HQ (the default) delays by 12 samples = 1.5 ms at 8 kHz from every rate; faster recipes less."""
    for rate in NON_8K:
        lat = [StreamingResampler(rate, quality=q).latency_samples for q in QUALITIES]
        assert lat == [5, 6, 10, 12, 26], (rate, lat)
        rs = StreamingResampler(rate)
        assert rs.quality == "HQ" and rs.latency_seconds == pytest.approx(0.0015)
        assert isinstance(rs.latency_samples, int)
    assert StreamingResampler(48000).design.taps_per_phase == 145
    assert StreamingResampler(44100).design.taps_per_phase == 133


@pytest.mark.parametrize("rate", (48000, 44100, 22050, 16000, 11025, 12000, 192000))
def test_impulse_arrives_after_latency(rate):
    d = design_filter(rate)
    k0 = d.down * math.ceil(0.25 * rate / d.down)  # an input sample that lies on the 8 kHz grid
    x = np.zeros(k0 + rate // 4, np.float32)
    x[k0] = 1.0
    rs = StreamingResampler(rate)
    y = stream(x, rs, 128)
    peak = k0 * d.up // d.down + rs.latency_samples
    assert int(np.argmax(np.abs(y))) == peak
    # linear phase: the response is symmetric about the reported delay
    np.testing.assert_allclose(y[peak - 30 : peak], y[peak + 1 : peak + 31][::-1], rtol=0, atol=1e-7)
    assert np.all(y[: peak - 2 * rs.latency_samples] == 0)


@pytest.mark.parametrize("rate", (44100, 48000, 22050, 16000, 11025))
def test_resample_signal_sample_i_is_input_time_i_over_8k(rate):
    n = 2 * rate + 37
    t = np.arange(n) / rate
    sig = lambda tt: 0.4 * np.sin(2 * np.pi * 220.0 * tt) + 0.2 * np.sin(2 * np.pi * 1900.0 * tt + 1.0)  # noqa: E731
    y = resample_signal(sig(t).astype(np.float32), rate)
    assert y.dtype == np.float32 and y.shape[0] == math.ceil(n * OUT / rate)
    expected = sig(np.arange(y.shape[0]) / OUT)
    edge = 2 * design_filter(rate).latency_samples + 2  # the signal starts and stops abruptly
    np.testing.assert_allclose(y[edge:-edge], expected[edge:-edge], rtol=0, atol=1e-4)


def test_passthrough_at_8k():
    rs = StreamingResampler(8000)
    x = np.linspace(-1, 1, 1000).astype(np.float32)
    assert rs.latency_samples == 0 and rs.design is None
    np.testing.assert_array_equal(stream(x, rs, 64), x)
    np.testing.assert_array_equal(resample_signal(x, 8000), x)


def test_reset_repeats_output(rng):
    x = rng.standard_normal(20000).astype(np.float32)
    rs = StreamingResampler(44100)
    a = stream(x, rs, 441)  # flush() resets
    b = stream(x, rs, 441)
    np.testing.assert_array_equal(a, b)
    rs.process(x[:5000])  # a half-fed stream, then reset by hand
    rs.reset()
    assert rs.samples_in == rs.samples_out == 0
    np.testing.assert_array_equal(stream(x, rs, 441), a)


@pytest.mark.parametrize("rate", (48000, 8000))
def test_nan_is_sanitised_and_counted(rate, rng):
    x = rng.standard_normal(4800).astype(np.float32)
    x[[5, 100, 4000]] = [np.nan, np.inf, -np.inf]
    rs = StreamingResampler(rate)
    parts = [rs.process(x[i : i + 480]).copy() for i in range(0, 4800, 480)]
    assert rs.samples_sanitised == 3
    y = np.concatenate(parts + [rs.flush()])
    assert rs.samples_sanitised == 0  # flush resets
    assert np.all(np.isfinite(y))
    clean = x.copy()
    clean[[5, 100, 4000]] = 0.0
    np.testing.assert_array_equal(y, stream(clean, StreamingResampler(rate), 480))


def test_input_forms_give_the_same_output(rng):
    """float64, (n, 1), strided, read-only and integer blocks are converted by value."""
    x = np.round(1000 * rng.standard_normal(3000)).astype(np.float32)
    ref = stream(x, StreamingResampler(48000), 300)
    for form in (x.astype(np.float64), x[:, None], np.repeat(x, 2)[::2], x.astype(np.int16)):
        np.testing.assert_array_equal(stream(form, StreamingResampler(48000), 300), ref)
    ro = x.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(stream(ro, StreamingResampler(48000), 300), ref)


def test_output_is_a_view_into_a_preallocated_buffer(rng):
    rs = StreamingResampler(48000)
    a = rs.process(rng.standard_normal(128).astype(np.float32))
    b = rs.process(rng.standard_normal(128).astype(np.float32))
    assert a.dtype == np.float32 and np.shares_memory(a, b), "documented: overwritten by the next call"
    big = rs.process(np.zeros(10000, np.float32))  # bigger than the initial buffers: grows once
    assert big.shape[0] == (128 + 128 + 10000) // 6 - a.shape[0] - b.shape[0]


def test_kernel_is_ready_at_construction():
    """The first block of a live stream must not wait for numba: construction compiled
    (or loaded) the one signature process() and flush() use, whatever the block's dtype."""
    rs = StreamingResampler(44100)
    n_signatures = len(polyphase_block.signatures)
    rs.process(np.zeros(128))
    rs.process(np.zeros(128, np.float32))
    rs.flush()
    StreamingResampler(8000).process(np.zeros(64, np.float32))
    assert len(polyphase_block.signatures) == n_signatures == 1


def test_empty_blocks_and_flush_of_nothing():
    rs = StreamingResampler(44100)
    assert rs.process(np.zeros(0, np.float32)).shape == (0,)
    assert rs.flush().shape == (0,)
    assert resample_signal(np.zeros(0, np.float32), 44100).shape == (0,)


def test_all_supported_rates_construct():
    for rate in SUPPORTED_RATES:
        assert StreamingResampler(rate).latency_samples >= 0


@pytest.mark.parametrize("rate", (0, -8000, 12345, 44100.5, "48000", None, True))
def test_unsupported_rate_is_one_clear_line(rate):
    with pytest.raises(AudioInputError) as err:
        StreamingResampler(rate)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg and "unsupported" in msg and "48000" in msg


def test_bad_quality_shape_and_dtype():
    with pytest.raises(AudioInputError, match="quality"):
        StreamingResampler(48000, quality="best")
    with pytest.raises(AudioInputError, match="mono"):
        StreamingResampler(48000).process(np.zeros((10, 2), np.float32))
    with pytest.raises(AudioInputError, match="real numbers"):
        StreamingResampler(48000).process(np.zeros(10, np.complex64))
    with pytest.raises(AudioInputError, match="output sample rate"):
        StreamingResampler(48000, out_rate=0)

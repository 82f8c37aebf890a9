"""The tracker: structure, timestamps against the reported latency, block-size independence,
reset, sanitising, loudness alignment.

The session's model is untrained (``untrained_bundle``), so pitch values are meaningless here;
what is tested is what the stream does with time. Accuracy is tested in test_transcribe.py
when a trained model exists.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from melodyrt.rt.decode import DecoderConfig
from melodyrt.rt.errors import AudioInputError
from melodyrt.rt.synth import harmonic_tone, sung_melody
from melodyrt.rt.tracker import LatencyReport, Tracker, TrackerConfig, hop_wait


@pytest.fixture(scope="module")
def trackers(untrained_bundle):
    """One warmed-up tracker per rate, reset by each test before use."""
    made: dict[int, Tracker] = {}

    def get(rate: int) -> Tracker:
        if rate not in made:
            made[rate] = Tracker(rate, untrained_bundle, backend="ort")
            made[rate].warmup()
        made[rate].reset()
        return made[rate]

    return get


def feed(tracker: Tracker, x: np.ndarray, block: int) -> list:
    """Frames of ``x`` fed in ``block``-sized pieces."""
    out = []
    for i in range(0, x.shape[0], block):
        out += tracker.process(x[i : i + block])
    return out


@pytest.fixture(scope="module")
def melody48() -> np.ndarray:
    return sung_melody(sr=48000, seed=2).audio[:24000]


def test_frame_count_indices_and_timestamps(trackers, melody48):
    tr = trackers(48000)
    frames = feed(tr, melody48, 128)
    assert len(frames) == (melody48.shape[0] * 8000 // 48000) // 80 == 50
    assert [f.index for f in frames] == list(range(50))
    d = tr.delay_samples
    for k, f in enumerate(frames):
        assert f.sample == math.floor(((k + 1) * 80 - 1) * 6 - d + 0.5)
        assert f.time == f.sample / 48000
        assert np.isfinite([f.f0_hz, f.confidence, f.loudness_db]).all() and f.f0_hz > 0
        assert 0.0 <= f.confidence <= 1.0
    assert np.all(np.diff([f.sample for f in frames]) == 480)


def test_latency_report_adds_up_what_each_stage_reports(trackers):
    tr = trackers(48000)
    rep = tr.latency(128)
    assert isinstance(rep, LatencyReport)
    assert rep.resampler == tr.resampler.latency_samples * 6 == 72
    assert rep.cfp_window == pytest.approx(tr.cfp.delay_samples * 6)
    assert rep.model == tr.bundle.delay_frames * 480
    assert rep.smoothing == 0 and rep.input_processing == 0
    assert rep.algorithmic == pytest.approx(tr.delay_samples)
    assert (rep.hop_wait_mean, rep.hop_wait_worst) == (53.0, 101.0)
    assert rep.total_worst == pytest.approx(rep.algorithmic + 101.0)
    assert rep.ms(480) == 10.0
    d = rep.as_dict()
    assert d["algorithmic"]["samples"] == pytest.approx(rep.algorithmic, abs=1e-3)
    assert {"resampler", "cfp_window", "hop_wait_mean", "hop_wait_worst", "audio_buffering", "total_worst"} <= set(d)
    assert "algorithmic" in rep.table()


def test_smoothing_and_input_processing_shift_timestamps(untrained_bundle, trackers, melody48):
    plain = feed(trackers(48000), melody48, 480)
    cfg = TrackerConfig(decoder=DecoderConfig(smoothing="median", smoothing_frames=5))
    smoothed = Tracker(48000, untrained_bundle, config=cfg, engine=trackers(48000).engine, pre_delay_samples=100)
    assert smoothed.latency().smoothing == 2 * 480
    assert smoothed.latency().input_processing == 100
    frames = feed(smoothed, melody48, 480)
    assert [f.sample for f in frames] == [f.sample - 960 - 100 for f in plain]


@pytest.mark.parametrize("rate, block", [(48000, 128), (44100, 441), (44100, 100), (16000, 64)])
def test_arrival_minus_timestamp_is_delay_plus_reported_hop_wait(trackers, rate, block):
    """Every frame leaves the tracker ``D + wait`` after the audio it describes, the wait
    ranging over what :func:`hop_wait` reports (its mean over whole periods)."""
    tr = trackers(rate)
    x = harmonic_tone(220.0, 1.0, rate).astype(np.float32)
    lags = []
    for i in range(0, x.shape[0], block):
        for f in tr.process(x[i : i + block]):
            lags.append(tr.samples_in - 1 - f.sample - tr.delay_samples)
    mean, worst = hop_wait(rate, block)
    lags = np.array(lags)
    assert lags.min() >= -0.5 and lags.max() <= worst + 0.5
    assert lags.max() >= worst - 0.5
    assert lags.mean() == pytest.approx(mean, abs=0.02 * block + 1)


def test_hop_wait_known_answers():
    assert hop_wait(48000, 128) == (53.0, 101.0)  # phases 96, 64, 32, 0 plus 5 release samples
    assert hop_wait(48000, 1) == (5.0, 5.0)  # block 1: only the resampler's release granularity
    assert hop_wait(8000, 80) == (0.0, 0.0)  # blocks aligned with hops
    assert hop_wait(8000, 1) == (0.0, 0.0)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_block_size_independence(trackers, rate):
    x = sung_melody(sr=rate, seed=1).audio[: 35 * rate // 100]
    tr = trackers(rate)
    reference = feed(tr, x, 4096)
    assert len(reference) == 35
    for block in (1, 64, 100, 441, 128):
        tr.reset()
        assert feed(tr, x, block) == reference, f"block {block}"


def test_reset_and_warmup_reproduce_a_fresh_tracker(untrained_bundle, trackers, melody48):
    tr = trackers(48000)
    first = feed(tr, melody48, 256)
    tr.reset()
    assert feed(tr, melody48, 256) == first
    fresh = Tracker(48000, untrained_bundle, backend="ort")
    assert feed(fresh, melody48, 256) == first  # no warm-up: warmup() must leave no trace
    assert tr.frames_emitted == 50 and tr.samples_in == melody48.shape[0]


def test_nan_and_inf_are_sanitised_like_zeros(trackers, melody48):
    tr = trackers(48000)
    bad = melody48.copy()
    bad[5000:5100] = np.nan
    bad[9000] = np.inf
    bad[12000] = -np.inf
    frames = feed(tr, bad, 128)
    assert tr.samples_sanitised == 102
    assert all(np.isfinite([f.f0_hz, f.confidence, f.loudness_db]).all() for f in frames)
    zeros = np.nan_to_num(bad, nan=0.0, posinf=0.0, neginf=0.0)
    tr.reset()
    assert feed(tr, zeros, 128) == frames


def test_loudness_is_the_rms_of_the_hop_the_frame_describes(trackers):
    """Silence, then a sine from sample 24000: frames before the onset are silent, frames
    after it carry the sine's RMS, and the step sits where the timestamps say."""
    rate, onset = 48000, 24000
    x = np.zeros(2 * rate, np.float32)
    t = np.arange(rate) / rate
    x[onset : onset + rate] = 0.3 * np.sin(2 * np.pi * 400.0 * t)  # whole cycles per hop
    frames = feed(trackers(rate), x, 128)
    half = 240
    rms_db = 20 * np.log10(0.3 / np.sqrt(2))
    before = [f for f in frames if f.sample + half <= onset]
    inside = [f for f in frames if onset <= f.sample - half and f.sample + half <= onset + rate]
    assert before and inside
    assert max(f.loudness_db for f in before) <= -100
    assert all(abs(f.loudness_db - rms_db) < 0.1 for f in inside)
    edge = min((f for f in frames if f.sample > onset - half), key=lambda f: f.sample)
    assert rms_db - 7 < edge.loudness_db < rms_db  # straddles the onset: part silence


def test_any_block_shape_and_errors(trackers):
    tr = trackers(48000)
    assert tr.process(np.zeros(0, np.float32)) == []
    assert len(tr.process(np.zeros((960, 1), np.float32))) == 2  # (n, 1) accepted
    assert len(tr.process(np.zeros(10_000, np.float64))) == 20  # bigger than CHUNK is fine
    with pytest.raises(AudioInputError, match="mono"):
        tr.process(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioInputError, match="unsupported"):
        Tracker(12345, tr.bundle, engine=tr.engine)


def test_stage_timings_are_recorded_per_hop(trackers, melody48):
    tr = trackers(48000)
    tr.timings.clear()
    frames = feed(tr, melody48, 128)
    snap = tr.timings.snapshot()
    for stage in ("cfp", "engine", "decode", "hop"):
        assert snap[stage].shape == (len(frames),) and (snap[stage] > 0).all()
    assert snap["resample"].shape == (melody48.shape[0] // 128 + 1,)
    assert (snap["hop"] >= snap["engine"]).all()
    summary = tr.timings.summary()
    assert summary["hop"]["n"] == len(frames) and summary["hop"]["p50_ms"] > 0

"""Audio-domain training augmentation (model/augment.py): labels follow the pitch shift in
frequency and time, SNR and levels are what was asked, batches are reproducible and shaped
as SegmentSampler's, and a real training run goes through it."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")
pytest.importorskip("scipy", reason="augmentation needs scipy (with mir_eval in the [train] extra)")

from melodyrt.model import augment as A  # noqa: E402
from melodyrt.model.datasets import Track  # noqa: E402
from melodyrt.model.features import FeatureCache  # noqa: E402
from melodyrt.model.train import SegmentSampler  # noqa: E402
from melodyrt.model.train_config import AugmentConfig, TrainConfig, load_train_config  # noqa: E402
from melodyrt.rt import synth  # noqa: E402
from melodyrt.rt.cfp import FeatureStats, cfp_from_signal  # noqa: E402
from melodyrt.rt.config import CfpConfig, NormConfig  # noqa: E402
from melodyrt.rt.errors import ConfigError  # noqa: E402
from melodyrt.rt.pitch import hz_to_class  # noqa: E402
from melodyrt.rt.resample import design_filter  # noqa: E402

SR = 8000
DATA = Path(os.environ.get("MELODYRT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k"))
#: Every effect off: what is left is the remix, the shift and the (linear) level step.
DRY = dict(eq_prob=0.0, reverb_prob=0.0, compress_prob=0.0, limit_prob=0.0, resample_prob=0.0, workers=0)


def sung_clip(name: str, seed: int, lo: int = 57, hi: int = 70, note_s: float = 0.25, n_notes: int = 30,
              accomp: np.ndarray | None = None) -> A.Clip:
    """A synthetic voice of jumping notes with its exact f0 on a 10 ms grid."""
    rng = np.random.default_rng(seed)
    notes = [(float(rng.integers(lo, hi)), note_s) for _ in range(n_notes)]
    f0 = synth.f0_contour(notes, SR, vibrato_cents=0.0, glide_s=0.0)
    voice = synth.harmonic_tone(f0, 0.0, SR, rng=rng, peak=0.5)
    lt = np.arange(0.0, f0.shape[0] / SR, 0.01)
    lf = f0[np.minimum(np.round(lt * SR).astype(int), f0.shape[0] - 1)]
    if accomp is not None:
        accomp = np.resize(accomp, voice.shape[0])
    return A.Clip.of(name, voice, accomp, lt, lf)


def make_cfg(segment_frames: int = 128, batch_size: int = 4, **aug) -> TrainConfig:
    return TrainConfig(cfp=CfpConfig(window="asymmetric"), segment_frames=segment_frames, warmup_frames=8,
                       batch_size=batch_size, augment=AugmentConfig(enabled=True, **aug))


def noise_clips(n: int = 3, seconds: float = 4.0, seed: int = 0) -> list[A.Clip]:
    rng = np.random.default_rng(seed)
    m = int(seconds * SR)
    lt = np.arange(0.0, seconds, 0.02)
    return [A.Clip.of(f"c{i}", 0.1 * rng.standard_normal(m), (0.05 + 0.1 * i) * rng.standard_normal(m), lt,
                      np.full(lt.shape, 220.0)) for i in range(n)]


def test_pitch_shift_moves_the_cfp_peak_and_the_labels_together():
    """The GCoS x GC product peaks at f0 (reference section 2.8): after the voice is shifted
    it must peak where the shifted labels say, frame by frame (notes jump every 0.25 s, so
    labels read at the wrong time would miss)."""
    clip = sung_clip("syn", 5)
    cfg = make_cfg(voice_only_prob=1.0, own_accomp_prob=0.0, pitch_shift_prob=1.0, pitch_shift_semitones=3.0, **DRY)
    s = A.AudioSegmentSampler([], cfg, FeatureStats.identity(), 0, clips=[clip])
    ratios = []
    for seed in range(5):
        seg = s.render(np.random.default_rng(seed))
        p, q = seg.info["ratio"]
        ratios.append(p / q)
        x = s.features(seg.audio)  # log1p (identity stats)
        peak = (np.expm1(x[1]) * np.expm1(x[2])).argmax(axis=0)
        cls = hz_to_class(seg.f0, cfg.cfp)
        voiced = cls > 0
        assert voiced.mean() > 0.9
        hit = np.abs(peak[voiced] - (cls[voiced] - 1)) <= 2  # within 40 cents
        assert hit.mean() > 0.85, (p, q, hit.mean())
        if abs(math.log2(p / q)) * 12 > 1.0:  # the unshifted labels do not fit
            unshifted = hz_to_class(seg.f0 * q / p, cfg.cfp)
            assert (np.abs(peak[voiced] - (unshifted[voiced] - 1)) <= 2).mean() < 0.3
    assert max(ratios) > 2 ** (1 / 12) and min(ratios) < 2 ** (-1 / 12)  # both directions were tried


def test_pitch_shift_resamples_frequency_and_duration():
    p, q = A.shift_ratio(3.0)
    assert p / q == pytest.approx(2 ** 0.25, abs=0.006)
    x = synth.pure_tone(300.0, 2.0, SR)
    y = A.pitch_shift(x, p, q)
    assert y.shape[0] == math.ceil(x.shape[0] * q / p)
    spec = np.abs(np.fft.rfft(y[1000:13000] * np.hanning(12000)))
    assert np.fft.rfftfreq(12000, 1 / SR)[spec.argmax()] == pytest.approx(300.0 * p / q, abs=1.0)


@pytest.mark.parametrize("window", ["asymmetric", "multires", "symmetric"])
def test_unshifted_voice_alone_is_the_streaming_cfp_of_the_clip_with_its_cache_labels(tmp_path, window):
    """Without shift and effects a segment is a window of the clip: its frames equal the whole
    clip's streaming CFP (the history before the segment is real audio) and its labels equal
    FeatureCache.labels of the clip, lookahead included, whatever the front end's window."""
    cfp = CfpConfig(window=window)
    clip = sung_clip("syn", 2)
    for lookahead in (0, 3):
        cfg = dataclasses.replace(make_cfg(voice_only_prob=1.0, own_accomp_prob=0.0, pitch_shift_prob=0.0,
                                           peak_prob=1.0, peak_dbfs=(-6.0, -6.0), **DRY), cfp=cfp)
        s = A.AudioSegmentSampler([], cfg, FeatureStats.identity(), lookahead, clips=[clip])
        k0 = 150  # first frame of the segment in the clip's stream
        seg = s.render(np.random.default_rng(0), start=k0 * cfp.hop)
        ref = clip.voice[k0 * cfp.hop - s.history_frames * cfp.hop:][: seg.audio.shape[0]].astype(np.float64)
        g = float(np.dot(seg.audio, ref) / np.dot(ref, ref))  # the level step is one gain
        np.testing.assert_allclose(seg.audio, g * ref, atol=1e-6)
        full = cfp_from_signal(g * clip.voice.astype(np.float64), cfp, NormConfig(mode="none"))
        np.testing.assert_allclose(s.features(seg.audio), full[k0 : k0 + 128].transpose(1, 2, 0), atol=2e-4)
        track = Track("syn", Path("syn.wav"), clip.label_times, clip.label_f0)
        cached = FeatureCache(tmp_path, cfp).labels(track, full.shape[0], lookahead)[k0 : k0 + 128]
        np.testing.assert_allclose(seg.f0, cached, rtol=1e-9)


def test_remix_snr_and_sources():
    assert A.accompaniment_gain(6.0, 0.2, 0.1) == pytest.approx(2.0 * 10 ** (-6 / 20))
    clips = noise_clips()
    cfg = make_cfg(voice_only_prob=0.0, own_accomp_prob=0.0, pitch_shift_prob=0.0, snr_db=(-5.0, 15.0), **DRY)
    s = A.AudioSegmentSampler([], cfg, FeatureStats.identity(), 0, clips=clips)
    rng = np.random.default_rng(3)
    snrs = []
    for _ in range(12):
        seg = s.render(rng)
        assert seg.info["kind"] == "cross" and seg.info["accomp_clip"] != seg.info["clip"]
        inside = seg.voice != 0  # the chunk may start before the voice clip (zeros there)
        # Stationary noise: RMS over the chunk = RMS over the clip (the SNR's reference).
        measured = A.db(A.rms(seg.voice[inside]) / A.rms(seg.accomp[inside]))
        assert measured == pytest.approx(seg.info["snr_db"], abs=0.25)
        snrs.append(seg.info["snr_db"])
    assert -5.0 <= min(snrs) and max(snrs) <= 15.0 and max(snrs) - min(snrs) > 5.0
    kinds = {s.render(rng).info["kind"] for _ in range(5)}
    assert kinds == {"cross"}
    own = A.AudioSegmentSampler([], make_cfg(voice_only_prob=0.0, own_accomp_prob=1.0, **DRY),
                                FeatureStats.identity(), 0, clips=clips)
    seg = own.render(rng)
    assert seg.info["kind"] == "own" and seg.info["ratio"] == (1, 1)  # the song keeps its key
    alone = A.AudioSegmentSampler([], make_cfg(voice_only_prob=1.0, own_accomp_prob=0.0, **DRY), FeatureStats.identity(), 0, clips=clips)
    assert alone.render(rng).accomp is None


def test_accompaniment_only_segments_are_unvoiced():
    clips = noise_clips()
    cfg = make_cfg(voice_only_prob=0.0, own_accomp_prob=0.0, accomp_only_prob=1.0, pitch_shift_prob=1.0, **DRY)
    s = A.AudioSegmentSampler([], cfg, FeatureStats.identity(), 0, clips=clips)
    rng = np.random.default_rng(5)
    for _ in range(4):
        seg = s.render(rng)
        assert seg.info["kind"] == "accomp" and seg.info["accomp_clip"] != seg.info["clip"]
        assert seg.info["ratio"] == (1, 1)  # nothing to transpose
        assert not seg.voice.any() and seg.accomp is not None and A.rms(seg.audio) > 1e-3
        assert not seg.f0.any() and seg.valid.all()  # every frame a rest the loss sees
    _, classes, mask = s.segment(rng)
    assert not classes.any() and mask[cfg.warmup_frames :].all()
    # The share comes out of the cross remixes: with the default 0 nothing changes.
    mixed = A.AudioSegmentSampler([], make_cfg(voice_only_prob=0.2, own_accomp_prob=0.2, accomp_only_prob=0.3, **DRY),
                                  FeatureStats.identity(), 0, clips=clips)
    kinds = [mixed.render(rng).info["kind"] for _ in range(200)]
    assert 0.2 < kinds.count("accomp") / 200 < 0.4 and {"voice", "own", "cross"} <= set(kinds)
    with pytest.raises(ConfigError, match="accomp_only_prob"):
        AugmentConfig(voice_only_prob=0.5, own_accomp_prob=0.3, accomp_only_prob=0.3)


def test_level_normalisation_and_limiter(rng):
    x = 0.05 * rng.standard_normal(8000) * np.repeat(rng.uniform(0.2, 1.0, 20), 400)
    peak_cfg = AugmentConfig(peak_prob=1.0, limit_prob=0.0, peak_dbfs=(-3.0, -3.0))
    y, info = A.master_level(x, rng, peak_cfg, SR)
    assert info["mode"] == "peak" and A.db(np.abs(y).max()) == pytest.approx(-3.0, abs=1e-6)
    loud_cfg = AugmentConfig(peak_prob=0.0, limit_prob=0.0, loudness_dbfs=(-23.0, -23.0))
    z, info = A.master_level(np.concatenate([x, np.zeros(8000)]), rng, loud_cfg, SR)
    assert info["mode"] == "loudness" and A.gated_loudness(z, SR) == pytest.approx(-23.0, abs=1e-6)
    # The silent half is gated out: the loudness is that of the sung half.
    assert A.gated_loudness(np.concatenate([x, np.zeros(8000)]), SR) == pytest.approx(A.gated_loudness(x, SR), abs=0.05)
    lim = A.limit(x * 10, 0.5, SR)
    assert np.abs(lim).max() <= 0.5 + 1e-12 and A.rms(lim) > 0.5 * A.rms(np.clip(x * 10, -0.5, 0.5))
    hot = AugmentConfig(peak_prob=0.0, limit_prob=1.0, limit_drive_db=(12.0, 12.0), loudness_dbfs=(-6.0, -6.0))
    w, info = A.master_level(x, rng, hot, SR)
    assert info["limited"] and np.abs(w).max() <= 1.0
    silent, info = A.master_level(np.zeros(100), rng, loud_cfg, SR)
    assert info["mode"] == "silent" and not silent.any()


def test_eq_sections_have_the_drawn_gain():
    from scipy import signal as sps

    sos = A._rbj("peak", 1000.0, 6.0, 1.0, SR)[None]
    w, h = sps.sosfreqz(sos, worN=[1000.0, 100.0], fs=SR)
    assert A.db(abs(h[0])) == pytest.approx(6.0, abs=1e-6) and abs(A.db(abs(h[1]))) < 0.3
    low = A._rbj("low", 200.0, -9.0, 0.7, SR)[None]
    _, h = sps.sosfreqz(low, worN=[20.0, 3000.0], fs=SR)
    assert A.db(abs(h[0])) == pytest.approx(-9.0, abs=0.3) and abs(A.db(abs(h[1]))) < 0.3


def test_device_rate_path_has_the_live_resampler_roll_off():
    t = np.arange(2 * SR) / SR
    for rate in (44100, 48000):
        for f in (500.0, 3500.0):
            x = np.sin(2 * np.pi * f * t)
            y = A.through_device_rate(x, rate, SR)
            assert y.shape == x.shape
            mid = slice(2000, 14000)
            gain = A.rms(y[mid]) / A.rms(x[mid])
            freqs, mag = design_filter(rate, SR, "HQ").response()
            expected = float(np.interp(f, freqs, mag))
            assert A.db(gain) == pytest.approx(A.db(expected), abs=0.5), (rate, f)
            if f == 500.0:  # time-aligned: no delay left
                assert np.corrcoef(y[mid], x[mid])[0, 1] > 0.999
    assert A.db(expected) < -6.0  # 3.5 kHz is well into the roll-off


def test_batches_are_reproducible_and_shaped_like_segment_sampler(tmp_path):
    clips = [sung_clip(f"s{i}", i, accomp=0.05 * np.random.default_rng(i).standard_normal(SR)) for i in range(3)]
    cfg = make_cfg(segment_frames=40, batch_size=3, workers=0, resample_prob=0.5, reverb_prob=0.5)
    stats = FeatureStats(np.full((3, 360), 0.1), np.full((3, 360), 0.5))
    s = A.AudioSegmentSampler([], cfg, stats, 0, clips=clips)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a1, a2 = s.batch(rng_a), s.batch(rng_a)
    b1 = s.batch(rng_b)
    for u, v in zip(a1, b1):
        assert torch.equal(u, v)
    assert not torch.equal(a1[0], a2[0])

    # The cached sampler on a stand-in cache: the same types, shapes and mask convention.
    cfp = cfg.cfp

    class FakeCache:
        cfg = cfp

        def load(self, track, variant):
            return np.full((100, 3, 360), 0.5, np.float16)

        def labels(self, track, n, shift=0):
            return np.full(n, 220.0)

    track = Track("t", Path("t.flac"), np.array([0.0]), np.array([220.0]), voice_channel=1)
    ref = SegmentSampler(FakeCache(), [track], cfg, stats, 0).batch(np.random.default_rng(0))
    for ours, theirs in zip(a1, ref):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert (a1[2][:, : cfg.warmup_frames] == 0).all() and (a1[2][:, cfg.warmup_frames :] == 1).all()
    assert torch.isfinite(a1[0]).all() and (a1[1] >= 0).all() and (a1[1] <= 360).all()

    # Rendered ahead by a background process: the very same batches.
    bg = A.AudioSegmentSampler([], dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, workers=1)),
                               stats, 0, clips=clips)
    try:
        rng_c = np.random.default_rng(7)
        c1, c2 = bg.batch(rng_c), bg.batch(rng_c)
    finally:
        bg.close()
    for u, v in zip(a1 + a2, c1 + c2):
        assert torch.equal(u, v)
    assert rng_c.bit_generator.state == rng_a.bit_generator.state  # one draw per batch, either way


def test_augment_config_is_validated_and_the_example_loads():
    for bad in ({"snr_db": [10, -5]}, {"voice_only_prob": 0.7, "own_accomp_prob": 0.5}, {"reverb_prob": 1.5},
                {"resample_rates": [44100, 12345]}, {"resample_quality": "best"}, {"pitch_shift_semitones": 20},
                {"workers": -1}, {"peak_dbfs": [-6, 3]}):
        with pytest.raises(ConfigError, match="augment"):
            TrainConfig.from_dict({"augment": bad})
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"augment": {"pitch": 1}})
    assert not TrainConfig().augment.enabled and not load_train_config("rt2").augment.enabled
    cfg = load_train_config("rt2_aug")
    assert cfg.augment.enabled and cfg.model == "rt2"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.skipif(not (DATA / "audio").is_dir(), reason=f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
def test_tiny_training_run_through_the_augmented_sampler(tmp_path):
    from melodyrt.model.train import load_checkpoint, train

    cfg = TrainConfig(
        model="rt2", data=str(DATA), cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "run"),
        cfp=CfpConfig(window="asymmetric"), segment_frames=48, warmup_frames=8, batch_size=2, lr=1e-3,
        epochs=1, steps_per_epoch=3, checkpoint_every=3, workers=1, threads=1, val_variants=("mix0",),
        augment=AugmentConfig(enabled=True, workers=1),
    )
    state = train(cfg, progress=False, max_tracks=3, stop_after_steps=3)
    assert state.global_step == 3
    ck = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    assert ck["train_config"]["augment"]["enabled"] is True
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())

"""pedalboard input processors on synthesized signals, block by block."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.errors import ConfigError

pedalboard = pytest.importorskip("pedalboard", reason="pedalboard not installed (pip install 'melodyrt[fx]')")

from melodyrt.rt import fx  # noqa: E402

SR = 48000


def tone(freq: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def stream(proc, x: np.ndarray, block: int) -> np.ndarray:
    return np.concatenate([proc.process(x[i:i + block]) for i in range(0, x.shape[0], block)])


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def test_highpass_removes_mains_hum_and_keeps_the_voice():
    hp = fx.highpass(sample_rate=SR, block_size=128, cutoff_hz=120.0, order=4)
    assert hp.latency_samples == 0 and hp.latency_source == "none reported"
    hum, voice = tone(50.0, amp=0.5), tone(440.0)
    half = SR // 2                                    # skip the filter's settling
    y_hum = stream(hp, hum, 128)
    hp.reset()
    y_voice = stream(hp, voice, 128)
    assert level_db(y_hum[half:]) - level_db(hum[half:]) < -25.0
    assert abs(level_db(y_voice[half:]) - level_db(voice[half:])) < 2.0
    assert y_hum.shape == hum.shape and y_hum.dtype == np.float32


@pytest.mark.parametrize("block", [64, 100, 441])
def test_streaming_equals_offline_for_any_block_size(block, rng):
    x = (0.1 * rng.standard_normal(SR // 2)).astype(np.float32)
    proc = fx.compressor(sample_rate=SR, block_size=512, threshold_db=-30.0, ratio=4.0)
    ref = pedalboard.Compressor(threshold_db=-30.0, ratio=4.0, attack_ms=5.0, release_ms=100.0)(x[None, :], SR)[0]
    y = stream(proc, x, block)
    assert np.allclose(y, ref, atol=1e-5)


def test_latency_is_measured_and_the_output_aligned():
    """Resample holds audio back: the processor reports it and pads, so output == offline, delayed."""
    proc = fx.effect(sample_rate=SR, block_size=128, effect="Resample", target_sample_rate=8000.0)
    lat = proc.latency_samples
    assert lat > 0 and proc.latency_source == "measured"
    x = tone(300.0, 0.5)
    y = stream(proc, x, 128)
    ref = pedalboard.Resample(target_sample_rate=8000.0)(x[None, :], SR)[0]
    assert y.shape == x.shape
    assert np.all(y[:lat] == 0.0)
    assert np.allclose(y[lat:], ref[: x.shape[0] - lat], atol=1e-5)


def test_gate_gain_and_chain_latency_sum():
    from melodyrt.rt.chain import build_chain

    chain = build_chain({"sample_rate": SR, "block_size": 128, "processors": [
        {"plugin": "noise-gate", "args": {"threshold_db": -40.0}},
        {"plugin": "gain", "args": {"gain_db": 6.0}},
        {"plugin": "pedalboard", "args": {"effect": "Resample", "target_sample_rate": 16000.0}},
    ]})
    assert chain.latency_samples == sum(p.latency_samples for p in chain.processors) > 0
    quiet, loud = tone(200.0, 0.5, amp=0.001), tone(200.0, 0.5, amp=0.1)
    y_quiet = stream(chain, quiet, 128)
    chain.reset()
    y_loud = stream(chain, loud, 128)
    assert level_db(y_loud[SR // 4:]) - level_db(loud[SR // 4:]) == pytest.approx(6.0, abs=0.5)
    assert level_db(y_quiet[SR // 4:]) - level_db(quiet[SR // 4:]) < -10.0      # gated


def test_effect_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown pedalboard effect 'Flanger'; available: .*HighpassFilter"):
        fx.effect(sample_rate=SR, effect="Flanger")
    with pytest.raises(ConfigError, match="pedalboard Gain"):
        fx.effect(sample_rate=SR, effect="Gain", gain=3)
    with pytest.raises(ConfigError, match="cannot run in a real-time chain"):
        fx.effect(sample_rate=SR, effect="PitchShift", semitones=2.0)
    with pytest.raises(ConfigError, match="VST3 plugin not found"):
        fx.Vst3Processor("/nonexistent/Reverb.vst3", sample_rate=SR)


def _find_vst3() -> Path | None:
    env = os.environ.get("MELODYRT_VST3")
    if env:
        return Path(env)
    for root in (Path.home() / ".vst3", Path("/usr/lib/vst3"), Path("/usr/local/lib/vst3")):
        if root.is_dir():
            for p in sorted(root.glob("*.vst3")):
                return p
    return None


def test_vst3_effect_by_path():
    path = _find_vst3()
    if path is None:
        pytest.skip("no VST3 plugin on this machine (set MELODYRT_VST3=/path/to/effect.vst3 to test one)")
    proc = fx.Vst3Processor(path, sample_rate=SR, block_size=128)
    x = tone(440.0, 0.25)
    y = stream(proc, x, 128)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert proc.latency_samples >= proc.reported_latency_samples >= 0

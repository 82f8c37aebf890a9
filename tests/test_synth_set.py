"""The synthetic-voice-over-real-accompaniment generalisation set (model/synth_set.py): its
layout reads back through discover(), labels are the synthesis' f0, SNRs are what was asked,
and `melodyrt eval --set synth-over-real` scores it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from melodyrt.model import synth_set as S
from melodyrt.model.datasets import discover
from melodyrt.rt.audio_io import load_audio

sf = pytest.importorskip("soundfile")

SR = 8000


def fake_mir1k(root: Path, singers=("Kenshin", "annar", "abjones", "amy"), seconds: float = 4.0) -> Path:
    """A MIR-1K-shaped folder: stereo FLAC (L = accompaniment, R = voice) + .pv labels.

    Every singer's accompaniment is a chord of its own plus noise, except that ``abjones``
    sings over Kenshin's very backing track, half a second later (as MIR-1K's singers do).
    """
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    (root / "pitch").mkdir()
    n = int(seconds * SR)
    t = np.arange(n) / SR
    backing = {}
    for k, s in enumerate(singers):
        backing[s] = sum(0.1 * np.sin(2 * np.pi * f * (1.0 + 0.13 * k) * t) for f in (110.0, 138.6, 164.8))
        backing[s] = backing[s] + 0.05 * rng.standard_normal(n)
    if "abjones" in backing:
        backing["abjones"] = np.concatenate([backing["Kenshin"][SR // 2 :], 0.05 * rng.standard_normal(SR // 2)])
    for s in singers:
        name = f"{s}_1_01"
        accomp = backing[s]
        voice = 0.2 * np.sin(2 * np.pi * 220 * t)
        sf.write(root / "audio" / f"{name}.flac", np.stack([accomp, voice], axis=1), SR)
        lines = int((2 * n - 640) // 320) + 1
        (root / "pitch" / f"{name}.pv").write_text("\n".join(["57.0"] * lines) + "\n")
    return root


def test_render_layout_labels_and_snr(tmp_path):
    data = fake_mir1k(tmp_path / "mir")
    out = tmp_path / "set"
    m = S.render_set(data, out, singers=("Kenshin", "annar"), snrs=(0.0, 5.0, math.inf), seed=1, progress=False)
    assert m["snrs"] == ["snr+0", "snr+5", "voice"] and len(m["tracks"]) == 6
    assert {e["clip"] for e in m["tracks"]} == {"Kenshin_1_01", "annar_1_01"}  # validation singers only
    # Kenshin's backing track is also abjones' (a training singer): found and marked.
    assert m["shared_backing"] == {"Kenshin_1_01": ["abjones_1_01"]}
    assert {e["clip"] for e in m["tracks"] if e["backing_in_training"]} == {"Kenshin_1_01"}
    tracks = S.set_tracks(out, m)
    assert {tag: len(ts) for tag, ts in tracks.items()} == {"snr+0": 2, "snr+5": 2, "voice": 2}
    layout, _ = discover(out / "snr+0")
    assert layout == "ref_txt"
    accomp = {"Kenshin_1_01": load_audio(data / "audio" / "Kenshin_1_01.flac", SR, channel=0)}
    for tag, snr in (("snr+0", 0.0), ("snr+5", 5.0)):
        t = next(t for t in tracks[tag] if t.name.startswith("Kenshin"))
        mix = load_audio(t.audio, SR).astype(np.float64)
        voice = load_audio(out / "voice" / (t.name.replace(tag, "voice") + ".wav"), SR).astype(np.float64)
        a = accomp["Kenshin_1_01"][: mix.shape[0]].astype(np.float64)
        g = float(np.dot(mix, a) / np.dot(a, a))  # one gain keeps a mix inside full scale
        v = mix - g * a
        ratio = 20 * np.log10(np.sqrt(np.mean(v**2)) / np.sqrt(np.mean((g * a) ** 2)))
        assert ratio == pytest.approx(snr, abs=0.05)
        # The same melody at every SNR, and the labels are its f0 (voiced where the voice sounds).
        assert np.corrcoef(v, voice)[0, 1] > 0.999
        assert t.label_times[1] - t.label_times[0] == pytest.approx(0.01)
        frames = (t.label_times * SR).astype(int)[:-1]
        loud = np.array([np.abs(voice[max(0, i - 40) : i + 40]).max() for i in frames])
        assert np.all(loud[t.label_f0[:-1] > 0] > 1e-4) and (t.label_f0 > 0).mean() > 0.4
    # Rendering again is free: the manifest matches.
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert S.render_set(data, out, singers=("Kenshin", "annar"), snrs=(0.0, 5.0, math.inf), seed=1,
                        progress=False)["hash"] == m["hash"]
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    other = S.render_set(data, tmp_path / "set2", singers=("Kenshin", "annar"), snrs=(0.0,), seed=2, progress=False)
    assert other["hash"] != m["hash"]


def test_voice_ranges_cover_low_and_high_voices():
    rng = np.random.default_rng(0)
    for vtype, (lo, hi) in S.VOICE_RANGES.items():
        phrases = S.random_melody(rng, 8.0, lo, hi)
        notes = [m for ns, _ in phrases for m, _ in ns if m is not None]
        assert notes and lo <= min(notes) and max(notes) <= hi
        voice, f0 = S.sing(phrases, 8 * SR, SR, rng)
        assert voice.shape == f0.shape == (8 * SR,)
        assert np.all(np.abs(voice[f0 == 0]) < 1e-9)  # silent in the rests
    assert S.VOICE_RANGES["bass"][0] <= 40 and S.VOICE_RANGES["soprano"][1] >= 79


def test_eval_command_scores_the_set(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="melodyrt eval needs the [train] extra (torch)")
    pytest.importorskip("mir_eval")
    from melodyrt.model.network import build_model
    from melodyrt.model.train import RunState, save_checkpoint
    from melodyrt.model.train_config import TrainConfig
    from melodyrt.rt.cfp import FeatureStats
    from melodyrt.rt.cli import main

    torch.manual_seed(0)
    ckpt = tmp_path / "untrained.pt"
    save_checkpoint(ckpt, build_model("rt2").eval(), TrainConfig(), FeatureStats.identity(), RunState(history=[]))
    data = fake_mir1k(tmp_path / "mir", seconds=2.0)
    js = tmp_path / "scores.json"
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--set", "synth-over-real",
               "--set-dir", str(tmp_path / "set"), "--snr", "0", "inf", "--cache", str(tmp_path / "cache"),
               "--json", str(js)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "snr+0 (1 tracks, foreign backing)" in text and "voice (1 tracks, foreign backing)" in text
    assert "snr+0 (1 tracks, backing also in training)" in text and "by voice type" in text
    report = json.loads(js.read_text())
    assert set(report["pooled"]) == set(report["pooled_shared_backing"]) == {"snr+0", "voice"}
    assert set(report["pooled"]["snr+0"]) == {"VR", "VFA", "RPA", "RCA", "OA"}
    assert len(report["per_track"]) == 4
    # The same split on the real data: --backing keeps the clips that share nothing.
    rc = main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--singers", "Kenshin", "annar",
               "--backing", "foreign", "--cache", str(tmp_path / "cache")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mir1k (1 tracks, foreign backing)" in text and "annar_1_01" in text and "Kenshin_1_01" not in text


def test_eval_voicing_thresholds_sweep_the_same_outputs(tmp_path, capsys):
    pytest.importorskip("torch", reason="melodyrt eval needs the [train] extra (torch)")
    pytest.importorskip("mir_eval")
    from melodyrt.rt.cli import main

    # The shipped model: its p(voiced) on these clips spreads over (0, 1), an untrained one's does not.
    ckpt = Path(__file__).resolve().parents[1] / "model" / "weights" / "rt" / "checkpoint.pt"
    data = fake_mir1k(tmp_path / "mir", seconds=2.0)
    js = tmp_path / "scores.json"
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(data), "--singers", "Kenshin", "annar",
            "--cache", str(tmp_path / "cache")]
    assert main(args + ["--voicing-thresholds", "0.01", "0.5", "0.99", "--json", str(js)]) == 0
    assert "by voicing threshold on p(voiced)" in capsys.readouterr().out
    report = json.loads(js.read_text())
    sweep = report["by_threshold"]
    assert set(sweep) == {"0.01", "0.5", "0.99"}
    # 0.5 is the decoder's default: the sweep re-decodes the very outputs the main scores came from.
    assert sweep["0.5"] == pytest.approx(report["pooled"])
    # A stricter decision calls fewer frames voiced; the pitch of each frame does not change.
    assert sweep["0.01"]["VR"] > sweep["0.5"]["VR"] > sweep["0.99"]["VR"]
    assert sweep["0.01"]["RPA"] == sweep["0.5"]["RPA"] == sweep["0.99"]["RPA"]
    # Out of range and with the synthetic set: a one-line error, not a traceback.
    assert main(args + ["--voicing-thresholds", "1.5"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--set", "synth-over-real",
                 "--set-dir", str(tmp_path / "set"), "--voicing-thresholds", "0.6"]) == 2
    assert "--set data only" in capsys.readouterr().err

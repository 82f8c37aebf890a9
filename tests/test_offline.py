"""Whole-file inference (the paper's non-causal mode) shares the front end and decoder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="offline inference needs the [train] extra (torch)")

from melodyrt.model.offline import transcribe_offline  # noqa: E402
from melodyrt.rt.audio_io import write_wav  # noqa: E402
from melodyrt.rt.cli import main  # noqa: E402
from melodyrt.rt.tracker import transcribe_signal  # noqa: E402


def test_causal_checkpoint_offline_equals_the_stream(untrained_bundle, song_8k, tmp_path):
    wav = tmp_path / "song.wav"
    write_wav(wav, song_8k.audio, 8000)
    frames, duration = transcribe_offline(wav, untrained_bundle.root / "checkpoint.pt")
    assert duration == pytest.approx(len(song_8k.audio) / 8000)
    streamed = transcribe_signal(song_8k.audio, 8000, untrained_bundle, backend="ort").frames
    by_index = {f.index: f for f in streamed}
    common = [f for f in frames if f.index in by_index]
    assert len(common) > 0.9 * len(streamed)
    assert all(f.sample == by_index[f.index].sample for f in common)  # same timeline
    cents = [1200 * abs(np.log2(f.f0_hz / by_index[f.index].f0_hz)) for f in common]
    assert np.median(cents) < 1.0  # same weights, same features: the same pitch guesses


def test_offline_cli_writes_outputs_and_reports_bad_files(untrained_bundle, song_8k, tmp_path, capsys):
    wav = tmp_path / "song.wav"
    write_wav(wav, song_8k.audio, 8000)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    ckpt = str(untrained_bundle.root / "checkpoint.pt")
    code = main(["offline", str(wav), str(bad), "--checkpoint", ckpt, "--out-dir", str(tmp_path / "o"), "--format", "csv,mid"])
    assert code == 2  # one file failed, the other was written
    assert "bad.wav" in capsys.readouterr().out
    lines = (tmp_path / "o" / "song.csv").read_text().splitlines()
    assert lines[0] == "time,f0_hz,confidence" and len(lines) > 100
    assert (tmp_path / "o" / "song.mid").stat().st_size > 0

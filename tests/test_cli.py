"""The melodyrt console script: subcommands, outputs, and one-line errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from melodyrt.rt.cli import main

SCRIPT = Path(sys.executable).parent / "melodyrt"


def run_script(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"console script not installed next to {sys.executable} (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("melodyrt: error: ")
    assert "Traceback" not in err


@pytest.fixture
def tone_file(tmp_path) -> Path:
    path = tmp_path / "tone.wav"
    t = np.arange(44100) / 44100
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), 44100)
    return path


def test_help_lists_subcommands_in_process(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("cfp", "demo", "bench", "version"):
        assert command in out


def test_console_script_help():
    proc = run_script("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("cfp", "demo", "bench", "version"):
        assert command in proc.stdout


def test_console_script_bad_input_is_one_line(tmp_path):
    proc = run_script("cfp", str(tmp_path / "missing.wav"))
    assert_one_line_error(proc.returncode, proc.stderr)
    assert "missing.wav" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["cfp"],  # missing FILE
        ["frobnicate"],  # unknown command
        ["cfp", "x.wav", "--window", "hann"],
        ["demo", "--rate", "12345"],
        ["demo", "--every", "0"],
        ["bench", "cfp", "--hops", "-3"],
        [],
    ],
)
def test_bad_arguments_are_one_line(argv, capsys, tmp_path):
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err)


def test_bad_files_are_one_line(tmp_path, capsys):
    text = tmp_path / "text.wav"
    text.write_text("hello")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((8000, 2)), 8000)
    config = tmp_path / "bad.yaml"
    config.write_text("cfp: {window: hann}\n")
    for argv in (["cfp", str(text)], ["cfp", str(stereo)], ["cfp", str(stereo), "--config", str(config)]):
        assert_one_line_error(main(argv), capsys.readouterr().err)
    main(["cfp", str(stereo)])
    assert "--channel" in capsys.readouterr().err


def test_cfp_writes_features_and_png(tone_file, tmp_path, capsys):
    out = tmp_path / "feat.npy"
    assert main(["cfp", str(tone_file), "--out", str(out), "--png", "--window", "asymmetric"]) == 0
    frames = np.load(out)
    assert frames.dtype == np.float32 and frames.shape == (100, 3, 360)
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "100 frames" in capsys.readouterr().out


def test_cfp_several_files_into_a_folder(tone_file, tmp_path):
    second = tmp_path / "second.flac"
    sf.write(second, np.zeros(16000) + 0.01, 16000)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((8000, 2)) + 0.01, 8000)
    folder = tmp_path / "features"
    code = main(["cfp", str(tone_file), str(second), str(stereo), "--channel", "mix", "--out", str(folder),
                 "--norm", "song"])
    assert code == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["second.cfp.npy", "stereo.cfp.npy", "tone.cfp.npy"]
    song = np.load(folder / "tone.cfp.npy")
    assert song.min() >= 0.0 and song.max() <= 1.0


def test_demo_streams_through_the_tracker_and_writes_files(tmp_path, capsys, untrained_bundle):
    code = main(["demo", "--out", str(tmp_path), "--every", "25", "--fast", "--model", str(untrained_bundle.root)])
    assert code == 0
    out = capsys.readouterr().out
    assert "= algorithmic (in timestamps)" in out and "hop wait, worst" in out
    assert "raw pitch accuracy" in out and "UNTRAINED" in out
    assert len([line for line in out.splitlines() if line.strip().endswith("dBFS")]) >= 25  # the readout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.csv", "demo.mid", "demo.png", "demo.wav"]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert sf.info(tmp_path / "demo.wav").samplerate == 48000
    assert (tmp_path / "demo.csv").read_text().startswith("time,f0_hz,confidence\n")


def test_demo_without_a_model_says_where_to_get_one(tmp_path, capsys):
    assert_one_line_error(main(["demo", "--model", str(tmp_path), "--out", str(tmp_path)]), capsys.readouterr().err)


def test_version(capsys):
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("melodyrt") and "numpy" in out and "libsoxr" in out


def test_profile_picks_a_packaged_model_and_excludes_model(capsys, tmp_path):
    import argparse

    from melodyrt.rt import cli
    from melodyrt.rt.bundle import PROFILES

    parser = cli.build_parser()
    # every command that takes --model takes --profile (plug-in commands included)
    extra = {"transcribe": ["x.wav", "--out", "x.csv"], "karaoke": ["song.txt"], "bench": ["e2e"]}
    for name in ("demo", "live", "transcribe", "karaoke", "bench"):
        args = parser.parse_args([name, *extra.get(name, []), "--profile", "accurate"])
        cli._apply_profile(args)
        assert args.model == str(PROFILES["accurate"])
    args = argparse.Namespace(profile="accurate", model=str(tmp_path))
    with pytest.raises(cli.UsageError, match="--model or --profile, not both"):
        cli._apply_profile(args)
    assert main(["demo", "--profile", "nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'nonsense'" in err[0]


def test_every_profile_ships_a_model_and_low_latency_describes_more_recent_audio():
    from melodyrt.rt.bundle import load_bundle, profile_dir
    from melodyrt.rt.tracker import Tracker

    acc = load_bundle(profile_dir("accurate"))
    low = load_bundle(profile_dir("low-latency"))
    assert acc.cfp.window == "asymmetric" and low.cfp.window == "multires"
    d_acc = Tracker(48000, acc, backend="ort").latency(128, 0).algorithmic
    d_low = Tracker(48000, low, backend="ort").latency(128, 0).algorithmic
    assert (d_acc - d_low) / 48 == pytest.approx(20.94 - 6.54, abs=0.05)  # [ms] the CFP windows' delays
    # backing: the accurate front end, a wider net, run in int8 unless asked otherwise
    back = load_bundle(profile_dir("backing"))
    assert back.cfp == acc.cfp and back.meta["model_config"]["channels"] == 2 * acc.meta["model_config"]["channels"]
    tracker = Tracker(48000, back, backend="ort")
    assert tracker.engine.precision == "int8" and tracker.latency(128, 0).algorithmic == pytest.approx(d_acc)


def test_a_signal_inside_numba_machinery_is_delivered_again_later(monkeypatch):
    """Raising from a ctypes callback (llvmlite's, while numba loads code) is printed and
    ignored; the handler re-sends the signal instead of raising there."""
    import os
    import signal
    import sys
    import threading

    from melodyrt.rt import cli

    sent: list[int] = []
    done = threading.Event()
    monkeypatch.setattr(os, "kill", lambda pid, sig: (sent.append(sig), done.set()))
    ns: dict = {}
    exec(compile("def inside(h):\n    import sys\n    return h(15, sys._getframe())\n",
                 "/site-packages/llvmlite/binding/fake.py", "exec"), ns)
    assert ns["inside"](cli._on_signal) is None      # no exception inside llvmlite
    assert done.wait(2.0) and sent == [signal.SIGTERM]
    with pytest.raises(cli.Terminated):             # in ordinary code it raises at once
        cli._on_signal(signal.SIGTERM, sys._getframe())

"""``melodyrt karaoke``: offline scoring (--score-file), errors, the report and the terminal view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.cli import main
from melodyrt.rt.karaoke.backing import sung_f0
from melodyrt.rt.karaoke.report import write_report
from melodyrt.rt.karaoke.scoring import frames_from_f0, score_frames
from melodyrt.rt.karaoke.session import KaraokeSession
from melodyrt.rt.karaoke.song import load_song
from melodyrt.rt.karaoke.terminal import TerminalView, meter, note_name

HERE = Path(__file__).resolve().parent
TEST_SONG = HERE / "data" / "karaoke_test_song.txt"
MODEL = HERE.parent / "model" / "weights" / "rt" / "model.json"


def _perf_csv(path: Path, cents: float = 0.0) -> Path:
    song = load_song(TEST_SONG)
    f0 = sung_f0(song, 100, cents=cents, vibrato_cents=10.0, glide_s=0.0)
    t = np.arange(f0.shape[0]) * 0.01
    path.write_text("time,f0_hz\n" + "\n".join(f"{a:.2f},{b:.3f}" for a, b in zip(t, f0)) + "\n")
    return path


def test_karaoke_is_a_command(capsys):
    assert main(["--help"]) == 0
    assert "karaoke" in capsys.readouterr().out
    assert main(["karaoke", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--score-file", "--backing", "--device", "--output-device", "--no-browser", "--terminal",
                   "--difficulty", "--octave-agnostic", "--track"):
        assert option in out


def test_score_file_from_an_f0_track_writes_report(tmp_path, capsys):
    perf = _perf_csv(tmp_path / "perf.csv")
    out = tmp_path / "rep"
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(perf), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "score 10000 / 10000" in text and "perfect" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["score"]["total"] == 10000 and len(report["score"]["lines"]) == 2
    assert report["song"]["title"] == "Test Tune" and report["performance"] == str(perf)
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the same performance an octave low: 0, or high with --octave-agnostic
    low = _perf_csv(tmp_path / "low.csv", cents=-1200)
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(low), "--out", str(tmp_path / "a")]) == 0
    assert "score 0 / 10000" in capsys.readouterr().out
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(low), "--octave-agnostic", "--out",
                 str(tmp_path / "b")]) == 0
    assert "score 10000 / 10000" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("#BPM:300\n: 0 4 0 la\n: 4 x 0 la\n")
    assert main(["karaoke", "--score-file", str(bad), str(tmp_path / "p.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"melodyrt: error: {bad}:3: ") and err.count("\n") == 1
    assert main(["karaoke", "--score-file", str(TEST_SONG)]) == 2
    assert "needs the recorded PERFORMANCE" in capsys.readouterr().err
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav: performance file not found" in capsys.readouterr().err
    assert main(["karaoke"]) == 2
    assert main(["karaoke", str(TEST_SONG), "--difficulty", "impossible"]) == 2


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model packaged yet (model/weights/rt/model.json)")
def test_score_file_from_audio_through_the_tracker(tmp_path, capsys):
    from melodyrt.rt.audio_io import write_wav
    from melodyrt.rt.karaoke.backing import sung_voice

    song = load_song(TEST_SONG)
    sr = 16000
    wav = write_wav(tmp_path / "sung.wav", sung_voice(sung_f0(song, sr, vibrato_cents=15.0), sr), sr)
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(wav), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"]["total"] >= 8000
    assert "latency" in report


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model packaged yet (model/weights/rt/model.json)")
def test_karaoke_config_reaches_the_tracker_and_a_bad_one_is_one_line(tmp_path, capsys):
    from melodyrt.rt.audio_io import write_wav
    from melodyrt.rt.karaoke.backing import sung_voice

    song = load_song(TEST_SONG)
    sr = 16000
    wav = write_wav(tmp_path / "sung.wav", sung_voice(sung_f0(song, sr, vibrato_cents=15.0), sr), sr)
    examples = Path(__file__).resolve().parents[1] / "examples"
    totals = {}
    for name, config in (("backing", examples / "backing.yaml"), ("deaf", tmp_path / "deaf.yaml")):
        if name == "deaf":  # a decoder that almost never calls a frame voiced sings almost nothing
            config.write_text("tracker:\n  decoder:\n    voicing_on: 0.9999\n    voicing_off: 0.9998\n")
        assert main(["karaoke", "--score-file", str(TEST_SONG), str(wav), "--config", str(config),
                     "--out", str(tmp_path / name)]) == 0
        totals[name] = json.loads((tmp_path / f"{name}.json").read_text())["score"]["total"]
    assert totals["backing"] >= 8000 and totals["deaf"] < totals["backing"] / 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  decoder:\n    voicing: 0.7\n")
    capsys.readouterr()
    assert main(["karaoke", "--score-file", str(TEST_SONG), str(wav), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "voicing" in err and "Traceback" not in err


def test_score_file_audio_plumbing_with_an_untrained_model(untrained_bundle, tmp_path, capsys):
    """The audio path of --score-file (tracker, frames, latency in the report) with an
    untrained export: the pitches are meaningless, the plumbing is not."""
    pytest.importorskip("melodyrt.rt.tracker", reason="the tracker (rt/tracker.py) is not there")
    from melodyrt.rt.audio_io import write_wav
    from melodyrt.rt.karaoke.backing import sung_voice

    song = load_song(TEST_SONG)
    sr = 16000
    wav = write_wav(tmp_path / "sung.wav", sung_voice(sung_f0(song, sr), sr), sr)
    args = ["karaoke", "--score-file", str(TEST_SONG), str(wav), "--model", str(untrained_bundle.root),
            "--out", str(tmp_path / "r")]
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    sung_t = report["score"]["sung"]["t"]
    assert abs(len(sung_t) - (song.end + 0.5) * 100) <= 2  # one frame per 10 ms of the recording
    assert 0.0 <= sung_t[0] < 0.01  # frames describe the recording from its start: delay removed
    assert report["source"] == "tracker" and "latency" in report
    assert (tmp_path / "r.png").exists()


def test_report_png_and_json(tmp_path):
    song = load_song(TEST_SONG)
    f0 = sung_f0(song, 100, vibrato_cents=10.0)
    score = score_frames(song, frames_from_f0(np.arange(f0.shape[0]) * 0.01, f0))
    png, js = write_report(song, score, tmp_path, {"note": "test"})
    assert png.name == "karaoke-report.png" and png.stat().st_size > 10_000
    data = json.loads(js.read_text())
    assert data["note"] == "test" and len(data["score"]["sung"]["t"]) == f0.shape[0]
    assert [ln["rating"] for ln in data["score"]["lines"]] == [ln.rating for ln in score.lines]


def test_terminal_view():
    song = load_song(TEST_SONG)
    session = KaraokeSession(song)
    out = io.StringIO()
    view = TerminalView(session, out, every=0.5)
    view.header()
    f0 = sung_f0(song, 100, vibrato_cents=0.0, glide_s=0.0)
    for k, f in enumerate(f0):
        session.judge(round(k * 0.01, 9), float(f), f > 0)
        if k % 10 == 0:
            view.update()
    view.finish()
    text = out.getvalue()
    assert text.startswith("Test Tune - melodyrt tests: 9 notes, 2 lines")
    assert "line 1   perfect  100%" in text and "line 2   perfect  100%" in text
    assert text.rstrip().endswith("score 10000 / 10000 (notes 9000 + line bonus 1000)")
    assert "[li]" in text or "[tle]" in text or "[song]" in text  # the current syllable is marked
    assert note_name(64.2) == "E4" and note_name(None) == "-"
    assert meter(0.0, 50.0) == "[--------|-o-|--------]"  # bars at +-50 cents of a +-200 cent scale
    assert meter(None, 50.0).count("o") == 0 and meter(300.0, 50.0).endswith("o]")

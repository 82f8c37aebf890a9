"""Plugin discovery, chain files, the built-in CSV sink and a third-party plugin package."""

from __future__ import annotations

import csv
import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt import plugins
from melodyrt.rt.chain import Chain, ChainSpec, SynthSource, build_chain
from melodyrt.rt.errors import ConfigError
from melodyrt.rt.frames import PitchFrame, Sink
from melodyrt.rt.plugins import CsvSink

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "third_party_plugin"


def test_builtins_are_registered():
    assert {"midi", "midi-file", "osc", "csv"} <= set(plugins.available("sink"))
    assert {"highpass", "noise-gate", "compressor", "gain", "limiter", "pedalboard", "vst3"} <= set(plugins.available("processor"))
    assert "synth" in plugins.available("source")
    assert "sinks: " in plugins.describe()


def test_unknown_plugin_is_one_line_listing_the_available_ones():
    with pytest.raises(ConfigError) as info:
        plugins.find("sink", "midl")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("unknown sink plugin 'midl'; available sinks: ") and "midi" in msg and "osc" in msg
    with pytest.raises(ConfigError, match="'highpass' is a processor, not a sink"):
        plugins.find("sink", "highpass")
    with pytest.raises(ConfigError, match="unknown processor plugin 'reverb'; available processors: .*highpass"):
        build_chain({"sample_rate": 48000, "processors": ["reverb"]})


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match="processor plugin 'highpass': .*'cutoff'"):
        build_chain({"sample_rate": 48000, "processors": [{"plugin": "highpass", "args": {"cutoff": 90}}]})
    with pytest.raises(ConfigError, match="OSC: unknown setting.*'hots'"):
        build_chain({"sample_rate": 48000, "sinks": [{"plugin": "osc", "args": {"hots": "127.0.0.1"}}]})
    with pytest.raises(ConfigError, match="MIDI file: unknown setting.*'chanel'"):
        build_chain({"sample_rate": 48000, "sinks": [{"plugin": "midi-file", "args": {"path": "x.mid", "chanel": 2}}]})


@pytest.mark.parametrize("text, message", [
    ("sinks: [csv]\nsink: []\n", "unknown key.*sink"),
    ("sinks: {plugin: csv}\n", "'sinks' must be a list"),
    ("sinks: [{plugin: csv, arg: {}}]\n", r"sinks\[0\]: unknown key"),
    ("sinks: [csv]\nsample_rate: -1\n", "sample_rate must be a positive integer"),
    ("sinks: [csv\n", "invalid YAML"),
])
def test_chain_file_errors(tmp_path: Path, text: str, message: str):
    p = tmp_path / "chain.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ChainSpec.from_yaml(p)


class TruthTracker:
    """Stand-in for the tracker: one frame per 10 ms with the synthetic song's true f0."""

    def __init__(self, song, hop: int) -> None:
        self.song, self.hop, self.pos, self.index = song, hop, 0, 0
        self.pending = 0

    def process(self, block: np.ndarray) -> list[PitchFrame]:
        self.pending += block.shape[0]
        out = []
        while self.pending >= self.hop:
            self.pending -= self.hop
            t = self.index * self.hop / self.song.sr
            f0 = float(self.song.f0_at(np.array([t]))[0])
            out.append(PitchFrame(self.index, self.index * self.hop, t, f0, f0 > 0, 0.9, -20.0))
            self.index += 1
        return out

    process_events = process   # frames only: this stand-in raises no onset cues


def test_chain_from_yaml_runs_source_to_sinks(tmp_path: Path):
    out_csv, out_mid = tmp_path / "take.csv", tmp_path / "take.mid"
    (tmp_path / "chain.yaml").write_text(f"""
source: {{plugin: synth, args: {{sample_rate: 8000, block_size: 100}}}}
processors:
  - {{plugin: gain, args: {{gain_db: -3}}}}
sinks:
  - {{plugin: csv, args: {{path: "{out_csv}"}}}}
  - {{plugin: midi-file, args: {{path: "{out_mid}", bend_range: 12}}}}
""")
    pytest.importorskip("pedalboard", reason="the gain processor needs pedalboard")
    with build_chain(tmp_path / "chain.yaml") as chain:
        assert isinstance(chain, Chain) and isinstance(chain.source, SynthSource)
        assert chain.sample_rate == 8000 and chain.block_size == 100
        assert all(isinstance(s, Sink) for s in chain.sinks)
        assert chain.latency_samples == 0
        assert not out_csv.exists()                       # written on close, atomically
        n = chain.run(TruthTracker(chain.source.song, 80))
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["time", "f0_hz", "confidence"] and len(rows) == n + 1
    voiced = [r for r in rows[1:] if float(r[1]) > 0]
    assert len(voiced) > 0.6 * n and all(r[1] == "0.000" for r in rows[1:6])
    import mido

    notes = [m.note for m in mido.MidiFile(out_mid) if m.type == "note_on"]
    assert notes[:4] == [60, 62, 64, 67]                  # the demo tune
    assert list(tmp_path.glob(".*.tmp")) == []


def test_csv_sink_abort_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "f0.csv"
    target.write_text("old\n")
    sink = CsvSink(target)
    sink.send(PitchFrame(0, 0, 0.0, 220.0, True, 0.5, -20.0))
    sink.abort()
    sink.close()
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]


def test_given_source_and_extra_sinks_override_the_file(tmp_path: Path, list_sink):
    extra = list_sink
    src = SynthSource(sample_rate=8000, block_size=80)
    chain = build_chain({"sinks": []}, source=src, extra_sinks=[extra])
    assert chain.source is src and chain.sample_rate == 8000
    frame = PitchFrame(0, 0, 0.0, 0.0, False, 0.0, -90.0)
    chain.send(frame)
    chain.close()
    chain.close()
    assert extra.frames == [frame] and extra.closed == 1
    live = build_chain({"source": "synth", "sinks": []}, sample_rate=44100, block_size=64)
    assert live.source is None and live.sample_rate == 44100 and live.block_size == 64   # the caller feeds audio
    with pytest.raises(ConfigError, match="no source"):
        build_chain({"sample_rate": 8000}).run(TruthTracker(src.song, 80))
    with pytest.raises(ConfigError, match="no sample rate"):
        build_chain({"sinks": []})


def _can_build_offline() -> bool:
    """setuptools here can build a wheel by itself (>= 70.1, or the wheel package is present)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    from importlib.metadata import version

    major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


def _install(src: Path, target: Path) -> None:
    """pip install the example package into ``target`` (offline when setuptools is here)."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), str(src)]
    if _can_build_offline():
        cmd[4:4] = ["--no-build-isolation", "--no-index"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


def test_third_party_plugin_is_found_by_name(tmp_path: Path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)                         # build outside the repository
    site = tmp_path / "site"
    assert "vibrato-meter" not in plugins.available("sink")
    _install(src, site)
    monkeypatch.syspath_prepend(str(site))               # what an installed package looks like
    assert "vibrato-meter" in plugins.available("sink")
    info = plugins.find("sink", "vibrato-meter")
    assert info.distribution == "melodyrt-vibrato-meter"

    chain = build_chain({"sample_rate": 48000, "sinks": [{"plugin": "vibrato-meter", "args": {"window_s": 0.8}}]})
    meter = chain.sinks[0]
    assert type(meter).__module__ == "melodyrt_vibrato" and isinstance(meter, Sink)
    for i in range(150):                                  # 5.5 Hz vibrato, +-40 cents, around A4
        t = i * 0.01
        f0 = 440.0 * 2 ** (0.4 * math.sin(2 * math.pi * 5.5 * t) / 12)
        chain.send(PitchFrame(i, i * 480, t, f0, True, 0.9, -20.0))
    chain.close()
    last = meter.readings[-1]
    assert last.rate_hz == pytest.approx(5.5, abs=0.5)
    assert last.extent_cents == pytest.approx(40.0, abs=8.0)

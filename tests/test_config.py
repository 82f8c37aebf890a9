"""PipelineConfig: YAML round trip; unknown keys and bad values raise ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from melodyrt.rt.config import CfpConfig, NormConfig, PipelineConfig, ResampleConfig
from melodyrt.rt.errors import ConfigError


def write(tmp_path, data) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_yaml_round_trip(tmp_path):
    cfg = PipelineConfig(
        cfp=CfpConfig(window="asymmetric", asym_fall=96, gammas=(0.2, 0.6, 1.0)),
        norm=NormConfig(mode="running", running_release=1.5),
        resample=ResampleConfig(quality="MQ"),
    )
    back = PipelineConfig.from_yaml(write(tmp_path, cfg.to_dict()))
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()


def test_missing_keys_take_defaults(tmp_path):
    cfg = PipelineConfig.from_yaml(write(tmp_path, {"cfp": {"window": "asymmetric"}}))
    assert cfg.cfp.window == "asymmetric" and cfg.cfp.hop == 80 and cfg.norm == NormConfig()
    assert PipelineConfig.from_yaml(write(tmp_path, "")) == PipelineConfig()


@pytest.mark.parametrize(
    "data",
    [
        {"cfp": {"windw": "symmetric"}},
        {"colour": "blue"},
        {"norm": {"mode": "fixed", "extra": 1}},
    ],
)
def test_unknown_keys(tmp_path, data):
    with pytest.raises(ConfigError, match="unknown"):
        PipelineConfig.from_yaml(write(tmp_path, data))


@pytest.mark.parametrize(
    "data",
    [
        {"cfp": {"window": "hann"}},
        {"cfp": {"asym_fall": 0}},
        {"cfp": {"asym_fall": 768}},
        {"cfp": {"win_length": 5000}},
        {"cfp": {"gammas": [0.24, 0.6]}},
        {"norm": {"mode": "global"}},
        {"norm": {"running_release": 0}},
        {"norm": {"running_release": "slow"}},
        {"resample": {"quality": "ultra"}},
        {"cfp": 5},
        ["not", "a", "mapping"],
    ],
)
def test_bad_values(tmp_path, data):
    with pytest.raises(ConfigError):
        PipelineConfig.from_yaml(write(tmp_path, data))


def test_unreadable_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        PipelineConfig.from_yaml(write(tmp_path, "cfp: [unclosed"))


@pytest.mark.parametrize(
    "data",
    [{"cfp": {"hop": "ten"}}, {"cfp": {"hop": 0}}, {"cfp": {"sample_rate": -1}}, {"cfp": {"gammas": 0.5}}],
)
def test_bad_numeric_values_are_rejected(tmp_path, data):
    with pytest.raises(ConfigError):
        PipelineConfig.from_yaml(write(tmp_path, data))


def test_example_config_holds_the_defaults():
    example = Path(__file__).resolve().parents[1] / "examples" / "pipeline.yaml"
    assert PipelineConfig.from_yaml(example) == PipelineConfig()


def test_live_example_holds_the_tracker_defaults_and_backing_only_tightens_voicing():
    from dataclasses import replace

    from melodyrt.rt.commands import _live_settings
    from melodyrt.rt.tracker import TrackerConfig

    examples = Path(__file__).resolve().parents[1] / "examples"
    live, _ = _live_settings(str(examples / "live.yaml"))
    assert live == TrackerConfig()
    backing, source = _live_settings(str(examples / "backing.yaml"))
    d = TrackerConfig()
    assert source == {} and backing == replace(d, decoder=replace(d.decoder, voicing_on=0.7, voicing_off=0.6))
    from melodyrt.rt.commands import _settings
    from melodyrt.rt.midi_out import MidiConfig

    _, _, midi = _settings(str(examples / "live.yaml"))
    assert midi and MidiConfig.from_settings(**midi) == MidiConfig()  # the file shows the defaults


def test_config_midi_section_reaches_live_and_files_and_a_typo_fails_before_any_device(tmp_path, capsys):
    import mido

    from melodyrt.rt.cli import main
    from melodyrt.rt.commands import _settings

    bad = tmp_path / "bad.yaml"
    bad.write_text("midi:\n  onset_confidance: 0.8\n")
    assert main(["live", "--config", str(bad), "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert "onset_confidance" in err and "Traceback" not in err
    bad.write_text("midi:\n  channel: 17\n")
    with pytest.raises(Exception, match="channel must be 1..16"):
        _settings(str(bad))
    good = tmp_path / "ch5.yaml"
    good.write_text("midi:\n  channel: 5\n  note_off_repeat_ms: null\n")
    wav = tmp_path / "sung.wav"
    from melodyrt.rt.audio_io import write_wav
    from melodyrt.rt.synth import sung_melody

    song = sung_melody(sr=8000, seed=0)
    write_wav(wav, song.audio[: 3 * 8000], 8000)
    assert main(["transcribe", str(wav), "--config", str(good), "--out", str(tmp_path / "sung.mid")]) == 0
    notes = [m for m in mido.MidiFile(tmp_path / "sung.mid") if m.type == "note_on"]
    assert notes and {m.channel for m in notes} == {4}  # MIDI channel 5 is 4 on the wire


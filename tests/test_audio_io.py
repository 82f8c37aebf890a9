"""load_audio / write_wav: timing after resampling, and one clear line for every bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from melodyrt.rt.audio_io import load_audio, write_wav
from melodyrt.rt.errors import AudioInputError
from melodyrt.rt.resample import StreamingResampler


def sine(rate: int, seconds: float, hz: float = 330.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


def one_line_error(path: Path, **kw) -> str:
    with pytest.raises(AudioInputError) as err:
        load_audio(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg, "the message must name the file"
    return msg


@pytest.mark.parametrize("suffix,rate", [(".wav", 48000), (".flac", 44100), (".wav", 22050), (".wav", 16000)])
def test_resampled_sample_i_is_time_i_over_8k(tmp_path, suffix, rate):
    """The resampler's delay is removed exactly; only its short start/end transients differ."""
    path = tmp_path / f"tone{suffix}"
    sf.write(path, sine(rate, 1.0), rate, subtype="PCM_24")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.shape[0] == 8000  # ceil(n * 8000 / rate): the file's end is not lost
    expected = sine(8000, 1.0)
    edge = 2 * StreamingResampler(rate).latency_samples + 2  # the tone starts and stops abruptly
    np.testing.assert_allclose(y[edge:-edge], expected[edge:-edge], atol=1e-4)


def test_8k_file_passes_through_unchanged(tmp_path):
    path = tmp_path / "a.wav"
    x = sine(8000, 0.5).astype(np.float32)
    write_wav(path, x, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), x)


def test_stereo_needs_a_channel_choice(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = sine(16000, 0.5, 220), sine(16000, 0.5, 440)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    msg = one_line_error(path)
    assert "2 channels" in msg and 'channel="mix"' in msg and "--channel" in msg
    np.testing.assert_allclose(load_audio(path, channel=1), load_audio(path, channel="1"))
    mix = load_audio(path, channel="mix")
    np.testing.assert_allclose(mix, 0.5 * (load_audio(path, channel=0) + load_audio(path, channel=1)), atol=1e-6)
    assert "channel 2" in one_line_error(path, channel=2)
    one_line_error(path, channel="left")


def test_missing_file_and_directory(tmp_path):
    assert "not found" in one_line_error(tmp_path / "nope.wav")
    assert "directory" in one_line_error(tmp_path)


def test_empty_files(tmp_path):
    zero_bytes = tmp_path / "empty.wav"
    zero_bytes.write_bytes(b"")
    assert "empty" in one_line_error(zero_bytes)
    no_samples = tmp_path / "nosamples.wav"
    sf.write(no_samples, np.zeros(0), 8000)
    assert "no audio samples" in one_line_error(no_samples)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    assert "not a readable WAV file" in one_line_error(path)


def test_unsupported_format(tmp_path):
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    assert "unsupported audio format '.m4a'" in one_line_error(path)


def test_corrupt_files(tmp_path):
    good = tmp_path / "good.flac"
    sf.write(good, sine(8000, 1.0), 8000)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(data[: len(data) // 3])
    one_line_error(truncated)
    header_only = tmp_path / "header.wav"
    sf.write(tmp_path / "full.wav", sine(8000, 1.0), 8000)
    header_only.write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    one_line_error(header_only)


def test_too_short(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, sine(48000, 0.09), 48000)  # 90 ms < one 96 ms window
    assert "too short" in one_line_error(path)
    sf.write(path, sine(48000, 0.1), 48000)
    assert load_audio(path).shape[0] >= 768


def test_nan_samples_are_counted(tmp_path):
    path = tmp_path / "nan.wav"
    x = sine(8000, 0.5)
    x[[3, 30, 300]] = [np.nan, np.inf, -np.inf]
    sf.write(path, x, 8000, subtype="FLOAT")
    assert "3 non-finite" in one_line_error(path)


def test_unsupported_rate(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(path, sine(12345, 0.5), 12345)
    assert "12345" in one_line_error(path)


def test_write_wav_round_trip_and_bad_folder(tmp_path):
    x = sine(8000, 0.2).astype(np.float32)
    path = write_wav(tmp_path / "out.wav", x, 8000)
    back, rate = sf.read(path, dtype="float32")
    assert rate == 8000 and np.max(np.abs(back - x)) < 1e-4  # 16-bit PCM
    with pytest.raises(AudioInputError, match="does not exist"):
        write_wav(tmp_path / "no" / "such" / "dir.wav", x, 8000)

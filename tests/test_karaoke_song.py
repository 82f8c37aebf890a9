"""Reference melody parsers: UltraStar .txt, MIDI, f0 CSV; malformed files name the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.karaoke.song import SongError, load_song, parse_ultrastar

HERE = Path(__file__).resolve().parent
TEST_SONG = HERE / "data" / "karaoke_test_song.txt"
EXAMPLE = HERE.parent / "examples" / "karaoke" / "little_lantern.txt"


def test_ultrastar_timing_pitch_kinds_and_lines():
    song = load_song(TEST_SONG)
    assert (song.title, song.artist, song.format) == ("Test Tune", "melodyrt tests", "ultrastar")
    beat = 60.0 / (4 * 300)  # #BPM is quadrupled: 0.05 s per beat
    assert song.meta["beat_s"] == pytest.approx(beat)
    first, second = song.notes[0], song.notes[1]
    assert first.start == pytest.approx(0.5) and first.end == pytest.approx(0.5 + 8 * beat)  # #GAP 500 ms
    assert first.midi == 60.0  # pitch 0 = C4 = MIDI 60
    assert second.midi == 62.0 and second.text == " a"
    kinds = [n.kind for n in song.notes]
    assert kinds.count("golden") == 1 and kinds.count("freestyle") == 1
    free = song.notes[kinds.index("freestyle")]
    assert free.midi is None and not free.scored and not free.pitched
    assert [ln.text for ln in song.lines] == ["Sing a little", "song for the (hey) tests"]
    assert song.lines[0].notes == (0, 1, 2, 3)
    assert song.end == pytest.approx(0.5 + 104 * beat)
    assert song.note_at(0.6) == 0 and song.note_at(0.5 + 41 * beat) == -1


def test_ultrastar_negative_pitch_crlf_decimal_comma_and_duet():
    text = "#TITLE:x\r\n#BPM:150,5\r\nP1\r\n: 0 4 -2 la\r\n\r\nP2\r\n: 0 4 9 other\r\nE\r\ntrailing garbage\r\n"
    song = parse_ultrastar(text, "x.txt")
    assert song.meta["bpm"] == pytest.approx(150.5)
    assert [n.midi for n in song.notes] == [58.0]  # A#3; the second voice of a duet is not read
    assert song.meta["voices"] == 2
    assert song.notes[0].end == pytest.approx(4 * 60 / (4 * 150.5))


def test_ultrastar_relative_mode():
    text = "#BPM:300\n#RELATIVE:yes\n: 0 4 0 a\n- 6 10\n: 0 4 2 b\nE\n"
    song = parse_ultrastar(text, "rel.txt")
    assert [round(n.start / 0.05) for n in song.notes] == [0, 10]
    assert len(song.lines) == 2


def test_bom_file(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes("\ufeff#BPM:300\n: 0 4 0 é\nE\n".encode("utf-8"))
    assert load_song(p).notes[0].text == "é"
    legacy = tmp_path / "cp1252.txt"
    legacy.write_bytes("#BPM:300\n: 0 4 0 caf\xe9\nE\n".encode("cp1252"))
    assert load_song(legacy).notes[0].text == "café"


@pytest.mark.parametrize(
    "body, line, words",
    [
        (": 0 4 x la", 3, "pitch must be a whole number"),
        (": 0 4", 3, "incomplete note"),
        (": 0 0 5 la", 3, "length must be positive"),
        (": 0 four 5 la", 3, "length must be a whole number"),
        ("X 0 4 5 la", 3, "unrecognised line"),
        ("- soon", 3, "malformed line break"),
        (": 0 4 0 la\n#GAP:100", 4, "after the notes"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, body, line, words):
    p = tmp_path / "bad.txt"
    p.write_text(f"#TITLE:bad\n#BPM:300\n{body}\nE\n")
    with pytest.raises(SongError) as err:
        load_song(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert words in msg


@pytest.mark.parametrize(
    "text, words",
    [
        ("#TITLE:x\n: 0 4 0 la\nE\n", "missing #BPM"),
        ("#BPM:300\nE\n", "no notes"),
        ("#BPM:fast\n: 0 4 0 la\n", "#BPM must be a number"),
        ("#BPM:0\n: 0 4 0 la\n", "#BPM must be positive"),
        ("#BPM 300\n: 0 4 0 la\n", "header line without ':'"),
    ],
)
def test_malformed_headers(tmp_path, text, words):
    p = tmp_path / "h.txt"
    p.write_text(text)
    with pytest.raises(SongError, match=words) as err:
        load_song(p)
    assert str(err.value).startswith(str(p))


def test_missing_unknown_and_empty_files(tmp_path):
    with pytest.raises(SongError, match="not found"):
        load_song(tmp_path / "nope.txt")
    (tmp_path / "song.xyz").write_text("hi")
    with pytest.raises(SongError, match="unknown song format"):
        load_song(tmp_path / "song.xyz")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SongError, match="empty file"):
        load_song(tmp_path / "empty.txt")
    with pytest.raises(SongError, match="MIDI songs only"):
        load_song(TEST_SONG, track=1)


def test_example_song_parses():
    song = load_song(EXAMPLE)
    assert len(song.lines) == 4 and song.meta["audio"] == "little_lantern_backing.wav"
    assert sum(n.golden for n in song.notes) == 2


# ----------------------------------------------------------------------------- MIDI


def _write_midi(path: Path) -> None:
    import mido

    mf = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("track_name", name="conductor", time=0),
                           mido.MetaMessage("set_tempo", tempo=500000, time=0),  # 120 bpm
                           mido.MetaMessage("set_tempo", tempo=1000000, time=1920)])  # 60 bpm from beat 4
    piano = mido.MidiTrack([mido.MetaMessage("track_name", name="Piano", time=0)])
    for start in (0, 960):  # two chords, 2 beats each
        piano += [mido.Message("note_on", note=48, velocity=60, time=0 if start == 0 else 0),
                  mido.Message("note_on", note=52, velocity=60, time=0),
                  mido.Message("note_off", note=48, velocity=0, time=960),
                  mido.Message("note_off", note=52, velocity=0, time=0)]
    vocal = mido.MidiTrack([mido.MetaMessage("track_name", name="Lead Vocals", time=0)])
    events = [(0, 480, 60, "Hel"), (480, 480, 62, "lo"), (1920, 480, 64, "/world")]  # start, length, note, lyric
    now = 0
    for start, length, note, word in events:
        vocal.append(mido.MetaMessage("lyrics", text=word, time=start - now))
        vocal.append(mido.Message("note_on", note=note, velocity=90, time=0))
        vocal.append(mido.Message("note_on", note=note, velocity=0, time=length))  # velocity 0 = off
        now = start + length
    mf.tracks += [meta, piano, vocal]
    mf.save(str(path))


def test_midi_track_choice_tempo_map_and_lyrics(tmp_path):
    p = tmp_path / "song.mid"
    _write_midi(p)
    default = load_song(p)
    assert default.meta["track"] == 1  # the first track with notes (the piano)
    assert [n.midi for n in default.notes] == [52.0, 52.0]  # chords reduced to the highest note
    for spec in ("vocal", 2, "2"):
        song = load_song(p, track=spec)
        assert song.meta["track"] == 2 and song.format == "midi"
        assert [n.midi for n in song.notes] == [60.0, 62.0, 64.0]
        assert [n.text for n in song.notes] == ["Hel", "lo", "world"]
        # 120 bpm for 4 beats (2 s), then 60 bpm: beat 4 starts at 2.0 s and lasts 1 s
        assert [round(n.start, 6) for n in song.notes] == [0.0, 0.5, 2.0]
        assert song.notes[2].end == pytest.approx(3.0)
        assert [ln.text for ln in song.lines] == ["Hello", "world"]  # '/' starts a line
    with pytest.raises(SongError, match=r"track 0 has no notes \(tracks with notes: 1 'Piano', 2 'Lead Vocals'\)"):
        load_song(p, track=0)
    with pytest.raises(SongError, match="no track with notes is named like 'drums'"):
        load_song(p, track="drums")


def test_corrupt_midi(tmp_path):
    p = tmp_path / "bad.mid"
    p.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    with pytest.raises(SongError, match="bad.mid: "):
        load_song(p)


# --------------------------------------------------------------------------- f0 CSV


def test_f0_csv_becomes_notes_following_the_contour(tmp_path):
    t = np.arange(0, 2.0, 0.01)
    midi = np.where(t < 0.5, 0.0, np.where(t < 1.0, 60.0, np.where(t < 1.5, 64.0, 0.0)))
    midi = np.where(midi > 0, midi + 0.2 * np.sin(2 * np.pi * 5 * t), 0.0)  # 20-cent vibrato
    f0 = np.where(midi > 0, 440 * 2 ** ((midi - 69) / 12), 0.0)
    p = tmp_path / "ref.csv"
    p.write_text("time,f0_hz\n" + "\n".join(f"{a:.2f},{b:.3f}" for a, b in zip(t, f0)) + "\n")
    song = load_song(p)
    assert song.format == "f0csv" and len(song.notes) == 2
    assert [round(n.midi) for n in song.notes] == [60, 64]
    assert song.notes[0].start == pytest.approx(0.495, abs=0.011) and song.notes[1].end == pytest.approx(1.495, abs=0.011)
    # the target follows the vibrato, not the median
    assert song.notes[0].target_midi(0.55) == pytest.approx(60 + 0.2 * np.sin(2 * np.pi * 5 * 0.55), abs=0.01)


@pytest.mark.parametrize(
    "rows, line, words",
    [
        ("time,f0_hz\n0.00,100\n0.01,abc\n", 3, "must be numbers"),
        ("0.00,100\n0.02,100\n0.01,100\n", 3, "times must increase"),
        ("0.00,100\n0.01\n", 2, "expected two columns"),
    ],
)
def test_malformed_f0_csv(tmp_path, rows, line, words):
    p = tmp_path / "bad.csv"
    p.write_text(rows)
    with pytest.raises(SongError, match=words) as err:
        load_song(p)
    assert str(err.value).startswith(f"{p}:{line}: ")

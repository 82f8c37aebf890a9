"""The scorer on synthesized performances of the test song, with exact expectations, and
(when a trained model is packaged) the same through the tracker from audio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.karaoke.backing import sung_f0, sung_voice, synth_backing
from melodyrt.rt.karaoke.scoring import RATINGS, ScoreConfig, Scorer, frames_from_f0, score_frames
from melodyrt.rt.karaoke.song import load_song

HERE = Path(__file__).resolve().parent
TEST_SONG = HERE / "data" / "karaoke_test_song.txt"
HOP = 0.01
MODEL = HERE.parent / "model" / "weights" / "rt" / "model.json"


@pytest.fixture(scope="module")
def song():
    return load_song(TEST_SONG)


def performance(song, cents=0.0, vibrato=15.0, glide=0.0, jitter=0.0, seed=0):
    """Frame times and f0 [Hz] of a singer (one value per 10 ms hop), ``cents`` off pitch,
    with ``vibrato`` cents of vibrato and up to ``jitter`` cents of random wobble."""
    f0 = sung_f0(song, int(1 / HOP), cents=cents, vibrato_cents=vibrato, glide_s=glide)
    t = np.round(np.arange(f0.shape[0]) * HOP, 9)
    if jitter:
        wobble = np.random.default_rng(seed).uniform(-jitter, jitter, f0.shape)
        f0 = np.where(f0 > 0, f0 * 2 ** (wobble / 1200), 0.0)
    return t, f0


def score_of(song, t, f0, **cfg):
    return score_frames(song, frames_from_f0(t, f0), ScoreConfig(**cfg))


def test_on_pitch_within_20_cents_scores_at_least_9500(song):
    t, f0 = performance(song, vibrato=14.0, jitter=5.0)  # |error| <= 19 cents everywhere
    sung = f0 > 0
    target = np.array([song.notes[song.note_at(x)].midi or 0 if song.note_at(x) >= 0 else 0 for x in t])
    assert np.all(target[sung] > 0)
    err = 1200 * np.log2(f0[sung] / (440 * 2 ** ((target[sung] - 69) / 12)))
    assert np.abs(err).max() <= 20
    for difficulty in ("easy", "medium", "hard"):
        s = score_of(song, t, f0, difficulty=difficulty)
        assert s.total >= 9500, (difficulty, s.total)
    exact = score_of(song, *performance(song, vibrato=0.0))
    assert exact.total == 10000
    assert all(ln.rating == "perfect" for ln in exact.lines)


def test_realistic_glides_still_score_high(song):
    s = score_of(song, *performance(song, vibrato=30.0, glide=0.06))
    assert 9000 <= s.total < 10000


def test_a_semitone_sharp_scores_low(song):
    t, f0 = performance(song, cents=100.0, vibrato=15.0)
    assert score_of(song, t, f0).total == 0  # medium: 50 cents
    assert score_of(song, t, f0, difficulty="hard").total == 0
    # easy's 100 cents reach the next semitone: the half of the vibrato that dips below it
    # hits (documented; UltraStar Deluxe's easy accepts two semitones)
    assert 3000 < score_of(song, t, f0, difficulty="easy").total < 6000
    assert score_of(song, *performance(song, cents=100.0, vibrato=0.0), difficulty="easy").total == 0
    # a quarter tone sharp is a hit on easy and medium, a miss on hard
    t, f0 = performance(song, cents=40.0, vibrato=0.0)
    assert score_of(song, t, f0, difficulty="medium").total == 10000
    assert score_of(song, t, f0, difficulty="hard").total == 0


def test_an_octave_lower_scores_high_only_when_octave_agnostic(song):
    t, f0 = performance(song, cents=-1200.0, vibrato=15.0)
    assert score_of(song, t, f0).total == 0
    assert score_of(song, t, f0, octave_agnostic=True).total >= 9500
    t, f0 = performance(song, cents=-1300.0, vibrato=0.0)  # an octave and a semitone: still wrong
    assert score_of(song, t, f0, octave_agnostic=True).total == 0


def test_silence_scores_zero(song):
    t = np.arange(0, song.end + 1, HOP)
    assert score_of(song, t, np.zeros_like(t)).total == 0
    # unvoiced frames count as silence whatever their f0 guess
    frames = [dataclasses.replace(f, f0_hz=261.63, voiced=False) for f in frames_from_f0(t, np.zeros_like(t))]
    s = score_frames(song, frames)
    assert s.total == 0 and all(ln.rating == RATINGS[0] for ln in s.lines)
    assert score_frames(song, []).total == 0


def _only(song, t, f0, keep):
    mask = np.array([song.note_at(x) in keep for x in t])
    return np.where(mask, f0, 0.0)


def test_golden_notes_weigh_double_and_freestyle_is_not_scored(song):
    t, f0 = performance(song, vibrato=0.0)
    kinds = [n.kind for n in song.notes]
    gold = kinds.index("golden")
    same_length = next(i for i, n in enumerate(song.notes)
                       if n.kind == "normal" and n.duration == pytest.approx(song.notes[gold].duration))
    s_gold = score_of(song, t, _only(song, t, f0, {gold}))
    s_norm = score_of(song, t, _only(song, t, f0, {same_length}))
    assert s_gold.note_points == pytest.approx(2 * s_norm.note_points)
    free = kinds.index("freestyle")
    # singing anything (or nothing) on the freestyle note changes nothing
    loud_free = np.where([song.note_at(x) == free for x in t], 300.0, f0)
    assert score_of(song, t, loud_free).total == 10000
    only_free = np.where([song.note_at(x) == free for x in t], 300.0, 0.0)
    assert score_of(song, t, only_free).total == 0
    assert s_gold.notes[free].weight == 0.0


def test_line_bonus_and_ratings(song):
    t, f0 = performance(song, vibrato=0.0)
    first_line = set(song.lines[0].notes)
    s = score_of(song, t, _only(song, t, f0, first_line))
    assert [ln.rating for ln in s.lines] == ["perfect", "awful"]
    assert s.line_points == pytest.approx(500.0)  # 1000 shared by two lines
    w = Scorer(song).weights
    assert s.note_points == pytest.approx(9000 * w[list(first_line)].sum() / w.sum())
    assert s.total == round(s.note_points + s.line_points)


def test_running_score_grows_to_the_final_and_an_unfinished_song_counts_misses(song):
    t, f0 = performance(song, vibrato=10.0)
    scorer = Scorer(song)
    running = []
    for frame in frames_from_f0(t, f0):
        scorer.send(frame)
        running.append(scorer.running_total(frame.time))
    assert running == sorted(running) and running[0] == 0
    assert running[-1] == scorer.score().total == 10000
    half = Scorer(song)
    for frame in frames_from_f0(t, f0):
        if frame.time < song.end / 2:
            half.send(frame)
    assert 2000 < half.score().total < 8000


def test_alignment_uses_frame_time_once(song):
    """PitchFrame.time already has the tracker's delay removed: the scorer shifts only by
    offset_s (where song time 0 lies on the input timeline) and ignores frame.sample."""
    assert Scorer.latency_samples == 0
    t, f0 = performance(song, vibrato=0.0)
    offset = 0.73
    # input timeline: the backing started 0.73 s after the microphone
    frames = frames_from_f0(t + offset, f0)
    assert score_frames(song, frames, offset_s=offset).total == 10000
    late = score_frames(song, frames).total  # no offset: everything 0.73 s late
    assert late < 3000
    # garbage in .sample changes nothing: only .time is read
    garbage = [dataclasses.replace(f, sample=-123456) for f in frames]
    assert score_frames(song, garbage, offset_s=offset).total == 10000
    # a singer 30 ms late (less than the onset grace of 50 ms) loses little
    late_singer = score_frames(song, frames_from_f0(t + 0.03, f0)).total
    assert late_singer >= 9700


def test_config_validation():
    from melodyrt.rt.errors import ConfigError

    with pytest.raises(ConfigError, match="difficulty"):
        ScoreConfig(difficulty="insane")
    with pytest.raises(ConfigError, match="tolerance"):
        ScoreConfig(tolerance_cents=0)
    assert ScoreConfig("hard").tolerance == 30 and ScoreConfig(tolerance_cents=75).tolerance == 75


def test_rap_notes_need_voicing_only():
    from melodyrt.rt.karaoke.song import parse_ultrastar

    song = parse_ultrastar("#BPM:300\nR 0 20 0 yo\nG 20 20 0 yo\nE\n", "rap.txt")
    t = np.arange(0, 2.0, HOP)
    s = score_frames(song, frames_from_f0(t, np.full_like(t, 150.0)))
    assert s.total == 10000
    assert s.notes[1].weight == pytest.approx(2 * s.notes[0].weight)


# ---------------------------------------------------------------- end to end (audio)


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model packaged yet (model/weights/rt/model.json)")
def test_end_to_end_audio_through_the_tracker(song):
    """A synthetic voice over the backing, tracked from audio: on pitch scores high, a
    semitone sharp low."""
    from melodyrt.rt.tracker import transcribe_signal

    sr = 16000
    backing = synth_backing(song, sr, guide_db=None)

    def mix(cents):
        voice = sung_voice(sung_f0(song, sr, cents=cents, vibrato_cents=15.0, end_s=backing.shape[0] / sr), sr)
        n = min(voice.shape[0], backing.shape[0])
        return (0.8 * voice[:n] + 0.15 * backing[:n]).astype(np.float32)

    def frames(x):
        return list(transcribe_signal(x, sr).frames)

    on = score_frames(song, frames(mix(0.0)))
    sharp = score_frames(song, frames(mix(100.0)))
    assert on.total >= 8000, on.total
    assert sharp.total <= 2500, sharp.total
    assert all(isinstance(f, PitchFrame) for f in frames(mix(0.0))[:3])

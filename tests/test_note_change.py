"""Note changes of :class:`MidiNoteLogic` on constructed frame sequences: the fast path for
large jumps beside the slow ``change_frames`` rule.

What the logic guarantees, and what these tests check (``play`` from ``test_onset_logic``
also checks pairing, one voice, and that every change is allowed by one of the two rules):

- a confident step larger than ``jump_cents`` (default 250) changes the note on its first
  frame, a smaller one or a doubtful one after ``change_frames`` (3) frames; within the bend
  range (2 semitones) the bend reaches the new pitch on the step's first frame anyway;
- a note is never changed or released before it is ``min_note_frames`` (5) old, on either
  path, with the default ``jump_min_frames=None`` (so no chatter faster than the old rule);
- vibrato of +-50 cents never takes the fast path, and centred within 10 cents of a semitone
  it never changes the note at all; scoops and glides play notes in one direction only and
  end on the target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_onset_logic import HI, LO, frames, play

from melodyrt.rt.errors import ConfigError
from melodyrt.rt.midi_out import MidiConfig, MidiNoteLogic

D = MidiConfig()
SLOW = dict(jump_cents=None)   # the old rule alone


def sounding(track: list[tuple[float, float] | None], **settings) -> list[float | None]:
    """The pitch a receiver sounds after each frame: held note + bend [MIDI note], None when silent."""
    cfg = MidiConfig(**settings)
    logic = MidiNoteLogic(cfg)
    held: int | None = None
    bend = 0.0
    out: list[float | None] = []
    for f in frames(track):
        for m in logic.process(f):
            if m.type == "note_on" and m.velocity > 0:
                held = m.note
            elif m.type == "note_off":
                held = None
            elif m.type == "pitchwheel":
                bend = m.pitch / 8192 * cfg.bend_range
        out.append(None if held is None else held + bend)
    return out


def step_track(k: float, conf: float, before: int = 20, after: int = 20, base: float = 60.0):
    return [None] * 2 + [(base, HI)] * before + [(base + k, conf)] * after + [None] * 4


STEP = 2 + 20   # frame index of the step's first frame in step_track


def test_defaults():
    assert (D.jump_cents, D.jump_frames, D.jump_confidence, D.jump_min_frames) == (250.0, 1, 0.5, None)
    assert (D.hysteresis_cents, D.change_frames, D.min_note_frames, D.bend_range) == (60.0, 3, 5, 2)


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("k", range(1, 8))
def test_steps_of_1_to_7_semitones(k, direction):
    """Confident: steps beyond jump_cents change on the step's first frame, smaller ones after
    change_frames; the sounding pitch is within 50 cents from the first frame either way.
    Doubtful: every step waits for change_frames; the bend bridges up to 2 semitones."""
    for conf in (HI, LO):
        track = step_track(direction * k, conf)
        p = play(track)
        assert [n for _, n in p.on] == [60, 60 + direction * k], (k, conf, p.on)
        fast = k * 100 > D.jump_cents and conf >= D.jump_confidence
        changed_at = p.on[1][0]
        assert changed_at == (STEP if fast else STEP + D.change_frames - 1), (k, conf)
        heard = sounding(track)
        reach = STEP if (fast or k <= D.bend_range) else changed_at
        first_ok = next(i for i in range(STEP, len(heard)) if heard[i] is not None
                        and abs(heard[i] - (60 + direction * k)) <= 0.5)
        assert first_ok == reach, (k, conf, heard[STEP - 1: STEP + 4])
        # the old rule: change_frames frames for every step
        assert play(track, **SLOW).on[1][0] == STEP + D.change_frames - 1


def test_fast_path_waits_for_min_note_frames():
    """A jump right after the onset changes the note only once it is min_note_frames old."""
    for wait in range(1, 7):
        track = [None] + [(60.0, HI)] * wait + [(65.0, HI)] * 15 + [None] * 4
        p = play(track)
        assert [n for _, n in p.on] == [60, 65]
        assert p.on[1][0] == max(1 + wait, 1 + D.min_note_frames - 1)
    # jump_min_frames lets the fast path cut a younger note (not the default)
    p = play([None] + [(60.0, HI)] + [(65.0, HI)] * 15 + [None] * 4, jump_min_frames=2)
    assert p.on == [(1, 60), (2, 65)]


def test_jump_frames_and_threshold_are_strict():
    # exactly jump_cents away: not beyond it, the slow rule decides
    assert play(step_track(2.5, HI)).on[1][0] == STEP + 2
    assert play(step_track(2.51, HI)).on[1][0] == STEP
    # jump_frames 2: the second far frame changes it
    assert play(step_track(4, HI), jump_frames=2).on[1][0] == STEP + 1
    # the gate is inclusive; None takes any confidence
    assert play(step_track(4, 0.5)).on[1][0] == STEP
    assert play(step_track(4, 0.49)).on[1][0] == STEP + 2
    assert play(step_track(4, 0.05), jump_confidence=None).on[1][0] == STEP
    # far frames on alternating sides never add up
    track = [None] + [(60.0, HI)] * 10 + [(64.0, HI), (56.0, HI)] * 6 + [None] * 4
    p = play(track, jump_frames=2)
    assert p.on[1][0] > 11 + 1


def test_single_far_frames_follow_the_old_rule_when_doubtful():
    """Octave blips and glitches far from the note with low confidence change nothing."""
    track = [None] + [(60.0, HI)] * 10
    for _ in range(8):
        track += [(72.0, LO)] + [(60.0, HI)] * 6 + [(48.3, LO), (48.3, LO)] + [(60.0, HI)] * 6
    track += [None] * 4
    assert [n for _, n in play(track).on] == [60]


@pytest.mark.parametrize("centre", [60.0, 60.05, 59.9, 60.1])
@pytest.mark.parametrize("rate_hz", [4.0, 5.5, 7.0])
def test_vibrato_50_cents_near_a_semitone_never_changes_the_note(centre, rate_hz):
    for conf in (HI, LO):
        track = [None] + [(centre + 0.5 * math.sin(2 * math.pi * rate_hz * 0.01 * k), conf) for k in range(300)] + [None] * 4
        p = play(track)
        assert [n for _, n in p.on] == [60], (centre, rate_hz, conf)


@pytest.mark.parametrize("centre", np.arange(59.0, 60.01, 0.1).round(2).tolist())
def test_vibrato_never_takes_the_fast_path(centre):
    """Off-centre vibrato of +-50 cents may cross the hysteresis (the slow rule's business), but
    plays exactly the same notes with and without the fast path."""
    track = [None] + [(centre + 0.5 * math.sin(2 * math.pi * 5.5 * 0.01 * k), HI) for k in range(400)] + [None] * 4
    assert play(track).on == play(track, **SLOW).on


@pytest.mark.parametrize("span", [3.0, -4.0, 7.0])
@pytest.mark.parametrize("frames_", [1, 2, 4, 8, 15, 30])
def test_glides_play_one_direction_and_settle_on_the_target(span, frames_):
    """Glides of any speed: notes move one way only (no bounce), the last one is the target, and
    it is reached at most change_frames + min_note_frames frames after the glide ends."""
    for conf in (HI, LO):
        glide = [(60.0 + span * (k + 1) / frames_, conf) for k in range(frames_)]
        track = [None] + [(60.0, HI)] * 10 + glide + [(60.0 + span, conf)] * 20 + [None] * 4
        p = play(track)
        notes = [n for _, n in p.on]
        steps = np.diff(notes)
        assert np.all(steps * np.sign(span) > 0), (notes, conf)
        assert notes[-1] == 60 + span
        end = 1 + 10 + frames_
        assert p.on[-1][0] <= end + D.change_frames + D.min_note_frames


@pytest.mark.parametrize("depth", [1.0, 2.0, 3.0, 5.0])
def test_scoops_into_a_note_settle_without_chatter(depth):
    """A note sung from below: starts on the scoop (confident onset), rises over 3-6 frames with
    a slight overshoot, then holds: notes only rise and end on the target."""
    for n in (3, 6):
        rise = [(64.0 - depth + (depth + 0.3) * (k + 1) / n, HI) for k in range(n)]
        track = [None] * 3 + [(64.0 - depth, HI)] + rise + [(64.2, HI), (64.1, HI)] + [(64.0, HI)] * 30 + [None] * 4
        p = play(track)
        notes = [m for _, m in p.on]
        assert notes[-1] == 64 and all(b > a for a, b in zip(notes, notes[1:])), (depth, n, notes)
        assert len(notes) <= 3


def test_legato_melody_known_answer():
    # legato steps of 1, 2, 4 and 7 semitones (confident), 12 frames each
    pitches = [60, 61, 63, 67, 74, 67, 63, 61, 60]
    track = [None] + [(float(m), HI) for m in pitches for _ in range(12)] + [None] * 4
    p = play(track)
    assert [n for _, n in p.on] == pitches
    starts = [1 + 12 * i for i in range(len(pitches))]
    fast = [abs(b - a) * 100 > D.jump_cents for a, b in zip(pitches, pitches[1:])]
    assert [k for k, _ in p.on[1:]] == [s + (0 if f else D.change_frames - 1) for s, f in zip(starts[1:], fast)]
    # every change is a change (note-off and note-on in one frame): one onset from silence
    assert sum(1 for k, _ in p.on if k not in {o for o, _ in p.off}) == 1


def test_random_streams_keep_every_guarantee():
    """Random pitch walks with jumps, octave blips, vibrato, random voicing and confidence, with
    random note-change settings (fixed seed): pairing, one voice, release and change rules
    (checked in ``play``), and with jump_min_frames None no note shorter than min_note_frames."""
    rng = np.random.default_rng(20261205)
    for trial in range(80):
        n = int(rng.integers(50, 500))
        m = float(rng.uniform(45, 80))
        track: list[tuple[float, float] | None] = []
        p_voiced = float(rng.uniform(0.5, 1.0))
        for k in range(n):
            r = rng.random()
            if r < 0.05:
                m = float(rng.uniform(45, 80))             # a leap
            elif r < 0.08:
                m += float(rng.choice([-12.0, 12.0]))      # an octave slip
            pitch = m + 0.4 * math.sin(0.35 * k) + float(rng.normal(0, 0.1))
            track.append((pitch, float(rng.uniform(0, 1))) if rng.random() < p_voiced else None)
        settings = dict(
            change_frames=int(rng.integers(1, 5)), min_note_frames=int(rng.integers(1, 8)),
            release_frames=int(rng.integers(1, 4)), hysteresis_cents=float(rng.choice([40.0, 60.0, 80.0])),
            jump_cents=[None, 100.0, 150.0, 250.0, 400.0][int(rng.integers(5))], jump_frames=int(rng.integers(1, 4)),
            jump_confidence=[None, 0.3, 0.5, 0.9][int(rng.integers(4))],
            jump_min_frames=[None, None, 1, 2, 4][int(rng.integers(5))])
        p = play(track, **settings)
        if settings["jump_min_frames"] is None:
            for note, first, last in p.notes:
                assert last >= len(track) or last - first + 1 >= settings["min_note_frames"], (trial, note, first, last)
    # the defaults on the same kind of stream
    play(track)


def test_config_validation():
    for bad in (dict(jump_cents=-1.0), dict(jump_frames=0), dict(jump_confidence=1.5), dict(jump_confidence="0.5"),
                dict(jump_min_frames=0)):
        with pytest.raises(ConfigError, match="jump_"):
            MidiConfig(**bad)
    assert MidiConfig.from_settings(jump_cents=None, jump_confidence=None).jump_cents is None

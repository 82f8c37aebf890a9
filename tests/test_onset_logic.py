"""The confidence-gated onset of :class:`MidiNoteLogic`, on constructed frame sequences.

Every sequence is checked for the guarantees the note logic keeps with any onset rule:
note-ons and note-offs balanced (after ``stop``), one voice at a time, no note released
before ``min_note_frames`` (counted from its first frame), every note change allowed by the
slow rule or the fast path (:func:`change_allowed`), and no retrigger faster than the 2-frame
rule allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from melodyrt.rt.errors import ConfigError
from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.midi_out import MidiConfig, MidiFileSink, MidiNoteLogic

HI, LO = 0.95, 0.3          # confidences above and below the default gate
OLD = dict(onset_confidence=None)   # the 2-frame rule alone


def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def frames(track: list[tuple[float, float] | None], start: int = 0) -> list[PitchFrame]:
    """Frames from ``(MIDI note, confidence)`` per frame (None = unvoiced, confidence 0.05)."""
    out = []
    for k, item in enumerate(track):
        i = start + k
        if item is None:
            out.append(PitchFrame(i, i * 80, i * 0.01, 0.0, False, 0.05, -80.0))
        else:
            m, c = item
            out.append(PitchFrame(i, i * 80, i * 0.01, midi_hz(m), True, c, -20.0))
    return out


@dataclass
class Played:
    on: list[tuple[int, int]]          # (frame, note)
    off: list[tuple[int, int]]         # (frame, note); stop() at frame len(frames)
    notes: list[tuple[int, int, int]]  # (note, first frame, frame of its note-off)


def play(track: list[tuple[float, float] | None], **settings) -> Played:
    """Run the logic over ``track``, then stop it, checking pairing and one voice on the way."""
    cfg = MidiConfig(**settings)
    logic = MidiNoteLogic(cfg)
    fs = frames(track)
    per = [logic.process(f) for f in fs] + [logic.stop()]
    on, off, notes = [], [], []
    held: tuple[int, int] | None = None
    for k, msgs in enumerate(per):
        for m in msgs:
            if m.type == "note_on" and m.velocity > 0:
                assert held is None, f"frame {k}: note-on {m.note} while {held} sounds"
                held = (m.note, k)
                on.append((k, m.note))
            elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
                assert held is not None and held[0] == m.note, f"frame {k}: note-off {m.note} without its note-on"
                notes.append((m.note, held[1], k))
                off.append((k, m.note))
                held = None
    assert held is None, f"stuck note {held}"
    on_at = {k for k, _ in on}
    for note, first, last in notes:
        if last >= len(fs):   # cut by stop()
            continue
        if last in on_at:     # a note change: by the slow rule or the fast path
            assert change_allowed(cfg, track, note, first, last), f"note {note} frames {first}..{last}: change not allowed"
        else:
            assert last - first + 1 >= cfg.min_note_frames, f"note {note} frames {first}..{last} shorter than min_note_frames"
    return Played(on, off, notes)


def change_allowed(cfg: MidiConfig, track: list[tuple[float, float] | None], note: int, first: int, k: int) -> bool:
    """Whether the rules allow the note started at frame ``first`` to change at frame ``k``.

    The slow rule: ``change_frames`` voiced frames more than ``hysteresis_cents`` from the note,
    the note ``min_note_frames`` old (its first frame and frame ``k`` counted). The fast path:
    ``jump_frames`` voiced frames more than ``jump_cents`` away on one side, each confident
    enough for ``jump_confidence``, the note ``jump_min_frames`` old (None: ``min_note_frames``).
    Only frames after the note's first count.
    """
    age = k - first + 1

    def run(n: int, ok) -> bool:
        frames_ = range(k - n + 1, k + 1)
        return frames_.start > first and all(track[j] is not None and ok(*track[j]) for j in frames_)

    slow = age >= cfg.min_note_frames and run(cfg.change_frames, lambda m, c: abs(m - note) * 100 > cfg.hysteresis_cents)
    if slow or cfg.jump_cents is None:
        return slow
    need = cfg.min_note_frames if cfg.jump_min_frames is None else cfg.jump_min_frames
    gate = cfg.jump_confidence

    def far(side: int) -> bool:
        return run(cfg.jump_frames, lambda m, c: (m - note) * 100 * side > cfg.jump_cents and (gate is None or c >= gate))

    return age >= need and (far(1) or far(-1))


def onsets_from_silence(p: Played) -> list[int]:
    """Frames of note-ons with no note-off in the same frame (notes started from silence)."""
    offs = {k for k, _ in p.off}
    return [k for k, _ in p.on if k not in offs]


# ------------------------------------------------------------------------- the rule


def test_confident_first_frame_starts_the_note_a_frame_earlier():
    track = [None] * 3 + [(64.0, HI)] * 10 + [None] * 4
    assert play(track).on == [(3, 64)]                      # the default gate: on the first voiced frame
    assert play(track, **OLD).on == [(4, 64)]               # the 2-frame rule: one frame (10 ms) later
    assert play(track, onset_frames=1).on == [(3, 64)]


def test_doubtful_first_frame_waits_for_onset_frames():
    track = [None] * 3 + [(64.0, LO)] * 10 + [None] * 4
    assert play(track).on == [(4, 64)]
    # a doubtful first frame followed by a confident one: the second frame starts it either way
    assert play([None, (64.0, LO), (64.0, HI)] + [(64.0, LO)] * 8).on == [(2, 64)]
    # onset_frames 3: a confident frame inside the run starts the note before the count
    assert play([None, (64.0, LO), (64.0, HI)] + [(64.0, LO)] * 8, onset_frames=3).on == [(2, 64)]
    assert play([None] + [(64.0, LO)] * 10, onset_frames=3).on == [(3, 64)]


def test_threshold_is_inclusive_and_none_disables():
    track = [None, (60.0, 0.7)] + [(60.0, 0.2)] * 8
    assert play(track, onset_confidence=0.7).on == [(1, 60)]
    assert play(track, onset_confidence=0.71).on == [(2, 60)]
    assert play(track, onset_confidence=None).on == [(2, 60)]
    assert play([None, (60.0, 1.0)] + [(60.0, 0.2)] * 8, onset_confidence=1.0).on == [(1, 60)]


def test_min_confidence_still_wins():
    """Frames below ``min_confidence`` are unvoiced, whatever the gate says."""
    track = [None, (60.0, 0.5)] + [(60.0, 0.9)] * 8
    assert play(track, min_confidence=0.6, onset_confidence=0.4).on == [(2, 60)]


def test_config_validation():
    assert MidiConfig().onset_confidence is not None and 0.0 < MidiConfig().onset_confidence <= 1.0
    for bad in (-0.1, 1.5, math.nan, "0.7", True):
        with pytest.raises(ConfigError, match="onset_confidence"):
            MidiConfig(onset_confidence=bad)
    with pytest.raises(ConfigError, match="onset_rest_frames"):
        MidiConfig(onset_rest_frames=-1)
    assert MidiConfig.from_settings(onset_confidence=None, onset_rest_frames=0).onset_confidence is None
    with pytest.raises(ConfigError, match="unknown setting"):
        MidiConfig.from_settings(onset_confidense=0.5)


# ------------------------------------------------------------------------- no chatter


def test_isolated_confident_blips_give_one_short_note_each_and_nothing_sticks():
    # one confident voiced frame among silence, several times
    track: list[tuple[float, float] | None] = []
    for k in range(6):
        track += [None] * 20 + [(62.0 + k, HI)]
    track += [None] * 20
    p = play(track)
    assert len(p.on) == 6 and len(p.off) == 6
    for note, first, last in p.notes:
        assert last - first + 1 == 5                         # held exactly min_note_frames, then released
    assert play(track, **OLD).on == []                       # the 2-frame rule ignores them


def test_low_confidence_noise_never_starts_single_frame_notes():
    rng = np.random.default_rng(7)
    track: list[tuple[float, float] | None] = []
    for _ in range(400):     # isolated doubtful voiced frames at random pitches among silence
        track.append((float(rng.uniform(45, 80)), float(rng.uniform(0.05, 0.6))) if rng.random() < 0.3 else None)
        if track[-1] is not None:
            track.append(None)
    assert play(track).on == []


def test_flickering_voicing_does_not_retrigger():
    # voiced (confident) every other frame: single drop-outs are bridged, one note
    p = play(([(60.0, HI), None] * 40) + [None] * 5)
    assert len(p.on) == 1
    # one voiced frame in three or five: drop-outs of 2+ frames end the note; the gate may
    # start the next one on a single frame, but never within onset_rest_frames of the note-off
    for period in (3, 5):
        flicker = ([(60.0, HI)] + [None] * (period - 1)) * 40
        ons = onsets_from_silence(play(flicker))
        assert np.diff(ons).min() >= 6                       # never faster than the 2-frame rule can go
        assert len(ons) <= 1 + len(flicker) // 6
    # with a rest requirement as long as a note, flicker of this kind plays one note per 2 notes' time
    ons = onsets_from_silence(play(([(60.0, HI)] + [None] * 2) * 40, onset_rest_frames=5))
    assert np.diff(ons).min() >= 9
    # the 2-frame rule's fastest retrigger: 2 voiced frames, the note held 5 frames, released
    assert np.diff(onsets_from_silence(play(([(60.0, HI)] * 2 + [None] * 4) * 20, **OLD))).min() == 6


@pytest.mark.parametrize(("period", "voiced"), [(p, v) for p in range(2, 12) for v in (1, 2, 3) if v < p])
def test_no_retrigger_faster_than_the_two_frame_rule(period, voiced):
    """Periodic voicing of any duty cycle (every pattern with a drop-out): the gate's onsets
    are never closer than 6 frames."""
    pattern = ([(57.0, HI)] * voiced + [None] * (period - voiced)) * 30
    for settings in ({}, OLD, {"onset_rest_frames": 2, "onset_confidence": 0.0}):
        ons = onsets_from_silence(play(pattern, **settings))
        assert len(ons) <= 1 + len(pattern) // 6
        assert all(b - a >= 6 for a, b in zip(ons, ons[1:])), (settings, ons[:8])


def test_fast_staccato_every_note_played_once_at_its_first_frame():
    # 8 notes per second: 7 voiced frames + 5 silent ones each, confident from the first frame
    notes = [60, 62, 64, 65, 67, 65, 64, 62, 60, 67, 72, 60]
    track: list[tuple[float, float] | None] = []
    starts = []
    for n in notes:
        starts.append(len(track))
        track += [(n + 0.1, HI)] * 7 + [None] * 5
    p = play(track)
    assert p.on == list(zip(starts, notes))                  # each on its first voiced frame
    assert [n for n, _, _ in p.notes] == notes
    old = play(track, **OLD)
    assert old.on == [(s + 1, n) for s, n in zip(starts, notes)]
    # shorter rests than onset_rest_frames after the note-off: the note waits for the second frame
    tight = []
    for n in notes:
        tight += [(n + 0.1, HI)] * 6 + [None] * 3              # note-off at the 2nd silent frame, rest 2
    p = play(tight, onset_rest_frames=3)
    assert [n for _, n in p.on] == notes
    assert [k % 9 for k, _ in p.on] == [0] + [1] * (len(notes) - 1)


def test_note_changes_keep_hysteresis_and_min_length_with_the_gate():
    # a confident onset on a scoop: starts low, the pitch moves 2 semitones up at once
    track = [None] * 3 + [(58.0, HI)] + [(60.0, HI)] * 20 + [None] * 4
    p = play(track)
    assert p.on == [(3, 58), (7, 60)]                         # changed only once 5 frames old
    # small wobble under the hysteresis: no change at all
    wobble = [None] + [(60.0 + 0.5 * math.sin(k), HI) for k in range(40)] + [None] * 3
    assert [n for _, n in play(wobble).on] == [60]
    # legato steps: one note-on per step, no gap
    legato = [None] + [(60.0, HI)] * 10 + [(62.0, HI)] * 10 + [(64.0, HI)] * 10 + [None] * 3
    p = play(legato)
    assert [n for _, n in p.on] == [60, 62, 64] and onsets_from_silence(p) == [1]


def test_random_frame_streams_keep_every_guarantee():
    """Random voicing, confidence and pitch with random settings (fixed seed)."""
    rng = np.random.default_rng(20261202)
    for _ in range(60):
        n = int(rng.integers(30, 400))
        m = float(rng.uniform(45, 80))
        track: list[tuple[float, float] | None] = []
        p_voiced = float(rng.uniform(0.2, 0.9))
        for _ in range(n):
            if rng.random() < 0.08:
                m = float(rng.uniform(45, 80))
            m += float(rng.normal(0, 0.3))
            track.append((m, float(rng.uniform(0, 1))) if rng.random() < p_voiced else None)
        settings = dict(onset_frames=int(rng.integers(1, 4)), onset_confidence=[None, 0.0, 0.5, 0.7, 0.9][int(rng.integers(5))],
                        onset_rest_frames=int(rng.integers(0, 6)), min_note_frames=int(rng.integers(1, 8)),
                        release_frames=int(rng.integers(1, 4)), change_frames=int(rng.integers(1, 5)))
        play(track, **settings)     # pairing, one voice, min length: checked inside


def test_midi_file_follows_the_gate(tmp_path):
    """The file sink uses the same logic: its first note-on is at the confident frame's time."""
    import mido

    sink = MidiFileSink(tmp_path / "g.mid")
    for f in frames([None] * 50 + [(67.0, HI)] * 20 + [None] * 5):
        sink.send(f)
    sink.close()
    t = 0.0
    for msg in mido.MidiFile(tmp_path / "g.mid"):
        t += msg.time
        if msg.type == "note_on":
            break
    assert msg.note == 67 and t == pytest.approx(0.50, abs=1e-3)

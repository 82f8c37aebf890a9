"""Fast onset cues: the detector on synthetic voices, the tracker's event stream, and the note
logic's provisional notes (``MidiConfig.fast_onset``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from melodyrt.rt.errors import ConfigError
from melodyrt.rt.frames import OnsetCue, PitchFrame
from melodyrt.rt.midi_out import MidiConfig, MidiNoteLogic
from melodyrt.rt.onset_cue import CueConfig, OnsetCueDetector
from melodyrt.rt.synth import f0_contour, harmonic_tone, note_envelope
from melodyrt.rt.tracker import Tracker, TrackerConfig, transcribe_signal

SR = 8000


def voice(notes: list[tuple[float | None, float]], sr: int = SR, seed: int = 0, noise_db: float = -50.0) -> np.ndarray:
    """A harmonic sung line (30 ms attacks) from ``(MIDI note or None, seconds)``, with a noise floor."""
    rng = np.random.default_rng(seed)
    f0 = f0_contour(notes, sr, vibrato_cents=15.0, glide_s=0.0)
    x = harmonic_tone(f0, 0.0, sr, rng=rng, peak=0.5) * note_envelope(f0, sr)
    return x + 10 ** (noise_db / 20) * rng.standard_normal(x.shape[0])


def midi_of(hz: float) -> float:
    return 69.0 + 12.0 * math.log2(hz / 440.0)


# ------------------------------------------------------------------------------ detector


@pytest.mark.parametrize("note", [45, 52, 57, 62, 67, 72, 79])
def test_one_cue_per_note_early_and_at_the_right_pitch(note):
    x = voice([(None, 0.3), (note, 0.5), (None, 0.3)])
    cues = OnsetCueDetector(CueConfig()).process(x)
    assert len(cues) == 1
    onset = int(0.3 * SR)
    delay_ms = (cues[0].newest + 1 - onset) / SR * 1000.0
    # about two periods of the note plus two evaluation steps, never a frame's 30 ms
    assert 3.0 < delay_ms < 2 * 1000.0 / (440 * 2 ** ((note - 69) / 12)) + 10.0
    assert abs(midi_of(cues[0].f0_hz) - note) < 0.5
    assert cues[0].periodicity >= 0.9 and -35.0 <= cues[0].level_db < 0.0


def test_no_cue_on_silence_noise_or_a_tone_below_the_level_floor(rng):
    det = OnsetCueDetector(CueConfig())
    assert det.process(np.zeros(SR)) == []
    det.reset()
    assert det.process(0.1 * rng.standard_normal(2 * SR)) == []        # loud but aperiodic
    det.reset()
    quiet = voice([(None, 0.2), (60, 0.5)]) * 10 ** (-30 / 20)          # peak 0.5 -> RMS about -42 dBFS
    assert det.process(quiet) == []


def test_rearms_after_a_rest_but_not_inside_a_legato_line():
    det = OnsetCueDetector(CueConfig())
    rest = voice([(None, 0.2), (60, 0.4), (None, 0.1), (64, 0.4), (None, 0.2)])
    assert len(det.process(rest)) == 2                                   # 100 ms rest >= rearm_ms (60)
    det.reset()
    legato = voice([(None, 0.2), (60, 0.4), (64, 0.4), (67, 0.4), (None, 0.2)])
    assert len(det.process(legato)) == 1                                 # one onset, three notes


def test_same_cues_for_any_block_size_and_after_reset():
    x = voice([(None, 0.1), (57, 0.3), (None, 0.15), (69, 0.3), (None, 0.1)], seed=4)
    det = OnsetCueDetector(CueConfig())
    whole = det.process(x)
    assert len(whole) == 2
    for block in (1, 7, 21, 80, 333):
        det.reset()
        got = []
        for i in range(0, x.shape[0], block):
            got += det.process(x[i : i + block])
        assert got == whole, block


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="must divide the hop"):
        OnsetCueDetector(CueConfig(step=30))
    for bad in (dict(periodicity=1.5), dict(fmin_hz=500.0, fmax_hz=400.0), dict(step=0), dict(agree_steps=0)):
        with pytest.raises(ConfigError, match="tracker.cue"):
            CueConfig(**bad)
    assert TrackerConfig.from_dict({"cue": {"enabled": False}}).cue.enabled is False
    with pytest.raises(ConfigError, match="unknown config key"):
        TrackerConfig.from_dict({"cue": {"threshold": 0.5}})


# ------------------------------------------------------------------------------ tracker


def test_tracker_events_are_the_frames_with_cues_between(untrained_bundle):
    rate = 48000
    x = voice([(None, 0.3), (62, 0.4), (None, 0.3), (66, 0.4), (None, 0.2)], sr=rate).astype(np.float32)
    tr = Tracker(rate, untrained_bundle, backend="ort")
    frames = []
    for i in range(0, x.shape[0], 128):
        frames += tr.process(x[i : i + 128])
    tr.reset()
    events = []
    for i in range(0, x.shape[0], 128):
        events += tr.process_events(x[i : i + 128])
    assert [e for e in events if isinstance(e, PitchFrame)] == frames   # cues change no frame
    cues = [(k, e) for k, e in enumerate(events) if isinstance(e, OnsetCue)]
    assert len(cues) == 2
    for k, c in cues:
        nxt = next(e for e in events[k:] if isinstance(e, PitchFrame))
        assert nxt.index == c.index                                    # before the frame it names
        assert abs(midi_of(c.f0_hz) - (62 if c.time < 1.0 else 66)) < 0.5
    onsets = (0.3, 1.0)
    for (_, c), onset in zip(cues, onsets):
        decided = (c.sample + tr.cue_delay_samples) / rate
        assert 0.0 < decided - onset < 0.016                           # algorithmic: within 16 ms of the onset
        assert abs(c.time - onset) < 0.012                             # its timestamp: the audio it heard
    res = transcribe_signal(x, rate, tracker=tr, block=333)
    assert res.cues == [c for _, c in cues]                            # a file is the same stream
    assert [e for e in res.events() if isinstance(e, OnsetCue)] == res.cues
    off = Tracker(rate, untrained_bundle, backend="ort", config=TrackerConfig.from_dict({"cue": {"enabled": False}}))
    assert not any(isinstance(e, OnsetCue) for e in off.process_events(x)) and off.cue_delay_samples == 0.0


# ------------------------------------------------------------------------------ note logic


def cue(index: int, note: float, db: float = -20.0) -> OnsetCue:
    return OnsetCue(index, index * 80 - 40, index * 0.01 - 0.005, 440.0 * 2 ** ((note - 69) / 12), 0.97, db)


def frame(index: int, note: float | None, conf: float = 0.9) -> PitchFrame:
    if note is None:
        return PitchFrame(index, index * 80, index * 0.01, 0.0, False, 0.05, -80.0)
    return PitchFrame(index, index * 80, index * 0.01, 440.0 * 2 ** ((note - 69) / 12), True, conf, -20.0)


def run(events: list, **settings) -> list[tuple[int, str, int]]:
    """(position in ``events``, type, note) of every note message, then stop()."""
    logic = MidiNoteLogic(MidiConfig(**settings))
    out = []
    for k, e in enumerate(events):
        msgs = logic.cue(e) if isinstance(e, OnsetCue) else logic.process(e)
        out += [(k, m.type, m.note) for m in msgs if m.type in ("note_on", "note_off")]
    out += [(len(events), m.type, m.note) for m in logic.stop() if m.type in ("note_on", "note_off")]
    return out


def test_cue_starts_the_note_and_a_voiced_frame_confirms_it():
    ev = [frame(i, None) for i in range(5)] + [cue(5, 60.2)] + [frame(i, None) for i in range(5, 8)] \
        + [frame(i, 60.1) for i in range(8, 30)] + [frame(i, None) for i in range(30, 34)]
    got = run(ev, fast_onset=True)
    assert got[0] == (5, "note_on", 60)                                # at the cue, before any voiced frame
    assert [t for _, t, _ in got] == ["note_on", "note_off"]           # confirmed: no second note-on
    assert got[1][0] == ev.index(frame(31, None))                       # released as usual (release_frames 2)
    assert run(ev) == [(ev.index(frame(8, 60.1)), "note_on", 60), (ev.index(frame(31, None)), "note_off", 60)]


def test_unconfirmed_cue_is_released_after_cue_confirm_frames():
    ev = [frame(0, None), cue(1, 64.0)] + [frame(i, None) for i in range(1, 12)]
    got = run(ev, fast_onset=True, cue_confirm_frames=4)
    assert got == [(1, "note_on", 64), (ev.index(frame(4, None)), "note_off", 64)]


def test_confirming_frame_far_away_moves_the_note_at_once():
    ev = [frame(0, None), cue(1, 72.0)] + [frame(i, None) for i in range(1, 4)] + [frame(i, 60.0) for i in range(4, 20)]
    got = run(ev, fast_onset=True)
    k = ev.index(frame(4, 60.0))
    assert got[:3] == [(1, "note_on", 72), (k, "note_off", 72), (k, "note_on", 60)]
    assert got[3:] == [(len(ev), "note_off", 60)]


def test_confirming_frame_within_the_bend_range_bends_then_the_slow_rule_moves_the_note():
    logic = MidiNoteLogic(MidiConfig(fast_onset=True))
    assert [m.note for m in logic.cue(cue(1, 61.0)) if m.type == "note_on"] == [61]
    got = [logic.process(frame(i, 60.0)) for i in range(1, 12)]
    first = got[0]
    assert [m.type for m in first] == ["pitchwheel"] and first[0].pitch < 0    # sounds 60 on the held 61
    changed = [k for k, ms in enumerate(got) if any(m.type == "note_on" for m in ms)]
    # the note is 61 for min_note_frames (5, counted from the cue's note-on), then becomes 60
    assert len(changed) == 1 and 3 <= changed[0] <= 5
    assert [m.note for m in got[changed[0]] if m.type == "note_on"] == [60]


def test_cues_ignored_when_off_while_a_note_sounds_and_right_after_a_release():
    ev = [frame(i, 60.0) for i in range(10)] + [cue(10, 67.0)] + [frame(i, 60.0) for i in range(10, 15)] \
        + [frame(15, None), frame(16, None), cue(17, 62.0), frame(17, None), cue(18, 62.0)] \
        + [frame(i, 62.0) for i in range(18, 25)]
    got = run(ev, fast_onset=True, onset_confidence=None)
    notes_on = [(k, n) for k, t, n in got if t == "note_on"]
    assert notes_on[0][1] == 60 and all(n != 67 for _, n in notes_on)   # held: the cue changes nothing
    # the note-off comes at frame 16; the cue at 17 is 1 frame after it (< onset_rest_frames 2),
    # the one at 18 is 2 frames after it and starts the note
    assert notes_on[1] == (ev.index(cue(18, 62.0)), 62)
    assert not [m for m in run(ev) if m[0] in (ev.index(cue(10, 67.0)), ev.index(cue(18, 62.0)))]


def test_random_streams_with_cues_never_leave_a_note_hanging(rng):
    for trial in range(30):
        ev: list = []
        for i in range(400):
            if rng.random() < 0.08:
                ev.append(cue(i, float(rng.integers(48, 80)) + rng.normal(0, 0.2)))
            voiced = rng.random() < 0.6
            ev.append(frame(i, float(rng.integers(48, 80)) if voiced and rng.random() < 0.3 else (60.0 if voiced else None),
                            conf=float(rng.random())))
        got = run(ev, fast_onset=True, cue_confirm_frames=int(rng.integers(1, 8)))
        held = None
        for _, t, n in got:
            if t == "note_on":
                assert held is None, trial                             # one voice at a time
                held = n
            else:
                assert held == n, trial
                held = None
        assert held is None, trial                                     # stop() released everything


def test_fast_onset_config_is_checked():
    with pytest.raises(ConfigError, match="fast_onset"):
        MidiConfig(fast_onset="yes")
    with pytest.raises(ConfigError, match="cue_confirm_frames"):
        MidiConfig(cue_confirm_frames=0)


def test_a_chain_with_a_source_hands_cues_to_the_sinks_that_take_them(untrained_bundle):
    from melodyrt.rt.chain import Chain

    class Recorder:
        latency_samples = 0

        def __init__(self) -> None:
            self.events: list = []

        def send(self, frame) -> None:  # noqa: ANN001
            self.events.append(frame)

        def cue(self, c) -> None:  # noqa: ANN001
            self.events.append(c)

        def close(self) -> None:
            pass

    class FramesOnly(Recorder):
        cue = None  # type: ignore[assignment]

    x = voice([(None, 0.3), (64, 0.4), (None, 0.3)]).astype(np.float32)
    rec, plain = Recorder(), FramesOnly()
    chain = Chain(iter([x[i : i + 100] for i in range(0, x.shape[0], 100)]), [], [rec, plain], SR, 100)
    n = chain.run(Tracker(SR, untrained_bundle, backend="ort"))
    cues = [e for e in rec.events if isinstance(e, OnsetCue)]
    assert len(cues) == 1 and abs(midi_of(cues[0].f0_hz) - 64) < 0.5
    assert n == len(plain.events) == len(rec.events) - 1 and chain.sink_errors == 0


def test_live_sinks_take_fast_onset_from_the_flag_and_osc_follows_the_midi_settings(tmp_path):
    import argparse

    from melodyrt.rt.cli import build_parser
    from melodyrt.rt.commands import _live_sinks, _settings

    cfg = tmp_path / "live.yaml"
    cfg.write_text("midi:\n  onset_confidence: 0.8\n  cue_confirm_frames: 4\n")
    args = build_parser().parse_args(["live", "--osc", "127.0.0.1:9", "--fast-onset", "--config", str(cfg)])
    assert isinstance(args, argparse.Namespace) and args.fast_onset is True
    (osc,) = _live_sinks(args, _settings(args.config)[2])
    try:
        notes = osc.notes.config
        assert notes.fast_onset is True and notes.onset_confidence == 0.8 and notes.cue_confirm_frames == 4
    finally:
        osc.close()
    plain = build_parser().parse_args(["live", "--osc", "127.0.0.1:9"])
    (osc,) = _live_sinks(plain, None)
    try:
        assert osc.notes.config.fast_onset is False
    finally:
        osc.close()

"""MIDI output: the note logic with known answers and random tracks, then the real port.

The port tests run python-rtmidi over JACK MIDI on a private JACK server (dummy driver),
started once for this module when ``jackd`` is installed; a MidiIn on the same server, in a
child process (:mod:`jack_midi_rx` says why), receives what the sink sends, at the real
frame rate.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import shutil
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from melodyrt.rt.errors import ConfigError
from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.midi_out import (
    MidiConfig, MidiFileSink, MidiNoteLogic, MidiPortError, MidiSink, bend_value, close_on_signals,
    frames_to_messages, match_port,
)

from jack_midi_rx import MidiReceiver

HOP_S = 0.01


def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def make_frames(track: list[float | None], loudness: list[float] | float = -20.0, start: int = 0) -> list[PitchFrame]:
    """Frames from a per-frame track of fractional MIDI notes (None = unvoiced)."""
    louds = loudness if isinstance(loudness, list) else [loudness] * len(track)
    out = []
    for k, (m, db) in enumerate(zip(track, louds)):
        i = start + k
        voiced = m is not None
        out.append(PitchFrame(i, i * 80, i * HOP_S, midi_hz(m) if voiced else 0.0, voiced, 0.9 if voiced else 0.1, db))
    return out


def melody_track() -> tuple[list[float | None], list[float]]:
    """Silence, a note with vibrato, a glide, a loud note, silence, a quiet note, silence."""
    t: list[float | None] = []
    db: list[float] = []

    def add(values, level):
        t.extend(values)
        db.extend([level] * len(values))

    add([None] * 10, -80.0)
    add([60 + 0.3 * math.sin(2 * math.pi * 5.5 * k * HOP_S) for k in range(60)], -30.0)   # vibrato +-30 cents
    add([60 + 4 * k / 40 for k in range(40)], -25.0)                                      # glide C4 -> E4
    add([64.0] * 10, -25.0)
    add([None] * 12, -80.0)
    add([67.1] * 40, -10.0)                                                               # loud G4
    add([None] * 12, -80.0)
    add([55.0] * 30, -45.0)                                                               # quiet G3
    add([None] * 10, -80.0)
    return t, db


def messages(logic: MidiNoteLogic, frames: list[PitchFrame]) -> list[list[mido.Message]]:
    return [logic.process(f) for f in frames]


def check_pairing(msgs: list[mido.Message], mono: bool = True) -> None:
    """Every note-off closes a sounding note; nothing sounds at the end; one voice at a time."""
    sounding: set[tuple[int, int]] = set()
    for m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            assert (m.channel, m.note) not in sounding, f"double note-on {m}"
            sounding.add((m.channel, m.note))
            assert not mono or len(sounding) == 1, f"two notes at once: {sounding}"
        elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
            assert (m.channel, m.note) in sounding, f"note-off without note-on: {m}"
            sounding.discard((m.channel, m.note))
    assert not sounding, f"stuck notes: {sounding}"


RPN_HEADER = [[0xB0, 101, 0], [0xB0, 100, 0], [0xB0, 6, 2], [0xB0, 38, 0], [0xB0, 101, 127], [0xB0, 100, 127]]


# ------------------------------------------------------------------- logic, known answers


def test_header_is_rpn0_then_null():
    logic = MidiNoteLogic()
    assert [m.bytes() for m in logic.start()] == RPN_HEADER
    cfg = MidiConfig(channel=10, bend_range=12)
    assert [m.bytes() for m in MidiNoteLogic(cfg).start()] == [
        [0xB9, 101, 0], [0xB9, 100, 0], [0xB9, 6, 12], [0xB9, 38, 0], [0xB9, 101, 127], [0xB9, 100, 127]]


def test_bend_values():
    assert bend_value(0.0, 2) == 8192
    assert bend_value(1.0, 2) == 12288
    assert bend_value(-2.0, 2) == 0
    assert bend_value(5.0, 2) == 16383      # clamped
    assert bend_value(0.25, 2) == 9216


def test_steady_note_known_answer():
    logic = MidiNoteLogic(MidiConfig(onset_frames=2, onset_confidence=None))   # the 2-frame rule alone
    out = messages(logic, make_frames([None, 69.25, 69.25, 69.25, 69.25], -33.0))
    assert [m.bytes() for m in out[0]] == RPN_HEADER           # header with the first frame
    assert out[1] == []                                       # onset: one voiced frame is not enough
    assert [m.bytes() for m in out[2]] == [[0xE0, 9216 & 0x7F, 9216 >> 7], [0x90, 69, 64]]   # bend, then note-on
    assert out[3] == [] and out[4] == []                      # unchanged bend is not resent
    logic = MidiNoteLogic(MidiConfig(onset_frames=1))
    first = messages(logic, make_frames([69.0, 69.0]))
    assert [m.bytes() for m in first[0][6:]] == [[0xE0, 0, 64], [0x90, 69, 94]]   # centre bend sent once
    assert first[1] == []
    assert [m.bytes() for m in logic.stop()] == [[0x80, 69, 0], [0xB0, 123, 0], [0xB0, 121, 0]]


def test_hysteresis_and_min_length():
    cfg = MidiConfig(hysteresis_cents=60, change_frames=3, onset_frames=1, min_note_frames=5, release_frames=2)
    # 50 cents away for long: no new note; 70 cents for 2 frames: none; for 3 frames: a new note.
    track = [60.0] * 6 + [60.5] * 10 + [60.7] * 2 + [60.0] * 3 + [60.7] * 3
    logic = MidiNoteLogic(cfg)
    flat = [m for ms in messages(logic, make_frames(track)) for m in ms]
    ons = [m.note for m in flat if m.type == "note_on"]
    assert ons == [60, 61]
    # a note is not changed before min_note_frames even when the pitch leaves at once
    logic = MidiNoteLogic(cfg)
    per = messages(logic, make_frames([60.0] + [62.0] * 6))
    on_frames = [i for i, ms in enumerate(per) for m in ms if m.type == "note_on"]
    assert on_frames == [0, 4]       # 3 frames away reached at frame 3, but the note is 5 frames old at 4


def test_release_bridges_short_dropouts():
    cfg = MidiConfig(onset_frames=1, min_note_frames=1, release_frames=2)
    logic = MidiNoteLogic(cfg)
    per = messages(logic, make_frames([62.0, 62.0, None, 62.0, 62.0, None, None, None]))
    kinds = [(i, m.type) for i, ms in enumerate(per) for m in ms if m.type in ("note_on", "note_off")]
    assert kinds == [(0, "note_on"), (6, "note_off")]


def test_velocity_map():
    cfg = MidiConfig(velocity_db=(-60.0, -6.0))
    assert cfg.velocity(-80.0) == 1 and cfg.velocity(-60.0) == 1
    assert cfg.velocity(-6.0) == 127 and cfg.velocity(0.0) == 127
    assert cfg.velocity(-33.0) == 64
    levels = np.linspace(-90, 10, 201)
    assert np.all(np.diff([cfg.velocity(x) for x in levels]) >= 0)
    assert MidiConfig(fixed_velocity=90).velocity(-80.0) == 90


def test_config_errors():
    with pytest.raises(ConfigError, match="channel"):
        MidiConfig(channel=17)
    with pytest.raises(ConfigError, match="bend_range"):
        MidiConfig(bend_range=0)
    with pytest.raises(ConfigError, match="velocity_db"):
        MidiConfig(velocity_db=(-6.0, -60.0))


def test_mpe_zone_and_member_channels():
    cfg = MidiConfig(mpe=True, mpe_members=3, bend_range=48, onset_frames=1, min_note_frames=1, change_frames=1)
    logic = MidiNoteLogic(cfg)
    head = [m.bytes() for m in logic.start()]
    assert head[:6] == [[0xB0, 101, 0], [0xB0, 100, 6], [0xB0, 6, 3], [0xB0, 38, 0], [0xB0, 101, 127], [0xB0, 100, 127]]
    # then bend range 2 on the master and 48 on each member (channels 2..4 = status 0xB1..0xB3)
    data_entry = [(b[0], b[2]) for b in head if b[1] == 6]
    assert data_entry == [(0xB0, 3), (0xB0, 2), (0xB1, 48), (0xB2, 48), (0xB3, 48)]
    per = messages(logic, make_frames([60.0, 60.0, 64.2, 64.2, None, 67.0, 55.0, 55.0, 59.0]))
    flat = [m for ms in per for m in ms]
    on_channels = [m.channel + 1 for m in flat if m.type == "note_on"]
    assert on_channels == [2, 3, 4, 2, 3]                     # round robin over the members
    bends = [m for m in flat if m.type == "pitchwheel"]
    assert bends and all(b.channel + 1 in (2, 3, 4) for b in bends)   # per-note bend on the note's channel
    stop = logic.stop()
    check_pairing(flat + stop)
    assert {m.channel + 1 for m in stop if m.type == "control_change" and m.control == 123} >= {1, 2, 3, 4}


@pytest.mark.parametrize("mpe", [False, True])
def test_random_tracks_never_leave_notes_hanging(mpe):
    """Property test over random pitch tracks (fixed seed): pairing, one voice, bend rate."""
    rng = np.random.default_rng(20251125 + mpe)
    for _ in range(40):
        n = int(rng.integers(20, 400))
        track: list[float | None] = []
        m = float(rng.uniform(40, 80))
        for _ in range(n):
            if rng.random() < 0.1:
                m = float(rng.uniform(40, 80))
            m += float(rng.normal(0, 0.3))
            track.append(None if rng.random() < 0.25 else m)
        cfg = MidiConfig(mpe=mpe, onset_frames=int(rng.integers(1, 4)), change_frames=int(rng.integers(1, 5)),
                         min_note_frames=int(rng.integers(1, 8)), release_frames=int(rng.integers(1, 4)))
        stop_at = int(rng.integers(0, n + 1))               # stop anywhere, also mid-note
        logic = MidiNoteLogic(cfg)
        per = messages(logic, make_frames(track, list(rng.uniform(-70, 0, n)))[:stop_at])
        for ms in per[1:]:
            bend_channels = [x.channel for x in ms if x.type == "pitchwheel"]
            assert len(bend_channels) == len(set(bend_channels)), "more than one bend per channel in a frame"
        check_pairing([x for ms in per for x in ms] + logic.stop())


def test_midi_file_sink_round_trip(tmp_path: Path):
    track, db = melody_track()
    frames = make_frames(track, db)
    out = tmp_path / "take.mid"
    sink = MidiFileSink(out)
    for f in frames:
        sink.send(f)
    sink.close()
    sink.close()
    mid = mido.MidiFile(out)
    msgs = [m for m in mid if not m.is_meta]
    expected = [m for _, m in frames_to_messages(frames)]
    assert [m.bytes() for m in msgs] == [m.bytes() for m in expected]
    check_pairing(msgs)
    first_on = next(m for m in mid.tracks[0] if m.type == "note_on")
    assert first_on.note == 60
    assert abs(mid.length - frames[-1].time) < 0.05


def test_match_port():
    ports = ["Midi Through:Midi Through Port-0 14:0", "FLUID Synth (123):Synth input port (123:0)", "probe:in"]
    assert match_port(ports, "probe:in") == 2
    assert match_port(ports, "fluid") == 1
    with pytest.raises(MidiPortError, match="no MIDI output port matches 'surge'.*FLUID Synth"):
        match_port(ports, "surge")
    with pytest.raises(MidiPortError, match="ambiguous"):
        match_port(ports, "i")


def test_choose_one_output():
    with pytest.raises(MidiPortError, match="choose one MIDI output"):
        MidiSink()
    with pytest.raises(MidiPortError, match="choose one MIDI output"):
        MidiSink(port_name="x", virtual=True)
    with pytest.raises(MidiPortError, match="unknown MIDI api"):
        MidiSink(virtual=True, api="oss")


def test_missing_alsa_sequencer_is_one_clear_line():
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer")
    with pytest.raises(MidiPortError) as info:
        MidiSink(virtual=True, api="alsa")
    assert "cannot open MIDI api 'alsa'" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------- JACK MIDI port


@pytest.fixture(scope="module")
def jack_server():
    """A private JACK server (dummy driver) for this module; skip when jackd is missing."""
    if shutil.which("jackd") is None or shutil.which("jack_connect") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2)")
    import rtmidi

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi built without JACK")
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    saved = os.environ.get("JACK_NO_START_SERVER")
    os.environ["JACK_NO_START_SERVER"] = "1"
    server = None
    try:
        try:  # a fixed name, never a pid: a killed run's slot is reclaimed by the next one
            server = JackServer(48000, 256, name="melodyrt-midi")  # JACK_DEFAULT_SERVER until close()
        except Unavailable as exc:
            pytest.skip(f"jackd did not start (dummy driver): {exc}")
        yield server.name
    finally:
        if server is not None:
            server.close()  # SIGTERM; SIGKILL and the slot reclaimed if it hangs
        if saved is None:
            os.environ.pop("JACK_NO_START_SERVER", None)
        else:
            os.environ["JACK_NO_START_SERVER"] = saved


_receivers = itertools.count(1)


def new_receiver() -> MidiReceiver:
    """A JACK MIDI input ``probeN:in`` on this module's server, in a child process
    (:mod:`jack_midi_rx` says why)."""
    return MidiReceiver(f"probe{next(_receivers)}")


@pytest.fixture
def receiver(jack_server):
    r = new_receiver()
    yield r
    r.close()


def play(sink, frames, hop_s: float = HOP_S) -> None:
    """Send frames at the real frame rate."""
    t0 = time.monotonic()
    for k, f in enumerate(frames):
        delay = t0 + k * hop_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sink.send(f)


def as_msgs(raw: list[list[int]]) -> list[mido.Message]:
    return [mido.Message.from_bytes(b) for b in raw]


@pytest.mark.jack
def test_jack_virtual_port_melody(receiver):
    track, db = melody_track()
    frames = make_frames(track, db)
    # the note logic's stream exactly: the safety net's repeats are tested at the end of the file
    sink = MidiSink(virtual=True, api="jack", client_name="mrt-a", virtual_port_name="out", note_off_repeat_ms=None)
    receiver.connect_from("mrt-a:out")
    time.sleep(0.05)
    play(sink, frames)
    sink.close()
    per_frame = messages(MidiNoteLogic(sink.config), frames)
    expected = [m.bytes() for ms in per_frame for m in ms]
    got = receiver.wait_for(len(expected) + 2)                # nothing sounds at the end: CC123 + CC121

    assert got[:6] == RPN_HEADER
    assert got[: len(expected)] == expected                   # JACK MIDI delivers the stream exactly
    assert got[len(expected):] == [[0xB0, 123, 0], [0xB0, 121, 0]]
    msgs = as_msgs(got)
    check_pairing(msgs)

    # Replay the received stream frame by frame: while a note sounds, note + bend is the sung pitch.
    note, bend = None, 8192
    k = 0
    checked = 0
    for f, ms in zip(frames, per_frame):
        for m in msgs[k:k + len(ms)]:
            if m.type == "note_on":
                note = m.note
            elif m.type == "note_off":
                note = None
            elif m.type == "pitchwheel":
                bend = m.pitch + 8192
        k += len(ms)
        assert sum(m.type == "pitchwheel" for m in ms) <= 1
        if note is not None and f.voiced:
            sung = 69 + 12 * math.log2(f.f0_hz / 440.0)
            heard = note + (bend - 8192) / 8192 * 2
            assert abs(heard - sung) * 100 < 50, f"frame {f.index}: heard {heard:.2f}, sung {sung:.2f}"
            checked += 1
    assert checked > 150

    ons = [m for m in msgs if m.type == "note_on"]
    assert [m.note for m in ons][0] == 60 and 67 in [m.note for m in ons] and ons[-1].note == 55
    by_note = {m.note: m.velocity for m in ons}
    assert by_note[55] < by_note[60] < by_note[67]            # -45 dB < -30 dB < -10 dB


@pytest.mark.jack
def test_jack_close_mid_note_twice_and_named_port(receiver):
    # Named port (substring of "probeN:in"), not virtual.
    sink = MidiSink(port_name=receiver.client, api="jack", channel=3)
    assert sink.port == receiver.port
    frames = make_frames([64.0] * 12, -20.0)
    play(sink, frames)
    assert sink.logic.held == 64
    sink.close()
    sink.close()
    sink.send(frames[-1])                                     # after close: ignored, no error
    got = receiver.wait_for(6 + 2 + 3)     # header, bend + note-on, release
    msgs = as_msgs(got)
    assert [m.bytes() for m in msgs[:6]] == [[0xB2, *b[1:]] for b in RPN_HEADER]
    assert msgs[-3].bytes() == [0x82, 64, 0]                  # the held note's note-off on channel 3 ...
    assert [m.bytes() for m in msgs[-2:]] == [[0xB2, 123, 0], [0xB2, 121, 0]]   # ... then CC123, CC121
    assert len(msgs) == 6 + 2 + 3                             # second close sent nothing
    check_pairing(msgs)


@pytest.mark.jack
def test_jack_unknown_port_lists_ports(receiver):
    with pytest.raises(MidiPortError, match=f"no MIDI output port matches 'no-such-synth'.*{receiver.port}"):
        MidiSink(port_name="no-such-synth", api="jack")


@pytest.mark.jack
def test_jack_garbage_collected_sink_releases_its_note(receiver):
    sink = MidiSink(port_name=receiver.port, api="jack")
    play(sink, make_frames([57.0] * 8, -20.0))
    del sink
    gc.collect()
    msgs = as_msgs(receiver.wait_for(6 + 2 + 3))
    check_pairing(msgs)
    assert msgs[-3].type == "note_off" and msgs[-3].note == 57


@pytest.mark.jack
def test_jack_signal_helper_releases_notes(receiver):
    import signal

    sink = MidiSink(port_name=receiver.port, api="jack")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with close_on_signals(sink):
            play(sink, make_frames([62.0] * 8, -20.0))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)                                   # the handler runs before this ends
    assert signal.getsignal(signal.SIGINT) is before
    msgs = as_msgs(receiver.wait_for(6 + 2 + 3))
    check_pairing(msgs)
    assert msgs[-3].type == "note_off" and msgs[-3].note == 62


@pytest.mark.jack
def test_port_errors_never_reach_the_worker(jack_server, receiver):
    import rtmidi

    sink = MidiSink(port_name=receiver.port, api="jack")
    play(sink, make_frames([60.0] * 6, -20.0))
    sink._on_rtmidi_error(rtmidi.ERRORTYPE_DRIVER_ERROR, "device went away")   # what RtMidi reports on ALSA
    assert not sink.alive
    for f in make_frames([61.0] * 5, -20.0, start=6):
        sink.send(f)                                          # dropped, no exception
    sink.close()
    sink.close()


@pytest.mark.jack
def test_stopped_jack_server_is_not_an_error(jack_server, monkeypatch):
    """A JACK server that dies mid-note: sends and close must not raise (RtMidi cannot tell)."""
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)   # what the end of the test restores
    try:
        lost = JackServer(48000, 256, name="melodyrt-midi-lost")  # the default server until close()
    except Unavailable as exc:
        pytest.skip(f"second jackd did not start: {exc}")
    try:
        sink = MidiSink(virtual=True, api="jack")
        monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
        play(sink, make_frames([60.0] * 6, -20.0))
    finally:
        lost.close()                                          # SIGTERM with the sink still connected
    for f in make_frames([60.0, 62.0, 62.0, 62.0, None, None], -20.0, start=6):
        sink.send(f)
    sink.close()


# ------------------------------------------------------- safety net: note-off repeat, rest CC123


@pytest.fixture
def timed_receiver(jack_server):
    r = new_receiver()     # every receiver keeps arrival times
    yield r
    r.close()


class LossyPort:
    """The sink's rtmidi port with the messages ``drop(data, k)`` picks (``k``: how many
    note-offs came before) thrown away: a receiver that missed the cycle that carried them."""

    def __init__(self, out, drop) -> None:
        self._port, self._drop, self.offs, self.dropped = out, drop, 0, []

    def send_message(self, data) -> None:
        data = list(data)
        if data[0] & 0xF0 == 0x80:
            self.offs += 1
            if self._drop(data, self.offs - 1):
                self.dropped.append(data)
                return
        self._port.send_message(data)

    def __getattr__(self, name):
        return getattr(self._port, name)


def note_events(raw: list[list[int]]) -> list[tuple[str, int]]:
    return [("on" if b[0] & 0xF0 == 0x90 and b[2] > 0 else "off", b[1]) for b in raw
            if b[0] & 0xF0 == 0x80 or b[0] & 0xF0 == 0x90]


def sounding_before_close(raw: list[list[int]]) -> set[tuple[int, int]]:
    """Notes sounding at the end of a stream taken before its closing burst (CC123 ends a channel)."""
    from test_faults import stuck_notes

    return stuck_notes(raw)


def test_safety_net_defaults_and_validation(tmp_path: Path):
    d = MidiConfig()
    assert d.note_off_repeat_ms == 25.0 and d.rest_all_notes_off_ms is None
    for bad in (dict(note_off_repeat_ms=-1.0), dict(note_off_repeat_ms=True), dict(rest_all_notes_off_ms=math.nan),
                dict(rest_all_notes_off_ms="200")):
        with pytest.raises(ConfigError, match="_ms must be a time >= 0"):
            MidiConfig(**bad)
    assert MidiConfig.from_settings(note_off_repeat_ms=0, rest_all_notes_off_ms=None).note_off_repeat_ms == 0
    # the note logic and MIDI files stay minimal: the settings only reach the port
    frames = make_frames(*melody_track())
    sink = MidiFileSink(tmp_path / "net.mid", note_off_repeat_ms=25.0, rest_all_notes_off_ms=50.0)
    for f in frames:
        sink.send(f)
    sink.close()
    got = [m.bytes() for m in mido.MidiFile(tmp_path / "net.mid") if not m.is_meta]
    assert got == [m.bytes() for _, m in frames_to_messages(frames)]


@pytest.mark.jack
def test_jack_note_off_is_sent_again_later(timed_receiver):
    rx = timed_receiver
    sink = MidiSink(port_name=rx.port, api="jack")            # the defaults: repeat after 25 ms, no rest CC123
    frames = make_frames([60.0] * 8 + [None] * 12, -20.0)
    play(sink, frames)
    assert sink.note_off_repeats == 1 and sink.rest_all_notes_off == 0
    sink.close()
    got = rx.wait_for(6 + 2 + 2 + 2)
    expected = [m.bytes() for ms in messages(MidiNoteLogic(sink.config), frames) for m in ms]
    offs = [i for i, b in enumerate(got) if b == [0x80, 60, 0]]
    assert len(offs) == 2, got
    assert got[:offs[1]] + got[offs[1] + 1:] == expected + [[0xB0, 123, 0], [0xB0, 121, 0]]   # one extra message
    with rx.lock:
        gap = rx.times[offs[1]] - rx.times[offs[0]]
    assert 0.020 <= gap < 0.100, f"repeat {gap * 1000:.1f} ms after the note-off"   # several JACK cycles later


@pytest.mark.jack
@pytest.mark.parametrize("repeat_ms", [25.0, None])
def test_jack_lost_note_off_is_recovered_by_the_repeat(receiver, repeat_ms):
    sink = MidiSink(port_name=receiver.port, api="jack", note_off_repeat_ms=repeat_ms)
    sink._out = lossy = LossyPort(sink._out, lambda data, k: k == 0)   # the first note-off is lost
    play(sink, make_frames([60.0] * 8 + [None] * 8 + [62.0] * 8 + [None] * 15, -20.0))
    time.sleep(0.1)
    with receiver.lock:
        before = [list(b) for b in receiver.got]
    sink.close()
    assert lossy.dropped == [[0x80, 60, 0]]
    if repeat_ms is None:                                     # what the soak saw: the note hangs
        assert sounding_before_close(before) == {(0, 60)}
        assert note_events(before) == [("on", 60), ("on", 62), ("off", 62)]
    else:
        assert sounding_before_close(before) == set()
        assert note_events(before) == [("on", 60), ("off", 60), ("on", 62), ("off", 62), ("off", 62)]
        assert sink.note_off_repeats == 2


@pytest.mark.jack
@pytest.mark.parametrize("repeat_ms", [25.0, 300.0])
def test_jack_same_pitch_retrigger_is_never_cut(receiver, repeat_ms):
    # onset_rest_frames=0: a confident frame right after the release re-triggers the same note
    # 10 ms after its note-off, while the note-off's repeat is still pending
    sink = MidiSink(port_name=receiver.port, api="jack", note_off_repeat_ms=repeat_ms, onset_rest_frames=0)
    frames = make_frames([60.0] * 6 + [None] * 2 + [60.0] * 8 + [None] * 40, -20.0)
    per = messages(MidiNoteLogic(sink.config), frames)
    ons = [i for i, ms in enumerate(per) if any(m.type == "note_on" for m in ms)]
    offs = [i for i, ms in enumerate(per) if any(m.type == "note_off" for m in ms)]
    assert ons == [0, 8] and offs == [7, 17]                  # the re-trigger follows its note-off by one frame
    play(sink, frames)
    sink.close()
    got = receiver.wait_for(6 + 2 + 2 + 2 + 2 + 2)
    # the pending repeat goes out before the re-trigger, never after it; the second note
    # sounds until its own note-off, then that one is repeated
    assert note_events(got) == [("on", 60), ("off", 60), ("off", 60), ("on", 60), ("off", 60), ("off", 60)], got
    assert sink.note_off_repeats == 2


@pytest.mark.jack
@pytest.mark.parametrize("repeat_ms", [0, None])
def test_jack_safety_net_off_sends_nothing_extra(receiver, repeat_ms):
    track, db = melody_track()
    frames = make_frames(track, db)
    sink = MidiSink(port_name=receiver.port, api="jack", note_off_repeat_ms=repeat_ms, rest_all_notes_off_ms=repeat_ms)
    play(sink, frames)
    sink.close()
    expected = [m.bytes() for ms in messages(MidiNoteLogic(sink.config), frames) for m in ms]
    got = receiver.wait_for(len(expected) + 2)
    assert got == expected + [[0xB0, 123, 0], [0xB0, 121, 0]]
    assert sink.note_off_repeats == 0 and sink.rest_all_notes_off == 0


@pytest.mark.jack
@pytest.mark.parametrize("mpe", [False, True])
def test_jack_all_notes_off_after_a_rest(timed_receiver, mpe):
    rx = timed_receiver
    # every note-off is lost (both copies): only the rest's CC123 can end the notes
    sink = MidiSink(port_name=rx.port, api="jack", rest_all_notes_off_ms=200.0, mpe=mpe, mpe_members=3)
    sink._out = LossyPort(sink._out, lambda data, k: True)
    frames = make_frames([60.0] * 8 + [None] * 30 + [62.0] * 8 + [64.0] * 8 + [None] * 10 + [65.0] * 8, -20.0)
    play(sink, frames)
    time.sleep(0.1)
    with rx.lock:
        before, times = [list(b) for b in rx.got], list(rx.times)
    assert sink.rest_all_notes_off == 1                       # once in the 300 ms rest, not in the 100 ms one
    sink.close()
    cc123 = [i for i, b in enumerate(before) if b[0] & 0xF0 == 0xB0 and b[1] == 123]
    channels = [before[i][0] & 0x0F for i in cc123]
    on_channels = sorted({b[0] & 0x0F for b in before if b[0] & 0xF0 == 0x90})
    assert channels == ([1] if mpe else [0])                  # the channels a note was sent on, before the rest
    assert on_channels == ([1, 2, 3] if mpe else [0])         # MPE: round robin over the 3 members
    first_on = next(i for i, b in enumerate(before) if b[0] & 0xF0 == 0x90)
    second_on = next(i for i, b in enumerate(before) if b[0] & 0xF0 == 0x90 and b[1] == 62)
    assert first_on < cc123[0] < second_on                    # in the rest, never while a note sounds
    # 200 ms of stream time after the note-off's frame: the note-off itself was lost, so from the
    # note-on (8 frames before it, 10 ms apart at the real rate)
    rest = times[cc123[0]] - times[first_on]
    assert 0.25 <= rest < 0.50, f"CC123 {rest * 1000:.0f} ms after the note-on"
    # what still sounds before the close: the notes after the rest (their note-offs lost, no long rest since)
    left = sounding_before_close(before)
    assert (channels[0], 60) not in left and len(left) == 3, left


@pytest.mark.jack
def test_jack_rest_all_notes_off_ends_notes_not_the_next_one(receiver):
    sink = MidiSink(port_name=receiver.port, api="jack", rest_all_notes_off_ms=50.0, note_off_repeat_ms=None)
    frames = make_frames(([60.0] * 8 + [None] * 10) * 3, -20.0)
    play(sink, frames)
    sink.close()
    expected = [m.bytes() for ms in messages(MidiNoteLogic(sink.config), frames) for m in ms]
    got = receiver.wait_for(len(expected) + 3 + 2)
    assert sink.rest_all_notes_off == 3
    cc = [i for i, b in enumerate(got) if b == [0xB0, 123, 0]]
    offs = [i for i, b in enumerate(got) if b == [0x80, 60, 0]]
    ons = [i for i, b in enumerate(got) if b[0] == 0x90]
    assert len(cc) == 4 and len(offs) == 3 and len(ons) == 3  # three rests and the close burst
    for k in range(3):                                        # after each note-off, before the next note-on
        assert offs[k] < cc[k] < (ons[k + 1] if k < 2 else cc[3])

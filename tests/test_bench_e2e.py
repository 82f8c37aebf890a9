"""`melodyrt bench e2e --quick` on a private JACK dummy server: the machinery and report fields;
the out-of-process JACK probe (bench/jack_probe.py) it and the live tests play through.

Never asserts latencies (an untrained model; a loaded machine). Skips with the reason when
jackd, JACK-Client or PortAudio is missing.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from melodyrt.rt.cli import main

pytestmark = pytest.mark.jack


def test_e2e_quick_through_jack(untrained_bundle, tmp_path, capsys):
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
    pytest.importorskip("jack", reason="JACK-Client not installed")
    out = tmp_path / "e2e"
    code = main(["bench", "e2e", "--quick", "--model", str(untrained_bundle.root), "--out", str(out)])
    printed = capsys.readouterr().out
    if "cannot run here" in printed:
        pytest.skip(printed.strip().splitlines()[-1])
    assert code == 0
    r = json.loads((out / "e2e_bench.json").read_text())
    assert r["quick"] is True and r["settings"]["phrases"] == 10
    for kind in ("midi_note_on", "midi_pitch_change", "osc_note_on", "osc_pitch_change"):
        v = r["latency"][kind]
        assert v["events"] == 10 and v["answered"] + v["missed"] == 10
        assert all(x >= 0 for x in v["latencies_ms"]), "an answer never precedes its acoustic event"
    assert r["osc_datagrams"] > 100, "one OSC bundle per 10 ms frame"
    assert r["midi_messages"] > 0 and r["algorithmic"]["cfp_window"]["ms"] > 0
    assert r["probe_slipped_frames"] >= 0 and "slope ms/min" in (out / "e2e_bench.md").read_text()
    # the probe (out of process) kept everything; jackd's log was read for the clients it blamed
    assert r["probe_lost"] == {"midi": 0, "osc": 0, "cycles_unlogged": 0}
    assert set(r["jackd"]) == {"xruns", "blamed", "process_errors"} and "jackd: " in (out / "e2e_bench.md").read_text()
    assert (out / "e2e_hist.png").is_file() and "JACK dummy driver" in (out / "e2e_bench.md").read_text()
    assert r["offline_note_on"]["events"] == 10


def test_analyse_matches_arrivals_to_events():
    """Known arrivals: note-on 5 ms after the onset; the new note 12 ms after the step."""
    import mido
    from pythonosc.osc_message_builder import OscMessageBuilder

    from melodyrt.bench.e2e_bench import Phrase, analyse

    rate = 48000
    ph = [Phrase(onset=4800, step=9600, end=14400, first=60, second=64)]
    on = mido.Message("note_on", note=60, velocity=90).bytes()
    off = mido.Message("note_off", note=60).bytes()
    on2 = mido.Message("note_on", note=64, velocity=90).bytes()
    start = 1000
    midi = [(start + 4800 + 240, bytes(on)), (start + 9600 + 576, bytes(off)), (start + 9600 + 576, bytes(on2))]
    b = OscMessageBuilder("/melodyrt/f0")
    b.add_arg(329.63, "f")
    osc = [(start + 9600 + 480, b.build().dgram)]
    res = analyse(ph, start, midi, osc, rate)
    assert res["midi_note_on"]["latencies_ms"] == [5.0]
    assert res["midi_pitch_change"]["latencies_ms"] == [12.0]
    assert res["osc_pitch_change"]["latencies_ms"] == [10.0]
    assert res["osc_note_on"]["missed"] == 1


def test_events_are_placed_on_the_probe_timeline_across_a_missed_cycle():
    """A probe that misses one 128-frame cycle plays the rest of the signal 128 frames late:
    the events after the gap must be placed there, or every later latency reads 2.67 ms too
    long (the drift the bench used to report)."""
    import mido

    from melodyrt.bench.e2e_bench import Phrase, Timeline, analyse

    rate = 48000
    # cycles of 128 frames from frame 1000; the cycle at 1000 + 128 * 50 was missed
    frames = np.array([1000 + 128 * i for i in range(200) if i != 50], np.int64)
    positions = np.array([128 * i if i < 50 else 128 * (i - 1) for i in range(200) if i != 50], np.int64)
    tl = Timeline(frames, positions)
    assert tl.slipped_frames == 128
    assert tl.frame_of(100) == 1100 and tl.frame_of(128 * 60) == 1000 + 128 * 61
    ph = [Phrase(onset=480, step=2400, end=4800, first=60, second=64),
          Phrase(onset=9600, step=12000, end=14400, first=62, second=66)]
    on = mido.Message("note_on", note=60, velocity=90).bytes()
    on2 = mido.Message("note_on", note=62, velocity=90).bytes()
    # both note-ons arrive 10 ms (480 frames) after their onsets left the probe
    midi = [(tl.frame_of(480) + 480, bytes(on)), (tl.frame_of(9600) + 480, bytes(on2))]
    res = analyse(ph, tl, midi, [], rate)
    assert res["midi_note_on"]["latencies_ms"] == [10.0, 10.0]
    assert res["midi_note_on"]["slope_ms_per_min"] == pytest.approx(0.0, abs=1e-9)
    # the gapless assumption would have read the second one 128 frames late
    naive = analyse(ph, 1000, midi, [], rate)
    assert naive["midi_note_on"]["latencies_ms"][1] == pytest.approx(10.0 + 128 / 48, abs=1e-3)


def test_timeline_places_a_cycle_run_twice_in_one_server_cycle_where_the_signal_resumed():
    """JACK2 after an xrun: the late probe runs twice back to back and reads the same newest
    frame time (steps 768, 0). Only the later buffer is heard, so the earlier cycle's
    samples belong where the signal resumed, and no sample is placed after a later one."""
    from melodyrt.bench.e2e_bench import Timeline

    frames = np.array([0, 256, 1024, 1024, 1280], np.int64)
    positions = np.array([0, 256, 512, 768, 1024], np.int64)
    tl = Timeline(frames, positions)
    assert tl.overwritten_cycles == 1
    assert tl.frame_of(300) == 300  # before the xrun: as played
    assert tl.frame_of(512) == tl.frame_of(700) == 1024  # overwritten: heard from the next cycle
    assert tl.frame_of(800) == 1024 + 32 and tl.frame_of(1100) == 1280 + 76
    assert tl.slipped_frames == 256
    assert Timeline(np.array([0, 256, 512]), np.array([0, 256, 512])).overwritten_cycles == 0


def test_drift_reports_first_last_and_slope():
    from melodyrt.bench.e2e_bench import drift

    t = np.arange(60.0)  # one event a second for a minute
    d = drift(t, 20.0 + 0.05 * t)  # +3 ms over the minute
    assert d["slope_ms_per_min"] == pytest.approx(3.0)
    assert d["first_p50_ms"] == pytest.approx(20.0 + 0.05 * 9.5)
    assert d["last_p50_ms"] == pytest.approx(20.0 + 0.05 * 49.5)
    assert drift(np.zeros(2), np.array([5.0, 7.0]))["slope_ms_per_min"] == 0.0


def test_drift_slope_ignores_a_host_burst_but_not_a_backlog():
    from melodyrt.bench.e2e_bench import drift, theil_sen_slope

    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0.0, 600.0, 200))  # 200 events over 10 minutes
    flat = 33.0 + rng.normal(0.0, 2.0, t.size)
    burst = flat.copy()
    burst[150:175] += 180.0  # an xrun storm late in the run: 25 events 180 ms late
    d = drift(t, burst)
    assert d["ls_slope_ms_per_min"] > 1.0  # least squares reads the storm as drift
    assert abs(d["slope_ms_per_min"]) < 0.3  # the median of pair slopes does not
    backlog = flat + 2.0 * t / 60.0  # a queue that grows 2 ms a minute
    assert drift(t, backlog)["slope_ms_per_min"] == pytest.approx(np.polyfit(t / 60.0, backlog, 1)[0], rel=0.15)
    assert drift(t, backlog)["slope_ms_per_min"] > 1.0  # a growing backlog still fails --check
    # a soak run's thousands of events: sampled pairs give the same answer, in bounded memory
    tt = np.linspace(0.0, 3600.0, 5000)
    assert theil_sen_slope(tt / 60.0, 20.0 + 0.02 * tt / 60.0 + rng.normal(0, 1, tt.size)) == pytest.approx(0.02, abs=0.01)


def test_jackd_xruns_names_the_blamed_clients():
    from melodyrt.bench.e2e_bench import blame_text, jackd_xruns

    log = ("JackEngine::XRun: client = mrt-probe was not finished, state = Running\n"
           "JackAudioDriver::ProcessGraphAsyncMaster: Process error\n"
           "JackTimedDriver::Process XRun = 25 usec\n"
           "JackEngine::XRun: client = PortAudio was not finished, state = Triggered\n"
           "JackAudioDriver::ProcessGraphAsyncMaster: Process error\n"
           "JackEngine::XRun: client = mrt-probe was not finished, state = Triggered\n")
    x = jackd_xruns(log)
    assert x == {"xruns": 3, "blamed": {"mrt-probe": 2, "PortAudio": 1}, "process_errors": 2}
    assert blame_text(x) == "jackd: 3 (PortAudio 1, mrt-probe 2)"
    assert jackd_xruns("") == {"xruns": 0, "blamed": {}, "process_errors": 0}


@pytest.fixture
def private_jack():
    """A private JACK dummy server (256-frame periods) for the probe's own tests."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
    pytest.importorskip("jack", reason="JACK-Client not installed")
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    try:  # melodyrt-probe-test, or -2 ... when that runs already (free_server_name): never a pid
        js = JackServer(48000, 256, name="melodyrt-probe-test")
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield js
    finally:
        js.close()


@pytest.mark.jack
def test_probe_process_records_midi_osc_and_its_timeline_exactly(private_jack, tmp_path):
    """The out-of-process probe: every MIDI event and OSC datagram in order, byte for byte,
    with non-decreasing JACK stamps; a per-cycle timeline covering the whole signal."""
    import socket

    import rtmidi

    from melodyrt.bench.e2e_bench import Timeline
    from melodyrt.bench.jack_probe import ProbeProcess

    signal = np.arange(48000, dtype=np.float32) / 48000  # 1 s
    sent_midi = [[0x90 | (i % 16), 40 + i % 50, 1 + i % 120] for i in range(300)]
    sent_osc = [b"/x\x00\x00,i\x00\x00" + i.to_bytes(4, "big") for i in range(300)]
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="mrt-src")  # its JACK thread is C++: no GIL
    out.open_virtual_port("o")
    with ProbeProcess(signal, tmp_path, name="mrt-probe-t", osc=True) as probe:
        assert probe.period == 256 and probe.osc_port
        assert probe.ports("midi", "out", "mrt-src") == ["mrt-src:o"]
        probe.connect("mrt-src:o", "midi_in")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.play()
        for m, d in zip(sent_midi, sent_osc):
            out.send_message(m)
            sock.sendto(d, ("127.0.0.1", probe.osc_port))
            time.sleep(0.002)  # a real rate: < 150 messages per period, no UDP burst
        assert probe.wait_done(30.0)
        time.sleep(0.1)
        got = probe.finish()
        sock.close()
    out.close_port()
    del out
    assert got.midi_lost == 0 and got.osc_lost == 0
    assert [d for _, d in got.osc] == sent_osc
    heard_midi = [list(d) for _, d in got.midi]
    if got.xruns == 0:
        assert heard_midi == sent_midi
    else:
        # an xrun can drop a cycle of the *sender's* JACK MIDI buffer (JACK2 runs a late
        # client twice in one server cycle): what arrives is still in order and byte exact
        it = iter(sent_midi)
        assert all(m in it for m in heard_midi) and len(heard_midi) >= len(sent_midi) - 20 * got.xruns
    for events in (got.midi, got.osc):
        stamps = np.array([f for f, _ in events])
        assert np.all(np.diff(stamps) >= 0) and stamps[0] >= got.start_frame - 256 and stamps[-1] <= got.end_frame
    assert got.played == signal.shape[0] and got.cycles_unlogged == 0
    pos = got.cycle_pos
    assert pos[0] == 0 and np.all(np.diff(pos) == 256) and pos[-1] + 256 >= signal.shape[0]
    steps = np.diff(got.cycle_frame)
    tl = Timeline(got.cycle_frame, got.cycle_pos)
    # a late cycle shows as a larger step; a smaller one only where JACK2 ran the probe twice
    # in one server cycle after an xrun, and the timeline counts it
    assert np.all(steps >= 0) and np.count_nonzero(steps < 256) == tl.overwritten_cycles
    assert tl.overwritten_cycles == 0 or got.xruns > 0
    heard = [tl.frame_of(int(p)) for p in range(0, signal.shape[0], 64)]
    assert np.all(np.diff(heard) >= 0)
    assert tl.frame_of(0) == got.start_frame
    assert tl.slipped_frames == int(got.cycle_frame[-1] - got.cycle_frame[0]) - int(pos[-1])
    assert got.timing["callbacks"] > pos.shape[0]


@pytest.mark.jack
def test_probe_process_exits_when_its_parent_goes_away(private_jack, tmp_path):
    """stdin closed (the parent died): the probe exits by itself and still writes its record."""
    from melodyrt.bench.jack_probe import ProbeProcess, ProbeResult

    probe = ProbeProcess(np.zeros(4800, np.float32), tmp_path, name="mrt-probe-orphan", loop=True)
    try:
        probe.play()
        while probe.status()["pos"] == 0:
            time.sleep(0.01)
        probe.proc.stdin.close()
        assert probe.proc.wait(timeout=20) == 0
    finally:
        probe.close()
    got = ProbeResult.load(probe.out_path)
    assert got.played > 0 and got.start_frame is not None


def test_phrases_fall_at_every_phase_of_the_frame_grid():
    """Onsets and steps spread over a whole 10 ms hop, so the hop wait is averaged, not one constant per run."""
    import numpy as np

    from melodyrt.bench.e2e_bench import make_signal

    rate = 48000
    x, phrases = make_signal(200, rate)
    hop = rate // 100
    for events in ([p.onset for p in phrases], [p.step for p in phrases]):
        counts = np.histogram(np.asarray(events) % hop, bins=5, range=(0, hop))[0]
        assert counts.min() >= 25, counts                        # 40 expected per fifth of a hop
    # the voice starts where the phrase says: noise floor (-50 dBFS) up to the onset, the
    # 30 ms attack well above it 5-10 ms later
    ms = rate // 1000
    for p in phrases[:20]:
        before = x[p.onset - 5 * ms : p.onset]
        after = x[p.onset + 5 * ms : p.onset + 10 * ms]
        assert np.sqrt(np.mean(before**2)) < 0.005 < 0.02 < np.sqrt(np.mean(after**2)), p


def test_offline_note_on_times_the_shipped_models_decision():
    """Fed from memory, the shipped model decides every note-on after its onset, within the rule's reach."""
    import numpy as np

    from melodyrt.bench.e2e_bench import make_signal, offline_note_on
    from melodyrt.rt.bundle import load_bundle

    bundle = load_bundle()
    x, phrases = make_signal(12, 48000, seed=3)
    r = offline_note_on(bundle, x, phrases, 48000, 128)
    assert r["answered"] == r["events"] == 12
    d = np.asarray(r["decided_ms"])
    # never before the onset plus the resampler's delay; a voiced frame is due within a few hops
    assert d.min() > 1.5 and d.max() < 80.0, d
    assert r["p50_ms"] == np.percentile(d, 50)
    # a signal with no voice decides nothing
    silent = offline_note_on(bundle, np.zeros_like(x), phrases, 48000, 128)
    assert silent["answered"] == 0 and "p50_ms" not in silent


def test_fast_onset_decides_every_note_on_from_a_cue_before_the_frames_would():
    """With fast_onset the shipped model's note-ons come from onset cues, each decided earlier
    (in stream samples) than the frame rule decides the same onset, and every cue is confirmed."""
    import numpy as np

    from melodyrt.bench.e2e_bench import make_signal, offline_note_on
    from melodyrt.rt.bundle import load_bundle

    bundle = load_bundle()
    x, phrases = make_signal(12, 48000, seed=4)
    frames = offline_note_on(bundle, x, phrases, 48000, 128)
    cued = offline_note_on(bundle, x, phrases, 48000, 128, fast_onset=True)
    assert cued["answered"] == frames["answered"] == 12
    assert cued["by_cue"] == cued["cues_confirmed"] == 12 and cued["cues_dropped"] == 0
    fast, slow = np.asarray(cued["decided_ms"]), np.asarray(frames["decided_ms"])
    assert np.all(fast > 1.5) and np.all(fast + 5.0 < slow), (fast, slow)   # sooner on every onset, never before it
    assert "by_cue" not in frames


def test_check_blames_the_offline_decision_not_fixed_stages():
    """--check splits an over-budget note-on into the offline decision and what live adds."""
    from melodyrt.bench.e2e_bench import e2e_check_notes

    algo = {k: {"ms": v} for k, v in (("cfp_window", 8.0), ("resampler", 1.0), ("model_look_ahead", 0.0),
                                       ("decoder_smoothing", 0.0))}
    budget = {"e2e_note_on_p50_ms": 15.0, "e2e_note_on_p99_ms": 20.0}
    measured = {"e2e_note_on_p50_ms": 33.0, "e2e_note_on_p99_ms": 44.0}
    result = {"algorithmic": algo, "offline_note_on": {"p50_ms": 31.0, "p99_ms": 41.0}}
    p50, p99 = e2e_check_notes(result, measured, budget)
    assert "note-on decision (offline" in p50 and "alone (31.00 ms) exceeds the 15 ms goal" in p50
    assert "live buffering, compute and transport 2.00 ms" in p50
    assert "alone (41.00 ms)" in p99 and "transport 3.00 ms" in p99
    # a decision within the goal leaves the live part to blame, never as "unreachable"
    fast = {"algorithmic": algo, "offline_note_on": {"p50_ms": 10.0, "p99_ms": 12.0}}
    (p50,) = e2e_check_notes(fast, {"e2e_note_on_p50_ms": 30.0}, budget)
    assert "largest is the live buffering" in p50 and "exceeds" not in p50
    # no offline figure: the design's algorithmic delays stand in for the decision
    (p50,) = e2e_check_notes({"algorithmic": algo}, {"e2e_note_on_p50_ms": 33.0}, budget)
    assert "algorithmic delay" in p50 and "live buffering, compute and transport 24.00 ms" in p50

"""The live path on real audio: JACK's dummy driver, a JACK client playing a known tone into
the tracker's capture port (see ../shared/docs/realtime-testing.md).

A private JACK server (``jackd -n melodyrt-test -d dummy -r 48000 -p 1024``, the e2e bench's
``jack_rig``; ``melodyrt-test-2`` ... when that name runs already) is started by the fixture
when jackd is installed, so a JACK server already running on the machine (or another test
run's) is left alone. PortAudio only looks for JACK when it initialises, so the
fixture re-initialises it after the server is up, and terminates it before the server stops
(otherwise the process aborts in pa_jack.c).

The tone comes from :mod:`melodyrt.bench.jack_probe`, a JACK client in a process of its own:
an in-process Python client needs this process's GIL inside JACK's real-time thread, so any
GIL hold here (the tracker, a garbage collection) made it late, and jackd's xrun notification
then reached the tracker's stream as an overflow it did not cause.

These tests check correctness (bit-exact samples, frame continuity, timestamps), not latency,
so the server runs 1024-frame periods (21 ms), which lets them demand zero overflows: on the
loaded 2-core test machine every JACK client now and then starts a cycle late, whoever runs
it (at load 6-9: a gap over 5.3 ms, one 256-frame period, about every 40 s, up to 7.5 ms;
the soak bench once saw 20 ms), and a cycle late by more than a period is an xrun of the whole
graph. Both 256 and 1024 passed 10 runs in a row from a fresh clone; 1024 keeps the margin.
Timing at small periods is measured by ``melodyrt bench e2e`` and ``bench soak``.
"""

from __future__ import annotations

import re
import shutil
import time

import numpy as np
import pytest


pytestmark = pytest.mark.jack

SERVER = "melodyrt-test"
RATE, PERIOD = 48000, 1024  # correctness, not latency: see the module docstring


@pytest.fixture(scope="module")
def jack_server():
    """A private JACK server on the dummy driver, with PortAudio and JACK-Client ready: the
    bench's :func:`~melodyrt.bench.e2e_bench.jack_rig` (PortAudio re-initialised on it and
    terminated before it stops; a clean stop, a dead server's slot reclaimed)."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install jackd2 libportaudio2)")
    jack = pytest.importorskip("jack", reason="JACK-Client not installed (pip install 'melodyrt[dev]')")
    from melodyrt.bench.e2e_bench import Unavailable, jack_rig

    try:
        with jack_rig(RATE, PERIOD, name=SERVER):  # libjack (PortAudio, JACK-Client) connects here
            yield jack
    except Unavailable as exc:
        pytest.skip(str(exc))


def test_frames_arrive_with_sane_timestamps_and_nothing_lost(jack_server, untrained_bundle, list_sink, tmp_path):
    from melodyrt.bench.jack_probe import ProbeProcess
    from melodyrt.rt.source import AudioSource, SourceConfig, resolve_input
    from melodyrt.rt.tracker import Tracker

    cfg = SourceConfig(device="system", rate=RATE, blocksize=128)
    device, rate = resolve_input(cfg)
    assert "JACK" in device["hostapi"] and rate == RATE
    tracker = Tracker(rate, untrained_bundle, backend="ort")
    sink = list_sink
    source = AudioSource(tracker, [sink], cfg, device)
    t = np.arange(RATE) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 400.0 * t)  # whole cycles per 10 ms hop: a steady RMS
    # The feeder: plays the tone looped into the tracker's capture port, from its own process.
    feeder = ProbeProcess(tone.astype(np.float32), tmp_path, name="melodyrt-feeder", loop=True)
    try:
        source.start()  # warms the tracker up, then opens the stream
        port = feeder.capture()
        feeder.play()
        time.sleep(2.0)
        stats = source.stop()
        fed = feeder.finish()
    finally:
        feeder.close()
        source.stop()
    frames = sink.frames
    assert port.startswith("PortAudio") and sink.closed == 1  # stop() closes every sink exactly once
    # Nothing may be lost: the worker keeps up, so the ring never drops a sample, and with no
    # JACK client of the test in this process nothing here makes the graph late.
    assert stats.dropped_samples == 0, (stats, source.status_log)
    assert stats.overflows == 0, (stats, source.status_log, fed.xruns, fed.timing)
    assert stats.sink_errors == 0
    assert fed.played > RATE and fed.start_frame is not None
    assert 170 <= len(frames) <= 230, stats
    assert [f.index for f in frames] == list(range(len(frames)))
    samples = np.array([f.sample for f in frames])
    assert np.all(np.diff(samples) == 480)
    assert samples[-1] < tracker.samples_in  # nothing from the future
    # every frame left the worker D + hop wait after the audio it describes
    report = source.latency()
    assert report.algorithmic <= stats.lag_mean <= report.algorithmic + report.hop_wait_worst + 1
    assert stats.lag_max <= report.algorithmic + report.hop_wait_worst + 1
    # the tone arrived bit-exact: once it plays, every frame carries its RMS
    level = 20 * np.log10(0.3 / np.sqrt(2))
    loud = np.array([f.loudness_db for f in frames])
    playing = np.flatnonzero(np.abs(loud - level) < 0.05)
    assert playing.size > 100
    assert np.all(np.abs(loud[playing[0] + 1 :] - level) < 0.05)


def test_cli_live_on_jack_runs_and_reports(jack_server, untrained_bundle, capsys):
    from melodyrt.rt.cli import main

    code = main(["live", "--device", "system", "--seconds", "1", "--every", "25",
                 "--model", str(untrained_bundle.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "JACK Audio Connection Kit" in out and " 0 dropped" in out
    overflows = re.search(r"(\d+) overflow\(s\)", out)
    assert overflows and int(overflows.group(1)) == 0, out  # see the test above
    assert "hop wait, worst" in out and "measured: frames left the tracker" in out


def test_devices_lists_the_jack_input(jack_server, capsys):
    from melodyrt.rt.cli import main

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "system" in out and "JACK" in out


def test_missing_device_is_one_clear_line(jack_server, untrained_bundle, capsys):
    from melodyrt.rt.cli import main

    code = main(["live", "--device", "no-such-microphone", "--seconds", "1", "--model", str(untrained_bundle.root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("melodyrt: error: no input device matches 'no-such-microphone'") and "system" in err[0]


_LATE_SERVER_SCRIPT = """
import os, sys
import sounddevice as sd
from melodyrt.rt.source import input_devices

def jack():
    return [d["name"] for d in input_devices(rescan_s=float(sys.argv[1])) if "JACK" in d["hostapi"]]

print("ready", flush=True)
os.environ["JACK_DEFAULT_SERVER"] = sys.stdin.readline().strip()   # the server is up now
print("as initialised:", jack(), flush=True)
sys.argv[1] = "5"
print("re-scanned:", jack(), flush=True)
sd._terminate()   # before the server stops
"""


def test_input_devices_rescans_when_portaudio_missed_the_jack_server(tmp_path):
    """PortAudio initialised before the server was up (or while it was too busy to answer)
    has no JACK host API; :func:`input_devices` initialises it again when a server runs."""
    import subprocess
    import sys

    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install jackd2 libportaudio2)")
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    env = {k: v for k, v in __import__("os").environ.items() if k != "JACK_DEFAULT_SERVER"}
    env["JACK_DEFAULT_SERVER"] = "melodyrt-none"   # no server of this name: PortAudio starts without JACK
    proc = subprocess.Popen([sys.executable, "-c", _LATE_SERVER_SCRIPT, "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        try:
            server = JackServer(RATE, PERIOD, name="melodyrt-late", default=False)
        except Unavailable as exc:
            pytest.skip(str(exc))
        try:
            proc.stdin.write(server.name + "\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=60)
        finally:
            server.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "as initialised: []", out     # what PortAudio alone sees: no JACK device
    assert lines[1].startswith("re-scanned: [") and lines[1] != "re-scanned: []", out + err


class CueRecorder:
    """A sink that also takes onset cues: records both in the order the worker delivers them."""

    latency_samples = 0

    def __init__(self) -> None:
        self.events: list = []
        self.closed = 0

    def send(self, frame) -> None:  # noqa: ANN001
        self.events.append(frame)

    def cue(self, cue) -> None:  # noqa: ANN001
        self.events.append(cue)

    def close(self) -> None:
        self.closed += 1


def test_onset_cues_reach_the_sinks_between_frames(jack_server, untrained_bundle, list_sink, tmp_path):
    from melodyrt.bench.e2e_bench import make_signal
    from melodyrt.bench.jack_probe import ProbeProcess
    from melodyrt.rt.frames import OnsetCue, PitchFrame
    from melodyrt.rt.source import AudioSource, SourceConfig, resolve_input
    from melodyrt.rt.tracker import Tracker

    cfg = SourceConfig(device="system", rate=RATE, blocksize=128)
    device, rate = resolve_input(cfg)
    tracker = Tracker(rate, untrained_bundle, backend="ort")
    rec = CueRecorder()
    source = AudioSource(tracker, [rec, list_sink], cfg, device)   # list_sink: frames only, no cue()
    phrases_signal, phrases = make_signal(3, RATE, seed=5)
    feeder = ProbeProcess(phrases_signal, tmp_path, name="melodyrt-cues")
    try:
        source.start()
        feeder.capture()
        feeder.play()
        feeder.wait_done(phrases_signal.shape[0] / RATE + 5.0)
        time.sleep(0.3)
        stats = source.stop()
        fed = feeder.finish()
    finally:
        feeder.close()
        source.stop()
    assert stats.sink_errors == 0 and fed.start_frame is not None
    frames = [e for e in rec.events if isinstance(e, PitchFrame)]
    cues = [(k, e) for k, e in enumerate(rec.events) if isinstance(e, OnsetCue)]
    assert frames == list_sink.frames                  # the same frames to every sink
    assert len(cues) == len(phrases) == 3              # one cue per sung onset, none in the rests
    for k, c in cues:
        assert sum(isinstance(e, PitchFrame) for e in rec.events[:k]) == c.index   # in stream order
    heard = sorted(69 + 12 * np.log2(c.f0_hz / 440.0) for _, c in cues)
    assert np.allclose(heard, sorted(p.first for p in phrases), atol=0.5)

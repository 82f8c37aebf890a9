"""Faults provoked for real (issue 14, item 4): what ``melodyrt live`` and the runtime survive.

Every live fault runs ``melodyrt live`` as a subprocess (an abort or a hang must not take
pytest down) on private JACK servers (dummy driver). Each stream records from its own JACK
client ("feeder"): PortAudio lists every JACK client with output ports as an input device,
so ``--device mrt-feedN`` is a microphone the test controls and can make vanish. MIDI goes
over JACK MIDI to python-rtmidi receivers in child processes (:mod:`jack_midi_rx`), OSC over
UDP loopback.

- the JACK server killed mid-stream (SIGKILL and SIGTERM), the capture device's JACK client
  closing, a MIDI receiver closing, an OSC target that refuses, NaN/inf/DC audio: run
  concurrently by one module fixture (:func:`live_faults`), each test checks its scenario;
- SIGINT/SIGTERM at random moments: a seeded sample of ``MELODYRT_SIGNAL_TRIES`` (default
  12) tries in 3 parallel lanes; ``MELODYRT_SIGNAL_TRIES=100`` runs the full trial;
- offline: hostile audio through ``transcribe_signal`` and the sinks; corrupt model folders,
  and proof that the runtime never unpickles (or even opens) a checkpoint.

Two limits of JACK2 shape the set-up. Its libjack serves one server per process, so every
JACK client here (feeders, MIDI receivers) runs in a child process, and the receivers share
one private server (:func:`shared_jack`) that is never killed. And its registry keeps
at most 8 servers, and a server killed with SIGKILL keeps its slot until a server of the
same name starts again: both servers have fixed names (the bench's
:class:`~melodyrt.bench.e2e_bench.JackServer`, never a pid), the killed one is restarted
under its name (which takes the slot over) and every server is stopped cleanly at the end,
a dead one's slot reclaimed (tests/test_jack_slots.py checks that).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pytest

from melodyrt.rt.bundle import DEFAULT_BUNDLE, load_bundle, sha256_of

from jack_midi_rx import MidiReceiver

if TYPE_CHECKING:
    from melodyrt.bench.e2e_bench import JackServer

SCRIPT = Path(sys.executable).parent / "melodyrt"
RATE, PERIOD = 48000, 256
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ helpers


def tone(seconds: float, f0: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A looped test signal: whole periods of JACK buffers (float32)."""
    n = int(round(seconds * RATE / PERIOD)) * PERIOD
    return (amp * np.sin(2 * np.pi * f0 * np.arange(n) / RATE)).astype(np.float32)


def need_jack() -> None:
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
    pytest.importorskip("jack", reason="JACK-Client not installed (pip install 'melodyrt[dev]')")
    import rtmidi

    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi built without JACK")
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    if not (DEFAULT_BUNDLE / "model.json").exists():
        pytest.skip(f"no packaged model at {DEFAULT_BUNDLE}")


def private_server(name: str) -> "JackServer":
    """A private ``jackd -d dummy`` under the fixed base ``name`` (the bench's
    :class:`~melodyrt.bench.e2e_bench.JackServer`: the first free name of a short fixed list,
    a clean stop, the slot of a killed server reclaimed); skip when it does not start."""
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    try:
        return JackServer(RATE, PERIOD, name=name, default=False)  # every client here names its server
    except Unavailable as exc:
        pytest.skip(str(exc))


FEEDER_SCRIPT = r"""
import sys, threading, jack, numpy as np
server, name, mode = sys.argv[1:4]
n, rate = %d, %d
sig = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(n) / rate)).astype(np.float32)
if mode == "hostile":  # a DC offset, a NaN burst, inf samples: %d non-finite samples per loop
    sig += np.float32(0.2)
    sig[n // 4:n // 4 + 300] = np.nan
    sig[n // 2:n // 2 + 7] = np.inf
    sig[3 * n // 4:3 * n // 4 + 5] = -np.inf
client = jack.Client(name, servername=server, no_start_server=True, use_exact_name=True)
port = client.outports.register("out")
pos = [0]
@client.set_process_callback
def process(frames):
    i = pos[0] %% n
    port.get_array()[:] = sig[i:i + frames]
    pos[0] += frames
client.set_shutdown_callback(lambda status, reason: None)
client.activate()
print("ready", flush=True)
threading.Event().wait()
""" % (PERIOD * 375, RATE, 312)  # 2 s: whole JACK periods, whole cycles of 220 Hz


class Feeder:
    """A test microphone: a JACK client ``NAME`` with one output port playing a 220 Hz tone
    (or the hostile signal) in a loop, in a child process so that its process callback
    never waits for this process's GIL."""

    def __init__(self, server: str, name: str, mode: str = "tone") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FEEDER_SCRIPT, server, name, mode],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready", name

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def stuck_notes(raw: list[list[int]]) -> set[tuple[int, int]]:
    """Notes still sounding at the end of a MIDI stream (note-off, velocity 0 or CC123 release)."""
    sounding: set[tuple[int, int]] = set()
    for m in raw:
        kind, ch = m[0] & 0xF0, m[0] & 0x0F
        if kind == 0x90 and m[2] > 0:
            sounding.add((ch, m[1]))
        elif kind == 0x80 or (kind == 0x90 and m[2] == 0):
            sounding.discard((ch, m[1]))
        elif kind == 0xB0 and m[1] == 123:
            sounding = {s for s in sounding if s[0] != ch}
    return sounding


class OscRecorder:
    """A UDP socket on 127.0.0.1 keeping every bundle melodyrt sends, decoded."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.bundles: list[dict[str, list]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from pythonosc.osc_bundle import OscBundle

        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            b: dict[str, list] = {}
            for m in OscBundle(data):
                b.setdefault(m.address.rsplit("/melodyrt/", 1)[-1], []).append(tuple(m.params))
            with self.lock:
                self.bundles.append(b)

    def snapshot(self) -> list[dict[str, list]]:
        with self.lock:
            return list(self.bundles)

    def events(self) -> list[tuple[str, int]]:
        out = []
        for b in self.snapshot():
            out += [("off", p[0]) for p in b.get("note/off", [])] + [("on", p[0]) for p in b.get("note/on", [])]
        return out

    def frames(self) -> list[dict[str, list]]:
        return [b for b in self.snapshot() if "frame" in b]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def osc_stuck(events: list[tuple[str, int]]) -> list[int]:
    held: list[int] = []
    for kind, note in events:
        if kind == "on":
            held.append(note)
        elif note in held:
            held.remove(note)
    return held


def closed_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LiveRun:
    """``melodyrt live ARGS`` on a JACK server, stdout/stderr read line by line with times."""

    def __init__(self, server: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MELODYRT_DEBUG"}
        env.update(JACK_DEFAULT_SERVER=server, JACK_NO_START_SERVER="1", PYTHONUNBUFFERED="1")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(SCRIPT), "live", *args, "--every", "1000"], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()
        self.ended_at: float | None = None

    def _read(self, stream: Any, dest: list) -> None:
        for line in stream:
            dest.append((time.monotonic() - self.t0, line.rstrip("\n")))

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None (and the process killed) if it did not end in time."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.ended_at = time.monotonic() - self.t0
        for r in self._readers:
            r.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rc

    def stdout(self) -> str:
        return "\n".join(line for _, line in self.out)

    def stderr_lines(self) -> list[str]:
        return [line for _, line in self.err if line.strip()]

    def phase(self, at: float) -> str:
        """Where the program was at ``at`` [s since spawn], from what it had printed by then."""
        if self.ended_at is not None and at >= self.ended_at:
            return "after the end"
        seen = [line for t, line in self.out if t <= at]
        if not seen:
            return "start-up"
        if any(line.startswith("latency at") for line in seen):
            return "shutdown"
        if any(re.match(r"\s+-?\d+\.\d\ds ", line) for line in seen):
            return "streaming"
        return "warm-up"


def until(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def frames_in(out: str) -> int:
    m = re.search(r"(\d+) frames in [\d.]+ s", out)
    return int(m.group(1)) if m else -1


# --------------------------------------------------------------- live faults (fixture)


def _server_dies(server: JackServer, how: int) -> dict[str, Any]:
    """The JACK server of the stream (and of its MIDI sink) dies while a note sounds."""
    feeder = Feeder(server.name, "mrt-feed1")
    osc = OscRecorder()
    run = LiveRun(server.name, "--device", "mrt-feed1", "--virtual", "--midi-api", "jack",
                  "--osc", f"127.0.0.1:{osc.port}")
    try:
        sounding = until(lambda: ("on", 57) in osc.events() and len(osc.frames()) >= 30, 60)
        t_kill = time.monotonic()
        server.kill(how)  # not close(): its reclaim would start a server of this name at once
        rc = run.wait(20)
        exit_s = time.monotonic() - t_kill
        time.sleep(0.1)
        return {"rc": rc, "exit_s": exit_s, "err": run.stderr_lines(), "out": run.stdout(),
                "osc": osc.events(), "sounding": sounding, "err_at": [round(t, 2) for t, _ in run.err],
                "jackd_log": server.read_log()[-3000:]}
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        feeder.close()
        osc.close()


def _receiver_vanishes(server: str) -> dict[str, Any]:
    feeder = Feeder(server, "mrt-feed2")
    rx = MidiReceiver("mrt-rx2", server)
    run = LiveRun(server, "--device", "mrt-feed2", "--midi-port", rx.port, "--midi-api", "jack", "--seconds", "3")
    try:
        got_note = until(lambda: rx.note_ons() > 0, 60)
        rx.close()
        rc = run.wait(60)
        return {"rc": rc, "got_note": got_note, "err": run.stderr_lines(), "out": run.stdout()}
    finally:
        feeder.close()
        rx.close()


def _osc_refuses(server: str) -> dict[str, Any]:
    feeder = Feeder(server, "mrt-feed3")
    port = closed_udp_port()
    run = LiveRun(server, "--device", "mrt-feed3", "--osc", f"127.0.0.1:{port}", "--seconds", "3")
    late: OscRecorder | None = None
    try:
        streaming = until(lambda: run.phase(time.monotonic() - run.t0) == "streaming", 60)
        time.sleep(1.0)                       # a second of refusals, then a receiver appears
        late = OscRecorder(port)
        rc = run.wait(60)
        time.sleep(0.1)
        return {"rc": rc, "streaming": streaming, "err": run.stderr_lines(), "out": run.stdout(),
                "late_frames": len(late.frames()), "port": port}
    finally:
        feeder.close()
        if late is not None:
            late.close()


def _device_vanishes(server: str) -> dict[str, Any]:
    feeder = Feeder(server, "mrt-feed4")
    rx = MidiReceiver("mrt-rx4", server)
    osc = OscRecorder()
    run = LiveRun(server, "--device", "mrt-feed4", "--midi-port", rx.port, "--midi-api", "jack",
                  "--osc", f"127.0.0.1:{osc.port}")
    try:
        sounding = until(lambda: rx.note_ons() > 0 and ("on", 57) in osc.events(), 60)
        t_gone = time.monotonic()
        feeder.close()
        rc = run.wait(20)
        exit_s = time.monotonic() - t_gone
        time.sleep(0.15)
        return {"rc": rc, "exit_s": exit_s, "sounding": sounding, "err": run.stderr_lines(), "out": run.stdout(),
                "osc": osc.events(), "midi": rx.take()}
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        feeder.close()
        rx.close()
        osc.close()


def _hostile_audio(server: str) -> dict[str, Any]:
    feeder = Feeder(server, "mrt-feed5", "hostile")
    osc = OscRecorder()
    run = LiveRun(server, "--device", "mrt-feed5", "--osc", f"127.0.0.1:{osc.port}", "--seconds", "2")
    try:
        rc = run.wait(60)
        time.sleep(0.1)
        return {"rc": rc, "err": run.stderr_lines(), "out": run.stdout(), "frames": osc.frames(), "osc": osc.events()}
    finally:
        feeder.close()
        osc.close()


@pytest.fixture(scope="module")
def shared_jack() -> Any:
    """The one private JACK server of the MIDI receivers (never the one that gets killed)."""
    need_jack()
    server = private_server("mrt-faults")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def live_faults(shared_jack) -> dict[str, Any]:
    """Every live fault scenario, run concurrently (each on its own JACK client)."""
    shared = shared_jack
    dying = private_server("mrt-faults-dying")
    try:
        def server_scenarios() -> dict[str, Any]:
            from melodyrt.bench.e2e_bench import Unavailable

            out = {"kill": _server_dies(dying, signal.SIGKILL)}
            try:
                dying.restart()  # the same name: it takes over the slot the SIGKILL left
            except Unavailable as exc:
                pytest.skip(str(exc))
            out["term"] = _server_dies(dying, signal.SIGTERM)
            return out

        with ThreadPoolExecutor(5) as pool:
            jobs = {
                "server": pool.submit(server_scenarios),
                "receiver": pool.submit(_receiver_vanishes, shared.name),
                "osc": pool.submit(_osc_refuses, shared.name),
                "device": pool.submit(_device_vanishes, shared.name),
                "hostile": pool.submit(_hostile_audio, shared.name),
            }
            results: dict[str, Any] = {}
            for name, job in jobs.items():
                try:
                    results[name] = job.result()
                except BaseException as exc:  # a skip or error of one scenario fails only its test
                    results[name] = exc
        return results
    finally:
        dying.close()  # a clean stop; a server left dead by a failed scenario gets its slot reclaimed


def result(live_faults: dict[str, Any], name: str) -> Any:
    r = live_faults[name]
    if isinstance(r, BaseException):
        raise r
    return r


def assert_one_line(err: list[str], start: str) -> None:
    assert len(err) == 1, err
    assert err[0].startswith(start), err
    assert "Traceback" not in err[0]


@pytest.mark.jack
@pytest.mark.parametrize("how", ["kill", "term"])
def test_jack_server_killed_mid_stream(live_faults, how):
    """kill -9 / -TERM jackd under a sounding note: one line, exit 3 within seconds, OSC note-off."""
    r = result(live_faults, "server")[how]
    assert r["sounding"], r
    assert r["rc"] == 3, r                                  # AudioStreamLost, not an abort (134) or a hang
    assert r["exit_s"] < 5.0, r
    assert_one_line(r["err"], "melodyrt: error: audio input mrt-feed1 lost: the JACK server went away")
    assert ("on", 57) in r["osc"] and not osc_stuck(r["osc"]), r["osc"]   # the OSC port still exists


@pytest.mark.jack
def test_midi_receiver_that_disappears(live_faults):
    """The JACK MIDI client the sink plays into closes: reported once, counted, the stream goes on."""
    r = result(live_faults, "receiver")
    assert r["got_note"], r
    assert r["rc"] == 0, r
    assert_one_line(r["err"], "melodyrt: warning: MIDI port mrt-rx2:in failed (port mrt-rx2:in went away)")
    assert "sink trouble: MidiSink 1 errors" in r["out"], r["out"]
    assert " 0 sink error(s)" in r["out"]                   # nothing raised into the worker
    assert frames_in(r["out"]) >= 250, r["out"]              # 3 s of stream: the tracker kept running


@pytest.mark.jack
def test_osc_target_that_refuses(live_faults):
    """UDP to a closed port: ECONNREFUSED counted and reported once; bundles flow once a receiver binds."""
    r = result(live_faults, "osc")
    assert r["streaming"] and r["rc"] == 0, r
    assert_one_line(r["err"], f"melodyrt: warning: OSC: nobody listens at 127.0.0.1:{r['port']} (connection refused)")
    refused = re.search(r"OscSink (\d+) refused", r["out"])
    assert refused and int(refused.group(1)) >= 20, r["out"]
    assert r["late_frames"] >= 50, r                         # the stream went on: the late receiver hears it
    assert frames_in(r["out"]) >= 250, r["out"]


@pytest.mark.jack
def test_capture_device_that_vanishes(live_faults):
    """The JACK client the stream records from closes: one line, every sink closed, exit 3."""
    r = result(live_faults, "device")
    assert r["sounding"], r
    assert r["rc"] == 3 and r["exit_s"] < 5.0, r
    assert_one_line(r["err"], "melodyrt: error: audio input mrt-feed4 lost: its JACK client 'mrt-feed4' went away")
    assert not osc_stuck(r["osc"]), r["osc"]
    assert any(m[0] & 0xF0 == 0x90 and m[2] > 0 for m in r["midi"]) and not stuck_notes(r["midi"]), r["midi"]
    assert [0xB0, 123, 0] in r["midi"]                       # the sink's close(): all notes off


@pytest.mark.jack
def test_hostile_audio_live(live_faults):
    """NaN bursts, inf samples and a DC offset through JACK: counted, finite output, notes paired."""
    r = result(live_faults, "hostile")
    assert r["rc"] == 0 and r["err"] == [], r
    m = re.search(r"(\d+) NaN/inf sample\(s\) replaced by 0", r["out"])
    assert m and int(m.group(1)) >= 100, r["out"]            # ~312 in each 2 s loop of the signal
    frames = r["frames"]
    assert len(frames) >= 150
    for key in ("f0", "midi", "confidence", "loudness"):
        values = [p[0] for b in frames for p in b[key]]
        assert all(math.isfinite(v) for v in values), key
    assert sum(b["voicing"][0][0] for b in frames) > 50       # the tone is still tracked
    assert ("on", 57) in r["osc"] and not osc_stuck(r["osc"])


# ------------------------------------------------------------------ random signals


#: What PortAudio itself prints to stderr when a JACK request fails (seen under heavy load,
#: e.g. disconnecting the stream's ports while stopping); no way to silence it from here.
PORTAUDIO_DIAGNOSTIC = re.compile(r"Expression '.*' failed in 'src/hostapi/jack/pa_jack\.c', line: \d+$")


def _signal_try(run: LiveRun, sig: int, delay: float, rx: MidiReceiver) -> dict[str, Any]:
    time.sleep(max(0.0, delay - (time.monotonic() - run.t0)))
    sent = run.proc.poll() is None
    at = time.monotonic() - run.t0
    if sent:
        run.proc.send_signal(sig)
    rc = run.wait(20)
    time.sleep(0.1)  # the last JACK cycles deliver the final messages
    err = run.stderr_lines()
    out = run.stdout()
    stuck = stuck_notes(rx.take())
    normal_end = "frames in" in out and "dropped sample(s)" in out
    text = "\n".join(err)
    # A SIGINT while Python itself starts (site, the editable install's finder, the console
    # script's first import) meets Python's default handler: its traceback has no frame of rt/.
    python_startup = (rc in (1, -signal.SIGINT) and "KeyboardInterrupt" in text and not out
                      and str(HERE.parent / "rt") not in text)
    if rc is None:
        verdict = "hang"
    elif stuck:
        verdict = f"stuck notes {sorted(stuck)}"
    elif python_startup:
        verdict = "ok (Python start-up)"
    elif any("Traceback" in line for line in err):
        verdict = "traceback"
    elif any(not line.startswith("melodyrt: ") and not PORTAUDIO_DIAGNOSTIC.match(line) for line in err):
        verdict = f"stray stderr {err}"
    else:
        want = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
        ok = rc == want or (rc == 0 and normal_end) or (rc == -sig and not out and not err)
        verdict = "ok" if ok else f"exit {rc}"
        if ok and any(PORTAUDIO_DIAGNOSTIC.match(line) for line in err):
            verdict = "ok (PortAudio diagnostic)"
    return {"sig": signal.Signals(sig).name, "delay": round(at, 3), "phase": run.phase(at) if sent else "after the end",
            "rc": rc, "verdict": verdict, "err": err[-12:], "out": [line for _, line in run.out][-2:]}


@pytest.mark.jack
def test_sigint_sigterm_at_random_moments(shared_jack):
    """SIGINT/SIGTERM anywhere in a run: no stuck note, no traceback, 130/143 (0 after a normal end)."""
    server = shared_jack
    tries = int(os.environ.get("MELODYRT_SIGNAL_TRIES", "12"))
    seed = int(os.environ.get("MELODYRT_SIGNAL_SEED", "14"))
    lanes = 3
    rng = np.random.default_rng(seed)
    feeders = [Feeder(server.name, f"mrt-sigfeed{k}") for k in range(lanes)]
    receivers = [MidiReceiver(f"mrt-sigrx{k}", server.name) for k in range(lanes)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def start(k: int) -> LiveRun:
        return LiveRun(server.name, "--device", f"mrt-sigfeed{k}", "--midi-port", receivers[k].port,
                       "--midi-api", "jack", "--seconds", "1")

    try:
        # One undisturbed run per lane: a normal end, and how long a run takes here now.
        calib = [start(k) for k in range(lanes)]
        durations = []
        for k, run in enumerate(calib):
            rc = run.wait(60)
            assert rc == 0 and not stuck_notes(receivers[k].take()), (rc, run.stderr_lines())
            durations.append(run.ended_at)
        span = 1.1 * float(np.median(durations))
        plan = [(int(rng.choice([signal.SIGINT, signal.SIGTERM])), float(rng.uniform(0.0, span))) for _ in range(tries)]

        def lane(k: int) -> None:
            for i in range(k, tries, lanes):
                sig, delay = plan[i]
                r = _signal_try(start(k), sig, delay, receivers[k])
                with lock:
                    results.append(r)

        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(lane, range(lanes)))
    finally:
        for x in receivers + feeders:
            x.close()
    table: dict[tuple[str, str], int] = {}
    for r in results:
        table[(r["phase"], r["sig"])] = table.get((r["phase"], r["sig"]), 0) + 1
    summary = {"tries": len(results), "seed": seed, "run_s": round(span / 1.1, 2),
               "by_phase": {f"{p}/{s}": n for (p, s), n in sorted(table.items())},
               "verdicts": {v: sum(r["verdict"] == v for r in results) for v in {r["verdict"] for r in results}}}
    print("signal trial:", json.dumps(summary))
    bad = [r for r in results if not r["verdict"].startswith("ok")]
    assert not bad, json.dumps(bad, indent=1)
    assert len(results) == tries


# -------------------------------------------------------------------- offline audio


@pytest.fixture(scope="module")
def tracker48():
    from melodyrt.rt.tracker import Tracker

    if not (DEFAULT_BUNDLE / "model.json").exists():
        pytest.skip(f"no packaged model at {DEFAULT_BUNDLE}")
    t = Tracker(RATE, DEFAULT_BUNDLE, backend="ort")
    t.warmup()
    return t


def _hostile_cases() -> dict[str, tuple[np.ndarray, int]]:
    t = np.arange(RATE) / RATE
    sine = 0.3 * np.sin(2 * np.pi * 220.0 * t)
    bursts = sine.copy()
    bursts[4000:4500] = np.nan
    bursts[20000:20040] = np.inf
    bursts[30000:30010] = -np.inf
    return {
        "nan and inf bursts": (bursts, 550),
        "all nan": (np.full(RATE, np.nan), RATE),
        "every other sample nan": (np.where(np.arange(RATE) % 2 == 0, np.nan, sine), RATE // 2),
        "dc 0.5": (np.full(RATE, 0.5), 0),
        "dc full scale": (np.full(RATE, 1.0), 0),
        "dc + tone": (sine + 0.5, 0),
        "clipped tone": (np.clip(20 * sine, -1.0, 1.0), 0),
        "full-scale square": (np.sign(sine), 0),
        "huge (1e30)": (sine * 1e30, 0),
    }


@pytest.mark.parametrize("case", list(_hostile_cases()))
def test_hostile_audio_offline_through_every_output(case, tracker48, tmp_path):
    """transcribe_signal -> MIDI logic (velocity) -> MIDI file -> OSC over UDP: finite, counted, no stuck note."""
    from melodyrt.rt.midi_out import MidiFileSink, MidiNoteLogic
    from melodyrt.rt.osc_out import OscSink
    from melodyrt.rt.tracker import transcribe_signal

    x, nonfinite = _hostile_cases()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no RuntimeWarning anywhere in the chain
        r = transcribe_signal(x.astype(np.float32), RATE, tracker=tracker48, block=441)
        assert tracker48.samples_sanitised == nonfinite
        frames = r.frames
        assert len(frames) == 100
        for f in frames:
            assert math.isfinite(f.f0_hz) and math.isfinite(f.confidence) and math.isfinite(f.loudness_db), f
            assert 0.0 <= f.confidence <= 1.0 + 1e-6   # float32 sums may overshoot 1 by an ulp or so
            assert f.f0_hz > 0 if f.voiced else True
        logic = MidiNoteLogic()
        msgs = [m for f in frames for m in logic.process(f)] + logic.stop()
        for m in msgs:
            if m.type == "note_on":
                assert 1 <= m.velocity <= 127
        midi_file = MidiFileSink(tmp_path / "out.mid")
        osc_rx = OscRecorder()
        osc = OscSink("127.0.0.1", osc_rx.port)
        try:
            for f in frames:
                midi_file.send(f)
                osc.send(f)
                time.sleep(0.0005)
            midi_file.close()
            osc.close()
            assert until(lambda: len(osc_rx.frames()) == len(frames), 2.0)
        finally:
            osc_rx.close()
    assert osc.dropped == 0
    for b in osc_rx.frames():
        assert all(math.isfinite(p[0]) for key in ("f0", "midi", "confidence", "loudness") for p in b[key])
    assert not osc_stuck(osc_rx.events())
    ons = [m for m in msgs if m.type == "note_on" and m.velocity > 0]
    offs = [m for m in msgs if m.type == "note_off"]
    assert len(ons) == len(offs)                              # the stream ends with every note off
    loud = np.array([f.loudness_db for f in frames[5:-3]])  # hops wholly inside the signal
    if case.startswith("dc"):
        if case != "dc + tone":
            assert not ons and not any(f.voiced for f in frames), "DC must not sound a note"
        level = 20 * np.log10(0.5) if case == "dc 0.5" else (0.0 if case == "dc full scale" else None)
        if level is not None:
            assert np.all(np.abs(loud - level) < 0.1), loud
    if case in ("clipped tone", "full-scale square"):
        assert np.all(loud <= 0.01) and np.all(loud > -6.1)    # full scale, never above it
        assert ons and all(m.velocity >= 120 for m in ons)
    if case == "huge (1e30)":
        assert np.all(loud > 500)                             # loud, not silence (float32 squares overflowed)


# ----------------------------------------------------------------- model folders


def _bundle_copy(tmp_path: Path, name: str) -> tuple[Path, dict]:
    if not (DEFAULT_BUNDLE / "model.json").exists():
        pytest.skip(f"no packaged model at {DEFAULT_BUNDLE}")
    root = tmp_path / name
    shutil.copytree(DEFAULT_BUNDLE, root)
    return root, json.loads((root / "model.json").read_text())


def _truncate(root: Path, meta: dict) -> str:
    data = (root / "step.onnx").read_bytes()
    (root / "step.onnx").write_bytes(data[: len(data) // 2])
    return "step.onnx"


def _truncate_unhashed(root: Path, meta: dict) -> str:
    _truncate(root, meta)
    meta["sha256"].pop("step.onnx")
    return "step.onnx"


def _random_bytes(root: Path, meta: dict) -> str:
    (root / "step.onnx").write_bytes(np.random.default_rng(3).bytes(20000))
    meta["sha256"].pop("step.onnx")
    return "step.onnx"


def _other_network(root: Path, meta: dict) -> str:
    shutil.copy(root / "step.fp16.onnx", root / "step.onnx")  # a valid ONNX, not the one hashed
    return "step.onnx"


def _fp16_file_as_fp32(root: Path, meta: dict) -> str:
    _other_network(root, meta)
    meta["sha256"].pop("step.onnx")
    return "step.onnx"


def _state_renamed(root: Path, meta: dict) -> str:
    meta["states"][0]["name"] = "renamed"
    return "step.onnx"


def _state_reshaped(root: Path, meta: dict) -> str:
    meta["states"][0]["shape"][1] += 1
    return "step.onnx"


def _missing_file(root: Path, meta: dict) -> str:
    meta["onnx"]["fp32"] = "gone.onnx"
    return "gone.onnx"


def _bad_json(root: Path, meta: dict) -> str:
    meta.clear()
    meta["__raw__"] = '{"format": "melodyrt-model", '
    return "model.json"


@pytest.mark.parametrize("corrupt", [_truncate, _truncate_unhashed, _random_bytes, _other_network, _fp16_file_as_fp32,
                                     _state_renamed, _state_reshaped, _missing_file, _bad_json],
                         ids=lambda f: f.__name__.strip("_"))
def test_corrupt_model_folder_is_one_line_naming_the_file(corrupt, tmp_path, capsys):
    from melodyrt.rt.cli import main

    root, meta = _bundle_copy(tmp_path, "model")
    culprit = corrupt(root, meta)
    raw = meta.pop("__raw__", None)
    (root / "model.json").write_text(raw if raw is not None else json.dumps(meta))
    wav = tmp_path / "tone.wav"
    import soundfile as sf

    sf.write(wav, tone(0.5), RATE)
    code = main(["transcribe", str(wav), "--out", str(tmp_path / "t.csv"), "--model", str(root), "--backend", "ort"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("melodyrt: error: "), err
    assert str(root / culprit) in err[0], err
    assert not (tmp_path / "t.csv").exists()


class _Planted:
    """Unpickling this creates a file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


AUDITED_RUN = r"""
import json, sys
opened, unpickled = [], []
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.append(args[0])
    elif event == "pickle.find_class":  # attributed to the file opened last
        unpickled.append([opened[-1] if opened else "?", f"{args[0]}.{args[1]}"])
sys.addaudithook(hook)
from melodyrt.rt.cli import main
code = main(sys.argv[2:])
json.dump({"code": code, "opened": opened, "unpickled": unpickled,
           "modules": [m for m in ("torch", "joblib", "dill", "cloudpickle") if m in sys.modules]},
          open(sys.argv[1], "w"))
"""


def test_runtime_never_unpickles_the_checkpoint(tmp_path):
    """No torch.load / pickle.load at run time: a booby-trapped checkpoint.pt stays untouched."""
    root, meta = _bundle_copy(tmp_path, "model")
    planted = tmp_path / "PWNED"
    (root / "checkpoint.pt").write_bytes(pickle.dumps(_Planted(str(planted))))
    meta["sha256"]["checkpoint.pt"] = sha256_of(root / "checkpoint.pt")   # looks like the real thing
    (root / "model.json").write_text(json.dumps(meta))
    assert load_bundle(root).meta["sha256"]["checkpoint.pt"]
    import soundfile as sf

    wav = tmp_path / "tone.wav"
    sf.write(wav, tone(0.5), RATE)
    script = tmp_path / "audited.py"
    script.write_text(AUDITED_RUN)
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script), str(report), "transcribe", str(wav), "--out",
                           str(tmp_path / "t.csv"), "--model", str(root), "--backend", "ort"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(report.read_text())
    assert got["code"] == 0 and (tmp_path / "t.csv").exists()
    assert not planted.exists()
    # From the model folder the runtime opens model.json and the ONNX file, nothing else.
    from_model = {Path(p).name for p in got["opened"] if Path(p).resolve().is_relative_to(root.resolve())}
    assert from_model == {"model.json", "step.onnx"}, from_model
    # The only unpickling is numba's own JIT cache (index files it wrote next to rt/'s
    # bytecode, trusted like .pyc files): never a file of the model folder.
    sources = {p for p, _ in got["unpickled"]}
    assert all(p.endswith((".nbi", ".nbc")) and not Path(p).resolve().is_relative_to(root.resolve()) for p in sources), sources
    assert got["modules"] == []          # torch (and pickle-based loaders) never imported


def test_rt_has_no_pickle_loading_code():
    """Static check of rt/: no pickle, torch, joblib or np.load(allow_pickle=True)."""
    rt = HERE.parent / "rt"
    bad = re.compile(r"^\s*(import|from)\s+(pickle|torch|joblib|dill|cloudpickle|shelve|marshal)\b"
                     r"|allow_pickle\s*=\s*True|\btorch\.load\b|\bpickle\.loads?\b|\bnp\.load\(", re.M)
    hits = [f"{p.relative_to(rt)}: {m.group(0).strip()}" for p in rt.rglob("*.py") for m in bad.finditer(p.read_text())]
    assert hits == []

"""``melodyrt bench e2e``: end-to-end latency through real ports on JACK's dummy driver.

A JACK client (the *probe*, :mod:`melodyrt.bench.jack_probe`, pip package ``JACK-Client``)
plays synthesized sung phrases into the tracker's capture port: a rest, a note, then a pitch
step to a second note. It runs in a process of its own, so no GIL hold in the tracker's
process can make it late (a late probe is an xrun jackd blames on it and every client hears
about). The tracker runs its real live path (:class:`~melodyrt.rt.source.AudioSource` on the
JACK device, :class:`~melodyrt.rt.midi_out.MidiSink` on JACK MIDI,
:class:`~melodyrt.rt.osc_out.OscSink` to 127.0.0.1). The probe's MIDI input port receives the
sink's messages and stamps each with its JACK frame (``last_frame_time + offset``); its OSC
UDP receiver stamps each bundle with the probe's ``frame_time`` on arrival. The acoustic event
is the frame at which the probe played the note's first sample (its onset) or the step's
first sample, from the probe's per-cycle log (:class:`Timeline`).

Latency = arrival frame - acoustic event frame, for

- note-on: the first MIDI note-on (OSC ``/note/on``) after the onset and before the next one;
- pitch change: the first MIDI message after the step after which the sounding pitch (note +
  bend) is within 50 cents of the new note (OSC: the first ``/f0`` within 50 cents).

Events not answered inside their window are counted as missed (an untrained model misses most).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.synth import f0_contour, harmonic_tone, note_envelope

from .cfp_bench import machine_info, machine_line, save_figure, summarise

REST_S, NOTE_S = 0.25, 0.35
PHASE_SPAN_S = 0.01  # onsets and steps are spread over one 10 ms hop of phase (make_signal)
CENTS_OK = 50.0


class Unavailable(MelodyRTError):
    """The e2e bench cannot run here (no jackd, JACK-Client or PortAudio); the message says why."""


@dataclass(frozen=True)
class Phrase:
    onset: int  # sample index in the played signal
    step: int
    end: int
    first: int  # MIDI notes
    second: int


def make_signal(n_phrases: int, rate: int, seed: int = 0) -> tuple[np.ndarray, list[Phrase]]:
    """Sung phrases (rest, note, step to another note), with the exact event samples.

    The rest and the first note are each lengthened by a random 0-10 ms (whole samples), so
    onsets and steps fall at every phase of the tracker's 10 ms frame grid, as a singer's do.
    With fixed lengths every event had the same phase: the wait for the next frame boundary,
    0 to 10 ms, was one constant per run, and p50 and p99 moved by up to a hop from run to run.
    """
    rng = np.random.default_rng(seed)
    notes: list[tuple[float | None, float]] = []
    phrases = []
    pos = 0
    r, n = int(round(REST_S * rate)), int(round(NOTE_S * rate))
    hop = int(round(PHASE_SPAN_S * rate))
    for _ in range(n_phrases):
        a = int(rng.integers(55, 70))
        b = a + int(rng.choice([-5, -4, -3, -2, 2, 3, 4, 5]))
        rk, nk = r + int(rng.integers(0, hop)), n + int(rng.integers(0, hop))
        notes += [(None, rk / rate), (a, nk / rate), (b, n / rate)]
        phrases.append(Phrase(pos + rk, pos + rk + nk, pos + rk + nk + n, a, b))
        pos += rk + nk + n
    notes.append((None, 0.5))
    f0 = f0_contour(notes, rate, vibrato_cents=15.0, glide_s=0.0)
    voice = harmonic_tone(f0, 0.0, rate, rng=rng, peak=0.5) * note_envelope(f0, rate)
    voice += 10 ** (-50 / 20) * rng.standard_normal(voice.shape[0])
    return voice.astype(np.float32), phrases


def stale_server_files(name: str) -> list[str]:
    """What a JACK2 server named ``name`` keeps in /dev/shm while it runs (its engine segment,
    its ``system`` and ``freewheel`` semaphores) and leaves behind, with its registry slot, when
    it dies without a clean stop; a clean stop (SIGTERM) removes them. [] without /dev/shm."""
    try:
        entries = os.listdir(_SHM)
    except OSError:
        return []
    n = re.escape(name)
    own = re.compile(rf"jack_{n}_\d+_\d+|jack_sem\.\d+_{n}_(?:system|freewheel)")
    return sorted(e for e in entries if own.fullmatch(e))


def server_running(name: str) -> bool:
    """Whether a JACK server ``name`` answers (``jack_wait -c``; never starts one)."""
    probe = subprocess.run(["jack_wait", "-s", name, "-c"], capture_output=True, text=True)
    return probe.stdout.strip() == "running"


def reclaim_server(name: str, timeout: float = 10.0) -> bool:
    """Free the registry slot and /dev/shm files of a dead JACK server ``name``.

    JACK2 keeps 8 server slots per machine; a server that was killed (or crashed) keeps its
    slot, semaphores and segments until a server of the same name starts again (it takes the
    slot over), and a clean stop of that one frees them. So: start a bare dummy server of that
    name and stop it with SIGTERM. Nothing is done while a server of that name runs (it has
    taken the slot over already) or when nothing of it is left. True if it was reclaimed.

    Measured with jackd 1.9.21: after ``kill -9`` the slot (with the dead pid), ``jack_<name>_0_0``
    and ``jack_sem.0_<name>_{system,freewheel}`` stay and ``jack_wait -c`` says "not running";
    start + SIGTERM of the same name removes them all. Semaphores of the dead server's clients
    (``jack_sem.0_<name>_<client>``, files only, no slot) stay until that client name opens and
    closes again on a server of that name: bounded, because the names are fixed.
    """
    if not stale_server_files(name) or server_running(name):
        return False
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        subprocess.run(["jack_wait", "-s", name, "-w", "-t", str(int(timeout))], capture_output=True)
    finally:
        _stop(proc, timeout)
    return proc.returncode == 0


def _stop(proc: "subprocess.Popen[bytes]", timeout: float) -> None:
    """SIGTERM (jackd's clean stop), SIGKILL after ``timeout`` [s]; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_SHM = "/dev/shm"  # JACK2's tmpdir on Linux (``jackd --version``)


class JackServer:
    """A private ``jackd -d dummy`` (or none when ``name`` is an already running server).

    The name is the first free one of :func:`free_server_name`'s fixed short list, never one
    per process: a server that dies uncleanly keeps its registry slot until its name starts
    again. jackd's stderr goes to ``log`` (default: a temporary file, read into
    :attr:`log_text` on :meth:`close`): it names the client to blame for every xrun
    (:func:`jackd_xruns`).

    :meth:`close` stops it cleanly (SIGTERM, SIGKILL after ``stop_timeout`` [s]) and, when it
    did not stop cleanly (killed, crashed), reclaims its slot (:func:`reclaim_server`). Fault
    tests kill it on purpose with :meth:`kill` and bring it back with :meth:`restart`.
    ``default``: make it this process's ``JACK_DEFAULT_SERVER`` until :meth:`close`.
    """

    def __init__(self, rate: int, period: int, name: str = "melodyrt-bench", start: bool = True,
                 log: Path | None = None, *, default: bool = True, tries: int = 3, timeout: float = 15.0,
                 stop_timeout: float = 5.0) -> None:
        self.rate, self.period, self.name = rate, period, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_text = ""
        self.stop_timeout = stop_timeout
        self._timeout = timeout
        self._default = default
        self._old = os.environ.get("JACK_DEFAULT_SERVER")
        self._log_path: Path | None = None
        self._own_log = log is None
        if start:
            if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
                raise Unavailable("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
            if log is None:
                fd, tmp = tempfile.mkstemp(prefix="jackd-", suffix=".log")
                os.close(fd)
                log = Path(tmp)
            self._log_path = log
            log.write_bytes(b"")
            why = "no try"
            for k in range(max(1, tries)):
                if k:
                    time.sleep(0.5)
                self.name = free_server_name(name)  # again: another run may have taken it meanwhile
                why = self._spawn()
                if not why:
                    break
                self._stop_and_reclaim()
            if why:
                self.close()
                raise Unavailable(f"JACK server {self.name!r} did not start: {why}")
        else:
            ok = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True)
            if ok.returncode != 0:
                raise Unavailable(f"JACK server {name!r} is not running")
        if default:
            os.environ["JACK_DEFAULT_SERVER"] = self.name

    def _spawn(self) -> str:
        """Start ``jackd -n NAME``; "" once it answers, else why not (its last log line)."""
        assert self._log_path is not None
        env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
        with open(self._log_path, "ab") as err:  # jackd writes unbuffered; never a pipe nobody drains
            self.proc = subprocess.Popen(["jackd", "-n", self.name, "-d", "dummy", "-r", str(self.rate),
                                          "-p", str(self.period)], stdout=subprocess.DEVNULL, stderr=err, env=env)
        end = time.monotonic() + self._timeout
        while self.proc.poll() is None and time.monotonic() < end:
            if server_running(self.name):
                time.sleep(0.1)  # a second jackd of a taken name exits at once ("server already active")
                if self.proc.poll() is None:
                    return ""
                break
            time.sleep(0.1)
        lines = self.read_log().strip().splitlines()
        state = f"exit {self.proc.returncode}" if self.proc.poll() is not None else f"no answer in {self._timeout:g} s"
        return f"{state}: {lines[-1]}" if lines else state

    @property
    def running(self) -> bool:
        """Our jackd process is alive (False for a server we did not start)."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        """Send ``sig`` to the server (a fault test's crash); wait for it to end; its exit status.
        Its slot is not reclaimed here (:meth:`restart` or :meth:`close` do)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self) -> None:
        """Start the server again under the same name (which also takes over the slot a
        killed one left); the old one is stopped first if it still runs."""
        if self.proc is None:
            raise Unavailable(f"JACK server {self.name!r} is not ours to restart")
        _stop(self.proc, self.stop_timeout)
        why = self._spawn()
        if why:
            self._stop_and_reclaim()
            raise Unavailable(f"JACK server {self.name!r} did not start again: {why}")

    def _stop_and_reclaim(self) -> None:
        if self.proc is None:
            return
        _stop(self.proc, self.stop_timeout)
        if self.proc.returncode != 0 or stale_server_files(self.name):
            reclaim_server(self.name)

    def read_log(self) -> str:
        """jackd's stderr so far ("" for a server we did not start)."""
        if self._log_path is None:
            return self.log_text
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return self.log_text

    def close(self) -> None:
        """Stop the server cleanly and reclaim what an unclean end left; restore the environment.
        Safe to call twice."""
        self._stop_and_reclaim()
        if self._log_path is not None:
            self.log_text = self.read_log()
            if self._own_log:
                self._log_path.unlink(missing_ok=True)
            self._log_path = None
        if self._default:
            self._default = False
            if self._old is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = self._old


_XRUN_LINE = re.compile(r"JackEngine::XRun: client = (.+?) was not finished")


def jackd_xruns(log: str) -> dict[str, Any]:
    """The xruns jackd reported on stderr and the clients it blamed.

    Returns
    -------
    dict
        ``xruns``: "client ... was not finished" lines; ``blamed``: ``{client: count}``;
        ``process_errors``: the driver's "Process error" lines.
    """
    blamed: dict[str, int] = {}
    for m in _XRUN_LINE.finditer(log):
        blamed[m.group(1)] = blamed.get(m.group(1), 0) + 1
    return {"xruns": sum(blamed.values()), "blamed": blamed, "process_errors": log.count("Process error")}


@dataclass(frozen=True)
class Timeline:
    """The JACK frame of each played signal sample, from the probe's per-cycle log.

    Every cycle in which it plays, the probe logs the JACK frame at which that cycle's first
    sample leaves and the signal position written there. A cycle the server runs without the
    probe (the probe late: an xrun) plays nothing, so the rest of the signal leaves one period
    later than ``start_frame + position`` would say; events placed on this timeline stay
    exact across xruns.

    JACK2 runs clients asynchronously: when the probe is late, the server's cycles go on and
    signal it once each, so it then runs twice back to back and reads the same, newest
    ``last_frame_time`` both times (steps of 768 then 0 frames at a period of 256, seen here
    under load). Both buffers land in that one server cycle and only the later is heard. :meth:`frame_of` places them where the signal resumed, and
    :attr:`overwritten_cycles` counts such cycles.

    Attributes
    ----------
    frames : ndarray [shape=(cycles,)] [int64]
        JACK frame of the first sample written in each played cycle.
    positions : ndarray [shape=(cycles,)] [int64]
        Signal position written at that frame.
    """

    frames: np.ndarray
    positions: np.ndarray

    @classmethod
    def uniform(cls, start_frame: int) -> "Timeline":
        """A timeline without gaps: sample ``s`` left at ``start_frame + s``."""
        return cls(np.array([start_frame], np.int64), np.array([0], np.int64))

    def frame_of(self, sample: int) -> int:
        """JACK frame at which signal sample ``sample`` left the probe."""
        i = max(0, int(np.searchsorted(self.positions, sample, side="right")) - 1)
        frame = int(self.frames[i] + (sample - self.positions[i]))
        if i + 1 < self.frames.size and frame >= self.frames[i + 1]:
            return int(self.frames[i + 1])  # overwritten before it left: heard from the next cycle on
        return frame

    @property
    def overwritten_cycles(self) -> int:
        """Played cycles whose samples a later cycle at the same JACK frames overwrote."""
        if self.frames.size < 2:
            return 0
        return int(np.count_nonzero(np.diff(self.frames) < np.diff(self.positions)))

    @property
    def slipped_frames(self) -> int:
        """Frames by which the end of the signal left later than a gapless playback [frames]."""
        if self.frames.size < 2:
            return 0
        return int((self.frames[-1] - self.frames[0]) - (self.positions[-1] - self.positions[0]))


def _osc_messages(data: bytes) -> list[tuple[str, list[Any]]]:
    from pythonosc.osc_bundle import OscBundle
    from pythonosc.osc_message import OscMessage

    out: list[tuple[str, list[Any]]] = []
    if OscBundle.dgram_is_bundle(data):
        for c in OscBundle(data):
            out += [(c.address, list(c.params))] if isinstance(c, OscMessage) else _osc_messages(c.dgram)
    else:
        m = OscMessage(data)
        out.append((m.address, list(m.params)))
    return out


def _cents(midi_a: float, midi_b: float) -> float:
    return abs(100.0 * (midi_a - midi_b))


def analyse(phrases: list[Phrase], timeline: Timeline | int, midi: list[tuple[int, bytes]], osc: list[tuple[int, bytes]],
            rate: int, bend_range: int = 2, prefix: str = "/melodyrt") -> dict[str, Any]:
    """Match arrivals to acoustic events; latencies in ms (see the module docstring).

    ``timeline`` places the played samples on the JACK clock (an int: gapless from that
    frame). Besides the percentiles, each kind reports how latency moves during the run: the
    median of the first and of the last :data:`DRIFT_EVENTS` answered events and the slope
    of a least-squares line through latency against the event's time [ms per minute].
    """
    if not isinstance(timeline, Timeline):
        timeline = Timeline.uniform(int(timeline))
    import mido

    ms = 1000.0 / rate
    kinds = ("midi_note_on", "midi_pitch_change", "osc_note_on", "osc_pitch_change")
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    when: dict[str, list[float]] = {k: [] for k in kinds}  # event time [s] since the first onset
    # MIDI: sounding pitch after every message, in arrival order
    midi_sorted = sorted(midi, key=lambda e: e[0])
    sounding: list[tuple[int, float | None, bool]] = []  # (frame, pitch in MIDI or None, is_note_on)
    held: int | None = None
    bend = 0.0
    for frame, data in midi_sorted:
        try:
            msg = mido.Message.from_bytes(list(data))
        except ValueError:
            continue
        on = False
        if msg.type == "note_on" and msg.velocity > 0:
            held, on = msg.note, True
        elif msg.type in ("note_off", "note_on") and msg.note == held:
            held = None
        elif msg.type == "pitchwheel":
            bend = msg.pitch / 8192.0 * bend_range
        sounding.append((frame, None if held is None else held + bend, on))
    osc_ev: list[tuple[int, str, float]] = []
    for frame, data in osc:
        try:
            for addr, params in _osc_messages(data):
                if addr == f"{prefix}/note/on":
                    osc_ev.append((frame, "on", float(params[0])))
                elif addr == f"{prefix}/f0" and params and params[0] > 0:
                    osc_ev.append((frame, "f0", 69.0 + 12.0 * np.log2(params[0] / 440.0)))
        except Exception:  # a malformed datagram is not a latency
            continue
    osc_ev.sort(key=lambda e: e[0])
    first = timeline.frame_of(phrases[0].onset) if phrases else 0
    midi_frames = [e[0] for e in sounding]
    osc_frames = [e[0] for e in osc_ev]

    def earliest(frames: list[int], items: list[Any], lo: int, hi: int, ok: Any) -> int | None:
        """Frame of the first item in [lo, hi) that is ``ok`` (items sorted by frame)."""
        j = bisect_left(frames, lo)
        while j < len(items) and frames[j] < hi:
            if ok(items[j]):
                return frames[j]
            j += 1
        return None

    def answer(kind: str, event: int, t: int | None) -> None:
        if t is not None:
            lat[kind].append((t - event) * ms)
            when[kind].append((event - first) / rate)

    for i, ph in enumerate(phrases):
        onset, step = timeline.frame_of(ph.onset), timeline.frame_of(ph.step)
        limit = timeline.frame_of(phrases[i + 1].onset if i + 1 < len(phrases) else ph.end + int(0.5 * rate))
        new = ph.second
        answer("midi_note_on", onset, earliest(midi_frames, sounding, onset, limit, lambda e: e[2]))
        answer("midi_pitch_change", step, earliest(
            midi_frames, sounding, step, limit, lambda e: e[1] is not None and _cents(e[1], new) <= CENTS_OK))
        answer("osc_note_on", onset, earliest(osc_frames, osc_ev, onset, limit, lambda e: e[1] == "on"))
        answer("osc_pitch_change", step, earliest(
            osc_frames, osc_ev, step, limit, lambda e: e[1] == "f0" and _cents(e[2], new) <= CENTS_OK))
    out: dict[str, Any] = {}
    for k, v in lat.items():
        arr = np.asarray(v)
        out[k] = {"events": len(phrases), "answered": int(arr.size), "missed": len(phrases) - int(arr.size),
                  "latencies_ms": [round(x, 3) for x in v], "event_times_s": [round(x, 3) for x in when[k]]}
        if arr.size:
            out[k].update(summarise(arr * 1e6))
            out[k].update(drift(np.asarray(when[k]), arr))
    return out


#: Events at each end of the run whose median :func:`drift` reports.
DRIFT_EVENTS = 20


def theil_sen_slope(x: np.ndarray, y: np.ndarray, max_pairs: int = 1_000_000) -> float:
    """Median of the slopes between every pair of points (Theil-Sen).

    A steady trend gives the same slope as least squares; a burst of late events from the
    host (a VM's xrun storm) moves it only when more than about 29 % of the events are in
    the burst, so a drift check does not fail on the machine rather than the tracker.

    Parameters
    ----------
    x, y : ndarray [shape=(n,)]
    max_pairs : int
        Above this many pairs (a soak run's thousands of events) the median is taken over
        this many pairs drawn with a fixed seed, so memory stays bounded and the figure
        repeatable.

    Returns
    -------
    float
        Slope in y units per x unit; 0 with fewer than 2 distinct x.
    """
    n = x.size
    if n * (n - 1) // 2 > max_pairs:
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        i, j = np.minimum(a, b), np.maximum(a, b)
    else:
        i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return 0.0
    return float(np.median((y[j] - y[i])[keep] / dx[keep]))


def drift(times_s: np.ndarray, latencies_ms: np.ndarray) -> dict[str, float]:
    """How latency moves over a run.

    Parameters
    ----------
    times_s : ndarray [shape=(n,)] [s]
        When each event happened, in run order.
    latencies_ms : ndarray [shape=(n,)] [ms]

    Returns
    -------
    dict
        ``first_p50_ms`` / ``last_p50_ms``: medians of the first and last ``DRIFT_EVENTS``
        events (all of them when there are fewer); ``slope_ms_per_min``: the Theil-Sen
        slope of latency against time (:func:`theil_sen_slope`), which ``--check`` holds;
        ``ls_slope_ms_per_min``: the least-squares slope, for comparison (both 0 with fewer
        than 3 events or no spread in time).
    """
    k = min(DRIFT_EVENTS, latencies_ms.size)
    slope = ls = 0.0
    if latencies_ms.size >= 3 and np.ptp(times_s) > 0:
        minutes = np.asarray(times_s, dtype=np.float64) / 60.0
        lat = np.asarray(latencies_ms, dtype=np.float64)
        slope = theil_sen_slope(minutes, lat)
        ls = float(np.polyfit(minutes, lat, 1)[0])
    return {"first_p50_ms": float(np.median(latencies_ms[:k])), "last_p50_ms": float(np.median(latencies_ms[-k:])),
            "slope_ms_per_min": slope, "ls_slope_ms_per_min": ls}


def free_server_name(base: str, tries: int = 4) -> str:
    """``base``, or ``base-2`` ... when a server of that name is already running.

    Two runs on one machine (a bench beside the tests) must never share, or stop, each
    other's server. A fixed short list of names, rather than one per process id, because
    JACK reclaims a dead server's slot (8 per machine) only when a server of the same name
    starts again.
    """
    for k in range(1, tries + 1):
        name = base if k == 1 else f"{base}-{k}"
        if not server_running(name):
            return name
    raise Unavailable(f"JACK servers {base!r} to {base}-{tries} are all running already")


@contextlib.contextmanager
def jack_rig(rate: int, period: int, server: str | None = None, name: str = "melodyrt-bench",
             log: Path | None = None) -> Iterator[JackServer]:
    """A JACK server (a private dummy one named by :func:`free_server_name`, unless ``server``
    names a running one)
    with PortAudio initialised on it; PortAudio is terminated before the server stops and
    initialised again afterwards.

    Raises
    ------
    Unavailable
        No jackd, JACK-Client or PortAudio.
    """
    try:
        import jack  # noqa: F401  (the probe process needs it)
    except ImportError:
        raise Unavailable("JACK-Client not installed (pip install JACK-Client)") from None
    js = JackServer(rate, period, name=server or name, start=server is None, log=log)
    try:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise Unavailable(f"PortAudio not available: {exc}") from None
        sd._terminate()
        sd._initialize()
        try:
            yield js
        finally:
            sd._terminate()  # before jackd goes away, or PortAudio aborts the process
    finally:
        js.close()
        try:
            import sounddevice as sd

            sd._initialize()
        except OSError:
            pass


def probe_capacity(seconds: float) -> dict[str, int]:
    """Record sizes for a probe listening ``seconds`` [s] to the sinks: MIDI events (at most
    a bend and a note change per 10 ms frame), OSC bundles (one per frame, < 400 bytes)."""
    frames = int(seconds * 100) + 2000
    return {"max_midi": 3 * frames, "max_osc": frames, "max_osc_bytes": 400 * frames}


def sink_port(probe: Any, client: str) -> str:
    """The MIDI output port of the sink opened as JACK client ``client``."""
    src = [p for p in probe.ports("midi", "out") if p.startswith(client + ":")]
    if len(src) != 1:
        raise MelodyRTError(f"expected the MIDI sink's port, found {src}")
    return src[0]


def run(bundle: Any, out_dir: Path, *, events: int = 200, rate: int = 48000, period: int = 128, blocksize: int = 128,
        server: str | None = None, quick: bool = False, plots: bool = True,
        fast_onset: bool = False) -> dict[str, Any]:
    """Run the e2e measurement; raises :class:`Unavailable` with the reason when it cannot run here.

    ``fast_onset``: the MIDI and OSC sinks (and the offline decision) start notes on onset
    cues (``MidiConfig.fast_onset``).
    """
    from melodyrt.rt.bundle import ModelBundle, load_bundle

    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_phrases = max(1, events)  # each phrase: one note onset and one pitch step
    signal, phrases = make_signal(n_phrases, rate)
    machine = machine_info()
    with jack_rig(rate, period, server) as js:
        result = _measure(bundle, signal, phrases, rate, blocksize, fast_onset)
    result["jackd"] = jackd_xruns(js.log_text) if server is None else {"note": f"server {server!r}: its log is not ours"}
    result["offline_note_on"] = offline_note_on(bundle, signal, phrases, rate, blocksize, fast_onset)
    result.update({
        "benchmark": "e2e", "quick": quick, "machine": machine,
        "settings": {"rate": rate, "jack_period": period, "blocksize": blocksize, "phrases": n_phrases,
                     "events_per_kind": n_phrases, "fast_onset": fast_onset, "rest_s": REST_S, "note_s": NOTE_S, "cents_ok": CENTS_OK,
                     "server": "private jackd -d dummy" if server is None else server},
        "model": {"name": bundle.name, "dir": str(bundle.root), "untrained": _is_untrained(bundle)},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if plots:
        result["plots"] = write_plot(result, out_dir)
    (out_dir / "e2e_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "e2e_bench.md").write_text(markdown(result))
    return result


@dataclass
class LivePath:
    """The tracker's live path on JACK with the probe wired to it (see :func:`live_path`)."""

    probe: Any  # ProbeProcess
    source: Any  # AudioSource
    tracker: Any
    midi: Any  # MidiSink
    osc: Any  # OscSink
    device: dict[str, Any]
    capture: str


@contextlib.contextmanager
def live_path(bundle: Any, signal: np.ndarray, rate: int, blocksize: int, listen_s: float, *,
              sinks: tuple[Any, ...] = (), wrap_midi: Any = None, notes: dict[str, Any] | None = None,
              **probe_options: Any) -> Iterator[LivePath]:
    """Start the probe (out of process, OSC listener on), the MIDI sink on JACK MIDI wired to
    the probe, the OSC sink to the probe, and the tracker's stream with the probe playing
    into its capture port (not yet playing: call ``probe.play()``).

    Parameters
    ----------
    listen_s : float [s]
        How long the probe must be able to record MIDI and OSC (sizes its records).
    sinks : tuple
        Further sinks after the MIDI and OSC ones.
    wrap_midi : callable, optional
        ``MidiSink -> Sink`` in front of the MIDI sink.
    notes : dict, optional
        Note settings (:class:`~melodyrt.rt.midi_out.MidiConfig` fields) for both sinks.
    **probe_options
        :class:`~melodyrt.bench.jack_probe.ProbeProcess` options (``loop``, ``seconds``).

    On exit the stream is stopped (closing every sink) and the probe stopped if it still runs.
    """
    from melodyrt.rt.midi_out import MidiSink
    from melodyrt.rt.osc_out import OscSink
    from melodyrt.rt.source import AudioSource, SourceConfig, resolve_input
    from melodyrt.rt.tracker import Tracker

    from .jack_probe import ProbeProcess

    notes = dict(notes or {})
    midi = MidiSink(virtual=True, api="jack", client_name="melodyrt", virtual_port_name="out", **notes)
    source = None
    with tempfile.TemporaryDirectory(prefix="mrt-live-") as work, \
            ProbeProcess(signal, work, name="mrt-probe", osc=True, **probe_capacity(listen_s), **probe_options) as probe:
        try:
            probe.connect(sink_port(probe, "melodyrt"), "midi_in")
            cfg = SourceConfig(device="system", rate=rate, blocksize=blocksize)
            device, dev_rate = resolve_input(cfg)
            tracker = Tracker(dev_rate, bundle, backend="ort")
            assert probe.osc_port is not None
            osc = OscSink("127.0.0.1", probe.osc_port, **notes)
            source = AudioSource(tracker, [midi if wrap_midi is None else wrap_midi(midi), osc, *sinks], cfg, device)
            source.start()
            yield LivePath(probe, source, tracker, midi, osc, device, probe.capture())
        finally:
            if source is not None:
                source.stop()
            midi.close()


def offline_note_on(bundle: Any, signal: np.ndarray, phrases: list[Phrase], rate: int,
                    blocksize: int, fast_onset: bool = False) -> dict[str, Any]:
    """When the tracker, fed the same signal from memory, has decided each note-on.

    The live path without JACK: the signal in blocks of ``blocksize``, the MIDI note logic of
    the sink's default settings on the frames. A note-on is *decided* when the frame that
    starts it is complete, i.e. when the tracker has received that frame's newest input
    sample; its delay from the acoustic onset is resampler + window + the wait for the frame
    boundary + the frames the network needs before it calls the note voiced and the onset
    rule agrees. With ``fast_onset`` a note-on started by an onset cue is decided when the
    cue's evaluation is complete (its newest analysis sample has arrived).
    What the live figure adds on top is buffering, compute and transport.

    Returns
    -------
    dict
        ``decided_ms`` (per answered onset [ms], at most 0.3 s late), ``p50_ms``, ``p90_ms``,
        ``p99_ms`` and ``answered`` / ``events``; with ``fast_onset`` also ``by_cue`` (onsets
        a cue started), ``cues_confirmed`` and ``cues_dropped``.
    """
    from melodyrt.rt.frames import OnsetCue
    from melodyrt.rt.midi_out import MidiConfig, MidiNoteLogic
    from melodyrt.rt.tracker import Tracker, transcribe_signal

    tracker = Tracker(rate, bundle, backend="ort")
    res = transcribe_signal(signal, rate, tracker=tracker, block=blocksize)
    logic = MidiNoteLogic(MidiConfig(fast_onset=fast_onset))
    ons: list[float] = []  # input sample at which each note-on was decided
    cued: set[int] = set()  # indices into ons of the note-ons a cue started
    for e in res.events():
        is_cue = isinstance(e, OnsetCue)
        msgs = logic.cue(e) if is_cue else logic.process(e)
        if any(m.type == "note_on" and m.velocity > 0 for m in msgs):
            if is_cue:
                cued.add(len(ons))
            ons.append(e.sample + (tracker.cue_delay_samples if is_cue else tracker.delay_samples))
    ons_a = np.asarray(ons)
    decided = []
    by_cue = 0
    for ph in phrases:
        k = np.searchsorted(ons_a, ph.onset)
        if k < ons_a.shape[0] and ons_a[k] - ph.onset <= 0.3 * rate and ons_a[k] < ph.step:
            decided.append(float((ons_a[k] - ph.onset) / rate * 1000.0))
            by_cue += int(k) in cued
    out: dict[str, Any] = {"answered": len(decided), "events": len(phrases), "decided_ms": decided}
    if fast_onset:
        out.update(by_cue=by_cue, cues_confirmed=logic.cues_confirmed, cues_dropped=logic.cues_dropped)
    if decided:
        out.update({f"p{q}_ms": float(np.percentile(decided, q)) for q in (50, 90, 99)})
    return out


def _measure(bundle: Any, signal: np.ndarray, phrases: list[Phrase], rate: int, blocksize: int,
             fast_onset: bool = False) -> dict[str, Any]:
    seconds = signal.shape[0] / rate
    with live_path(bundle, signal, rate, blocksize, seconds + 30, notes={"fast_onset": fast_onset}) as lp:
        try:
            time.sleep(0.3)
            lp.probe.play()
            lp.probe.wait_done(seconds + 10.0)
            time.sleep(0.5)
            got = lp.probe.finish()  # stops listening before the sink closes (its close messages are not timed)
        finally:
            stats = lp.source.stop()  # closes the sinks
    latency = lp.tracker.latency(blocksize, lp.source.buffering_samples)
    if got.start_frame is None:
        raise MelodyRTError("the probe never started playing")
    timeline = Timeline(got.cycle_frame, got.cycle_pos)
    res = analyse(phrases, timeline, got.midi, got.osc, rate)
    return {
        "latency": res,
        "algorithmic": latency.as_dict(),
        "capture_port": lp.capture,
        "device": lp.device["name"],
        "xruns": {"probe": got.xruns, "source": stats.xruns},
        # How far the probe's playback fell behind a gapless one (cycles it missed).
        "probe_slipped_frames": timeline.slipped_frames,
        "probe_overwritten_cycles": timeline.overwritten_cycles,
        "probe_lost": {"midi": got.midi_lost, "osc": got.osc_lost, "cycles_unlogged": got.cycles_unlogged},
        "source": stats.line(),
        "midi_messages": len(got.midi),
        "osc_datagrams": len(got.osc),
    }


def _is_untrained(bundle: Any) -> bool:
    from melodyrt.rt.commands import _is_untrained as untrained

    return bool(untrained(bundle))


def measured_for_budget(result: dict[str, Any]) -> dict[str, float]:
    """Budget keys this benchmark measures (MIDI note-on through JACK, and its drift)."""
    on = result["latency"]["midi_note_on"]
    if "p50_ms" not in on:
        return {}
    return {"e2e_note_on_p50_ms": on["p50_ms"], "e2e_note_on_p99_ms": on["p99_ms"],
            "e2e_note_on_slope_ms_per_min": abs(on["slope_ms_per_min"])}


def e2e_check_notes(result: dict[str, Any], measured: dict[str, float], budget: dict[str, float]) -> list[str]:
    """What holds each note-on goal back, split where the bench measured the split.

    The offline run (:func:`offline_note_on`) says when the tracker has *decided* each
    note-on: the CFP window, the network's voicing, the onset rule and the wait for the
    frame boundary, with no device in the way. That part is fixed by the model and the
    front end; what the live figure adds on top (buffering, compute, JACK and MIDI
    transport) is not. Without an offline figure the design's algorithmic delays stand in
    for the decision.

    Parameters
    ----------
    result : dict
        :func:`run`'s result.
    measured : dict
        :func:`measured_for_budget` of it [ms].
    budget : dict
        The latency budget [ms].

    Returns
    -------
    list of str
        One sentence per note-on goal in both ``measured`` and ``budget``.
    """
    from .budget import held_back_by

    off = result.get("offline_note_on", {})
    a = result["algorithmic"]
    notes = []
    for q, key in (("p50", "e2e_note_on_p50_ms"), ("p99", "e2e_note_on_p99_ms")):
        if key not in measured or key not in budget:
            continue
        decision = "note-on decision (offline: CFP window, voicing, onset rule, hop wait)"
        if f"{q}_ms" in off:
            stages = {decision: off[f"{q}_ms"]}
        else:
            decision = "design's algorithmic delay (CFP window, resampler, look-ahead, smoothing)"
            stages = {decision: sum(a[k]["ms"] for k in ("cfp_window", "resampler", "model_look_ahead",
                                                        "decoder_smoothing"))}
        stages["live buffering, compute and transport"] = max(0.0, measured[key] - stages[decision])
        notes.append(held_back_by(stages, budget[key], f"e2e note-on {q} (measured)", fixed={decision}))
    return notes


def write_plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for k, v in result["latency"].items():
        if v["latencies_ms"]:
            ax.hist(v["latencies_ms"], bins=40, histtype="step", label=f"{k} (n={v['answered']})")
    ax.axvline(15, color="r", ls="--", lw=0.8, label="15 ms goal (p50)")
    ax.axvline(20, color="r", ls=":", lw=0.8, label="20 ms goal (p99)")
    ax.set_xlabel("arrival - acoustic event [ms]")
    ax.set_ylabel("events")
    ax.set_title("end-to-end latency through JACK (dummy driver)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, out_dir, "e2e_hist.png")]


def blame_text(jackd: dict[str, Any]) -> str:
    """``jackd: 2 (mrt-probe 1, PortAudio 1)`` from :func:`jackd_xruns` output."""
    if "xruns" not in jackd:
        return "jackd: not captured"
    who = ", ".join(f"{k} {v}" for k, v in sorted(jackd["blamed"].items()))
    return f"jackd: {jackd['xruns']}" + (f" ({who})" if who else "")


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    lines = [f"# melodyrt bench e2e{' (quick mode: checks the machinery, not the latency)' if result['quick'] else ''}", "",
             machine_line(m),
             f"JACK dummy driver at {s['rate']} Hz, period {s['jack_period']}, stream blocksize {s['blocksize']}; "
             f"{s['phrases']} phrases (rest {s['rest_s']} s, note {s['note_s']} s, step to another note {s['note_s']} s); "
             f"model {result['model']['name']}; fast onset {'on' if s.get('fast_onset') else 'off'}; xruns: probe {result['xruns']['probe']}, source {result['xruns']['source']}, "
             f"{blame_text(result.get('jackd', {}))}.", "",
             f"| event | answered / played | p50 ms | p99 ms | max ms | first {DRIFT_EVENTS} p50 ms | last {DRIFT_EVENTS} p50 ms "
             "| slope ms/min (Theil-Sen / least squares) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, v in result["latency"].items():
        if "p50_ms" in v:
            lines.append(f"| {k} | {v['answered']} / {v['events']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['max_ms']:.2f} "
                         f"| {v['first_p50_ms']:.2f} | {v['last_p50_ms']:.2f} | {v['slope_ms_per_min']:+.2f} / "
                         f"{v.get('ls_slope_ms_per_min', v['slope_ms_per_min']):+.2f} |")
        else:
            lines.append(f"| {k} | 0 / {v['events']} | - | - | - | - | - | - |")
    slipped = result.get("probe_slipped_frames", 0)
    lines += ["", f"The probe missed {slipped} frames of playback ({slipped / s['rate'] * 1000:.1f} ms) to xruns"
              f" and {result.get('probe_overwritten_cycles', 0)} cycles ran twice in one server cycle; "
              "acoustic events are placed on its logged timeline, so this does not enter the latencies."]
    a = result["algorithmic"]
    lines += ["", f"Algorithmic delay the tracker reports: {a['algorithmic']['ms']:.2f} ms (+ hop wait mean "
              f"{a['hop_wait_mean']['ms']:.2f} ms, buffering {a['audio_buffering']['ms']:.2f} ms). "
              "Pitch change = first arrival within 50 cents of the new note (MIDI: note + bend)."]
    off = result.get("offline_note_on", {})
    live = result["latency"]["midi_note_on"]
    if "p50_ms" in off:
        tail = (f"; the live MIDI note-on p50 adds {live['p50_ms'] - off['p50_ms']:.1f} ms of buffering, compute and "
                "transport" if "p50_ms" in live else "")
        if "by_cue" in off:
            what = ("note logic on the frames and the onset cues): a note-on is decided (its frame or cue complete) "
                    f"{off['p50_ms']:.1f} ms after the onset")
            cues = (f"; {off['by_cue']} of them started by a cue, {off['cues_confirmed']} cues confirmed by a voiced "
                    f"frame, {off['cues_dropped']} taken back")
        else:
            what = f"note logic on the frames): a note-on's frame is complete {off['p50_ms']:.1f} ms after the onset"
            cues = ""
        lines += ["", f"Decided offline (the same signal fed from memory in {s['blocksize']}-sample blocks, the MIDI "
                  f"{what} (p50; p90 {off['p90_ms']:.1f}, p99 {off['p99_ms']:.1f}; {off['answered']} / {off['events']} "
                  f"onsets{cues}){tail}."]
    if result["model"].get("untrained"):
        lines.append("The model is untrained: most events go unanswered.")
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return "\n".join(lines) + "\n"

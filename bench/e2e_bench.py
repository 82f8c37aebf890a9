"""``melodyrt bench e2e``: end-to-end latency through real ports on JACK's dummy driver.

A JACK client (the *probe*, pip package ``JACK-Client``) plays synthesized sung phrases into
the tracker's capture port: a rest, a note, then a pitch step to a second note. The tracker
runs its real live path (:class:`~melodyrt.rt.source.AudioSource` on the JACK device,
:class:`~melodyrt.rt.midi_out.MidiSink` on JACK MIDI, :class:`~melodyrt.rt.osc_out.OscSink`
to 127.0.0.1). The probe's MIDI input port receives the sink's messages and stamps each with
its JACK frame (``last_frame_time + offset``); an OSC UDP receiver stamps each bundle with the
probe's ``frame_time`` on arrival. The acoustic event is the frame at which the probe played
the note's first sample (its onset) or the step's first sample.

Latency = arrival frame - acoustic event frame, for

- note-on: the first MIDI note-on (OSC ``/note/on``) after the onset and before the next one;
- pitch change: the first MIDI message after the step after which the sounding pitch (note +
  bend) is within 50 cents of the new note (OSC: the first ``/f0`` within 50 cents).

Events not answered inside their window are counted as missed (an untrained model misses most).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.synth import f0_contour, harmonic_tone, note_envelope

from .cfp_bench import machine_info, machine_line, save_figure, summarise

REST_S, NOTE_S = 0.25, 0.35
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
    """Sung phrases (rest, note, step to another note), with the exact event samples."""
    rng = np.random.default_rng(seed)
    notes: list[tuple[float | None, float]] = []
    phrases = []
    pos = 0
    r, n = int(round(REST_S * rate)), int(round(NOTE_S * rate))
    for _ in range(n_phrases):
        a = int(rng.integers(55, 70))
        b = a + int(rng.choice([-5, -4, -3, -2, 2, 3, 4, 5]))
        notes += [(None, REST_S), (a, NOTE_S), (b, NOTE_S)]
        phrases.append(Phrase(pos + r, pos + r + n, pos + r + 2 * n, a, b))
        pos += r + 2 * n
    notes.append((None, 0.5))
    f0 = f0_contour(notes, rate, vibrato_cents=15.0, glide_s=0.0)
    voice = harmonic_tone(f0, 0.0, rate, rng=rng, peak=0.5) * note_envelope(f0, rate)
    voice += 10 ** (-50 / 20) * rng.standard_normal(voice.shape[0])
    return voice.astype(np.float32), phrases


class JackServer:
    """A private ``jackd -d dummy`` (or none when ``name`` is an already running server)."""

    def __init__(self, rate: int, period: int, name: str = "melodyrt-bench", start: bool = True) -> None:
        self.name, self.proc = name, None
        self._old = os.environ.get("JACK_DEFAULT_SERVER")
        if start:
            jackd = shutil.which("jackd")
            if jackd is None or shutil.which("jack_wait") is None:
                raise Unavailable("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
            env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
            self.proc = subprocess.Popen([jackd, "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        os.environ["JACK_DEFAULT_SERVER"] = name
        ok = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True)
        if ok.returncode != 0 or (self.proc is not None and self.proc.poll() is not None):
            self.close()
            raise Unavailable(f"JACK server {name!r} did not start")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = self._old


class Probe:
    """JACK client: plays the signal once on request, stamps incoming MIDI with JACK frames.

    Every cycle in which it plays, the probe logs the JACK frame at which that cycle's first
    sample leaves and the signal position written there (:meth:`timeline`). A cycle the
    server runs without the probe (the probe late: an xrun) plays nothing, so the rest of the
    signal leaves one period later than ``start_frame + position`` would say; the acoustic
    events are placed on the logged timeline instead, which stays exact across xruns.
    """

    def __init__(self, jack: Any, signal: np.ndarray, name: str = "mrt-probe") -> None:
        self.signal = signal
        self.pos = 0
        self.start_frame: int | None = None
        # One row per played cycle, preallocated (the process callback must not allocate);
        # 16 frames is below any JACK period this bench is run with.
        cap = signal.shape[0] // 16 + 16
        self._cycle_frame = np.zeros(cap, np.int64)
        self._cycle_pos = np.zeros(cap, np.int64)
        self._cycles = 0
        self.play = threading.Event()
        self.midi: list[tuple[int, bytes]] = []
        self.xruns = 0
        self.client = jack.Client(name, no_start_server=True)
        self.out = self.client.outports.register("out")
        self.midi_in = self.client.midi_inports.register("midi_in")
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, delay: float) -> None:
        self.xruns += 1

    def _process(self, frames: int) -> None:
        buf = self.out.get_array()
        base = self.client.last_frame_time
        for offset, data in self.midi_in.incoming_midi_events():
            self.midi.append((base + offset, bytes(data)))
        if not self.play.is_set() or self.pos >= self.signal.shape[0]:
            buf[:] = 0.0
            return
        if self.start_frame is None:
            self.start_frame = base
        if self._cycles < self._cycle_frame.shape[0]:
            self._cycle_frame[self._cycles] = base
            self._cycle_pos[self._cycles] = self.pos
            self._cycles += 1
        n = min(frames, self.signal.shape[0] - self.pos)
        buf[:n] = self.signal[self.pos : self.pos + n]
        buf[n:] = 0.0
        self.pos += n

    @property
    def done(self) -> bool:
        return self.pos >= self.signal.shape[0]

    def timeline(self) -> "Timeline":
        """Where each played sample left the probe, on the JACK frame clock."""
        n = self._cycles
        return Timeline(self._cycle_frame[:n].copy(), self._cycle_pos[:n].copy())

    def connect_to_capture(self) -> str:
        ports = [p for p in self.client.get_ports(is_audio=True, is_input=True)
                 if not p.name.startswith(("system:", self.client.name + ":"))]
        if len(ports) != 1:
            raise MelodyRTError(f"expected one capture port of the tracker's stream, found {[p.name for p in ports]}")
        target = ports[0]
        for other in self.client.get_all_connections(target):
            self.client.disconnect(other, target)
        self.client.connect(self.out, target)
        return target.name

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


@dataclass(frozen=True)
class Timeline:
    """The JACK frame of each played signal sample, from the probe's per-cycle log.

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
        return int(self.frames[i] + (sample - self.positions[i]))

    @property
    def slipped_frames(self) -> int:
        """Frames by which the end of the signal left later than a gapless playback [frames]."""
        if self.frames.size < 2:
            return 0
        return int((self.frames[-1] - self.frames[0]) - (self.positions[-1] - self.positions[0]))


class OscListener:
    """UDP receiver on 127.0.0.1 stamping each datagram with the probe's JACK frame time."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="osc-listener")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append((self.probe.client.frame_time, data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


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

    def answer(kind: str, event: int, t: int | None) -> None:
        if t is not None:
            lat[kind].append((t - event) * ms)
            when[kind].append((event - first) / rate)

    for i, ph in enumerate(phrases):
        onset, step = timeline.frame_of(ph.onset), timeline.frame_of(ph.step)
        limit = timeline.frame_of(phrases[i + 1].onset if i + 1 < len(phrases) else ph.end + int(0.5 * rate))
        answer("midi_note_on", onset, next((f for f, _, on in sounding if on and onset <= f < limit), None))
        answer("midi_pitch_change", step, next(
            (f for f, p, _ in sounding if step <= f < limit and p is not None and _cents(p, ph.second) <= CENTS_OK), None))
        answer("osc_note_on", onset, next((f for f, k, _ in osc_ev if k == "on" and onset <= f < limit), None))
        answer("osc_pitch_change", step, next(
            (f for f, k, p in osc_ev if k == "f0" and step <= f < limit and _cents(p, ph.second) <= CENTS_OK), None))
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
        events (all of them when there are fewer); ``slope_ms_per_min``: least-squares slope
        of latency against time (0 with fewer than 3 events or no spread in time).
    """
    k = min(DRIFT_EVENTS, latencies_ms.size)
    slope = 0.0
    if latencies_ms.size >= 3 and np.ptp(times_s) > 0:
        slope = float(np.polyfit(times_s / 60.0, latencies_ms, 1)[0])
    return {"first_p50_ms": float(np.median(latencies_ms[:k])), "last_p50_ms": float(np.median(latencies_ms[-k:])),
            "slope_ms_per_min": slope}


def run(bundle: Any, out_dir: Path, *, events: int = 200, rate: int = 48000, period: int = 128, blocksize: int = 128,
        server: str | None = None, quick: bool = False, plots: bool = True) -> dict[str, Any]:
    """Run the e2e measurement; raises :class:`Unavailable` with the reason when it cannot run here."""
    try:
        import jack
    except ImportError:
        raise Unavailable("JACK-Client not installed (pip install JACK-Client)") from None
    from melodyrt.rt.bundle import ModelBundle, load_bundle

    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_phrases = max(1, events)  # each phrase: one note onset and one pitch step
    signal, phrases = make_signal(n_phrases, rate)
    machine = machine_info()
    js = JackServer(rate, period, name=server or "melodyrt-bench", start=server is None)
    try:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise Unavailable(f"PortAudio not available: {exc}") from None
        sd._terminate()
        sd._initialize()
        try:
            result = _measure(jack, bundle, signal, phrases, rate, blocksize, out_dir)
        finally:
            sd._terminate()  # before jackd goes away, or PortAudio aborts the process
    finally:
        js.close()
        try:
            import sounddevice as sd

            sd._initialize()
        except OSError:
            pass
    result.update({
        "benchmark": "e2e", "quick": quick, "machine": machine,
        "settings": {"rate": rate, "jack_period": period, "blocksize": blocksize, "phrases": n_phrases,
                     "events_per_kind": n_phrases, "rest_s": REST_S, "note_s": NOTE_S, "cents_ok": CENTS_OK,
                     "server": "private jackd -d dummy" if server is None else server},
        "model": {"name": bundle.name, "dir": str(bundle.root), "untrained": _is_untrained(bundle)},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if plots:
        result["plots"] = write_plot(result, out_dir)
    (out_dir / "e2e_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "e2e_bench.md").write_text(markdown(result))
    return result


def _measure(jack: Any, bundle: Any, signal: np.ndarray, phrases: list[Phrase], rate: int, blocksize: int,
             out_dir: Path) -> dict[str, Any]:
    from melodyrt.rt.midi_out import MidiSink
    from melodyrt.rt.osc_out import OscSink
    from melodyrt.rt.source import AudioSource, SourceConfig, resolve_input
    from melodyrt.rt.tracker import Tracker

    # python-rtmidi holds the GIL while it opens its JACK client, and the probe's process
    # callback needs the GIL to finish a cycle: open the MIDI port before the probe is active
    # and deactivate the probe before the sink closes its port, or the two wait for each other.
    midi = MidiSink(virtual=True, api="jack", client_name="melodyrt", virtual_port_name="out")
    probe = Probe(jack, signal)
    listener = OscListener(probe)
    active = True
    try:
        src = [p for p in probe.client.get_ports(is_midi=True, is_output=True) if p.name.startswith("melodyrt:")]
        if len(src) != 1:
            raise MelodyRTError(f"expected the MIDI sink's port, found {[p.name for p in src]}")
        probe.client.connect(src[0], probe.midi_in)
        cfg = SourceConfig(device="system", rate=rate, blocksize=blocksize)
        device, dev_rate = resolve_input(cfg)
        tracker = Tracker(dev_rate, bundle, backend="ort")
        osc = OscSink("127.0.0.1", listener.port)
        source = AudioSource(tracker, [midi, osc], cfg, device)
        source.start()
        try:
            capture = probe.connect_to_capture()
            time.sleep(0.3)
            probe.play.set()
            deadline = time.monotonic() + signal.shape[0] / rate + 10.0
            while not probe.done and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            probe.client.deactivate()
            active = False
            stats = source.stop()  # closes the sinks
        latency = tracker.latency(blocksize, source.buffering_samples)
        if probe.start_frame is None:
            raise MelodyRTError("the probe never started playing")
        timeline = probe.timeline()
        res = analyse(phrases, timeline, list(probe.midi), list(listener.got), rate)
        return {
            "latency": res,
            "algorithmic": latency.as_dict(),
            "capture_port": capture,
            "device": device["name"],
            "xruns": {"probe": probe.xruns, "source": stats.xruns},
            # How far the probe's playback fell behind a gapless one (cycles it missed).
            "probe_slipped_frames": timeline.slipped_frames,
            "source": stats.line(),
            "midi_messages": len(probe.midi),
            "osc_datagrams": len(listener.got),
        }
    finally:
        listener.close()
        if active:
            probe.client.deactivate()
        probe.client.close()
        midi.close()


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


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    lines = [f"# melodyrt bench e2e{' (quick mode: checks the machinery, not the latency)' if result['quick'] else ''}", "",
             machine_line(m),
             f"JACK dummy driver at {s['rate']} Hz, period {s['jack_period']}, stream blocksize {s['blocksize']}; "
             f"{s['phrases']} phrases (rest {s['rest_s']} s, note {s['note_s']} s, step to another note {s['note_s']} s); "
             f"model {result['model']['name']}; xruns: probe {result['xruns']['probe']}, source {result['xruns']['source']}.", "",
             f"| event | answered / played | p50 ms | p99 ms | max ms | first {DRIFT_EVENTS} p50 ms | last {DRIFT_EVENTS} p50 ms "
             "| slope ms/min |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, v in result["latency"].items():
        if "p50_ms" in v:
            lines.append(f"| {k} | {v['answered']} / {v['events']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['max_ms']:.2f} "
                         f"| {v['first_p50_ms']:.2f} | {v['last_p50_ms']:.2f} | {v['slope_ms_per_min']:+.2f} |")
        else:
            lines.append(f"| {k} | 0 / {v['events']} | - | - | - | - | - | - |")
    slipped = result.get("probe_slipped_frames", 0)
    lines += ["", f"The probe missed {slipped} frames of playback ({slipped / s['rate'] * 1000:.1f} ms) to xruns; "
              "acoustic events are placed on its logged timeline, so this does not enter the latencies."]
    a = result["algorithmic"]
    lines += ["", f"Algorithmic delay the tracker reports: {a['algorithmic']['ms']:.2f} ms (+ hop wait mean "
              f"{a['hop_wait_mean']['ms']:.2f} ms, buffering {a['audio_buffering']['ms']:.2f} ms). "
              "Pitch change = first arrival within 50 cents of the new note (MIDI: note + bend)."]
    if result["model"].get("untrained"):
        lines.append("The model is untrained: most events go unanswered.")
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return "\n".join(lines) + "\n"

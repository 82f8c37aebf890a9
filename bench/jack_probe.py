"""A JACK client in its own process: plays a signal into a port, stamps MIDI and OSC arrivals.

Why a process of its own
------------------------
A JACK-Client process callback is Python: it needs the GIL inside JACK's real-time thread.
In the tracker's process any GIL hold (the tracker's Python code, numba or ONNX Runtime set-up,
a full garbage collection of ~44 ms) made it late; jackd then reported an xrun blaming the
probe, notified every client, and PortAudio flagged ``input_overflow`` on the tracker's stream
for an xrun the tracker did not cause. Here the probe has its own interpreter and GIL, its
other threads only block in system calls, and everything it records goes into preallocated
arrays (the garbage collector is off), so nothing in the tracker's process can delay it.

Run it
------
::

    python -m melodyrt.bench.jack_probe --signal x.npy --out result.npz [--loop] [--seconds S]
        [--start-delay S] [--tail S] [--capture] [--connect PORT] [--midi-from PORT] [--osc]

(the parent-side :class:`ProbeProcess` spawns it and speaks the protocol below). It joins the
server named by ``JACK_DEFAULT_SERVER`` as client ``--name`` with an audio output ``out`` and
a MIDI input ``midi_in``.

- Playback starts on the ``play`` command, or by itself ``--start-delay`` seconds after the
  ports are connected. It plays the signal once, or looped (``--loop``) for ``--seconds``
  (default: until told to stop). Every played cycle logs (JACK frame of the cycle's first
  sample, stream position written there); the position counts samples played since the
  start, so with ``--loop`` signal sample ``i`` of repetition ``k`` is position
  ``k * len(signal) + i``. A cycle the server runs without the probe plays nothing, so the
  log stays exact across xruns (see :class:`~melodyrt.bench.e2e_bench.Timeline`).
- MIDI events arriving at ``midi_in`` are stamped ``last_frame_time + offset``.
- With ``--osc`` it listens on a UDP port on 127.0.0.1 (``--osc-port``, 0 = any, reported
  in the ``ready`` line) and stamps each datagram with the client's ``frame_time``.
- It counts the xrun notifications the server sends it (with their delays).

Protocol: one command per stdin line, one JSON line on stdout in reply (``{"ok": true, ...}``
or ``{"ok": false, "error": "..."}``); the first stdout line is ``{"event": "ready", ...}``
(ports, OSC port, rate, period) and the last ``{"event": "done", "out": PATH}``. Commands:

- ``play``, ``stop`` (silence; ``play`` resumes where it stopped)
- ``status``: JACK frame time, position, cycles, MIDI/OSC counts, xruns, ``done``
- ``connect SRC DST``, ``disconnect SRC DST``: any two ports (names without spaces)
- ``capture``: connect ``out`` to the one foreign audio input port (the tracker's stream),
  replacing its other connections; replies with its name
- ``ports [audio|midi] [in|out] [PATTERN]``: port names (JACK's regular expression)
- ``quit``

It exits, writing everything to ``--out`` (.npz, written to a temporary name and renamed), on
``quit``, when stdin closes (the parent died: it never outlives it), on SIGTERM or SIGINT,
when the JACK server shuts down, or ``--tail`` seconds after playback ended (``inf``: only
on the others).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

_clock = time.perf_counter

#: Xrun delays kept (the count goes on past it).
_MAX_XRUN_LOG = 4096
#: Largest UDP datagram read.
_DGRAM_MAX = 65536


# ================================================================================ the client


class _Recorder:
    """The JACK client and its preallocated records (runs in the probe process)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import jack

        sig = np.load(args.signal, allow_pickle=False)
        self.signal = np.ascontiguousarray(np.asarray(sig, np.float32).reshape(-1))
        if self.signal.size == 0:
            raise SystemExit("jack_probe: the signal is empty")
        self.loop = bool(args.loop)
        self.client = jack.Client(args.name, no_start_server=True)
        self.rate = int(self.client.samplerate)
        self.period = int(self.client.blocksize)
        n = self.signal.shape[0]
        if args.seconds is not None:
            self.total = int(round(args.seconds * self.rate)) if self.loop else min(n, int(round(args.seconds * self.rate)))
        else:
            self.total = -1 if self.loop else n  # -1: looped until told to stop
        # One row per played cycle (a period change mid-run would count cycles_unlogged).
        cap = (int(args.log_seconds * self.rate) if self.total == -1 else self.total) // self.period + 64
        self.cycle_frame = np.zeros(cap, np.int64)
        self.cycle_pos = np.zeros(cap, np.int64)
        self.cycles = 0
        self.cycles_unlogged = 0
        self.pos = 0  # samples played
        self.start_frame = -1
        self.playing = False
        # MIDI: stamps, offsets into one byte pool
        self.midi_frame = np.zeros(args.max_midi, np.int64)
        self.midi_off = np.zeros(args.max_midi + 1, np.int64)
        self.midi_pool = bytearray(args.max_midi * 4)
        self._midi_mv = memoryview(self.midi_pool)
        self.n_midi = 0
        self.midi_used = 0
        self.midi_lost = 0
        # OSC
        self.osc_frame = np.zeros(args.max_osc if args.osc else 1, np.int64)
        self.osc_off = np.zeros(self.osc_frame.shape[0] + 1, np.int64)
        self.osc_pool = bytearray(args.max_osc_bytes if args.osc else 1)
        self._osc_mv = memoryview(self.osc_pool)
        self._osc_scratch = bytearray(_DGRAM_MAX)
        self.n_osc = 0
        self.osc_used = 0
        self.osc_lost = 0
        self.sock: socket.socket | None = None
        if args.osc:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind(("127.0.0.1", args.osc_port))
            self.sock.settimeout(0.1)
        # xruns
        self.xruns = 0
        self.xrun_delay_us = np.zeros(_MAX_XRUN_LOG, np.float64)
        self.xrun_frame = np.zeros(_MAX_XRUN_LOG, np.int64)
        self.server_gone = ""
        self.callbacks = 0
        self.cb_sum = self.cb_max = self.gap_max = self._t_last = 0.0
        self.stopping = threading.Event()
        self.out = self.client.outports.register("out")
        self.midi_in = self.client.midi_inports.register("midi_in")
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.set_shutdown_callback(self._shutdown)
        self._osc_thread: threading.Thread | None = None

    # ------------------------------------------------------------ JACK's real-time thread

    def _process(self, frames: int) -> None:
        t0 = _clock()
        self._work(frames)
        t1 = _clock()
        # own cost and wake-up gaps, for telling a slow probe from a stalled machine
        took = t1 - t0
        self.cb_sum += took
        if took > self.cb_max:
            self.cb_max = took
        if self._t_last > 0.0 and t0 - self._t_last > self.gap_max:
            self.gap_max = t0 - self._t_last
        self._t_last = t0
        self.callbacks += 1

    def _work(self, frames: int) -> None:
        buf = self.out.get_array()
        base = self.client.last_frame_time
        for offset, data in self.midi_in.incoming_midi_events():
            k, p, n = self.n_midi, self.midi_used, len(data)
            if k < self.midi_frame.shape[0] and p + n <= len(self.midi_pool):
                self.midi_frame[k] = base + offset
                self._midi_mv[p : p + n] = data
                self.midi_used = p + n
                self.midi_off[k + 1] = p + n
                self.n_midi = k + 1
            else:
                self.midi_lost += 1
        if not self.playing or self.pos == self.total:
            buf.fill(0.0)
            return
        if self.start_frame < 0:
            self.start_frame = base
        c = self.cycles
        if c < self.cycle_frame.shape[0]:
            self.cycle_frame[c] = base
            self.cycle_pos[c] = self.pos
            self.cycles = c + 1
        else:
            self.cycles_unlogged += 1
        todo = frames if self.total < 0 else min(frames, self.total - self.pos)
        sig = self.signal
        n = sig.shape[0]
        w = 0
        while w < todo:
            i = (self.pos + w) % n if self.loop else self.pos + w
            m = min(todo - w, n - i)
            buf[w : w + m] = sig[i : i + m]
            w += m
        if todo < frames:
            buf[todo:] = 0.0
        self.pos += todo

    # ------------------------------------------------------------ other threads

    def _xrun(self, delay_us: float) -> None:  # JACK's notification thread
        k = self.xruns
        if k < _MAX_XRUN_LOG:
            self.xrun_delay_us[k] = delay_us
            self.xrun_frame[k] = self.client.frame_time
        self.xruns = k + 1

    def _shutdown(self, status: Any, reason: str) -> None:
        self.server_gone = str(reason) or "JACK server shut down"
        self.stopping.set()

    def _listen(self) -> None:
        """OSC receiver: ``recv_into`` the pool (blocking calls release the GIL)."""
        assert self.sock is not None
        mv = self._osc_mv
        scratch = self._osc_scratch
        while not self.stopping.is_set():
            k, p = self.n_osc, self.osc_used
            room = len(self.osc_pool) - p
            full = k >= self.osc_frame.shape[0] or room < _DGRAM_MAX
            try:
                n = self.sock.recv_into(scratch if full else mv[p:], 0 if full else _DGRAM_MAX)
            except socket.timeout:
                continue
            except OSError:
                return
            stamp = self.client.frame_time
            if full:
                self.osc_lost += 1
                continue
            self.osc_frame[k] = stamp
            self.osc_used = p + n
            self.osc_off[k + 1] = p + n
            self.n_osc = k + 1

    # ------------------------------------------------------------ control (main thread)

    def start(self) -> None:
        self.client.activate()
        if self.sock is not None:
            self._osc_thread = threading.Thread(target=self._listen, name="osc", daemon=True)
            self._osc_thread.start()

    @property
    def done(self) -> bool:
        return self.pos == self.total

    def status(self) -> dict[str, Any]:
        return {"frame_time": int(self.client.frame_time), "last_frame_time": int(self.client.last_frame_time),
                "pos": int(self.pos), "playing": self.playing, "done": self.done, "start_frame": int(self.start_frame),
                "cycles": int(self.cycles), "midi": int(self.n_midi), "osc": int(self.n_osc), "xruns": int(self.xruns),
                **self.timing()}

    def timing(self) -> dict[str, float]:
        """The process callback's cost (mean, max) and the longest gap between two starts [us]."""
        n = max(1, self.callbacks)
        return {"callbacks": self.callbacks, "callback_mean_us": round(1e6 * self.cb_sum / n, 1),
                "callback_max_us": round(1e6 * self.cb_max, 1), "callback_gap_max_us": round(1e6 * self.gap_max, 1)}

    def capture(self) -> str:
        own = self.client.name + ":"
        ports = [p for p in self.client.get_ports(is_audio=True, is_input=True)
                 if not p.name.startswith(("system:", own))]
        if len(ports) != 1:
            raise ValueError(f"expected one foreign audio input port, found {[p.name for p in ports]}")
        target = ports[0]
        for other in self.client.get_all_connections(target):
            self.client.disconnect(other, target)
        self.client.connect(self.out, target)
        return str(target.name)

    def ports(self, name: str) -> str:
        """An own port by short name (``out``, ``midi_in``), any other port as given."""
        return f"{self.client.name}:{name}" if name in ("out", "midi_in") else name

    def finish(self, out: Path) -> None:
        self.stopping.set()
        end_frame = int(self.client.frame_time)
        self.client.deactivate()
        if self._osc_thread is not None:
            self._osc_thread.join(timeout=1.0)
        if self.sock is not None:
            self.sock.close()
        self.client.close()
        c, m, o, x = self.cycles, self.n_midi, self.n_osc, min(self.xruns, _MAX_XRUN_LOG)
        tmp = out.with_name(out.name + ".part.npz")
        np.savez(
            tmp,
            rate=self.rate, period=self.period, loop=self.loop, signal_len=self.signal.shape[0],
            total=self.total, played=self.pos, start_frame=self.start_frame, end_frame=end_frame,
            cycle_frame=self.cycle_frame[:c], cycle_pos=self.cycle_pos[:c], cycles_unlogged=self.cycles_unlogged,
            midi_frame=self.midi_frame[:m], midi_off=self.midi_off[: m + 1],
            midi_data=np.frombuffer(self.midi_pool, np.uint8)[: self.midi_used].copy(), midi_lost=self.midi_lost,
            osc_frame=self.osc_frame[:o], osc_off=self.osc_off[: o + 1],
            osc_data=np.frombuffer(self.osc_pool, np.uint8)[: self.osc_used].copy(), osc_lost=self.osc_lost,
            xruns=self.xruns, xrun_delay_us=self.xrun_delay_us[:x], xrun_frame=self.xrun_frame[:x],
            server_gone=self.server_gone, timing=json.dumps(self.timing()),
        )
        os.replace(tmp, out)


def _realtime(priority: int) -> bool:
    """Put this thread, and so every thread started after it (libjack's notification thread,
    the OSC and stdin readers), under SCHED_FIFO ``priority``.

    The process callback waits for the GIL whenever another thread of the probe holds it. A
    normal thread holding it can be preempted by any busy process for a whole time slice, and
    the cycle is late (an xrun jackd blames on the probe; seen under load with the probe
    alone). Real-time threads that only block in system calls hold it for microseconds.
    Below JACK's client threads (jackd's priority 10 - 5 by default). False when refused.
    """
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, ValueError):
        return False


def _reply(obj: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):  # the parent is gone
        pass


def _read_stdin(commands: "queue.Queue[str | None]") -> None:
    for line in sys.stdin:
        commands.put(line)
    commands.put(None)  # EOF: the parent closed our stdin or died


def _handle(rec: _Recorder, line: str) -> bool:
    """Run one command and reply; False for ``quit``."""
    words = line.split()
    if not words:
        return True
    cmd, rest = words[0], words[1:]
    try:
        if cmd == "quit":
            _reply({"ok": True, "cmd": cmd})
            return False
        if cmd == "play":
            rec.playing = True
            _reply({"ok": True, "cmd": cmd})
        elif cmd == "stop":
            rec.playing = False
            _reply({"ok": True, "cmd": cmd})
        elif cmd == "status":
            _reply({"ok": True, "cmd": cmd, **rec.status()})
        elif cmd in ("connect", "disconnect") and len(rest) == 2:
            src, dst = (rec.ports(w) for w in rest)
            (rec.client.connect if cmd == "connect" else rec.client.disconnect)(src, dst)
            _reply({"ok": True, "cmd": cmd, "src": src, "dst": dst})
        elif cmd == "capture":
            _reply({"ok": True, "cmd": cmd, "port": rec.capture()})
        elif cmd == "ports":
            kinds = {"audio": "is_audio", "midi": "is_midi", "in": "is_input", "out": "is_output"}
            flags = {kinds[w]: True for w in rest if w in kinds}
            pattern = next((w for w in rest if w not in kinds), "")
            _reply({"ok": True, "cmd": cmd, "ports": [q.name for q in rec.client.get_ports(pattern, **flags)]})
        else:
            _reply({"ok": False, "cmd": cmd, "error": f"unknown command or arguments: {line.strip()!r}"})
    except Exception as exc:  # a failed command is reported, the probe goes on
        _reply({"ok": False, "cmd": cmd, "error": f"{type(exc).__name__}: {exc}"})
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m melodyrt.bench.jack_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--signal", required=True, help=".npy file: float32 samples at the server's rate")
    p.add_argument("--out", required=True, help=".npz file written on exit")
    p.add_argument("--name", default="mrt-probe", help="JACK client name (default mrt-probe)")
    p.add_argument("--loop", action="store_true", help="play the signal looped")
    p.add_argument("--seconds", type=float, help="play this long (default: the signal once; looped: until stopped)")
    p.add_argument("--start-delay", type=float, help="start playing by itself this long after the connections [s]")
    p.add_argument("--tail", type=float, default=1.0, help="exit this long after playback ended [s] (inf: never by itself)")
    p.add_argument("--capture", action="store_true", help="connect out to the tracker's capture port at start")
    p.add_argument("--connect", action="append", default=[], help="connect out to this port at start (repeatable)")
    p.add_argument("--midi-from", action="append", default=[], help="connect this MIDI output to midi_in at start")
    p.add_argument("--osc", action="store_true", help="listen for OSC on 127.0.0.1")
    p.add_argument("--osc-port", type=int, default=0, help="UDP port (default 0: the OS picks; see the ready line)")
    p.add_argument("--max-midi", type=int, default=1 << 18, help="MIDI events kept (default 262144)")
    p.add_argument("--max-osc", type=int, default=1 << 17, help="OSC datagrams kept (default 131072)")
    p.add_argument("--max-osc-bytes", type=int, default=1 << 25, help="OSC bytes kept (default 32 MiB)")
    p.add_argument("--log-seconds", type=float, default=7200.0,
                   help="looped without --seconds: cycles logged for this long (default 2 h)")
    p.add_argument("--priority", type=int, default=4,
                   help="SCHED_FIFO priority of the probe's other threads (0: leave them normal; default 4)")
    args = p.parse_args(argv)

    _realtime(args.priority)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.setswitchinterval(0.0005)  # the process thread waits at most this for another thread's GIL
    rec = _Recorder(args)
    # Everything the callbacks use is allocated: a collection could only delay the process
    # thread (and a first full one takes milliseconds), so collect once before activating.
    gc.collect()
    gc.freeze()
    gc.disable()
    rec.start()
    connected: list[str] = []
    try:
        for dst in args.connect:
            rec.client.connect(rec.out, dst)
            connected.append(dst)
        for src in args.midi_from:
            rec.client.connect(src, rec.midi_in)
        if args.capture:
            connected.append(rec.capture())
    except Exception as exc:
        _reply({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        rec.finish(Path(args.out))
        return 2
    _reply({"event": "ready", "pid": os.getpid(), "name": rec.client.name, "out": rec.out.name,
            "midi_in": rec.midi_in.name, "osc_port": rec.sock.getsockname()[1] if rec.sock else None,
            "rate": rec.rate, "period": rec.period, "connected": connected, "total": rec.total})
    commands: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_read_stdin, args=(commands,), name="stdin", daemon=True).start()
    auto = time.monotonic() + args.start_delay if args.start_delay is not None else None
    ended: float | None = None
    while not stop.is_set() and not rec.stopping.is_set():
        try:
            line = commands.get(timeout=0.05)
        except queue.Empty:
            line = ""
        if line is None or (line and not _handle(rec, line)):
            break
        now = time.monotonic()
        if auto is not None and now >= auto:
            rec.playing, auto = True, None
        if rec.done:
            ended = ended if ended is not None else now
            if now - ended >= args.tail:
                break
    rec.finish(Path(args.out))
    _reply({"event": "done", "out": str(args.out), "server_gone": rec.server_gone})
    return 0


# ================================================================================ the parent


def stop_process(proc: "subprocess.Popen[Any]", timeout: float = 10.0) -> None:
    """SIGTERM a child process if it still runs, SIGKILL it after ``timeout`` [s]; reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ProbeError(RuntimeError):
    """The probe process failed to start, answer or finish (the message carries its stderr)."""


@dataclass
class ProbeResult:
    """What a finished probe recorded (loaded from its .npz).

    Attributes
    ----------
    cycle_frame, cycle_pos : ndarray [shape=(cycles,)] [int64]
        Per played cycle: JACK frame of its first sample, stream position written there.
    midi : list of (int, bytes)
        JACK frame and bytes of every MIDI event received, in arrival order.
    osc : list of (int, bytes)
        JACK frame time at arrival and bytes of every OSC datagram received.
    xruns : int
        Xrun notifications the server sent the probe.
    timing : dict
        The process callback's mean and max cost and the longest gap between two of its
        starts [us] (a gap over two periods: the probe, or the whole machine, stalled).
    """

    rate: int
    period: int
    signal_len: int
    played: int
    start_frame: int | None
    end_frame: int
    cycle_frame: np.ndarray
    cycle_pos: np.ndarray
    cycles_unlogged: int
    midi: list[tuple[int, bytes]]
    midi_lost: int
    osc: list[tuple[int, bytes]]
    osc_lost: int
    xruns: int
    xrun_delay_us: np.ndarray
    xrun_frame: np.ndarray
    server_gone: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    stderr: str = field(default="", repr=False)

    @classmethod
    def load(cls, path: str | Path, stderr: str = "") -> "ProbeResult":
        with np.load(path, allow_pickle=False) as z:
            def events(frame: np.ndarray, off: np.ndarray, data: np.ndarray) -> list[tuple[int, bytes]]:
                raw = data.tobytes()
                return [(int(frame[i]), raw[off[i] : off[i + 1]]) for i in range(frame.shape[0])]

            start = int(z["start_frame"])
            return cls(
                rate=int(z["rate"]), period=int(z["period"]), signal_len=int(z["signal_len"]), played=int(z["played"]),
                start_frame=None if start < 0 else start, end_frame=int(z["end_frame"]),
                cycle_frame=z["cycle_frame"].copy(), cycle_pos=z["cycle_pos"].copy(),
                cycles_unlogged=int(z["cycles_unlogged"]),
                midi=events(z["midi_frame"], z["midi_off"], z["midi_data"]), midi_lost=int(z["midi_lost"]),
                osc=events(z["osc_frame"], z["osc_off"], z["osc_data"]), osc_lost=int(z["osc_lost"]),
                xruns=int(z["xruns"]), xrun_delay_us=z["xrun_delay_us"].copy(), xrun_frame=z["xrun_frame"].copy(),
                server_gone=str(z["server_gone"]), timing=json.loads(str(z["timing"])), stderr=stderr,
            )


class ProbeProcess:
    """Start and drive a probe process (the parent's side of the protocol).

    Parameters
    ----------
    signal : ndarray [shape=(n,)] [float32]
        Played at the server's rate.
    workdir : Path
        Where the signal and the result go (``NAME-signal.npy``, ``NAME.npz``, ``NAME.log``).
    name : str
        JACK client name.
    loop, seconds, start_delay, tail, capture, osc, max_midi, max_osc, max_osc_bytes
        As the command-line options.
    connect, midi_from : sequence of str
        Ports to connect at start.
    env : dict, optional
        Environment (default: this process's; ``JACK_DEFAULT_SERVER`` picks the server).
    ready_timeout : float [s]

    Raises
    ------
    ProbeError
        The probe did not report ready (its stderr is in the message).
    """

    def __init__(self, signal: np.ndarray, workdir: str | Path, *, name: str = "mrt-probe", loop: bool = False,
                 seconds: float | None = None, start_delay: float | None = None, tail: float = float("inf"),
                 capture: bool = False, connect: tuple[str, ...] | list[str] = (), midi_from: tuple[str, ...] | list[str] = (),
                 osc: bool = False, max_midi: int | None = None, max_osc: int | None = None,
                 max_osc_bytes: int | None = None, env: dict[str, str] | None = None, ready_timeout: float = 20.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.sig_path = self.workdir / f"{name}-signal.npy"
        self.out_path = self.workdir / f"{name}.npz"
        self.log_path = self.workdir / f"{name}.log"
        np.save(self.sig_path, np.ascontiguousarray(signal, np.float32))
        self.out_path.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--signal", str(self.sig_path), "--out", str(self.out_path),
               "--name", name, "--tail", repr(float(tail))]
        cmd += ["--loop"] * loop + ["--capture"] * capture + ["--osc"] * osc
        for flag, value in (("--seconds", seconds), ("--start-delay", start_delay), ("--max-midi", max_midi),
                            ("--max-osc", max_osc), ("--max-osc-bytes", max_osc_bytes)):
            if value is not None:
                cmd += [flag, str(value)]
        for port in connect:
            cmd += ["--connect", port]
        for port in midi_from:
            cmd += ["--midi-from", port]
        self._log: IO[bytes] = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1, env=env)
        self._replies: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._events: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()
        self.result: ProbeResult | None = None
        try:
            ready = self._events.get(timeout=ready_timeout)
        except queue.Empty:
            ready = None
        if ready is None or ready.get("event") != "ready":
            self.close()
            raise ProbeError(f"probe {name} did not start: {ready.get('error') if ready else 'no ready line'}; "
                             f"{self.stderr()[-1500:]}")
        self.info = ready
        self.osc_port: int | None = ready.get("osc_port")
        self.period = int(ready["period"])
        self.rate = int(ready["rate"])

    # ------------------------------------------------------------------ plumbing

    def _read(self) -> None:
        """Route the probe's stdout: events (ready, done, error) and replies to commands."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            (self._events if "event" in obj else self._replies).put(obj)
        self._events.put(None)
        self._replies.put(None)

    def stderr(self) -> str:
        """What the probe wrote to stderr so far."""
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def request(self, line: str, timeout: float = 10.0) -> dict[str, Any]:
        """Send one command, return its reply.

        Raises
        ------
        ProbeError
            No reply in time, the probe exited, or it reported an error.
        """
        with self._lock:
            if self.proc.poll() is not None or self.proc.stdin is None:
                raise ProbeError(f"probe {self.name} is not running (exit {self.proc.returncode}); {self.stderr()[-800:]}")
            try:
                self.proc.stdin.write(line.strip() + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise ProbeError(f"probe {self.name}: cannot send {line!r}: {exc}") from None
            try:
                reply = self._replies.get(timeout=timeout)
            except queue.Empty:
                reply = None
            if reply is None:
                raise ProbeError(f"probe {self.name}: no reply to {line!r}; {self.stderr()[-800:]}")
            if not reply.get("ok"):
                raise ProbeError(f"probe {self.name}: {line!r} failed: {reply.get('error')}")
            return reply

    # ------------------------------------------------------------------ commands

    def play(self) -> None:
        self.request("play")

    def stop(self) -> None:
        self.request("stop")

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def connect(self, src: str, dst: str) -> None:
        """Connect two ports (``out`` and ``midi_in`` name the probe's own)."""
        self.request(f"connect {src} {dst}")

    def capture(self) -> str:
        """Connect the probe's output to the tracker stream's capture port; its name."""
        return str(self.request("capture")["port"])

    def ports(self, *words: str) -> list[str]:
        """Port names: ``ports("midi", "out")``, ``ports("audio", "in", "system:")``."""
        return [str(x) for x in self.request(" ".join(("ports",) + words))["ports"]]

    def wait_done(self, timeout: float, poll: float = 0.05) -> bool:
        """Wait until the signal has been played (True) or ``timeout`` [s] passed (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return True
            try:
                if self.status()["done"]:
                    return True
            except ProbeError:
                return self.proc.poll() is not None
            time.sleep(poll)
        return False

    def finish(self, timeout: float = 30.0, wait: float = 0.0) -> ProbeResult:
        """Let the probe exit (by itself within ``wait`` [s], else on ``quit``) and load what
        it recorded.

        Raises
        ------
        ProbeError
            It did not exit in ``timeout`` [s] or wrote no result.
        """
        if self.result is not None:
            return self.result
        if wait > 0:
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None and self.proc.stdin is not None:
            with self._lock:
                try:
                    self.proc.stdin.write("quit\n")
                    self.proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise ProbeError(f"probe {self.name} did not exit within {timeout:g} s; {self.stderr()[-800:]}") from None
        finally:
            self._close_pipes()
        if not self.out_path.is_file():
            raise ProbeError(f"probe {self.name} exited with {self.proc.returncode} and wrote no result; "
                             f"{self.stderr()[-1500:]}")
        self.result = ProbeResult.load(self.out_path, self.stderr())
        return self.result

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._log.close()

    def close(self) -> None:
        """Stop the probe if it still runs (SIGTERM, then SIGKILL); idempotent."""
        stop_process(self.proc)
        self._close_pipes()

    def __enter__(self) -> "ProbeProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())

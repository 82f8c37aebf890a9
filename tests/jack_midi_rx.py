"""A JACK MIDI input in a child process: what the MIDI tests read a sink's output from.

Why a child process
-------------------
libjack (JACK2 1.9.21, Debian's) lets a client's port list change under its own notification
thread: ``jack_port_unregister`` erases the port from the client's list while that thread may be
walking the same list to answer a latency notification, which the server sends every client
after any connection change (jackaudio/jack2#216, #340). RtMidi unregisters its port on
``close_port()`` and again in its destructor. A receiver in the test process closing right after
the sink had disconnected from it once crashed the whole pytest run (SIGSEGV in a non-Python
thread, the main thread in ``MidiIn.close_port``; CI, 2026-12-07). Out here that race can only
ever hurt the child, after everything it received has been handed over.

A process of its own also has its own GIL: RtMidi queues in JACK's thread with no Python, and
the child's polling thread never waits for the tests' process.

Protocol (text lines): the child prints ``{"ready": "NAME:in"}`` once its port exists, then one
JSON list per message, ``[delta_s, byte, byte, ...]`` (RtMidi's delta time since the previous
message, stamped in the JACK cycle that delivered it). Any line on its stdin, or stdin closing,
makes it drain what is queued, print ``{"done": N}`` and exit.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

CHILD = r"""
import json, os, sys, threading, time
import rtmidi

name = sys.argv[1]
midi_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name, queue_size_limit=8192)
midi_in.open_virtual_port("in")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
out = sys.stdout
out.write(json.dumps({"ready": name + ":in"}) + "\n")
out.flush()
n = 0
while True:
    last = stop.is_set()           # read before draining: nothing that came first is left behind
    while True:
        event = midi_in.get_message()
        if event is None:
            break
        out.write(json.dumps([event[1], *event[0]]) + "\n")
        n += 1
    out.flush()
    if last:
        break
    time.sleep(0.001)
out.write(json.dumps({"done": n}) + "\n")
out.flush()
midi_in.delete()                   # a clean leave for the server; a crash here loses nothing
os._exit(0)
"""


class MidiReceiver:
    """A JACK MIDI input port ``NAME:in`` (a child process) recording every message in order.

    Parameters
    ----------
    name : str
        JACK client name.
    server : str or None
        JACK server name; None: ``$JACK_DEFAULT_SERVER`` (or JACK's default).

    Attributes
    ----------
    got : list of list of int
        Message bytes, in arrival order (read under :attr:`lock`).
    times : list of float [s]
        Arrival time of each message, from RtMidi's delta times, 0 at the first one.
    """

    def __init__(self, name: str, server: str | None = None, timeout: float = 20.0) -> None:
        self.client = name
        self.port = f"{name}:in"
        self.got: list[list[int]] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        self._t = 0.0
        self._done = threading.Event()
        self._ready: "queue.Queue[str | None]" = queue.Queue()
        env = dict(os.environ)
        if server is not None:
            env["JACK_DEFAULT_SERVER"] = server
        self._err = tempfile.TemporaryFile("w+")   # never a pipe: a chatty libjack cannot block it
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True, env=env)
        self._reader = threading.Thread(target=self._read, name=f"{name}-rx", daemon=True)
        self._reader.start()
        try:
            ready = self._ready.get(timeout=timeout)
        except queue.Empty:
            ready = None
        if ready != self.port:
            self.close()
            raise RuntimeError(f"MIDI receiver {name} did not start: {self.stderr()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = json.loads(line)
            if isinstance(item, list):
                with self.lock:
                    self._t += item[0]
                    self.times.append(self._t)
                    self.got.append([int(b) for b in item[1:]])
            elif "ready" in item:
                self._ready.put(item["ready"])
            elif "done" in item:
                self._done.set()
        self._ready.put(None)
        self._done.set()

    def stderr(self) -> str:
        """What the child printed on stderr so far (its last 2,000 characters)."""
        self._err.flush()
        self._err.seek(0)
        return self._err.read().strip()[-2000:]

    def connect_from(self, src: str) -> None:
        subprocess.run(["jack_connect", src, self.port], check=True, capture_output=True, timeout=10)

    def wait_for(self, n: int, timeout: float = 2.0) -> list[list[int]]:
        """The messages once ``n`` have arrived (or ``timeout`` [s] passed), and any that follow
        within 50 ms."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.got) >= n:
                    break
            time.sleep(0.01)
        time.sleep(0.05)
        with self.lock:
            return list(self.got)

    def take(self) -> list[list[int]]:
        """Every message so far; the record starts again empty."""
        with self.lock:
            out, self.got, self.times = self.got, [], []
        return out

    def note_ons(self) -> int:
        with self.lock:
            return sum(1 for m in self.got if m[0] & 0xF0 == 0x90 and m[2] > 0)

    def close(self) -> None:
        """Everything the child queued is read, then it leaves. Idempotent."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            self._done.wait(10)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        for f in (self.proc.stdin, self.proc.stdout):   # stderr's file stays readable
            if f is not None:
                try:
                    f.close()
                except (BrokenPipeError, OSError):
                    pass

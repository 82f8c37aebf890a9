"""Live audio input: a sounddevice input stream feeding the tracker and its sinks.

Threads
-------
- PortAudio's audio thread runs the input callback. By default (``callback: native``) it is
  machine code that never takes the GIL (:mod:`melodyrt.rt.capture`): it copies the wanted
  channel into a preallocated lock-free ring, counts status flags, stamps the block's ADC
  time and wakes the worker through a pipe. A Python callback (``callback: python``) does
  the same with a :class:`~melodyrt.rt.ring.RingBuffer` and an event, but needs the GIL in
  the audio thread, so anything else holding it (a garbage collection, the tracker's Python
  code) can make it miss the server's deadline: on JACK an xrun for every client of the
  graph.
- A worker thread waits for the signal, pulls at most one device block at a time from the
  ring, runs :meth:`Tracker.process` and hands every frame to the sinks.
- The caller's thread (the CLI's main thread) starts and stops everything and watches for
  the end: a duration, :meth:`AudioSource.request_stop` (safe from a signal handler),
  Ctrl-C, a worker error or the stream stopping by itself (device lost).

Overflows reported by the device and samples dropped because the ring was full are
counted in :class:`SourceStats` and never stop the stream. On stop every sink is closed
(the MIDI sink sends all-notes-off in its ``close()``), even after errors.

Losing the input
----------------
A stream that stops delivering is reported as :class:`AudioStreamLost` (``melodyrt live``
exits with status 3) after every sink was closed: PortAudio marks the stream inactive (a
device unplugged; on JACK, the server stopped or shut our client down), or, on JACK, the
client whose ports the stream records from went away (PortAudio would go on delivering
silence; a passive JACK client of ours, never activated, looks for its ports every 0.5 s).
Once PortAudio's JACK client is dead, every later PortAudio call on it either waits 10
minutes (``Pa_StopStream``) or aborts the process (pa_jack.c asserts in ``Pa_CloseStream``
and ``Pa_Terminate``), so the stream is then left alone and sounddevice's ``Pa_Terminate``
at exit is skipped; the same happens at exit whenever the JACK server PortAudio connected to
no longer answers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import logging
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import AudioInputError, MelodyRTError
from .frames import OnsetCue, PitchFrame, Sink
from .resample import check_rate
from .ring import RingBuffer
from .tracker import LatencyReport, Tracker

log = logging.getLogger(__name__)


#: Python thread switch interval while a stream runs [s] (default 5 ms): how long the audio
#: callback may wait for the worker to release the GIL.
SWITCH_INTERVAL_S = 0.0005


class AudioDeviceError(MelodyRTError):
    """No usable audio input: PortAudio missing, no device matches, unsupported settings."""


class AudioStreamLost(AudioDeviceError):
    """The input stopped while streaming (device unplugged, its JACK client or the server gone).

    Not the user's doing: the CLI exits with :attr:`exit_code` instead of 2.
    """

    exit_code = 3


#: Set once PortAudio's JACK client died with a stream open: PortAudio is unusable here since.
_portaudio_lost = False
_exit_guard_installed = False
#: PortAudio streams this process has open (Pa_Terminate would close them under their owners).
_open_streams: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: How long :func:`input_devices` keeps re-scanning when a JACK server runs but PortAudio's
#: JACK host API did not come up [s].
JACK_RESCAN_S = 3.0


def sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into one clear line."""
    if _portaudio_lost:
        raise AudioDeviceError("PortAudio lost its JACK server earlier in this process; restart to use audio devices")
    try:
        import sounddevice as sd
    except OSError as exc:  # the wheel carries no PortAudio on Linux
        raise AudioDeviceError(
            f"cannot use audio devices: {exc} (Debian/Ubuntu: apt-get install libportaudio2)"
        ) from None
    _guard_exit(sd)
    return sd


# ------------------------------------------------------------------------------ JACK

_JACK_NO_START_SERVER = 0x01
_JACK_SERVER_NAME = 0x04
_libjack_handle: Any = None


def _libjack() -> Any:
    """The system libjack (the one PortAudio's JACK host API runs on), or None."""
    global _libjack_handle
    if _libjack_handle is None:
        try:
            lib = ctypes.CDLL("libjack.so.0")
        except OSError:
            _libjack_handle = False
            return None
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int))
        lib.jack_client_close.argtypes = (ctypes.c_void_p,)
        lib.jack_get_ports.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.jack_get_ports.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong)
        lib.jack_free.argtypes = (ctypes.c_void_p,)
        _libjack_handle = lib
    return _libjack_handle or None


def _jack_open(name: bytes, server: str | None) -> Any:
    """A passive (never activated) JACK client, or None when no server answers."""
    lib = _libjack()
    if lib is None:
        return None
    status = ctypes.c_int(0)
    if server:
        return lib.jack_client_open(name, _JACK_NO_START_SERVER | _JACK_SERVER_NAME, ctypes.byref(status),
                                    server.encode())
    return lib.jack_client_open(name, _JACK_NO_START_SERVER, ctypes.byref(status))


def jack_server_alive(server: str | None = None) -> bool:
    """Whether the JACK server (default: ``$JACK_DEFAULT_SERVER``) accepts a client now."""
    client = _jack_open(b"melodyrt-probe", server)
    if not client:
        return False
    _libjack().jack_client_close(client)
    return True


class _JackWatch:
    """Sees whether the JACK client a PortAudio device stands for still has its ports.

    PortAudio's JACK host API lists every JACK client with ports as a device and connects
    the stream's ports to that client's; when the client goes away the stream keeps running
    and records silence. This passive client (never activated, so it takes no part in the
    process cycle) lists the server's ports.
    """

    def __init__(self, device_name: str) -> None:
        self.prefix = device_name.encode() + b":"
        self.client = _jack_open(b"melodyrt-watch", None)

    def device_present(self) -> bool:
        """True while some port of the device's client exists (or when we cannot tell)."""
        if not self.client:
            return True
        lib = _libjack()
        ports = lib.jack_get_ports(self.client, None, None, 0)
        if not ports:
            return False
        try:
            i = 0
            while ports[i] is not None:
                if ports[i].startswith(self.prefix):
                    return True
                i += 1
            return False
        finally:
            lib.jack_free(ports)

    def close(self) -> None:
        if self.client:
            _libjack().jack_client_close(self.client)
            self.client = None


def _is_jack(device: dict[str, Any]) -> bool:
    return "JACK" in str(device.get("hostapi", ""))


def _forsake_portaudio() -> None:
    """PortAudio's JACK client is dead: never call PortAudio again in this process."""
    global _portaudio_lost
    import sounddevice as sd

    _portaudio_lost = True
    atexit.unregister(sd._exit_handler)


def _guard_exit(sd: Any) -> None:
    """Skip sounddevice's ``Pa_Terminate`` at exit when PortAudio's JACK server is gone.

    Registered after sounddevice's own exit handler, so it runs first (atexit is LIFO).
    """
    global _exit_guard_installed
    if _exit_guard_installed:
        return
    _exit_guard_installed = True
    server = os.environ.get("JACK_DEFAULT_SERVER")

    def guard() -> None:
        if _portaudio_lost:
            return
        try:
            if not sd._initialized or not any("JACK" in a["name"] for a in sd.query_hostapis()):
                return
        except Exception:
            return
        if not jack_server_alive(server):
            atexit.unregister(sd._exit_handler)

    atexit.register(guard)


@dataclass(frozen=True)
class SourceConfig:
    """Audio input settings.

    Attributes
    ----------
    device : int, str or None
        Device index, or a case-insensitive substring of its name (``"USB"``, ``"system"``);
        None: PortAudio's default input.
    rate : int or None [Hz]
        Sample rate; None: the device's default. Any of the resampler's supported rates.
    blocksize : int [frames]
        Frames per callback (and per tracker call).
    channel : int
        Input channel to track (0-based); the stream opens ``channel + 1`` channels.
    ring_seconds : float [s]
        Capacity of the ring between the callback and the worker.
    latency : {"low", "high"}
        PortAudio's suggested input latency.
    worker_priority : int
        SCHED_FIFO priority asked for the worker thread (Linux; 0 = leave it a normal
        thread), so that ordinary processes cannot delay the tracking of a hop. Keep it
        below every audio thread: JACK2 runs its clients' process threads (PortAudio's,
        RtMidi's, a synth's) at the server's priority minus 5, i.e. 5 for the default
        ``jackd -P 10``; a worker at the same priority is not preempted by them, and a hop
        of tracking (~1 ms) then delays their cycle. Refused when the user may not use
        real-time scheduling (see :attr:`SourceStats.worker_realtime`), which is not an
        error.
    callback : {"native", "python"}
        ``native``: the input callback is compiled code that never takes the GIL
        (:mod:`melodyrt.rt.capture`); ``python``: a Python callback (PortAudio's usual
        route, kept for host APIs where the native one cannot be used).
    """

    device: int | str | None = None
    rate: int | None = None
    blocksize: int = 128
    channel: int = 0
    ring_seconds: float = 1.0
    latency: str = "low"
    worker_priority: int = 1
    callback: str = "native"

    def __post_init__(self) -> None:
        if self.blocksize <= 0:
            raise AudioDeviceError(f"blocksize must be positive, got {self.blocksize}")
        if self.channel < 0:
            raise AudioDeviceError(f"input channel must be >= 0, got {self.channel}")
        if self.ring_seconds <= 0:
            raise AudioDeviceError("ring_seconds must be positive")
        if self.latency not in ("low", "high"):
            raise AudioDeviceError(f"latency must be 'low' or 'high', got {self.latency!r}")
        if not 0 <= self.worker_priority <= 99:
            raise AudioDeviceError(f"worker_priority must be 0..99, got {self.worker_priority}")
        if self.callback not in ("native", "python"):
            raise AudioDeviceError(f"callback must be 'native' or 'python', got {self.callback!r}")


# ------------------------------------------------------------------------------ devices


def input_devices(rescan_s: float | None = None) -> list[dict[str, Any]]:
    """Every device with input channels.

    PortAudio looks for a JACK server once, when it is initialised, and leaves its JACK host
    API out without a word when opening a client fails then (a server still starting, or
    one too busy to answer in time: seen on a loaded 2-core machine). So when no JACK
    device is listed but a JACK server (``$JACK_DEFAULT_SERVER`` or the default) accepts a
    client, PortAudio is initialised again until its JACK host API appears or ``rescan_s``
    has passed; never while this process has a stream open.

    Parameters
    ----------
    rescan_s : float or None [s]
        Time allowed for re-scanning; None: :data:`JACK_RESCAN_S`; 0: never.

    Returns
    -------
    devices : list of dict
        ``index``, ``name``, ``hostapi`` (name), ``channels`` (inputs), ``rate`` [Hz]
        (default), ``default`` (bool: PortAudio's default input).
    """
    sd = sounddevice()
    out = _list_inputs(sd)
    budget = JACK_RESCAN_S if rescan_s is None else rescan_s
    if budget <= 0 or any(_is_jack(d) for d in out) or len(_open_streams) or not sd._initialized:
        return out
    if not jack_server_alive(os.environ.get("JACK_DEFAULT_SERVER")):
        return out
    deadline = time.monotonic() + budget
    tries = 0
    while True:
        tries += 1
        sd._terminate()
        sd._initialize()
        out = _list_inputs(sd)
        if any(_is_jack(d) for d in out):
            log.info("PortAudio's JACK host API came up on re-scan %d", tries)
            return out
        if time.monotonic() >= deadline:
            log.warning("a JACK server is running but PortAudio cannot open a client on it (%d re-scans)", tries)
            return out
        time.sleep(0.2)


def _list_inputs(sd: Any) -> list[dict[str, Any]]:
    default = sd.default.device[0]
    try:
        default_index = int(default) if default is not None else -1
    except (TypeError, ValueError):
        default_index = -1
    apis = sd.query_hostapis()
    out = []
    for d in sd.query_devices():
        if d["max_input_channels"] > 0:
            out.append({
                "index": int(d["index"]), "name": str(d["name"]), "hostapi": apis[d["hostapi"]]["name"],
                "channels": int(d["max_input_channels"]), "rate": float(d["default_samplerate"]),
                "default": int(d["index"]) == default_index,
            })
    return out


def format_devices(devices: Sequence[dict[str, Any]]) -> str:
    """One line per input device, ``*`` marking the default."""
    if not devices:
        return "no audio input devices (no sound card, and no JACK server running?)"
    return "\n".join(
        f"{'*' if d['default'] else ' '} {d['index']:>3}  {d['name']}  [{d['hostapi']}, {d['channels']} in, "
        f"{d['rate']:g} Hz]" for d in devices
    )


def _brief(devices: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"{d['index']}: {d['name']} ({d['hostapi']})" for d in devices) or "none"


def find_input_device(spec: int | str | None) -> dict[str, Any]:
    """The input device meant by ``spec`` (index, name substring, or None for the default).

    Raises
    ------
    AudioDeviceError
        One line naming the available input devices.
    """
    devices = input_devices()
    if not devices:
        raise AudioDeviceError(format_devices(devices))
    if spec is None:
        for d in devices:
            if d["default"]:
                return d
        raise AudioDeviceError(f"no default input device; choose one with --device (inputs: {_brief(devices)})")
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        for d in devices:
            if d["index"] == int(text):
                return d
        raise AudioDeviceError(f"no input device with index {text} (inputs: {_brief(devices)})")
    low = text.lower()
    exact = [d for d in devices if d["name"].lower() == low]
    if len(exact) == 1:
        return exact[0]
    found = [d for d in devices if low in f"{d['name']} {d['hostapi']}".lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise AudioDeviceError(f"no input device matches {text!r} (inputs: {_brief(devices)})")
    raise AudioDeviceError(f"{text!r} matches several input devices, use the index: {_brief(found)}")


def resolve_input(config: SourceConfig) -> tuple[dict[str, Any], int]:
    """Pick the device and check it can record at the rate (default: the device's).

    Returns
    -------
    device : dict
        As in :func:`input_devices`.
    rate : int [Hz]

    Raises
    ------
    AudioDeviceError
    """
    dev = find_input_device(config.device)
    if config.channel >= dev["channels"]:
        raise AudioDeviceError(f"{dev['name']} has {dev['channels']} input channel(s); channel {config.channel} requested")
    rate = config.rate if config.rate is not None else int(round(dev["rate"]))
    try:
        rate = check_rate(rate, f"sample rate for {dev['name']}:")
    except AudioInputError as exc:
        raise AudioDeviceError(str(exc)) from None
    sd = sounddevice()
    try:
        sd.check_input_settings(device=dev["index"], channels=config.channel + 1, dtype="float32", samplerate=rate)
    except Exception as exc:  # sounddevice raises PortAudioError / ValueError
        raise AudioDeviceError(f"{dev['name']} cannot record {config.channel + 1} channel(s) at {rate} Hz: {exc}") from None
    return dev, rate


# ------------------------------------------------------------------------------- source


@dataclass(frozen=True)
class SourceStats:
    """Counters of a running or finished stream.

    Attributes
    ----------
    callbacks : int
        Audio callbacks so far.
    status_events : int
        Callbacks with any PortAudio status flag set.
    overflows : int
        Callbacks flagged ``input_overflow`` (xruns: audio lost before it reached us).
    dropped_samples : int [samples]
        Samples dropped because the ring was full (the worker fell behind).
    blocks : int
        Blocks the worker processed.
    frames : int
        Frames produced.
    max_fill : int [samples]
        Most samples waiting in the ring when the worker looked.
    sink_errors : int
        Exceptions raised by sinks (each sink is isolated from the others).
    lag_mean, lag_max : float [samples]
        ``samples fed - 1 - frame.sample`` when frames were produced: algorithmic delay plus
        hop wait, as the tracker reports it.
    seconds : float [s]
        Wall-clock time since the stream started.
    worker_realtime : bool
        The worker thread got its real-time priority.
    nonfinite_samples : int [samples]
        NaN or inf input samples the tracker replaced by 0.
    """

    callbacks: int
    status_events: int
    overflows: int
    dropped_samples: int
    blocks: int
    frames: int
    max_fill: int
    sink_errors: int
    lag_mean: float
    lag_max: float
    seconds: float
    worker_realtime: bool = False
    nonfinite_samples: int = 0

    @property
    def xruns(self) -> int:
        """Overflow callbacks plus ring drops (0 on a healthy stream)."""
        return self.overflows + (1 if self.dropped_samples else 0)

    def line(self) -> str:
        """One-line summary."""
        return (f"{self.frames} frames in {self.seconds:.1f} s, {self.callbacks} callbacks, "
                f"{self.overflows} overflow(s), {self.dropped_samples} dropped sample(s), "
                f"{self.sink_errors} sink error(s), worker {'real-time' if self.worker_realtime else 'normal'} priority"
                + (f", {self.nonfinite_samples} NaN/inf sample(s) replaced by 0" if self.nonfinite_samples else ""))


class AudioSource:
    """A sounddevice input stream driving a :class:`Tracker` and sinks from a worker thread.

    Parameters
    ----------
    tracker : Tracker
        Its ``input_rate`` must be the device rate (see :func:`resolve_input`).
    sinks : sequence of Sink
        Receive every frame in order; closed by :meth:`stop`.
    config : SourceConfig
    device : dict, optional
        From :func:`resolve_input` (default: resolved from ``config``).
    pre : callable, optional
        ``block -> block`` applied in the worker before the tracker (an effects chain's
        ``process``); declare its delay to the tracker (``pre_delay_samples``).

    Examples
    --------
    >>> dev, rate = resolve_input(SourceConfig(device="system"))   # doctest: +SKIP
    >>> source = AudioSource(Tracker(rate), [MidiSink(virtual=True)], SourceConfig(device="system"), dev)
    >>> source.run(seconds=10)
    """

    def __init__(
        self,
        tracker: Tracker,
        sinks: Sequence[Sink] = (),
        config: SourceConfig | None = None,
        device: dict[str, Any] | None = None,
        pre: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.config = config or SourceConfig()
        self.pre = pre
        if device is None:
            device, rate = resolve_input(self.config)
            if rate != tracker.input_rate:
                raise AudioDeviceError(f"tracker runs at {tracker.input_rate} Hz but the device records at {rate} Hz")
        self.device = device
        self.tracker = tracker
        self.sinks = list(sinks)
        # sinks that act on onset cues between frames (MIDI, OSC); the rest see frames only
        self._cue_sinks = [s.cue for s in self.sinks if callable(getattr(s, "cue", None))]
        self.rate = tracker.input_rate
        cap = max(4 * self.config.blocksize, int(self.config.ring_seconds * self.rate))
        self._ring = RingBuffer(cap, np.float32)
        self._buf = np.zeros(self.config.blocksize, np.float32)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._stream: Any = None
        self._error: BaseException | None = None
        self._closed = False
        self._callbacks = self._status = self._overflows = 0
        self._blocks = self._frames = self._max_fill = self._sink_errors = self._fill = 0
        self._lag_sum = 0.0
        self._lag_max = 0.0
        self._t0 = 0.0
        self._switch: float | None = None
        self._worker_rt = False
        self._status_log: list[tuple[int, str]] = []
        self.buffering_samples = 0.0
        self.native = self.config.callback == "native"
        self._capture: Any = None
        self._cap_samples = cap
        self._watch: _JackWatch | None = None
        self._abandoned = False
        self._wake: Callable[[float], bool] = self._wait_event
        self._pop: Callable[[np.ndarray], int] = self._pop_ring

    # ---------------------------------------------------------------- audio thread

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._callbacks += 1
        if status:
            self._status += 1
            if status.input_overflow:
                self._overflows += 1
            if len(self._status_log) < 16:  # rare: allocation here is acceptable
                self._status_log.append((self._callbacks, str(status)))
        with self._lock:
            self._ring.write(indata[:, self.config.channel])
        self._ready.set()

    # ---------------------------------------------------------------- worker thread

    def _work(self) -> None:
        prio = self.config.worker_priority
        if prio and hasattr(os, "sched_setscheduler"):
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))  # this thread only
                self._worker_rt = True
            except (OSError, ValueError):
                pass
        try:
            while True:
                self._wake(0.05)
                if self._capture is not None and self.wants_stamps:
                    rows = self._capture.new_stamps()
                    if rows.shape[0]:
                        self._on_stamps(rows)
                while self._drain_one():
                    pass
                if self._stop.is_set():
                    while self._drain_one():  # what arrived before the stream stopped
                        pass
                    return
        except BaseException as exc:  # reported by the controlling thread
            self._error = exc
            self._stop.set()

    #: Subclasses that need each callback's time stamps set this and implement
    #: :meth:`_on_stamps` (native callback) as well as overriding :meth:`_callback` (Python one).
    wants_stamps = False

    def _on_stamps(self, rows: np.ndarray) -> None:
        """Worker thread, native callback: stamps of the callbacks since the last call.

        Parameters
        ----------
        rows : ndarray [shape=(k, 4)] [float64]
            Per callback: samples delivered before it, ADC time of its first sample [s],
            PortAudio's current time [s] (the stream's clock), status flags.
        """

    def stream_clock_offset(self) -> float | None:
        """``time.monotonic()`` minus the stream's clock (PortAudio's stream time) [s], read now."""
        stream = self._stream
        if stream is None:
            return None
        try:
            return time.monotonic() - float(stream.time)
        except Exception:  # a stream that just closed
            return None

    def _wait_event(self, timeout: float) -> bool:
        woken = self._ready.wait(timeout)
        self._ready.clear()
        return woken

    def _pop_ring(self, out: np.ndarray) -> int:
        with self._lock:
            self._fill = len(self._ring)
            return self._ring.read(out)

    def _pop_native(self, out: np.ndarray) -> int:
        self._fill = len(self._capture)
        return self._capture.pop(out)

    def _drain_one(self) -> bool:
        n = self._pop(self._buf)
        if n == 0:
            return False
        self._max_fill = max(self._max_fill, self._fill)
        block = self._buf[:n] if self.pre is None else self.pre(self._buf[:n])
        events = self.tracker.process_events(block)
        self._blocks += 1
        if events:
            self._deliver(events)
        return True

    def _deliver(self, events: list[PitchFrame | OnsetCue]) -> None:
        newest = self.tracker.samples_in - 1
        n_frames = 0
        for frame in events:
            if isinstance(frame, OnsetCue):
                for cue in self._cue_sinks:
                    try:
                        cue(frame)
                    except Exception:
                        self._sink_errors += 1
                continue
            n_frames += 1
            lag = newest - frame.sample
            self._lag_sum += lag
            self._lag_max = max(self._lag_max, lag)
            for sink in self.sinks:
                try:
                    sink.send(frame)
                except Exception:
                    self._sink_errors += 1
        self._frames += n_frames

    # ---------------------------------------------------------------- control

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        cap = self._capture
        return SourceStats(
            callbacks=cap.callbacks if cap is not None else self._callbacks,
            status_events=cap.flagged if cap is not None else self._status,
            overflows=self.overflows, dropped_samples=cap.dropped if cap is not None else int(self._ring.dropped),
            blocks=self._blocks, frames=self._frames,
            max_fill=self._max_fill, sink_errors=self._sink_errors,
            lag_mean=self._lag_sum / self._frames if self._frames else 0.0, lag_max=self._lag_max,
            seconds=time.monotonic() - self._t0 if self._t0 else 0.0, worker_realtime=self._worker_rt,
            nonfinite_samples=self.tracker.samples_sanitised,
        )

    def latency(self) -> LatencyReport:
        """The tracker's latency with this stream's block size and device buffering."""
        return self.tracker.latency(self.config.blocksize, self.buffering_samples)

    @property
    def overflows(self) -> int:
        """Overflow callbacks so far (cheap; for status lines)."""
        return self._capture.overflows if self._capture is not None else self._overflows

    @property
    def status_log(self) -> list[tuple[int, str]]:
        """The first 16 flagged callbacks: ``(callback number, PortAudio's flags)``."""
        if self._capture is not None:
            from .capture import flags_text

            return [(n, flags_text(f)) for n, f in self._capture.status_log()]
        return self._status_log

    @property
    def running(self) -> bool:
        return self._stream is not None and not self._stop.is_set()

    def start(self, warmup: bool = True) -> None:
        """Warm the tracker up, then start the worker and open the stream.

        Raises
        ------
        AudioDeviceError
            The stream cannot be opened.
        """
        if self._stream is not None:
            return
        if warmup:
            self.tracker.warmup()
        self.tracker.reset()
        sd = sounddevice()
        if self.native:
            from . import capture

            capture.warm_up()
            self._capture = capture.CaptureState(self._cap_samples, self.config.channel, self.config.channel + 1)
            self._wake, self._pop = self._capture.wait, self._pop_native
        # Everything loaded so far lives as long as the stream: keep it out of the collector's
        # scans, so a collection in the worker costs what the stream allocates, not ~40 ms.
        gc.collect()
        gc.freeze()
        # A Python callback needs the GIL; with Python's default 5 ms switch interval it can
        # wait a whole JACK period for the worker to yield it. Restored by stop().
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL_S))
        self._worker = threading.Thread(target=self._work, name="melodyrt-worker", daemon=True)
        self._worker.start()
        try:
            if self._capture is not None:
                stream = sd._StreamBase(  # sounddevice's route for a C callback (python-rtmixer)
                    kind="input", device=self.device["index"], samplerate=self.rate,
                    blocksize=self.config.blocksize, channels=self.config.channel + 1, dtype="float32",
                    latency=self.config.latency, callback=self._capture.callback_pointer(sd._ffi),
                    userdata=self._capture.user_data(sd._ffi), wrap_callback=None,
                )
            else:
                stream = sd.InputStream(
                    device=self.device["index"], samplerate=self.rate, blocksize=self.config.blocksize,
                    channels=self.config.channel + 1, dtype="float32", latency=self.config.latency,
                    callback=self._callback,
                )
            _open_streams.add(stream)
            stream.start()
        except Exception as exc:
            self._stop.set()
            self._worker.join()
            self._unfreeze()
            raise AudioDeviceError(f"cannot open {self.device['name']} at {self.rate} Hz: {exc}") from None
        self._stream = stream
        self._t0 = time.monotonic()
        self.buffering_samples = float(stream.latency) * self.rate
        if _is_jack(self.device):
            self._watch = _JackWatch(self.device["name"])

    @staticmethod
    def _unfreeze() -> None:
        gc.unfreeze()

    def request_stop(self) -> None:
        """Ask the stream to stop (thread- and signal-handler-safe); :meth:`run` returns soon."""
        self._stop.set()
        self._ready.set()

    def stop(self) -> SourceStats:
        """Stop the stream, finish the queued audio, close every sink, then the stream (idempotent).

        The sinks are closed (notes released) before the PortAudio stream is closed: on a
        loaded machine PortAudio's JACK host can abort the process while it closes a stream
        (an assertion on a JACK request that timed out), and the notes must be off by then.

        Returns
        -------
        SourceStats
        """
        self._stop.set()
        self._ready.set()
        stream, self._stream = self._stream, None
        close = stream is not None and self._stop_stream(stream)
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        if not self._closed:
            self._closed = True
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    sink.close()
        if close:
            with contextlib.suppress(Exception):
                stream.close()
            _open_streams.discard(stream)
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        worker_done = self._worker is None or not self._worker.is_alive()
        if self._capture is not None and worker_done and not self._abandoned:
            self._capture.close()  # the stream is closed: nothing writes to the pipe any more
        if self._switch is not None:
            sys.setswitchinterval(self._switch)
            self._switch = None
            self._unfreeze()
        return self.stats

    def _stop_stream(self, stream: Any) -> bool:
        """Stop the PortAudio stream; False when it must be left alone (its JACK client is dead)."""
        if _is_jack(self.device) and (self._abandoned or self._jack_client_dead(stream)):
            self._abandoned = True
            _forsake_portaudio()
            return False  # nor is the watch client closed: the server it talked to is gone
        with contextlib.suppress(Exception):
            stream.stop()
        return True

    @staticmethod
    def _jack_client_dead(stream: Any) -> bool:
        """PortAudio's JACK stream went inactive without being stopped: its client was shut down."""
        try:
            return not stream.active and not stream.stopped
        except Exception:
            return True

    def _input_lost(self, next_watch: list[float]) -> str | None:
        """Why the input stopped delivering, or None while it is fine (main thread, every tick)."""
        stream = self._stream
        if stream is None:
            return None
        if not stream.active:
            if _is_jack(self.device):
                self._abandoned = self._jack_client_dead(stream)
                return "the JACK server went away" if not jack_server_alive() else "JACK shut our client down"
            return "it stopped by itself (device lost?)"
        now = time.monotonic()
        if self._watch is not None and now >= next_watch[0]:
            next_watch[0] = now + 0.5
            if not self._watch.device_present():
                return f"its JACK client {self.device['name']!r} went away"
        return None

    def run(self, seconds: float | None = None, on_tick: Callable[["AudioSource"], None] | None = None) -> SourceStats:
        """Start, run until ``seconds`` pass, :meth:`request_stop`, Ctrl-C or an error, then stop.

        Parameters
        ----------
        seconds : float, optional [s]
            Wall-clock duration (None: until stopped).
        on_tick : callable, optional
            Called about every 100 ms from this thread (status displays).

        Returns
        -------
        SourceStats

        Raises
        ------
        AudioStreamLost
            The input stopped delivering (device lost, see the module notes).
        AudioDeviceError
            The stream could not start.
        Exception
            Whatever the worker raised (after everything was stopped and closed).
        """
        lost: str | None = None
        try:
            self.start()
            deadline = None if seconds is None else time.monotonic() + seconds
            next_watch = [time.monotonic() + 0.5]
            while not self._stop.wait(0.1):
                if on_tick is not None:
                    on_tick(self)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                lost = self._input_lost(next_watch)
                if lost:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            stats = self.stop()
        if self._error is not None:
            raise self._error
        if lost:
            raise AudioStreamLost(f"audio input {self.device['name']} lost: {lost}; {stats.line()}")
        return stats

    def __enter__(self) -> "AudioSource":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

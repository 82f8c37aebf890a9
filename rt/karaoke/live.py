"""Live karaoke: play the backing track, capture the microphone, track and score as the singer sings.

Threads: PortAudio's output callback copies the next piece of the backing track (and notes
when it started playing); the input side is :class:`melodyrt.rt.source.AudioSource` (callback
-> ring -> worker thread -> :class:`~melodyrt.rt.tracker.Tracker` -> sinks), whose one sink is
:class:`LiveKaraoke`, which aligns and passes the frames to the :class:`KaraokeSession`.

Alignment
---------
``PitchFrame.sample`` is the input sample whose audio a frame describes, the tracker's delay
already subtracted (``time = sample / rate``); it is not subtracted again. What remains is to
map that input sample to song time. PortAudio stamps every callback: an input callback with
the ADC time of its first sample (``inputBufferAdcTime``), an output callback with the DAC
time at which its first sample leaves for the speaker (``outputBufferDacTime``). Both
streams keep a record of (sample position, time stamp) per callback (:class:`Stamps`), each
stream's clock tied to the monotonic clock (streams' clocks may differ: PortAudio's JACK host
API starts each at 0), so for each frame::

    T       = ADC time of input sample frame.sample           (from the input records)
    song_t  = backing position at the DAC at time T / rate     (from the output records)
              - extra_offset_s

The singer is judged against what they heard when they heard it: device latencies count as
the driver reports them, and an xrun on either side (samples lost or played late) does not
shift the rest of the song, because each frame is mapped through the callbacks around it,
not through a sample count from the start. Acoustic and Bluetooth delays the driver does not
know are what ``--offset-ms`` (``extra_offset_s``) is for. When a host API reports no
timestamps (zeros), the monotonic clock at the callback minus (input) or plus (output) the
stream's reported latency stands in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import MelodyRTError
from ..frames import PitchFrame
from ..source import AudioDeviceError, AudioSource, SourceConfig, resolve_input, sounddevice
from .session import KaraokeSession

#: Silence played before the backing track starts [s] (page opens, tracker settles).
LEAD_IN_S = 3.0
#: Keep listening this long after the last note [s].
TAIL_S = 1.5


def load_backing(path: str | Path, rate: int, channels: int) -> np.ndarray:
    """Read a backing track as float32 ``(n, channels)`` at ``rate`` (soxr resampling)."""
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.exists():
        raise MelodyRTError(f"{path}: backing track not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several kinds for unreadable files
        raise MelodyRTError(f"{path}: cannot read backing track ({str(exc).splitlines()[0]})") from None
    if data.shape[0] == 0:
        raise MelodyRTError(f"{path}: backing track has no samples")
    if data.shape[1] != channels:  # mono to stereo, or more channels down to the device's
        data = np.repeat(data.mean(axis=1, keepdims=True), channels, axis=1)
    if sr != rate:
        data = soxr.resample(data, sr, rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def find_output_device(spec: int | str | None) -> dict[str, Any]:
    """The output device meant by ``spec``: index, substring of "name host-API" (as for
    inputs, so ``JACK`` finds JACK's "system" device), or None for the default."""
    sd = sounddevice()
    outs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
    brief = "; ".join(f"{d['index']}: {d['name']}" for d in outs) or "none"
    if not outs:
        raise AudioDeviceError("no audio output devices (no sound card, and no JACK server running?)")
    if spec is None:
        idx = sd.default.device[1]
        for d in outs:
            if d["index"] == idx:
                return dict(d)
        return dict(outs[0])
    text = str(spec).strip()
    if text.isdigit():
        for d in outs:
            if d["index"] == int(text):
                return dict(d)
        raise AudioDeviceError(f"no output device with index {text} (outputs: {brief})")
    apis = sd.query_hostapis()
    found = [d for d in outs if text.lower() in f"{d['name']} {apis[d['hostapi']]['name']}".lower()]
    if len(found) != 1:
        what = "no output device matches" if not found else "several output devices match"
        raise AudioDeviceError(f"{what} {text!r} (outputs: {brief})")
    return dict(found[0])


class Stamps:
    """Time stamps of one stream's callbacks: ``(position [samples], stamp [s])`` pairs,
    written by the audio callback into preallocated arrays, read by the worker.

    PortAudio's stream clocks need not agree between streams (its JACK host API counts each
    stream's time from that stream's start), so every callback also gives
    ``time.monotonic() - currentTime``; the smallest value seen (the callback least delayed
    by scheduling) converts this stream's stamps to the monotonic clock both streams share.

    Parameters
    ----------
    rate : int [Hz]
    capacity : int
        Records kept; past it, the last record is extrapolated.
    """

    def __init__(self, rate: int, capacity: int) -> None:
        self.rate = float(rate)
        self.pos = np.zeros(max(1, capacity), np.int64)
        self.stamp = np.zeros(max(1, capacity), np.float64)
        self.count = 0
        self.to_monotonic = np.inf  # monotonic clock minus this stream's clock [s]

    def add(self, pos: int, stamp: float, current: float, mono: float) -> None:
        """Record a callback (audio thread): its first sample's position and stamp, and the
        stream clock ``current`` read when the monotonic clock read ``mono``."""
        if mono - current < self.to_monotonic:
            self.to_monotonic = mono - current
        k = self.count
        if k < self.pos.shape[0] and (k == 0 or stamp >= self.stamp[k - 1]):
            self.pos[k] = pos
            self.stamp[k] = stamp
            self.count = k + 1

    def time_of(self, pos: float) -> float | None:
        """Monotonic time [s] of sample ``pos``, from the latest callback that started at or
        before it (None before the first callback)."""
        n = self.count
        if n == 0:
            return None
        k = max(0, int(np.searchsorted(self.pos[:n], pos, side="right")) - 1)
        return float(self.stamp[k] + self.to_monotonic + (pos - self.pos[k]) / self.rate)

    def position_at(self, mono: float) -> float | None:
        """Sample position at monotonic time ``mono`` [s], from the latest callback stamped at
        or before it (None before the first callback)."""
        n = self.count
        if n == 0:
            return None
        stamp = mono - self.to_monotonic
        k = max(0, int(np.searchsorted(self.stamp[:n], stamp, side="right")) - 1)
        return float(self.pos[k] + (stamp - self.stamp[k]) * self.rate)


def _capacity(seconds: float, rate: int, blocksize: int) -> int:
    """Records for ``seconds`` of callbacks of at least a quarter of ``blocksize`` each."""
    return int(seconds * rate / max(1, blocksize // 4)) + 64


class BackingPlayer:
    """Plays a backing track after ``lead_in_s`` of silence through a sounddevice output stream,
    stamping every callback with the DAC time of its first sample.

    Parameters
    ----------
    audio : ndarray [shape=(n, channels)] [float32] or None
        None with a device plays silence (the song's clock runs from the stream); None
        without a device opens no stream (the clock runs on the monotonic clock).
    rate : int [Hz]
    device : dict or None
        From :func:`find_output_device`.
    lead_in_s : float [s]
    duration_s : float [s]
        How long the session may last (sizes the stamp records).
    """

    def __init__(self, audio: np.ndarray | None, rate: int, device: dict[str, Any] | None,
                 lead_in_s: float = LEAD_IN_S, blocksize: int = 256, duration_s: float = 600.0) -> None:
        self.rate = int(rate)
        self.device = device
        self.channels = audio.shape[1] if audio is not None else 1
        self.audio = audio if audio is not None else np.zeros((0, 1), np.float32)
        self.lead = int(round(lead_in_s * self.rate))
        self.blocksize = blocksize
        self.pos = -self.lead  # next backing sample to play (negative: lead-in)
        self.stamps = Stamps(self.rate, _capacity(lead_in_s + duration_s, self.rate, blocksize))
        self._stream: Any = None
        self.underflows = 0
        self.uses_monotonic = False

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.output_underflow:
            self.underflows += 1
        mono = time.monotonic()
        dac = float(time_info.outputBufferDacTime)
        now = float(time_info.currentTime)
        if dac <= 0.0 or self.uses_monotonic:  # no timestamps from this host API
            self.uses_monotonic = True
            now = mono
            dac = mono + (float(self._stream.latency) if self._stream is not None else 0.0)
        self.stamps.add(self.pos, dac, now, mono)
        a = self.pos
        b = a + frames
        outdata.fill(0.0)
        lo, hi = max(a, 0), min(b, self.audio.shape[0])
        if hi > lo:
            outdata[lo - a : hi - a] = self.audio[lo:hi]
        self.pos = b

    def start(self) -> None:
        """Open and start the output stream; with no audio and no device, start a silent
        clock instead (song time runs on the monotonic clock from now, after the lead-in)."""
        if self.audio.shape[0] == 0 and self.device is None:
            now = time.monotonic()
            self.stamps.add(self.pos, now, now, now)  # one stamp: extrapolated from here on
            return
        sd = sounddevice()
        dev = self.device["index"] if self.device else None
        try:
            self._stream = sd.OutputStream(device=dev, samplerate=self.rate, channels=self.channels,
                                           dtype="float32", blocksize=self.blocksize, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot play on {self.device['name'] if self.device else 'the default output'} "
                                   f"at {self.rate} Hz: {exc}") from None

    def song_time_at(self, mono: float) -> float | None:
        """Song time [s] of the backing sample leaving for the speaker at monotonic time ``mono``."""
        pos = self.stamps.position_at(mono)
        return None if pos is None else pos / self.rate

    def song_time(self) -> float:
        """Song time the singer hears now [s] (before the first callback: the lead-in)."""
        t = self.song_time_at(time.monotonic())
        return float(t) if t is not None else -self.lead / self.rate

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:
                pass


class _AligningSource(AudioSource):
    """An :class:`AudioSource` that also stamps each callback with the ADC time of its first
    sample (position = samples delivered before it, the tracker's input timeline).

    With the native (GIL-free) callback the stamps come from :mod:`melodyrt.rt.capture` and
    are recorded by the worker; the stream clock is tied to the monotonic clock by reading
    both there. The Python callback records them itself.
    """

    stamps: Stamps
    uses_monotonic = False
    wants_stamps = True
    _delivered = 0
    _pending: np.ndarray | None = None

    def _on_stamps(self, rows: np.ndarray) -> None:
        if self._pending is not None:
            rows = np.concatenate([self._pending, rows])
            self._pending = None
        offset = self.stream_clock_offset()
        if offset is None:  # the stream object is not assigned yet: stamp them next time
            self._pending = rows
            return
        for delivered, adc, now, _ in rows:
            if adc <= 0.0 or self.uses_monotonic:  # no timestamps from this host API
                self.uses_monotonic = True
                latency = float(self._stream.latency) if self._stream is not None else 0.0
                mono = time.monotonic()
                late = (self.tracker.samples_in + len(self._capture) - delivered) / self.rate
                self.stamps.add(int(delivered), mono - late - latency, mono, mono)
                continue
            self.stamps.add(int(delivered), float(adc), float(now), float(now) + offset)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        mono = time.monotonic()
        adc = float(time_info.inputBufferAdcTime)
        now = float(time_info.currentTime)
        if adc <= 0.0 or self.uses_monotonic:  # no timestamps from this host API
            self.uses_monotonic = True
            latency = float(self._stream.latency) if self._stream is not None else 0.0
            now = mono
            adc = mono - frames / self.rate - latency
        self.stamps.add(self._delivered, adc, now, mono)
        self._delivered += frames
        super()._callback(indata, frames, time_info, status)


@dataclass
class LiveResult:
    """How a live session went.

    Attributes
    ----------
    offset_s, last_offset_s : float [s]
        Input time minus song time of the first and of the last frame (they differ by the
        xruns in between).
    source_stats : SourceStats
    latency : LatencyReport
    underflows : int
        Output callbacks flagged ``output_underflow``.
    monotonic : bool
        True when a stream had no PortAudio timestamps and the monotonic clock stood in.
    """

    offset_s: float
    last_offset_s: float
    source_stats: Any
    latency: Any
    underflows: int
    monotonic: bool


class LiveKaraoke:
    """The sink between the audio source and the session: maps each frame's input sample to
    song time through both streams' callback stamps (module docstring) and judges it.

    Parameters
    ----------
    session : KaraokeSession
    player : BackingPlayer
    source : _AligningSource
    extra_offset_s : float [s]
        Delay the driver does not report (e.g. Bluetooth), subtracted from song time.

    Attributes
    ----------
    offset_s : float or None [s]
        ``frame.time - song time`` of the newest frame (for the report); with no xruns it
        stays constant.
    """

    latency_samples = 0

    def __init__(self, session: KaraokeSession, player: BackingPlayer, source: "_AligningSource | None" = None,
                 extra_offset_s: float = 0.0) -> None:
        self.session = session
        self.player = player
        self.source = source
        self.extra = extra_offset_s
        self.offset_s: float | None = None
        self.first_offset_s: float | None = None

    def song_time(self, frame: PitchFrame) -> float | None:
        """Song time [s] of the audio ``frame`` describes (None before both streams ran)."""
        if self.source is None:
            return None
        adc = self.source.stamps.time_of(frame.sample)
        if adc is None:
            return None
        t = self.player.song_time_at(adc)
        return None if t is None else t - self.extra

    def send(self, frame: PitchFrame) -> None:
        t = self.song_time(frame)
        if t is None:
            return  # the streams have not both run yet: nothing to judge against
        self.offset_s = frame.time - t
        if self.first_offset_s is None:
            self.first_offset_s = self.offset_s
            self.session.offset_s = self.offset_s
        self.session.judge(round(t, 9), frame.f0_hz, frame.voiced)

    def close(self) -> None:
        self.session.close()


def run_live(
    session: KaraokeSession,
    *,
    backing: str | Path | None = None,
    device: int | str | None = None,
    output_device: int | str | None = None,
    rate: int | None = None,
    blocksize: int | None = None,
    bundle: Any = None,
    backend: str = "auto",
    lead_in_s: float = LEAD_IN_S,
    extra_offset_s: float = 0.0,
    on_tick: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
    tracker_config: Any = None,
    source_settings: dict[str, Any] | None = None,
) -> LiveResult:
    """Sing a song: play the backing track, track the microphone into ``session`` until the
    song is over (or Ctrl-C, or ``stop_event``), then finish the session.

    ``tracker_config`` (a :class:`~melodyrt.rt.tracker.TrackerConfig`) and ``source_settings``
    (:class:`~melodyrt.rt.source.SourceConfig` fields) come from a ``--config`` file; the
    explicit ``device``, ``rate`` and ``blocksize`` win over them, and the block size is 256
    frames when neither gives one.

    Returns
    -------
    LiveResult
    """
    from ..tracker import Tracker

    from ..config import _from_mapping

    settings = {"blocksize": 256, **(source_settings or {})}
    settings.update({k: v for k, v in (("device", device), ("rate", rate), ("blocksize", blocksize)) if v is not None})
    cfg = _from_mapping(SourceConfig, settings, "source.")
    in_dev, in_rate = resolve_input(cfg)
    if backing:
        out_dev: dict[str, Any] | None = find_output_device(output_device)
        assert out_dev is not None
        out_rate = int(round(out_dev["default_samplerate"]))
        audio = load_backing(backing, out_rate, min(2, int(out_dev["max_output_channels"])))
    else:  # nothing to play: no output stream, the song's clock starts with the session
        out_dev, out_rate, audio = None, in_rate, None
    longest = lead_in_s + session.song.end + TAIL_S + 60.0
    player = BackingPlayer(audio, out_rate, out_dev, lead_in_s, cfg.blocksize, longest)
    tracker = Tracker(in_rate, bundle, backend, tracker_config)
    tracker.warmup()  # compile before any stream opens
    sink = LiveKaraoke(session, player, None, extra_offset_s)
    source = _AligningSource(tracker, [sink], cfg, in_dev)
    source.stamps = Stamps(in_rate, _capacity(longest, in_rate, cfg.blocksize))
    sink.source = source
    session.clock = player.song_time
    end = session.song.end + TAIL_S
    stop = stop_event or threading.Event()

    def tick(_src: AudioSource) -> None:
        if on_tick is not None:
            on_tick()
        if player.song_time() >= end:
            source.request_stop()
        if stop.is_set():
            source.request_stop()

    player.start()
    try:
        source.start(warmup=False)  # warmed up above, before any stream opened
        stats = source.run(None, on_tick=tick)  # closes the sink -> session.finish()
    finally:
        player.stop()
    session.finish()
    return LiveResult(sink.first_offset_s if sink.first_offset_s is not None else float("nan"),
                      sink.offset_s if sink.offset_s is not None else float("nan"), stats, source.latency(),
                      player.underflows, player.uses_monotonic or source.uses_monotonic)

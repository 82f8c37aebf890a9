"""OSC output over UDP: one bundle per frame, time-tagged with the time of its audio.

Address space (``prefix`` defaults to ``/melodyrt``; every frame's bundle carries the first
six messages, note events only when they happen, note-off before note-on):

=========================  ======  ===================================================
address                    types   meaning
=========================  ======  ===================================================
``/melodyrt/frame``        i       frame index (one per 10 ms hop)
``/melodyrt/f0``           f       f0 [Hz], 0 when unvoiced
``/melodyrt/midi``         f       fractional MIDI note (69.0 = A4), 0 when unvoiced
``/melodyrt/voicing``      i       1 voiced, 0 unvoiced
``/melodyrt/confidence``   f       0..1
``/melodyrt/loudness``     f       input level [dBFS]
``/melodyrt/note/on``      i i     note [0..127], velocity [1..127]
``/melodyrt/note/off``     i       note [0..127]
=========================  ======  ===================================================

With ``fast_onset`` (a note setting, as for MIDI) a note can start on an onset cue between
frames: that bundle holds only ``/note/on``, time-tagged with the cue's audio.

The bundle's time tag is the NTP time at which the frame's audio reached the input:
``epoch + frame.time``, where ``epoch`` is the wall-clock time of stream sample 0 (given by
the caller, else estimated at the first frame as ``time.time() - frame.time``, which is late
by the pipeline's latency). Note events come from :class:`~melodyrt.rt.midi_out.MidiNoteLogic`,
so OSC and MIDI agree on notes.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import time
from typing import Any

from pythonosc.parsing.osc_types import write_date

from .errors import MelodyRTError
from .frames import OnsetCue, PitchFrame
from .midi_out import MidiConfig, MidiNoteLogic, hz_to_midi

log = logging.getLogger(__name__)


class OscTargetError(MelodyRTError):
    """The OSC target cannot be used (bad port, unresolvable host, no socket)."""


def parse_target(target: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``[::1]:PORT``) to ``(host, port)``.

    Raises
    ------
    OscTargetError
        Not of that form.
    """
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit():
        raise OscTargetError(f"OSC target must be HOST:PORT (e.g. 127.0.0.1:9000), got {target!r}")
    return host, int(port)


def _osc_string(text: str) -> bytes:
    raw = text.encode("ascii") + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


class _MessageEncoder:
    """Encodes OSC messages of one address and type tag (int32 ``i`` / float32 ``f``).

    The same bytes python-osc's builders produce, at a fraction of their cost: the padded
    address and type tag are encoded once, the size prefix a bundle needs is included.
    """

    def __init__(self, address: str, types: str) -> None:
        self._head = _osc_string(address) + _osc_string("," + types)
        self._fmt = struct.Struct(">" + types)
        self._size = struct.pack(">i", len(self._head) + self._fmt.size)

    def element(self, *args: float) -> bytes:
        """The bundle element: int32 size, then the message."""
        return self._size + self._head + self._fmt.pack(*args)


_BUNDLE_TAG = _osc_string("#bundle")


class OscSink:
    """Send each frame as an OSC bundle over UDP (address space in the module docstring).

    Parameters
    ----------
    host : str
        Target host name or address (IPv4 or IPv6).
    port : int
        Target UDP port [1..65535].
    prefix : str
        Address prefix, default ``/melodyrt``.
    epoch : float or None [s since the Unix epoch]
        Wall-clock time of stream sample 0; None estimates it at the first frame.
    allow_broadcast : bool
        Allow a broadcast target address.
    **note_settings
        :class:`~melodyrt.rt.midi_out.MidiConfig` fields for the note events
        (hysteresis_cents, onset_frames, velocity_db, ...).

    Attributes
    ----------
    latency_samples : int [samples]
        0 (sending adds no audio delay).
    sent, dropped : int
        Bundles sent, and bundles that could not be sent (full buffer, network error).
    refused : int
        Sends that reported "connection refused": nobody listened at the target when an
        earlier bundle arrived (an ICMP port unreachable came back). Counted and logged
        once; the bundle of that call is sent again at once, and sending goes on, so a
        receiver started later gets everything from then on.

    Raises
    ------
    OscTargetError
        Bad port, unresolvable host, or no socket for the address family.

    Notes
    -----
    Sending to a UDP port nobody listens on is not an error (UDP has no connection); the
    receiver may start later. The socket is connected to the target (when the address allows
    it), so the kernel reports the ICMP errors of a closed port (``refused``) instead of
    dropping them silently. The socket is non-blocking: a full send buffer drops the bundle
    rather than stall the audio worker.
    """

    latency_samples = 0

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        *,
        prefix: str = "/melodyrt",
        epoch: float | None = None,
        allow_broadcast: bool = False,
        **note_settings: Any,
    ) -> None:
        notes = MidiNoteLogic(MidiConfig.from_settings("OSC", **note_settings))
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise OscTargetError(f"OSC port must be 1..65535, got {port!r}")
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise OscTargetError(f"OSC prefix must start with '/' and not end with it, got {prefix!r}")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise OscTargetError(f"cannot resolve OSC host {host!r}: {exc}") from None
        family, stype, proto, _, addr = infos[0]
        try:
            sock = socket.socket(family, stype, proto)
        except OSError as exc:
            raise OscTargetError(f"cannot open a UDP socket for {host}:{port}: {exc}") from None
        if allow_broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        try:
            sock.connect(addr)  # UDP: only fixes the destination; nothing is sent
            self._connected = True
        except OSError:         # e.g. no route now: send each bundle with sendto instead
            self._connected = False
        self.host, self.port, self.prefix = host, port, prefix
        self.address = addr
        self.epoch = epoch
        self.notes = notes
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self._sock: socket.socket | None = sock
        self._warned = False
        self._warned_refused = False
        p = prefix
        types = {"frame": "i", "f0": "f", "midi": "f", "voicing": "i", "confidence": "f", "loudness": "f",
                 "note/on": "ii", "note/off": "i"}
        self._enc = {k: _MessageEncoder(f"{p}/{k}", t) for k, t in types.items()}

    def bundle(self, frame: PitchFrame) -> bytes:
        """The encoded bundle of one frame (advances the note logic)."""
        if self.epoch is None:
            self.epoch = time.time() - frame.time
        voiced = bool(frame.voiced and frame.f0_hz > 0)
        f0 = float(frame.f0_hz) if voiced else 0.0
        e = self._enc
        loud = float(frame.loudness_db)
        parts = [
            _BUNDLE_TAG,
            write_date(self.epoch + frame.time),
            e["frame"].element(int(frame.index) & 0x7FFFFFFF),
            e["f0"].element(f0),
            e["midi"].element(hz_to_midi(f0) if voiced else 0.0),
            e["voicing"].element(int(voiced)),
            e["confidence"].element(float(frame.confidence)),
            e["loudness"].element(loud if math.isfinite(loud) else -200.0),
        ]
        for m in self.notes.process(frame):
            if m.type == "note_on":
                parts.append(e["note/on"].element(m.note, m.velocity))
            elif m.type == "note_off":
                parts.append(e["note/off"].element(m.note))
        return b"".join(parts)

    def cue_bundle(self, cue: OnsetCue) -> bytes | None:
        """The bundle of an onset cue's note events (advances the note logic); None if none."""
        msgs = self.notes.cue(cue)
        if not msgs:
            return None
        if self.epoch is None:
            self.epoch = time.time() - cue.time
        e = self._enc
        parts = [_BUNDLE_TAG, write_date(self.epoch + cue.time)]
        for m in msgs:
            if m.type == "note_on":
                parts.append(e["note/on"].element(m.note, m.velocity))
        return b"".join(parts) if len(parts) > 2 else None

    def cue(self, cue: OnsetCue) -> None:
        """Send the note-on an onset cue starts (``fast_onset``); never raises."""
        if self._sock is None or not self.notes.config.fast_onset:
            return
        try:
            data = self.cue_bundle(cue)
        except Exception:
            log.exception("OSC: cannot encode the cue before frame %s", cue.index)
            self.dropped += 1
            return
        if data is not None:
            self._sendto(data)

    def send(self, frame: PitchFrame) -> None:
        """Send one frame's bundle; never raises (failures are counted in ``dropped``)."""
        if self._sock is None:
            return
        try:
            data = self.bundle(frame)
        except Exception:
            log.exception("OSC: cannot encode frame %s", frame.index)
            self.dropped += 1
            return
        self._sendto(data)

    def close(self) -> None:
        """Send note-off for a held note (as a bundle), then close the socket. Idempotent."""
        if self._sock is None:
            return
        offs = [m for m in self.notes.stop() if m.type == "note_off"]
        if offs:
            parts = [_BUNDLE_TAG, write_date(time.time())]
            parts += [self._enc["note/off"].element(m.note) for m in offs]
            self._sendto(b"".join(parts))
        self._sock.close()
        self._sock = None

    def __del__(self) -> None:
        if getattr(self, "_sock", None) is not None:
            try:
                self.close()
            except Exception:
                pass

    def _send_once(self, data: bytes) -> None:
        assert self._sock is not None
        if self._connected:
            self._sock.send(data)
        else:
            self._sock.sendto(data, self.address)

    def _sendto(self, data: bytes) -> None:
        try:
            try:
                self._send_once(data)
            except ConnectionRefusedError:  # an earlier bundle found nobody listening; this one is not sent yet
                self.refused += 1
                if not self._warned_refused:
                    self._warned_refused = True
                    log.warning("OSC: nobody listens at %s:%s (connection refused); still sending", self.host, self.port)
                self._send_once(data)
            self.sent += 1
        except OSError as exc:           # full buffer (BlockingIOError), network down, refused again...
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("OSC: sending to %s:%s failed (%s); dropping bundles", self.host, self.port, exc)


__all__ = ["OscSink", "OscTargetError", "parse_target"]

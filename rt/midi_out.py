"""MIDI output: pitch frames to note on/off and pitch bend, on a port or into a file.

Three layers, so the musical decisions are testable without a port:

- :class:`MidiConfig`: frozen settings (channel, bend range, hysteresis, velocity map, MPE).
- :class:`MidiNoteLogic`: pure state machine, ``PitchFrame`` in, ``mido.Message`` list out.
  Used by :class:`MidiSink` (python-rtmidi port), :class:`MidiFileSink` (standard MIDI file)
  and the OSC sink's note events.
- :class:`MidiSink`: the port I/O. It tracks what it has really sent, so every note-on gets its
  note-off on :meth:`MidiSink.close`, at interpreter exit (``atexit``), when garbage collected,
  and through :func:`close_on_signals` (SIGINT/SIGTERM, installed by the CLI, never here).
  A failing port (device gone, server stopped, a named port that went away) marks the sink
  dead, is counted in ``errors`` and logged once; it never raises into the audio worker.
  Its safety net against messages lost in transport (a receiver missing a JACK cycle in an
  xrun): each note-off is sent again ``note_off_repeat_ms`` later (on by default), and
  optionally All Notes Off after a rest (``rest_all_notes_off_ms``). Only the port does this;
  the note logic's stream (files, OSC) stays minimal.

Musical behaviour (one voice, the singer's):

- A note starts on the first voiced frame whose confidence is at least ``onset_confidence``
  (a confident onset), and otherwise after ``onset_frames`` consecutive voiced frames (a
  doubtful one), on the nearest semitone of that frame, with a velocity from the loudest
  voiced frame since the run began.
- With ``fast_onset`` on, a note also starts on an :class:`~melodyrt.rt.frames.OnsetCue`
  (:meth:`MidiNoteLogic.cue`: a periodic onset in the newest audio, 10-15 ms into a sung
  note, before any frame has heard it), on the cue's semitone and velocity, when no note
  sounds, the last frame was unvoiced (else the frames are already starting the note) and
  the next frame would have the ``onset_rest_frames`` a confident onset needs. The note is
  provisional until a voiced frame arrives: that frame confirms it (a frame further away
  than ``bend_range`` moves it at once to the frame's semitone; a nearer one is sounded by
  the bend, and the rules of a held note change it if the pitch stays away), and if
  ``cue_confirm_frames`` frames pass without one it is released (a false cue).
- While it is held, pitch bend follows the f0 continuously relative to the held note (14-bit,
  sent before the first note of a channel and then only when the value changes, so at most
  one message per frame).
- It changes to a new note when the pitch stays more than ``hysteresis_cents`` away from the
  held note for ``change_frames`` consecutive frames (the slow rule), or at once when a frame
  confident enough for ``jump_confidence`` is more than ``jump_cents`` away (the fast path for
  jumps the bend cannot cover, ``jump_frames`` such frames); either way never before the note
  has lasted ``min_note_frames`` (``jump_min_frames`` may lower that for the fast path). It
  ends after ``release_frames`` unvoiced frames (again not before ``min_note_frames``).
- The bend range is announced with RPN 0 (CC101=0, CC100=0, CC6=range, CC38=0, then the RPN
  null CC101=127, CC100=127) before the first note; in MPE mode the zone is configured first
  with the MPE Configuration Message (RPN 6 on the master channel) and every note goes to the
  next member channel with its own bend.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import signal
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any, Iterable, Iterator, Protocol, Sequence

import mido

from .errors import ConfigError, MelodyRTError
from .frames import OnsetCue, PitchFrame

log = logging.getLogger(__name__)

API_NAMES = ("auto", "alsa", "jack", "coremidi", "winmm", "dummy")
BEND_CENTRE = 8192
BEND_MAX = 16383


class MidiPortError(MelodyRTError):
    """A MIDI port or API cannot be opened (one line, listing what exists)."""


# ---------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MidiConfig:
    """How frames become MIDI.

    Attributes
    ----------
    channel : int [1..16]
        MIDI channel of the notes; in MPE mode ignored (the zone's master channel is 1 for
        the lower zone, 16 for the upper one).
    bend_range : int [semitones, 1..96]
        Pitch-bend range announced with RPN 0 and used to scale the bend.
    hysteresis_cents : float [cents]
        Distance from the held note beyond which the pitch counts as "away".
    change_frames : int [frames]
        Consecutive "away" frames before the note changes.
    onset_frames : int [frames]
        Consecutive voiced frames before a note starts when no frame of the run is confident
        enough for ``onset_confidence`` (filters blips).
    onset_confidence : float or None [0..1, compared with ``PitchFrame.confidence``]
        A voiced frame with at least this confidence starts the note at once, without waiting
        for ``onset_frames`` (one 10 ms hop earlier with ``onset_frames=2``). The confidence is
        the probability mass of the pitch rows near the peak, so it is never above p(voiced).
        None: always wait for ``onset_frames``. The default 0.7 is the lowest threshold that
        adds at most 10 % false onsets per minute on the MIR-1K validation singers with the
        shipped model (``melodyrt bench onset``).
    onset_rest_frames : int [frames]
        A confident onset also needs this many frames since the last note-off (the frame of
        the note-off counted as 0); after a shorter rest, taken for a voicing drop-out, the
        next note waits for ``onset_frames``. At 2 (the default) notes never start closer
        together than the 2-frame rule allows: 6 frames, with ``min_note_frames=5`` and
        ``release_frames=2``. 0: no condition.
    fast_onset : bool
        Start notes on onset cues (see above); off by default. Meant for a dry voice: it
        saves ~20 ms of note-on latency and costs false onsets on voices over a backing
        track (README, "Fast onset").
    cue_confirm_frames : int [frames]
        Frames a cue-started note waits for a voiced frame before it is released. The
        frames describe audio ~21 ms older than a cue (the CFP window), and the network
        calls a note voiced ~15-20 ms in, so 6 (60 ms) lets a real onset confirm.
    min_note_frames : int [frames]
        A note is neither changed nor released before it has sounded this long (its first
        frame counted), on the slow rule and, with ``jump_min_frames=None``, the fast path too.
    jump_cents : float or None [cents]
        The fast path for large jumps: a pitch more than this far from the held note, on a
        frame confident enough for ``jump_confidence``, for ``jump_frames`` consecutive frames on
        the same side, changes the note at once instead of after ``change_frames``. The default
        250 is where the bend (range 2 semitones) can no longer bring the sounding pitch within
        50 cents of the sung one; smaller steps sound right through the bend while the slow rule
        waits. For another ``bend_range`` use ``100 * bend_range + 50``. None: no fast path.
    jump_frames : int [frames]
        Consecutive far, confident frames that change the note on the fast path.
    jump_confidence : float or None [0..1, compared with ``PitchFrame.confidence``]
        A far frame counts for the fast path only with at least this confidence; doubtful far
        frames wait for the slow rule (``change_frames``). None: any confidence. The default
        0.5 is the lowest gate that adds at most 10 % spurious and wrong-pitch changes per
        minute on the MIR-1K validation singers with the shipped model (``melodyrt bench notes``).
    jump_min_frames : int or None [frames]
        Age [frames, first counted] a note needs before the fast path may change it; None:
        ``min_note_frames`` (the default: no note is shorter than ``min_note_frames``). Smaller
        values correct a young note sooner but play short notes that bounce back (A, B, A).
    release_frames : int [frames]
        Consecutive unvoiced frames that end a note (bridges short voicing drop-outs).
    velocity_db : tuple of float [dBFS]
        Loudness mapped to velocity 1 and 127 (linear in dB, clamped in between).
    fixed_velocity : int or None [1..127]
        Use this velocity instead of the loudness map.
    min_confidence : float [0..1]
        Voiced frames below this confidence are treated as unvoiced.
    lowest_note, highest_note : int [MIDI note]
        Pitches outside are treated as unvoiced.
    mpe : bool
        MPE mode: one member channel per note, per-note bend and pressure.
    mpe_zone : {"lower", "upper"}
        Lower zone: master channel 1, members 2.. ; upper zone: master 16, members ..15.
    mpe_members : int [1..15]
        Number of member channels in the zone (announced with RPN 6).
    mpe_pressure : bool
        In MPE mode, send channel pressure from the loudness map on the note's channel.
    reannounce_s : float or None [s of stream time]
        Resend the RPN header before a note that starts from silence when the last header is
        older than this (for receivers that connect after the start); None: only once.
    note_off_repeat_ms : float or None [ms of wall-clock time, >= 0]
        Port safety net (:class:`MidiSink` only; the note logic, MIDI files and OSC ignore
        it): every note-off is sent a second time on the first frame at least this long after
        it (frames come every 10 ms, so the default 25 ms sends it 25-35 ms later: about ten
        JACK cycles at 128 frames / 48 kHz, four at 256), so a receiver that misses one cycle
        (an xrun) still gets it. If a note-on of the same note on the same channel comes
        first, the repeat goes out at once, just before that note-on, never after it. A
        duplicate note-off of a note that is not sounding is ignored by receivers. None or
        0: off.
    rest_all_notes_off_ms : float or None [ms of stream time, >= 0]
        Port safety net (:class:`MidiSink` only): after a rest this long with no note
        sounding (counted from the frame of the last note-off), send All Notes Off (CC123)
        once on every channel a note was sent on, which also ends a note whose note-off was
        lost. Sent once per rest, never while a note sounds. None or 0 (the default): off,
        since a synth that treats CC123 as a panic may cut the last note's release tail.
    """

    channel: int = 1
    bend_range: int = 2
    hysteresis_cents: float = 60.0
    change_frames: int = 3
    onset_frames: int = 2
    onset_confidence: float | None = 0.7
    onset_rest_frames: int = 2
    fast_onset: bool = False
    cue_confirm_frames: int = 6
    min_note_frames: int = 5
    release_frames: int = 2
    jump_cents: float | None = 250.0
    jump_frames: int = 1
    jump_confidence: float | None = 0.5
    jump_min_frames: int | None = None
    velocity_db: tuple[float, float] = (-60.0, -6.0)
    fixed_velocity: int | None = None
    min_confidence: float = 0.0
    lowest_note: int = 0
    highest_note: int = 127
    mpe: bool = False
    mpe_zone: str = "lower"
    mpe_members: int = 15
    mpe_pressure: bool = True
    reannounce_s: float | None = None
    note_off_repeat_ms: float | None = 25.0
    rest_all_notes_off_ms: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"MIDI: {what}")

        need(isinstance(self.channel, int) and 1 <= self.channel <= 16, f"channel must be 1..16, got {self.channel!r}")
        need(isinstance(self.bend_range, int) and 1 <= self.bend_range <= 96,
             f"bend_range must be a whole number of semitones 1..96, got {self.bend_range!r}")
        need(self.hysteresis_cents >= 0, "hysteresis_cents must be >= 0")
        need(isinstance(self.fast_onset, bool), f"fast_onset must be true or false, got {self.fast_onset!r}")
        for name in ("change_frames", "onset_frames", "min_note_frames", "release_frames", "jump_frames",
                     "cue_confirm_frames"):
            need(int(getattr(self, name)) >= 1, f"{name} must be >= 1")
        need(int(self.onset_rest_frames) >= 0, "onset_rest_frames must be >= 0")
        oc = self.onset_confidence
        need(oc is None or _is_confidence(oc),
             f"onset_confidence must be a confidence 0..1 or None (always wait onset_frames), got {oc!r}")
        jc = self.jump_confidence
        need(jc is None or _is_confidence(jc), f"jump_confidence must be a confidence 0..1 or None (any), got {jc!r}")
        need(self.jump_cents is None or self.jump_cents >= 0, "jump_cents must be >= 0 or None (no fast path)")
        need(self.jump_min_frames is None or int(self.jump_min_frames) >= 1,
             "jump_min_frames must be >= 1 or None (min_note_frames)")
        lo, hi = self.velocity_db
        need(hi > lo, f"velocity_db must be (low, high) with high > low, got {self.velocity_db!r}")
        need(self.fixed_velocity is None or 1 <= self.fixed_velocity <= 127, "fixed_velocity must be 1..127")
        need(0 <= self.lowest_note <= self.highest_note <= 127, "need 0 <= lowest_note <= highest_note <= 127")
        need(self.mpe_zone in ("lower", "upper"), f"mpe_zone must be 'lower' or 'upper', got {self.mpe_zone!r}")
        need(1 <= self.mpe_members <= 15, "mpe_members must be 1..15")
        need(self.reannounce_s is None or self.reannounce_s >= 0, "reannounce_s must be >= 0 or None")
        for name in ("note_off_repeat_ms", "rest_all_notes_off_ms"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0),
                 f"{name} must be a time >= 0 [ms] or None (off), got {v!r}")

    @classmethod
    def from_settings(cls, where: str = "MIDI", **settings: Any) -> "MidiConfig":
        """Like the constructor, but an unknown name is a one-line :class:`ConfigError`."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(names)}")
        if isinstance(settings.get("velocity_db"), list):
            settings["velocity_db"] = tuple(settings["velocity_db"])
        return cls(**settings)

    @property
    def master_channel(self) -> int:
        """Channel [1..16] of global messages (the zone's master in MPE, else ``channel``)."""
        if not self.mpe:
            return self.channel
        return 1 if self.mpe_zone == "lower" else 16

    @property
    def member_channels(self) -> tuple[int, ...]:
        """Channels [1..16] notes go to: the MPE members, or just ``channel``."""
        if not self.mpe:
            return (self.channel,)
        if self.mpe_zone == "lower":
            return tuple(range(2, 2 + self.mpe_members))
        return tuple(range(15, 15 - self.mpe_members, -1))

    def velocity(self, loudness_db: float) -> int:
        """Note velocity [1..127] for a loudness [dBFS]; non-decreasing in loudness."""
        if self.fixed_velocity is not None:
            return int(self.fixed_velocity)
        lo, hi = self.velocity_db
        if not math.isfinite(loudness_db):
            return 1 if loudness_db < 0 else 127
        x = (loudness_db - lo) / (hi - lo)
        return int(min(127, max(1, round(1 + 126 * x))))


def _is_confidence(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0


def _cc(channel: int, control: int, value: int) -> mido.Message:
    return mido.Message("control_change", channel=channel - 1, control=control, value=value)


def rpn(channel: int, number: int, msb: int, lsb: int = 0) -> list[mido.Message]:
    """Set registered parameter ``number`` [0..16383] to ``msb``/``lsb``, then RPN null.

    Parameters
    ----------
    channel : int [1..16]
    number : int
        0 = pitch-bend sensitivity (msb semitones, lsb cents), 6 = MPE configuration.
    """
    return [
        _cc(channel, 101, (number >> 7) & 0x7F),
        _cc(channel, 100, number & 0x7F),
        _cc(channel, 6, msb),
        _cc(channel, 38, lsb),
        _cc(channel, 101, 127),
        _cc(channel, 100, 127),
    ]


def bend_value(semitones: float, bend_range: int) -> int:
    """14-bit pitch-bend value [0..16383] for a deviation [semitones], centre 8192, clamped."""
    v = BEND_CENTRE + round(semitones / bend_range * BEND_CENTRE)
    return int(min(BEND_MAX, max(0, v)))


def hz_to_midi(f0_hz: float) -> float:
    """Fractional MIDI note of a frequency [Hz] (A4 = 440 Hz = 69)."""
    return 69.0 + 12.0 * math.log2(f0_hz / 440.0)


# ---------------------------------------------------------------------------------- logic


class MidiNoteLogic:
    """Frames to MIDI messages, no I/O (see the module docstring for the rules).

    Parameters
    ----------
    config : MidiConfig, optional

    Notes
    -----
    Call :meth:`start` once before the first :meth:`process` (or let :meth:`process` do it),
    and :meth:`stop` at the end: it releases the held note and sends all-notes-off (CC123)
    and reset-all-controllers (CC121) on every channel used. Messages carry 0-based
    ``channel`` as mido does; configuration uses 1..16.
    """

    def __init__(self, config: MidiConfig | None = None) -> None:
        self.config = config or MidiConfig()
        self.reset()

    def reset(self) -> None:
        """Forget all state (no messages); the next frame announces the header again."""
        self.started = False
        self.held: int | None = None          # MIDI note sounding
        self.held_channel = self.config.member_channels[0]
        self.age = 0                          # frames since the held note started
        self._voiced_run = 0                  # consecutive voiced frames (onset)
        self._rest = math.inf                 # frames since the last release (note-off to silence)
        self._onset_db = -math.inf            # loudest frame of the onset run [dBFS]
        self._away = 0                        # consecutive frames far from the held note
        self._jump = 0                        # consecutive confident frames beyond jump_cents, same side (sign)
        self._unvoiced = 0                    # consecutive unvoiced frames while held
        self._cued = 0                        # frames left for a voiced frame to confirm a cue's note
        self.cues_confirmed = 0               # cue-started notes a voiced frame confirmed ...
        self.cues_dropped = 0                 # ... and those released unconfirmed
        self._bend: dict[int, int] = {}       # last bend sent per channel [0..16383]; none yet: unknown
        self._pressure: dict[int, int] = {}
        self._next_member = 0
        self._header_time = -math.inf         # stream time of the last header [s]
        self._used: set[int] = set()

    # -- public ---------------------------------------------------------------------------

    def start(self, time_s: float = 0.0) -> list[mido.Message]:
        """Header: MPE configuration (MPE mode) and the bend range (RPN 0) on every channel."""
        cfg = self.config
        out: list[mido.Message] = []
        if cfg.mpe:
            out += rpn(cfg.master_channel, 6, cfg.mpe_members)
            out += rpn(cfg.master_channel, 0, 2)   # master keeps the default +-2 semitones
        for ch in cfg.member_channels:
            out += rpn(ch, 0, cfg.bend_range)
        self.started = True
        self._header_time = time_s
        return out

    def cue(self, cue: OnsetCue) -> list[mido.Message]:
        """Messages for an onset cue: a provisional note-on when ``fast_onset`` allows, else none."""
        cfg = self.config
        # the cue comes before the next frame, which would count one more frame of rest; once
        # a frame is voiced the network hears the voice itself and is better at its pitch
        if (not cfg.fast_onset or self.held is not None or self._voiced_run
                or self._rest + 1 < cfg.onset_rest_frames):
            return []
        midi = self._note_pitch(cue.f0_hz)
        if midi is None:
            return []
        out: list[mido.Message] = [] if self.started else self.start(cue.time)
        out += self._onset(midi, cfg.velocity(cue.loudness_db), cue.loudness_db, cue.time)
        self._cued = cfg.cue_confirm_frames
        return out

    def process(self, frame: PitchFrame) -> list[mido.Message]:
        """Messages for one frame (often none)."""
        out: list[mido.Message] = [] if self.started else self.start(frame.time)
        cfg = self.config
        midi = self._voiced_pitch(frame)
        if self.held is None:
            self._rest += 1
        if self._cued:
            if midi is None:
                self.age += 1
                self._cued -= 1
                if not self._cued:
                    self.cues_dropped += 1
                    out += self._note_off()
                    self._rest = 0
                return out
            self._cued = 0
            self.cues_confirmed += 1
            if abs(midi - self.held) > cfg.bend_range:   # no bend can sound the frame's pitch
                out += self._note_off()
                out += self._note_on(midi, cfg.velocity(frame.loudness_db), frame.loudness_db)
                return out
            # else the bend sounds it, and the held-note rules below move the note if it stays away
        if midi is None:
            self._voiced_run = 0
            self._onset_db = -math.inf
            self._away = self._jump = 0
            if self.held is not None:
                self.age += 1
                self._unvoiced += 1
                if self._unvoiced >= cfg.release_frames and self.age >= cfg.min_note_frames:
                    out += self._note_off()
                    self._rest = 0
            return out

        self._voiced_run += 1
        self._onset_db = max(self._onset_db, frame.loudness_db)
        if self.held is None:
            confident = (cfg.onset_confidence is not None and frame.confidence >= cfg.onset_confidence
                         and self._rest >= cfg.onset_rest_frames)
            if confident or self._voiced_run >= cfg.onset_frames:
                out += self._onset(midi, cfg.velocity(self._onset_db), frame.loudness_db, frame.time)
            return out

        self.age += 1
        self._unvoiced = 0
        dev = (midi - self.held) * 100.0
        if abs(dev) > cfg.hysteresis_cents:
            self._away += 1
        else:
            self._away = 0
        if cfg.jump_cents is not None and abs(dev) > cfg.jump_cents and (
                cfg.jump_confidence is None or frame.confidence >= cfg.jump_confidence):
            side = 1 if dev > 0 else -1
            self._jump = self._jump + side if self._jump * side > 0 else side
        else:
            self._jump = 0
        fast = abs(self._jump) >= cfg.jump_frames and self.age >= (
            cfg.min_note_frames if cfg.jump_min_frames is None else cfg.jump_min_frames)
        if fast or (self._away >= cfg.change_frames and self.age >= cfg.min_note_frames):
            out += self._note_off()
            out += self._note_on(midi, cfg.velocity(frame.loudness_db), frame.loudness_db)
            return out
        out += self._expression(midi, frame.loudness_db)
        return out

    def stop(self) -> list[mido.Message]:
        """Release everything: note-off of the held note, then CC123 and CC121 per channel."""
        out = self._note_off() if self.held is not None else []
        channels = sorted(self._used | {self.config.master_channel} | set(self.config.member_channels[:1]))
        for ch in channels:
            out.append(_cc(ch, 123, 0))
            out.append(_cc(ch, 121, 0))
        started = self.started
        self.reset()
        self.started = started
        return out

    # -- helpers --------------------------------------------------------------------------

    def _voiced_pitch(self, frame: PitchFrame) -> float | None:
        if not frame.voiced or frame.confidence < self.config.min_confidence:
            return None
        return self._note_pitch(frame.f0_hz)

    def _note_pitch(self, f0_hz: float) -> float | None:
        """Fractional MIDI note of ``f0_hz`` when it is a pitch inside the note range, else None."""
        cfg = self.config
        if not f0_hz > 0 or not math.isfinite(f0_hz):
            return None
        midi = hz_to_midi(f0_hz)
        if not cfg.lowest_note - 0.5 <= midi < cfg.highest_note + 0.5:
            return None
        return midi

    def _onset(self, midi: float, velocity: int, loudness_db: float, time_s: float) -> list[mido.Message]:
        """A note started from silence: the header again first when ``reannounce_s`` is due."""
        cfg = self.config
        due = cfg.reannounce_s is not None and time_s - self._header_time >= cfg.reannounce_s
        return (self.start(time_s) if due else []) + self._note_on(midi, velocity, loudness_db)

    def _note_on(self, midi: float, velocity: int, loudness_db: float) -> list[mido.Message]:
        cfg = self.config
        note = int(round(midi))
        if cfg.mpe:
            members = cfg.member_channels
            ch = members[self._next_member % len(members)]
            self._next_member += 1
        else:
            ch = cfg.channel
        self.held, self.held_channel, self.age = note, ch, 1
        self._away = self._unvoiced = self._jump = self._cued = 0
        self._used.add(ch)
        out = self._expression(midi, loudness_db)
        out.append(mido.Message("note_on", channel=ch - 1, note=note, velocity=velocity))
        return out

    def _note_off(self) -> list[mido.Message]:
        assert self.held is not None
        msg = mido.Message("note_off", channel=self.held_channel - 1, note=self.held, velocity=0)
        self.held = None
        self.age = self._away = self._unvoiced = self._jump = self._cued = 0
        return [msg]

    def _expression(self, midi: float, loudness_db: float) -> list[mido.Message]:
        """Pitch bend (and MPE pressure) on the held note's channel, only on change."""
        assert self.held is not None
        cfg, ch = self.config, self.held_channel
        out = []
        value = bend_value(midi - self.held, cfg.bend_range)
        if self._bend.get(ch) != value:     # the first note of a channel always sets it
            self._bend[ch] = value
            out.append(mido.Message("pitchwheel", channel=ch - 1, pitch=value - BEND_CENTRE))
        if cfg.mpe and cfg.mpe_pressure and math.isfinite(loudness_db):
            p = cfg.velocity(loudness_db)
            if self._pressure.get(ch) != p:
                self._pressure[ch] = p
                out.append(mido.Message("aftertouch", channel=ch - 1, value=p))
        return out


def frames_to_messages(frames: Iterable[PitchFrame], config: MidiConfig | None = None) -> Iterator[tuple[float, mido.Message]]:
    """``(time [s], message)`` pairs for a whole stream, ending with :meth:`MidiNoteLogic.stop`."""
    logic = MidiNoteLogic(config)
    t = 0.0
    for frame in frames:
        t = frame.time
        for msg in logic.process(frame):
            yield t, msg
    for msg in logic.stop():
        yield t, msg


# ---------------------------------------------------------------------------------- file


class MidiFileSink:
    """Write the MIDI stream of :class:`MidiNoteLogic` into a standard MIDI file (type 0).

    Parameters
    ----------
    path : str or Path
        Output ``.mid``; written on :meth:`close` to a temporary file, then renamed, so a
        crash never leaves a half-written file.
    ticks_per_beat : int
        Resolution; at the fixed 120 BPM tempo one second is ``2 * ticks_per_beat`` ticks.
    **settings
        :class:`MidiConfig` fields (channel, bend_range, ...).
    """

    latency_samples = 0

    def __init__(self, path: str | Path, ticks_per_beat: int = 480, **settings: Any) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise MelodyRTError(f"{self.path}: folder {self.path.parent} does not exist")
        self.logic = MidiNoteLogic(MidiConfig.from_settings("MIDI file", **settings))
        self.ticks_per_beat = ticks_per_beat
        self._events: list[tuple[float, mido.Message]] = []
        self._last_time = 0.0
        self._closed = False

    def send(self, frame: PitchFrame) -> None:
        """Collect the messages of one frame."""
        if self._closed:
            return
        self._last_time = frame.time
        self._events.extend((frame.time, m) for m in self.logic.process(frame))

    def close(self) -> None:
        """Release notes and write the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._events.extend((self._last_time, m) for m in self.logic.stop())
        write_midi_file(self.path, self._events, self.ticks_per_beat)


def write_midi_file(path: str | Path, events: Sequence[tuple[float, mido.Message]], ticks_per_beat: int = 480) -> Path:
    """Write ``(time [s], message)`` events as a type-0 MIDI file at 120 BPM, atomically."""
    path = Path(path)
    mid = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    ticks_per_s = 2 * ticks_per_beat
    now = 0
    for t, msg in sorted(events, key=lambda e: e[0]):   # stable: keeps per-frame order
        tick = max(now, int(round(max(0.0, t) * ticks_per_s)))
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            mid.save(file=fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------- port


def _api_id(api: str) -> int:
    import rtmidi

    ids = {
        "auto": rtmidi.API_UNSPECIFIED, "alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM, "dummy": rtmidi.API_RTMIDI_DUMMY,
    }
    if api not in ids:
        raise MidiPortError(f"unknown MIDI api {api!r}; choose one of {', '.join(API_NAMES)}")
    if api != "auto" and ids[api] not in rtmidi.get_compiled_api():
        have = [n for n, i in ids.items() if i in rtmidi.get_compiled_api()]
        raise MidiPortError(f"MIDI api {api!r} is not compiled into python-rtmidi here; available: {', '.join(have)}")
    return ids[api]


def list_output_ports(api: str = "auto") -> list[str]:
    """Names of the MIDI output ports python-rtmidi sees through ``api`` (empty on failure)."""
    import rtmidi

    try:
        out = rtmidi.MidiOut(_api_id(api), name="melodyrt-probe")
    except Exception:   # rtmidi raises SystemError when e.g. the ALSA sequencer is missing
        return []
    try:
        return list(out.get_ports())
    finally:
        out.delete()


def match_port(ports: Sequence[str], wanted: str) -> int:
    """Index of the port named ``wanted``: exact name first, else a unique substring match.

    Raises
    ------
    MidiPortError
        No match or several, listing the ports.
    """
    if wanted in ports:
        return list(ports).index(wanted)
    hits = [i for i, p in enumerate(ports) if wanted.lower() in p.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = "; ".join(ports) if ports else "none"
    if not hits:
        raise MidiPortError(f"no MIDI output port matches {wanted!r}; available: {listing}")
    raise MidiPortError(f"MIDI port {wanted!r} is ambiguous; it matches: {'; '.join(ports[i] for i in hits)}")


class _Closable(Protocol):
    def close(self) -> None: ...


def _close_at_exit(ref: "weakref.ReferenceType[MidiSink]") -> None:
    sink = ref()
    if sink is not None:
        sink.close()


def _report_error(ref: "weakref.ReferenceType[MidiSink]", kind: int, message: str) -> None:
    sink = ref()
    if sink is not None:
        sink._on_rtmidi_error(kind, message)


class MidiSink:
    """Send frames as MIDI to a python-rtmidi output port (see the module docstring).

    Parameters
    ----------
    port_name : str or None
        Output port to open: exact name or a unique case-insensitive substring.
    virtual : bool
        Create a virtual output port named ``virtual_port_name`` instead (ALSA or JACK; not on
        Windows). Exactly one of ``port_name`` and ``virtual`` must be given.
    api : {"auto", "alsa", "jack", "coremidi", "winmm", "dummy"}
        MIDI API; "auto" lets RtMidi choose (ALSA on Linux desktops). "jack" uses
        ``rtmidi.API_UNIX_JACK`` and needs a running JACK server.
    channel : int [1..16]
    bend_range : int [semitones]
    client_name, virtual_port_name : str
        Names shown to other applications.
    reannounce_s : float or None [s]
        See :class:`MidiConfig`; default 5 s for virtual ports (a synth is usually connected
        after the port appears), None otherwise.
    **settings
        Further :class:`MidiConfig` fields (hysteresis_cents, change_frames, onset_frames,
        min_note_frames, release_frames, velocity_db, mpe, note_off_repeat_ms, rest_all_notes_off_ms, ...).

    Attributes
    ----------
    latency_samples : int [samples]
        0: sending adds no audio delay (the port's own transport delay is not known here).
    port : str
        Name of the opened port.
    alive : bool
        False once the port failed; later frames are dropped.
    errors : int
        Failures counted (a send that raised, RtMidi's error callback, the named port gone);
        the first one is logged as a warning, once.
    note_off_repeats : int
        Note-offs sent a second time (``note_off_repeat_ms``).
    messages_sent, note_ons_sent : int
        Messages the port accepted (every kind, the closing burst included), and of them the
        note-ons, so a receiver can count what was lost in transport.
    rest_all_notes_off : int
        Rests that ended in All Notes Off (``rest_all_notes_off_ms``; one CC123 per channel).

    Notes
    -----
    The safety net runs in :meth:`send`, in the caller's thread (the tracker's worker), after
    the frame's own messages, so it adds nothing before a note-on: a repeat falls due on the
    first frame at least ``note_off_repeat_ms`` of wall-clock time after its note-off (frames
    that arrive in a burst after a stall do not bring it forward), and goes out at once just
    before a note-on of the same note and channel instead, so it can never cut a re-triggered
    note. A repeat still due when the sink closes or panics is dropped: the release burst
    ends in CC123 (after a panic its own note-offs are repeated as usual). The delay is wall-clock
    time in this process: a stall that holds up JACK's process thread for longer than the
    delay can still put both note-offs into one cycle (the rest's All Notes Off, when enabled,
    ends such a note).

    A named port is looked for among the API's ports every :attr:`PORT_CHECK_FRAMES` frames
    (JACK keeps our own output port when the receiver's client closes, so sending would go
    on into nothing without a word). The libjack that python-rtmidi bundles prints its
    complaints to stderr (three lines when the server dies, three more on close); they are
    silenced, since the sink reports failures itself.

    Raises
    ------
    MidiPortError
        The API cannot be opened, or no port / several ports match (message lists them).
    """

    latency_samples = 0
    #: Frames between checks that a named output port still exists (1 s at 10 ms hops).
    PORT_CHECK_FRAMES = 100

    def __init__(
        self,
        port_name: str | None = None,
        virtual: bool = False,
        api: str = "auto",
        channel: int = 1,
        bend_range: int = 2,
        *,
        client_name: str = "melodyrt",
        virtual_port_name: str = "melodyrt out",
        reannounce_s: float | None | str = "auto",
        **settings: Any,
    ) -> None:
        import rtmidi

        if reannounce_s == "auto":
            reannounce_s = 5.0 if virtual else None
        self.config = MidiConfig.from_settings("MIDI", channel=channel, bend_range=bend_range, reannounce_s=reannounce_s, **settings)
        self.logic = MidiNoteLogic(self.config)
        self._lock = threading.RLock()
        self._closed = False
        self.alive = False
        self.errors = 0
        self._sounding: set[tuple[int, int]] = set()   # (channel 0..15, note) really sent
        self._channels: set[int] = set()
        self._out: Any = None
        self._watch_port = not virtual
        self._since_check = 0
        cfg = self.config
        self._repeat_s = cfg.note_off_repeat_ms / 1000.0 if cfg.note_off_repeat_ms else None
        self._rest_s = cfg.rest_all_notes_off_ms / 1000.0 if cfg.rest_all_notes_off_ms else None
        self._repeat_due: dict[tuple[int, int], float] = {}   # (channel 0..15, note) -> time.monotonic() [s]
        self._note_channels: set[int] = set()   # channels 0..15 a note-on went to
        self._rest_armed = False                # a note has sounded since the last rest's CC123
        self._rest_from: float | None = None    # stream time [s] of the frame the last note ended in
        self.note_off_repeats = 0
        self.rest_all_notes_off = 0
        self.messages_sent = 0
        self.note_ons_sent = 0
        if (port_name is None) == (not virtual):
            raise MidiPortError("choose one MIDI output: a port name (--midi-port NAME) or a virtual port (--virtual)")
        api_id = _api_id(api)
        if api in ("auto", "jack"):
            _quiet_bundled_libjack()
        try:
            out = rtmidi.MidiOut(api_id, name=client_name)
        except Exception as exc:
            hint = " (is the JACK server running?)" if api == "jack" else (
                " (no ALSA sequencer here? try api='jack' with a running JACK server)" if api in ("auto", "alsa") else "")
            raise MidiPortError(f"cannot open MIDI api {api!r}: {exc}{hint}") from None
        try:
            if virtual:
                out.open_virtual_port(virtual_port_name)
                self.port = f"{client_name}:{virtual_port_name}"
            else:
                assert port_name is not None
                ports = list(out.get_ports())
                idx = match_port(ports, port_name)
                out.open_port(idx, name=virtual_port_name)
                self.port = ports[idx]
        except MidiPortError:
            out.delete()
            raise
        except Exception as exc:
            out.delete()
            raise MidiPortError(f"cannot open MIDI port {port_name or virtual_port_name!r}: {exc}") from None
        ref = weakref.ref(self)   # no reference cycle through the port: the sink stays collectable
        out.set_error_callback(lambda kind, message, data: _report_error(ref, kind, message))
        self._out = out
        self.alive = True
        self._atexit = lambda ref=weakref.ref(self): _close_at_exit(ref)
        atexit.register(self._atexit)

    # -- Sink protocol ------------------------------------------------------------------

    def send(self, frame: PitchFrame) -> None:
        """Turn one frame into MIDI and send it; never raises (errors mark the sink dead)."""
        with self._lock:
            if self._closed or not self.alive:
                return
            try:
                msgs = self.logic.process(frame)
            except Exception:   # a bug must not reach the audio worker; notes are still released on close
                self.errors += 1
                log.exception("MIDI note logic failed on frame %s", frame.index)
                return
            self._emit(msgs)
            if self._repeat_due:
                self._send_due_repeats(time.monotonic())
            if self._rest_s is not None:
                self._rest_check(frame.time)
            if self._watch_port:
                self._since_check += 1
                if self._since_check >= self.PORT_CHECK_FRAMES:
                    self._since_check = 0
                    self._check_port()

    def cue(self, cue: OnsetCue) -> None:
        """Act on an onset cue (a provisional note-on with ``fast_onset``); never raises."""
        if not self.logic.config.fast_onset:
            return
        with self._lock:
            if self._closed or not self.alive:
                return
            try:
                msgs = self.logic.cue(cue)
            except Exception:
                self.errors += 1
                log.exception("MIDI note logic failed on the cue before frame %s", cue.index)
                return
            self._emit(msgs)

    def _send_due_repeats(self, now: float) -> None:
        """Send the note-off repeats whose time [``time.monotonic()``, s] has come."""
        for key in [k for k, due in self._repeat_due.items() if due <= now]:
            del self._repeat_due[key]
            self._send_repeat(key)

    def _send_repeat(self, key: tuple[int, int]) -> None:
        ch, note = key
        if self.alive and self._out is not None and self._send_bytes([0x80 | ch, note, 0]):
            self.note_off_repeats += 1

    def _rest_check(self, t: float) -> None:
        """All Notes Off once per rest of ``rest_all_notes_off_ms`` [stream time] with nothing sounding."""
        if self._sounding:
            self._rest_from = None
            return
        if not self._rest_armed:
            return
        if self._rest_from is None:
            self._rest_from = t     # the frame the last note ended in
            return
        assert self._rest_s is not None
        if t - self._rest_from >= self._rest_s - 1e-6:
            self._rest_armed = False
            self._rest_from = None
            for ch in sorted(self._note_channels):
                if not (self.alive and self._out is not None and self._send_bytes([0xB0 | ch, 123, 0])):
                    return
            self.rest_all_notes_off += 1

    def _check_port(self) -> None:
        """Mark the sink dead when the named port is no longer among the API's ports."""
        try:
            ports = list(self._out.get_ports())
        except Exception:   # cannot tell; the next send will
            return
        if self.port not in ports:
            self._fail(f"port {self.port} went away")

    def _fail(self, reason: str) -> None:
        """Count a failure; the first one stops MIDI output and is logged, once."""
        self.errors += 1
        if self.alive:
            self.alive = False
            log.warning("MIDI port %s failed (%s); MIDI output stopped", getattr(self, "port", "?"), reason)

    def close(self) -> None:
        """Note-off for every sounding note, then CC123 + CC121; close the port. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                atexit.unregister(self._atexit)
            except AttributeError:
                pass
            if self._out is None:
                return
            if self.alive:
                self._emit(self._release_messages())
                _drain()
            with contextlib.suppress(Exception):
                self._out.close_port()
            with contextlib.suppress(Exception):
                self._out.delete()
            self._out = None
            self.alive = False

    def panic(self) -> None:
        """Release every sounding note and reset the controllers now; the sink stays open."""
        with self._lock:
            if not self._closed and self.alive:
                self._emit(self._release_messages())

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> "MidiSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O ------------------------------------------------------------------------------

    def _release_messages(self) -> list[mido.Message]:
        """Note-offs for what was really sent, then CC123 + CC121 on every channel used
        (pending note-off repeats are dropped: the CC123 covers them)."""
        self._repeat_due.clear()
        self._rest_armed = False
        self._rest_from = None
        msgs = [mido.Message("note_off", channel=ch, note=n, velocity=0) for ch, n in sorted(self._sounding)]
        started = self.logic.started
        self.logic.reset()
        self.logic.started = started
        cfg = self.config
        channels = {c - 1 for c in (cfg.master_channel, cfg.member_channels[0])} | self._channels
        for ch in sorted(channels):
            msgs += [_cc(ch + 1, 123, 0), _cc(ch + 1, 121, 0)]
        return msgs

    def _on_rtmidi_error(self, kind: int, message: str) -> None:
        """RtMidi's error callback (ALSA reports a failed send only here): mark the port dead."""
        import rtmidi

        if kind == rtmidi.ERRORTYPE_DEBUG_WARNING:
            return
        self._fail(message)

    def _emit(self, msgs: Sequence[mido.Message]) -> None:
        for msg in msgs:
            if not self.alive or self._out is None:
                return
            key = (getattr(msg, "channel", -1), getattr(msg, "note", -1))
            note_on = msg.type == "note_on" and msg.velocity > 0
            if note_on:
                if key in self._repeat_due:  # a re-trigger: the pending repeat goes before it, never after
                    del self._repeat_due[key]
                    self._send_repeat(key)
                    if not self.alive:
                        return
                self._sounding.add(key)     # before sending: a release must never miss it
                self._note_channels.add(key[0])
                self._rest_armed = True
                self._rest_from = None
            if not self._send_bytes(msg.bytes()):
                return
            if note_on:
                self.note_ons_sent += 1
            if msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
                self._sounding.discard(key)
                if self._repeat_s is not None:
                    self._repeat_due[key] = time.monotonic() + self._repeat_s
            if hasattr(msg, "channel"):
                self._channels.add(msg.channel)

    def _send_bytes(self, data: Sequence[int]) -> bool:
        """Send one message; False (and the sink marked dead) when the port failed."""
        try:
            self._out.send_message(data)
        except Exception as exc:        # device gone / server stopped: never raise into the worker
            self._fail(str(exc))
            return False
        self.messages_sent += 1
        return True


_quiet_state: dict[str, Any] = {}


def _quiet_bundled_libjack() -> None:
    """Point the error and info printers of python-rtmidi's own libjack at a no-op (once).

    The wheel bundles a private copy of libjack (``python_rtmidi.libs/libjack-*.so``, not the
    system one PortAudio uses, which PortAudio already silences). The no-op is compiled code,
    so libjack's threads call it without the GIL. Nothing happens when no bundled copy is found.
    """
    if _quiet_state:
        return
    _quiet_state["done"] = True
    import ctypes
    import glob

    import rtmidi

    base = Path(rtmidi.__file__).resolve().parent.parent
    libs = sorted(glob.glob(str(base / "python_rtmidi*" / "libjack*.so*")))
    if not libs:
        return
    try:
        lib = ctypes.CDLL(libs[0])
        from numba import cfunc, types

        @cfunc(types.void(types.voidptr), cache=True)
        def _silent(message):  # type: ignore[no-untyped-def]  # pragma: no cover - machine code
            pass

        for name in ("jack_set_error_function", "jack_set_info_function"):
            setter = getattr(lib, name)
            setter.argtypes = (ctypes.c_void_p,)
            setter.restype = None
            setter(ctypes.c_void_p(_silent.address))
        _quiet_state["printer"] = _silent  # keep the machine code alive
    except Exception:   # an unusual build: leave its messages alone
        return


def _drain(seconds: float = 0.05) -> None:
    """Give the MIDI API time to deliver queued messages before the port closes.

    RtMidi's JACK backend hands messages to the server's next process cycle; closing the port
    at once drops the final note-offs (seen in tests without this wait). 50 ms covers JACK
    periods up to 2048 frames at 48 kHz (43 ms).
    """
    threading.Event().wait(seconds)


# ---------------------------------------------------------------------------------- signals


@contextlib.contextmanager
def close_on_signals(*closables: _Closable, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Close ``closables`` (sinks, chains) when SIGINT or SIGTERM arrives, then stop.

    For the CLI's main thread only (Python installs signal handlers there); library code never
    installs handlers. SIGINT then raises KeyboardInterrupt and SIGTERM ``SystemExit(143)``,
    so the caller's own ``finally`` blocks run too. Previous handlers are restored on exit.

    Examples
    --------
    >>> with MidiSink(virtual=True) as midi, close_on_signals(midi):   # doctest: +SKIP
    ...     run_stream(midi)
    """
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        for c in closables:
            with contextlib.suppress(Exception):
                c.close()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    for s in signals:
        previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = [
    "MidiConfig", "MidiNoteLogic", "MidiSink", "MidiFileSink", "MidiPortError", "bend_value", "close_on_signals",
    "frames_to_messages", "hz_to_midi", "list_output_ports", "match_port", "rpn", "write_midi_file",
]

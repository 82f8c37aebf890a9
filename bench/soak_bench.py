"""``melodyrt bench soak``: the live path for N minutes on JACK's dummy driver, watched for leaks,
drift, lost audio and stuck notes.

The rig is the e2e bench's (:mod:`melodyrt.bench.e2e_bench`): a private ``jackd -d dummy``,
the tracker on its live path (:class:`~melodyrt.rt.source.AudioSource` on the JACK device,
:class:`~melodyrt.rt.midi_out.MidiSink` on JACK MIDI, :class:`~melodyrt.rt.osc_out.OscSink`
to 127.0.0.1) plus a karaoke scorer (:class:`~melodyrt.rt.karaoke.session.KaraokeSession`) as
a third sink, judging against a song made of the played phrases. The out-of-process probe
(:mod:`melodyrt.bench.jack_probe`) plays the e2e bench's sung phrases looped for N minutes,
records every MIDI event and OSC bundle with its JACK frame and logs its playback timeline.

Measured
--------
- RSS of this process (the tracker's), sampled every few seconds from playback start: start,
  end, max, least-squares slope [MB/h] after the warm-up, and that slope less the growth of
  the karaoke scorer's sung-track record (by design: it keeps every frame for its report).
- Note-on latency (MIDI and OSC, as in ``bench e2e``): medians of the first and last 20 events
  and the slope over the run (:func:`~melodyrt.bench.e2e_bench.drift`).
- Overflows: PortAudio's ``input_overflow`` callbacks, the xrun notifications the probe
  received, and jackd's stderr (which client it blamed for each xrun); the ring's dropped
  samples; samples lost = JACK frames elapsed minus samples the stream delivered, between a
  reading at playback start and one at the end (one period of reading uncertainty).
- Stuck notes, from the MIDI stream the probe received: every note-on has its note-off before
  the next note-on of that note (or before the closing burst, where the sink's own note-offs
  release what it held); the notes sounding just before the sink's closing burst are the ones
  the sink held when it was closed; the burst ends in all-notes-off (CC123) on every channel
  used. The sink's safety net is understood: with ``note_off_repeat_ms`` each note-off comes
  twice, and a note whose first note-off was lost is ended by the repeat (counted in
  ``single_note_offs``, not as stuck, as long as it arrives before the next note-on of that
  note); a rest's CC123 (``rest_all_notes_off_ms``) ends what still sounds on its channel
  (``ended_by_all_notes_off``). The repeats and rests the sink sent are reported beside them.
- MIDI lost in transport: the messages the sink sent (its ``messages_sent``) less those the
  probe received; note-ons lost show as note-offs of a note that is not sounding
  (``lost_note_ons``). In an xrun JACK2 may run a late client twice in one cycle and the
  second run clears what the first wrote, so on a loaded machine a message now and then is
  lost; a lost note-on is a missed note, never a stuck one, and a lost note-off is what the
  repeat is for.
- Sink errors (the source's count, the MIDI sink's, OSC bundles the socket refused) and OSC
  bundles sent vs received.

``--check`` fails (exit 1) on stuck notes, dropped samples, RSS growth or a note-on latency
slope over ``bench/budget.yaml`` (``soak_*`` keys).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.frames import OnsetCue, PitchFrame

from .cfp_bench import machine_info, machine_line, save_figure
from .e2e_bench import (
    CENTS_OK, DRIFT_EVENTS, NOTE_S, REST_S, Phrase, Timeline, Unavailable, analyse, blame_text, jack_rig, jackd_xruns,
    live_path, make_signal,
)

#: Phrases in the looped signal (19 s of singing, then 0.5 s of silence; synthesizing it
#: takes a few seconds, so a longer loop would only slow the start).
LOOP_PHRASES = 20
#: RSS growth before this point [s] (at most a tenth of the run) is warm-up, not in the slope.
WARMUP_S = 60.0
#: Silence after playback before the sinks close [s]: held notes end by themselves.
TAIL_S = 1.5


# ----------------------------------------------------------------------------- helpers


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process [MB] (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 1e6


def rss_summary(t_s: np.ndarray, mb: np.ndarray, warmup_s: float = 0.0) -> dict[str, float]:
    """Start, end, max [MB] of an RSS series and its least-squares slope [MB/h], fitted to
    the samples from ``warmup_s`` [s] on (all of them when fewer than 3 are left)."""
    if mb.size == 0:
        return {"start_mb": 0.0, "end_mb": 0.0, "max_mb": 0.0, "growth_mb": 0.0, "slope_mb_per_h": 0.0,
                "slope_from_s": 0.0}
    keep = t_s >= warmup_s
    if keep.sum() < 3:
        keep[:] = True
    t, m = t_s[keep], mb[keep]
    slope = float(np.polyfit(t / 3600.0, m, 1)[0]) if m.size >= 3 and np.ptp(t) > 0 else 0.0
    return {"start_mb": float(mb[0]), "end_mb": float(mb[-1]), "max_mb": float(mb.max()),
            "growth_mb": float(mb[-1] - mb[0]), "slope_mb_per_h": slope, "slope_from_s": float(t[0])}


def record_mb(*lists: list[Any]) -> float:
    """Memory held by lists of Python objects [MB]: the lists and each distinct item."""
    seen: set[int] = set()
    size = 0
    for lst in lists:
        size += sys.getsizeof(lst)
        for x in lst:
            if id(x) not in seen:
                seen.add(id(x))
                size += sys.getsizeof(x)
    return size / 1e6


def looped_phrases(phrases: list[Phrase], loop_len: int, played: int) -> list[Phrase]:
    """The phrases of every repetition of a looped signal that was played to the end."""
    out = []
    for k in range(played // loop_len + 1):
        base = k * loop_len
        out += [Phrase(p.onset + base, p.step + base, p.end + base, p.first, p.second) for p in phrases
                if p.end + base <= played]
    return out


def song_of(phrases: list[Phrase], rate: int) -> Any:
    """A karaoke song of the phrases: per phrase a line of two notes (the note and the step),
    on the probe's timeline (song time 0 = the first played sample)."""
    from melodyrt.rt.karaoke.song import KaraokeSong, Line, Note

    notes, lines = [], []
    for i, p in enumerate(phrases):
        a, b, c = p.onset / rate, p.step / rate, p.end / rate
        notes += [Note(a, b, float(p.first), line=i), Note(b, c, float(p.second), line=i)]
        lines.append(Line(i, a, c, (2 * i, 2 * i + 1), ""))
    return KaraokeSong("soak", "melodyrt bench", tuple(notes), tuple(lines), format="soak")


def midi_pairing(events: list[bytes], held_at_close: set[tuple[int, int]], repeats: int = 0) -> dict[str, Any]:
    """Check a received MIDI stream for stuck notes (see the module docstring).

    Parameters
    ----------
    events : list of bytes
        Every message, in arrival order, including the sink's closing burst.
    held_at_close : set of (channel 0..15, note)
        What the sink held when it was closed.
    repeats : int
        Note-offs the sink sends again after each one (1 with ``note_off_repeat_ms``, else 0):
        up to ``1 + repeats`` note-offs per note are expected, the ones after the first that
        arrives are ``repeated_note_offs``, not orphans.

    Returns
    -------
    dict
        ``stuck_notes`` = notes still sounding at the end + note-ons over a sounding note
        (a note whose every note-off was lost). ``lost_note_ons``: notes whose note-offs came
        without their note-on (the note-on lost in transport: up to ``1 + repeats`` note-offs
        of a note that is not sounding count as one such note, not as orphans; compare with
        the sink's ``note_ons_sent``). ``orphan_note_offs``: note-offs beyond that (more
        copies than the sink sends). ``single_note_offs``: with ``repeats``, notes
        ended by only one of their note-offs before the next note-on of that note (one copy
        was lost: the first, which the repeat made up for, or the repeat itself; the notes
        the closing burst ends are not counted). ``ended_by_all_notes_off``: notes a CC123
        before the closing burst ended (every note-off of theirs lost).
    """
    import mido

    msgs = []
    bad = 0
    for data in events:
        try:
            msgs.append(mido.Message.from_bytes(list(data)))
        except ValueError:
            bad += 1
    # the closing burst: note-offs for the held notes, then CC123 + CC121 on each channel, in
    # pairs (a rest's CC123 just before it is the sink's safety net, not the burst)
    k = len(msgs)
    while (k >= 2 and msgs[k - 1].type == "control_change" and msgs[k - 1].control == 121
           and msgs[k - 2].type == "control_change" and msgs[k - 2].control == 123
           and msgs[k - 2].channel == msgs[k - 1].channel):
        k -= 2
    burst_cc = msgs[k:]
    offs = sorted(held_at_close)
    head = k - len(offs)
    burst_offs_ok = head >= 0 and [(m.type, m.channel, m.note) for m in msgs[head:k]] == [
        ("note_off", ch, n) for ch, n in offs]
    sounding: set[tuple[int, int]] = set()
    offs_got: dict[tuple[int, int], int] = {}   # note-offs received since the note's last note-on
    before_close: set[tuple[int, int]] | None = None
    on = off = double_on = orphan_off = repeated = single = by_cc123 = lost_on = 0
    channels: set[int] = set()

    def closed(key: tuple[int, int]) -> None:   # the note's note-offs are all in (a new note-on of it, or the end)
        nonlocal single
        if repeats and offs_got.get(key) == 1:
            single += 1

    for i, m in enumerate(msgs):
        if i == head:
            before_close = set(sounding)
            for key in list(offs_got):
                closed(key)
            offs_got.clear()
        if hasattr(m, "channel"):
            channels.add(m.channel)
        key = (getattr(m, "channel", -1), getattr(m, "note", -1))
        if m.type == "note_on" and m.velocity > 0:
            on += 1
            if key in sounding:
                double_on += 1
            closed(key)
            offs_got.pop(key, None)
            sounding.add(key)
        elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
            off += 1
            if key in sounding:
                sounding.discard(key)
                offs_got[key] = 1
            elif key in offs_got and offs_got[key] <= repeats:
                offs_got[key] += 1
                repeated += 1
            elif key not in offs_got:   # its note-on never arrived; the copies after this one are repeats
                lost_on += 1
                offs_got[key] = 1
            else:
                orphan_off += 1
        elif m.type == "control_change" and m.control == 123 and i < head:
            ended = {x for x in sounding if x[0] == m.channel}
            by_cc123 += len(ended)
            sounding -= ended
            for x in ended:
                offs_got[x] = 1 + repeats   # a late note-off of it would be an orphan
    if before_close is None:
        before_close = set(sounding)
        for key in list(offs_got):
            closed(key)
    all_off = {m.channel for m in burst_cc if m.control == 123}
    return {
        "messages": len(msgs), "unparsed": bad, "note_ons": on, "note_offs": off,
        "repeats_expected": repeats, "repeated_note_offs": repeated, "single_note_offs": single,
        "ended_by_all_notes_off": by_cc123,
        "double_note_ons": double_on, "lost_note_ons": lost_on, "orphan_note_offs": orphan_off,
        "stuck_at_end": sorted([list(x) for x in sounding]),
        "stuck_notes": len(sounding) + double_on,
        "held_by_sink_at_close": sorted([list(x) for x in held_at_close]),
        "sounding_before_close": sorted([list(x) for x in before_close]),
        "state_matches_sink": burst_offs_ok and before_close == held_at_close,
        "all_notes_off_at_close": bool(burst_cc) and all_off >= channels,
    }


class _HeldAtClose:
    """Passes frames and onset cues to a :class:`MidiSink`; notes what it holds when closed."""

    latency_samples = 0

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.held: set[tuple[int, int]] | None = None

    def send(self, frame: PitchFrame) -> None:
        self.sink.send(frame)

    def cue(self, cue: OnsetCue) -> None:
        self.sink.cue(cue)

    def close(self) -> None:
        if self.held is None:
            logic = self.sink.logic
            self.held = set() if logic.held is None else {(logic.held_channel - 1, int(logic.held))}
        self.sink.close()


def _frame_offset(probe: Any, source: Any, blocksize: int, reads: int = 5) -> float:
    """JACK frame of the stream's first captured sample: the latest cycle's end minus the
    samples delivered by then, median of a few readings [frames] (+- one period)."""
    vals = []
    for _ in range(reads):
        st = probe.status()
        delivered = source.stats.callbacks * blocksize
        vals.append(st["last_frame_time"] + probe.period - delivered)
        time.sleep(0.013)
    return float(np.median(vals))


# ------------------------------------------------------------------------------- run


def run(bundle: Any, out_dir: Path, *, minutes: float, rate: int = 48000, period: int = 128, blocksize: int = 128,
        server: str | None = None, sample_s: float | None = None, plots: bool = True,
        progress: Callable[[str], None] | None = None, fast_onset: bool = False) -> dict[str, Any]:
    """Run the soak; raises :class:`~melodyrt.bench.e2e_bench.Unavailable` when it cannot run here.

    ``fast_onset``: the MIDI and OSC sinks start notes on onset cues (``MidiConfig.fast_onset``).
    """
    from melodyrt.rt.bundle import ModelBundle, load_bundle

    if not minutes > 0:
        raise MelodyRTError(f"--minutes must be positive, got {minutes}")
    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = float(minutes) * 60.0
    sample_s = sample_s or min(5.0, max(0.5, seconds / 30.0))
    signal, phrases = make_signal(LOOP_PHRASES, rate)
    machine = machine_info()
    log = out_dir / "soak_jackd.log"
    with jack_rig(rate, period, server, name="melodyrt-soak", log=None if server else log) as js:
        result = _soak(bundle, signal, phrases, rate, blocksize, seconds, sample_s, progress, fast_onset)
    result["jackd"] = jackd_xruns(js.log_text) if server is None else {"note": f"server {server!r}: its log is not ours"}
    from melodyrt.rt.commands import _is_untrained

    result.update({
        "benchmark": "soak", "machine": machine,
        "settings": {"rate": rate, "jack_period": period, "blocksize": blocksize, "minutes": minutes,
                     "fast_onset": fast_onset,
                     "loop_phrases": LOOP_PHRASES, "loop_s": signal.shape[0] / rate, "rest_s": REST_S, "note_s": NOTE_S,
                     "cents_ok": CENTS_OK, "rss_sample_s": sample_s,
                     "server": "private jackd -d dummy" if server is None else server},
        "model": {"name": bundle.name, "dir": str(bundle.root), "untrained": bool(_is_untrained(bundle))},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    })
    if plots:
        result["plots"] = write_plot(result, out_dir)
    (out_dir / "soak_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / "soak_bench.md").write_text(markdown(result))
    return result


def _soak(bundle: Any, signal: np.ndarray, phrases: list[Phrase], rate: int, blocksize: int, seconds: float,
          sample_s: float, progress: Callable[[str], None] | None, fast_onset: bool = False) -> dict[str, Any]:
    from melodyrt.rt.karaoke.session import KaraokeSession

    loop_len = signal.shape[0]
    song_phrases = looped_phrases(phrases, loop_len, int(round(seconds * rate)))
    session = KaraokeSession(song_of(song_phrases, rate), offset_s=1e9)  # nothing judged before playback
    held: list[_HeldAtClose] = []
    samples: list[tuple[float, float, int, int, int]] = []  # (t since play [s], RSS MB, overflows, dropped, probe xruns)

    def wrap(midi: Any) -> _HeldAtClose:
        held.append(_HeldAtClose(midi))
        return held[0]

    with live_path(bundle, signal, rate, blocksize, seconds + 60, sinks=(session,), wrap_midi=wrap, loop=True,
                   seconds=seconds, notes={"fast_onset": fast_onset}) as lp:
        probe, source = lp.probe, lp.source
        try:
            time.sleep(0.3)
            probe.play()
            t0 = time.monotonic()
            while probe.status()["start_frame"] < 0 and time.monotonic() - t0 < 5.0:
                time.sleep(0.01)
            start = probe.status()
            if start["start_frame"] < 0:
                raise MelodyRTError("the probe never started playing")
            d_start = _frame_offset(probe, source, blocksize)
            session.offset_s = (start["start_frame"] - d_start) / rate  # input time of song time 0
            t_play = time.monotonic()
            error = _watch(probe, source, seconds, sample_s, samples, t_play, progress)
            time.sleep(TAIL_S)  # silence: the notes end by themselves
            _sample(probe, source, samples, t_play)
            d_end = _frame_offset(probe, source, blocksize)
            probe_rss = rss_mb(probe.info["pid"])
        finally:
            stats = source.stop()  # closes the sinks: MIDI note-offs + all-notes-off, the final score
        time.sleep(0.3)  # the closing burst reaches the probe
        got = probe.finish()
    timeline = Timeline(got.cycle_frame, got.cycle_pos)
    played = looped_phrases(phrases, loop_len, got.played)
    lat = analyse(played, timeline, got.midi, got.osc, rate)
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    midi, osc = lp.midi, lp.osc
    pairing = midi_pairing([d for _, d in got.midi], (held[0].held if held else None) or set(),
                           repeats=1 if midi.config.note_off_repeat_ms else 0)
    pairing["sink"] = {"note_off_repeat_ms": midi.config.note_off_repeat_ms, "note_off_repeats": midi.note_off_repeats,
                       "rest_all_notes_off_ms": midi.config.rest_all_notes_off_ms,
                       "rest_all_notes_off": midi.rest_all_notes_off, "messages_sent": midi.messages_sent,
                       "note_ons_sent": midi.note_ons_sent}
    pairing["lost_in_transport"] = midi.messages_sent - pairing["messages"]
    final = session.final
    rss = rss_summary(t, mb, min(WARMUP_S, 0.1 * seconds))
    # The scorer keeps the sung track for its final report (a float or two per frame): growth
    # by design, linear in the song's length; the budget checks what is left beside it.
    scorer = session.scorer
    scorer_mb = record_mb(scorer.sung_t, scorer.sung_f0, scorer.sung_hit)
    hours = max(t[-1] if t.size else 0.0, 1.0) / 3600.0
    frames_lost = d_end - d_start  # > 0: the stream delivered fewer samples than JACK ran frames
    return {
        "error": error,
        "capture_port": lp.capture,
        "device": lp.device["name"],
        "played_s": got.played / rate,
        "rss": {**rss, "samples": [[round(a, 2), round(b, 2)] for a, b in zip(t, mb)],
                "probe_end_mb": probe_rss, "scorer_frames": len(scorer.sung_t), "scorer_record_mb": scorer_mb,
                "scorer_mb_per_h": scorer_mb / hours,
                "net_slope_mb_per_h": rss["slope_mb_per_h"] - scorer_mb / hours},
        "latency": lat,
        "overflows": {
            "portaudio": stats.overflows, "status_events": stats.status_events, "status_log": source.status_log,
            "probe_xruns": got.xruns, "probe_slipped_frames": timeline.slipped_frames,
            "overflow_times_s": _change_times(samples, 2), "probe_xrun_times_s": _change_times(samples, 4),
        },
        "dropped_samples": stats.dropped_samples,
        "samples_lost": {"frames": int(round(frames_lost)), "periods": round(frames_lost / max(1, got.period), 2),
                         "note": "JACK frames elapsed minus samples delivered, playback start to end (+- one period)"},
        "midi": pairing,
        "sink_errors": {"source": stats.sink_errors, "midi_sink": midi.errors, "osc_dropped": osc.dropped},
        "osc": {"sent": osc.sent, "received": len(got.osc), "probe_lost": got.osc_lost},
        "probe": {"midi_lost": got.midi_lost, "cycles_unlogged": got.cycles_unlogged, **got.timing},
        "karaoke": {"total": final.total if final else None, "notes": len(session.song.notes),
                    "frames_judged": session.frames, "offset_s": round(session.offset_s, 4)},
        "source": stats.line(),
        "algorithmic": source.latency().as_dict(),
    }


def _sample(probe: Any, source: Any, samples: list[tuple[float, float, int, int, int]], t_play: float) -> None:
    st = source.stats
    samples.append((time.monotonic() - t_play, rss_mb(), st.overflows, st.dropped_samples, probe.status()["xruns"]))


def _watch(probe: Any, source: Any, seconds: float, sample_s: float, samples: list[tuple[float, float, int, int, int]],
           t_play: float, progress: Callable[[str], None] | None) -> str:
    """Sample RSS and the counters every ``sample_s`` [s] until the probe has played
    ``seconds``; "" or why the run ended early."""
    next_sample, next_report = t_play, t_play + 60.0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            _sample(probe, source, samples, t_play)
            next_sample += sample_s
        if progress is not None and now >= next_report:
            next_report += 60.0
            t, mb, ov, dr, xr = samples[-1]
            progress(f"soak: {t / 60:.0f}/{seconds / 60:g} min, RSS {mb:.0f} MB, {ov} overflow(s), {dr} dropped, "
                     f"probe xruns {xr}, {source.stats.frames} frames")
        if not source.running:
            return "the audio stream stopped (worker error or device lost)"
        if now - t_play >= seconds and probe.status()["done"]:
            return ""
        if now - t_play > seconds + 30.0:
            return "the probe did not finish playing in time"
        time.sleep(min(0.25, max(0.0, next_sample - time.monotonic())))


def _change_times(samples: list[tuple[float, float, int, int, int]], col: int) -> list[float]:
    """Sample times [s] at which the counter in column ``col`` went up."""
    out = []
    for a, b in zip(samples, samples[1:]):
        if b[col] > a[col]:
            out.append(round(b[0], 1))
    return out


# --------------------------------------------------------------------------- results


def measured_for_budget(result: dict[str, Any]) -> dict[str, float]:
    """Budget keys this benchmark measures."""
    out = {"soak_stuck_notes": float(result["midi"]["stuck_notes"] + (0 if result["midi"]["state_matches_sink"] else 1)
                                     + (0 if result["midi"]["all_notes_off_at_close"] else 1)),
           "soak_dropped_samples": float(result["dropped_samples"]),
           "soak_rss_growth_mb_per_h": result["rss"]["net_slope_mb_per_h"]}
    on = result["latency"]["midi_note_on"]
    if "slope_ms_per_min" in on:
        out["soak_latency_slope_ms_per_min"] = abs(on["slope_ms_per_min"])
    return out


def check_notes(result: dict[str, Any]) -> list[str]:
    """Plain sentences for the budget check's notes."""
    notes = []
    m = result["midi"]
    if m["stuck_notes"] or not m["state_matches_sink"] or not m["all_notes_off_at_close"]:
        notes.append(f"MIDI: {m['stuck_notes']} stuck note(s) (at the end {m['stuck_at_end']}, {m['double_note_ons']} "
                     f"note-on(s) over a sounding note), state matches the sink: {m['state_matches_sink']}, "
                     f"all-notes-off at close: {m['all_notes_off_at_close']} (soak_stuck_notes counts each failure)")
    if "slope_ms_per_min" not in result["latency"]["midi_note_on"]:
        notes.append("no note-on was answered: the latency slope is not measured (untrained model?)")
    if result["error"]:
        notes.append(f"the run ended early: {result['error']}")
    return notes


def write_plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for kind, style in (("midi_note_on", "o"), ("osc_note_on", "x")):
        v = result["latency"][kind]
        if v["latencies_ms"]:
            a1.plot(np.asarray(v["event_times_s"]) / 60.0, v["latencies_ms"], style, ms=2.5, alpha=0.6,
                    label=f"{kind} (slope {v['slope_ms_per_min']:+.2f} ms/min)")
    a1.set_ylabel("note-on latency [ms]")
    a1.legend(fontsize=8, loc="upper right")
    a1.set_title(f"melodyrt bench soak: {result['settings']['minutes']:g} min, JACK period "
                 f"{result['settings']['jack_period']}, model {result['model']['name']}")
    rss = np.asarray(result["rss"]["samples"]).reshape(-1, 2)
    if rss.size:
        a2.plot(rss[:, 0] / 60.0, rss[:, 1], "-", lw=1.2, label=f"RSS (slope {result['rss']['slope_mb_per_h']:+.1f} MB/h)")
    for x in result["overflows"]["overflow_times_s"]:
        a2.axvline(x / 60.0, color="r", lw=0.6, alpha=0.5)
    a2.set_xlabel("time since playback start [min] (red: PortAudio overflows)")
    a2.set_ylabel("RSS [MB]")
    a2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return [save_figure(fig, out_dir, "soak_timeline.png")]


def _safety_row(mi: dict[str, Any]) -> str:
    """The markdown row of the MIDI sink's safety net."""
    sk = mi.get("sink", {})
    rep = (f"note-offs repeated after {sk['note_off_repeat_ms']:g} ms: {sk['note_off_repeats']} sent, "
           f"{mi['repeated_note_offs']} received; notes ended by one of their two note-offs (one copy lost) "
           f"{mi['single_note_offs']}" if sk.get("note_off_repeat_ms") else "note-off repeat off")
    rest = (f"all-notes-off after {sk['rest_all_notes_off_ms']:g} ms rests: {sk['rest_all_notes_off']} sent, "
            f"{mi['ended_by_all_notes_off']} note(s) ended by one" if sk.get("rest_all_notes_off_ms")
            else "rest all-notes-off off")
    return f"| MIDI sink safety net | {rep}; {rest} |"


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    r, ov, mi = result["rss"], result["overflows"], result["midi"]
    lines = [f"# melodyrt bench soak ({s['minutes']:g} min)", "", machine_line(m),
             f"JACK dummy driver at {s['rate']} Hz, period {s['jack_period']}, stream blocksize {s['blocksize']}; "
             f"{s['loop_phrases']} sung phrases looped ({s['loop_s']:.1f} s a loop, {result['played_s']:.0f} s played); "
             f"model {result['model']['name']}{' (untrained)' if result['model']['untrained'] else ''}; sinks: JACK MIDI, "
             f"OSC to 127.0.0.1, karaoke scorer. Load at the end {result.get('load_avg_1min_end') or 0:.2f}.", ""]
    if result["error"]:
        lines += [f"**The run ended early: {result['error']}.**", ""]
    lines += ["| measure | value |", "|---|---|",
              f"| RSS start / end / max | {r['start_mb']:.1f} / {r['end_mb']:.1f} / {r['max_mb']:.1f} MB |",
              f"| RSS growth, slope | {r['growth_mb']:+.1f} MB, {r['slope_mb_per_h']:+.1f} MB/h (fitted from "
              f"{r['slope_from_s']:.0f} s) |",
              f"| of which the karaoke scorer's sung track; the rest | {r['scorer_record_mb']:.1f} MB "
              f"({r['scorer_mb_per_h']:.1f} MB/h); {r['net_slope_mb_per_h']:+.1f} MB/h |"]
    for kind in ("midi_note_on", "osc_note_on"):
        v = result["latency"][kind]
        if "p50_ms" in v:
            lines.append(f"| {kind} latency: first {DRIFT_EVENTS} / last {DRIFT_EVENTS} p50, slope | {v['first_p50_ms']:.2f} / "
                         f"{v['last_p50_ms']:.2f} ms, {v['slope_ms_per_min']:+.3f} ms/min ({v['answered']} / {v['events']} "
                         f"answered, p50 {v['p50_ms']:.2f}, p99 {v['p99_ms']:.2f} ms) |")
        else:
            lines.append(f"| {kind} latency | none answered ({v['events']} events) |")
    lost = result["samples_lost"]
    lines += [f"| overflows (PortAudio) | {ov['portaudio']} (at {ov['overflow_times_s'][:10]} s) |",
              f"| xruns notified to the probe | {ov['probe_xruns']} |",
              f"| xruns in jackd's log (client blamed) | {blame_text(result.get('jackd', {}))} |",
              f"| probe playback slipped | {ov['probe_slipped_frames']} frames |",
              f"| dropped samples (ring) | {result['dropped_samples']} |",
              f"| samples lost (JACK frames - delivered) | {lost['frames']} ({lost['periods']} periods) |",
              f"| MIDI received / sent | {mi['messages']} / {mi.get('sink', {}).get('messages_sent', '?')} messages, "
              f"{mi['note_ons']} / {mi.get('sink', {}).get('note_ons_sent', '?')} note-ons, {mi['note_offs']} note-offs |",
              f"| MIDI lost in transport | {mi.get('lost_in_transport', '?')} messages, of them note-ons "
              f"{mi.get('lost_note_ons', 0)} (their note-offs arrived) |",
              f"| stuck notes | {mi['stuck_notes']} (at the end {mi['stuck_at_end']}, note-on over a sounding note "
              f"{mi['double_note_ons']}, note-off of nothing {mi['orphan_note_offs']}) |",
              _safety_row(mi),
              f"| sounding before close = held by the sink | {mi['state_matches_sink']} ({mi['held_by_sink_at_close']}) |",
              f"| all-notes-off at close | {mi['all_notes_off_at_close']} |",
              f"| sink errors | source {result['sink_errors']['source']}, MIDI sink {result['sink_errors']['midi_sink']}, "
              f"OSC refused {result['sink_errors']['osc_dropped']} |",
              f"| OSC bundles sent / received | {result['osc']['sent']} / {result['osc']['received']} |",
              f"| karaoke | score {result['karaoke']['total']}, {result['karaoke']['frames_judged']} frames judged, "
              f"{result['karaoke']['notes']} notes |",
              f"| probe callback mean / max, longest gap | {result['probe'].get('callback_mean_us', 0):.0f} / "
              f"{result['probe'].get('callback_max_us', 0):.0f} us, {result['probe'].get('callback_gap_max_us', 0) / 1000:.1f} ms |"]
    lines += ["", f"Source: {result['source']}.",
              "RSS is this process's (the tracker's and its sinks'). The karaoke scorer keeps the sung track "
              f"({r['scorer_frames']} frames) for its final report, which grows with the song by design; "
              "`soak_rss_growth_mb_per_h` checks the slope without it."]
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return "\n".join(lines) + "\n"

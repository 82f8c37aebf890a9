"""``melodyrt karaoke``: sing along live, or score a recording with ``--score-file``.

Registered through the ``melodyrt.commands`` entry-point group (pyproject.toml); heavy
imports happen in the handler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import MelodyRTError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``karaoke`` subcommand."""
    p = sub.add_parser(
        "karaoke",
        help="sing along to a song with live pitch feedback and a score (or score a recording)",
        description="Play a song's backing track, track your singing from the microphone and show it "
        "against the melody in a local web page (or the terminal), with a running score out of 10000 "
        "and a report (PNG + JSON) at the end. SONG is an UltraStar .txt, a MIDI file (--track) or an "
        "f0 CSV (time,f0_hz). With --score-file, score a recorded PERFORMANCE (audio, tracked with the "
        "same tracker, or an f0 CSV) instead.",
    )
    p.add_argument("song", metavar="SONG", nargs="?", help="reference melody: UltraStar .txt, .mid/.midi/.kar, or f0 .csv")
    p.add_argument("performance", metavar="PERFORMANCE", nargs="?",
                   help="with --score-file: the recorded performance (wav/flac/ogg/mp3..., or a time,f0_hz CSV)")
    p.add_argument("--score-file", action="store_true", help="score PERFORMANCE offline instead of singing live")
    p.add_argument("--backing", metavar="AUDIO",
                   help="backing track to play (any audio file), or 'synth' for a synthesized one; default: the "
                   "song's #AUDIO/#MP3 file next to it, if present")
    p.add_argument("--device", help="input device (index or name substring; see --list-devices)")
    p.add_argument("--output-device", help="output device for the backing track (index or name substring)")
    p.add_argument("--rate", type=int, help="input sample rate [Hz] (default: the device's)")
    p.add_argument("--block", type=int, help="device block size [frames] (default: from --config, else 256)")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--no-browser", action="store_true", help="serve the live page but do not open a browser")
    p.add_argument("--terminal", action="store_true", help="show the live view in the terminal (no browser)")
    p.add_argument("--port", type=int, default=0, help="port of the live page on 127.0.0.1 (default: any free port)")
    p.add_argument("--difficulty", choices=("easy", "medium", "hard"), default="medium",
                   help="pitch tolerance: easy 100, medium 50, hard 30 cents (default medium)")
    p.add_argument("--tolerance", type=float, metavar="CENTS", help="pitch tolerance in cents (overrides --difficulty)")
    p.add_argument("--octave-agnostic", action="store_true", help="accept the right note in any octave")
    p.add_argument("--track", help="MIDI songs: track index or name (default: the first track with notes)")
    p.add_argument("--offset-ms", type=float, default=0.0,
                   help="extra delay between the backing track and your voice that the audio driver does not "
                   "report (e.g. Bluetooth), or where song time 0 lies in a --score-file recording [ms]")
    p.add_argument("--lead-in", type=float, default=3.0, help="seconds of silence before the backing starts (default 3)")
    p.add_argument("--out", help="report path without suffix (default ./<song>-karaoke -> .png and .json)")
    p.add_argument("--model", help="model bundle folder (default: the packaged model)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, ort, tensorrt, torch (default auto)")
    p.add_argument("--config", metavar="YAML", help="settings file with 'tracker:' and 'source:' sections, as for "
                   "'melodyrt live'; examples/backing.yaml suits singing over a backing the microphone hears")
    p.set_defaults(func=_karaoke)


def _config(args: argparse.Namespace) -> Any:
    from .scoring import ScoreConfig

    return ScoreConfig(difficulty=args.difficulty, tolerance_cents=args.tolerance, octave_agnostic=args.octave_agnostic)


def _report_path(args: argparse.Namespace, song_path: Path) -> Path:
    if args.out:
        return Path(args.out)
    return Path.cwd() / f"{song_path.stem}-karaoke"


def _karaoke(args: argparse.Namespace) -> int:
    if args.list_devices:
        return _list_devices()
    if not args.song:
        raise MelodyRTError("karaoke needs a SONG (UltraStar .txt, MIDI or f0 .csv)")
    from .song import load_song

    if args.performance and not args.score_file:
        raise MelodyRTError("a PERFORMANCE file is scored with --score-file (karaoke --score-file SONG PERFORMANCE)")
    from ..commands import _settings

    args.tracker_config, source, _ = _settings(args.config)  # read first: a bad file fails before any work
    args.source_settings = source
    song = load_song(args.song, args.track)
    config = _config(args)
    if args.score_file:
        if not args.performance:
            raise MelodyRTError("--score-file needs the recorded PERFORMANCE after SONG")
        return _score_file(args, song, config)
    return _live(args, song, config)


def _list_devices() -> int:
    from ..source import format_devices, input_devices, sounddevice

    print("inputs:")
    print(format_devices(input_devices()))
    sd = sounddevice()
    print("outputs:")
    for d in sd.query_devices():
        if d["max_output_channels"] > 0:
            print(f"  {d['index']:>3}  {d['name']}  [{d['max_output_channels']} out, {d['default_samplerate']:g} Hz]")
    return 0


def performance_frames(path: Path, args: argparse.Namespace) -> tuple[list, dict[str, Any]]:
    """Frames of a recorded performance: an f0 CSV as it is, audio through the tracker.

    Returns
    -------
    frames : list of PitchFrame
        ``time`` on the recording's timeline, the tracker's delay already removed.
    info : dict
        What was used (tracker latency) for the report.
    """
    if path.suffix.lower() == ".csv":
        from .scoring import frames_from_f0
        from .song import read_f0_csv

        times, f0, _ = read_f0_csv(path)
        return frames_from_f0(times, f0), {"performance": str(path), "source": "f0 csv"}
    from ..tracker import transcribe_file

    result = transcribe_file(path, args.model, args.backend, getattr(args, "tracker_config", None))
    frames = list(result.frames)
    info: dict[str, Any] = {"performance": str(path), "source": "tracker"}
    latency = getattr(result, "latency", None)
    if latency is not None and hasattr(latency, "as_dict"):
        info["latency"] = latency.as_dict()
    return frames, info


def _print_lines(score: Any) -> None:
    for ln in score.lines:
        if ln.rating == "-":
            continue
        print(f"  line {ln.index + 1:<3} {ln.rating:<8} {100 * ln.perfection:4.0f}%  +{ln.points:4.0f}  {ln.text}")


def _score_file(args: argparse.Namespace, song: Any, config: Any) -> int:
    from .report import write_report
    from .scoring import score_frames

    perf = Path(args.performance)
    if not perf.exists():
        raise MelodyRTError(f"{perf}: performance file not found")
    frames, info = performance_frames(perf, args)
    score = score_frames(song, frames, config, offset_s=args.offset_ms / 1000.0)
    png, js = write_report(song, score, _report_path(args, Path(args.song)), info)
    print(f"{song.title}: {len(song.notes)} notes, {len(song.lines)} lines; {perf.name}: {len(frames)} frames")
    _print_lines(score)
    print(f"score {score.total} / {config.max_score:.0f} ({config.difficulty}, +-{config.tolerance:.0f} cents"
          f"{', any octave' if config.octave_agnostic else ''})")
    print(f"wrote {png} and {js}")
    return 0


def _backing_path(args: argparse.Namespace, song: Any) -> Path | str | None:
    if args.backing:
        return args.backing
    audio = song.meta.get("audio")
    if audio and song.source is not None:
        candidate = Path(song.source).parent / audio
        if candidate.exists():
            return candidate
    return None


def _live(args: argparse.Namespace, song: Any, config: Any) -> int:
    import tempfile
    import webbrowser

    from .live import run_live
    from .report import write_report
    from .server import KaraokeServer
    from .session import KaraokeSession
    from .terminal import TerminalView

    backing = _backing_path(args, song)
    tmp = None
    if backing == "synth":
        from ..audio_io import write_wav
        from .backing import synth_backing

        tmp = tempfile.TemporaryDirectory(prefix="melodyrt-karaoke-")
        backing = write_wav(Path(tmp.name) / "backing.wav", synth_backing(song, 44100), 44100)
    session = KaraokeSession(song, config)
    server = KaraokeServer(session, port=args.port).start()
    view = TerminalView(session) if args.terminal else None
    print(f"{song.title}: {len(song.notes)} notes in {len(song.lines)} lines, {song.end:.1f} s; "
          f"backing: {backing or 'none'}")
    print(f"live view: {server.url}")
    if view is not None:
        view.header()
    elif not args.no_browser:
        webbrowser.open(server.url)
    try:
        result = run_live(
            session, backing=backing, device=args.device, output_device=args.output_device, rate=args.rate,
            blocksize=args.block, bundle=args.model, backend=args.backend, lead_in_s=args.lead_in,
            tracker_config=args.tracker_config, source_settings=args.source_settings,
            extra_offset_s=args.offset_ms / 1000.0, on_tick=view.update if view is not None else None,
        )
    finally:
        final = session.finish()
        if view is not None:
            view.finish()
        time.sleep(0.5)  # let open pages receive the final event
        server.close()
        if tmp is not None:
            tmp.cleanup()
    extra = {"offset_s": result.offset_s, "source": result.source_stats.line(), "underflows": result.underflows}
    latency = result.latency
    if hasattr(latency, "as_dict"):
        extra["latency"] = latency.as_dict()
    png, js = write_report(song, final, _report_path(args, Path(args.song)), extra)
    if view is None:
        _print_lines(final)
        print(f"score {final.total} / {config.max_score:.0f}")
    print(f"alignment: song time 0 at input time {result.offset_s:.3f} s; {result.source_stats.line()}",
          file=sys.stderr)
    print(f"wrote {png} and {js}")
    return 0

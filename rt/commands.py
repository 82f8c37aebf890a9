"""The runtime's own subcommands: ``cfp``, ``devices``, ``live``, ``transcribe``, ``demo``, ``version``.

Each ``register_*`` adds one subparser (see :mod:`melodyrt.rt.cli`); handlers import what
they need when they run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import WINDOW_KINDS as WINDOWS
from .config import NormConfig, PipelineConfig
from .errors import MelodyRTError


def _pipeline(args: argparse.Namespace) -> PipelineConfig:
    """Pipeline config from ``--config`` (or defaults) with ``--window`` applied."""
    cfg = PipelineConfig.from_yaml(args.config) if getattr(args, "config", None) else PipelineConfig()
    if getattr(args, "window", None):
        cfg = dataclasses.replace(cfg, cfp=dataclasses.replace(cfg.cfp, window=args.window))
    return cfg


# ---------------------------------------------------------------------------------- cfp


def register_cfp(sub: argparse._SubParsersAction) -> None:
    """``melodyrt cfp FILE...``: CFP features of audio files, as .npy (and PNG)."""
    p = sub.add_parser(
        "cfp",
        help="compute CFP features of audio files (.npy, optional PNG)",
        description="Compute the 3 x 360 CFP features of audio files through the streaming "
        "front end (resampled to 8 kHz, one frame per 10 ms) and save them as float32 arrays "
        "of shape (frames, 3, 360): channels spectrum, GCoS, GC.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s): wav, flac, ogg, mp3, aiff...")
    p.add_argument("--out", help="output .npy (one file) or folder (several files); default: "
                   "<name>.cfp.npy in the current folder")
    p.add_argument("--png", nargs="?", const="", metavar="OUT.png",
                   help="also draw the 3 channels (log-frequency axis); without a path, next to the .npy")
    p.add_argument("--window", choices=WINDOWS, help="analysis window (default: from --config, else symmetric)")
    p.add_argument("--norm", choices=("none", "running", "song"), default="none",
                   help="none: log(1+x); running: causal running peak; song: per-file min-max (default none)")
    p.add_argument("--channel", help="for multi-channel files: 'mix' or a channel index (0, 1, ...)")
    p.add_argument("--config", help="pipeline YAML (cfp/norm/resample sections)")
    p.set_defaults(func=_cfp)


def _cfp_outputs(files: list[Path], out: str | None, png: str | None) -> list[tuple[Path, Path | None]]:
    if len(files) > 1:
        folder = Path(out) if out else Path.cwd()
        if folder.suffix == ".npy":
            raise MelodyRTError("--out must be a folder when several files are given")
        if png:
            raise MelodyRTError("--png takes no path when several files are given (PNGs go next to the .npy files)")
        folder.mkdir(parents=True, exist_ok=True)
        npys = [folder / f"{f.stem}.cfp.npy" for f in files]
    else:
        target = Path(out) if out else Path.cwd() / f"{files[0].stem}.cfp.npy"
        if target.is_dir():
            target = target / f"{files[0].stem}.cfp.npy"
        npys = [target]
    pairs = []
    for npy in npys:
        if not npy.parent.is_dir():
            raise MelodyRTError(f"{npy}: folder {npy.parent} does not exist")
        picture = None if png is None else (Path(png) if png else npy.with_suffix("").with_suffix(".png"))
        pairs.append((npy, picture))
    return pairs


def file_features(path: Path, cfg: PipelineConfig, norm_mode: str, channel: str | None) -> np.ndarray:
    """CFP frames of one file through the streaming front end.

    Returns
    -------
    frames : ndarray [shape=(T, 3, 360)] [float32]
    """
    from .audio_io import load_audio
    from .cfp import StreamingCFP, song_normalise

    audio = load_audio(path, cfg.cfp.sample_rate, channel=channel, quality=cfg.resample.quality)
    stream = StreamingCFP(cfg.cfp, NormConfig(mode=norm_mode, running_release=cfg.norm.running_release))
    stream.warmup()
    block = 8000  # 1 s per call: the same stream a device would feed, in bigger pieces
    parts = [stream.process(audio[i : i + block]).copy() for i in range(0, audio.shape[0], block)]
    frames = np.concatenate(parts) if parts else np.zeros((0, 3, 360), np.float32)
    return song_normalise(frames) if norm_mode == "song" else frames


def _cfp(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cfp import StreamingCFP

    cfg = _pipeline(args)
    files = [Path(f) for f in args.files]
    outputs = _cfp_outputs(files, args.out, args.png)
    latency = StreamingCFP(cfg.cfp).latency_samples
    print(f"window {cfg.cfp.window}: frames describe the audio {latency} samples "
          f"({1000 * latency / cfg.cfp.sample_rate:.0f} ms) before their end; norm {args.norm}")
    bar = tqdm(list(zip(files, outputs)), desc="cfp", unit="file", disable=len(files) < 2, file=sys.stderr)
    for path, (npy, picture) in bar:
        frames = file_features(path, cfg, args.norm, args.channel)
        np.save(npy, frames)
        line = f"{path}: {frames.shape[0]} frames ({frames.shape[0] * cfg.cfp.hop_seconds:.2f} s) -> {npy}"
        if picture is not None:
            from .plot import plot_cfp

            times = ((np.arange(frames.shape[0]) + 1) * cfg.cfp.hop - latency) / cfg.cfp.sample_rate
            plot_cfp(frames, picture, cfg.cfp, title=f"{path.name} (CFP, {cfg.cfp.window} window)", frame_times=times)
            line += f", {picture}"
        tqdm.write(line, file=sys.stdout)
    return 0


# ------------------------------------------------------------------- tracker options


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="exported model folder (default: the packaged model/weights/rt)")
    p.add_argument("--backend", choices=("auto", "ort", "tensorrt", "torch"), default="auto",
                   help="inference engine (default auto: TensorRT when usable, else ONNX Runtime)")
    p.add_argument("--config", metavar="YAML", help="settings file with 'tracker:' (decoder, resample), "
                   "'source:' (live) and 'midi:' (note logic: live, and .mid files) sections; see examples/live.yaml")


#: Sections a ``--config`` file may have, and the commands that read each.
CONFIG_SECTIONS = {"tracker": "decoder and resampler (every command)", "source": "the audio input (live, karaoke)",
                   "midi": "note logic and MIDI output (live, and transcribe's .mid)"}


def _settings(path: str | None) -> tuple[Any, dict, dict]:
    """``(TrackerConfig, source section, midi section)`` from a ``--config`` file.

    Every section is checked when the file is read, also the ones the command does not use,
    so a typo fails before any device opens rather than after a take.
    """
    from .config import _from_mapping, load_yaml
    from .midi_out import MidiConfig
    from .source import SourceConfig
    from .tracker import TrackerConfig

    if not path:
        return TrackerConfig(), {}, {}
    data = load_yaml(path)
    unknown = set(data) - set(CONFIG_SECTIONS)
    if unknown:
        raise MelodyRTError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; allowed: {', '.join(CONFIG_SECTIONS)}")
    sections = {}
    for name in ("source", "midi"):
        sections[name] = data.get(name) or {}
        if not isinstance(sections[name], dict):
            raise MelodyRTError(f"{path}: '{name}' must be a mapping")
    _from_mapping(SourceConfig, sections["source"], "source.")
    try:
        MidiConfig.from_settings(f"{path}: midi", **sections["midi"])
    except (TypeError, ValueError) as exc:
        raise MelodyRTError(f"{path}: midi: {exc}") from None
    return TrackerConfig.from_dict(data.get("tracker")), sections["source"], sections["midi"]


def _live_settings(path: str | None) -> tuple[Any, dict]:
    """``(TrackerConfig, source section)`` from a ``--config`` file (defaults without one)."""
    tracker, source, _ = _settings(path)
    return tracker, source


def _load_model(path: str | None) -> Any:
    """The ``--model`` bundle, or the packaged one with a clear word when it is not there yet."""
    from .bundle import DEFAULT_BUNDLE, METADATA_FILE, load_bundle

    if path is None and not (DEFAULT_BUNDLE / METADATA_FILE).exists():
        raise MelodyRTError(f"no trained model installed at {DEFAULT_BUNDLE} yet: pass --model DIR "
                            "(a folder written by 'melodyrt export')")
    return load_bundle(path)


def _is_untrained(bundle: Any) -> bool:
    return not (bundle.meta.get("training_state") or {}).get("global_step")


# ------------------------------------------------------------------------------ devices


def register_devices(sub: argparse._SubParsersAction) -> None:
    """``melodyrt devices``: audio inputs (and MIDI outputs) this machine offers."""
    p = sub.add_parser("devices", help="list audio input devices and MIDI output ports",
                       description="List the audio input devices PortAudio sees (index, name, host API, "
                       "channels, default rate; * = default) and the MIDI output ports.")
    p.set_defaults(func=_devices)


def _devices(args: argparse.Namespace) -> int:
    from .source import format_devices, input_devices

    print("audio inputs (melodyrt live --device INDEX|NAME):")
    print(format_devices(input_devices()))
    try:
        from .midi_out import list_output_ports

        ports = list_output_ports()
        print("MIDI outputs (melodyrt live --midi-port NAME):")
        print("\n".join(f"  {p}" for p in ports) if ports else "  none (melodyrt live --virtual makes one)")
    except (ImportError, MelodyRTError) as exc:
        print(f"MIDI outputs: unavailable ({_first_line(exc)})")
    return 0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


# --------------------------------------------------------------------------------- live


def register_live(sub: argparse._SubParsersAction) -> None:
    """``melodyrt live``: track a microphone and send the pitch to MIDI / OSC."""
    p = sub.add_parser(
        "live", help="track a live input and send the melody to MIDI and/or OSC",
        description="Listen to an audio input, track the sung pitch every 10 ms and show it on one line "
        "(note, cents, confidence); optionally play it into a MIDI port and send it as OSC. "
        "Stop with Ctrl-C (or SIGTERM): every sounding note gets its note-off.",
    )
    p.add_argument("--device", help="input device index or name substring (see 'melodyrt devices')")
    p.add_argument("--rate", type=int, help="sample rate [Hz] (default: the device's)")
    p.add_argument("--blocksize", type=int, help="frames per audio callback (default 128)")
    p.add_argument("--channel", type=int, help="input channel to track, 0-based (default 0)")
    midi = p.add_mutually_exclusive_group()
    midi.add_argument("--midi-port", metavar="NAME", help="send MIDI to this output port (name or substring)")
    midi.add_argument("--virtual", action="store_true", help="create a virtual MIDI output port 'melodyrt out'")
    p.add_argument("--midi-api", default="auto", help="MIDI API: auto, alsa, jack (default auto)")
    p.add_argument("--midi-channel", type=int, help="MIDI channel 1..16 (default: from --config, else 1)")
    p.add_argument("--bend-range", type=int, help="pitch-bend range [semitones] (default: from --config, else 2)")
    p.add_argument("--osc", metavar="HOST:PORT", help="send OSC bundles over UDP to HOST:PORT")
    p.add_argument("--fast-onset", action="store_true",
                   help="start MIDI/OSC notes on onset cues, ~20 ms sooner (a dry voice; the midi setting fast_onset)")
    p.add_argument("--chain", metavar="YAML", help="plugin chain file: processors before the tracker, extra sinks")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--every", type=int, default=10,
                   help="when output is not a terminal, print every N-th frame (default 10 = 100 ms)")
    _add_model_options(p)
    p.set_defaults(func=_live)


def _live_sinks(args: argparse.Namespace, midi: dict | None = None) -> list[Any]:
    """MIDI and OSC sinks from the command line (opened now, so a bad port fails early).

    ``midi``: the ``--config`` file's ``midi:`` settings; ``--midi-channel``, ``--bend-range``
    and ``--fast-onset`` win over them. The OSC sink's note events follow the same settings.
    """
    sinks: list[Any] = []
    settings = dict(midi or {})
    settings.update({k: v for k, v in (("channel", args.midi_channel), ("bend_range", args.bend_range)) if v is not None})
    if getattr(args, "fast_onset", False):
        settings["fast_onset"] = True
    try:
        if args.midi_port or args.virtual:
            try:
                from .midi_out import MidiSink
            except ImportError as exc:
                raise MelodyRTError(f"MIDI output is not available in this installation ({exc})") from None
            sinks.append(MidiSink(port_name=args.midi_port, virtual=args.virtual, api=args.midi_api, **settings))
        if args.osc:
            try:
                from .osc_out import OscSink, parse_target
            except ImportError as exc:
                raise MelodyRTError(f"OSC output is not available in this installation ({exc})") from None
            host, port = parse_target(args.osc)
            sinks.append(OscSink(host, port, **settings))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def _live(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import _from_mapping
    from .outputs import ReadoutSink
    from .source import AudioSource, SourceConfig, resolve_input
    from .tracker import Tracker

    if args.seconds is not None and args.seconds <= 0:
        raise MelodyRTError(f"--seconds must be positive, got {args.seconds}")
    if args.every <= 0:
        raise MelodyRTError(f"--every must be positive, got {args.every}")
    tracker_cfg, source_data, midi_data = _settings(args.config)
    overrides = {k: v for k, v in (("device", args.device), ("rate", args.rate), ("blocksize", args.blocksize),
                                   ("channel", args.channel)) if v is not None}
    source_cfg = _from_mapping(SourceConfig, {**source_data, **overrides}, "source.")
    device, rate = resolve_input(source_cfg)
    bundle = _load_model(args.model)
    sinks = _live_sinks(args, midi_data)
    chain = None
    try:
        if args.chain:
            from .chain import ChainSpec, build_chain

            spec = ChainSpec.from_yaml(args.chain)
            if spec.source is not None:
                raise MelodyRTError(f"{args.chain}: in 'melodyrt live' the audio device is the source; "
                                    "remove 'source' from the chain file")
            chain = build_chain(spec, sample_rate=rate, block_size=source_cfg.blocksize, extra_sinks=sinks)
            sinks = list(chain.sinks)
        tracker = Tracker(rate, bundle, args.backend, tracker_cfg,
                          pre_delay_samples=chain.latency_samples if chain is not None else 0)
    except BaseException:
        for s in sinks:
            s.close()
        raise
    holder: dict[str, AudioSource] = {}
    stopped_by: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:  # SIGINT / SIGTERM: stop cleanly, exit 128 + signum
        if not stopped_by:
            stopped_by.append(signum)
        holder["src"].request_stop()

    previous: dict[int, Any] = {}
    try:
        readout = ReadoutSink(every=args.every, status=lambda: f"  xruns {holder['src'].overflows}")
        source = AudioSource(tracker, [readout, *sinks], source_cfg, device,
                             pre=chain.process if chain is not None else None)
        holder["src"] = source
        if threading.current_thread() is threading.main_thread():
            from .cli import restart_interrupted_calls

            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, on_signal)
            restart_interrupted_calls()  # a signal must not fail PortAudio's JACK requests
        print(f"melodyrt live: {device['name']} [{device['hostapi']}] at {rate} Hz, {source_cfg.blocksize}-frame "
              f"blocks, model {bundle.name}, engine {tracker.engine.name}"
              + (" (UNTRAINED model)" if _is_untrained(bundle) else ""))
        if chain is not None:
            print(f"input chain: {len(chain.processors)} processor(s), {chain.latency_samples} samples of delay")
        print("outputs: " + (", ".join(type(s).__name__ for s in sinks) or "readout only") + "; Ctrl-C stops")
        stats = source.run(args.seconds)
        print(source.latency().table())
        print(f"measured: frames left the tracker {stats.lag_mean:.0f} samples after the audio they describe "
              f"(mean; max {stats.lag_max:.0f}) = algorithmic delay + hop wait")
        print(stats.line())
        trouble = _sink_trouble(sinks)
        if trouble:
            print(trouble)
    except BaseException as exc:
        if "src" in holder:
            holder["src"].stop()  # closes every sink once (idempotent: run() may have done it)
        else:
            for s in sinks:
                with contextlib.suppress(Exception):
                    s.close()
        if not (stopped_by and isinstance(exc, MelodyRTError)):  # asked to stop: that is the news
            raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if previous:
            from .cli import restart_interrupted_calls

            restart_interrupted_calls()
    if stopped_by:
        from .cli import signal_message

        print(signal_message(stopped_by[0]), file=sys.stderr)
        return 128 + stopped_by[0]
    return 0


def _sink_trouble(sinks: Sequence[Any]) -> str:
    """One line naming the sinks that counted failures (``errors``, ``refused``, ``dropped``), or ""."""
    parts = []
    for s in sinks:
        counts = [f"{n} {what}" for what in ("errors", "refused", "dropped")
                  if isinstance(n := getattr(s, what, 0), int) and n > 0]
        if counts:
            parts.append(f"{type(s).__name__} {', '.join(counts)}")
    return "sink trouble: " + "; ".join(parts) if parts else ""


# --------------------------------------------------------------------------- transcribe


def register_transcribe(sub: argparse._SubParsersAction) -> None:
    """``melodyrt transcribe FILE...``: pitch tracks (CSV), MIDI files and plots of audio files."""
    p = sub.add_parser(
        "transcribe", help="track the melody of audio files: CSV, MIDI and PNG",
        description="Track audio files through the same streaming tracker as 'live' (the stream fed from "
        "the file) and write a CSV pitch track (time,f0_hz,confidence every 10 ms; f0_hz = 0 when unvoiced), "
        "a standard MIDI file and/or a PNG of the contour. A bad file is reported on one line and the batch "
        "goes on; the exit status is 2 if any file failed.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s): wav, flac, ogg, mp3, aiff...")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="output for a single input; its suffix (.csv, .mid, .png) "
                     "picks the format unless --format is given (other formats go next to it)")
    out.add_argument("--out-dir", metavar="DIR", help="folder for <name>.csv / .mid / .png (created if missing)")
    p.add_argument("--format", help="comma-separated: csv, mid, png (default csv,mid; with --out: its suffix)")
    p.add_argument("--channel", help="for multi-channel files: 'mix' or a channel index (0, 1, ...)")
    p.add_argument("--no-bend", action="store_true", help="MIDI files without pitch bend (plain notes)")
    _add_model_options(p)
    p.set_defaults(func=_transcribe)


def _transcribe_targets(files: list[Path], args: argparse.Namespace) -> tuple[list[Path], tuple[str, ...]]:
    """Output stems (one per file) and formats."""
    from .outputs import FORMATS, parse_formats

    if args.out:
        if len(files) > 1:
            raise MelodyRTError("--out names one output; use --out-dir DIR for several files")
        out = Path(args.out)
        if out.is_dir():   # `--out .` or `--out results/`: the folder the user means
            return [out / files[0].stem], parse_formats(args.format or "csv,mid")
        suffix = out.suffix.lower().lstrip(".")
        suffix = "mid" if suffix == "midi" else suffix
        formats = parse_formats(args.format) if args.format else ((suffix,) if suffix in FORMATS else ("csv", "mid"))
        stem = out.with_suffix("") if suffix in FORMATS else out
        if not stem.parent.is_dir():
            raise MelodyRTError(f"{out}: folder {stem.parent} does not exist")
        return [stem], formats
    formats = parse_formats(args.format or "csv,mid")
    folder = Path(args.out_dir)
    if folder.exists() and not folder.is_dir():
        raise MelodyRTError(f"--out-dir {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    stems = [f.stem for f in files]
    return [folder / (f.stem if stems.count(f.stem) == 1 else f.name) for f in files], formats


def _transcribe(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .audio_io import read_audio
    from .cli import _describe
    from .engine import create_engine
    from .outputs import write_outputs
    from .tracker import Tracker, transcribe_signal

    files = [Path(f) for f in args.files]
    stems, formats = _transcribe_targets(files, args)
    tracker_cfg, _, midi_data = _settings(args.config)
    bundle = _load_model(args.model)
    engine = create_engine(args.backend, bundle)
    trackers: dict[int, Tracker] = {}
    failed: list[tuple[Path, str]] = []
    audio_s, t0 = 0.0, time.perf_counter()
    bar = tqdm(list(zip(files, stems)), desc="transcribe", unit="file", disable=len(files) < 2, file=sys.stderr)
    for path, stem in bar:
        try:
            x, rate = read_audio(path, args.channel)
            if rate not in trackers:
                trackers[rate] = Tracker(rate, bundle, config=tracker_cfg, engine=engine)
                trackers[rate].warmup()
            result = transcribe_signal(x, rate, tracker=trackers[rate])
            written = write_outputs(result.frames, stem, formats, result.duration, title=path.name,
                                    bend=not args.no_bend, midi=midi_data)
        except (MelodyRTError, OSError) as exc:
            if len(files) == 1:
                raise
            message = _describe(exc)
            failed.append((path, message))
            tqdm.write(f"melodyrt: error: {message if str(path) in message else f'{path}: {message}'}", file=sys.stderr)
            continue
        audio_s += result.duration
        voiced = sum(f.voiced for f in result.frames)
        tqdm.write(f"{path}: {len(result.frames)} frames ({result.duration:.2f} s, {voiced} voiced) -> "
                   + ", ".join(str(w) for w in written), file=sys.stdout)
    wall = time.perf_counter() - t0
    done = len(files) - len(failed)
    speed = f", {audio_s / wall:.0f}x real time" if wall > 0 and audio_s > 0 else ""
    if len(files) > 1 or failed:
        print(f"transcribed {done} of {len(files)} file(s): {audio_s:.1f} s of audio in {wall:.1f} s{speed}")
    if failed:
        print(f"failed: {', '.join(str(p) for p, _ in failed)}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------- demo


def register_demo(sub: argparse._SubParsersAction) -> None:
    """``melodyrt demo``: the real-time tracker on a synthesized sung melody."""
    p = sub.add_parser(
        "demo",
        help="stream a synthesized sung melody through the tracker in real time; write MIDI, CSV, PNG",
        description="Synthesize a short singing-like example (a harmonic voice with vibrato and glides "
        "over a soft accompaniment), stream it through the real-time tracker at the pace a sound card "
        "would deliver it (device rate, small blocks), show the live readout, compare with the sung "
        "notes, and write demo.mid, demo.csv, demo.png and demo.wav.",
    )
    p.add_argument("--rate", type=int, default=48000, help="device rate to simulate [Hz] (default 48000)")
    p.add_argument("--block", type=int, default=128, help="device block size [frames] (default 128)")
    p.add_argument("--fast", action="store_true", help="do not pace the stream in real time")
    p.add_argument("--every", type=int, default=10,
                   help="when output is not a terminal, print every N-th frame (default 10 = 100 ms)")
    p.add_argument("--out", default="melodyrt-demo", help="output folder (default ./melodyrt-demo)")
    p.add_argument("--seed", type=int, default=0)
    _add_model_options(p)
    p.set_defaults(func=_demo)


def run_demo(tracker: Any, block: int = 128, seed: int = 0, paced: bool = True,
             sinks: Sequence[Any] = ()) -> dict:
    """Stream the demo song through ``tracker`` as a device would deliver it.

    Parameters
    ----------
    tracker : Tracker
        Warmed up; its ``input_rate`` is the simulated device rate.
    block : int [samples]
    seed : int
    paced : bool
        Deliver each block when a real device would (its last sample's time after the start).
    sinks : sequence of Sink
        Receive every frame as it is produced (not closed here).

    Returns
    -------
    dict
        ``frames`` (those describing the song), ``song``, ``truth_hz`` at each frame's time,
        ``error_cents``, ``rpa`` (fraction of truly voiced frames within 50 cents),
        ``wall_lag_ms`` (per frame: when it was produced minus when its audio arrived;
        meaningful when paced).
    """
    import time

    from .readout import cents_between
    from .synth import sung_melody

    rate = tracker.input_rate
    song = sung_melody(sr=rate, seed=seed)
    audio = song.audio
    tracker.reset()
    frames, lags = [], []
    t0 = time.perf_counter()
    for start in range(0, audio.shape[0], block):
        end = min(start + block, audio.shape[0])
        if paced:
            wait = t0 + end / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        for f in tracker.process(audio[start:end]):
            lags.append(1000.0 * (time.perf_counter() - (t0 + (f.sample + 1) / rate)))
            frames.append(f)
            for s in sinks:
                s.send(f)
    frames += tracker.flush()
    n = audio.shape[0]
    frames = [f for f in frames if 0 <= f.sample < n]
    times = np.array([f.time for f in frames])
    truth = song.f0_at(times)
    f0 = np.array([f.f0_hz if f.voiced else 0.0 for f in frames])
    voiced = truth > 0
    err = np.full(times.shape, np.inf)
    ok = voiced & (f0 > 0)
    err[ok] = np.abs(cents_between(f0[ok], truth[ok]))
    return {
        "frames": frames, "song": song, "truth_hz": truth, "error_cents": err,
        "rpa": float(np.mean(err[voiced] <= 50)) if voiced.any() else float("nan"),
        "wall_lag_ms": np.array(lags),
    }


def _demo(args: argparse.Namespace) -> int:
    from .audio_io import write_wav
    from .outputs import ReadoutSink, write_outputs
    from .resample import check_rate
    from .tracker import Tracker

    rate = check_rate(args.rate, "--rate")
    if args.block <= 0:
        raise MelodyRTError(f"--block must be positive, got {args.block}")
    if args.every <= 0:
        raise MelodyRTError(f"--every must be positive, got {args.every}")
    tracker_cfg, _ = _live_settings(args.config)
    bundle = _load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(rate, bundle, args.backend, tracker_cfg)
    tracker.warmup()
    pace = "as fast as possible (--fast)" if args.fast else "in real time"
    print(f"melodyrt demo: synthetic singing at {rate} Hz in {args.block}-frame blocks, {pace}; model "
          f"{bundle.name} on {tracker.engine.name}" + (" (UNTRAINED model: pitches are noise)" if _is_untrained(bundle) else ""))
    print(tracker.latency(args.block).table())
    readout = ReadoutSink(every=args.every)
    try:
        r = run_demo(tracker, args.block, args.seed, paced=not args.fast, sinks=[readout])
    finally:
        readout.close()
    frames, song = r["frames"], r["song"]
    voiced_truth = int(np.count_nonzero(r["truth_hz"] > 0))
    print(f"pitch within 50 cents of the sung f0 in {100 * r['rpa']:.1f} % of {voiced_truth} sung frames "
          f"(raw pitch accuracy; the times compared are the frames' timestamps)")
    hop = tracker.timings.summary().get("hop")
    if hop:
        print(f"compute per 10 ms hop (CFP + model + decoder): median {hop['p50_ms']:.2f} ms, "
              f"p99 {hop['p99_ms']:.2f} ms, max {hop['max_ms']:.2f} ms")
    if not args.fast and r["wall_lag_ms"].size:
        lag = r["wall_lag_ms"]
        print(f"measured in real time: each frame was ready {np.median(lag):.1f} ms (median; max {lag.max():.1f}) "
              f"after the audio it describes reached the tracker")
    truth_times = np.arange(song.f0.shape[0])[::max(1, rate // 1000)] / rate
    written = write_outputs(frames, out / "demo", ("mid", "csv", "png"), song.duration,
                            title=f"melodyrt demo: tracked pitch of a synthetic sung melody ({bundle.name})",
                            reference=(truth_times, song.f0_at(truth_times)))
    written.append(write_wav(out / "demo.wav", song.audio, rate))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# ------------------------------------------------------------------------------ version


def register_version(sub: argparse._SubParsersAction) -> None:
    """``melodyrt version``: versions of melodyrt and the libraries it runs on."""
    p = sub.add_parser("version", help="print versions of melodyrt and its libraries")
    p.set_defaults(func=_version_cmd)


def library_versions() -> dict[str, str]:
    """Versions of melodyrt, Python and the runtime libraries (``"missing"`` if absent)."""
    import platform
    from importlib import metadata

    out = {"melodyrt": "unknown", "python": platform.python_version()}
    for name in ("melodyrt", "numpy", "numba", "soxr", "soundfile", "onnxruntime", "sounddevice"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    try:
        import soxr

        out["libsoxr"] = soxr.__libsoxr_version__
    except (ImportError, AttributeError):
        pass
    try:
        import soundfile

        out["libsndfile"] = soundfile.__libsndfile_version__
    except (ImportError, OSError, AttributeError):
        pass
    return out


def _version_cmd(args: argparse.Namespace) -> int:
    for name, version in library_versions().items():
        print(f"{name:<12} {version}")
    return 0

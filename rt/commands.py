"""The runtime's own subcommands: ``cfp``, ``demo`` and ``version``.

Each ``register_*`` adds one subparser (see :mod:`melodyrt.rt.cli`); handlers import what
they need when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from .config import NormConfig, PipelineConfig
from .errors import MelodyRTError

WINDOWS = ("symmetric", "asymmetric")


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


# --------------------------------------------------------------------------------- demo


def register_demo(sub: argparse._SubParsersAction) -> None:
    """``melodyrt demo``: the streaming front end on a synthesized sung melody."""
    p = sub.add_parser(
        "demo",
        help="stream a synthesized sung melody through the front end and print the pitch it sees",
        description="Synthesize a short singing-like example (a harmonic voice with vibrato and "
        "glides over a soft accompaniment), stream it at the device rate in small blocks through "
        "the resampler and the CFP front end, and print the CFP peak (Z = GCoS * GC) against the "
        "true f0. Writes a PNG of the features and the WAV that was streamed.",
    )
    p.add_argument("--rate", type=int, default=48000, help="device rate to simulate [Hz] (default 48000)")
    p.add_argument("--block", type=int, default=128, help="device block size [frames] (default 128)")
    p.add_argument("--window", choices=WINDOWS, help="analysis window (default symmetric)")
    p.add_argument("--every", type=int, default=10, help="print every N-th frame (default 10 = every 100 ms; 1 = all)")
    p.add_argument("--out", default="melodyrt-demo", help="folder for demo.png and demo.wav (default ./melodyrt-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="pipeline YAML (cfp/norm/resample sections)")
    p.set_defaults(func=_demo)


def run_demo(
    cfg: PipelineConfig, rate: int = 48000, block: int = 128, seed: int = 0
) -> dict:
    """Stream the demo song and score the CFP peak against the true f0.

    Returns
    -------
    result : dict
        ``frames`` (T, 3, 360), ``times`` [s] each frame describes, ``peak_hz``,
        ``salience``, ``truth_hz`` (T,), ``song`` (:class:`~melodyrt.rt.synth.Song`),
        ``latency`` dict [samples at 8 kHz], ``within_50c`` (fraction of voiced frames).
    """
    from .cfp import StreamingCFP
    from .readout import cents_between, cfp_peak
    from .resample import StreamingResampler
    from .synth import sung_melody

    if block <= 0:
        raise MelodyRTError(f"--block must be positive, got {block}")
    song = sung_melody(sr=rate, seed=seed)
    resampler = StreamingResampler(rate, cfg.cfp.sample_rate, cfg.resample.quality)
    cfp = StreamingCFP(cfg.cfp, NormConfig(mode="none"))
    cfp.warmup()  # compile or load the kernels before the "stream" opens
    parts = []
    for i in range(0, song.audio.shape[0], block):
        frames = cfp.process(resampler.process(song.audio[i : i + block]))
        if frames.shape[0]:
            parts.append(frames.copy())
    frames = np.concatenate(parts)
    k = np.arange(frames.shape[0])
    delay = cfp.latency_samples + resampler.latency_samples
    times = ((k + 1) * cfg.cfp.hop - delay) / cfg.cfp.sample_rate
    peak, sal = cfp_peak(frames, cfg.cfp)
    truth = song.f0_at(times)
    voiced = truth > 0
    err = np.abs(cents_between(np.where(peak > 0, peak, 1.0), np.where(voiced, truth, 1.0)))
    return {
        "frames": frames, "times": times, "peak_hz": peak, "salience": sal, "truth_hz": truth, "song": song,
        "latency": {"resampler": resampler.latency_samples, "cfp": cfp.latency_samples, "total": delay},
        "within_50c": float(np.mean(err[voiced] <= 50)) if voiced.any() else float("nan"),
        "error_cents": err,
    }


def _demo(args: argparse.Namespace) -> int:
    from .audio_io import write_wav
    from .plot import plot_cfp
    from .readout import note_name
    from .resample import check_rate

    cfg = _pipeline(args)
    check_rate(args.rate, "--rate")
    if args.every <= 0:
        raise MelodyRTError(f"--every must be positive, got {args.every}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = run_demo(cfg, args.rate, args.block, args.seed)
    lat = r["latency"]
    sr = cfg.cfp.sample_rate
    print(f"melodyrt demo: {r['song'].duration:.1f} s synthetic singing at {args.rate} Hz, streamed in "
          f"{args.block}-frame blocks -> resampler -> CFP ({cfg.cfp.window} window)")
    print(f"latency: resampler {lat['resampler']} + window {lat['cfp']} = {lat['total']} samples at 8 kHz "
          f"({1000 * lat['total'] / sr:.0f} ms); times below are the audio each frame describes")
    print(f"{'time':>7}  {'sung f0':<14}{'CFP peak':<14}{'Z':>8}")
    for k in range(0, r["frames"].shape[0], args.every):
        t, truth, peak = r["times"][k], r["truth_hz"][k], r["peak_hz"][k]
        if t < 0:
            continue
        mark = ""
        if truth > 0:
            mark = "ok" if r["error_cents"][k] <= 50 else "off"
        print(f"{t:6.2f}s  {note_name(truth):<14}{note_name(peak):<14}{r['salience'][k]:8.3f}  {mark}")
    voiced = int(np.count_nonzero(r["truth_hz"] > 0))
    print(f"CFP peak within 50 cents of the sung f0 in {100 * r['within_50c']:.1f} % of {voiced} voiced frames "
          f"(no model yet: this is the raw front end)")
    png = plot_cfp(
        r["frames"], out / "demo.png", cfg.cfp, frame_times=r["times"],
        title=f"melodyrt demo: CFP of a synthetic sung melody ({cfg.cfp.window} window)",
        tracks=[("sung f0", r["truth_hz"], "w-"), ("CFP peak", r["peak_hz"], "c.")],
    )
    wav = write_wav(out / "demo.wav", r["song"].audio, args.rate)
    print(f"wrote {png} and {wav}")
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

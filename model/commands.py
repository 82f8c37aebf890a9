"""``melodyrt train`` and ``melodyrt eval``: registered through the ``melodyrt.commands``
entry-point group, so the CLI in rt/ never imports torch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melodyrt.rt.errors import MelodyRTError


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train MF-TFA with SD-MS (needs the [train] extra)",
                       description="Train (or resume) a model. Features are cached on disk; "
                       "interrupt at any time and run the same command again to resume.")
    p.add_argument("--config", default="rt", help="training config name (rt, ...) or YAML path")
    p.add_argument("--data", help="data folder (MIR-1K, ADC2004/MIREX05 or MedleyDB layout)")
    p.add_argument("--out", help="run folder (checkpoints, history)")
    p.add_argument("--cache", help="feature cache folder")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--ablation", choices=["all", "main", "main+aux", "main+mse"])
    p.add_argument("--seed", type=int)
    p.add_argument("--max-tracks", type=int, help="use only N tracks (smoke tests)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--resume-from", help="resumable checkpoint to continue from when --out has none "
                   "(e.g. model/checkpoints/rt_last.pt)")
    p.add_argument("--init-from", help="start a new run from this checkpoint's weights (and its "
                   "normalisation), e.g. to fine-tune a shallower network")
    p.add_argument("--init-modules", type=int, nargs="+", metavar="I",
                   help="0-based modules of --init-from that become the new model's modules, in order")
    p.add_argument("--teacher", help="checkpoint of a frozen teacher to distil from (the config sets loss.distill)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .train import train
    from .train_config import load_train_config

    cfg = load_train_config(args.config)
    changes = {k: v for k, v in {
        "data": args.data, "out_dir": args.out, "cache_dir": args.cache, "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch, "ablation": args.ablation, "seed": args.seed,
        "init_from": args.init_from, "teacher": args.teacher,
        "init_modules": tuple(args.init_modules) if args.init_modules else None,
    }.items() if v is not None}
    cfg = cfg.replace(**changes)
    state = train(cfg, resume=not args.fresh, max_tracks=args.max_tracks, resume_from=args.resume_from)
    print(done_line(state.epoch, state.best_oa, Path(cfg.out_dir)))
    return 0


def done_line(epochs: int, best_oa: float, out_dir: Path) -> str:
    """The line ``melodyrt train`` ends with: where the best weights are, or that they are not
    in ``out_dir`` (a run resumed from a checkpoint whose best check happened elsewhere and was
    not beaten here keeps the score, not the file)."""
    best = out_dir / "best.pt"
    if best.exists():
        return f"done: {epochs} epochs, best validation OA {best_oa:.1f} -> {best}"
    return (f"done: {epochs} epochs, best validation OA {best_oa:.1f} (a check before this run folder; "
            f"its best.pt is not in {out_dir}); last checkpoint -> {out_dir / 'last.pt'}")


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a checkpoint on a data set (mir_eval, pooled over frames)")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) from melodyrt train")
    p.add_argument("--data", required=True, help="data folder (MIR-1K, ADC2004/MIREX05 or MedleyDB layout)")
    p.add_argument("--variant", default=None, help="MIR-1K variant: mix0 (0 dB), voice, mixr; default mix0")
    p.add_argument("--singers", nargs="*", help="only these singers (MIR-1K ids); with --set synth-over-real: "
                   "whose accompaniment to use (default Kenshin annar, the validation singers)")
    p.add_argument("--backing", default="all", choices=["all", "foreign", "shared"],
                   help="with --singers on MIR-1K: only clips whose accompaniment does not (foreign) or does "
                   "(shared) also occur in another singer's clip (MIR-1K's singers share backing tracks)")
    p.add_argument("--set", default="data", choices=["data", "synth-over-real"],
                   help="data: the tracks of --data as they are (default); synth-over-real: synthetic sung "
                   "melodies over the real accompaniment of --data's validation clips, exact f0 labels "
                   "(rendered once into --set-dir)")
    p.add_argument("--set-dir", default=".cache/synth_over_real",
                   help="where the synth-over-real set is rendered (outside the repository)")
    p.add_argument("--snr", nargs="+", type=float, metavar="DB",
                   help="synth-over-real: voice-to-accompaniment ratios [dB]; inf = voice alone (default 0 5 inf)")
    p.add_argument("--set-seed", type=int, help="synth-over-real: seed of the melodies (default: the set's)")
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--voicing-thresholds", nargs="+", type=float, metavar="P",
                   help="also score the outputs decoded at these thresholds on p(voiced) (default: 0.5 only)")
    p.add_argument("--json", help="write pooled and per-track scores here")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint, evaluate_synth_over_real

    if args.set == "synth-over-real":
        if args.voicing_thresholds:
            raise MelodyRTError("--voicing-thresholds scores --set data only")
        report = evaluate_synth_over_real(args.checkpoint, args.data, args.set_dir, singers=args.singers,
                                          snrs=args.snr, seed=args.set_seed, cache_dir=args.cache)
    else:
        report = evaluate_checkpoint(args.checkpoint, args.data, variant=args.variant, singers=args.singers,
                                     cache_dir=args.cache, backing=args.backing,
                                     voicing_thresholds=args.voicing_thresholds)
    print(report["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (FP32 + FP16) with runtime metadata")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) from melodyrt train")
    p.add_argument("--out", required=True, help="bundle folder to write (step.onnx, step.fp16.onnx, model.json)")
    p.add_argument("--frames", type=int, default=300, help="frames of real features used to validate the export")
    p.add_argument("--name", help="model name in model.json (default: the model config's, e.g. rt2)")
    p.add_argument("--version", help="model version in model.json (default: this melodyrt's model version)")
    p.add_argument("--int8-data", metavar="DIR", help="also write step.int8.onnx, calibrated on this data set's "
                   "training-singer clips (never the checkpoint's validation singers)")
    p.add_argument("--cpu-precision", choices=("fp32", "int8"), default="fp32",
                   help="the file ONNX Runtime runs by default (int8 needs --int8-data)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from .export import export_bundle

    from .export import MODEL_VERSION

    meta = export_bundle(args.checkpoint, args.out, n_validate=args.frames, name=args.name,
                         version=args.version or MODEL_VERSION, int8_data=args.int8_data,
                         cpu_precision=args.cpu_precision)
    v = meta["validation"]
    print(f"wrote {args.out}: {meta['model_name']} {meta['model_version']}, {len(meta['states'])} states")
    for k, val in v.items():
        print(f"  {k}: {val}")
    return 0


def register_offline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("offline", help="whole-file inference with a checkpoint (the paper's non-causal mode)",
                       description="Run a checkpoint's full-sequence forward over whole files (for the "
                       "non-causal paper configuration: the reference behaviour) and write CSV/MIDI/PNG.")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) from melodyrt train")
    p.add_argument("--out-dir", required=True, help="folder for FILE.csv / .mid / .png")
    p.add_argument("--format", default="csv", help="comma-separated: csv,mid,png")
    p.add_argument("--channel", default=None, help="multi-channel files: 'mix' or a channel index")
    p.set_defaults(func=_offline)


def _offline(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from melodyrt.rt.outputs import parse_formats, write_outputs

    from .offline import transcribe_offline

    formats = parse_formats(args.format)
    channel = int(args.channel) if args.channel not in (None, "mix") else args.channel
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in tqdm(args.files, desc="offline", unit="file", disable=len(args.files) < 2):
        try:
            frames, duration = transcribe_offline(f, args.checkpoint, channel)
            write_outputs(frames, out / Path(f).stem, formats, duration, title=Path(f).name)
        except MelodyRTError as exc:
            failed += 1
            print(f"melodyrt: error: {exc}")
    return 2 if failed else 0

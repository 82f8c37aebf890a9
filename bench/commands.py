"""``melodyrt bench ...``: registered through the ``melodyrt.commands`` entry-point group."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``melodyrt bench`` with its benchmarks as sub-subcommands."""
    p = sub.add_parser("bench", help="measure the runtime against the latency budget",
                       description="Benchmarks of the runtime. Each writes JSON + a markdown report.")
    p.add_argument("--check", action="store_true",
                   help="without a BENCHMARK: run `bench latency` and check it against the budget (exit 1 when over)")
    p.add_argument("--budget", help="budget YAML instead of bench/budget.yaml")
    p.add_argument("--quick", action="store_true", help="with --check: a short run (checks the machinery, not the speed)")
    p.add_argument("--model", help="exported model folder (default: the packaged model)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.set_defaults(func=_bench_top)
    kinds = p.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=type(p))
    kinds.required = False
    lat = kinds.add_parser("latency", help="algorithmic latency per stage and measured compute per stage per hop",
                           description="Algorithmic latency per stage (what each processor reports) next to measured "
                           "compute per stage per hop (p50/p99/p99.9/max), deadline misses and jitter, on the synthetic "
                           "sung melody at 48 kHz in 128-frame blocks fed unpaced. Writes JSON, markdown and PNG plots.")
    lat.add_argument("--model", help="exported model folder (default: the packaged model)")
    lat.add_argument("--backend", default="auto", choices=("auto", "ort", "tensorrt", "torch"))
    lat.add_argument("--hops", type=int, default=12000, help="timed hops (default 12000; >= 10000 for budget figures)")
    lat.add_argument("--rate", type=int, default=48000)
    lat.add_argument("--blocksize", type=int, default=128)
    lat.add_argument("--out", default="bench-results")
    lat.add_argument("--check", action="store_true", help="print measured vs budget; exit 1 when anything is over")
    lat.add_argument("--budget", help="budget YAML instead of bench/budget.yaml")
    lat.add_argument("--quick", action="store_true", help="300 hops: checks the machinery, not the speed")
    lat.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU while timing")
    lat.set_defaults(func=_latency)
    e2 = kinds.add_parser("e2e", help="end-to-end note-on and pitch-change latency through JACK (dummy driver), MIDI and OSC",
                          description="A JACK client plays sung phrases (note onsets and pitch steps) into the tracker's "
                          "capture port; the tracker runs its live path (AudioSource on JACK, MidiSink on JACK MIDI, OscSink "
                          "to 127.0.0.1); latency = JACK frame of the MIDI event / OSC arrival minus the frame of the "
                          "acoustic event. Prints why and exits 0 when jackd, JACK-Client or PortAudio is missing.")
    e2.add_argument("--model", help="exported model folder (default: the packaged model)")
    e2.add_argument("--events", type=int, default=200, help="events of each kind: note onsets and as many pitch steps (default 200, about 190 s)")
    e2.add_argument("--period", type=int, default=128, help="JACK period [frames] (default 128)")
    e2.add_argument("--blocksize", type=int, default=128, help="the tracker's stream blocksize (default 128)")
    e2.add_argument("--server", help="use this running JACK server instead of starting a private dummy one")
    e2.add_argument("--out", default="bench-results")
    e2.add_argument("--check", action="store_true", help="check MIDI note-on p50/p99 against the budget; exit 1 when over")
    e2.add_argument("--budget", help="budget YAML instead of bench/budget.yaml")
    e2.add_argument("--quick", action="store_true", help="10 of each (20 events): checks the machinery, not the latency")
    e2.add_argument("--fast-onset", action="store_true",
                    help="the MIDI/OSC note setting fast_onset: notes start on onset cues between frames")
    e2.set_defaults(func=_e2e)
    so = kinds.add_parser("soak", help="the live path for N minutes through JACK: memory, latency drift, xruns, stuck notes",
                          description="The e2e rig (private JACK dummy server, AudioSource, MidiSink on JACK MIDI, OscSink "
                          "to 127.0.0.1) plus a karaoke scorer, fed sung phrases looped for N minutes by an out-of-process "
                          "JACK probe. Reports RSS growth, note-on latency at the start and the end (slope), overflows and "
                          "the client jackd blamed, dropped and lost samples, stuck notes and sink errors. Prints why and "
                          "exits 0 when jackd, JACK-Client or PortAudio is missing.")
    so.add_argument("--minutes", type=float, default=60.0, help="how long to play (default 60)")
    so.add_argument("--model", help="exported model folder (default: the packaged model)")
    so.add_argument("--period", type=int, default=128, help="JACK period [frames] (default 128)")
    so.add_argument("--blocksize", type=int, default=128, help="the tracker's stream blocksize (default 128)")
    so.add_argument("--server", help="use this running JACK server instead of starting a private dummy one")
    so.add_argument("--out", default="bench-results")
    so.add_argument("--check", action="store_true",
                    help="exit 1 on stuck notes, dropped samples, RSS growth or a latency slope over the budget")
    so.add_argument("--budget", help="budget YAML instead of bench/budget.yaml")
    so.add_argument("--fast-onset", action="store_true",
                    help="the MIDI/OSC note setting fast_onset: notes start on onset cues between frames")
    so.set_defaults(func=_soak)
    ac = kinds.add_parser("accuracy", help="mir_eval VR/VFA/RPA/RCA/OA of the streaming tracker and an accuracy-vs-latency sweep",
                          description="Scores the tracker's streaming path (transcribe) on a folder in the MIR-1K (0 dB mix "
                          "L+R and voice alone), ADC2004/MIREX05 or MedleyDB layout, pooled over frames on a 10 ms grid, "
                          "for a sweep of decoder smoothing and voicing hysteresis settings (and other models given with "
                          "--models). Writes JSON, markdown and an accuracy-vs-latency plot.")
    _accuracy_args(ac)
    ac.set_defaults(func=_accuracy)
    pe = kinds.add_parser("peers", help="the accuracy and latency measures for PESTO, aubio, swift-f0, torchcrepe beside melodyrt",
                          description="Scores melodyrt and each installed peer (extra [peers]) on the same tracks in the same "
                          "run: PESTO streaming, aubio yinfft streaming (compute per hop, measured delay), swift-f0 and "
                          "torchcrepe per file (no streaming mode used). A missing peer is skipped with the reason.")
    _accuracy_args(pe)
    pe.add_argument("--peers", default="pesto,aubio,swift-f0,torchcrepe", help="comma-separated peers to run")
    pe.set_defaults(func=_peers)
    on = kinds.add_parser("onset", help="false onsets, missed onsets and onset delay of the MIDI note logic per onset rule",
                          description="Runs the tracker once per clip (MIR-1K: 0 dB mix L+R and voice alone) and replays "
                          "its frames through the MIDI note logic for each onset rule: the 2-frame rule, 1 frame always, "
                          "the confidence gate at several thresholds, and study rules on p(voiced). Reports false onsets "
                          "(per minute and per second of unvoiced audio), missed labelled onsets, onset delay, and the "
                          "recommended onset_confidence. Writes JSON, markdown and a PNG plot.")
    on.add_argument("--data", help="data folder (default $MELODYRT_DATA or ../shared/data/mir1k8k)")
    on.add_argument("--model", help="exported model folder (default: the packaged model)")
    on.add_argument("--singers", nargs="?", const="Kenshin,annar",
                    help="comma-separated singers to keep (MIR-1K); alone: the validation singers Kenshin,annar")
    on.add_argument("--max-tracks", type=int, help="measure at most this many tracks")
    on.add_argument("--out", default="bench-results")
    on.add_argument("--quick", action="store_true", help="2 tracks, their first 4 s, 4 settings: checks the machinery")
    on.set_defaults(func=_onset)
    nc = kinds.add_parser("notes", help="pitch-step delay, spurious note changes and vibrato churn of the MIDI note-change rules",
                          description="Runs the tracker once per clip (MIR-1K: 0 dB mix L+R and voice alone, plus the e2e "
                          "bench's synthetic phrases at four step phases) and replays its frames through the MIDI note logic "
                          "for each note-change rule: the old 3-frame rule, shorter change_frames, and the fast path for large "
                          "jumps (jump_cents, jump_frames, jump_confidence, jump_min_frames). Reports the delay from a labelled "
                          "pitch step to the first sounding pitch (note + bend) within 50 cents, next to the tracker's own f0; "
                          "spurious and wrong-pitch changes per minute, vibrato churn, short notes and bounces; and the "
                          "recommended setting. Writes JSON, markdown and a PNG plot.")
    nc.add_argument("--data", help="data folder (default $MELODYRT_DATA or ../shared/data/mir1k8k)")
    nc.add_argument("--model", help="exported model folder (default: the packaged model)")
    nc.add_argument("--singers", nargs="?", const="Kenshin,annar",
                    help="comma-separated singers to keep (MIR-1K); alone: the validation singers Kenshin,annar")
    nc.add_argument("--max-tracks", type=int, help="measure at most this many tracks")
    nc.add_argument("--phrases", type=int, default=60, help="synthetic e2e phrases (one step each) per phase (default 60; 0: none)")
    nc.add_argument("--out", default="bench-results")
    nc.add_argument("--quick", action="store_true", help="2 tracks, their first 4 s, 6 phrases, 3 settings: checks the machinery")
    nc.set_defaults(func=_notes)
    gp = kinds.add_parser("gpu", help="TensorRT FP16 step time per batch and multi-stream capacity (needs a GPU)",
                          description="Where TensorRT and a CUDA GPU exist: FP16 step time for batch 1..N and how many "
                          "concurrent streams hold the 10 ms deadline at p99. Elsewhere it says why it cannot run and "
                          "exits 0 (with --strict: exit 3).")
    gp.add_argument("--model", help="exported model folder (default: the packaged model)")
    gp.add_argument("--max-batch", type=int, default=64)
    gp.add_argument("--steps", type=int, default=2000)
    gp.add_argument("--out", default="bench-results")
    gp.add_argument("--quick", action="store_true")
    gp.add_argument("--strict", action="store_true", help="exit 3 when the benchmark cannot run here")
    gp.set_defaults(func=_gpu)
    c = kinds.add_parser("cfp", help="per-hop CFP cost, resampler cost per device block, offline speed",
                         description="Per-hop CFP cost (p50/p99/p99.9/max, one hop per call), "
                         "resampler cost per 128-frame 48 kHz block, offline CFP speed.")
    c.add_argument("--hops", type=int, default=20000, help="timed hops per window (default 20000; >= 10000 for budget figures)")
    c.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    c.add_argument("--check", action="store_true", help="exit 1 when a figure is over bench/budget.yaml")
    c.add_argument("--budget", help="budget YAML instead of bench/budget.yaml")
    c.add_argument("--quick", action="store_true", help="a few hundred hops: checks the machinery, not the speed")
    c.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU while timing")
    c.set_defaults(func=_cfp)
    e = kinds.add_parser("engine", help="engine step time per backend and batch (FP32 vs FP16 on ORT)")
    e.add_argument("--model", help="exported model folder (default: the packaged model)")
    e.add_argument("--steps", type=int, default=10000, help="timed steps at batch 1 (fewer for large batches)")
    e.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    e.add_argument("--out", default="bench-results")
    e.add_argument("--quick", action="store_true", help="a few steps: checks the machinery, not the speed")
    e.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    e.set_defaults(func=_engine)


def _cfp(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .cfp_bench import BenchSettings, check_budget, load_budget, run

    if args.hops <= 0:
        raise MelodyRTError(f"--hops must be positive, got {args.hops}")
    budget_path = Path(args.budget) if args.budget else None
    if budget_path is not None and not budget_path.is_file():
        raise MelodyRTError(f"{budget_path}: budget file not found")
    settings = BenchSettings.quick() if args.quick else BenchSettings(hops=args.hops, blocks=args.hops)
    if args.no_pin:
        settings = BenchSettings(**{**settings.__dict__, "pin_cpu": False})
    out = Path(args.out)
    result = run(settings, out, quick=args.quick)
    print((out / "cfp_bench.md").read_text())
    print(f"wrote {out / 'cfp_bench.json'} and {out / 'cfp_bench.md'}")
    if args.check:
        problems = check_budget(result, load_budget(budget_path))
        for line in problems:
            print(f"over budget: {line}", file=sys.stderr)
        if problems:
            return 1
        print("within budget")
    return 0


def _engine(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .engine_bench import pin_one_cpu, run

    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        raise MelodyRTError(f"--batches must be comma-separated integers, got {args.batches!r}") from None
    if not args.no_pin:
        pin_one_cpu()
    out = Path(args.out)
    run(args.model, out, steps=args.steps, batches=batches, quick=args.quick)
    print((out / "engine_bench.md").read_text())
    return 0


def _budget_path(arg: str | None) -> Path | None:
    from melodyrt.rt.errors import MelodyRTError

    if arg is None:
        return None
    path = Path(arg)
    if not path.is_file():
        raise MelodyRTError(f"{path}: budget file not found")
    return path


def report_check(measured: dict[str, float], budget_path: Path | None, notes: list[str] | None = None,
                 out_md: Path | None = None) -> int:
    """Print measured vs budget (and append it to ``out_md``); 1 when anything is over."""
    from .budget import compare, load_budget, over, table

    rows = compare(measured, load_budget(budget_path))
    text = "## Budget check (" + str(budget_path or "bench/budget.yaml") + ")\n\n" + table(rows) + "\n"
    bad = over(rows)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    text += "\n" + (f"{len(bad)} item(s) over budget: " + ", ".join(r.key for r in bad) if bad else "within budget") + "\n"
    print(text)
    if out_md is not None and out_md.is_file():
        out_md.write_text(out_md.read_text() + "\n" + text)
    for r in bad:
        print(f"over budget: {r.key}: {r.measured:.4g} > {r.limit:g}", file=sys.stderr)
    return 1 if bad else 0


def _latency(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .latency_bench import diagnosis, measured_for_budget, run
    from .budget import load_budget

    hops = 300 if args.quick else getattr(args, "hops", 12000)
    if hops <= 0:
        raise MelodyRTError(f"--hops must be positive, got {hops}")
    budget_path = _budget_path(getattr(args, "budget", None))
    out = Path(args.out)
    result = run(getattr(args, "model", None), out, hops=hops, rate=getattr(args, "rate", 48000),
                 blocksize=getattr(args, "blocksize", 128), backend=getattr(args, "backend", "auto"),
                 pin_cpu=not getattr(args, "no_pin", False), quick=args.quick)
    print((out / "latency_bench.md").read_text())
    print(f"wrote {out / 'latency_bench.json'}, {out / 'latency_bench.md'} and " + ", ".join(str(out / p) for p in result.get("plots", [])))
    if not args.check:
        return 0
    notes = diagnosis(result, load_budget(budget_path))
    return report_check(measured_for_budget(result), budget_path, notes, out / "latency_bench.md")


def _bench_top(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    if not args.check:
        raise MelodyRTError("choose a benchmark (melodyrt bench {cfp,engine,latency,e2e,accuracy,peers,onset,notes,gpu}) or --check")
    return _latency(args)


def _e2e(args: argparse.Namespace) -> int:
    from .e2e_bench import Unavailable, measured_for_budget, run

    budget_path = _budget_path(args.budget)
    out = Path(args.out)
    try:
        result = run(args.model, out, events=10 if args.quick else args.events, period=args.period,
                     blocksize=args.blocksize, server=args.server, quick=args.quick, fast_onset=args.fast_onset)
    except Unavailable as exc:
        print(f"melodyrt bench e2e: cannot run here: {exc}")
        return 0
    print((out / "e2e_bench.md").read_text())
    print(f"wrote {out / 'e2e_bench.json'}, {out / 'e2e_bench.md'}")
    if not args.check:
        return 0
    from .budget import load_budget
    from .e2e_bench import e2e_check_notes

    measured = measured_for_budget(result)
    notes = [] if measured else ["no note-on was answered: nothing to check (untrained model?)"]
    budget = load_budget(budget_path)
    notes += e2e_check_notes(result, measured, budget)
    return report_check(measured, budget_path, notes, out / "e2e_bench.md")


def _soak(args: argparse.Namespace) -> int:
    from .e2e_bench import Unavailable
    from .soak_bench import check_notes, measured_for_budget, run

    budget_path = _budget_path(args.budget)
    out = Path(args.out)
    try:
        result = run(args.model, out, minutes=args.minutes, period=args.period, blocksize=args.blocksize,
                     server=args.server, progress=lambda line: print(line, file=sys.stderr, flush=True),
                     fast_onset=args.fast_onset)
    except Unavailable as exc:
        print(f"melodyrt bench soak: cannot run here: {exc}")
        return 0
    print((out / "soak_bench.md").read_text())
    print(f"wrote {out / 'soak_bench.json'}, {out / 'soak_bench.md'}, " + ", ".join(str(out / p) for p in result.get("plots", [])))
    if not args.check:
        return 0
    return report_check(measured_for_budget(result), budget_path, check_notes(result), out / "soak_bench.md")


def _accuracy_args(ac: argparse.ArgumentParser) -> None:
    ac.add_argument("--data", help="data folder (default $MELODYRT_DATA or ../shared/data/mir1k8k)")
    ac.add_argument("--model", help="exported model folder (default: the packaged model)")
    ac.add_argument("--singers", nargs="?", const="Kenshin,annar",
                    help="comma-separated singers to keep (MIR-1K); alone: the validation singers Kenshin,annar")
    ac.add_argument("--max-tracks", type=int, help="score at most this many tracks")
    ac.add_argument("--models", help="comma-separated further model folders (e.g. analysis-window variants)")
    ac.add_argument("--no-sweep", action="store_true", help="only the default decoder settings")
    ac.add_argument("--out", default="bench-results")
    ac.add_argument("--quick", action="store_true", help="2 tracks, their first 4 s, 3 settings: checks the machinery")


def _data_dir(arg: str | None) -> Path:
    import os

    from melodyrt.rt.errors import MelodyRTError

    if arg:
        return Path(arg)
    env = os.environ.get("MELODYRT_DATA")
    if env:
        return Path(env)
    default = Path("../shared/data/mir1k8k")
    if default.is_dir():
        return default
    raise MelodyRTError("no data: give --data DIR (MIR-1K, ADC2004/MIREX05 or MedleyDB layout) or set MELODYRT_DATA")


def _accuracy(args: argparse.Namespace) -> int:
    from .accuracy_bench import run

    out = Path(args.out)
    singers = [x for x in args.singers.split(",") if x] if args.singers else None
    models = [x for x in (args.models or "").split(",") if x]
    run(args.model, _data_dir(args.data), out, singers=singers, max_tracks=2 if args.quick else args.max_tracks,
        sweep=not args.no_sweep, models=models, quick=args.quick)
    print((out / "accuracy_bench.md").read_text())
    return 0


def _peers(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .peers_bench import PEERS, run

    names = [x for x in args.peers.split(",") if x]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise MelodyRTError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    out = Path(args.out)
    singers = [x for x in args.singers.split(",") if x] if args.singers else None
    models = [x for x in (args.models or "").split(",") if x]
    run(args.model, _data_dir(args.data), out, names, singers=singers,
        max_tracks=2 if args.quick else args.max_tracks, models=models, quick=args.quick)
    print((out / "peers_bench.md").read_text())
    return 0


def _onset(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .onset_bench import run

    if args.max_tracks is not None and args.max_tracks <= 0:
        raise MelodyRTError(f"--max-tracks must be positive, got {args.max_tracks}")
    out = Path(args.out)
    singers = [x for x in args.singers.split(",") if x] if args.singers else None
    run(args.model, _data_dir(args.data), out, singers=singers, max_tracks=args.max_tracks, quick=args.quick)
    print((out / "onset_bench.md").read_text())
    print(f"wrote {out / 'onset_bench.json'}, {out / 'onset_bench.md'} and {out / 'onset_tradeoff.png'}")
    return 0


def _notes(args: argparse.Namespace) -> int:
    from melodyrt.rt.errors import MelodyRTError

    from .notechange_bench import run

    if args.max_tracks is not None and args.max_tracks <= 0:
        raise MelodyRTError(f"--max-tracks must be positive, got {args.max_tracks}")
    if args.phrases < 0:
        raise MelodyRTError(f"--phrases must be >= 0, got {args.phrases}")
    out = Path(args.out)
    singers = [x for x in args.singers.split(",") if x] if args.singers else None
    run(args.model, _data_dir(args.data), out, singers=singers, max_tracks=args.max_tracks, quick=args.quick,
        phrases=args.phrases)
    print((out / "notes_bench.md").read_text())
    print(f"wrote {out / 'notes_bench.json'}, {out / 'notes_bench.md'} and {out / 'notes_tradeoff.png'}")
    return 0


def _gpu(args: argparse.Namespace) -> int:
    from .gpu_bench import EXIT_UNAVAILABLE, run

    out = Path(args.out)
    result = run(args.model, out, max_batch=8 if args.quick else args.max_batch,
                 steps=100 if args.quick else args.steps, quick=args.quick)
    print((out / "gpu_bench.md").read_text())
    if not result["available"]:
        print(f"melodyrt bench gpu: cannot run here: {result['reason']}")
        return EXIT_UNAVAILABLE if args.strict else 0
    return 0

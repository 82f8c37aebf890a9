"""``melodyrt bench ...``: registered through the ``melodyrt.commands`` entry-point group."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``melodyrt bench`` with its benchmarks as sub-subcommands."""
    p = sub.add_parser("bench", help="measure the runtime against the latency budget",
                       description="Benchmarks of the runtime. Each writes JSON + a markdown report.")
    kinds = p.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=type(p))
    kinds.required = True
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

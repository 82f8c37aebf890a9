"""The ``melodyrt`` console script: one program, subcommands registered from several places.

A command is a function ``register(sub)`` that adds one parser to argparse's subparsers and
sets ``func=handler`` on it, where ``handler(args) -> int`` is the exit code. Built-in
commands of the runtime are listed in :data:`BUILTIN`; other parts of the project (model/
training, bench/) register theirs through the ``melodyrt.commands`` entry-point group in
pyproject.toml, so this module never imports torch or the benchmarks. A command's heavy
imports happen inside its handler, which keeps ``melodyrt --help`` fast.

User errors (:class:`MelodyRTError`, missing files, bad arguments) print
``melodyrt: error: <one line>`` to stderr and return 2; set ``MELODYRT_DEBUG=1`` to see the
traceback as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib import metadata
from typing import Callable, Sequence

from .errors import MelodyRTError

PROG = "melodyrt"
ENTRY_POINT_GROUP = "melodyrt.commands"
Register = Callable[[argparse._SubParsersAction], None]


def _builtin() -> list[Register]:
    from . import commands

    return [commands.register_cfp, commands.register_demo, commands.register_version]


#: Loaders of the runtime's own commands (a function, so importing cli stays cheap).
BUILTIN: Callable[[], list[Register]] = _builtin


class UsageError(MelodyRTError):
    """Bad command-line arguments (argparse's complaint, as one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _version() -> str:
    try:
        return metadata.version("melodyrt")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full parser: built-in commands, then those from the entry-point group."""
    parser = _Parser(
        prog=PROG,
        description="Real-time singing melody tracker: live voice to f0, MIDI and OSC.",
        epilog="Run 'melodyrt COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in BUILTIN():
        register(sub)
    taken = set(sub.choices)
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in taken:
            continue
        try:
            register = ep.load()
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            _register_unavailable(sub, ep.name, f"{type(exc).__name__}: {exc}")
            continue
        register(sub)
    _add_profile_options(parser)
    return parser


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that takes ``--model`` a ``--profile`` too, plug-ins included."""
    from .bundle import DEFAULT_PROFILE, PROFILES

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_profile_options(child)
    if "--model" in parser._option_string_actions and "--profile" not in parser._option_string_actions:
        parser.add_argument("--profile", choices=tuple(PROFILES),
                            help=f"packaged model to use instead of --model DIR (default {DEFAULT_PROFILE}): "
                                 "low-latency (earlier note-on) or accurate; see the README's trade-off table")


def _apply_profile(args: argparse.Namespace) -> None:
    profile = getattr(args, "profile", None)
    if profile is None:
        return
    if getattr(args, "model", None):
        raise UsageError("give --model or --profile, not both")
    from .bundle import profile_dir

    args.model = str(profile_dir(profile))


def _register_unavailable(sub: argparse._SubParsersAction, name: str, reason: str) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {reason.splitlines()[0]})", add_help=True)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args: argparse.Namespace) -> int:
        raise MelodyRTError(f"command '{name}' is unavailable: {reason.splitlines()[0]}")

    p.set_defaults(func=fail)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0 on success, 2 on a user error, 130 when interrupted.
    """
    debug = bool(os.environ.get("MELODYRT_DEBUG"))
    try:
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else None)
        _apply_profile(args)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (MelodyRTError, OSError, ModuleNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        return 2


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        extra = {"torch": "train", "mir_eval": "train", "jack": "dev", "tensorrt": "tensorrt"}.get(
            (exc.name or "").split(".")[0]
        )
        hint = f": pip install 'melodyrt[{extra}]'" if extra else ""
        return f"missing Python package '{exc.name}'{hint}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or _one_line(exc)}"
    return _one_line(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``melodyrt`` console script: one program, subcommands registered from several places.

A command is a function ``register(sub)`` that adds one parser to argparse's subparsers and
sets ``func=handler`` on it, where ``handler(args) -> int`` is the exit code. Built-in
commands of the runtime are listed in :data:`BUILTIN`; other parts of the project (model/
training, bench/) register theirs through the ``melodyrt.commands`` entry-point group in
pyproject.toml, so this module never imports torch or the benchmarks. A command's heavy
imports happen inside its handler, which keeps ``melodyrt --help`` fast.

User errors (:class:`MelodyRTError`, missing files, bad arguments) print
``melodyrt: error: <one line>`` to stderr and return 2; set ``MELODYRT_DEBUG=1`` to see the
traceback as well. Exit statuses: 0 done, 2 user error, 3 audio input lost while streaming
(:class:`~melodyrt.rt.source.AudioStreamLost`; an error may carry its own ``exit_code``),
130 SIGINT (Ctrl-C), 143 SIGTERM. Warnings the library logs (a MIDI port that went away, an
OSC target that refuses) print as ``melodyrt: warning: <one line>``.

Signals: inside :func:`main` SIGINT raises KeyboardInterrupt and SIGTERM
:class:`Terminated`, so every ``finally`` runs (a command may install its own handlers, as
``live`` does to stop its stream cleanly). Run as the program (``argv`` None), a signal that
lands after :func:`main` has its result ends the process at once with that result, and the
process leaves with ``os._exit(result)`` once the exit handlers have run: Python's own
finalization (module teardown, seconds with ONNX Runtime and numba loaded on a busy machine)
runs with signal handling disabled, so a signal landing there would kill the process by
its default action. Importing this module stays cheap (heavy imports are deferred) so that
Python's own start-up, where a SIGINT still prints Python's KeyboardInterrupt traceback, is
the only window main() cannot cover.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

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
    from importlib import metadata

    try:
        return metadata.version("melodyrt")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full parser: built-in commands, then those from the entry-point group."""
    from importlib import metadata

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
                                 "accurate; backing (a 32-channel int8 net: +2 OA points on a voice mixed with "
                                 "its backing track, a little less on a dry voice, 3.7x the compute); or "
                                 "low-latency (experimental: a 6.5 ms front end, lower accuracy, no earlier "
                                 "note-on yet); see the README's trade-off table")


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


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread, as KeyboardInterrupt is for SIGINT."""


#: Signals :func:`main`'s handlers received during the current call.
_received: list[int] = []


#: Code whose callbacks from C swallow exceptions ("Exception ignored on calling ctypes
#: callback function", with a traceback on stderr): llvmlite calls back into Python while
#: numba compiles or loads machine code.
_NO_RAISE_IN = ("llvmlite",)


def _inside_c_callback(frame: Any) -> bool:
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _NO_RAISE_IN):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: Any) -> None:
    if _inside_c_callback(frame):
        # Raising here would be printed and ignored: deliver the signal again a little later,
        # once the interpreter is back in ordinary code.
        threading.Timer(0.02, os.kill, (os.getpid(), signum)).start()
        return
    _received.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def restart_interrupted_calls(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
    """Let system calls that a signal interrupts resume (SA_RESTART), after ``signal.signal``.

    Python's handlers make a signal interrupt blocking calls with EINTR; Python retries its
    own, but C libraries do not: a SIGINT landing in one of libjack's requests made
    ``Pa_StartStream`` fail ("Could not read result") and, at exit, made ``Pa_Terminate``
    abort the process (pa_jack.c asserts that ``jack_deactivate`` succeeded). The Python
    handler still runs; sleeps and ``select`` still return early (Linux never restarts them).
    ``signal.signal`` resets this, so call it after every handler change.
    """
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            signal.siginterrupt(s, False)


def _interrupted(signum: int) -> int:
    """Report a stop by ``signum``; the exit status is 128 + signum (130, 143), as shells show it."""
    print(signal_message(signum), file=sys.stderr)
    return 128 + signum


def signal_message(signum: int) -> str:
    """The one stderr line for a stop by ``signum``."""
    return f"{PROG}: {'interrupted' if signum == signal.SIGINT else 'terminated'}"


class _LogLine:
    """Formats library log records as ``melodyrt: warning: <one line>`` (traceback only when debugging)."""

    def __init__(self, debug: bool) -> None:
        import logging

        self.debug = debug
        self._fmt = logging.Formatter()

    def format(self, record: Any) -> str:
        text = " ".join(record.getMessage().split("\n"))
        if record.exc_info and record.exc_info[1] is not None:
            if self.debug:
                return f"{PROG}: {record.levelname.lower()}: {text}\n{self._fmt.formatException(record.exc_info)}"
            text += f" ({_describe(record.exc_info[1])})"
        return f"{PROG}: {record.levelname.lower()}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``, and the process's
        signal handling is this program's: see the module docstring).

    Returns
    -------
    code : int
        0 on success, 2 on a user error, 3 when the audio input was lost, 130 when
        interrupted (SIGINT), 143 when terminated (SIGTERM).
    """
    in_main = threading.current_thread() is threading.main_thread()
    program = argv is None and in_main
    _received.clear()  # handlers first: nothing before them but this function's call
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    restart_interrupted_calls()
    code = 1
    logger = handler = None
    try:
        if program:
            atexit.register(_leave_now)  # registered first, so it runs after every other exit handler
        import logging

        debug = bool(os.environ.get("MELODYRT_DEBUG"))
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(_LogLine(debug))  # type: ignore[arg-type]
        logger = logging.getLogger(PROG)
        logger.addHandler(handler)
        code = _run(argv, debug)
    except KeyboardInterrupt:  # before _run's own handling began
        code = _interrupted(signal.SIGINT)
    except Terminated:
        code = _interrupted(signal.SIGTERM)
    finally:
        _exit_code[0] = code
        if program:  # a late signal ends the program with this result
            _exit_on_signals(code)
        else:
            for s, h in previous.items():
                signal.signal(s, h)
        if logger is not None:
            logger.removeHandler(handler)
    return code


def _run(argv: Sequence[str] | None, debug: bool) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else None)
        _apply_profile(args)
        code = int(args.func(args) or 0)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except Terminated:
        return _interrupted(signal.SIGTERM)
    except (MelodyRTError, OSError, ModuleNotFoundError) as exc:
        if _received:
            return _interrupted(_received[0])
        if debug:
            import traceback

            traceback.print_exc()
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
        return code if isinstance(code, int) else 2
    except BaseException:
        # A C extension importing when the signal's exception was raised turns it into
        # another error ("ImportError: initialization failed" from a pybind11 module).
        if _received:
            return _interrupted(_received[0])
        raise
    if _received and code == 0:  # the signal's exception was swallowed on the way
        return _interrupted(_received[0])
    return code


#: The result of the last :func:`main` (1 while it runs: an exception escaping it is a crash).
_exit_code = [1]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _leave_now() -> None:
    """Last exit handler of the program: skip Python's finalization (see the module docstring)."""
    _flush()
    os._exit(_exit_code[0])


def _exit_on_signals(code: int) -> None:
    """From now on SIGINT / SIGTERM end the process at once with ``code`` (output flushed)."""

    def leave(signum: int, frame: Any) -> None:
        _flush()
        os._exit(code)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, leave)
    restart_interrupted_calls()


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

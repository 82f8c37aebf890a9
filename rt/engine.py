"""Inference engines: one protocol, one class per runtime.

Every engine steps ``N`` independent streams at once::

    state = engine.new_state(n_streams)
    salience, state = engine.step(frames, state)   # frames (N, 3, 360) -> (N, 361)

State is explicit and per stream, so a server can track many singers with one engine;
``engine.step(frames)`` without a state uses the engine's own single-stream state.
Backends: ``ort`` (ONNX Runtime, CPU, default), ``tensorrt`` (NVIDIA, FP16) and ``torch``
(reference; provided by :mod:`melodyrt.model` through the ``melodyrt.engines`` entry
point so that rt/ never imports torch).
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .bundle import CARRY, ModelBundle, load_bundle
from .errors import MelodyRTError, ModelError
from .window_sums import WindowSums

BACKENDS = ("auto", "ort", "tensorrt", "torch")


class BackendUnavailable(MelodyRTError):
    """The requested backend is not installed or has no device here."""


@runtime_checkable
class Engine(Protocol):
    """What the pipeline needs from a backend."""

    name: str
    device: str
    bundle: ModelBundle

    def new_state(self, n_streams: int = 1) -> Any:
        """Zeroed recurrent state for ``n_streams`` independent streams."""

    def step(self, frames: NDArray, state: Any = None) -> tuple[NDArray, Any]:
        """Advance every stream by one frame.

        Parameters
        ----------
        frames : ndarray [shape=(N, 3, 360)] [float32]
        state : engine state or None (the engine's own single-stream state)

        Returns
        -------
        salience : ndarray [shape=(N, 361)] [float32], valid until the next step
        state : the same state object, advanced
        """

    def reset(self, state: Any = None, streams: list[int] | None = None) -> None:
        """Zero the state of all streams, or only of ``streams``."""

    def warmup(self) -> None:
        """Run the engine once so the first real step is not slow."""


class OrtState:
    """Preallocated buffers of N streams bound to an ONNX Runtime session.

    Two sets of carry-state buffers alternate as input and output (ping-pong), each with
    its own prebuilt ``IOBinding``; the window states are bound to one
    :class:`~.window_sums.WindowSums`. A step copies the frames in, runs and advances the
    windows, with no allocation.
    """

    def __init__(self, session: Any, bundle: ModelBundle, n: int, dtype: np.dtype) -> None:
        self.n = n
        self.frame = np.zeros((n, 3, 360), dtype)
        self.salience = np.zeros((n, 361), dtype)
        self.carries = [s for s in bundle.states if s.kind == CARRY]
        self.buffers = [[np.zeros((n, *s.shape), dtype) for s in self.carries] for _ in range(2)]
        self.windows = WindowSums(bundle.states, n, dtype)
        self.current = 0
        self.bindings = [self._bind(session, self.buffers[i], self.buffers[1 - i]) for i in (0, 1)]

    def _bind(self, session: Any, ins: list, outs: list) -> Any:
        io = session.io_binding()
        _bind_array(io.bind_input, "frame", self.frame)
        _bind_array(io.bind_output, "salience", self.salience)
        for spec, a, b in zip(self.carries, ins, outs):
            _bind_array(io.bind_input, spec.input_name, a)
            _bind_array(io.bind_output, spec.output_name, b)
        for spec, a, b in zip(self.windows.specs, self.windows.sum_in, self.windows.frame_out):
            _bind_array(io.bind_input, spec.input_name, a)
            _bind_array(io.bind_output, spec.output_name, b)
        return io

    def zero(self, streams: list[int] | None = None) -> None:
        for bufs in self.buffers:
            for b in bufs:
                if streams is None:
                    b[:] = 0
                else:
                    b[streams] = 0
        self.windows.zero(streams)


_ORT_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)"}


def check_io(session: Any, bundle: ModelBundle, path: Any, dtype: np.dtype) -> None:
    """Check every input and output of an ONNX Runtime session against the bundle's metadata.

    Names, element type and every fixed dimension after the batch axis must be what
    ``model.json`` describes (``frame`` (3, 360), ``salience`` (361,), each state's shape),
    so a mismatched file fails here with one line instead of inside the first step.

    Raises
    ------
    ModelError
        Naming the file, the tensor and what differs.
    """
    meta = bundle.root / "model.json"
    want = _ORT_TYPES[np.dtype(dtype)]
    shapes = {"frame": (3, 360), "salience": (361,)}
    for spec in bundle.states:
        shapes[spec.input_name] = shapes[spec.output_name] = tuple(spec.shape)
    for kind, args, names in (("input", session.get_inputs(), ["frame"] + [s.input_name for s in bundle.states]),
                              ("output", session.get_outputs(), ["salience"] + [s.output_name for s in bundle.states])):
        got = {a.name: a for a in args}
        missing = [n for n in names if n not in got]
        if missing:
            raise ModelError(f"{path} has no {kind} {missing[0]!r} (and {len(missing) - 1} more) that {meta} describes"
                             if len(missing) > 1 else f"{path} has no {kind} {missing[0]!r} that {meta} describes")
        for name in names:
            a, shape = got[name], shapes[name]
            if a.type != want:
                raise ModelError(f"{path}: {kind} {name!r} is {a.type}, but {meta} needs {want} for this file")
            dims = list(a.shape or [])
            if len(dims) != len(shape) + 1 or any(isinstance(d, int) and d != e for d, e in zip(dims[1:], shape)):
                raise ModelError(f"{path}: {kind} {name!r} has shape {dims}, but {meta} says (batch, "
                                 f"{', '.join(map(str, shape))})")


def _bind_array(bind: Any, name: str, arr: NDArray) -> None:
    bind(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)


class OrtEngine:
    """ONNX Runtime on the CPU, set up for the lowest per-step latency.

    Parameters
    ----------
    bundle : ModelBundle
    threads : int
        Intra-op threads (1: a 10 ms hop of a small model gains nothing from more, and a
        second core is left to audio and the front end).
    precision : {"fp32", "fp16", "int8"} or None
        Which of the bundle's ONNX files to run; None: the bundle's ``cpu_precision``
        (``fp32`` unless the export chose its int8 file).
    """

    name = "onnxruntime"
    device = "cpu"

    def __init__(self, bundle: ModelBundle, threads: int = 1, precision: str | None = None) -> None:
        import onnxruntime as ort

        self.bundle = bundle
        precision = precision or str(bundle.meta.get("cpu_precision") or "fp32")
        self.precision = precision
        self.dtype = bundle.io_dtype(precision)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads == 1 else "1")
        # Stream state decays into subnormal floats in quiet passages, and subnormal
        # arithmetic made steps ~15-25 % slower (measured on the rt model). This sets
        # flush-to-zero on the session's threads, including the caller's with one thread.
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        path = bundle.onnx_path(precision)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None
        names = {i.name for i in self.session.get_inputs()}
        expected = {"frame"} | {s.input_name for s in bundle.states}
        if names != expected:
            raise ModelError(f"{path} inputs do not match {bundle.root / 'model.json'} "
                             f"(missing {sorted(expected - names)[:3]}, unexpected {sorted(names - expected)[:3]})")
        check_io(self.session, bundle, path, self.dtype)
        self._own = self.new_state(1)

    def new_state(self, n_streams: int = 1) -> OrtState:
        return OrtState(self.session, self.bundle, n_streams, self.dtype)

    def step(self, frames: NDArray, state: OrtState | None = None) -> tuple[NDArray, OrtState]:
        st = state if state is not None else self._own
        st.frame[...] = frames
        self.session.run_with_iobinding(st.bindings[st.current])
        st.windows.advance()
        st.current ^= 1
        return st.salience, st

    def reset(self, state: OrtState | None = None, streams: list[int] | None = None) -> None:
        (state if state is not None else self._own).zero(streams)

    def warmup(self, steps: int = 20) -> None:
        st = self.new_state(1)
        for _ in range(steps):
            self.step(st.frame, st)


def available_backends() -> dict[str, bool]:
    """Which backends can be created here (``torch`` and ``tensorrt`` are extras)."""
    from .trt_engine import tensorrt_available

    has_torch = importlib.util.find_spec("torch") is not None and _entry_point("torch") is not None
    return {"ort": True, "tensorrt": tensorrt_available()[0], "torch": has_torch}


def create_engine(backend: str = "auto", bundle: ModelBundle | str | None = None, **kwargs: Any) -> Engine:
    """Make the engine for ``backend`` ("auto" = TensorRT when usable, else ONNX Runtime).

    Raises
    ------
    BackendUnavailable
        One line naming the pip extra to install.
    """
    if backend not in BACKENDS:
        raise MelodyRTError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    b = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    if backend == "auto":
        from .trt_engine import tensorrt_available

        backend = "tensorrt" if tensorrt_available()[0] else "ort"
    if backend == "ort":
        return OrtEngine(b, **kwargs)
    if backend == "tensorrt":
        from .trt_engine import TrtEngine, tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise BackendUnavailable(f"TensorRT backend unavailable ({why}): pip install 'melodyrt[tensorrt]' on a machine with an NVIDIA GPU")
        return TrtEngine(b, **kwargs)
    factory = _plugin("torch")
    if factory is None:
        raise BackendUnavailable("torch backend needs PyTorch: pip install 'melodyrt[train]'")
    return factory(b, **kwargs)


def _entry_point(name: str) -> Any:
    return next((ep for ep in metadata.entry_points(group="melodyrt.engines") if ep.name == name), None)


def _plugin(name: str) -> Any:
    """Engine factory registered under ``melodyrt.engines`` (imported only when asked for)."""
    ep = _entry_point(name)
    if ep is None:
        return None
    try:
        return ep.load()
    except ImportError:
        return None

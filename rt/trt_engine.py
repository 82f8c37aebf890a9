"""TensorRT backend: the bundle's FP16 ONNX step as a TensorRT engine on an NVIDIA GPU.

This module imports without TensorRT or CUDA: ``tensorrt`` and cuda-python are imported
inside functions only, so :func:`tensorrt_available` can answer on any machine and
``create_engine("auto")`` falls back to ONNX Runtime.

How the engine runs (TensorRT >= 10, cuda-python >= 12)
-------------------------------------------------------
* Build: ``OnnxParser`` fills a *strongly typed* network from ``bundle.onnx_path("fp16")``
  (the graph itself carries the FP16 types; no precision builder flag), one optimisation
  profile over the batch axis (min 1, ``opt_batch``, ``max_batch``), a workspace pool
  limit, ``build_serialized_network``.
* Cache: the serialized engine is written to ``<cache_dir>/<key>.engine``; the key names
  the GPU, the TensorRT version, the ONNX SHA-256 and the batch profile
  (:func:`engine_cache_key`). A file that fails to deserialize is rebuilt and replaced.
* Run: every :class:`TrtState` (one per ``new_state(n)``) owns an execution context with
  its input shapes set once, device buffers, pinned host staging buffers and two sets of
  state buffers used ping-pong as in :class:`~melodyrt.rt.engine.OrtState`, so a step
  never copies state. Each ping-pong direction is captured once as a CUDA graph
  (frame upload, ``execute_async_v3``, salience download); a step is then one
  ``cudaGraphLaunch`` and one stream synchronisation. When capture is not possible the
  step falls back to plain ``execute_async_v3`` with the same buffers.

Host I/O: ``step`` takes float32 (or any float) frames, converts them to float16 into
the pinned buffer, and returns salience as **float32** (converted from the engine's
float16 output), like the other backends. Values beyond the float16 range (65504)
become inf; normalised CFP features are far below it.

Doc pages this follows (TensorRT 10.x / 11.x, read 2026-11):

* Python API usage (logger, builder, parser, config, runtime):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html
* Strong typing: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (TensorRT 10),
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html ;
  in 11.x strong typing is always on, the flag is deprecated and ignored, and
  ``BuilderFlag.FP16`` is removed:
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
* Named-tensor I/O and ``execute_async_v3``:
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-8x-to-10x-python-api-patterns.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html
* Optimisation profiles:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/OptimizationProfile.html
* Engine compatibility (an engine is tied to its TensorRT version and GPU model):
  https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html
* CUDA graphs with TensorRT: the developer guide's "CUDA Graphs" section (Performance >
  Best Practices; enqueue once before capture, capture ``enqueueV3`` on a non-default
  stream, launch the graph instead of enqueueing); trtexec's capture sequence as quoted in
  https://github.com/NVIDIA/TensorRT/issues/2603 ; thread-local capture mode as in
  https://github.com/triton-inference-server/tensorrt_backend/pull/27 ; ending a capture
  whose enqueue failed (https://github.com/pytorch/TensorRT/pull/4662 review); CUDA capture
  constraints (no synchronisation or allocation while capturing, no default stream):
  https://docs.nvidia.com/dl-cuda-graph/cuda-graph-basics/constraints.html
* cuda-python runtime bindings (``cuda.bindings.runtime``; every call returns
  ``(cudaError_t, *values)``): https://nvidia.github.io/cuda-python/cuda-bindings/latest/
"""

from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .bundle import CARRY, ModelBundle, sha256_of
from .errors import MelodyRTError, ModelError
from .window_sums import WindowSums

__all__ = [
    "TrtEngine",
    "TrtState",
    "default_cache_dir",
    "engine_cache_key",
    "tensorrt_available",
]

_log = logging.getLogger(__name__)

#: Bump when the cached engine's build recipe changes (flags, profile layout...).
CACHE_FORMAT = 1
#: Oldest TensorRT major version this backend is written for (named tensors, strong typing).
MIN_TRT_MAJOR = 10
_INSTALL_HINT = "pip install 'melodyrt[tensorrt]' on a machine with an NVIDIA GPU"


# --------------------------------------------------------------------------- availability
def _cudart() -> Any:
    """The cuda-python runtime module (raises ImportError when cuda-python is missing).

    ``cuda.bindings.runtime`` is its name since cuda-python 12.6 (cuda-bindings); the old
    ``cuda.cudart`` shim is gone in 13.x but is what older releases have.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # type: ignore[attr-defined,no-redef]
    return cudart


def _trt_major(version: str) -> int:
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else 0


@functools.lru_cache(maxsize=1)
def tensorrt_available() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, and why not.

    Returns
    -------
    ok : bool
        True only when ``import tensorrt`` works (version >= 10) and cuda-python sees at
        least one CUDA device.
    reason : str
        Empty when ``ok``; otherwise a short reason such as ``"tensorrt not installed"``
        or ``"no CUDA device (cudaErrorNoDevice)"``.

    Notes
    -----
    Never raises. The answer is cached for the process (``tensorrt_available.cache_clear()``
    forgets it); the first call imports TensorRT, which takes a moment.
    """
    try:
        try:
            import tensorrt as trt
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.startswith("tensorrt"):
                return False, "tensorrt not installed"
            return False, f"tensorrt cannot be imported ({_first_line(exc)})"
        except Exception as exc:  # broken install: missing libnvinfer, wrong CUDA...
            return False, f"tensorrt cannot be imported ({_first_line(exc)})"
        version = str(getattr(trt, "__version__", "0"))
        if _trt_major(version) < MIN_TRT_MAJOR:
            return False, f"tensorrt {version} is too old (need >= {MIN_TRT_MAJOR})"
        try:
            cudart = _cudart()
        except ImportError:
            return False, "cuda-python not installed"
        result = cudart.cudaGetDeviceCount()
        if not _ok(cudart, result[0]):
            return False, f"no CUDA device ({_err_name(cudart, result[0])})"
        if int(result[1]) < 1:
            return False, "no CUDA device"
        return True, ""
    except Exception as exc:  # never raise from a probe
        return False, f"TensorRT check failed ({type(exc).__name__}: {_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- CUDA errors
def _ok(cudart: Any, err: Any) -> bool:
    return bool(err == cudart.cudaError_t.cudaSuccess)


def _err_name(cudart: Any, err: Any) -> str:
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(err)


def _check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python call ``(err, *values)``; raise on any error code.

    Returns None, the single value, or a tuple of values.
    """
    err, values = result[0], tuple(result[1:])
    if not _ok(cudart, err):
        raise MelodyRTError(f"CUDA error in {what}: {_err_name(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- engine cache
def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/melodyrt/trt`` (default ``~/.cache/melodyrt/trt``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "melodyrt" / "trt"


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")
    return (s or "unknown")[:limit]


def engine_cache_key(gpu_name: str, trt_version: str, onnx_sha256: str, max_batch: int,
                     opt_batch: int = 1) -> str:
    """File-name-safe key of a serialized engine.

    A TensorRT engine is valid only for the TensorRT version and the GPU model that built
    it (developer guide, "Engine Compatibility"), and for the ONNX file and batch profile
    it was built from. Every one of these is part of the key; the readable prefix is for
    people, the trailing digest (over all fields and :data:`CACHE_FORMAT`) for uniqueness.

    Parameters
    ----------
    gpu_name : str
        CUDA device name, e.g. ``"NVIDIA GeForce RTX 4090"``.
    trt_version : str
        ``tensorrt.__version__``.
    onnx_sha256 : str
        Hex SHA-256 of the FP16 ONNX file.
    max_batch, opt_batch : int [streams]
        Optimisation profile of the batch axis.

    Returns
    -------
    str
        e.g. ``"NVIDIA-GeForce-RTX-4090_trt10.13.0.35_onnx1a2b3c4d5e6f_b1-64_0123456789abcdef"``
    """
    gpu, version, sha = str(gpu_name), str(trt_version), str(onnx_sha256).lower()
    fields = {"format": CACHE_FORMAT, "gpu": gpu, "tensorrt": version, "onnx_sha256": sha,
              "max_batch": int(max_batch), "opt_batch": int(opt_batch)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"{_slug(gpu)}_trt{_slug(version, 24)}_onnx{_slug(sha, 12)}_b{int(opt_batch)}-{int(max_batch)}_{digest}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- TensorRT glue
def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to :mod:`logging` and keeps the last errors.

    Deriving from ``trt.ILogger`` (and calling its ``__init__``) is the documented way to
    route TensorRT messages ("The Build Phase", Python API documentation).
    """

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=8)

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= 1:
                self.errors.append(str(msg))
                _log.error("TensorRT: %s", msg)
            elif level == 2:
                _log.warning("TensorRT: %s", msg)
            elif level == 3:
                _log.debug("TensorRT: %s", msg)

    return _Logger()


def _network_flags(trt: Any) -> int:
    """Network creation flags for a strongly typed network.

    TensorRT 10 makes strong typing opt-in with ``1 << STRONGLY_TYPED`` ("pass a value of
    1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED) to create_network()", Builder
    page); the FP16 builder flag is the deprecated weak-typing path. TensorRT 11 makes
    every network strongly typed and deprecates the flag (kept, ignored), so 0 is passed.
    """
    if _trt_major(str(trt.__version__)) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _io_names(bundle: ModelBundle) -> tuple[list[str], list[str]]:
    ins = ["frame"] + [s.input_name for s in bundle.states]
    outs = ["salience"] + [s.output_name for s in bundle.states]
    return ins, outs


def _expected_shapes(bundle: ModelBundle) -> dict[str, tuple[int, ...]]:
    """Shape of every I/O tensor without the batch axis."""
    shapes: dict[str, tuple[int, ...]] = {"frame": (3, 360), "salience": (361,)}
    for s in bundle.states:
        shapes[s.input_name] = tuple(s.shape)
        shapes[s.output_name] = tuple(s.shape)
    return shapes


def _check_io(bundle: ModelBundle, path: Path, inputs: dict[str, tuple[int, ...]],
              outputs: dict[str, tuple[int, ...]]) -> None:
    """Names and non-batch shapes of a network/engine against the bundle metadata."""
    want_in, want_out = _io_names(bundle)
    for kind, got, want in (("inputs", inputs, want_in), ("outputs", outputs, want_out)):
        if set(got) != set(want):
            raise ModelError(
                f"{path} {kind} do not match {bundle.root / 'model.json'} "
                f"(missing {sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]})")
    expected = _expected_shapes(bundle)
    for name, shape in {**inputs, **outputs}.items():
        if len(shape) != len(expected[name]) + 1 or tuple(shape[1:]) != expected[name]:
            raise ModelError(f"{path}: tensor {name} has shape {list(shape)}, "
                             f"model.json says [batch, {', '.join(map(str, expected[name]))}]")


# --------------------------------------------------------------------------- state
class _Core:
    """What an engine's states share: the deserialized engine, the CUDA stream, the I/O layout.

    States hold this instead of their :class:`TrtEngine`, so an engine and its own state
    form no reference cycle and GPU memory is released as soon as they are dropped. The
    stream is destroyed once the engine is closed and its last state is closed.
    """

    def __init__(self, cudart: Any, engine: Any, logger: Any, bundle: ModelBundle, inputs: list[str],
                 shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], cuda_graphs: bool) -> None:
        self.cudart, self.engine, self.logger, self.bundle = cudart, engine, logger, bundle
        self.inputs, self.shapes, self.dtypes, self.cuda_graphs = inputs, shapes, dtypes, cuda_graphs
        self.live_states = 0
        self.released = False
        self.stream: Any = None
        # Own stream, non-blocking with respect to the legacy default stream: graph capture
        # is not allowed on the default stream.
        self.stream = _check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                             "cudaStreamCreateWithFlags")
        self.stream_handle = int(self.stream)

    def last_error(self) -> str:
        errors = getattr(self.logger, "errors", None)
        return f": {errors[-1]}" if errors else ""

    def state_closed(self) -> None:
        self.live_states -= 1
        self._maybe_destroy()

    def release(self) -> None:
        self.released = True
        self._maybe_destroy()

    def _maybe_destroy(self) -> None:
        if self.released and self.live_states <= 0 and self.stream is not None:
            stream, self.stream = self.stream, None
            try:
                self.cudart.cudaStreamDestroy(stream)
            except Exception:  # interpreter shutdown or a dead CUDA context
                pass

    def __del__(self) -> None:
        if getattr(self, "stream", None) is not None:
            self.released, self.live_states = True, 0
            self._maybe_destroy()


class TrtState:
    """Everything N streams need on the GPU, allocated once.

    One execution context (input shapes fixed to ``n``), device buffers for the frame,
    the salience and two sets of carry-state tensors (ping-pong: set ``current`` is read,
    the other written, then they swap), pinned host buffers for the frame and salience, and
    one CUDA graph per ping-pong direction when capture succeeded.

    Window states (causal window means) are kept on the host by a
    :class:`~.window_sums.WindowSums` in float64: each step uploads their sums and
    downloads the new frames (pinned buffers, inside the graph), since a float16 running
    sum on the device would drift.

    Attributes
    ----------
    n : int [streams]
    current : int
        Index (0 or 1) of the state set the next step reads.
    graphed : bool
        Whether steps launch captured CUDA graphs (else plain ``execute_async_v3``).
    salience : ndarray [shape=(n, 361)] [float32]
        Output of the last step (the array ``step`` returns).
    """

    def __init__(self, core: _Core, n: int) -> None:
        self._core = core
        self._cudart = cudart = core.cudart
        core.live_states += 1
        self.n = n
        self.current = 0
        self.graphed = False
        self._closed = False
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._graphs: list[Any] = []
        self._context: Any = None
        try:
            self._setup(core, cudart, n)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _setup(self, core: _Core, cudart: Any, n: int) -> None:
        ctx = core.engine.create_execution_context()
        if ctx is None:
            raise MelodyRTError(f"TensorRT could not create an execution context for {n} streams"
                                f"{core.last_error()}")
        self._context = ctx
        # Named-tensor API (TensorRT >= 10): shapes and addresses by tensor name.
        for name in core.inputs:
            shape = (n, *core.shapes[name])
            if not ctx.set_input_shape(name, shape):
                raise MelodyRTError(f"TensorRT rejected input shape {shape} for {name}{core.last_error()}")
        got = tuple(ctx.get_tensor_shape("salience"))
        if got != (n, 361):
            raise ModelError(f"TensorRT infers salience shape {list(got)} for {n} streams, expected [{n}, 361]")

        def dev(name: str) -> tuple[int, int]:
            nbytes = n * int(np.prod(core.shapes[name])) * core.dtypes[name].itemsize
            ptr = int(_check(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self._device_ptrs.append(ptr)
            return ptr, nbytes

        def pinned(name: str) -> NDArray:
            shape = (n, *core.shapes[name])
            dtype = core.dtypes[name]
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ptr = int(_check(cudart, cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
            self._host_ptrs.append(ptr)
            raw = (ctypes.c_byte * nbytes).from_address(ptr)
            arr = np.frombuffer(memoryview(raw).cast("B"), dtype=dtype).reshape(shape)
            arr[...] = 0
            return arr

        self._d_frame, self._frame_bytes = dev("frame")
        self._d_salience, self._salience_bytes = dev("salience")
        self.h_frame = pinned("frame")
        self.h_salience = pinned("salience")
        self.salience = np.zeros((n, 361), np.float32)
        # buffers[k][i]: device pointer of carry i in set k; row_bytes[i]: one stream's slice
        states = [s for s in core.bundle.states if s.kind == CARRY]
        self.row_bytes = [int(np.prod(s.shape)) * core.dtypes[s.input_name].itemsize for s in states]
        self.buffers = [[dev(s.input_name)[0] for s in states] for _ in range(2)]
        # Per direction k: (name, address) pairs that make set k the input, 1 - k the output.
        self._bind = [
            [(s.input_name, self.buffers[k][i]) for i, s in enumerate(states)]
            + [(s.output_name, self.buffers[1 - k][i]) for i, s in enumerate(states)]
            for k in (0, 1)
        ]
        self.windows = WindowSums(core.bundle.states, n, np.float32)
        # (device sum, pinned sum, bytes) and (device frame, pinned frame, bytes) per window
        self._window_up: list[tuple[int, NDArray, int]] = []
        self._window_down: list[tuple[int, NDArray, int]] = []
        fixed = [("frame", self._d_frame), ("salience", self._d_salience)]
        for spec in self.windows.specs:
            d_sum, nbytes = dev(spec.input_name)
            d_new, _ = dev(spec.output_name)
            self._window_up.append((d_sum, pinned(spec.input_name), nbytes))
            self._window_down.append((d_new, pinned(spec.output_name), nbytes))
            fixed += [(spec.input_name, d_sum), (spec.output_name, d_new)]
        for name, ptr in fixed:
            if not ctx.set_tensor_address(name, ptr):
                raise MelodyRTError(f"TensorRT rejected the address of {name}{core.last_error()}")
        self.zero()
        if core.cuda_graphs:
            self._capture_graphs()
            self.zero()  # the warm-up runs of the capture wrote into the state buffers

    # ------------------------------------------------------------------ execution
    def _set_addresses(self, k: int) -> None:
        ctx = self._context
        for name, ptr in self._bind[k]:
            if not ctx.set_tensor_address(name, ptr):
                raise MelodyRTError(f"TensorRT rejected the address of {name}{self._core.last_error()}")

    def _enqueue(self, k: int) -> bool:
        """Frame upload, inference of direction ``k``, salience download (asynchronous).

        Returns False when TensorRT refuses the enqueue (during capture: capture failed).
        """
        cudart, stream = self._cudart, self._core.stream
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaMemcpyAsync(self._d_frame, self.h_frame.ctypes.data, self._frame_bytes, h2d,
                                              stream), "cudaMemcpyAsync(frame)")
        for d_sum, h_sum, nbytes in self._window_up:
            _check(cudart, cudart.cudaMemcpyAsync(d_sum, h_sum.ctypes.data, nbytes, h2d, stream),
                   "cudaMemcpyAsync(window sum)")
        if not self._context.execute_async_v3(self._core.stream_handle):
            return False
        _check(cudart, cudart.cudaMemcpyAsync(self.h_salience.ctypes.data, self._d_salience, self._salience_bytes,
                                              d2h, stream), "cudaMemcpyAsync(salience)")
        for d_new, h_new, nbytes in self._window_down:
            _check(cudart, cudart.cudaMemcpyAsync(h_new.ctypes.data, d_new, nbytes, d2h, stream),
                   "cudaMemcpyAsync(window frame)")
        return True

    def _advance_windows(self) -> None:
        """Move the downloaded window frames into the host windows; stage the next sums."""
        sums = self.windows.push([h_new for _, h_new, _ in self._window_down])  # float16 -> float32
        for (_, h_sum, _), s in zip(self._window_up, sums):
            np.copyto(h_sum, s, casting="same_kind")  # float32 -> float16

    def run(self) -> None:
        """One step of direction ``current`` (synchronous), then swap the state sets."""
        cudart, stream, k = self._cudart, self._core.stream, self.current
        if self.graphed:
            _check(cudart, cudart.cudaGraphLaunch(self._graphs[k], stream), "cudaGraphLaunch")
        else:
            self._set_addresses(k)
            if not self._enqueue(k):
                raise MelodyRTError(f"TensorRT execute_async_v3 failed{self._core.last_error()}")
        _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self._advance_windows()
        self.current = 1 - k

    def _capture_graphs(self) -> None:
        """Capture one CUDA graph per ping-pong direction; on any failure use plain execution.

        Sequence of the TensorRT developer guide ("CUDA Graphs") and trtexec: enqueue once
        and synchronise (so one-time initialisation is not captured), begin capture on the
        engine's own non-default stream, enqueue, end capture, instantiate; later launch the
        graph instead of enqueueing. Thread-local capture mode so that CUDA calls of other
        threads neither break nor are broken by the capture. A failed capture must still be
        ended, or the stream stays in capture mode.
        """
        cudart, stream = self._cudart, self._core.stream
        graphs: list[Any] = []
        try:
            for k in (0, 1):
                self._set_addresses(k)
                if not self._enqueue(k):
                    raise MelodyRTError(f"execute_async_v3 failed before capture{self._core.last_error()}")
                _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
                _check(cudart, cudart.cudaStreamBeginCapture(
                    stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
                try:
                    enqueued = self._enqueue(k)
                finally:
                    end = cudart.cudaStreamEndCapture(stream)
                graph = _check(cudart, end, "cudaStreamEndCapture")
                try:
                    if not enqueued:
                        raise MelodyRTError("execute_async_v3 refused to run under stream capture")
                    res = _check(cudart, cudart.cudaGraphGetNodes(graph), "cudaGraphGetNodes")
                    n_nodes = int(res[-1] if isinstance(res, tuple) else res)
                    if n_nodes < 3:  # two copies and at least one kernel
                        raise MelodyRTError(f"captured graph has only {n_nodes} nodes (wrong device or stream?)")
                    graphs.append(_instantiate(cudart, graph))
                finally:
                    cudart.cudaGraphDestroy(graph)
                if hasattr(cudart, "cudaGraphUpload"):  # upload now, not on the first launch
                    _check(cudart, cudart.cudaGraphUpload(graphs[-1], stream), "cudaGraphUpload")
            _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        except Exception as exc:
            for g in graphs:
                cudart.cudaGraphExecDestroy(g)
            cudart.cudaGetLastError()  # clear a non-sticky capture error before going on
            _log.warning("CUDA graph capture unavailable (%s); stepping with execute_async_v3", _first_line(exc))
            self.graphed = False
            return
        self._graphs = graphs
        self.graphed = True

    # ------------------------------------------------------------------ state handling
    def zero(self, streams: list[int] | None = None) -> None:
        """Zero both state sets of all streams, or of ``streams`` only (synchronous)."""
        cudart, stream = self._cudart, self._core.stream
        if streams is not None:
            bad = [i for i in streams if not 0 <= int(i) < self.n]
            if bad:
                raise ValueError(f"stream indices {bad[:3]} out of range for {self.n} streams")
        for ptrs in self.buffers:
            for ptr, row in zip(ptrs, self.row_bytes, strict=True):
                spans = [(ptr, row * self.n)] if streams is None else [(ptr + int(i) * row, row) for i in streams]
                for start, size in spans:
                    _check(cudart, cudart.cudaMemsetAsync(start, 0, size, stream), "cudaMemsetAsync")
        _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self.windows.zero(None if streams is None else [int(i) for i in streams])
        idx = slice(None) if streams is None else [int(i) for i in streams]
        for _, h_sum, _ in self._window_up:
            h_sum[idx] = 0

    def close(self) -> None:
        """Release the graphs, the execution context and all buffers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        cudart = self._cudart
        try:
            for g in self._graphs:
                cudart.cudaGraphExecDestroy(g)
            self._graphs = []
            self.graphed = False
            self._context = None
            for ptr in self._device_ptrs:
                cudart.cudaFree(ptr)
            for ptr in self._host_ptrs:
                cudart.cudaFreeHost(ptr)
        except Exception:  # interpreter shutdown or a dead CUDA context
            pass
        self._device_ptrs, self._host_ptrs = [], []
        self._core.state_closed()

    def __del__(self) -> None:
        if hasattr(self, "_closed"):
            self.close()


def _instantiate(cudart: Any, graph: Any) -> Any:
    """``cudaGraphInstantiate(graph, flags)`` (CUDA 12+); older bindings take a log buffer."""
    try:
        res = cudart.cudaGraphInstantiate(graph, 0)
    except TypeError:
        res = cudart.cudaGraphInstantiate(graph, b"", 0)
    out = _check(cudart, res, "cudaGraphInstantiate")
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------- engine
class TrtEngine:
    """TensorRT on an NVIDIA GPU, FP16, built from the bundle's FP16 ONNX file.

    Parameters
    ----------
    bundle : ModelBundle
    max_batch : int [streams]
        Largest ``n_streams`` of :meth:`new_state` (the profile's max batch).
    opt_batch : int [streams]
        Batch size TensorRT tunes kernels for (1: lowest latency for one singer).
    device_id : int
        CUDA device index.
    cache_dir : str or Path, optional
        Where serialized engines are kept (default :func:`default_cache_dir`).
        Engine files are executable code: point this only at a directory you trust.
    workspace_mib : int [MiB]
        Builder workspace pool limit.
    cuda_graphs : bool
        Capture each step as a CUDA graph where TensorRT allows it.
    precision : {"fp16"}
        Only FP16 is built (accepted for symmetry with :class:`OrtEngine`).

    Attributes
    ----------
    name : str
        ``"tensorrt"``.
    device : str
        GPU name.
    cache_path : Path
        The serialized engine file.
    loaded_from_cache : bool
        Whether construction deserialized ``cache_path`` instead of building.

    Raises
    ------
    BackendUnavailable
        TensorRT, cuda-python or a GPU is missing.
    ModelError
        The ONNX file does not parse, or its inputs/outputs do not match the bundle.

    Notes
    -----
    Not thread-safe: step an engine and its states from one thread at a time.
    """

    name = "tensorrt"

    def __init__(self, bundle: ModelBundle, max_batch: int = 64, opt_batch: int = 1, device_id: int = 0,
                 cache_dir: str | Path | None = None, workspace_mib: int = 256, cuda_graphs: bool = True,
                 precision: str = "fp16") -> None:
        ok, why = tensorrt_available()
        if not ok:
            from .engine import BackendUnavailable

            raise BackendUnavailable(f"TensorRT backend unavailable ({why}): {_INSTALL_HINT}")
        if precision != "fp16":
            raise MelodyRTError(f"the TensorRT backend runs the FP16 model only (precision={precision!r})")
        if not 1 <= opt_batch <= max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, max_batch={max_batch}")
        import tensorrt as trt

        self._trt = trt
        self._cudart = cudart = _cudart()
        self._closed = False
        self._core: _Core | None = None
        self._own: TrtState | None = None
        self.bundle = bundle
        self.precision = precision
        self.dtype = bundle.io_dtype("fp16")
        self.max_batch = int(max_batch)
        self.opt_batch = int(opt_batch)
        self.device_id = int(device_id)
        self.cuda_graphs = bool(cuda_graphs)
        self.workspace_bytes = int(workspace_mib) << 20
        self.trt_version = str(trt.__version__)

        # The engine, its contexts and the stream must all live on this device: set it
        # before deserializing (a context created on another device captures empty graphs).
        _check(cudart, cudart.cudaSetDevice(self.device_id), f"cudaSetDevice({self.device_id})")
        prop = _check(cudart, cudart.cudaGetDeviceProperties(self.device_id), "cudaGetDeviceProperties")
        raw = prop.name
        self.device = (raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes)
                       else str(raw)).strip() or f"cuda:{self.device_id}"

        self.onnx_path = bundle.onnx_path("fp16")  # checks the file against its metadata hash
        onnx_sha = bundle.meta.get("sha256", {}).get(self.onnx_path.name) or sha256_of(self.onnx_path)
        key = engine_cache_key(self.device, self.trt_version, onnx_sha, self.max_batch, self.opt_batch)
        self.cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{key}.engine"

        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine: Any = None
        self.loaded_from_cache = self._load_cached()
        if not self.loaded_from_cache:
            plan = self._build()
            self._engine = self._deserialize(plan)
            if self._engine is None:
                raise MelodyRTError(f"TensorRT cannot deserialize the engine it just built{self._last_trt_error()}")
            try:
                _write_atomic(self.cache_path, plan)
            except OSError as exc:
                _log.warning("cannot write TensorRT engine cache %s: %s", self.cache_path, exc)
            self._read_engine_io()

        self._core = _Core(cudart, self._engine, self._logger, bundle, self._inputs, self._shapes, self._dtypes,
                           self.cuda_graphs)
        self._own = self.new_state(1)

    # ------------------------------------------------------------------ build / load
    def _last_trt_error(self) -> str:
        errors = getattr(getattr(self, "_logger", None), "errors", None)
        return f": {errors[-1]}" if errors else ""

    def _deserialize(self, plan: bytes) -> Any:
        """``Runtime.deserialize_cuda_engine``; None when TensorRT refuses the bytes."""
        try:
            return self._runtime.deserialize_cuda_engine(plan)
        except Exception as exc:
            _log.warning("TensorRT deserialization raised %s", _first_line(exc))
            return None

    def _load_cached(self) -> bool:
        path = self.cache_path
        if not path.is_file():
            return False
        try:
            plan = path.read_bytes()
        except OSError as exc:
            _log.warning("cannot read TensorRT engine cache %s: %s", path, exc)
            return False
        engine = self._deserialize(plan)
        if engine is None:
            _log.warning("cached TensorRT engine %s does not load here; rebuilding it", path)
            self._logger.errors.clear()  # expected; keep it out of later error messages
            return False
        self._engine = engine
        try:
            self._read_engine_io()
        except ModelError as exc:
            _log.warning("cached TensorRT engine %s does not match the model (%s); rebuilding it", path, exc)
            self._engine = None
            return False
        return True

    def _build(self) -> bytes:
        """Parse the FP16 ONNX into a strongly typed network and build a serialized engine."""
        trt, path = self._trt, self.onnx_path
        builder = trt.Builder(self._logger)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, self._logger)
        # parse_from_file resolves external weight files relative to the model.
        if not parser.parse_from_file(str(path)):
            errors = [" ".join(str(parser.get_error(i)).split())[:300] for i in range(parser.num_errors)]
            detail = "; ".join(e for e in errors[:3] if e) or self._last_trt_error().lstrip(": ")
            more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
            raise ModelError(f"TensorRT cannot parse {path}: {detail or 'unknown parser error'}{more}")
        inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
        outputs = {network.get_output(i).name: tuple(network.get_output(i).shape) for i in range(network.num_outputs)}
        _check_io(self.bundle, path, inputs, outputs)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        profile = builder.create_optimization_profile()
        for name, shape in inputs.items():
            if shape[0] != -1:
                raise ModelError(f"{path}: input {name} has a fixed batch of {shape[0]}; "
                                 "the TensorRT backend needs an ONNX exported with a dynamic batch axis")
            rest = tuple(int(d) for d in shape[1:])
            profile.set_shape(name, (1, *rest), (self.opt_batch, *rest), (self.max_batch, *rest))
        config.add_optimization_profile(profile)
        _log.info("building TensorRT engine for %s on %s (takes a while; cached in %s)",
                  path.name, self.device, self.cache_path.parent)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise MelodyRTError(f"TensorRT could not build an engine from {path}{self._last_trt_error()}")
        return bytes(plan)

    def _read_engine_io(self) -> None:
        """Names, shapes (without batch) and NumPy dtypes of the engine's I/O tensors."""
        trt, e = self._trt, self._engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        shapes = {n: tuple(int(d) for d in e.get_tensor_shape(n)) for n in names}
        is_input = {n: e.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        inputs = {n: s for n, s in shapes.items() if is_input[n]}
        _check_io(self.bundle, self.cache_path, inputs, {n: s for n, s in shapes.items() if not is_input[n]})
        dtypes = {n: np.dtype(trt.nptype(e.get_tensor_dtype(n))) for n in names}
        for n in ("frame", "salience"):
            if dtypes[n] != self.dtype:
                raise ModelError(f"{self.onnx_path}: {n} is {dtypes[n]}, "
                                 f"the bundle's FP16 model must use {self.dtype} I/O")
        self._inputs = [n for n in names if is_input[n]]
        self._shapes = {n: s[1:] for n, s in shapes.items()}
        self._dtypes = dtypes

    # ------------------------------------------------------------------ Engine protocol
    def new_state(self, n_streams: int = 1) -> TrtState:
        """Zeroed state (and GPU buffers, execution context, CUDA graphs) for ``n_streams``."""
        if self._closed or self._core is None:
            raise MelodyRTError("this TensorRT engine is closed")
        if not 1 <= int(n_streams) <= self.max_batch:
            raise ValueError(f"n_streams must be in 1..{self.max_batch} (the engine's max_batch), got {n_streams}")
        if self.device_id:
            _check(self._cudart, self._cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        return TrtState(self._core, int(n_streams))

    def step(self, frames: NDArray, state: TrtState | None = None) -> tuple[NDArray, TrtState]:
        """Advance every stream by one frame.

        Parameters
        ----------
        frames : ndarray [shape=(N, 3, 360)] [float32]
            Converted to float16 on the way in.
        state : TrtState or None

        Returns
        -------
        salience : ndarray [shape=(N, 361)] [float32], valid until the next step
        state : the same state, advanced
        """
        st = state if state is not None else self._own
        if st is None or st._closed or st._core is not self._core:
            raise MelodyRTError("state does not belong to this TensorRT engine (or was closed)")
        if self.device_id:
            _check(self._cudart, self._cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        st.h_frame[...] = frames  # float32 -> float16 into pinned memory
        st.run()
        np.copyto(st.salience, st.h_salience)  # float16 -> float32
        return st.salience, st

    def reset(self, state: TrtState | None = None, streams: list[int] | None = None) -> None:
        """Zero the state of all streams, or of ``streams`` only."""
        st = state if state is not None else self._own
        if st is None:
            raise MelodyRTError("this TensorRT engine is closed")
        st.zero(streams)

    def warmup(self, steps: int = 20) -> None:
        """Step a throw-away single-stream state so the first real step is not slow."""
        st = self.new_state(1)
        try:
            for _ in range(steps):
                self.step(st.h_frame, st)
        finally:
            st.close()

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Free the engine's own state; the stream goes when the last state is closed too.

        States made by :meth:`new_state` stay usable until they are closed or dropped.
        """
        if self._closed:
            return
        self._closed = True
        if self._own is not None:
            self._own.close()
            self._own = None
        if self._core is not None:
            self._core.release()

    def __del__(self) -> None:
        if hasattr(self, "_closed"):
            self.close()

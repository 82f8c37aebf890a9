"""TensorRT backend (rt/trt_engine.py).

Three groups:

* Everywhere: the module imports without TensorRT, ``tensorrt_available`` explains why it
  says no and never raises, and the engine cache key is a pure function.
* Everywhere, against an in-process stand-in for ``tensorrt`` and cuda-python: the
  engine's own logic (ping-pong state buffers, per-stream reset, CUDA-graph capture and
  its fallback, engine cache reuse and rebuild, clear errors). The stand-in runs a toy
  "model" whose output is the running sum of each stream's frame means, so a wrong
  buffer, direction or reset shows as a wrong number. It checks rt/trt_engine.py's logic,
  not TensorRT's behaviour.
* On a machine with TensorRT and an NVIDIA GPU only (skipped elsewhere, with the reason):
  parity with ONNX Runtime, stream isolation, reset, engine cache reuse.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import enum
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melodyrt.rt import trt_engine
from melodyrt.rt.bundle import FORMAT_VERSION, ModelBundle, load_bundle, sha256_of
from melodyrt.rt.config import CfpConfig
from melodyrt.rt.errors import MelodyRTError, ModelError
from melodyrt.rt.trt_engine import engine_cache_key, tensorrt_available


@pytest.fixture(autouse=True)
def _fresh_probe():
    """Every test sees a fresh ``tensorrt_available`` answer (it is cached per process)."""
    tensorrt_available.cache_clear()
    yield
    tensorrt_available.cache_clear()


# =========================================================================== everywhere
def test_module_imports_without_tensorrt_or_cuda():
    code = (
        "import sys\n"
        "sys.modules['tensorrt'] = None\n"  # makes `import tensorrt` fail even where it is installed
        "sys.modules['cuda'] = None\n"
        "import melodyrt.rt.trt_engine as t\n"
        "ok, why = t.tensorrt_available()\n"
        "assert ok is False and why == 'tensorrt not installed', (ok, why)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_probe_answers_with_a_reason_here():
    ok, why = tensorrt_available()
    assert isinstance(ok, bool) and isinstance(why, str)
    if ok:
        assert why == ""
    else:
        assert why.strip(), "a refusal must say why"


def test_probe_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_available() == (False, "tensorrt not installed")


def _fake_trt_module(version: str = "10.13.0.35") -> types.ModuleType:
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version  # type: ignore[attr-defined]
    return mod


def test_probe_without_cuda_python(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_module())
    monkeypatch.setitem(sys.modules, "cuda", None)
    assert tensorrt_available() == (False, "cuda-python not installed")


def test_probe_too_old_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_module("8.6.1"))
    ok, why = tensorrt_available()
    assert not ok and "8.6.1" in why and "too old" in why


@pytest.mark.parametrize("count, err, expect", [
    (0, "cudaSuccess", "no CUDA device"),
    (None, "cudaErrorNoDevice", "no CUDA device (cudaErrorNoDevice)"),
    (None, "cudaErrorInsufficientDriver", "no CUDA device (cudaErrorInsufficientDriver)"),
])
def test_probe_without_device(monkeypatch, count, err, expect):
    cud = FakeCudart(n_devices=count or 0)
    cud.count_error = err
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_module())
    monkeypatch.setattr(trt_engine, "_cudart", lambda: cud)
    assert tensorrt_available() == (False, expect)


def test_probe_never_raises_and_is_cached(monkeypatch):
    calls = []

    def broken() -> Any:
        calls.append(1)
        raise RuntimeError("driver exploded\nsecond line")

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt_module())
    monkeypatch.setattr(trt_engine, "_cudart", broken)
    ok, why = tensorrt_available()
    assert not ok and "driver exploded" in why and "second line" not in why
    assert tensorrt_available() == (ok, why)
    assert len(calls) == 1, "the probe must be cached"


def test_cache_key_changes_with_every_field():
    base = dict(gpu_name="NVIDIA GeForce RTX 4090", trt_version="10.13.0.35", onnx_sha256="ab" * 32,
                max_batch=64, opt_batch=1)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base), "pure: same inputs, same key"
    variants = [
        dict(gpu_name="NVIDIA A100-SXM4-40GB"),
        dict(gpu_name="NVIDIA GeForce RTX 4090 "),  # slugs alike, digest still differs
        dict(trt_version="10.13.1.1"),
        dict(trt_version="11.4.0.106"),
        dict(onnx_sha256="ab" * 31 + "ac"),  # same readable prefix, other file
        dict(max_batch=16),
        dict(opt_batch=4),
    ]
    keys = {engine_cache_key(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    for k in keys | {key}:
        assert all(c.isalnum() or c in "._-" for c in k), k
        assert len(k) < 160


def test_cache_key_is_readable():
    key = engine_cache_key("NVIDIA GeForce RTX 4090", "10.13.0.35", "0123456789abcdef" * 4, 64, 1)
    assert key.startswith("NVIDIA-GeForce-RTX-4090_trt10.13.0.35_onnx0123456789ab_b1-64_")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert trt_engine.default_cache_dir() == tmp_path / "melodyrt" / "trt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert trt_engine.default_cache_dir() == Path.home() / ".cache" / "melodyrt" / "trt"


# =========================================================================== stand-in
class FakeCudart:
    """Enough of ``cuda.bindings.runtime`` for TrtEngine, on host memory.

    Calls return ``(err, *values)`` like cuda-python. Work on a stream runs at once unless
    the stream is capturing, in which case it is recorded into the graph. Like CUDA, it
    refuses synchronisation and allocation while a capture is open.
    """

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorInsufficientDriver = 35
        cudaErrorNoDevice = 100
        cudaErrorStreamCaptureUnsupported = 900
        cudaErrorStreamCaptureInvalidated = 901

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1
        cudaStreamCaptureModeRelaxed = 2

    cudaStreamNonBlocking = 1

    class Stream:
        def __init__(self, handle: int) -> None:
            self.handle, self.capture, self.invalid = handle, None, False

        def __int__(self) -> int:
            return self.handle

    def __init__(self, n_devices: int = 1, capture: str = "ok") -> None:
        self.n_devices, self.count_error, self.capture_mode = n_devices, "cudaSuccess", capture
        self.device_mem: dict[int, np.ndarray] = {}
        self.host_mem: dict[int, np.ndarray] = {}
        self.streams: dict[int, FakeCudart.Stream] = {}
        self.launches = 0
        self.live_graph_execs = 0

    OK = (cudaError_t.cudaSuccess,)

    def _capturing(self) -> bool:
        return any(s.capture is not None for s in self.streams.values())

    def submit(self, stream: Any, op: Any) -> tuple:
        s = self.streams[int(stream)]
        if s.capture is not None:
            s.capture.append(op)
        else:
            op()
        return self.OK

    # device, errors
    def cudaGetDeviceCount(self) -> tuple:
        return getattr(self.cudaError_t, self.count_error), self.n_devices

    def cudaGetErrorName(self, err: Any) -> tuple:
        return self.cudaError_t.cudaSuccess, self.cudaError_t(err).name.encode()

    def cudaGetLastError(self) -> tuple:
        return self.OK

    def cudaSetDevice(self, i: int) -> tuple:
        return self.OK if 0 <= i < self.n_devices else (self.cudaError_t.cudaErrorInvalidValue,)

    def cudaGetDeviceProperties(self, i: int) -> tuple:
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake GPU 9000\0\0\0")

    # memory
    def _alloc(self, table: dict, n: int) -> tuple:
        if self._capturing():
            return self.cudaError_t.cudaErrorStreamCaptureUnsupported, None
        a = np.full(n, 0x7B, np.uint8)  # garbage, like real fresh memory
        table[a.ctypes.data] = a
        return self.cudaError_t.cudaSuccess, a.ctypes.data

    def cudaMalloc(self, n: int) -> tuple:
        return self._alloc(self.device_mem, n)

    def cudaMallocHost(self, n: int) -> tuple:
        return self._alloc(self.host_mem, n)

    def cudaFree(self, p: int) -> tuple:
        self.device_mem.pop(p)
        return self.OK

    def cudaFreeHost(self, p: int) -> tuple:
        self.host_mem.pop(p)
        return self.OK

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: Any, stream: Any) -> tuple:
        return self.submit(stream, lambda: ctypes.memmove(dst, src, n))

    def cudaMemsetAsync(self, p: int, v: int, n: int, stream: Any) -> tuple:
        return self.submit(stream, lambda: ctypes.memset(p, v, n))

    # streams and graphs
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple:
        s = self.Stream(1000 + len(self.streams))
        self.streams[s.handle] = s
        return self.cudaError_t.cudaSuccess, s

    def cudaStreamDestroy(self, s: Any) -> tuple:
        del self.streams[int(s)]
        return self.OK

    def cudaStreamSynchronize(self, s: Any) -> tuple:
        if self.streams[int(s)].capture is not None:
            self.streams[int(s)].invalid = True
            return (self.cudaError_t.cudaErrorStreamCaptureUnsupported,)
        return self.OK

    def cudaStreamBeginCapture(self, s: Any, mode: Any) -> tuple:
        if self.capture_mode == "begin_fails":
            return (self.cudaError_t.cudaErrorStreamCaptureUnsupported,)
        self.streams[int(s)].capture = []
        return self.OK

    def cudaStreamEndCapture(self, s: Any) -> tuple:
        st = self.streams[int(s)]
        ops, invalid = st.capture, st.invalid
        st.capture, st.invalid = None, False
        if invalid:
            return self.cudaError_t.cudaErrorStreamCaptureInvalidated, None
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(ops=ops)

    def cudaGraphGetNodes(self, g: Any) -> tuple:
        return self.cudaError_t.cudaSuccess, [None] * len(g.ops), len(g.ops)

    def cudaGraphInstantiate(self, g: Any, flags: int) -> tuple:
        self.live_graph_execs += 1
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(ops=list(g.ops))

    def cudaGraphUpload(self, ge: Any, s: Any) -> tuple:
        return self.OK

    def cudaGraphDestroy(self, g: Any) -> tuple:
        return self.OK

    def cudaGraphExecDestroy(self, ge: Any) -> tuple:
        self.live_graph_execs -= 1
        return self.OK

    def cudaGraphLaunch(self, ge: Any, s: Any) -> tuple:
        self.launches += 1
        for op in ge.ops:
            self.submit(s, op)
        return self.OK


def _view(ptr: int, shape: tuple, dtype: Any = np.float16) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_byte * n).from_address(ptr), dtype).reshape(shape)


def make_fake_trt(cud: FakeCudart, version: str = "10.13.0.35") -> types.ModuleType:
    """Enough of the ``tensorrt`` module for TrtEngine.

    The "ONNX" file is JSON naming the I/O tensors and their shapes. The toy model: for
    every stream b and state s, ``state_out_s[b] = state_in_s[b] + mean(frame[b])``;
    ``salience[b, j]`` is element 0 of the j-th new state and ``salience[b, 360]`` the
    frame mean. Each window state w returns ``window_frame_w[b] = mean(frame[b])`` and puts
    element 0 of the sum it was given in the next salience column.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.builds = []  # type: ignore[attr-defined]

    class ILogger:
        def __init__(self) -> None:
            pass

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 1

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1

    def nptype(dt: Any) -> Any:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dt]

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.ins, self.outs = flags, {}, {}

        num_inputs = property(lambda self: len(self.ins))
        num_outputs = property(lambda self: len(self.outs))

        def get_input(self, i: int) -> Any:
            name = list(self.ins)[i]
            return types.SimpleNamespace(name=name, shape=tuple(self.ins[name]))

        def get_output(self, i: int) -> Any:
            name = list(self.outs)[i]
            return types.SimpleNamespace(name=name, shape=tuple(self.outs[name]))

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            try:
                spec = json.loads(Path(path).read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                self.errors.append("ModelImporter.cpp:123 In function parseFromFile:\n[6] Invalid Node - not ONNX")
                return False
            self.network.ins, self.network.outs = spec["inputs"], spec["outputs"]
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self) -> None:
            self.pools, self.profiles, self.flags = {}, [], []

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def set_flag(self, flag: Any) -> None:  # weak typing: must not be used
            self.flags.append(flag)

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            trt.builds.append(types.SimpleNamespace(flags=network.flags, config=config))
            (profile,) = config.profiles
            spec = {"inputs": network.ins, "outputs": network.outs,
                    "profile": {k: v for k, v in profile.shapes.items()}}
            return b"FAKEPLAN" + json.dumps(spec).encode()

    class Engine:
        def __init__(self, spec: dict) -> None:
            self.spec = spec
            self.names = list(spec["inputs"]) + list(spec["outputs"])

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode.INPUT if name in self.spec["inputs"] else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.HALF

        def get_tensor_shape(self, name: str) -> tuple:
            return tuple({**self.spec["inputs"], **self.spec["outputs"]}[name])

        def create_execution_context(self) -> Context:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.n, self.addr = engine, None, {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            lo, _, hi = self.engine.spec["profile"][name]
            if not lo[0] <= shape[0] <= hi[0] or tuple(shape[1:]) != tuple(lo[1:]):
                return False
            self.n = shape[0]
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return (self.n, *self.engine.get_tensor_shape(name)[1:])

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if cud.capture_mode == "enqueue_refuses" and cud.streams[stream_handle].capture is not None:
                cud.streams[stream_handle].invalid = True
                return False
            n, addr, spec = self.n, dict(self.addr), self.engine.spec  # addresses as of enqueue
            states = [k[len("state_in_"):] for k in spec["inputs"] if k.startswith("state_in_")]
            windows = [k[len("window_sum_"):] for k in spec["inputs"] if k.startswith("window_sum_")]
            shape = {k: tuple(v[1:]) for k, v in {**spec["inputs"], **spec["outputs"]}.items()}

            def op() -> None:
                frame = _view(addr["frame"], (n, *shape["frame"])).astype(np.float32)
                mean = frame.reshape(n, -1).mean(axis=1)
                sal = _view(addr["salience"], (n, 361))
                sal[...] = 0
                sal[:, 360] = mean
                for j, s in enumerate(states):
                    new = _view(addr[f"state_in_{s}"], (n, *shape[f"state_in_{s}"])).astype(np.float32)
                    new += mean.reshape((n,) + (1,) * len(shape[f"state_in_{s}"]))
                    _view(addr[f"state_out_{s}"], new.shape)[...] = new
                    sal[:, j] = new.reshape(n, -1)[:, 0]
                for j, w in enumerate(windows, start=len(states)):
                    wshape = (n, *shape[f"window_sum_{w}"])
                    sal[:, j] = _view(addr[f"window_sum_{w}"], wshape).reshape(n, -1)[:, 0]
                    _view(addr[f"window_frame_{w}"], wshape)[...] = mean.reshape((n,) + (1,) * (len(wshape) - 1))

            cud.submit(stream_handle, op)
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> Any:
            if not bytes(plan).startswith(b"FAKEPLAN"):
                self.logger.log(1, "IRuntime::deserializeCudaEngine: Error Code 1: magic tag does not match")
                return None
            return Engine(json.loads(bytes(plan)[8:]))

    for obj in (ILogger, NetworkDefinitionCreationFlag, MemoryPoolType, TensorIOMode, DataType, nptype,
                OnnxParser, Builder, Runtime):
        setattr(trt, obj.__name__, obj)
    return trt


STATES = (("conv_a", (2, 4)), ("conv_b", (3,)))
#: (name, shape, window W): one window state, W = 3
WINDOWS = (("mean_w", (2, 1, 4), 3),)


def write_fake_bundle(root: Path, states: tuple = STATES, onnx: dict | None = None,
                      windows: tuple = WINDOWS) -> ModelBundle:
    """A bundle whose FP16 "ONNX" file is the stand-in parser's JSON."""
    root.mkdir(parents=True, exist_ok=True)
    spec = onnx or {
        "inputs": {"frame": [-1, 3, 360], **{f"state_in_{n}": [-1, *s] for n, s in states},
                   **{f"window_sum_{n}": [-1, *s] for n, s, _ in windows}},
        "outputs": {"salience": [-1, 361], **{f"state_out_{n}": [-1, *s] for n, s in states},
                    **{f"window_frame_{n}": [-1, *s] for n, s, _ in windows}},
    }
    (root / "model_fp16.onnx").write_text(json.dumps(spec))
    meta = {
        "format": "melodyrt-model", "format_version": FORMAT_VERSION, "model_name": "fake", "model_version": "0",
        "cfp": dataclasses.asdict(CfpConfig()), "norm": {"offset": [0, 0, 0], "scale": [1, 1, 1]},
        "states": [{"name": n, "shape": list(s)} for n, s in states]
        + [{"name": n, "shape": list(s), "kind": "window_sum", "window": w} for n, s, w in windows],
        "delay_frames": 0,
        "n_bins": 360, "n_classes": 361, "onnx": {"fp16": "model_fp16.onnx"},
        "sha256": {"model_fp16.onnx": sha256_of(root / "model_fp16.onnx")},
    }
    (root / "model.json").write_text(json.dumps(meta))
    return load_bundle(root)


@pytest.fixture
def fake(monkeypatch):
    """Install the stand-ins; returns (fake cudart, fake tensorrt)."""
    cud = FakeCudart()
    trt = make_fake_trt(cud)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_engine, "_cudart", lambda: cud)
    return cud, trt


@pytest.fixture
def fake_bundle(tmp_path):
    return write_fake_bundle(tmp_path / "bundle")


def frames_of(means: list[float]) -> np.ndarray:
    """(N, 3, 360) float32 frames whose per-stream means are ``means`` (exact in float16)."""
    return np.broadcast_to(np.asarray(means, np.float32)[:, None, None], (len(means), 3, 360)).copy()


@pytest.mark.parametrize("capture", ["ok", "begin_fails", "enqueue_refuses"])
def test_fake_steps_ping_pong_and_reset(fake, fake_bundle, tmp_path, capture):
    cud, _ = fake
    cud.capture_mode = capture
    eng = trt_engine.TrtEngine(fake_bundle, max_batch=8, cache_dir=tmp_path / "cache")
    st = eng.new_state(3)
    assert st.graphed is (capture == "ok")
    assert not any(s.capture is not None for s in cud.streams.values()), "a capture was left open"
    launches = cud.launches
    sums = np.zeros(3)
    past: list[list[float]] = [[0, 0, 0], [0, 0, 0]]  # the W - 1 = 2 frames before
    for t in range(1, 6):
        means = [t, 2 * t, -t]
        sal, st2 = eng.step(frames_of(means), st)
        sums += means
        assert st2 is st and sal.dtype == np.float32 and sal.shape == (3, 361)
        np.testing.assert_array_equal(sal[:, 0], sums)  # running sum: state carried, no copy lost
        np.testing.assert_array_equal(sal[:, 1], sums)
        np.testing.assert_array_equal(sal[:, 2], np.sum(past, axis=0))  # window: sum of the last 2 frames
        np.testing.assert_array_equal(sal[:, 360], means)
        past = [past[1], means]
    assert cud.launches - launches == (5 if capture == "ok" else 0)
    eng.reset(st, streams=[1])
    sal, _ = eng.step(frames_of([1, 1, 1]), st)
    np.testing.assert_array_equal(sal[:, 0], [sums[0] + 1, 1, sums[2] + 1])
    np.testing.assert_array_equal(sal[:, 2], [9, 0, -9])  # stream 1's window emptied too
    eng.reset(st)
    sal, _ = eng.step(frames_of([4, 5, 6]), st)
    np.testing.assert_array_equal(sal[:, 0], [4, 5, 6])
    np.testing.assert_array_equal(sal[:, 2], [0, 0, 0])
    with pytest.raises(ValueError, match="out of range"):
        eng.reset(st, streams=[3])


def test_fake_states_are_independent(fake, fake_bundle, tmp_path):
    eng = trt_engine.TrtEngine(fake_bundle, max_batch=4, cache_dir=tmp_path)
    a, b = eng.new_state(2), eng.new_state(1)
    for _ in range(3):
        eng.step(frames_of([1, 2]), a)
    sal_b, _ = eng.step(frames_of([7]), b)
    np.testing.assert_array_equal(sal_b[:, 0], [7])
    sal_a, _ = eng.step(frames_of([1, 2]), a)
    np.testing.assert_array_equal(sal_a[:, 0], [4, 8])
    sal_own, _ = eng.step(frames_of([3]))  # the engine's own single-stream state
    np.testing.assert_array_equal(sal_own[:, 0], [3])
    with pytest.raises(ValueError, match="1..4"):
        eng.new_state(5)
    other = trt_engine.TrtEngine(fake_bundle, max_batch=4, cache_dir=tmp_path)
    with pytest.raises(MelodyRTError, match="does not belong"):
        other.step(frames_of([1, 2]), a)


def test_fake_build_uses_strong_typing_profile_and_workspace(fake, fake_bundle, tmp_path):
    cud, trt = fake
    eng = trt_engine.TrtEngine(fake_bundle, max_batch=16, opt_batch=2, workspace_mib=64, cache_dir=tmp_path)
    (build,) = trt.builds
    assert build.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build.config.flags == [], "no weak-typing precision flags"
    assert build.config.pools == {trt.MemoryPoolType.WORKSPACE: 64 << 20}
    (profile,) = build.config.profiles
    assert profile.shapes["frame"] == ((1, 3, 360), (2, 3, 360), (16, 3, 360))
    assert profile.shapes["state_in_conv_a"] == ((1, 2, 4), (2, 2, 4), (16, 2, 4))
    assert eng.name == "tensorrt" and eng.device == "Fake GPU 9000"
    assert eng.cache_path.name.startswith("Fake-GPU-9000_trt10.13.0.35_")


def test_fake_tensorrt_11_gets_no_deprecated_flag(monkeypatch, fake_bundle, tmp_path):
    cud = FakeCudart()
    trt = make_fake_trt(cud, version="11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_engine, "_cudart", lambda: cud)
    trt_engine.TrtEngine(fake_bundle, cache_dir=tmp_path)
    assert trt.builds[0].flags == 0


def test_fake_engine_cache_reuse_and_rebuild(fake, fake_bundle, tmp_path, caplog):
    cud, trt = fake
    first = trt_engine.TrtEngine(fake_bundle, max_batch=8, cache_dir=tmp_path)
    assert not first.loaded_from_cache and first.cache_path.is_file() and len(trt.builds) == 1
    second = trt_engine.TrtEngine(fake_bundle, max_batch=8, cache_dir=tmp_path)
    assert second.loaded_from_cache and second.cache_path == first.cache_path and len(trt.builds) == 1
    sal, _ = second.step(frames_of([2]))
    np.testing.assert_array_equal(sal[:, 0], [2])
    # another max batch is another engine
    third = trt_engine.TrtEngine(fake_bundle, max_batch=4, cache_dir=tmp_path)
    assert not third.loaded_from_cache and third.cache_path != first.cache_path
    # a damaged file is rebuilt and replaced
    first.cache_path.write_bytes(b"not an engine")
    fourth = trt_engine.TrtEngine(fake_bundle, max_batch=8, cache_dir=tmp_path)
    assert not fourth.loaded_from_cache and len(trt.builds) == 3
    assert first.cache_path.read_bytes().startswith(b"FAKEPLAN")
    assert "rebuilding" in caplog.text
    assert not list(tmp_path.glob(".*.tmp")), "temporary cache files left behind"


def test_fake_parser_error_is_a_model_error(fake, tmp_path):
    bundle = write_fake_bundle(tmp_path / "b")
    (bundle.root / "model_fp16.onnx").write_bytes(b"\x00garbage")
    meta = json.loads((bundle.root / "model.json").read_text())
    meta["sha256"] = {"model_fp16.onnx": hashlib.sha256(b"\x00garbage").hexdigest()}
    (bundle.root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="cannot parse .*Invalid Node"):
        trt_engine.TrtEngine(load_bundle(bundle.root), cache_dir=tmp_path / "c")


def test_fake_mismatched_io_is_a_model_error(fake, tmp_path):
    onnx = {"inputs": {"frame": [-1, 3, 360], "state_in_conv_a": [-1, 2, 4]},
            "outputs": {"salience": [-1, 361], "state_out_conv_a": [-1, 2, 4]}}
    bundle = write_fake_bundle(tmp_path / "b", onnx=onnx, windows=())  # model.json also names conv_b
    with pytest.raises(ModelError, match="missing .*state_in_conv_b"):
        trt_engine.TrtEngine(bundle, cache_dir=tmp_path / "c")
    wrong_shape = {"inputs": {**onnx["inputs"], "state_in_conv_b": [-1, 4]},
                   "outputs": {**onnx["outputs"], "state_out_conv_b": [-1, 4]}}
    bundle = write_fake_bundle(tmp_path / "b2", onnx=wrong_shape, windows=())
    with pytest.raises(ModelError, match="state_in_conv_b has shape"):
        trt_engine.TrtEngine(bundle, cache_dir=tmp_path / "c")
    fixed_batch = {"inputs": {"frame": [1, 3, 360], "state_in_conv_a": [1, 2, 4], "state_in_conv_b": [1, 3]},
                   "outputs": {"salience": [1, 361], "state_out_conv_a": [1, 2, 4], "state_out_conv_b": [1, 3]}}
    bundle = write_fake_bundle(tmp_path / "b3", onnx=fixed_batch, windows=())
    with pytest.raises(ModelError, match="fixed batch"):
        trt_engine.TrtEngine(bundle, cache_dir=tmp_path / "c")


def test_fake_close_frees_everything(fake, fake_bundle, tmp_path):
    cud, _ = fake
    eng = trt_engine.TrtEngine(fake_bundle, cache_dir=tmp_path)
    st = eng.new_state(4)
    eng.warmup(3)
    assert cud.device_mem and cud.host_mem and cud.live_graph_execs == 4
    eng.close()  # a caller's state outlives the engine's close...
    sal, _ = eng.step(frames_of([1, 2, 3, 4]), st)
    np.testing.assert_array_equal(sal[:, 0], [1, 2, 3, 4])
    assert cud.streams
    st.close()  # ...and the last one out frees the stream
    assert not cud.device_mem and not cud.host_mem and not cud.streams and cud.live_graph_execs == 0
    with pytest.raises(MelodyRTError, match="closed"):
        eng.new_state(1)


def test_fake_dropping_an_engine_frees_it_without_gc(fake, fake_bundle, tmp_path):
    import gc

    cud, _ = fake
    gc.disable()
    try:
        eng = trt_engine.TrtEngine(fake_bundle, cache_dir=tmp_path)
        eng.step(frames_of([1]))
        del eng  # no reference cycle between the engine and its own state
        assert not cud.device_mem and not cud.host_mem and not cud.streams
    finally:
        gc.enable()


def test_fake_create_engine_picks_tensorrt(fake, fake_bundle, tmp_path):
    from melodyrt.rt.engine import Engine, available_backends, create_engine

    assert available_backends()["tensorrt"] is True
    eng = create_engine("auto", fake_bundle, cache_dir=tmp_path)
    assert eng.name == "tensorrt" and isinstance(eng, Engine)


def test_unavailable_backend_says_why(monkeypatch, fake_bundle):
    from melodyrt.rt.engine import BackendUnavailable

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match=r"tensorrt not installed.*melodyrt\[tensorrt\]"):
        trt_engine.TrtEngine(fake_bundle)


# =========================================================================== real GPU
@pytest.fixture(scope="module")
def gpu():
    tensorrt_available.cache_clear()
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT backend not testable here: {why}")


def _export_test_bundle(root: Path) -> ModelBundle:
    """An untrained causal ``rt`` model exported as FP32 and FP16 (float16 I/O) ONNX."""
    torch = pytest.importorskip("torch", reason="no packaged FP16 model and no torch to export a test one")
    from melodyrt.model.network import build_model
    from melodyrt.model.streaming import StreamingStep, export_step_onnx

    torch.manual_seed(0)
    step = StreamingStep(build_model("rt"))
    root.mkdir(parents=True, exist_ok=True)
    export_step_onnx(step, root / "model_fp32.onnx", sidecar=False)
    export_step_onnx(copy.deepcopy(step).half().eval(), root / "model_fp16.onnx", sidecar=False,
                     dtype=torch.float16)
    files = {"fp32": "model_fp32.onnx", "fp16": "model_fp16.onnx"}
    meta = {
        "format": "melodyrt-model", "format_version": FORMAT_VERSION, "model_name": "rt-untrained",
        "model_version": "test",
        "cfp": dataclasses.asdict(CfpConfig()), "norm": {"offset": [0, 0, 0], "scale": [1, 1, 1]},
        "states": [s.to_meta() for s in step.state_specs()],
        "delay_frames": step.delay_frames, "n_bins": 360, "n_classes": 361, "onnx": files,
        "sha256": {f: sha256_of(root / f) for f in files.values()},
    }
    (root / "model.json").write_text(json.dumps(meta))
    return load_bundle(root)


@pytest.fixture(scope="module")
def gpu_bundle(gpu, tmp_path_factory) -> ModelBundle:
    """``$MELODYRT_BUNDLE`` or the packaged model when it has an FP16 file, else a test export."""
    try:
        bundle = load_bundle(os.environ.get("MELODYRT_BUNDLE"))
        if "fp16" in bundle.meta.get("onnx", {}):
            return bundle
    except ModelError:
        pass
    return _export_test_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def trt_gpu(gpu_bundle, tmp_path_factory):
    eng = trt_engine.TrtEngine(gpu_bundle, max_batch=8, cache_dir=tmp_path_factory.mktemp("trt-cache"))
    eng.warmup()
    return eng


@pytest.fixture(scope="module")
def features(gpu_bundle) -> np.ndarray:
    """(T, 4, 3, 360) normalised CFP frames of four sung tones (one stream each)."""
    from melodyrt.rt.cfp import cfp_from_signal
    from melodyrt.rt.synth import harmonic_tone

    sr = gpu_bundle.cfp.sample_rate
    streams = [cfp_from_signal(harmonic_tone(f0, 1.5, sr, rng=np.random.default_rng(i)),
                               gpu_bundle.cfp, gpu_bundle.norm, gpu_bundle.stats)
               for i, f0 in enumerate((196.0, 261.6, 392.0, 523.3))]
    t = min(len(s) for s in streams)
    return np.stack([s[:t] for s in streams], axis=1).astype(np.float32)


def _run(engine: Any, frames: np.ndarray, state: Any = None) -> np.ndarray:
    st = state if state is not None else engine.new_state(frames.shape[1])
    return np.stack([engine.step(f, st)[0].copy() for f in frames])


# FP16 weights and arithmetic against the FP32 ONNX reference, on softmax probabilities.
# (torch float16 on CPU vs ONNX Runtime FP32, untrained test model: max abs 2.6e-6 with a
# reference spread of ~2e-3; no trained FP16 model existed to measure when this was written.)
FP16_ATOL = 2e-2
ARGMAX_AGREEMENT = 0.97


def _tol(ref: np.ndarray) -> float:
    """FP16 tolerance; an untrained test model is nearly uniform (max ~0.004), so it is
    judged against its own spread."""
    return min(FP16_ATOL, 0.05 * float(np.ptp(ref)) + 1e-4)


def test_gpu_parity_with_onnxruntime(trt_gpu, gpu_bundle, features):
    from melodyrt.rt.engine import OrtEngine

    ref_precision = "fp32" if "fp32" in gpu_bundle.meta.get("onnx", {}) else "fp16"
    ort = OrtEngine(gpu_bundle, precision=ref_precision)
    ref, got = _run(ort, features), _run(trt_gpu, features)
    assert got.dtype == np.float32 and got.shape == ref.shape
    err = np.abs(got - ref)
    top2 = np.sort(ref, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 0.02  # frames with a meaningful winner
    agree = (got.argmax(-1) == ref.argmax(-1))[clear].mean() if clear.any() else 1.0
    print(f"TensorRT FP16 vs ONNX Runtime {ref_precision}: max abs {err.max():.2e}, mean abs {err.mean():.2e}, "
          f"argmax agreement {agree:.4f} on {clear.sum()} clear frames")
    assert err.max() <= _tol(ref)
    assert agree >= ARGMAX_AGREEMENT


def test_gpu_streams_are_isolated(trt_gpu, features):
    frames = features[:, [0, 1, 0]].copy()  # streams 0 and 2 hear the same voice
    out = _run(trt_gpu, frames)
    np.testing.assert_allclose(out[:, 0], out[:, 2], atol=1e-4)  # same input, same batch: same arithmetic
    alone = _run(trt_gpu, features[:, [0]])
    np.testing.assert_allclose(out[:, 0], alone[:, 0], atol=_tol(alone))
    assert not np.array_equal(out[:, 0], out[:, 1]), "different inputs must give different outputs"


def test_gpu_reset(trt_gpu, features):
    half = features.shape[0] // 2
    st = trt_gpu.new_state(2)
    _run(trt_gpu, features[:half, :2], st)
    trt_gpu.reset(st, streams=[1])
    after = _run(trt_gpu, features[half:, :2], st)
    fresh = _run(trt_gpu, features[half:, [1]])
    whole = _run(trt_gpu, features[:, [0]])
    tol = _tol(whole)
    np.testing.assert_allclose(after[:, 1], fresh[:, 0], atol=tol)  # stream 1 restarted
    np.testing.assert_allclose(after[:, 0], whole[half:, 0], atol=tol)  # stream 0 untouched
    trt_gpu.reset(st)
    again = _run(trt_gpu, features[half:, :2], st)
    np.testing.assert_allclose(again[:, 1], fresh[:, 0], atol=tol)


def test_gpu_cuda_graph_matches_plain_execution(gpu_bundle, trt_gpu, features):
    st = trt_gpu.new_state(4)
    assert st.graphed, "CUDA graph capture failed for this model (see the log for why)"
    plain = trt_engine.TrtEngine(gpu_bundle, max_batch=8, cuda_graphs=False, cache_dir=trt_gpu.cache_path.parent)
    assert plain.loaded_from_cache
    np.testing.assert_allclose(_run(trt_gpu, features, st), _run(plain, features), atol=1e-3)


def test_gpu_engine_cache_reuse(gpu_bundle, features, tmp_path):
    first = trt_engine.TrtEngine(gpu_bundle, max_batch=4, cache_dir=tmp_path)
    assert not first.loaded_from_cache and first.cache_path.is_file()
    second = trt_engine.TrtEngine(gpu_bundle, max_batch=4, cache_dir=tmp_path)
    assert second.loaded_from_cache
    np.testing.assert_allclose(_run(first, features[:20]), _run(second, features[:20]), atol=1e-6)
    first.cache_path.write_bytes(b"truncated")
    third = trt_engine.TrtEngine(gpu_bundle, max_batch=4, cache_dir=tmp_path)
    assert not third.loaded_from_cache
    assert third.cache_path.stat().st_size > 1000

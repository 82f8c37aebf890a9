"""The reference engine: the exported checkpoint's streaming step run by PyTorch.

Registered as the ``torch`` backend through the ``melodyrt.engines`` entry point, so
``melodyrt.rt`` can offer it without importing torch itself. The bundle's folder must hold
the ``checkpoint.pt`` it was exported from.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from melodyrt.rt.bundle import CARRY, ModelBundle
from melodyrt.rt.errors import ModelError
from melodyrt.rt.window_sums import WindowSums

from .streaming import StreamingStep
from .train import load_checkpoint, model_from_checkpoint


class TorchState:
    """Per-stream state of the step: carry tensors plus the windows the engine keeps."""

    def __init__(self, step: StreamingStep, n: int) -> None:
        self.n = n
        specs = step.state_specs()
        self.tensors = step.initial_state(n)
        self.windows = WindowSums(specs, n, np.float32)
        self._window_out = [i for i, s in enumerate(specs) if s.kind != CARRY]
        # step inputs of the window states share memory with WindowSums.sum_in
        for i, w in zip(self._window_out, self.windows.sum_in):
            self.tensors[i] = torch.from_numpy(w)


class TorchEngine:
    """PyTorch float32 reference backend (CPU, or CUDA when torch sees a GPU)."""

    name = "torch"

    def __init__(self, bundle: ModelBundle, threads: int = 1) -> None:
        path = bundle.root / "checkpoint.pt"
        if not path.exists():
            raise ModelError(f"torch backend needs {path} (written by `melodyrt export`)")
        model, _ = model_from_checkpoint(load_checkpoint(path))
        torch.set_num_threads(threads)
        self.bundle = bundle
        self.step_module = StreamingStep(model).eval()
        self.device = "cpu"
        self._own = self.new_state(1)

    def new_state(self, n_streams: int = 1) -> TorchState:
        return TorchState(self.step_module, n_streams)

    @torch.no_grad()
    def step(self, frames: NDArray, state: TorchState | None = None) -> tuple[NDArray, TorchState]:
        st = state if state is not None else self._own
        x = torch.from_numpy(np.ascontiguousarray(frames, np.float32))
        sal, *new = self.step_module(x, *st.tensors)
        st.windows.push([new[i].numpy() for i in st._window_out])
        for i in st._window_out:
            new[i] = st.tensors[i]  # the tensor that shares memory with WindowSums.sum_in
        st.tensors = new
        return sal.numpy(), st

    def reset(self, state: TorchState | None = None, streams: list[int] | None = None) -> None:
        st = state if state is not None else self._own
        for t in st.tensors:
            if streams is None:
                t.zero_()
            else:
                t[streams] = 0
        st.windows.zero(streams)

    def warmup(self) -> None:
        st = self.new_state(1)
        self.step(np.zeros((1, 3, 360), np.float32), st)


def create(bundle: ModelBundle, **kwargs) -> TorchEngine:
    """Entry-point factory for the ``torch`` backend."""
    return TorchEngine(bundle, **kwargs)

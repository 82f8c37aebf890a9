"""Frame-by-frame streaming step of a causal MF-TFA, and its ONNX export.

:class:`StreamingStep` wraps a causal network (BatchNorm folded, eval mode, aux heads
dropped) as a pure function of one CFP frame and explicit named state tensors::

    salience, *new_states = step(frame, *states)

States come in two kinds (:class:`melodyrt.rt.bundle.StateSpec`):

* ``carry``: the last ``k - 1`` input frames of one causal conv; the step returns the
  new value and takes it back on the next call;
* ``window_sum``: a TFA frequency-attention mean over the last W frames. The step takes
  the sum of the previous W-1 frames and returns the new frame; the caller keeps the
  window (:meth:`StreamingStep.run` here, :class:`melodyrt.rt.window_sums.WindowSums`
  in the engines).

Run from ``step.initial_state(batch)`` (zeros), the step reproduces the full causal
forward ``model(x)["main"][:, :, t]`` frame by frame (the zero state *is* the zero
padding).

ONNX export (:func:`export_step_onnx`) names the inputs ``frame`` and
``StateSpec.input_name`` (``state_in_<name>`` or ``window_sum_<name>``), the outputs
``salience`` and ``StateSpec.output_name`` (``state_out_<name>`` or
``window_frame_<name>``), in the order of :meth:`StreamingStep.state_specs`, and writes
a JSON metadata sidecar.
"""
from __future__ import annotations

import json
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from melodyrt.rt.bundle import CARRY, WINDOW_SUM, StateSpec

from .fold import fold_batchnorm, has_batchnorm
from .layers import CausalWindowMean, StreamCache, stateful_layers
from .network import MFTFA

__all__ = ["StreamingStep", "export_step_onnx", "ort_session", "STEP_SCHEMA_VERSION"]

#: Bump when the step's input/output layout changes (2: window-sum states).
STEP_SCHEMA_VERSION = 2


class StreamingStep(nn.Module):
    """One-frame step of a causal :class:`MFTFA` with explicit state.

    Parameters
    ----------
    model : MFTFA
        A causal network. It is copied; BatchNorm is folded (``fold=True``) and the
        training-only aux bottlenecks/heads are removed from the copy.
    fold : bool
        Fold BatchNorm into the convs (recommended for export and speed).

    Notes
    -----
    ``forward(frame, *states)``:

    * ``frame`` : Tensor [shape=(B, 3, 360)] [float32], one CFP frame;
    * ``states`` : one Tensor [shape=(B, *shape)] per entry of :meth:`state_specs`;
    * returns ``(salience, *new_states)``, ``salience`` [shape=(B, 361)]: the main
      output softmax for that frame (row 0 = unvoiced), the new states in the same
      order and shapes.

    The step describes frame ``t - delay_frames`` (see :attr:`delay_frames`).
    """

    def __init__(self, model: MFTFA, fold: bool = True) -> None:
        super().__init__()
        if not model.cfg.causal:
            raise ValueError(f"config {model.cfg.name!r} is not causal; cannot stream it")
        net = fold_batchnorm(model) if (fold and has_batchnorm(model)) else _copy_eval(model)
        net.aux = None  # training-only
        net.bottlenecks = nn.ModuleList()
        self.net = net.eval()
        self.cfg = model.cfg
        self._specs: list[StateSpec] = []
        for part in (net.stem, net.blocks, net.head):
            for m in stateful_layers(part):
                if isinstance(m, CausalWindowMean):
                    c, _, f = m.state_shape()
                    self._specs.append(StateSpec(m.state_name, (c, 1, f), WINDOW_SUM, m.window))
                else:
                    self._specs.append(StateSpec(m.state_name, m.state_shape(), CARRY))
        self.state_names: list[str] = [s.name for s in self._specs]

    # ------------------------------------------------------------------ metadata
    def state_specs(self) -> list[StateSpec]:
        """The states in step order.

        Names are the layer's module path with ``_`` (e.g. ``"stem_0_convs_0_conv"``,
        ``"blocks_1_msc_0_convs_0"``, ``"blocks_0_tfa_f_mean"``, ``"head_convs_0"``);
        shapes are time-major ``(channels, frames, n_freq)``, e.g. ``(3, 2, 360)`` for a
        conv with time kernel 3 on the CFP input, ``(16, 2, 1)`` for a time-attention
        conv, ``(16, 1, 360)`` for the window sum of a frequency-attention mean.
        """
        return list(self._specs)

    def initial_state(self, batch: int = 1, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> list[Tensor]:
        """Zero states ``[(batch, *shape), ...]`` = the zero padding of the full forward."""
        return [torch.zeros((batch, *s.shape), dtype=dtype, device=device) for s in self._specs]

    @property
    def delay_frames(self) -> int:
        """Output delay [frames] (``cfg.lookahead_frames``; the net itself is causal)."""
        return self.net.delay_frames

    @property
    def receptive_field_frames(self) -> int:
        """Past frames that influence one output frame."""
        return self.net.receptive_field_frames

    @property
    def state_numel(self) -> int:
        """Total state size per batch item [floats]."""
        n = 0
        for s in self._specs:
            k = s.window - 1 if s.kind == WINDOW_SUM else 1  # the frames the caller keeps
            for d in s.shape:
                k *= d
            n += k
        return n

    # ------------------------------------------------------------------ compute
    def forward(self, frame: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        """``(B, 3, 360), *states -> (B, 361), *new_states`` (see class notes)."""
        # (B, 3, F) -> (B, 3, 1, F): the time-major layout the layers use internally, so
        # no transpose op is exported.
        cache = StreamCache(dict(zip(self.state_names, states)), single_frame=True)
        logits = self.net.stream_frames(frame.unsqueeze(2), cache)  # (B, 1, F+1)
        return (torch.softmax(logits.squeeze(1), dim=1), *[cache.out[n] for n in self.state_names])

    @torch.no_grad()
    def run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Step through a sequence from the zero state, keeping the windows as an engine does.

        Parameters
        ----------
        x : Tensor [shape=(B, 3, 360, T)]

        Returns
        -------
        salience : Tensor [shape=(B, 361, T)]
        states : list of Tensor
            The step inputs for frame ``T`` (carries and window sums).
        """
        st = self.initial_state(x.shape[0], x.dtype, x.device)
        windows = {i: _TorchWindow(s, st[i]) for i, s in enumerate(self._specs) if s.kind == WINDOW_SUM}
        outs = []
        for t in range(x.shape[-1]):
            sal, *st = self(x[..., t], *st)
            for i, w in windows.items():
                st[i] = w.push(st[i])
            outs.append(sal)
        return torch.stack(outs, dim=-1), st


class _TorchWindow:
    """The last W-1 frames of one window state and their float64 sum (torch twin of
    :class:`melodyrt.rt.window_sums.WindowSums`)."""

    def __init__(self, spec: StateSpec, like: Tensor) -> None:
        zero = torch.zeros_like(like, dtype=torch.float64)
        self.frames = deque([zero] * (spec.window - 1))
        self.sum = zero.clone()
        self.dtype = like.dtype

    def push(self, frame: Tensor) -> Tensor:
        """Take the newest frame; return the next step's input (sum of the last W-1)."""
        new = frame.to(torch.float64)
        self.sum = self.sum + new - self.frames.popleft()
        self.frames.append(new)
        return self.sum.to(self.dtype)


def _copy_eval(model: MFTFA) -> MFTFA:
    import copy

    return copy.deepcopy(model).eval()


def export_step_onnx(step: StreamingStep, path: str | Path, *, opset: int = 17,
                     dynamic_batch: bool = True, metadata: Optional[Mapping[str, Any]] = None,
                     dtype: torch.dtype = torch.float32,
                     sidecar: bool = True) -> Path:
    """Export a :class:`StreamingStep` to ONNX (static shapes except the batch axis).

    Parameters
    ----------
    step : StreamingStep
    path : str or Path
        Output ``.onnx`` file.
    opset : int
        ONNX opset (17).
    dynamic_batch : bool
        Make axis 0 of every input/output symbolic (``"batch"``); otherwise batch 1.
    metadata : Mapping, optional
        Extra key/values (e.g. sample rate, hop) for the model metadata and the sidecar.
    dtype : torch.dtype
        Element type of the example inputs; pass ``torch.float16`` with a ``step.half()``
        to get a graph typed in FP16 end to end (I/O included), as strongly typed
        TensorRT networks expect.
    sidecar : bool
        Also write ``<path>.json`` with names, shapes, delay and the model config.

    Returns
    -------
    Path
        The written ``.onnx`` path.

    Notes
    -----
    Inputs ``frame`` (B, 3, 360) and one per state (``StateSpec.input_name``); outputs
    ``salience`` (B, 361) and one per state (``StateSpec.output_name``), all of ``dtype``. Uses the TorchScript exporter:
    the graph is a plain chain of Conv/Concat/Slice/Split/ReduceMean/Softmax and
    elementwise ops (Relu, Selu, Sigmoid, Mul, Add) with no data-dependent control
    flow.
    """
    path = Path(path)
    step = step.eval()
    frame = torch.zeros(1, step.cfg.in_channels, step.cfg.n_bins, dtype=dtype)
    states = step.initial_state(1, dtype=dtype)
    specs = step.state_specs()
    in_names = ["frame"] + [s.input_name for s in specs]
    out_names = ["salience"] + [s.output_name for s in specs]
    dyn = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(step, (frame, *states), str(path), dynamo=False,
                          opset_version=opset, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn,
                          do_constant_folding=True)
    meta: dict[str, Any] = {
        "schema_version": STEP_SCHEMA_VERSION,
        "model_name": step.cfg.name,
        "n_bins": step.cfg.n_bins,
        "n_classes": step.cfg.n_classes,
        "delay_frames": step.delay_frames,
        "receptive_field_frames": step.receptive_field_frames,
        "inputs": [{"name": "frame", "shape": ["batch", step.cfg.in_channels, step.cfg.n_bins]}]
        + [{"name": s.input_name, "shape": ["batch", *s.shape]} for s in specs],
        "outputs": [{"name": "salience", "shape": ["batch", step.cfg.n_classes]}]
        + [{"name": s.output_name, "shape": ["batch", *s.shape]} for s in specs],
        "states": [s.to_meta() for s in specs],
        "config": step.cfg.to_dict(),
    }
    if metadata:
        meta.update(dict(metadata))
    import onnx

    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, json.dumps(v)
    onnx.save(m, str(path))
    if sidecar:
        path.with_suffix(path.suffix + ".json").write_text(json.dumps(meta, indent=2))
    return path


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session set up as the real-time engine uses it.

    ``intra_op_num_threads = inter_op_num_threads = threads``, sequential execution,
    all graph optimisations.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover
        raise ImportError("onnxruntime is required: pip install onnxruntime") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])

"""Frame-by-frame streaming step of a causal MF-TFA, and its ONNX export.

:class:`StreamingStep` wraps a causal network (BatchNorm folded, eval mode, aux heads
dropped) as a pure function of one CFP frame and explicit named state tensors::

    salience, *new_states = step(frame, *states)

Each state is the last ``k - 1`` input frames of one causal layer (or the last
``W - 1`` frames of a TFA frequency-attention running mean). Run from
``step.initial_state(batch)`` (zeros), the step reproduces the full causal forward
``model(x)["main"][:, :, t]`` frame by frame (the zero state *is* the zero padding).

ONNX export (:func:`export_step_onnx`) names the inputs ``frame``,
``state_in_<name>`` and the outputs ``salience``, ``state_out_<name>``, in the order of
:meth:`StreamingStep.state_specs`, and writes a JSON metadata sidecar.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .fold import fold_batchnorm, has_batchnorm
from .layers import StreamCache
from .network import MFTFA

__all__ = ["StreamingStep", "export_step_onnx", "ort_session", "STEP_SCHEMA_VERSION"]

#: Bump when the step's input/output layout changes.
STEP_SCHEMA_VERSION = 1


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
        self._specs: list[tuple[str, tuple[int, ...]]] = net.stream_state_specs()
        self.state_names: list[str] = [n for n, _ in self._specs]

    # ------------------------------------------------------------------ metadata
    def state_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """Ordered ``(name, shape without batch)``.

        Names are the layer's module path with ``_`` (e.g. ``"stem_0_convs_0_conv"``,
        ``"blocks_1_msc_0_convs_0"``, ``"blocks_0_tfa_f_mean"``, ``"head_convs_0"``);
        shapes are time-major ``(channels, frames kept, n_freq)``, e.g. ``(3, 2, 360)``
        for a conv with time kernel 3 on the CFP input, ``(16, 11, 360)`` for a W = 12
        frequency-attention mean, ``(16, 2, 1)`` for a time-attention conv.
        """
        return list(self._specs)

    def initial_state(self, batch: int = 1, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> list[Tensor]:
        """Zero states ``[(batch, *shape), ...]`` = the zero padding of the full forward."""
        return [torch.zeros((batch, *s), dtype=dtype, device=device) for _, s in self._specs]

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
        for _, s in self._specs:
            k = 1
            for d in s:
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
    def run(self, x: Tensor, states: Optional[Sequence[Tensor]] = None
            ) -> tuple[Tensor, list[Tensor]]:
        """Convenience: step through a sequence ``x`` (B, 3, 360, T) -> (B, 361, T)."""
        st = list(states) if states is not None else self.initial_state(x.shape[0], x.dtype, x.device)
        outs = []
        for t in range(x.shape[-1]):
            sal, *st = self(x[..., t], *st)
            outs.append(sal)
        return torch.stack(outs, dim=-1), st


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
    Inputs ``frame`` (B, 3, 360) and ``state_in_<name>``; outputs ``salience``
    (B, 361) and ``state_out_<name>``, all of ``dtype``. Uses the TorchScript exporter:
    the graph is a plain chain of Conv/Concat/Slice/Split/ReduceMean/Softmax and
    elementwise ops (Relu, Selu, Sigmoid, Mul, Add) with no data-dependent control
    flow.
    """
    path = Path(path)
    step = step.eval()
    frame = torch.zeros(1, step.cfg.in_channels, step.cfg.n_bins, dtype=dtype)
    states = step.initial_state(1, dtype=dtype)
    in_names = ["frame"] + [f"state_in_{n}" for n in step.state_names]
    out_names = ["salience"] + [f"state_out_{n}" for n in step.state_names]
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
        + [{"name": f"state_in_{n}", "shape": ["batch", *s]} for n, s in step.state_specs()],
        "outputs": [{"name": "salience", "shape": ["batch", step.cfg.n_classes]}]
        + [{"name": f"state_out_{n}", "shape": ["batch", *s]} for n, s in step.state_specs()],
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

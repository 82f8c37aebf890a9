"""MF-TFA singing-melody network (Hu et al., ICASSP 2025), reference and causal variants.

The ``paper`` config reproduces the public reference (1,162,972 trainable parameters
with the two auxiliary heads, 642,410 without). ``causal: true`` configs pad time on the
left only, make the TFA attentions causal and replace the segment-wide frequency
attention by a running mean over the last W frames; such a model runs frame by frame
through :class:`melodyrt.model.streaming.StreamingStep` with exactly the same output.

Look-ahead: the network itself never looks ahead. ``cfg.lookahead_frames`` is realised
by the training code, which shifts targets so that the output at frame t is trained on
the label of frame ``t - lookahead_frames``; :attr:`MFTFA.delay_frames` reports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig, load_model_config
from .layers import (
    Bottleneck,
    MainHead,
    MFTFAModule,
    Stateful,
    StemBlock,
    StreamCache,
    VoicingBranch,
    stateful_layers,
)

__all__ = ["MFTFA", "build_model", "count_parameters", "OUTPUT_KEYS"]

#: Keys of the dict returned by :meth:`MFTFA.forward`.
OUTPUT_KEYS: tuple[str, ...] = (
    "main", "aux1", "aux2", "feat1", "feat2", "feat3",
    "main_logits", "aux1_logits", "aux2_logits",
)


class MFTFA(nn.Module):
    """MF-TFA network built from a :class:`ModelConfig`.

    Parameters
    ----------
    cfg : ModelConfig
        Architecture; kept as ``self.cfg`` (and ``to_dict()``-able into checkpoints).

    Notes
    -----
    Data flow (``F = cfg.n_bins = 360``, ``C = cfg.channels``)::

        x (B,3,F,T) ─► stem blocks ─► MF-TFA x n_modules ─► main head ─► sal (B,1,F,T)
                 │                 ├─ after module taps[0] = h1 ─► bottleneck ─► aux1, feat1
                 │                 └─ after module taps[1] = h2 ─► bottleneck ─► aux2, feat2
                 └─► input BN ─► voicing convs ─► bm (B,1,1,T)
        main = softmax_rows(cat[bm, sal])  (B, F+1, T)

    Internally tensors are time-major ``(B, C, T, F)`` (see :mod:`.layers`): the input
    is transposed once and the outputs back, so the public shapes are the reference's.
    Conv weights are therefore stored ``(out, in, time, freq)``; weights of the original
    code base would need ``weight.transpose(2, 3)`` (there are no released weights).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, nf, causal = cfg.channels, cfg.n_bins, cfg.causal

        self.voicing = VoicingBranch(cfg.in_channels, cfg.bm_channels, cfg.bm_strides,
                                     bn_momentum=cfg.bn_momentum)
        stem = []
        cin = cfg.in_channels
        for cout in cfg.stem_channels:
            stem.append(StemBlock(cin, cout, cfg.stem_kernels, causal=causal, n_freq=nf,
                                  bn_eps=cfg.stem_bn_eps, bn_momentum=cfg.stem_bn_momentum))
            cin = cout
        self.stem = nn.ModuleList(stem)
        self.blocks = nn.ModuleList([
            MFTFAModule(c, cfg.mid_channels, cfg.groups, cfg.msc_kernels, cfg.tfa_kernels,
                        cfg.attn_kernel, causal=causal, n_freq=nf,
                        freq_window=cfg.freq_window, bn_momentum=cfg.bn_momentum)
            for _ in range(cfg.n_modules)
        ])
        # Bottlenecks always exist: their 1-channel maps feed self-distillation even when
        # the aux classifiers are disabled.
        self.bottlenecks = nn.ModuleList([
            Bottleneck(c, cfg.bottleneck_hidden, cfg.bottleneck_out, cfg.bottleneck_kernel,
                       causal=causal, n_freq=nf, bn_momentum=cfg.bn_momentum)
            for _ in cfg.taps
        ])
        self.aux: Optional[nn.ModuleList] = (
            nn.ModuleList([nn.Linear(cfg.aux_features, cfg.n_classes) for _ in cfg.taps])
            if cfg.aux_heads else None
        )
        self.head = MainHead(c, cfg.head_channels, cfg.head_kernels, causal=causal, n_freq=nf)

        # Stable, readable state names derived from module paths ("blocks_0_msc_1_convs_2").
        for name, m in self.named_modules():
            if isinstance(m, Stateful):
                m.state_name = name.replace(".", "_")

    # ------------------------------------------------------------------ properties
    @property
    def delay_frames(self) -> int:
        """Output delay [frames] = ``cfg.lookahead_frames``.

        The network is strictly causal; a non-zero delay comes only from the training
        code shifting targets, so the prediction at frame t describes frame ``t - delay``.
        """
        return self.cfg.lookahead_frames

    @property
    def receptive_field_frames(self) -> int:
        """Past frames [frames] that can influence the main output at frame t.

        Longest path: stem, every module's deepest Res2Net chain plus the longer of its
        TFA branches (feature convs, time attention, W-frame frequency mean), head. For a
        non-causal model this is the past half of the conv receptive field only; its TFA
        frequency attention additionally sees the whole segment.
        """
        return (sum(s.past_frames for s in self.stem)
                + sum(b.past_frames for b in self.blocks)
                + self.head.past_frames)

    # ------------------------------------------------------------------ forward
    def _trunk(self, x: Tensor, cache: Optional[StreamCache]) -> tuple[list[Tensor], Tensor]:
        """Stem + modules on time-major ``x`` (B, 3, T, F); returns ``([h1, h2], h3)``,
        each (B, C, T, F)."""
        for s in self.stem:
            x = s(x, cache)
            x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        taps: list[Tensor] = []
        for i, b in enumerate(self.blocks, start=1):
            x = b(x, cache)
            if i in self.cfg.taps:
                taps.append(x)
        return taps, x

    def forward(self, x: Tensor) -> dict[str, Optional[Tensor]]:
        """Full-sequence forward.

        Parameters
        ----------
        x : Tensor [shape=(B, 3, 360, T)] [float32]
            CFP input.

        Returns
        -------
        dict
            ``"main"`` (B, 361, T): softmax over rows, row 0 = unvoiced ("bm"), rows
            1..360 = pitch bins. ``"aux1"``, ``"aux2"`` (B, 361, T): softmax of the aux
            classifiers on h1/h2 (None without aux heads). ``"feat1"``, ``"feat2"``,
            ``"feat3"`` (B, 1, 360, T): the 1-channel maps for self-distillation (feat3 =
            deepest, from the main head, = rows 1..360 of ``main_logits``).
            ``"main_logits"``, ``"aux1_logits"``, ``"aux2_logits"``: the same before the
            softmax (for log-softmax based losses).
        """
        x = x.transpose(2, 3).contiguous()  # (B, 3, T, F): time-major internal layout
        bm = self.voicing(x)  # (B, 1, T, 1)
        taps, h3 = self._trunk(x, None)
        sal = self.head(h3)  # (B, 1, T, F)
        main_logits = torch.cat([bm, sal], dim=3).squeeze(1).transpose(1, 2)  # (B, F+1, T)

        out: dict[str, Optional[Tensor]] = {
            "main": torch.softmax(main_logits, dim=1),
            "main_logits": main_logits,
            "feat3": sal.transpose(2, 3),  # (B, 1, F, T)
        }
        for j, (h, bott) in enumerate(zip(taps, self.bottlenecks), start=1):
            middle, feat = bott(h)  # (B, o, T, F), (B, 1, T, F)
            out[f"feat{j}"] = feat.transpose(2, 3)
            if self.aux is not None:
                b, ch, t, nf = middle.shape
                # Per frame, flatten channel-major (c * F + f), as the reference does.
                flat = middle.transpose(1, 2).reshape(b, t, ch * nf)
                logits = self.aux[j - 1](flat).transpose(1, 2)  # (B, F+1, T)
                out[f"aux{j}_logits"] = logits
                out[f"aux{j}"] = torch.softmax(logits, dim=1)
            else:
                out[f"aux{j}_logits"] = None
                out[f"aux{j}"] = None
        return {k: out[k] for k in OUTPUT_KEYS}

    def forward_stream(self, x: Tensor, states: Mapping[str, Tensor]
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Main output for a chunk of new frames, from explicit past state.

        Parameters
        ----------
        x : Tensor [shape=(B, 3, 360, n)]
            The n newest CFP frames (n = 1 in the streaming step).
        states : Mapping[str, Tensor]
            One tensor per name of :meth:`stream_state_specs`, shape ``(B, *shape)``.

        Returns
        -------
        main : Tensor [shape=(B, 361, n)]
            Softmax over rows, as ``forward(x)["main"]``.
        new_states : dict[str, Tensor]
            Same names and shapes as ``states``.
        """
        if not self.cfg.causal:
            raise RuntimeError("forward_stream needs a causal config")
        cache = StreamCache(states)
        logits = self.stream_frames(x.transpose(2, 3), cache)  # (B, n, F+1)
        return torch.softmax(logits, dim=2).transpose(1, 2), cache.out

    def stream_frames(self, x: Tensor, cache: StreamCache) -> Tensor:
        """Main logits of new frames, time-major, reading/writing ``cache``.

        Parameters
        ----------
        x : Tensor [shape=(B, 3, n, 360)]
            New CFP frames, *time-major* (the internal layout).
        cache : StreamCache
            Incoming states in ``cache.inp``; new states are written to ``cache.out``.

        Returns
        -------
        Tensor [shape=(B, n, 361)]
            Main logits (row 0 = unvoiced), softmax not applied.
        """
        bm = self.voicing(x)  # (B, 1, n, 1)
        for s in self.stem:
            x = s(x, cache)
        for b in self.blocks:
            x = b(x, cache)
        sal = self.head(x, cache)  # (B, 1, n, F)
        return torch.cat([bm, sal], dim=3).squeeze(1)

    def stream_state_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """Ordered ``(name, shape without batch)`` of every state of the main path.

        Aux bottlenecks/heads are training-only and carry no state.
        """
        specs = []
        for part in (self.stem, self.blocks, self.head):
            for m in stateful_layers(part):
                specs.append((m.state_name, m.state_shape()))
        return specs

    def param_count(self, include_aux: bool = True) -> int:
        """Trainable parameters, optionally without the aux Linear heads."""
        return count_parameters(self, include_aux=include_aux)


def count_parameters(model: MFTFA, include_aux: bool = True) -> int:
    """Number of trainable parameters of ``model``.

    Parameters
    ----------
    model : MFTFA
    include_aux : bool
        Count the auxiliary Linear heads (training-only).
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not include_aux and model.aux is not None:
        n -= sum(p.numel() for p in model.aux.parameters() if p.requires_grad)
    return n


def build_model(cfg: ModelConfig | str | Path) -> MFTFA:
    """Build an :class:`MFTFA` from a config or a config name/path ("paper", "rt", ...)."""
    if not isinstance(cfg, ModelConfig):
        cfg = load_model_config(cfg)
    return MFTFA(cfg)

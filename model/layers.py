"""Building blocks of MF-TFA, each usable over a whole sequence or one streamed frame.

Every layer that looks into the past along time is a :class:`Stateful` layer. It runs in
two modes with the same arithmetic (up to float rounding), which is what makes the
streaming step equal to the full causal forward:

* full-sequence mode (``cache is None``): the time axis is zero-padded ('same' for the
  non-causal reference, left-only for causal configs);
* streaming mode (``cache`` is a :class:`StreamCache`): the left padding is replaced by
  the last ``k - 1`` input frames kept in an explicit state tensor; the layer reads
  ``cache.inp[state_name]`` and writes ``cache.out[state_name]``.

A zero initial state therefore reproduces the zero padding of the full forward.

Internal layout is *time-major*: ``(batch, channels, time, freq)``, so that one frame is a
contiguous run of 360 floats per channel and the per-frame state shift (concat / slice
along time) copies whole rows; this made the ONNX step about 3x faster than the
``(.., freq, time)`` layout of the reference. :class:`~.network.MFTFA` transposes its
``(B, 3, 360, T)`` input once and its outputs back. Config kernels are written
``(freq, time)`` as in the paper; conv weights are stored ``(out, in, time, freq)``.
Frequency padding is always 'same' (zeros beyond the 360 rows), which needs no look-ahead.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "StreamCache",
    "Stateful",
    "TimeConv2d",
    "CausalWindowMean",
    "ConvNorm",
    "StemBlock",
    "MSC",
    "TFA",
    "MFTFAModule",
    "Bottleneck",
    "MainHead",
    "VoicingBranch",
    "stateful_layers",
]


class StreamCache:
    """Carrier of explicit streaming state through one forward call.

    Parameters
    ----------
    states : Mapping[str, Tensor]
        Incoming state per layer name (``Stateful.state_name``).
    single_frame : bool
        The input holds exactly one new frame.

    Attributes
    ----------
    inp : dict[str, Tensor]
        The states read by layers.
    out : dict[str, Tensor]
        The new states written by layers during the call.
    """

    def __init__(self, states: Mapping[str, Tensor], single_frame: bool = False) -> None:
        self.inp: dict[str, Tensor] = dict(states)
        self.out: dict[str, Tensor] = {}
        #: True when every call carries exactly one new frame (the streaming step); lets
        #: layers pick the cheapest exported op without a shape test in the trace.
        self.single_frame = single_frame


class Stateful(nn.Module):
    """Mixin for layers that keep past frames in streaming mode.

    Subclasses set ``self.state_len`` (frames kept), ``self.state_channels`` and
    ``self.n_freq`` so that :meth:`state_shape` is known without running the layer.
    ``state_name`` is assigned by the owning network (its module path with ``_``).
    """

    state_name: str = ""
    state_len: int = 0
    state_channels: int = 0
    n_freq: int = 0

    @property
    def has_state(self) -> bool:
        """True when the layer needs past frames (time kernel > 1 in causal mode)."""
        return self.state_len > 0

    def state_shape(self) -> tuple[int, int, int]:
        """Shape of the state without batch: ``(channels, state_len, n_freq)``."""
        return (self.state_channels, self.state_len, self.n_freq)

    def _window(self, x: Tensor, cache: Optional[StreamCache], pad_left: int,
                pad_right: int) -> Tensor:
        """Prepend the past: zeros (full mode) or the cached frames (streaming mode).

        Also stores the new state (the last ``state_len`` frames of the window).
        """
        if cache is None:
            if pad_left or pad_right:
                x = F.pad(x, (0, 0, pad_left, pad_right))  # time is dim 2
            return x
        if not self.causal:  # type: ignore[attr-defined]
            raise RuntimeError("streaming needs a causal model")
        if self.state_len == 0:
            return x
        x = torch.cat([cache.inp[self.state_name], x], dim=2)
        # Negative slice: works for one frame or a chunk of frames alike.
        cache.out[self.state_name] = x[:, :, -self.state_len:]
        return x


class TimeConv2d(Stateful):
    """2-D conv over (freq, time) with 'same' freq padding and causal or 'same' time padding.

    Parameters
    ----------
    in_ch, out_ch : int
        Channels.
    kernel : (int, int)
        (freq, time) kernel; both odd.
    causal : bool
        Pad time on the left only (``kt - 1`` frames) instead of ``(kt-1)/2`` each side.
    n_freq : int
        Frequency rows of the input (360, or 1 for the time-attention convs); only used
        for the state shape.
    bias : bool
        Conv bias.

    Notes
    -----
    Input ``(B, in_ch, T, n_freq)`` -> output ``(B, out_ch, T, n_freq)``.
    Past receptive field: ``kt - 1`` frames (causal) or ``(kt - 1) // 2``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], *, causal: bool,
                 n_freq: int, bias: bool = True) -> None:
        super().__init__()
        kf, kt = kernel
        self.kernel = (kf, kt)
        self.causal = causal
        # Frequency padding lives in the conv itself (one ONNX op); time padding is done
        # by _window so that it can be swapped for cached frames.
        self.conv = nn.Conv2d(in_ch, out_ch, (kt, kf), padding=(0, (kf - 1) // 2), bias=bias)
        self.pad = (kt - 1, 0) if causal else ((kt - 1) // 2, (kt - 1) // 2)
        self.state_len = kt - 1 if causal else 0
        self.state_channels = in_ch
        self.n_freq = n_freq

    @property
    def past_frames(self) -> int:
        """Past frames seen by one output frame."""
        return self.pad[0]

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        """``(B, in_ch, T, F) -> (B, out_ch, T, F)`` (T may be 1 in streaming mode)."""
        return self.conv(self._window(x, cache, *self.pad))


class CausalWindowMean(Stateful):
    """Running mean over the last ``window`` frames (causal TFA frequency attention).

    ``y[..., t] = (1 / W) * sum_{s = t-W+1}^{t} x[..., s]`` with ``x[..., s] = 0`` for
    ``s < 0``. In the one-frame streaming step (``cache.single_frame``) the state is the
    sum of the previous W-1 frames, of shape ``(B, C, 1, F)``, and the layer writes its
    input frame as the new state; whoever runs the step keeps the window (see
    :class:`melodyrt.model.streaming.StreamingStep`). Chunked streaming keeps the W-1
    frames themselves, like the convs. Dividing by W even during the first W-1 frames
    (rather than by the number of available frames) keeps the layer a plain zero-padded
    filter, exactly as the convs treat the start of a sequence, so a zero initial state
    in the streaming step reproduces it without a frame counter.

    Parameters
    ----------
    channels : int
    n_freq : int
    window : int
        W [frames].
    """

    causal = True

    def __init__(self, channels: int, n_freq: int, window: int) -> None:
        super().__init__()
        self.window = int(window)
        self.state_len = self.window - 1
        self.state_channels = channels
        self.n_freq = n_freq

    @property
    def past_frames(self) -> int:
        return self.window - 1

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        """``(B, C, T, F) -> (B, C, T, F)``."""
        if self.window == 1:
            return x
        if cache is not None and cache.single_frame:
            # One streamed frame: the state is the *sum* of the previous W-1 frames, kept
            # by the engine (melodyrt.rt.window_sums), and the new frame is handed back.
            # Carrying the frames themselves through the step cost a concat and a slice
            # of (C, W-1, F) per step; without them the rt model steps 14 % faster.
            cache.out[self.state_name] = x
            return (cache.inp[self.state_name] + x) * (1.0 / self.window)
        x = self._window(x, cache, self.window - 1, 0)
        # Sequences: a depthwise conv with a constant 1/W kernel; ~6x faster than
        # avg_pool2d((W, 1)) forward + backward on CPU, same sums up to rounding.
        c = x.shape[1]
        kernel = x.new_full((c, 1, self.window, 1), 1.0 / self.window)
        return F.conv2d(x, kernel, groups=c)


class ConvNorm(nn.Module):
    """TimeConv2d -> optional BatchNorm -> optional activation.

    The conv/BN pair is what :func:`melodyrt.model.fold.fold_batchnorm` merges.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], *, causal: bool,
                 n_freq: int, bias: bool, bn: bool, act: Optional[nn.Module],
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = TimeConv2d(in_ch, out_ch, kernel, causal=causal, n_freq=n_freq, bias=bias)
        self.bn: nn.Module = (
            nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum) if bn else nn.Identity()
        )
        self.act: nn.Module = act if act is not None else nn.Identity()

    @property
    def past_frames(self) -> int:
        return self.conv.past_frames

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        return self.act(self.bn(self.conv(x, cache)))


class StemBlock(nn.Module):
    """Stem conv block: conv(k0)+BN+ReLU, conv(k1)+BN+ReLU; bias-free, Xavier init.

    ``(B, in_ch, T, F) -> (B, out_ch, T, F)``; no pooling (full resolution).
    """

    def __init__(self, in_ch: int, out_ch: int, kernels: Sequence[tuple[int, int]], *,
                 causal: bool, n_freq: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        layers = []
        c = in_ch
        for k in kernels:
            layers.append(ConvNorm(c, out_ch, k, causal=causal, n_freq=n_freq, bias=False,
                                   bn=True, act=nn.ReLU(), bn_eps=bn_eps,
                                   bn_momentum=bn_momentum))
            c = out_ch
        self.convs = nn.ModuleList(layers)
        for layer in self.convs:  # the reference Xavier-initialises only the stem convs
            nn.init.xavier_uniform_(layer.conv.conv.weight)

    @property
    def past_frames(self) -> int:
        return sum(c.past_frames for c in self.convs)

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        for c in self.convs:
            x = c(x, cache)
        return x


class MSC(nn.Module):
    """Multi-scale conv: a chain of convs (+bias, ReLU), concat of all outputs, 1x1 + ReLU.

    ``(B, C, T, F) -> (B, C, T, F)``; paper kernels 3, 5, 7 with C = 16.
    """

    def __init__(self, ch: int, kernels: Sequence[tuple[int, int]], *, causal: bool,
                 n_freq: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [TimeConv2d(ch, ch, k, causal=causal, n_freq=n_freq) for k in kernels]
        )
        self.fuse = nn.Conv2d(ch * len(kernels), ch, 1)

    @property
    def past_frames(self) -> int:
        return sum(c.past_frames for c in self.convs)

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        outs = []
        for c in self.convs:
            x = F.relu(c(x, cache))
            outs.append(x)
        return F.relu(self.fuse(torch.cat(outs, dim=1)))


class TFA(nn.Module):
    """Time-frequency attention block.

    Feature branch: chain of convs + ReLU. Time attention: mean of the block *input*
    over frequency -> conv1d(k) + ReLU -> conv1d(k) + Sigmoid, one weight per (C, t),
    broadcast over frequency. Frequency attention: mean of the input over time -> the
    same kind of conv1d pair along frequency, one weight per (C, f). Output:
    ``relu(conv1x1(cat[time-attended, freq-attended, feature]))``.

    Causal variant: the time-attention conv1d's are causal along time; the frequency
    attention uses a :class:`CausalWindowMean` over the last ``freq_window`` frames in
    place of the segment mean, so it yields one weight per (C, f, t).

    The 1-D convs are stored as ``Conv2d`` (time-major weights ``(k, 1)`` for time and
    ``(1, k)`` for frequency): same parameters as ``Conv1d`` and one code path for
    both modes.

    ``(B, C, T, F) -> (B, C, T, F)``.
    """

    def __init__(self, ch: int, kernels: Sequence[tuple[int, int]], attn_kernel: int, *,
                 causal: bool, n_freq: int, freq_window: int) -> None:
        super().__init__()
        self.causal = causal
        self.feat = nn.ModuleList(
            [TimeConv2d(ch, ch, k, causal=causal, n_freq=n_freq) for k in kernels]
        )
        ka = attn_kernel
        # time attention: operates on (B, C, T, 1); kernel (freq 1, time ka)
        self.t_att1 = TimeConv2d(ch, ch, (1, ka), causal=causal, n_freq=1)
        self.t_att2 = TimeConv2d(ch, ch, (1, ka), causal=causal, n_freq=1)
        # frequency attention: operates on (B, C, 1, F) [non-causal] or (B, C, T, F)
        self.f_att1 = nn.Conv2d(ch, ch, (1, ka), padding=(0, (ka - 1) // 2))
        self.f_att2 = nn.Conv2d(ch, ch, (1, ka), padding=(0, (ka - 1) // 2))
        self.f_mean: Optional[CausalWindowMean] = (
            CausalWindowMean(ch, n_freq, freq_window) if causal else None
        )
        self.fuse = nn.Conv2d(3 * ch, ch, 1)

    @property
    def past_frames(self) -> int:
        feat = sum(c.past_frames for c in self.feat)
        t_att = self.t_att1.past_frames + self.t_att2.past_frames
        # Non-causal: the frequency attention sees the whole segment; not counted here.
        f_att = self.f_mean.past_frames if self.f_mean is not None else 0
        return max(feat, t_att, f_att)

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        feature = x
        for c in self.feat:
            feature = F.relu(c(feature, cache))

        xt = x.mean(dim=3, keepdim=True)  # (B, C, T, 1): mean over frequency
        at = torch.sigmoid(self.t_att2(F.relu(self.t_att1(xt, cache)), cache))

        if self.f_mean is None:
            xf = x.mean(dim=2, keepdim=True)  # (B, C, 1, F): whole segment
        else:
            xf = self.f_mean(x, cache)  # (B, C, T, F): last W frames
        af = torch.sigmoid(self.f_att2(F.relu(self.f_att1(xf))))

        out = torch.cat([feature * at, feature * af, feature], dim=1)
        return F.relu(self.fuse(out))


class MFTFAModule(nn.Module):
    """One MF-TFA(C, M) module (Res2Net-like multi-scale + TFA, residual).

    1x1 C->M + BN + ReLU; split into ``groups`` groups of ``g = M/groups`` channels;
    ``y1 = MSC(x1)``, ``y_i = MSC(x_i + y_{i-1})``, last group passed through; concat,
    1x1 M->C + BN; TFA; ``relu(input + .)``.

    ``(B, C, T, F) -> (B, C, T, F)``.
    """

    def __init__(self, ch: int, mid: int, groups: int, msc_kernels: Sequence[tuple[int, int]],
                 tfa_kernels: Sequence[tuple[int, int]], attn_kernel: int, *, causal: bool,
                 n_freq: int, freq_window: int, bn_momentum: float) -> None:
        super().__init__()
        self.groups = groups
        self.group_ch = g = mid // groups
        self.expand = ConvNorm(ch, mid, (1, 1), causal=causal, n_freq=n_freq, bias=False,
                               bn=True, act=nn.ReLU(), bn_momentum=bn_momentum)
        self.msc = nn.ModuleList(
            [MSC(g, msc_kernels, causal=causal, n_freq=n_freq) for _ in range(groups - 1)]
        )
        self.reduce = ConvNorm(mid, ch, (1, 1), causal=causal, n_freq=n_freq, bias=False,
                               bn=True, act=None, bn_momentum=bn_momentum)
        self.tfa = TFA(ch, tfa_kernels, attn_kernel, causal=causal, n_freq=n_freq,
                       freq_window=freq_window)

    @property
    def past_frames(self) -> int:
        # The deepest Res2Net path goes through every MSC in sequence.
        return sum(m.past_frames for m in self.msc) + self.tfa.past_frames

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        res = x
        y = self.expand(x, cache)
        g = self.group_ch
        # Static channel slices rather than torch.chunk: exports as constant Slices
        # instead of Shape/Gather/Div arithmetic.
        spx = [y[:, i * g:(i + 1) * g] for i in range(self.groups)]
        ys = []
        sp = spx[0]
        for i, m in enumerate(self.msc):
            sp = m(sp if i == 0 else sp + spx[i], cache)
            ys.append(sp)
        ys.append(spx[-1])
        out = self.tfa(self.reduce(torch.cat(ys, dim=1), cache), cache)
        return F.relu(res + out)


class Bottleneck(nn.Module):
    """Aux-tap bottleneck: 1x1 C->m, k m->m, 1x1 m->o (each conv+bias, BN, ReLU).

    Returns ``(middle, feat)``: ``middle`` (B, o, T, F) feeds the aux classifier,
    ``feat`` = relu(conv1x1 o->1) (B, 1, T, F) is the level's distillation map.
    Training-only; never part of the streaming step.
    """

    def __init__(self, ch: int, mid: int, out: int, kernel: tuple[int, int], *, causal: bool,
                 n_freq: int, bn_momentum: float) -> None:
        super().__init__()
        def block(i: int, o: int, k: tuple[int, int]) -> ConvNorm:
            return ConvNorm(i, o, k, causal=causal, n_freq=n_freq, bias=True, bn=True,
                            act=nn.ReLU(), bn_momentum=bn_momentum)

        self.c1 = block(ch, mid, (1, 1))
        self.c2 = block(mid, mid, kernel)
        self.c3 = block(mid, out, (1, 1))
        self.to_feat = nn.Conv2d(out, 1, 1)

    @property
    def past_frames(self) -> int:
        return self.c2.past_frames

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.c3(self.c2(self.c1(x)))
        return m, F.relu(self.to_feat(m))


class MainHead(nn.Module):
    """Main head on h3: conv k0 C->h + SELU, conv k1 h->1 + SELU -> (B, 1, T, F) salience.

    Its output is both the pitch rows of the main prediction and the deepest feature
    map (teacher of self-distillation).
    """

    def __init__(self, ch: int, hidden: int, kernels: Sequence[tuple[int, int]], *,
                 causal: bool, n_freq: int) -> None:
        super().__init__()
        chans = [ch] + [hidden] * (len(kernels) - 1) + [1]
        self.convs = nn.ModuleList(
            [TimeConv2d(chans[i], chans[i + 1], k, causal=causal, n_freq=n_freq)
             for i, k in enumerate(kernels)]
        )

    @property
    def past_frames(self) -> int:
        return sum(c.past_frames for c in self.convs)

    def forward(self, x: Tensor, cache: Optional[StreamCache] = None) -> Tensor:
        for c in self.convs:
            x = F.selu(c(x, cache))
        return x


class VoicingBranch(nn.Module):
    """The "bm" row: BN on the raw input, then convs with kernel = stride along frequency.

    ``(B, 3, T, F) -> (B, 1, T, 1)``: 360 rows collapse by 4*3*6*5 into one per frame,
    so the branch is frame-local (no state).
    """

    def __init__(self, in_ch: int, hidden: int, strides: Sequence[int], *,
                 bn_momentum: float) -> None:
        super().__init__()
        self.input_bn: nn.Module = nn.BatchNorm2d(in_ch, momentum=bn_momentum)
        chans = [in_ch] + [hidden] * (len(strides) - 1) + [1]
        self.convs = nn.ModuleList(
            [nn.Conv2d(chans[i], chans[i + 1], (1, s), stride=(1, s))
             for i, s in enumerate(strides)]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_bn(x)
        for c in self.convs:
            x = F.selu(c(x))
        return x


def stateful_layers(module: nn.Module) -> Iterator[Stateful]:
    """All :class:`Stateful` sub-layers with a non-empty state, in module order."""
    for m in module.modules():
        if isinstance(m, Stateful) and m.has_state:
            yield m

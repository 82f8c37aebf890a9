"""Fold inference-time BatchNorm into the adjacent convolutions.

After training, every ``conv -> BatchNorm`` pair of an :class:`~.network.MFTFA`
(``ConvNorm`` layers: stem, module 1x1 expand/reduce, aux bottlenecks) becomes a single
conv with bias, and the input BatchNorm of the voicing branch is folded into the
*following* strided conv. Folding uses the running statistics, i.e. eval-mode
semantics; the result is numerically equivalent (float32 rounding only) and removes
BatchNorm nodes from the exported streaming graph.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import ConvNorm
from .network import MFTFA

__all__ = ["fold_batchnorm", "fold_conv_bn", "has_batchnorm"]


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) = scale * x + shift`` in eval mode."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                    stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                    groups=conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out.to(conv.weight.device)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a conv equal to ``bn(conv(x))`` (BN in eval mode).

    Parameters
    ----------
    conv : nn.Conv2d
        ``(out_ch, in_ch/groups, kf, kt)`` weights, bias optional.
    bn : nn.BatchNorm2d
        Over ``out_ch`` channels.
    """
    scale, shift = _bn_affine(bn)
    w = conv.weight * scale.reshape(-1, 1, 1, 1)
    b = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    return _new_conv(conv, w, b * scale + shift)


@torch.no_grad()
def fold_bn_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """Return a conv equal to ``conv(bn(x))`` (BN in eval mode).

    Only exact when ``conv`` has no zero padding (the padded zeros would not be
    normalised); the voicing-branch convs are unpadded (kernel = stride).
    """
    if any(p != 0 for p in conv.padding) or conv.groups != 1:  # type: ignore[union-attr]
        raise ValueError("cannot fold a BatchNorm into a padded or grouped conv")
    scale, shift = _bn_affine(bn)
    w = conv.weight * scale.reshape(1, -1, 1, 1)
    b = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    b = b + (conv.weight * shift.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    return _new_conv(conv, w, b)


def has_batchnorm(model: nn.Module) -> bool:
    """True if any BatchNorm layer remains in ``model``."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_batchnorm(model: MFTFA) -> MFTFA:
    """Equivalent eval-mode copy of ``model`` without BatchNorm layers.

    Parameters
    ----------
    model : MFTFA
        Trained (or random) network; not modified.

    Returns
    -------
    MFTFA
        A deep copy in eval mode where every BatchNorm is folded into its conv and
        replaced by ``nn.Identity``. Outputs equal ``model.eval()(x)`` up to float
        rounding (about 1e-6).
    """
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        if isinstance(m, ConvNorm) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv.conv = fold_conv_bn(m.conv.conv, m.bn)
            m.bn = nn.Identity()
    v = folded.voicing
    if isinstance(v.input_bn, nn.BatchNorm2d):
        v.convs[0] = fold_bn_conv(v.input_bn, v.convs[0])
        v.input_bn = nn.Identity()
    if has_batchnorm(folded):  # a new layer type was added without a folding rule
        raise RuntimeError("fold_batchnorm left BatchNorm layers behind")
    return folded

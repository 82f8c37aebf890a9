"""SD-MS losses: multi-level BCE supervision plus self-distillation MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .train_config import LossConfig

_EPS = 1e-6


def bce_rows(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-frame BCE between the row-softmax of ``logits`` and a one-hot target.

    Summed over the 361 rows and averaged over the frames where ``mask`` is 1, so the
    supervision terms and the distillation terms have comparable scales (the reference's
    element-wise mean is this divided by 361).

    Parameters
    ----------
    logits : Tensor [shape=(B, 361, T)]
    target : Tensor [shape=(B, T)] [int64] class per frame
    mask : Tensor [shape=(B, T)] [float] 1 where the frame counts

    Notes
    -----
    The reference applies ``BCELoss`` to softmax probabilities; written with
    ``log_softmax`` it is the same loss without the log(0) hazard.
    """
    logits = logits.float()
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    log1mp = torch.log1p(-p.clamp(max=1 - _EPS))
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 2, 1).float()
    per = -(onehot * logp + (1 - onehot) * log1mp).sum(dim=1)  # (B, T)
    return (per * mask).sum() / mask.sum().clamp(min=1)


def _standardise(x: Tensor) -> Tensor:
    x = x.float()
    return (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, keepdim=True) + 1e-4)


def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """MSE between (B, 1, F, T) maps, each standardised over frequency per frame.

    The deepest map is a row of softmax logits (free in offset and scale) while the shallow
    maps are ReLU outputs, so raw MSE would mostly measure scale; standardising compares
    the shapes of the pitch profiles, which is what distillation should transfer.
    """
    diff = (_standardise(student) - _standardise(teacher)) ** 2
    per = diff.mean(dim=(1, 2))
    return (per * mask).sum() / mask.sum().clamp(min=1)


def onset_weighted(target: Tensor, mask: Tensor, weight: float, frames: int) -> Tensor:
    """``mask`` with the first ``frames`` voiced frames of every voiced run scaled by ``weight``.

    Parameters
    ----------
    target : Tensor [shape=(B, T)] [int64] class per frame, 0 = unvoiced
    mask : Tensor [shape=(B, T)] [float]
    weight : float
    frames : int [frames]

    Returns
    -------
    Tensor [shape=(B, T)] [float]

    Notes
    -----
    A run already voiced at the segment's first frame has no onset inside the segment and
    is left alone.
    """
    if weight == 1.0:
        return mask
    voiced = target > 0
    start = torch.zeros_like(voiced)
    start[:, 1:] = voiced[:, 1:] & ~voiced[:, :-1]
    near, run = start.clone(), start
    for _ in range(1, frames):
        run = F.pad(run[:, :-1], (1, 0)) & voiced  # the run's next frame, while it lasts
        near |= run
    return mask * torch.where(near, torch.tensor(float(weight)), torch.tensor(1.0))


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of the row-softmaxes at ``temperature``, times its square.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor [shape=(B, 361, T)]
    mask : Tensor [shape=(B, T)] [float] 1 where the frame counts
    temperature : float

    Returns
    -------
    Tensor (scalar)
        Summed over the rows, averaged over the frames where ``mask`` is 1: 0 exactly when
        the two distributions agree on every such frame.
    """
    t = float(temperature)
    logq = F.log_softmax(student_logits.float() / t, dim=1)
    logp = F.log_softmax(teacher_logits.float() / t, dim=1)
    per = (logp.exp() * (logp - logq)).sum(dim=1)  # (B, T)
    return (per * mask).sum() / mask.sum().clamp(min=1) * t * t


def sdms_loss(out: dict, target: Tensor, mask: Tensor, w: LossConfig,
              teacher_logits: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Weighted SD-MS loss of one batch.

    ``teacher_logits`` (B, 361, T), the main logits of a frozen teacher network on the same
    batch, add ``w.distill`` times :func:`distill_kl`.

    Returns
    -------
    loss : Tensor (scalar)
    parts : dict of float
        Each unweighted term, for logging.
    """
    teacher = out["feat3"].detach() if w.detach_teacher else out["feat3"]
    sup = onset_weighted(target, mask, w.onset_weight, w.onset_frames)
    terms: dict[str, Tensor] = {"main": bce_rows(out["main_logits"], target, sup)}
    if out.get("aux1_logits") is not None:
        terms["aux1"] = bce_rows(out["aux1_logits"], target, sup)
        terms["aux2"] = bce_rows(out["aux2_logits"], target, sup)
    terms["mse1"] = masked_mse(out["feat1"], teacher, mask)
    terms["mse2"] = masked_mse(out["feat2"], teacher, mask)
    if teacher_logits is not None:
        terms["distill"] = distill_kl(out["main_logits"], teacher_logits, mask, w.distill_temperature)
    loss = sum(getattr(w, k) * v for k, v in terms.items() if getattr(w, k) != 0.0)
    return loss, {k: float(v.detach()) for k, v in terms.items()}

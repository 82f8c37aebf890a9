"""Training configuration: frozen dataclasses loaded from YAML (``model/configs/train_*.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from melodyrt.rt.config import CfpConfig, _from_mapping, _to_plain, load_yaml

CONFIG_DIR = Path(__file__).parent / "configs"

#: Loss-weight presets of the SD-MS ablation (paper section 3.3).
ABLATIONS = {
    "main": dict(aux1=0.0, aux2=0.0, mse1=0.0, mse2=0.0),
    "main+aux": dict(mse1=0.0, mse2=0.0),
    "main+mse": dict(aux1=0.0, aux2=0.0),
    "all": {},
}


@dataclass(frozen=True)
class LossConfig:
    """SD-MS loss weights.

    Attributes
    ----------
    main, aux1, aux2 : float
        BCE weights of the main output and the aux outputs on h1 and h2.
    mse1, mse2 : float
        Self-distillation MSE weights between feat1 / feat2 and the deepest map feat3.
    detach_teacher : bool
        Stop gradients through the teacher (deepest map), as in "Be Your Own Teacher".
    """

    main: float = 1.0
    aux1: float = 1.0
    aux2: float = 1.0
    mse1: float = 0.3
    mse2: float = 0.3
    detach_teacher: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; stored in every checkpoint.

    Attributes
    ----------
    model : str
        Model config name (``rt``, ``paper``...) or path to its YAML.
    data : str
        Data folder (MIR-1K, ADC2004/MIREX05 or MedleyDB layout); never inside the repo.
    cache_dir, out_dir : str
        Feature cache and run folder (checkpoints, history, stats).
    val_singers : tuple of str
        Singers held out for validation (MIR-1K singer ids).
    segment_frames, warmup_frames : int [frames]
        Training segment length; the first ``warmup_frames`` only build up causal context
        and carry no loss, so the model learns with a history as it has when streaming.
    variant_probs : mapping
        Sampling probability of each cached variant (voice, mix0, mixr, mix).
    gain_db : (float, float) [dB]
        Random input gain range, applied exactly in the linear feature domain.
    pitch_shift_bins : int [CFP rows, 20 cents each]
        Largest random transposition of a segment (0 = off): the linear CFP moves along
        its log-frequency rows and the labels with it (:func:`shift_rows`).
    steps_per_epoch : int
        Optimiser steps between validations.
    val_max_tracks : int
        Validate each epoch on an evenly spaced subset of this many validation tracks
        (0 = all); ``melodyrt eval`` scores the whole split.
    bf16 : bool
        Run forward/backward under CPU bfloat16 autocast.
    channels_last : bool
        NHWC memory format: oneDNN ran the 8-16 channel convs of the rt model about 1.7x
        faster that way on our 2-core CPU.
    init_from : str
        Checkpoint whose weights start a *new* run ("" = random init); ignored when the run
        folder already holds ``last.pt``. Its normalisation statistics are used too,
        since the weights were trained on them.
    init_modules : tuple of int
        0-based MF-TFA modules of ``init_from`` that become this model's modules, in order
        (empty = the same indices). Dropping a module of a residual network and
        fine-tuning is much cheaper than training the shallower network from scratch.
    """

    model: str = "rt"
    data: str = "../shared/data/mir1k8k"
    cache_dir: str = ".cache/features"
    out_dir: str = "runs/rt"
    cfp: CfpConfig = field(default_factory=lambda: CfpConfig(window="asymmetric"))
    val_singers: tuple[str, ...] = ("Kenshin", "annar")
    segment_frames: int = 160
    warmup_frames: int = 32
    batch_size: int = 8
    lr: float = 1e-3
    lr_min: float = 2e-5
    weight_decay: float = 0.0
    epochs: int = 20
    steps_per_epoch: int = 250
    loss: LossConfig = field(default_factory=LossConfig)
    ablation: str = "all"
    variant_probs: dict = field(default_factory=lambda: {"voice": 0.25, "mix0": 0.35, "mixr": 0.4, "mix": 1.0})
    gain_db: tuple[float, float] = (-20.0, 20.0)
    pitch_shift_bins: int = 0
    val_variants: tuple[str, ...] = ("mix0", "voice")
    val_max_tracks: int = 0
    seed: int = 19961206
    bf16: bool = False
    channels_last: bool = True
    threads: int = 2
    checkpoint_every: int = 50
    workers: int = 2
    init_from: str = ""
    init_modules: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from melodyrt.rt.errors import ConfigError

        if self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {sorted(ABLATIONS)}, got {self.ablation!r}")
        if not 0 <= self.warmup_frames < self.segment_frames:
            raise ConfigError("warmup_frames must be in [0, segment_frames)")
        if not 0 <= self.pitch_shift_bins < 360:
            raise ConfigError(f"pitch_shift_bins must be in [0, 360), got {self.pitch_shift_bins}")

    @property
    def loss_weights(self) -> LossConfig:
        """Loss weights after the ablation preset."""
        return dataclasses.replace(self.loss, **ABLATIONS[self.ablation])

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainConfig":
        return _from_mapping(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def load_train_config(name_or_path: str | Path) -> TrainConfig:
    """Load ``train_<name>.yaml`` from the packaged configs, or a YAML path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"train_{name_or_path}.yaml"
    return TrainConfig.from_yaml(p)

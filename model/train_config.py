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
    onset_weight : float
        Weight of the first ``onset_frames`` voiced frames of every labelled voiced run in the
        BCE terms (1 = plain SD-MS). A causal model that calls a note's first frames silent
        costs only a few frames of loss, yet every MIDI note-on waits for them.
    onset_frames : int [frames]
    distill : float
        Weight of knowledge distillation from a teacher network (``TrainConfig.teacher``):
        the KL divergence from the teacher's main output to the student's, summed over the
        361 rows and averaged over the frames that count (0 = off).
    distill_temperature : float
        Softmax temperature of both sides of the distillation term (scaled by its square,
        as in Hinton et al. 2015, so its gradients keep their size).
    """

    main: float = 1.0
    aux1: float = 1.0
    aux2: float = 1.0
    mse1: float = 0.3
    mse2: float = 0.3
    detach_teacher: bool = True
    onset_weight: float = 1.0
    onset_frames: int = 2
    distill: float = 0.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        from melodyrt.rt.errors import ConfigError

        if self.distill < 0 or not self.distill_temperature > 0:
            raise ConfigError(f"loss.distill must be >= 0 and loss.distill_temperature > 0, got "
                              f"{self.distill}, {self.distill_temperature}")

        if not self.onset_weight > 0 or self.onset_frames < 1:
            raise ConfigError(f"loss.onset_weight must be > 0 and loss.onset_frames >= 1, got "
                              f"{self.onset_weight}, {self.onset_frames}")


@dataclass(frozen=True)
class AugmentConfig:
    """Audio-domain augmentation of the training segments (:mod:`melodyrt.model.augment`).

    Off by default: the run then samples the cached CFP variants (``SegmentSampler``). When
    ``enabled``, every segment is rendered from the voice and accompaniment audio held in
    memory, processed as below, and its CFP computed by the streaming front end in the
    loader; ``variant_probs``, ``gain_db`` and ``pitch_shift_bins`` are then not used.

    Attributes
    ----------
    enabled : bool
        Use the augmented sampler (``AudioSegmentSampler``) instead of the feature cache.
    voice_only_prob : float [0..1]
        Probability of a segment of voice alone (no accompaniment).
    own_accomp_prob : float [0..1]
        Probability of the clip's own accompaniment (the original song, voice unshifted);
        the rest (``1 - voice_only_prob - own_accomp_prob``) takes the accompaniment of
        another training clip at a random offset.
    accomp_only_prob : float [0..1]
        Probability of a segment of accompaniment alone (another clip's, no voice, every
        label unvoiced): the rests of a song, where a tracker must stay silent however
        melodic the backing is. Taken from the cross-remix share, so
        ``voice_only_prob + own_accomp_prob + accomp_only_prob <= 1``.
    snr_db : (float, float) [dB]
        Voice-to-accompaniment ratio, uniform in this range, of whole-clip RMS levels (the
        MIR-1K convention: 0 dB = both channels at their clip RMS, the ``mix0`` variant).
    pitch_shift_prob : float [0..1]
        Probability of transposing the voice (not the accompaniment) by resampling it.
    pitch_shift_semitones : float [semitones]
        Largest transposition, uniform in ``[-x, +x]``; the voice also gets shorter or
        longer, and the labels follow it in frequency and time.
    eq_prob : float [0..1]
        Probability of a random EQ on the mix: a low shelf, a high shelf and one or two
        peaks, each present with probability 1/2.
    eq_gain_db : float [dB]
        Largest boost or cut of each EQ band.
    reverb_prob : float [0..1]
        Probability of reverb on the mix (a synthetic exponentially decaying noise IR).
    reverb_rt60_s : (float, float) [s]
        Reverberation time range.
    reverb_wet : (float, float)
        Wet gain range (the IR has unit energy).
    compress_prob : float [0..1]
        Probability of a feed-forward RMS compressor on the mix.
    compress_ratio : (float, float)
        Compression ratio range.
    compress_threshold_db : (float, float) [dB]
        Threshold range, relative to the chunk's RMS level.
    peak_prob : float [0..1]
        Probability that the master is peak-normalised (else loudness-normalised).
    peak_dbfs : (float, float) [dBFS]
        Peak target range.
    loudness_dbfs : (float, float) [dBFS]
        Gated RMS target range (MIR-1K mixes sit at about -15.5 dBFS).
    limit_prob : float [0..1]
        Probability of driving the mix into a look-ahead limiter before the level step.
    limit_drive_db : (float, float) [dB]
        How far the peaks are driven over the limiter's ceiling.
    resample_prob : float [0..1]
        Probability of taking the rendered audio up to one of ``resample_rates`` and back
        down through the live ``StreamingResampler`` (its roll-off above 2.2 kHz).
    resample_rates : tuple of int [Hz]
        Device rates to go through (each one of ``rt.resample.SUPPORTED_RATES``).
    resample_quality : str
        Resampler recipe of the way down, as the live input uses ("HQ").
    history_s : float [s]
        Audio rendered before the CFP's window history so that reverb, compression and
        resampling have settled when the first frame starts.
    workers : int
        Background processes that render the next batches while the network trains (0 =
        render in the training process). Batches are the same either way. A batch costs
        about a tenth of an ``rt2`` step on one core, so a worker pays only where a core
        is free: on the 2-core machine, where training takes both, it did not (model card).
    prefetch : int
        Batches rendered ahead of the training loop when ``workers > 0``.
    """

    enabled: bool = False
    voice_only_prob: float = 0.2
    own_accomp_prob: float = 0.2
    accomp_only_prob: float = 0.0
    snr_db: tuple[float, float] = (-5.0, 15.0)
    pitch_shift_prob: float = 0.6
    pitch_shift_semitones: float = 3.0
    eq_prob: float = 0.6
    eq_gain_db: float = 9.0
    reverb_prob: float = 0.4
    reverb_rt60_s: tuple[float, float] = (0.2, 1.5)
    reverb_wet: tuple[float, float] = (0.1, 0.6)
    compress_prob: float = 0.5
    compress_ratio: tuple[float, float] = (1.5, 8.0)
    compress_threshold_db: tuple[float, float] = (-15.0, 0.0)
    peak_prob: float = 0.5
    peak_dbfs: tuple[float, float] = (-15.0, -0.1)
    loudness_dbfs: tuple[float, float] = (-34.0, -10.0)
    limit_prob: float = 0.2
    limit_drive_db: tuple[float, float] = (2.0, 12.0)
    resample_prob: float = 0.3
    resample_rates: tuple[int, ...] = (44100, 48000)
    resample_quality: str = "HQ"
    history_s: float = 0.5
    workers: int = 0
    prefetch: int = 2

    def __post_init__(self) -> None:
        from melodyrt.rt.errors import ConfigError
        from melodyrt.rt.resample import QUALITIES, SUPPORTED_RATES

        set_ = object.__setattr__
        for name in ("snr_db", "reverb_rt60_s", "reverb_wet", "compress_ratio", "compress_threshold_db",
                     "peak_dbfs", "loudness_dbfs", "limit_drive_db"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"augment.{name} must be a range [low, high] with low <= high, got {list(value)}")
            set_(self, name, value)
        for name in ("voice_only_prob", "own_accomp_prob", "accomp_only_prob", "pitch_shift_prob", "eq_prob",
                     "reverb_prob", "compress_prob", "peak_prob", "limit_prob", "resample_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.voice_only_prob + self.own_accomp_prob + self.accomp_only_prob > 1.0:
            raise ConfigError("augment.voice_only_prob + augment.own_accomp_prob + augment.accomp_only_prob must "
                              f"not exceed 1, got {self.voice_only_prob} + {self.own_accomp_prob} + "
                              f"{self.accomp_only_prob}")
        if not 0.0 <= self.pitch_shift_semitones <= 12.0:
            raise ConfigError(f"augment.pitch_shift_semitones must be in [0, 12], got {self.pitch_shift_semitones}")
        if self.eq_gain_db < 0:
            raise ConfigError(f"augment.eq_gain_db must be >= 0, got {self.eq_gain_db}")
        if self.reverb_rt60_s[0] <= 0 or self.reverb_rt60_s[1] > 5.0:
            raise ConfigError(f"augment.reverb_rt60_s must lie in (0, 5] s, got {list(self.reverb_rt60_s)}")
        if self.compress_ratio[0] < 1.0:
            raise ConfigError(f"augment.compress_ratio must be >= 1, got {list(self.compress_ratio)}")
        if self.peak_dbfs[1] > 0.0 or self.loudness_dbfs[1] > 0.0:
            raise ConfigError("augment.peak_dbfs and augment.loudness_dbfs must stay at or below 0 dBFS")
        rates = tuple(self.resample_rates)
        bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, int) or r not in SUPPORTED_RATES]
        if not rates or bad:
            raise ConfigError(f"augment.resample_rates must list supported device rates {list(SUPPORTED_RATES)}, "
                              f"got {list(rates)}")
        set_(self, "resample_rates", rates)
        if self.resample_quality not in QUALITIES:
            raise ConfigError(f"augment.resample_quality must be one of {', '.join(QUALITIES)}, "
                              f"got {self.resample_quality!r}")
        if self.history_s < 0:
            raise ConfigError(f"augment.history_s must be >= 0, got {self.history_s}")
        if self.workers < 0 or self.prefetch < 1:
            raise ConfigError(f"augment.workers must be >= 0 and augment.prefetch >= 1, got "
                              f"{self.workers}, {self.prefetch}")


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
    augment : AugmentConfig
        Audio-domain augmentation (remixing, voice pitch shift, EQ, reverb, compression,
        mastering levels, the live resampler), off by default.
    teacher : str
        Checkpoint of a teacher network for ``loss.distill`` ("" = none), typically the
        paper's non-causal mode on the same CFP (``model/configs/rt2_offline.yaml``). It runs
        frozen, in eval mode, on every training batch; its own feature statistics apply.
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
    teacher: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        from melodyrt.rt.errors import ConfigError

        if self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {sorted(ABLATIONS)}, got {self.ablation!r}")
        if not 0 <= self.warmup_frames < self.segment_frames:
            raise ConfigError("warmup_frames must be in [0, segment_frames)")
        if not 0 <= self.pitch_shift_bins < 360:
            raise ConfigError(f"pitch_shift_bins must be in [0, 360), got {self.pitch_shift_bins}")
        if (self.loss.distill > 0) != bool(self.teacher):
            raise ConfigError("loss.distill > 0 needs a teacher checkpoint, and a teacher needs loss.distill > 0; "
                              f"got loss.distill {self.loss.distill}, teacher {self.teacher!r}")

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

"""SD-MS training of MF-TFA on cached CFP features, resumable and seedable.

A run folder holds ``last.pt`` (everything needed to resume, written every
``checkpoint_every`` steps and at each epoch end), ``best.pt`` (weights with the best
validation OA on the 0 dB mixes), ``stats.npz`` (feature normalisation, from the training
split) and ``history.json`` (per-epoch losses and validation metrics).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from melodyrt.rt.cfp import FeatureStats
from melodyrt.rt.config import CfpConfig
from melodyrt.rt.decode import decode_salience
from melodyrt.rt.errors import MelodyRTError
from melodyrt.rt.pitch import hz_to_class

from .config import ModelConfig, load_model_config
from .datasets import Track, discover, split_by_singer
from .features import FeatureCache, frame_times, gain_exponents, variants_of
from .metrics import MelodyScorer
from .network import MFTFA, build_model
from .sdms import sdms_loss
from .train_config import TrainConfig

STAT_VARIANTS = ("mix0", "voice", "mix")


def compute_stats(cache: FeatureCache, tracks: list[Track], max_tracks: int = 300) -> FeatureStats:
    """Per-row mean and standard deviation of ``log1p(cfp)`` over training tracks.

    Rows that never carry energy (row 0 of each channel) keep offset 0 and scale 1.
    """
    rng = np.random.default_rng(0)
    chosen = [tracks[i] for i in rng.permutation(len(tracks))[:max_tracks]]
    s = np.zeros((3, 360))
    s2 = np.zeros((3, 360))
    n = 0
    for t in chosen:
        for v in variants_of(t):
            if v not in STAT_VARIANTS:
                continue
            x = np.log1p(cache.load(t, v).astype(np.float64))
            s += x.sum(axis=0)
            s2 += (x**2).sum(axis=0)
            n += x.shape[0]
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
    dead = std < 1e-6
    return FeatureStats(np.where(dead, 0.0, mean), np.where(dead, 1.0, np.maximum(std, 1e-3)))


def normalise(linear: NDArray, stats: FeatureStats, gain_db: float = 0.0, exps: NDArray | None = None) -> NDArray[np.float32]:
    """Linear CFP (T, 3, 360) -> network input (3, 360, T), with an exact input gain."""
    x = linear.astype(np.float32)
    if gain_db != 0.0 and exps is not None:
        x = x * (10.0 ** (gain_db / 20.0 * exps)).astype(np.float32)[None, :, None]
    x = (np.log1p(x) - stats.offset.astype(np.float32)) / stats.scale.astype(np.float32)
    return np.ascontiguousarray(x.transpose(1, 2, 0))


def shift_rows(linear: NDArray, classes: NDArray, k: int) -> tuple[NDArray, NDArray, NDArray[np.bool_]]:
    """Transpose a segment by ``k`` CFP rows (20 cents each; ``k > 0`` is up).

    All three CFP channels sit on the same log-frequency rows, so a transposition moves
    each by ``k`` rows; rows shifted in from outside are silence (0 in the linear domain).

    Parameters
    ----------
    linear : ndarray [shape=(T, 3, 360)]
        Linear CFP (before gain, log and normalisation, whose statistics are per row).
    classes : ndarray [shape=(T,)] [int]
        0 = unvoiced, ``c`` = row ``c - 1``.
    k : int [rows]

    Returns
    -------
    linear, classes : the shifted segment and labels
    valid : ndarray [shape=(T,)] [bool]
        False where a voiced label left the 360 rows (no loss there).
    """
    if k == 0:
        return linear, classes, np.ones(classes.shape[0], bool)
    out = np.zeros_like(linear)
    if k > 0:
        out[..., k:] = linear[..., :-k]
    else:
        out[..., :k] = linear[..., -k:]
    voiced = classes > 0
    moved = np.where(voiced, classes + k, 0)
    valid = ~voiced | ((moved >= 1) & (moved <= linear.shape[-1]))
    return out, np.where(valid, moved, 0), valid


class SegmentSampler:
    """Random training segments with random variant and gain.

    Parameters
    ----------
    cache : FeatureCache
    tracks : list of Track
    cfg : TrainConfig
    stats : FeatureStats
    lookahead : int [frames]
        Targets are the labels of ``lookahead`` frames earlier.
    """

    def __init__(self, cache: FeatureCache, tracks: list[Track], cfg: TrainConfig, stats: FeatureStats, lookahead: int) -> None:
        self.cache, self.cfg, self.stats = cache, cfg, stats
        self.exps = gain_exponents(cache.cfg)
        self.items = []
        for t in tracks:
            vs = variants_of(t)
            feats = {v: cache.load(t, v) for v in vs}
            n = feats[vs[0]].shape[0]
            classes = hz_to_class(cache.labels(t, n, lookahead), cache.cfg)
            probs = np.array([cfg.variant_probs.get(v, 0.0) for v in vs], float)
            probs = probs / probs.sum() if probs.sum() > 0 else np.full(len(vs), 1 / len(vs))
            self.items.append((feats, classes, vs, probs, n))
        lengths = np.array([it[4] for it in self.items], float)
        self.weights = lengths / lengths.sum()

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch: inputs (B, 3, 360, T), classes (B, T), loss mask (B, T)."""
        cfg = self.cfg
        T = cfg.segment_frames
        xs = np.zeros((cfg.batch_size, 3, 360, T), np.float32)
        ys = np.zeros((cfg.batch_size, T), np.int64)
        mask = np.zeros((cfg.batch_size, T), np.float32)
        for b in range(cfg.batch_size):
            feats, classes, vs, probs, n = self.items[rng.choice(len(self.items), p=self.weights)]
            v = vs[rng.choice(len(vs), p=probs)]
            start = int(rng.integers(0, max(n - T, 0) + 1))
            seg = feats[v][start : start + T]
            k = seg.shape[0]
            gain = float(rng.uniform(*cfg.gain_db))
            labels, valid = classes[start : start + k], None
            if cfg.pitch_shift_bins:  # drawn only when enabled: runs without it stay reproducible
                shift = int(rng.integers(-cfg.pitch_shift_bins, cfg.pitch_shift_bins + 1))
                seg, labels, valid = shift_rows(seg, labels, shift)
            silence = normalise(np.zeros((T - k, 3, 360)), self.stats) if k < T else None
            xs[b, :, :, :k] = normalise(seg, self.stats, gain, self.exps)
            if silence is not None:
                xs[b, :, :, k:] = silence
            ys[b, :k] = labels
            mask[b, cfg.warmup_frames : k] = 1.0
            if valid is not None:
                mask[b, :k] *= valid
        return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(mask)


@torch.no_grad()
def predict_linear(model: MFTFA, linear: NDArray, stats: FeatureStats, chunk: int = 2000) -> NDArray[np.float32]:
    """Main output (T, 361) of the full (causal or not) forward over one track."""
    model.eval()
    x = torch.from_numpy(normalise(np.asarray(linear), stats))[None]
    return model(x)["main"][0].float().numpy().T


def score_track(scorer: MelodyScorer, model: MFTFA, cache: FeatureCache, track: Track, variant: str,
                stats: FeatureStats, lookahead: int) -> NDArray[np.float32]:
    """Run the full-sequence forward on one cached variant, decode it, add it to ``scorer``.

    Returns the main output (T, 361) it decoded.
    """
    sal = predict_linear(model, cache.load(track, variant), stats)
    f0, voiced, _ = decode_salience(sal)
    times = frame_times(sal.shape[0], cache.cfg, cache.delay_samples) - lookahead * cache.cfg.hop_seconds
    scorer.add(track.name, track.label_times, track.label_f0, times, f0, voiced)
    return sal


def validate(model: MFTFA, cache: FeatureCache, tracks: list[Track], stats: FeatureStats,
             variants: tuple[str, ...], lookahead: int) -> dict[str, dict[str, float]]:
    """Pooled mir_eval metrics per variant on the validation tracks."""
    results = {}
    for v in variants:
        scorer = MelodyScorer()
        for t in tracks:
            if v in variants_of(t):
                score_track(scorer, model, cache, t, v, stats, lookahead)
        if scorer.per_track:
            results[v] = scorer.pooled()
    return results


@dataclass
class RunState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_oa: float = -1.0
    history: list | None = None
    wall_seconds: float = 0.0
    #: Where the weights of step 0 came from ("" = random init); kept across resumes, which
    #: run with a config that no longer names it.
    init_from: str = ""
    init_modules: tuple[int, ...] = ()


def save_checkpoint(path: Path, model: MFTFA, cfg: TrainConfig, stats: FeatureStats, state: RunState,
                    optimizer: torch.optim.Optimizer | None = None, rng: np.random.Generator | None = None) -> None:
    """Write a checkpoint atomically (a crash never leaves a half-written file)."""
    ckpt = {
        "format": "melodyrt-checkpoint-1",
        "model_config": model.cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "cfp_config": cfg.to_dict()["cfp"],
        "model": model.state_dict(),
        "stats": {"offset": stats.offset.tolist(), "scale": stats.scale.tolist()},
        "state": state.__dict__,
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["torch_rng"] = torch.get_rng_state()
    if rng is not None:
        ckpt["numpy_rng"] = rng.bit_generator.state
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise MelodyRTError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        raise MelodyRTError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "melodyrt-checkpoint-1":
        raise MelodyRTError(f"{path} is not a melodyrt checkpoint")
    return ckpt


def checkpoint_stats(ckpt: dict) -> FeatureStats:
    """The feature normalisation a checkpoint's weights were trained with."""
    st = ckpt["stats"]
    return FeatureStats.from_lists(st["offset"], st["scale"])


def same_front_end(ckpt: dict, cfp: CfpConfig) -> bool:
    """Whether a checkpoint was trained on features of the CFP configuration ``cfp``."""
    theirs = ckpt.get("cfp_config")
    if theirs is None:
        return True  # checkpoints before the front end was recorded used the default one
    return CfpConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in theirs.items()}) == cfp


def model_from_checkpoint(ckpt: dict) -> tuple[MFTFA, FeatureStats]:
    """Rebuild the network (eval mode) and its feature statistics."""
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    # Exported checkpoints drop the training-only aux heads; anything else missing is an error.
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    bad = list(unexpected) + [k for k in missing if not k.startswith("aux.")]
    if bad:
        raise MelodyRTError(f"checkpoint weights do not fit its model config ({', '.join(bad[:3])} ...)")
    model.eval()
    return model, checkpoint_stats(ckpt)


class Teacher:
    """A frozen network whose main logits the student learns to match (``loss.distill``).

    Parameters
    ----------
    model : MFTFA
        In eval mode (no dropout, running BatchNorm statistics).
    student_stats, teacher_stats : FeatureStats
        The batch arrives normalised with the student's statistics; the teacher sees it
        renormalised to its own, ``(x * s_scale + s_offset - t_offset) / t_scale``.
    """

    def __init__(self, model: MFTFA, student_stats: FeatureStats, teacher_stats: FeatureStats) -> None:
        self.model = model
        f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None, :, :, None]  # (1, 3, 360, 1)
        self._gain = f(student_stats.scale / teacher_stats.scale)
        self._bias = f((student_stats.offset - teacher_stats.offset) / teacher_stats.scale)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits (B, 361, T) for a student batch ``x`` (B, 3, 360, T)."""
        return self.model(x * self._gain + self._bias)["main_logits"].detach()


def load_teacher(cfg: TrainConfig, stats: FeatureStats, lookahead: int) -> Teacher:
    """The teacher of ``cfg.teacher``, checked against the student's front end and labels."""
    ckpt = load_checkpoint(cfg.teacher)
    if not same_front_end(ckpt, cfg.cfp):
        raise MelodyRTError(f"teacher {cfg.teacher} was trained on another CFP configuration than this run's")
    model, t_stats = model_from_checkpoint(ckpt)
    if model.cfg.lookahead_frames != lookahead:
        raise MelodyRTError(f"teacher {cfg.teacher} predicts {model.cfg.lookahead_frames} frames back, the "
                            f"student {lookahead}: their outputs would not describe the same frames")
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, stats, t_stats)


def init_weights(model: MFTFA, source: dict[str, torch.Tensor], modules: tuple[int, ...] = ()) -> tuple[int, list[str]]:
    """Copy a trained state dict into ``model`` where names and shapes match.

    Parameters
    ----------
    model : MFTFA
        The new network (modified in place).
    source : dict
        ``state_dict`` of a trained network, possibly deeper than ``model``.
    modules : tuple of int
        Source module index for each of ``model``'s modules, in order (empty = same
        indices); e.g. ``(0, 2)`` builds a 2-module network from modules 1 and 3 of a
        3-module one.

    Returns
    -------
    copied : int
        Tensors copied.
    fresh : list of str
        Names of ``model``'s tensors that kept their random initialisation.

    Raises
    ------
    MelodyRTError
        ``modules`` names a module the source does not have, or its length is not the
        number of modules of ``model``.
    """
    n = model.cfg.n_modules
    src_modules = {int(k.split(".")[1]) for k in source if k.startswith("blocks.")}
    mapping = tuple(modules) or tuple(range(n))
    if len(mapping) != n or any(m not in src_modules for m in mapping):
        raise MelodyRTError(f"init_modules {list(mapping)} must name {n} of the source's modules "
                            f"{sorted(src_modules)}")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not key.startswith("blocks."):
            renamed[key] = value
            continue
        _, idx, rest = key.split(".", 2)
        for dst in (d for d, src in enumerate(mapping) if src == int(idx)):  # a module may be reused
            renamed[f"blocks.{dst}.{rest}"] = value
    target = model.state_dict()
    fitting = {k: v for k, v in renamed.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return len(fitting), [k for k in target if k not in fitting]


def _save_stats(path: Path, stats: FeatureStats) -> None:
    np.savez(path, offset=stats.offset, scale=stats.scale)


def _lr_at(cfg: TrainConfig, step: int) -> float:
    warm = min(200, cfg.total_steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, cfg.total_steps - warm)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(frac, 1.0)))


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True, max_tracks: int | None = None,
          stop_after_steps: int | None = None, resume_from: str | Path | None = None) -> RunState:
    """Train (or resume) a model as ``cfg`` says.

    Parameters
    ----------
    cfg : TrainConfig
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists.
    max_tracks : int, optional
        Use only the first N tracks of each split (smoke tests).
    stop_after_steps : int, optional
        Return after this many optimiser steps in this call (checkpoint written), e.g. to
        exercise resumption.
    resume_from : path, optional
        A resumable checkpoint (e.g. the one committed under model/checkpoints/) to start
        from when ``out_dir`` has none yet; its normalisation statistics come with it.
    """
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = load_model_config(cfg.model)
    _, tracks = discover(cfg.data)
    train_t, val_t = split_by_singer(tracks, cfg.val_singers)
    if not val_t:  # data sets without our singers: hold out every tenth track
        val_t, train_t = tracks[::10], [t for i, t in enumerate(tracks) if i % 10]
    if max_tracks:
        train_t, val_t = train_t[:max_tracks], val_t[: max(1, max_tracks // 4)]
    if cfg.val_max_tracks and len(val_t) > cfg.val_max_tracks:
        val_t = [val_t[i] for i in np.linspace(0, len(val_t) - 1, cfg.val_max_tracks).round().astype(int)]
    cache = FeatureCache(cfg.cache_dir, cfg.cfp)
    cache.build(train_t + val_t, workers=cfg.workers, progress=progress)

    stats_path = out / "stats.npz"
    last = out / "last.pt"
    if resume_from is not None and not last.exists():
        seed_ckpt = load_checkpoint(resume_from)
        if "optimizer" not in seed_ckpt:
            raise MelodyRTError(f"{resume_from} holds weights only (no optimiser state): it cannot be resumed")
        shutil.copyfile(resume_from, last)
        _save_stats(stats_path, checkpoint_stats(seed_ckpt))
    resuming = resume and last.exists()
    init_ckpt = load_checkpoint(cfg.init_from) if cfg.init_from and not resuming else None
    if init_ckpt is not None:
        if same_front_end(init_ckpt, cfg.cfp):  # its weights were trained on its statistics
            _save_stats(stats_path, checkpoint_stats(init_ckpt))
        else:  # other features: statistics of these ones, so the inputs keep their scale
            stats_path.unlink(missing_ok=True)
            if progress:
                print(f"{cfg.init_from} was trained on another front end: computing fresh feature statistics")
    if stats_path.exists():
        z = np.load(stats_path)
        stats = FeatureStats(z["offset"], z["scale"])
    else:
        stats = compute_stats(cache, train_t)
        _save_stats(stats_path, stats)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    state = RunState(history=[])
    if init_ckpt is not None:
        copied, fresh = init_weights(model, init_ckpt["model"], cfg.init_modules)
        state.init_from, state.init_modules = str(cfg.init_from), tuple(cfg.init_modules)
        if progress:
            print(f"initialised from {cfg.init_from}: {copied} tensors copied, {len(fresh)} left at random init"
                  + (f" ({', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''})" if fresh else ""))
    if resuming:
        ck = load_checkpoint(last)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["numpy_rng"]
        state = RunState(**ck["state"])
        if progress:
            print(f"resuming {last}: epoch {state.epoch + 1}, step {state.step_in_epoch}")
    (out / "train_config.yaml").write_text(__import__("yaml").safe_dump(cfg.to_dict(), sort_keys=False))

    teacher = load_teacher(cfg, stats, model_cfg.lookahead_frames) if cfg.teacher else None
    if cfg.augment.enabled:  # audio-domain augmentation, CFP in the loader (model/augment.py)
        from .augment import AudioSegmentSampler
        sampler = AudioSegmentSampler(train_t, cfg, stats, model_cfg.lookahead_frames)
    else:
        sampler = SegmentSampler(cache, train_t, cfg, stats, model_cfg.lookahead_frames)
    weights = cfg.loss_weights
    steps_done = 0
    t_start = time.time() - state.wall_seconds
    while state.epoch < cfg.epochs:
        model.train()
        bar = tqdm(total=cfg.steps_per_epoch, initial=state.step_in_epoch, disable=not progress,
                   desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="step")
        running = None
        while state.step_in_epoch < cfg.steps_per_epoch:
            x, y, mask = sampler.batch(rng)
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, state.global_step)
            if cfg.channels_last:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                outputs = model(x)
                teacher_logits = teacher(x) if teacher is not None else None
            loss, parts = sdms_loss(outputs, y, mask, weights, teacher_logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            state.step_in_epoch += 1
            state.global_step += 1
            steps_done += 1
            parts["total"] = float(loss.detach())
            running = parts if running is None else {k: 0.95 * running[k] + 0.05 * parts[k] for k in parts}
            bar.set_postfix(loss=f"{running['total']:.4f}", main=f"{running['main']:.4f}")
            bar.update(1)
            if state.step_in_epoch % cfg.checkpoint_every == 0 or (stop_after_steps and steps_done >= stop_after_steps):
                state.wall_seconds = time.time() - t_start
                save_checkpoint(last, model, cfg, stats, state, opt, rng)
            if stop_after_steps and steps_done >= stop_after_steps:
                bar.close()
                return state
        bar.close()
        scores = validate(model, cache, val_t, stats, cfg.val_variants, model_cfg.lookahead_frames)
        state.wall_seconds = time.time() - t_start
        key = cfg.val_variants[0] if cfg.val_variants[0] in scores else next(iter(scores), None)
        oa = scores[key]["OA"] if key else float("nan")
        state.history.append({"epoch": state.epoch + 1, "step": state.global_step, "loss": running,
                              "val": scores, "wall_seconds": round(state.wall_seconds, 1)})
        if progress:
            desc = "  ".join(f"{v}: " + " ".join(f"{m} {s[m]:.1f}" for m in ("VR", "VFA", "RPA", "OA")) for v, s in scores.items())
            print(f"epoch {state.epoch + 1}: {desc}")
        state.epoch += 1
        state.step_in_epoch = 0
        if oa > state.best_oa:
            state.best_oa = oa
            save_checkpoint(out / "best.pt", model, cfg, stats, state)
        save_checkpoint(last, model, cfg, stats, state, opt, rng)
        (out / "history.json").write_text(json.dumps(state.history, indent=1))
    return state

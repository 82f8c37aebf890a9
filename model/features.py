"""On-disk cache of CFP features for training and evaluation.

Features come from the same streaming front end as the live path
(:func:`melodyrt.rt.cfp.cfp_from_signal`) and are stored *linear* (before ``log1p``) as
float16. Linear storage makes gain augmentation exact and free: every CFP stage is a ReLU or
a power, so scaling the input by ``g`` scales the channels by ``g ** GAIN_EXPONENTS``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from melodyrt.rt.cfp import StreamingCFP, cfp_from_signal
from melodyrt.rt.config import CfpConfig, NormConfig

from .datasets import Track, labels_on_frames, load_track_audio

#: Variants of a multitrack clip: isolated voice, 0 dB mix, and a mix at a random SNR
#: (uniform in MIXR_SNR_DB, fixed per clip so the cache is deterministic).
MULTITRACK_VARIANTS = ("voice", "mix0", "mixr")
MIXR_SNR_DB = (-5.0, 10.0)


def gain_exponents(cfg: CfpConfig) -> NDArray[np.float64]:
    """How each channel ``[spectrum, GCoS, GC]`` scales with input gain (as a power of it)."""
    g0, g1, g2 = cfg.gammas
    return np.array([g0, g0 * g1 * g2, g0 * g1])


#: CfpConfig fields that only the multires window reads.
MULTIRES_FIELDS = ("short_length", "short_fall", "short_n_fft", "split_hz", "crossfade_bins")


def cfp_cache_key(cfg: CfpConfig) -> str:
    """Short hash of the CFP parameters; features from different front ends never mix.

    Fields a window does not read are left out, so caches of the single-window front ends
    keep the keys they had before the multires fields existed.
    """
    fields = asdict(cfg)
    if cfg.window != "multires":
        for name in MULTIRES_FIELDS:
            fields.pop(name)
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def frame_times(n_frames: int, cfg: CfpConfig, delay_samples: float) -> NDArray[np.float64]:
    """Time each causal frame describes [s]: its end minus the window's effective delay."""
    return ((np.arange(n_frames) + 1) * cfg.hop - delay_samples) / cfg.sample_rate


def variants_of(track: Track) -> tuple[str, ...]:
    """Cached variants for a track: three for multitrack clips, else the mix."""
    return MULTITRACK_VARIANTS if track.voice_channel is not None else ("mix",)


def mix_snr_db(track: Track, variant: str) -> float | None:
    """SNR of voice over accompaniment for a variant [dB] (None for voice only / mixes)."""
    if variant == "mix0":
        return 0.0
    if variant == "mixr":
        rng = np.random.default_rng(zlib.crc32(track.name.encode()))
        return float(rng.uniform(*MIXR_SNR_DB))
    return None


def render_variant(track: Track, variant: str, sample_rate: int) -> NDArray[np.float32]:
    """The audio of one variant at ``sample_rate``."""
    voice, accomp = load_track_audio(track, sample_rate)
    snr = mix_snr_db(track, variant)
    if accomp is None or snr is None:
        return voice
    return (voice + accomp * np.float32(10.0 ** (-snr / 20.0))).astype(np.float32)


class FeatureCache:
    """Cached linear CFP features of tracks, one float16 ``.npy`` per (variant, track).

    Parameters
    ----------
    root : Path
        Cache folder; features live in ``root / <cfp key> / <variant> / <name>.npy``.
    cfg : CfpConfig
    """

    def __init__(self, root: str | Path, cfg: CfpConfig) -> None:
        self.cfg = cfg
        self.dir = Path(root) / cfp_cache_key(cfg)
        self.delay_samples = StreamingCFP(cfg).delay_samples

    def path(self, track: Track, variant: str) -> Path:
        return self.dir / variant / f"{track.name}.npy"

    def load(self, track: Track, variant: str, mmap: bool = True) -> NDArray[np.float16]:
        """Features ``(T, 3, 360)`` float16 (linear CFP) of a cached variant."""
        return np.load(self.path(track, variant), mmap_mode="r" if mmap else None)

    def labels(self, track: Track, n_frames: int, shift_frames: int = 0) -> NDArray[np.float64]:
        """f0 per frame [Hz] for the frames' times, ``shift_frames`` earlier for look-ahead."""
        times = frame_times(n_frames, self.cfg, self.delay_samples) - shift_frames * self.cfg.hop_seconds
        return labels_on_frames(track.label_times, track.label_f0, times)

    def build(self, tracks: list[Track], workers: int = 2, progress: bool = True) -> None:
        """Compute the features of every missing (track, variant); safe to interrupt."""
        jobs = [(t, v) for t in tracks for v in variants_of(t) if not self.path(t, v).exists()]
        if not jobs:
            return
        for v in {v for _, v in jobs}:
            (self.dir / v).mkdir(parents=True, exist_ok=True)
        (self.dir / "cfp.json").write_text(json.dumps(asdict(self.cfg), indent=1))
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            done = pool.map(_build_one, [(self.dir, self.cfg, t, v) for t, v in jobs], chunksize=4)
            for _ in tqdm(done, total=len(jobs), desc="CFP cache", unit="clip", disable=not progress):
                pass


def _build_one(args: tuple[Path, CfpConfig, Track, str]) -> None:
    root, cfg, track, variant = args
    x = render_variant(track, variant, cfg.sample_rate)
    feats = cfp_from_signal(x, cfg, NormConfig(mode="none"))
    # Stored linear (undo log1p) so that gain augmentation stays exact.
    linear = np.expm1(feats.astype(np.float64)).astype(np.float16)
    out = root / variant / f"{track.name}.npy"
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, linear)
    tmp.replace(out)

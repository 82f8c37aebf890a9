"""Whole-file inference with the full-sequence forward of any checkpoint.

This is how the paper's non-causal configuration is used on files: the same CFP front
end, the model run once over the whole sequence (so 'same' padding and segment-wide
attention see the future), and the same decoder and writers as ``melodyrt transcribe``.
For causal checkpoints it gives the frames the streaming step gives (same arithmetic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from melodyrt.rt.audio_io import load_audio
from melodyrt.rt.cfp import cfp_from_signal
from melodyrt.rt.config import CfpConfig, NormConfig, _from_mapping
from melodyrt.rt.decode import decode_salience
from melodyrt.rt.frames import PitchFrame

from .train import load_checkpoint, model_from_checkpoint


def transcribe_offline(path: str | Path, checkpoint: str | Path, channel: int | str | None = None) -> tuple[list[PitchFrame], float]:
    """Track a file with a checkpoint's full-sequence forward.

    Returns
    -------
    frames : list of PitchFrame
        ``sample``/``time`` in the 8 kHz analysis timeline (the file's own time).
    duration : float [s]
    """
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    x = load_audio(path, cfp.sample_rate, channel=channel)
    feats = cfp_from_signal(x, cfp, NormConfig(mode="fixed"), stats)  # (T, 3, 360)
    with torch.no_grad():
        sal = model(torch.from_numpy(feats).permute(1, 2, 0)[None])["main"][0].numpy().T
    f0, voiced, conf = decode_salience(sal)
    # The timeline of the live tracker: newest sample of the hop minus the window's
    # effective delay and the model's look-ahead, rounded the same way.
    delay = cfp_delay(cfp) + model.delay_frames * cfp.hop
    samples = np.round((np.arange(sal.shape[0]) + 1) * cfp.hop - 1 - delay).astype(np.int64)
    hop = cfp.hop
    n_hops = max(len(x) // hop, 1)
    rms = np.sqrt(np.mean(np.resize(x, (n_hops, hop)) ** 2, axis=1))
    frames = []
    for i, smp in enumerate(samples):
        if smp < 0:
            continue
        level = rms[min(i, n_hops - 1)]
        frames.append(PitchFrame(i, int(smp), int(smp) / cfp.sample_rate, float(f0[i]), bool(voiced[i]),
                                 float(conf[i]), float(20 * np.log10(max(level, 1e-10)))))
    return frames, len(x) / cfp.sample_rate


def cfp_delay(cfp: CfpConfig) -> float:
    """Effective analysis-window delay [samples] of a front end (energy centroid)."""
    from melodyrt.rt.cfp import StreamingCFP

    return StreamingCFP(cfp).delay_samples

"""Pictures of CFP features (PNG, matplotlib's Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from .cfp import bin_frequencies
from .config import CfpConfig

CHANNEL_NAMES = ("spectrum", "GCoS", "GC")


def plot_cfp(
    frames: NDArray,
    path: str | Path,
    cfg: CfpConfig | None = None,
    *,
    title: str = "",
    frame_times: NDArray | None = None,
    tracks: Sequence[tuple[str, NDArray, str]] = (),
) -> Path:
    """Save the three CFP channels as images over a log-frequency axis.

    Parameters
    ----------
    frames : ndarray [shape=(T, 3, 360)]
        Features (any normalisation); each channel is scaled to its own range.
    path : str or Path
        PNG file to write.
    cfg : CfpConfig, optional
        Gives the row frequencies and the hop.
    title : str
    frame_times : ndarray [shape=(T,)] [s], optional
        Time each frame describes (default ``(k + 1) * hop``).
    tracks : sequence of (label, hz [shape=(T,)], matplotlib format)
        Pitch curves drawn over every channel (0 = not drawn).

    Returns
    -------
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cfg = cfg or CfpConfig()
    frames = np.asarray(frames, dtype=np.float32)
    t = frame_times if frame_times is not None else (np.arange(frames.shape[0]) + 1) * cfg.hop_seconds
    f = bin_frequencies(cfg)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
    for c, ax in enumerate(axes):
        img = frames[:, c, :].T
        lo, hi = float(img.min()), float(img.max())
        ax.pcolormesh(t, f, img, shading="nearest", cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1, rasterized=True)
        for label, hz, fmt in tracks:
            y = np.where(np.asarray(hz) > 0, hz, np.nan)
            ax.plot(t, y, fmt, label=label, linewidth=1.2, markersize=2)
        ax.set_yscale("log")
        ax.set_ylim(f[0], f[-1])
        ax.set_yticks([50, 100, 200, 400, 800, 1600])
        ax.set_yticklabels(["50", "100", "200", "400", "800", "1600"])
        ax.set_ylabel(f"{CHANNEL_NAMES[c]} [Hz]")
        if tracks and c == 0:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time [s]")
    if title:
        axes[0].set_title(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

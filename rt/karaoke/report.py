"""After the song: a PNG of target vs sung pitch with per-line scores, and the same as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MelodyRTError
from .scoring import SongScore
from .song import KaraokeSong

GOLD = "#e0a800"
NOTE = "#5c6bc0"
HIT = "#1b9e4b"
MISS = "#d81b60"


def report_json(song: KaraokeSong, score: SongScore, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as plain data: song, settings, total, per-note and per-line results, sung track."""
    return {"song": song.to_json(), "score": score.to_json(), **(extra or {})}


def write_report(
    song: KaraokeSong, score: SongScore, out: str | Path, extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``OUT.png`` and ``OUT.json``.

    Parameters
    ----------
    song : KaraokeSong
    score : SongScore
        With the sung track (``Scorer.score()``, the default).
    out : str or Path
        Path without suffix (``.png`` / ``.json`` are added), or an existing folder (then
        ``<folder>/karaoke-report.*``).
    extra : dict, optional
        More facts for the JSON (latency, devices...).

    Returns
    -------
    png, json : Path
    """
    out = Path(out)
    if out.is_dir():
        out = out / "karaoke-report"
    if not out.parent.exists():
        raise MelodyRTError(f"{out.parent}: report folder does not exist")
    png, js = out.with_suffix(".png"), out.with_suffix(".json")
    js.write_text(json.dumps(report_json(song, score, extra), indent=1))
    plot_report(song, score, png)
    return png, js


def plot_report(song: KaraokeSong, score: SongScore, path: str | Path) -> Path:
    """Draw target notes (bars; golden in gold, freestyle dashed), the sung pitch (green where
    it hit, red where it missed, in the target's octave when scoring was octave-agnostic) and
    each line's rating and perfection above it. Long songs are split over several rows."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    t = np.asarray(score.sung.get("t", []), np.float64)
    f0 = np.asarray(score.sung.get("f0_hz", []), np.float64)
    hit = np.asarray(score.sung.get("hit", []), bool)
    sung = np.where(f0 > 0, 69.0 + 12.0 * np.log2(np.where(f0 > 0, f0, 440.0) / 440.0), np.nan)
    if score.config.octave_agnostic and sung.size:
        for i, tt in enumerate(t):
            k = song.note_at(tt)
            if k >= 0 and song.notes[k].pitched and np.isfinite(sung[i]):
                tgt = song.notes[k].target_midi(tt)
                sung[i] -= 12.0 * round((sung[i] - tgt) / 12.0)  # type: ignore[operator]

    start = min(song.start, 0.0)
    end = song.end + 0.5
    row_s = 30.0
    n_rows = max(1, int(np.ceil((end - start) / row_s)))
    lo, hi = song.pitch_range()
    fig, axes = plt.subplots(n_rows, 1, figsize=(14, 3.2 * n_rows + 0.8), squeeze=False, constrained_layout=True)
    for r, ax in enumerate(axes[:, 0]):
        a, b = start + r * row_s, min(end, start + (r + 1) * row_s)
        for n in song.notes:
            if n.end < a or n.start > b:
                continue
            if n.kind == "freestyle":
                ax.add_patch(plt.Rectangle((n.start, lo - 1.5), n.duration, 1.0, fill=False, ls="--", ec="grey"))
            elif n.contour is not None:
                ax.plot(n.contour[0], n.contour[1], color=NOTE, lw=6, alpha=0.45, solid_capstyle="round")
            elif n.midi is not None:
                colour = GOLD if n.golden else NOTE
                ax.add_patch(plt.Rectangle((n.start, n.midi - 0.4), n.duration, 0.8, color=colour, alpha=0.55, lw=0))
            if n.text.strip():
                ax.text(n.start, (n.midi if n.midi is not None else lo - 1) - 1.0, n.text.strip(), fontsize=7,
                        va="top", clip_on=True)
        sel = (t >= a) & (t <= b)
        if sel.any():
            ts, ms, hs = t[sel], sung[sel], hit[sel]
            ax.plot(ts, np.where(hs, np.nan, ms), color=MISS, lw=1.4, label="sung (miss)")
            ax.plot(ts, np.where(hs, ms, np.nan), color=HIT, lw=1.8, label="sung (hit)")
        for ln in score.lines:
            if ln.end < a or ln.start > b or ln.rating == "-":
                continue
            ax.annotate(f"{ln.rating} {100 * ln.perfection:.0f}%", ((ln.start + ln.end) / 2, hi + 2.2),
                        ha="center", fontsize=8, color="#333")
            ax.axvspan(ln.start, ln.end, ymin=0.96, ymax=1.0, color="#bbb", lw=0)
        ax.set_xlim(a, a + row_s if n_rows > 1 else b)
        ax.set_ylim(lo - 3, hi + 4)
        ax.set_ylabel("MIDI pitch")
        ax.grid(alpha=0.25)
    axes[-1, 0].set_xlabel("song time [s]")
    if t.size:
        axes[0, 0].legend(loc="lower right", fontsize=8)
    cfg = score.config
    fig.suptitle(f"{song.title}{' - ' + song.artist if song.artist else ''}: {score.total} / {cfg.max_score:.0f} "
                 f"({cfg.difficulty}, +-{cfg.tolerance:.0f} cents{', any octave' if cfg.octave_agnostic else ''})")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""Melody metrics with mir_eval, pooled over all frames of a data set (literature protocol).

Both annotation and estimate are resampled onto a 10 ms grid by mir_eval; the five
metrics are then computed once over the concatenation of every track's frames, not
averaged per track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

METRICS = ("VR", "VFA", "RPA", "RCA", "OA")


@dataclass
class MelodyScorer:
    """Accumulates tracks and reports pooled and per-track scores [%]."""

    hop: float = 0.01
    _arrays: list = field(default_factory=list)
    per_track: dict = field(default_factory=dict)

    def add(
        self,
        name: str,
        ref_time: NDArray,
        ref_freq: NDArray,
        est_time: NDArray,
        est_freq: NDArray,
        est_voiced: NDArray,
    ) -> dict[str, float]:
        """Score one track and keep its frames for pooling.

        Parameters
        ----------
        ref_time, ref_freq : ndarray [shape=(L,)] [s], [Hz] (0 = unvoiced)
        est_time, est_freq : ndarray [shape=(T,)] [s], [Hz] (pitch guess on every frame)
        est_voiced : ndarray [shape=(T,)] [bool]
        """
        import mir_eval

        est_signed = np.where(est_voiced, np.abs(est_freq), -np.abs(est_freq))
        arrays = mir_eval.melody.to_cent_voicing(
            np.asarray(ref_time, float), np.asarray(ref_freq, float),
            np.asarray(est_time, float), est_signed.astype(float), hop=self.hop,
        )
        self._arrays.append(arrays)
        scores = _scores(*arrays)
        self.per_track[name] = scores
        return scores

    def pooled(self) -> dict[str, float]:
        """Metrics over all frames of all tracks added so far."""
        if not self._arrays:
            return {m: float("nan") for m in METRICS}
        return _scores(*(np.concatenate(parts) for parts in zip(*self._arrays)))


def _scores(ref_v, ref_c, est_v, est_c) -> dict[str, float]:
    import mir_eval

    m = mir_eval.melody
    vr, vfa = m.voicing_measures(ref_v, est_v)
    return {
        "VR": 100 * vr,
        "VFA": 100 * vfa,
        "RPA": 100 * m.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c),
        "RCA": 100 * m.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c),
        "OA": 100 * m.overall_accuracy(ref_v, ref_c, est_v, est_c),
    }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table, one row per name, columns VR VFA RPA RCA OA."""
    lines = ["| | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, s in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[m]:.1f}" for m in METRICS) + " |")
    return "\n".join(lines)

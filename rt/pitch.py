"""Pitch-class geometry shared by labels, decoding and outputs (no torch here).

The network's 361 output rows are ``[voicing; salience rows 0..359]``; salience row ``r``
is CFP row ``r`` with centre ``fmin * 2 ** (r / 60)`` Hz. Class 0 is unvoiced and class
``j`` (1..360) is salience row ``j - 1``, so the classes line up with the feature rows the
fully convolutional network sees. Labels use the nearest row (the reference's ceiling
bin carries a systematic 0-20 cent bias; section 3 of the reference allows the change).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .config import CfpConfig

N_CLASSES = 361


def row_frequencies(cfg: CfpConfig | None = None) -> NDArray[np.float64]:
    """Centre of each salience row [Hz], shape (360,)."""
    cfg = cfg or CfpConfig()
    return cfg.fmin * 2.0 ** (np.arange(360) / cfg.bins_per_octave)


def row_cents(cfg: CfpConfig | None = None) -> NDArray[np.float64]:
    """Centre of each salience row in cents above 10 Hz (mir_eval's reference), shape (360,)."""
    cfg = cfg or CfpConfig()
    return 1200.0 * np.log2(cfg.fmin / 10.0) + np.arange(360) * 1200.0 / cfg.bins_per_octave


def hz_to_class(f0_hz: NDArray, cfg: CfpConfig | None = None) -> NDArray[np.int64]:
    """Nearest-row class of each f0 (0 for unvoiced, <= 0.1 Hz, or outside the 360 rows).

    Parameters
    ----------
    f0_hz : ndarray [shape=(T,)] [Hz]

    Returns
    -------
    classes : ndarray [shape=(T,)] [int64] in 0..360
    """
    cfg = cfg or CfpConfig()
    f0 = np.asarray(f0_hz, np.float64)
    out = np.zeros(f0.shape, np.int64)
    voiced = f0 > 0.1
    row = np.rint(np.log2(np.where(voiced, f0, 1.0) / cfg.fmin) * cfg.bins_per_octave)
    ok = voiced & (row >= 0) & (row <= 359)
    out[ok] = row[ok].astype(np.int64) + 1
    return out


def midi_to_hz(midi: NDArray) -> NDArray[np.float64]:
    """MIDI note number (fractional) to Hz; values <= 0 map to 0 (unvoiced)."""
    m = np.asarray(midi, np.float64)
    return np.where(m > 0, 440.0 * 2.0 ** ((m - 69.0) / 12.0), 0.0)


def hz_to_midi(f0_hz: NDArray) -> NDArray[np.float64]:
    """Hz to fractional MIDI note number; 0 Hz maps to 0."""
    f = np.asarray(f0_hz, np.float64)
    return np.where(f > 0, 69.0 + 12.0 * np.log2(np.where(f > 0, f, 1.0) / 440.0), 0.0)

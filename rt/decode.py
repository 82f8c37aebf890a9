"""Salience to f0: the frame-wise decoder shared by the live path, files and evaluation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .pitch import row_cents


def decode_salience(
    salience: NDArray, half_width: int = 4, voicing_threshold: float = 0.5
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """Decode network outputs into f0, voicing and confidence.

    The pitch is the salience-weighted mean, in cents, of the rows within ``half_width`` of
    the strongest pitch row, which removes the 20-cent quantisation of the argmax. A frame is
    voiced when ``1 - p(unvoiced) > voicing_threshold``.

    Parameters
    ----------
    salience : ndarray [shape=(T, 361)]
        Softmax output; row 0 = unvoiced.
    half_width : int [rows]
    voicing_threshold : float

    Returns
    -------
    f0_hz : ndarray [shape=(T,)] [Hz]
        Pitch estimate for every frame (also for unvoiced ones: the best guess).
    voiced : ndarray [shape=(T,)] [bool]
    confidence : ndarray [shape=(T,)]
        Probability mass of the pitch rows near the peak.
    """
    sal = np.atleast_2d(np.asarray(salience, np.float64))
    pitch = sal[:, 1:]
    n_rows = pitch.shape[1]
    peak = np.argmax(pitch, axis=1)
    offsets = np.arange(-half_width, half_width + 1)
    idx = np.clip(peak[:, None] + offsets[None, :], 0, n_rows - 1)
    valid = (peak[:, None] + offsets[None, :] >= 0) & (peak[:, None] + offsets[None, :] < n_rows)
    w = np.take_along_axis(pitch, idx, axis=1) * valid
    cents_axis = row_cents()
    mass = w.sum(axis=1)
    cents = (w * cents_axis[idx]).sum(axis=1) / np.maximum(mass, 1e-12)
    f0 = 10.0 * 2.0 ** (cents / 1200.0)
    voiced = (1.0 - sal[:, 0]) > voicing_threshold
    return f0, voiced, mass

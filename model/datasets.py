"""Readers for melody data sets, all reduced to one :class:`Track` record.

Layouts understood (detected by :func:`discover`):

- ``mir1k``: ``audio/<name>.flac|wav`` (left = accompaniment, right = voice) with
  ``pitch/<name>.pv`` (MIDI semitones, 20 ms hop, frame i centred at 0.02 * (i + 1) s).
- ``ref_txt`` (ADC2004, MIREX05): ``<name>.wav`` beside ``<name>REF.txt`` (or
  ``<name>.REF.txt``): two columns, time [s] and f0 [Hz], 0 or negative = unvoiced.
- ``medleydb``: ``<Track>_MIX.wav`` anywhere below the root, melody in
  ``<Track>_MELODY2.csv`` (or MELODY1/MELODY3, chosen by ``melody``) anywhere below it:
  rows ``time,f0``.

No torch here: evaluation and the bench use these readers too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from melodyrt.rt.errors import AudioInputError
from melodyrt.rt.pitch import midi_to_hz

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class Track:
    """One annotated recording.

    Attributes
    ----------
    name : str
    audio : Path
    label_times : ndarray [shape=(L,)] [s]
    label_f0 : ndarray [shape=(L,)] [Hz], 0 = unvoiced
    singer : str
        Singer or artist id used for splits ("" when unknown).
    voice_channel : int or None
        For multitrack files (MIR-1K): channel holding the isolated voice; the other
        channel is the accompaniment.
    """

    name: str
    audio: Path
    label_times: NDArray[np.float64]
    label_f0: NDArray[np.float64]
    singer: str = ""
    voice_channel: int | None = None


def read_mir1k(root: Path) -> list[Track]:
    """MIR-1K: one track per file in ``audio/`` with a ``pitch/*.pv`` label."""
    root = Path(root)
    tracks = []
    for audio in sorted(p for p in (root / "audio").iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        pv = root / "pitch" / f"{audio.stem}.pv"
        if not pv.exists():
            continue
        midi = _read_columns(pv, 1)[:, 0]
        times = 0.02 * (np.arange(midi.shape[0]) + 1)
        tracks.append(
            Track(audio.stem, audio, times, midi_to_hz(midi), audio.stem.split("_")[0], voice_channel=1)
        )
    return tracks


def read_ref_txt(root: Path) -> list[Track]:
    """ADC2004 / MIREX05 style: ``X.wav`` with ``XREF.txt`` (time, f0)."""
    root = Path(root)
    tracks = []
    for ref in sorted(root.rglob("*REF.txt")):
        stem = re.sub(r"\.?REF$", "", ref.stem)
        audio = next((ref.with_name(stem + s) for s in AUDIO_SUFFIXES if ref.with_name(stem + s).exists()), None)
        if audio is None:
            continue
        data = _read_columns(ref, 2)
        tracks.append(Track(stem, audio, data[:, 0], np.maximum(data[:, 1], 0.0), re.sub(r"\d+$", "", stem)))
    return tracks


def read_medleydb(root: Path, melody: str = "MELODY2") -> list[Track]:
    """MedleyDB: ``*_MIX.wav`` paired with ``*_<melody>.csv`` by track name."""
    root = Path(root)
    csvs = {p.name[: -len(f"_{melody}.csv")]: p for p in root.rglob(f"*_{melody}.csv")}
    tracks = []
    for mix in sorted(root.rglob("*_MIX.wav")):
        name = mix.name[: -len("_MIX.wav")]
        if name in csvs:
            data = _read_columns(csvs[name], 2)
            tracks.append(Track(name, mix, data[:, 0], np.maximum(data[:, 1], 0.0), name.split("_")[0]))
    return tracks


def discover(root: str | Path) -> tuple[str, list[Track]]:
    """Detect the layout of ``root`` and read it.

    Returns
    -------
    layout : {"mir1k", "ref_txt", "medleydb"}
    tracks : list of Track

    Raises
    ------
    AudioInputError
        When ``root`` is missing or holds no annotated audio in a known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise AudioInputError(f"data folder not found: {root}")
    for layout, reader in (("mir1k", read_mir1k), ("ref_txt", read_ref_txt), ("medleydb", read_medleydb)):
        if layout == "mir1k" and not (root / "audio").is_dir():
            continue
        tracks = reader(root)
        if tracks:
            return layout, tracks
    raise AudioInputError(
        f"no annotated audio in {root}: expected MIR-1K (audio/ + pitch/*.pv), "
        "ADC2004/MIREX05 (X.wav + XREF.txt) or MedleyDB (*_MIX.wav + *_MELODY2.csv)"
    )


def split_by_singer(tracks: list[Track], val_singers: tuple[str, ...]) -> tuple[list[Track], list[Track]]:
    """Train/validation split that keeps every singer on one side."""
    val = [t for t in tracks if t.singer in val_singers]
    train = [t for t in tracks if t.singer not in val_singers]
    return train, val


def labels_on_frames(
    label_times: NDArray, label_f0: NDArray, frame_times: NDArray
) -> NDArray[np.float64]:
    """Resample an f0 annotation onto frame times.

    Between two voiced labels the pitch is interpolated linearly in semitones; next to an
    unvoiced label (or outside the annotated span, beyond half a label hop) the nearest
    label is used, so voicing never leaks across a voiced/unvoiced boundary.

    Parameters
    ----------
    label_times : ndarray [shape=(L,)] [s], increasing
    label_f0 : ndarray [shape=(L,)] [Hz], 0 = unvoiced
    frame_times : ndarray [shape=(T,)] [s]

    Returns
    -------
    f0 : ndarray [shape=(T,)] [Hz], 0 = unvoiced
    """
    lt = np.asarray(label_times, np.float64)
    lf = np.asarray(label_f0, np.float64)
    ft = np.asarray(frame_times, np.float64)
    out = np.zeros(ft.shape)
    if lt.shape[0] == 0:
        return out
    hi = np.clip(np.searchsorted(lt, ft, side="right"), 1, lt.shape[0] - 1) if lt.shape[0] > 1 else np.zeros(ft.shape, int)
    lo = np.maximum(hi - 1, 0)
    t0, t1 = lt[lo], lt[hi]
    f0a, f0b = lf[lo], lf[hi]
    nearest = np.where(np.abs(ft - t0) <= np.abs(ft - t1), f0a, f0b)
    both = (f0a > 0) & (f0b > 0) & (t1 > t0) & (ft >= t0) & (ft <= t1)
    frac = np.clip((ft - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0, 1.0)
    semis = np.log2(np.where(f0a > 0, f0a, 1.0)) * (1 - frac) + np.log2(np.where(f0b > 0, f0b, 1.0)) * frac
    out = np.where(both, 2.0**semis, nearest)
    step = np.median(np.diff(lt)) if lt.shape[0] > 1 else 0.02
    outside = (ft < lt[0] - step / 2) | (ft > lt[-1] + step / 2)
    out[outside] = 0.0
    return out


def load_track_audio(track: Track, sample_rate: int = 8000) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Audio of a track at ``sample_rate``.

    Returns
    -------
    voice_or_mix : ndarray [shape=(n,)] [float32]
        The isolated voice for multitrack sets, else the mono mix.
    accompaniment : ndarray [shape=(n,)] [float32] or None
    """
    from melodyrt.rt.audio_io import load_audio

    if track.voice_channel is None:
        return load_audio(track.audio, sample_rate, channel="mix"), None
    voice = load_audio(track.audio, sample_rate, channel=track.voice_channel)
    accomp = load_audio(track.audio, sample_rate, channel=1 - track.voice_channel)
    return voice, accomp


def _read_columns(path: Path, ncols: int) -> NDArray[np.float64]:
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        if not parts:
            continue
        try:
            rows.append([float(p) for p in parts[:ncols]])
        except ValueError:
            continue  # header line
    data = np.asarray(rows, np.float64).reshape(-1, ncols) if rows else np.zeros((0, ncols))
    return data

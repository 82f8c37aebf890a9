"""Reading and writing audio files.

Files are read with soundfile (libsndfile: WAV, FLAC, OGG, MP3, AIFF, ...) and brought to the
analysis rate by the same :class:`~melodyrt.rt.resample.StreamingResampler` that serves live
audio, with its latency removed, so output sample ``i`` describes input time
``i / target_rate``. Every problem a user can cause raises :class:`AudioInputError` with one
line that names the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from .config import CfpConfig
from .errors import AudioInputError
from .resample import check_rate, resample_signal

#: A file must hold at least one analysis window [s] (768 samples at 8 kHz = 96 ms).
MIN_DURATION_S = CfpConfig().win_length / CfpConfig().sample_rate

Channel = int | str | None


def parse_channel(value: Channel) -> int | str | None:
    """Normalise a channel choice: ``None``, ``"mix"`` or a non-negative index.

    Accepts index strings (``"1"``) so the CLI can pass its ``--channel`` text straight in.
    """
    if value is None or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value is not None and int(value) < 0:
            raise AudioInputError(f"channel index must be >= 0, got {value}")
        return None if value is None else int(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "mix":
            return "mix"
        if v.isdigit():
            return int(v)
    raise AudioInputError(f"channel must be 'mix' or a channel index (0, 1, ...), got {value!r}")


def _open_info(path: Path) -> sf._SoundFileInfo:
    if not path.exists():
        raise AudioInputError(f"{path}: file not found")
    if path.is_dir():
        raise AudioInputError(f"{path}: is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioInputError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise AudioInputError(f"{path}: empty file (0 bytes)")
    try:
        return sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioInputError(_open_error(path, exc)) from None
    except OSError as exc:
        raise AudioInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open_error(path: Path, exc: Exception) -> str:
    """One line for a file libsndfile could not open, telling format problems from damage."""
    suffix = path.suffix.lower().lstrip(".")
    known = {f.lower() for f in sf.available_formats()} | {"wave", "aif", "aifc", "oga", "opus"}
    reason = str(exc).split(": ", 1)[-1].strip().rstrip(".") if ": " in str(exc) else str(exc)
    if suffix and suffix not in known:
        readable = ", ".join(sorted(f.lower() for f in ("WAV", "FLAC", "OGG", "MP3", "AIFF")))
        return f"{path}: unsupported audio format '.{suffix}' (readable: {readable}, ...)"
    kind = suffix.upper() if suffix else "audio"
    return f"{path}: not a readable {kind} file, corrupt or of another format ({reason})"


def load_audio(
    path: str | Path,
    target_rate: int = 8000,
    channel: Channel = None,
    quality: str = "HQ",
) -> NDArray[np.float32]:
    """Read an audio file as mono float32 at ``target_rate``.

    Parameters
    ----------
    path : str or Path
    target_rate : int [Hz]
        Output rate (the CFP analysis rate by default).
    channel : None, "mix" or int
        Which channel of a multi-channel file: an index, or ``"mix"`` for the mean of all
        channels. ``None`` accepts mono files only.
    quality : str
        Resampler quality recipe.

    Returns
    -------
    audio : ndarray [shape=(n,)] [float32]
        Sample ``i`` describes time ``i / target_rate`` of the file.

    Raises
    ------
    AudioInputError
        As :func:`read_audio`.
    """
    x, rate = read_audio(path, channel)
    try:
        return resample_signal(x, rate, target_rate, quality)
    except AudioInputError as exc:
        raise AudioInputError(f"{path}: {exc}") from None


def read_audio(path: str | Path, channel: Channel = None) -> tuple[NDArray[np.float32], int]:
    """Read an audio file as mono float32 at its own rate, checked for everything a user can get wrong.

    Parameters
    ----------
    path : str or Path
    channel : None, "mix" or int
        See :func:`load_audio`.

    Returns
    -------
    audio : ndarray [shape=(n,)] [float32]
    rate : int [Hz]
        The file's rate, one of :data:`melodyrt.rt.resample.SUPPORTED_RATES`.

    Raises
    ------
    AudioInputError
        Missing, unreadable, corrupt or unsupported file; no samples; shorter than one
        analysis window; several channels and no ``channel``; a channel index out of range;
        NaN or inf samples; an unsupported sample rate.
    """
    path = Path(path)
    try:
        ch = parse_channel(channel)
    except AudioInputError as exc:
        raise AudioInputError(f"{path}: {exc}") from None
    info = _open_info(path)
    if info.frames == 0:
        raise AudioInputError(f"{path}: contains no audio samples")
    if info.channels > 1 and ch is None:
        raise AudioInputError(
            f"{path}: has {info.channels} channels; choose one with channel=\"mix\" or an index "
            f"0..{info.channels - 1} (CLI: --channel mix|N)"
        )
    if isinstance(ch, int) and ch >= info.channels:
        raise AudioInputError(f"{path}: channel {ch} requested but the file has {info.channels} channel(s)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioInputError(f"{path}: corrupt audio data ({str(exc).strip().rstrip('.')})") from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: contains no audio samples")
    if ch == "mix":
        x = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        x = np.ascontiguousarray(data[:, ch or 0])
    bad = int(x.shape[0] - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise AudioInputError(f"{path}: contains {bad} non-finite (NaN/inf) sample(s)")
    need = math.ceil(MIN_DURATION_S * rate)
    if x.shape[0] < need:
        raise AudioInputError(
            f"{path}: too short ({1000 * x.shape[0] / rate:.1f} ms); need at least "
            f"{1000 * MIN_DURATION_S:.0f} ms, one {CfpConfig().win_length}-sample analysis window at "
            f"{CfpConfig().sample_rate} Hz"
        )
    try:
        rate = check_rate(rate)
    except AudioInputError as exc:
        raise AudioInputError(f"{path}: {exc}") from None
    return x, rate


def write_wav(path: str | Path, samples: NDArray, rate: int, subtype: str | None = None) -> Path:
    """Write mono or (n, channels) samples in [-1, 1] to a WAV (or FLAC/OGG by suffix) file.

    Parameters
    ----------
    path : str or Path
        The suffix picks the container (``.wav``, ``.flac``, ...).
    samples : ndarray [shape=(n,) or (n, channels)]
    rate : int [Hz]
    subtype : str, optional
        soundfile subtype (``"PCM_16"``, ``"FLOAT"``...); default: the format's own
        (16-bit PCM for WAV and FLAC).

    Returns
    -------
    path : Path
    """
    path = Path(path)
    if not path.parent.exists():
        raise AudioInputError(f"{path}: folder {path.parent} does not exist")
    try:
        sf.write(str(path), np.asarray(samples), int(rate), subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioInputError(f"{path}: cannot write audio ({str(exc).splitlines()[0]})") from None
    return path

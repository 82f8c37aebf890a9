"""Synthetic singing-like audio with a known f0, for tests, the demo and benchmarks.

Everything is deterministic given a seed. The voice is a sum of harmonics shaped by a
vowel-like formant envelope (so, as with real singing, the fundamental is often not the
strongest partial), with vibrato, glides between notes and soft attacks; the accompaniment
is a quieter chord pad with a bass line. The true f0 is returned per sample, so a caller
can score any frame at any latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

#: Vowel /a/-like formants: (centre [Hz], half-width [Hz], relative amplitude).
VOWEL_A = ((700.0, 130.0, 1.0), (1200.0, 150.0, 0.6), (2600.0, 250.0, 0.25))

# Harmonics above this are not synthesised: nothing above 4 kHz survives the 8 kHz analysis,
# and skipping them keeps 48 kHz synthesis cheap.
_MAX_PARTIAL_HZ = 5000.0


def midi_to_hz(midi: float | NDArray) -> float | NDArray:
    """MIDI note number to frequency [Hz] (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def formant_envelope(freq: NDArray, formants: Sequence[tuple[float, float, float]] = VOWEL_A) -> NDArray:
    """Amplitude of a partial at ``freq`` [Hz]: a floor plus Lorentzian formant peaks.

    Parameters
    ----------
    freq : ndarray [Hz]
    formants : sequence of (centre [Hz], half-width [Hz], amplitude)

    Returns
    -------
    amp : ndarray [same shape as freq]
    """
    freq = np.asarray(freq, dtype=np.float64)
    amp = np.full(freq.shape, 0.1)
    for centre, width, a in formants:
        amp += a / (1.0 + ((freq - centre) / width) ** 2)
    return amp


def harmonic_tone(
    f0: float | NDArray,
    duration: float,
    sr: int,
    *,
    formants: Sequence[tuple[float, float, float]] | None = VOWEL_A,
    tilt: float = 0.5,
    rng: np.random.Generator | None = None,
    peak: float = 0.3,
) -> NDArray[np.float64]:
    """A harmonic tone, steady or following an f0 contour.

    Parameters
    ----------
    f0 : float or ndarray [shape=(n,)] [Hz]
        Fundamental; an array gives f0 per sample (0 = silence).
    duration : float [s]
        Used when ``f0`` is a scalar.
    sr : int [Hz]
    formants : sequence or None
        Spectral envelope (see :func:`formant_envelope`); ``None`` gives ``1/k ** tilt`` only.
    tilt : float
        Partial ``k`` is further scaled by ``k ** -tilt``.
    rng : numpy Generator, optional
        Draws the partials' start phases (default: a fixed seed).
    peak : float
        Peak absolute amplitude of the result.

    Returns
    -------
    x : ndarray [shape=(n,)] [float64]
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    if np.isscalar(f0):
        f = np.full(int(round(duration * sr)), float(f0))  # type: ignore[arg-type]
    else:
        f = np.asarray(f0, dtype=np.float64)
    phase = 2.0 * np.pi * np.cumsum(f) / sr
    limit = min(0.45 * sr, _MAX_PARTIAL_HZ)
    positive = f[f > 0]
    n_partials = int(limit / positive.min()) if positive.size else 0
    x = np.zeros_like(f)
    for k in range(1, n_partials + 1):
        fk = k * f
        amp = (formant_envelope(fk, formants) if formants else 1.0) * k**-tilt
        # Fade partials out smoothly below the limit instead of switching them off (clicks).
        amp = amp * np.clip((limit - fk) / (0.05 * limit), 0.0, 1.0) * (f > 0)
        x += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    m = np.max(np.abs(x)) if x.size else 0.0
    return x * (peak / m) if m > 0 else x


def pure_tone(f0: float, duration: float, sr: int, *, phase: float = 0.0, peak: float = 0.5) -> NDArray[np.float64]:
    """A sine [shape=(round(duration * sr),)] [float64]."""
    t = np.arange(int(round(duration * sr))) / sr
    return peak * np.sin(2 * np.pi * f0 * t + phase)


def f0_contour(
    notes: Sequence[tuple[float | None, float]],
    sr: int,
    *,
    vibrato_hz: float = 5.5,
    vibrato_cents: float = 35.0,
    glide_s: float = 0.06,
) -> NDArray[np.float64]:
    """Per-sample f0 of a sung line.

    Parameters
    ----------
    notes : sequence of (midi or None, duration [s])
        ``None`` is a rest (f0 = 0).
    sr : int [Hz]
    vibrato_hz, vibrato_cents : float
        Sinusoidal vibrato, faded in over the first 0.2 s of each note.
    glide_s : float [s]
        Portamento: within one phrase, the last ``glide_s`` of a note slides (raised cosine in
        log frequency) to the next note.

    Returns
    -------
    f0 : ndarray [shape=(n,)] [Hz]
    """
    parts = []
    for i, (midi, dur) in enumerate(notes):
        n = int(round(dur * sr))
        if midi is None:
            parts.append(np.zeros(n))
            continue
        t = np.arange(n) / sr
        cents = 100.0 * midi + vibrato_cents * np.sin(2 * np.pi * vibrato_hz * t) * np.clip(t / 0.2, 0, 1)
        nxt = notes[i + 1][0] if i + 1 < len(notes) else None
        g = int(round(glide_s * sr))
        if nxt is not None and 0 < g < n:
            ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(g) / g)
            cents[-g:] += ramp * 100.0 * (nxt - midi)
        parts.append(440.0 * 2.0 ** ((cents - 6900.0) / 1200.0))
    return np.concatenate(parts) if parts else np.zeros(0)


def note_envelope(f0: NDArray, sr: int, attack_s: float = 0.03, release_s: float = 0.05) -> NDArray[np.float64]:
    """Amplitude envelope: a linear attack at the start of each voiced run of ``f0`` and a
    linear release over its last ``release_s`` (the voice is silent where ``f0 == 0``, so
    fading inside the run avoids clicks without sounding where the truth says "rest").

    Returns
    -------
    env : ndarray [shape=f0.shape] [0..1]
    """
    voiced = np.concatenate([[False], f0 > 0, [False]])
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    env = np.zeros(f0.shape[0])
    n_att, n_rel = max(1, int(attack_s * sr)), max(1, int(release_s * sr))
    for s, e in zip(edges[0::2], edges[1::2]):
        i = np.arange(e - s)
        env[s:e] = np.minimum(1.0, np.minimum((i + 1) / n_att, (e - s - i) / n_rel))
    return env


def pad(chords: Sequence[tuple[Sequence[float], float]], sr: int, *, peak: float = 0.1) -> NDArray[np.float64]:
    """Soft accompaniment: each chord a few mellow harmonics per note, slow attack/decay.

    Parameters
    ----------
    chords : sequence of (midi notes, duration [s])
    peak : float
        Peak amplitude of the pad.
    """
    rng = np.random.default_rng(1)
    out = []
    for midis, dur in chords:
        n = int(round(dur * sr))
        t = np.arange(n) / sr
        x = np.zeros(n)
        for m in midis:
            f = float(midi_to_hz(m))
            for k in range(1, 5):
                if k * f < 0.45 * sr:
                    x += np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k**2
        env = np.minimum(1.0, t / 0.15) * np.minimum(1.0, (dur - t) / 0.2)
        out.append(x * env)
    y = np.concatenate(out) if out else np.zeros(0)
    m = np.max(np.abs(y)) if y.size else 0.0
    return y * (peak / m) if m > 0 else y


@dataclass(frozen=True)
class Song:
    """A synthetic mix with its ground truth.

    Attributes
    ----------
    audio : ndarray [shape=(n,)] [float32]
        Voice + accompaniment, peak below 1.
    voice : ndarray [shape=(n,)] [float32]
    f0 : ndarray [shape=(n,)] [Hz]
        The voice's f0 per sample, 0 where it rests.
    sr : int [Hz]
    """

    audio: NDArray[np.float32]
    voice: NDArray[np.float32]
    f0: NDArray[np.float64]
    sr: int

    @property
    def duration(self) -> float:
        """Length [s]."""
        return self.audio.shape[0] / self.sr

    def f0_at(self, times: NDArray) -> NDArray[np.float64]:
        """True f0 at ``times`` [s] (nearest sample; 0 outside the song or in rests)."""
        idx = np.round(np.asarray(times) * self.sr).astype(np.int64)
        inside = (idx >= 0) & (idx < self.f0.shape[0])
        out = np.zeros(idx.shape)
        out[inside] = self.f0[idx[inside]]
        return out


#: The demo tune: (MIDI note or None for a rest, duration [s]). Around A3-A4, a comfortable
#: range for most voices.
DEMO_MELODY: tuple[tuple[float | None, float], ...] = (
    (None, 0.3), (60, 0.45), (62, 0.45), (64, 0.45), (67, 0.9), (64, 0.45), (62, 0.6),
    (None, 0.35), (65, 0.45), (69, 0.45), (67, 0.9), (64, 0.45), (60, 0.9), (None, 0.3),
)
DEMO_CHORDS: tuple[tuple[tuple[float, ...], float], ...] = (
    ((48, 55, 64), 1.65), ((43, 55, 62), 1.85), ((41, 57, 65), 1.8), ((48, 55, 64), 1.65),
)


def sung_melody(
    notes: Sequence[tuple[float | None, float]] = DEMO_MELODY,
    sr: int = 8000,
    *,
    chords: Sequence[tuple[Sequence[float], float]] | None = DEMO_CHORDS,
    accompaniment_db: float = -12.0,
    noise_db: float = -50.0,
    seed: int = 0,
) -> Song:
    """A sung line with vibrato and glides, over a soft accompaniment.

    Parameters
    ----------
    notes : sequence of (midi or None, duration [s])
    sr : int [Hz]
    chords : sequence of (midi notes, duration [s]) or None
        Accompaniment; trimmed or zero-padded to the melody's length.
    accompaniment_db : float [dB]
        Pad peak relative to the voice peak.
    noise_db : float [dB]
        White noise floor relative to full scale (keeps silent stretches non-zero).
    seed : int

    Returns
    -------
    song : Song
    """
    rng = np.random.default_rng(seed)
    f0 = f0_contour(notes, sr)
    voice = harmonic_tone(f0, 0.0, sr, rng=rng, peak=0.5) * note_envelope(f0, sr)
    mix = voice.copy()
    if chords:
        acc = pad(chords, sr, peak=0.5 * 10 ** (accompaniment_db / 20))
        acc = np.pad(acc, (0, max(0, mix.shape[0] - acc.shape[0])))[: mix.shape[0]]
        mix += acc
    mix += 10 ** (noise_db / 20) * rng.standard_normal(mix.shape[0])
    return Song(mix.astype(np.float32), voice.astype(np.float32), f0, sr)


def looped(song: Song, duration: float) -> NDArray[np.float32]:
    """The song's mix repeated to ``duration`` [s] (for long benchmarks)."""
    n = int(round(duration * song.sr))
    reps = -(-n // song.audio.shape[0])
    return np.tile(song.audio, reps)[:n]

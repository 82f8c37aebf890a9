"""Synthesized audio for a song: a backing track (chords, bass, optional guide melody) and a
sung performance with a known f0, for the example, for trying the live mode without a real
backing track (``--backing synth``) and for the tests.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..synth import f0_contour, harmonic_tone, midi_to_hz, note_envelope, pad
from .song import KaraokeSong

_MAJOR = (0, 4, 7)
_MINOR = (0, 3, 7)


def chord_plan(song: KaraokeSong, window_s: float = 2.0) -> list[tuple[tuple[int, ...], float]]:
    """One triad per ``window_s`` of song time (from 0 to the end), the one whose pitch
    classes cover most of the melody's duration in that window (ties: major first, lower
    root first). Returns ``(midi notes, duration [s])`` pairs for :func:`melodyrt.rt.synth.pad`."""
    n_win = max(1, int(np.ceil(song.end / window_s)))
    plan: list[tuple[tuple[int, ...], float]] = []
    prev = (0, _MAJOR)
    for w in range(n_win):
        a, b = w * window_s, (w + 1) * window_s
        weight = np.zeros(12)
        for n in song.notes:
            if n.midi is None or n.end <= a or n.start >= b:
                continue
            weight[int(round(n.midi)) % 12] += min(b, n.end) - max(a, n.start)
        if weight.sum() > 0:
            best = max(((root, shape) for shape in (_MAJOR, _MINOR) for root in range(12)),
                       key=lambda rs: sum(weight[(rs[0] + i) % 12] for i in rs[1]) + (0.01 if rs[1] == _MAJOR else 0))
            prev = best
        root, shape = prev
        plan.append((tuple([36 + root] + [48 + root + i for i in shape]), window_s))
    return plan


def synth_backing(song: KaraokeSong, sr: int = 22050, *, guide_db: float | None = -14.0, lead_s: float = 0.0,
                  tail_s: float = 1.0) -> NDArray[np.float32]:
    """A backing track for ``song``: a chord pad with a bass note per two seconds, a soft
    click on each beat (UltraStar songs) and, unless ``guide_db`` is None, a quiet guide
    melody (the target notes as a flute-like tone) ``guide_db`` below the pad.

    Returns
    -------
    audio : ndarray [shape=(n,)] [float32], peak 0.5
    """
    dur = song.end + tail_s
    n = int(round(dur * sr))
    chords = chord_plan(song)
    x = np.zeros(n)
    acc = pad(chords, sr, peak=0.3)
    x[: min(n, acc.shape[0])] += acc[:n]
    beat_s = song.meta.get("beat_s")
    if beat_s:
        quarter = 4.0 * float(beat_s)
        gap = float(song.meta.get("gap_ms", 0.0)) / 1000.0
        k0 = int(np.ceil(-gap / quarter))
        click = np.exp(-np.arange(int(0.03 * sr)) / (0.004 * sr)) * np.sin(2 * np.pi * 1800 * np.arange(int(0.03 * sr)) / sr)
        for k in range(k0, int((dur - gap) / quarter) + 1):
            i = int(round((gap + k * quarter) * sr))
            if 0 <= i < n:
                seg = click[: n - i]
                x[i : i + seg.shape[0]] += 0.05 * seg
    if guide_db is not None:
        f0 = np.zeros(n)
        for note in song.notes:
            if note.midi is None:
                continue
            a, b = int(round(note.start * sr)), min(n, int(round(note.end * sr)))
            f0[a:b] = float(midi_to_hz(note.midi))
        guide = harmonic_tone(f0, 0.0, sr, formants=None, tilt=2.0, peak=0.3 * 10 ** (guide_db / 20))
        x += guide * note_envelope(f0, sr, 0.02, 0.04)
    if lead_s > 0:
        x = np.concatenate([np.zeros(int(round(lead_s * sr))), x])
    m = np.max(np.abs(x)) if x.size else 0.0
    return (x * (0.5 / m) if m > 0 else x).astype(np.float32)


def sung_f0(song: KaraokeSong, sr: int, *, cents: float = 0.0, vibrato_cents: float = 15.0,
            glide_s: float = 0.04, end_s: float | None = None) -> NDArray[np.float64]:
    """Per-sample f0 [Hz] of a singer performing ``song``: every pitched note (rap notes at
    their written pitch), ``cents`` off, with vibrato and glides; 0 in the rests and on
    freestyle notes."""
    end = song.end + 0.5 if end_s is None else end_s
    # Segment lengths from boundaries rounded to samples, so no rounding error accumulates.
    def n(t: float) -> int:
        return int(round(t * sr))

    notes: list[tuple[float | None, float]] = []
    t = 0.0
    for note in song.notes:
        if note.start > t:
            notes.append((None, (n(note.start) - n(t)) / sr))
        midi = (note.midi + cents / 100.0) if note.midi is not None else None
        notes.append((midi, (n(note.end) - n(max(t, note.start))) / sr))
        t = note.end
    if end > t:
        notes.append((None, (n(end) - n(t)) / sr))
    return f0_contour(notes, sr, vibrato_cents=vibrato_cents, glide_s=glide_s)


def sung_voice(f0: NDArray[np.float64], sr: int, seed: int = 0) -> NDArray[np.float32]:
    """A harmonic, vowel-like voice following ``f0`` (peak 0.5)."""
    rng = np.random.default_rng(seed)
    voice = harmonic_tone(f0, 0.0, sr, rng=rng, peak=0.5) * note_envelope(f0, sr)
    return voice.astype(np.float32)

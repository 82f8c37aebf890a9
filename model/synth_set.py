"""A generalisation test set that shares nothing with training: synthetic sung melodies over
the real accompaniment of the validation singers' clips.

The voices come from :mod:`melodyrt.rt.synth` (harmonics under vowel formants, vibrato,
glides, soft attacks) with melodies, vowels, voice ranges and seeds of their own; the
accompaniment is the left (karaoke) channel of the MIR-1K clips of the validation singers
(``Kenshin``, ``annar``: never trained on). The labels are the synthesis' own f0, exact.
MIR-1K's backing tracks are shared between singers, though: 22 of those 94 clips carry,
sample for sample, the accompaniment of a training clip (:func:`shared_backing` finds them;
the manifest marks them), so the evaluation scores the other 72, whose accompaniment
training never heard, apart from them.
Each clip's accompaniment carries one melody, rendered at every requested SNR (the same
melody, so the SNRs compare like with like) and alone (``snr = inf``).

Layout written by :func:`render_set` (the ADC2004/MIREX05 one that
:func:`melodyrt.model.datasets.discover` reads, one folder per SNR)::

    <out>/manifest.json                  what was rendered, from what, with which seed
    <out>/snr+0/<clip>-<voice>-snr+0.wav       mono float WAV at 8 kHz
    <out>/snr+0/<clip>-<voice>-snr+0REF.txt    "time f0" per 10 ms, 0 = unvoiced
    <out>/snr+5/...   <out>/voice/...

``melodyrt eval --checkpoint CKPT --data ../shared/data/mir1k8k --set synth-over-real``
renders it (once) and scores every folder; ``python -m melodyrt.model.synth_set`` only
renders. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from melodyrt.rt import synth
from melodyrt.rt.errors import MelodyRTError

from .datasets import Track, discover, load_track_audio

#: Bump when the rendering changes: a set on disk with another version is rendered again.
SET_VERSION = 3
DEFAULT_SINGERS = ("Kenshin", "annar")
DEFAULT_SNRS: tuple[float, ...] = (0.0, 5.0, math.inf)
DEFAULT_SEED = 20261202
LABEL_HOP_S = 0.01

#: Voice types: MIDI range of the melody (lowest, highest note).
VOICE_RANGES: dict[str, tuple[int, int]] = {
    "bass": (40, 52),      # E2-E3, 82-165 Hz
    "baritone": (45, 57),  # A2-A3
    "tenor": (50, 64),     # D3-E4
    "alto": (55, 67),      # G3-G4
    "mezzo": (59, 72),     # B3-C5
    "soprano": (64, 79),   # E4-G5, 330-784 Hz
}
#: Vowel formants (centre [Hz], half-width [Hz], amplitude), as :data:`melodyrt.rt.synth.VOWEL_A`.
VOWELS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "a": synth.VOWEL_A,
    "e": ((480.0, 90.0, 1.0), (1900.0, 150.0, 0.5), (2600.0, 220.0, 0.3)),
    "i": ((300.0, 70.0, 1.0), (2250.0, 160.0, 0.45), (3000.0, 250.0, 0.3)),
    "o": ((500.0, 90.0, 1.0), (850.0, 110.0, 0.7), (2500.0, 220.0, 0.15)),
    "u": ((330.0, 70.0, 1.0), (800.0, 110.0, 0.4), (2400.0, 220.0, 0.1)),
}


def snr_tag(snr_db: float) -> str:
    """Folder and name tag of an SNR: ``snr+0``, ``snr-5``, ``voice`` (no accompaniment)."""
    return "voice" if math.isinf(snr_db) else f"snr{snr_db:+g}"


def random_melody(rng: np.random.Generator, duration: float, lo: int, hi: int) -> list[tuple[list, dict]]:
    """Phrases of notes filling ``duration`` [s]: a list of (notes, style) pairs.

    Each phrase is 3-8 notes of 0.15-0.9 s moving mostly by small steps inside
    ``[lo, hi]`` (MIDI), preceded by a rest of 0.15-1 s (the last phrase is cut short at
    ``duration``); ``style`` holds the phrase's
    vibrato, glide, vowel, spectral tilt and level.
    """
    phrases: list[tuple[list, dict]] = []
    t = 0.0
    note = int(rng.integers(lo, hi + 1))
    while t < duration:
        rest = float(rng.uniform(0.15, 1.0))
        notes: list[tuple[float | None, float]] = [(None, rest)]
        t += rest
        for _ in range(int(rng.integers(3, 9))):
            step = int(rng.choice([-5, -4, -3, -2, -2, -1, -1, 0, 1, 1, 2, 2, 3, 4, 5]))
            note = int(np.clip(note + step, lo, hi))
            d = min(float(rng.uniform(0.15, 0.9)), duration - t)  # the last phrase ends with the clip
            if d < 0.15:
                break
            notes.append((float(note), d))
            t += d
        if len(notes) == 1:
            break
        style = dict(vibrato_hz=float(rng.uniform(4.5, 6.5)), vibrato_cents=float(rng.uniform(0.0, 60.0)),
                     glide_s=float(rng.uniform(0.02, 0.12)), vowel=str(rng.choice(sorted(VOWELS))),
                     tilt=float(rng.uniform(0.3, 1.0)), level_db=float(rng.uniform(-4.0, 4.0)))
        phrases.append((notes, style))
    return phrases


def sing(phrases: list[tuple[list, dict]], n: int, sr: int, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """Render phrases to a voice of ``n`` samples and its per-sample f0 [Hz] (0 = rest)."""
    voice = np.zeros(n)
    f0 = np.zeros(n)
    pos = 0
    for notes, style in phrases:
        f = synth.f0_contour(notes, sr, vibrato_hz=style["vibrato_hz"], vibrato_cents=style["vibrato_cents"],
                             glide_s=style["glide_s"])
        x = synth.harmonic_tone(f, 0.0, sr, formants=VOWELS[style["vowel"]], tilt=style["tilt"], rng=rng, peak=0.5)
        x = x * synth.note_envelope(f, sr) * 10.0 ** (style["level_db"] / 20.0)
        m = min(f.shape[0], n - pos)
        voice[pos : pos + m] = x[:m]
        f0[pos : pos + m] = f[:m]
        pos += f.shape[0]
    return voice, f0


def _rms(x: NDArray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _chroma(x: NDArray, sr: int) -> NDArray[np.float64]:
    """Unit-norm, mean-free 12-bin chroma per 50 ms frame (80-2000 Hz), log-compressed."""
    from scipy import signal as sps

    f, _, z = sps.stft(x, sr, nperseg=1024, noverlap=1024 - sr // 20)
    p = np.abs(z) ** 2
    ok = (f > 80) & (f < 2000)
    c = np.zeros((12, p.shape[1]))
    np.add.at(c, np.round(12 * np.log2(f[ok] / 440.0)).astype(int) % 12, p[ok])
    c = np.log1p(c / (c.mean() + 1e-12))
    c = c - c.mean(axis=0, keepdims=True)
    return c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)


def _waveform_match(a: NDArray, b: NDArray) -> tuple[float, float]:
    """Normalised correlation of ``a`` and ``b`` at their best lag, and the overlap [samples]."""
    n = a.shape[0] + b.shape[0] - 1
    size = 1 << int(math.ceil(math.log2(n)))
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    k = int(np.argmax(xc))
    lag = k if k < size // 2 else k - size
    aa, bb = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
    m = min(aa.shape[0], bb.shape[0])
    aa, bb = aa[:m].astype(np.float64), bb[:m].astype(np.float64)
    return float(np.dot(aa, bb) / np.sqrt(np.dot(aa, aa) * np.dot(bb, bb) + 1e-12)), float(m)


def shared_backing(tracks: list[Track], singers: Sequence[str], sr: int = 8000, min_overlap_s: float = 1.0,
                   progress: bool = True) -> dict[str, list[str]]:
    """Clips of ``singers`` whose accompaniment also occurs in another singer's clip.

    MIR-1K's karaoke backing tracks are shared between singers (several sang the same song):
    a held-out singer's clip may carry, sample for sample, the accompaniment of a training
    clip. Candidates come from a chroma cross-correlation over all lags (> 0.85 on at least
    ``min_overlap_s`` of overlap); a pair counts when the waveforms correlate above 0.9 at
    their best lag over at least ``min_overlap_s``.

    Returns
    -------
    dict
        Clip name -> names of the other singers' clips that share its accompaniment (only
        clips that share one).
    """
    from tqdm import tqdm

    held = [t for t in tracks if t.singer in singers and t.voice_channel is not None]
    others = [t for t in tracks if t.singer not in singers and t.voice_channel is not None]
    if not held or not others:
        return {}
    acc = [load_track_audio(t, sr)[1] for t in tqdm(held + others, desc="backing check", unit="clip",
                                                     disable=not progress)]
    chroma = [_chroma(a, sr) for a in acc]
    acc_h, acc_o, ch_h, ch_o = acc[: len(held)], acc[len(held) :], chroma[: len(held)], chroma[len(held) :]
    lens = np.array([c.shape[1] for c in ch_o])
    size = 1 << int(math.ceil(math.log2(2 * max(c.shape[1] for c in chroma))))
    spectra = np.stack([np.fft.rfft(c, size, axis=1) for c in ch_o])
    lags = np.arange(size)
    lags = np.where(lags < size // 2, lags, lags - size)
    min_frames = max(1, int(round(min_overlap_s * 20)))  # chroma frames are 50 ms
    out: dict[str, list[str]] = {}
    for t, a, c in zip(held, acc_h, ch_h):
        xc = np.fft.irfft((np.fft.rfft(c, size, axis=1)[None] * np.conj(spectra)).sum(axis=1), size, axis=1)
        overlap = np.minimum(c.shape[1], lens[:, None] + lags[None]) - np.maximum(0, lags[None])
        score = np.where(overlap >= min_frames, xc / np.maximum(overlap, 1), -1.0).max(axis=1)
        hits = []
        for j in np.flatnonzero(score > 0.85):
            r, m = _waveform_match(a, acc_o[j])
            if r > 0.9 and m >= min_overlap_s * sr:
                hits.append(others[j].name)
        if hits:
            out[t.name] = sorted(hits)
    return out


def _params(data: Path, singers: Sequence[str], snrs: Sequence[float], seed: int, names: list[str]) -> dict:
    return {"version": SET_VERSION, "data": str(Path(data).resolve()), "singers": list(singers),
            "snrs": [snr_tag(s) for s in snrs], "seed": int(seed), "clips": names}


def set_hash(manifest: dict) -> str:
    """Short hash of what a set was rendered from (names the feature cache of its tracks)."""
    keys = {k: manifest[k] for k in ("version", "singers", "snrs", "seed", "clips")}
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


def render_set(data: str | Path, out: str | Path, singers: Sequence[str] = DEFAULT_SINGERS,
               snrs: Sequence[float] = DEFAULT_SNRS, seed: int = DEFAULT_SEED, progress: bool = True) -> dict:
    """Render the set into ``out`` (nothing to do when ``out`` already holds the same set).

    Parameters
    ----------
    data : path
        MIR-1K folder (``audio/``, ``pitch/``): the accompaniments are read from it.
    out : path
        Folder to write; outside the repository (it holds MIR-1K-derived audio).
    singers : sequence of str
        Whose clips lend their accompaniment (never training singers).
    snrs : sequence of float [dB]
        Voice-to-accompaniment ratio of whole-clip RMS levels (MIR-1K's convention);
        ``inf`` renders the voice alone.
    seed : int

    Returns
    -------
    manifest : dict
        Parameters, ``hash``, ``shared_backing`` (:func:`shared_backing` of the clips), and
        per track: name, folder, clip, voice type, SNR, duration [s], voiced fraction,
        ``backing_in_training`` (its accompaniment also occurs in a training singer's clip).

    Raises
    ------
    MelodyRTError
        When ``data`` has no multitrack clip of ``singers``.
    """
    import soundfile as sf
    from tqdm import tqdm

    out = Path(out)
    layout, tracks = discover(data)
    clips = [t for t in tracks if t.singer in singers and t.voice_channel is not None]
    if not clips:
        raise MelodyRTError(f"no multitrack clips of singers {', '.join(singers)} in {data} (layout {layout})")
    params = _params(Path(data), singers, snrs, seed, [t.name for t in clips])
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in params if k != "data"} == {k: v for k, v in params.items() if k != "data"}:
            return old
    for s in snrs:
        (out / snr_tag(s)).mkdir(parents=True, exist_ok=True)
    shared = shared_backing(tracks, singers, progress=progress)
    types = sorted(VOICE_RANGES)
    order = np.random.default_rng(seed).permutation(len(clips))  # every voice type on 1/6 of the clips
    entries = []
    for i, t in enumerate(tqdm(clips, desc="synth-over-real", unit="clip", disable=not progress)):
        rng = np.random.default_rng([seed, i])
        _, accomp = load_track_audio(t, 8000)
        assert accomp is not None
        vtype = types[int(order[i]) % len(types)]
        lo, hi = VOICE_RANGES[vtype]
        n = accomp.shape[0]
        voice, f0 = sing(random_melody(rng, n / 8000 - 0.2, lo, hi), n, 8000, rng)
        times = np.arange(0.0, n / 8000, LABEL_HOP_S)
        ref = np.stack([times, f0[np.minimum(np.round(times * 8000).astype(int), n - 1)]], axis=1)
        gain_v = _rms(accomp) / max(_rms(voice), 1e-9)  # voice at the accompaniment's clip RMS: 0 dB
        for s in snrs:
            name = f"{t.name}-{vtype}-{snr_tag(s)}"
            mix = voice * gain_v * (1.0 if math.isinf(s) else 10.0 ** (s / 20.0))
            if not math.isinf(s):
                mix = mix + accomp
            peak = float(np.max(np.abs(mix)))
            if peak > 0.99:  # keep the file inside full scale (one gain: the SNR is unchanged)
                mix = mix * (0.99 / peak)
            folder = out / snr_tag(s)
            sf.write(folder / f"{name}.wav", mix.astype(np.float32), 8000, subtype="FLOAT")
            np.savetxt(folder / f"{name}REF.txt", ref, fmt="%.3f %.4f")
            entries.append({"name": name, "folder": snr_tag(s), "clip": t.name, "voice": vtype, "snr": snr_tag(s),
                            "seconds": round(n / 8000, 3), "voiced": round(float(np.mean(ref[:, 1] > 0)), 3),
                            "backing_in_training": t.name in shared})
    manifest = dict(params, hash=set_hash(params), shared_backing=shared, tracks=entries)
    path.write_text(json.dumps(manifest, indent=1))
    return manifest


def set_tracks(out: str | Path, manifest: dict) -> dict[str, list[Track]]:
    """The rendered tracks per folder (``snr+0``, ..., ``voice``), read back by ``discover``."""
    result = {}
    for tag in manifest["snrs"]:
        _, tracks = discover(Path(out) / tag)
        result[tag] = tracks
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m melodyrt.model.synth_set --data DIR --out DIR``: render the set."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="MIR-1K folder (accompaniments)")
    ap.add_argument("--out", required=True, help="folder to render into (outside the repository)")
    ap.add_argument("--singers", nargs="+", default=list(DEFAULT_SINGERS))
    ap.add_argument("--snr", nargs="+", type=float, default=list(DEFAULT_SNRS), help="dB; inf = voice alone")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    m = render_set(args.data, args.out, args.singers, args.snr, args.seed)
    print(f"{args.out}: {len(m['tracks'])} tracks in {', '.join(m['snrs'])} (set {m['hash']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

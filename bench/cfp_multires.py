"""How the analysis window trades delay for pitch evidence: the measurement behind the
``multires`` defaults.

For each candidate window the CFP of a few voices is computed with the real front end
(:class:`melodyrt.rt.cfp.StreamingCFP`), and a voiced frame counts as a hit when the product
``Z = GCoS * GC`` peaks within 50 cents of the true f0 (the check of the MF-TFA reference,
section 2.8: 98 % with the reference code). Frames are scored at the time the stream says
they describe (``(k + 1) * hop - delay_samples``, as training aligns its labels); a second
score uses the delay of the row holding the true f0 (``row_delay_samples``), which differs
for ``multires`` when f0 is below the crossfade.

Voices: the demo melody (C4-A4, with accompaniment), the same kind of line sung low
(E2-D3, 82-147 Hz), in between (D3-A#3, 147-233 Hz) and high (G4-G5, 392-784 Hz), those
three without accompaniment, and MIR-1K voice channels of eight singers (``--data``), from
the lowest (davidson, f0 ~100-160 Hz) to the highest. A second table pools every voiced
frame by its true f0: where the short window's Z is as good as the long one's is where the
split belongs.

Run: ``python -m melodyrt.bench.cfp_multires [--data DIR] [--out FILE.json]``
(about a minute on one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from melodyrt.rt.cfp import StreamingCFP, bin_frequencies
from melodyrt.rt.config import CfpConfig, NormConfig
from melodyrt.rt.synth import sung_melody

DEFAULT_DATA = Path("/work/shared/data/mir1k8k")
#: MIR-1K singers scored, lowest voices first (one clip each: the one whose median f0 is
#: closest to the singer's median).
MIR1K_SINGERS = ("davidson", "abjones", "jmzen", "khair", "geniusturtle", "leon", "amy", "yifen")
LOW_LINE = ((None, 0.3), (45, 0.6), (47, 0.5), (48, 0.6), (50, 0.9), (43, 0.6), (41, 0.6), (None, 0.3),
            (40, 0.6), (45, 0.8), (None, 0.2))
MID_LINE = ((None, 0.3), (50, 0.6), (52, 0.5), (53, 0.6), (55, 0.9), (57, 0.6), (58, 0.6), (None, 0.3),
            (53, 0.6), (50, 0.8), (None, 0.2))
HIGH_LINE = ((None, 0.3), (67, 0.6), (69, 0.5), (71, 0.6), (72, 0.9), (74, 0.6), (76, 0.6), (None, 0.3),
             (79, 0.6), (72, 0.8), (None, 0.2))
#: (short_length, short_fall) candidates [samples at 8 kHz] and crossfade centres [Hz].
SHORT_WINDOWS = ((128, 32), (192, 32), (256, 32), (320, 32))
SPLITS_HZ = (150.0, 200.0, 250.0, 300.0, 400.0, 500.0)
#: Falling sides of the long window tried at the default short window and split [samples].
LONG_FALLS = (128, 192)
#: f0 bands of the second table [Hz].
F0_EDGES = (80.0, 120.0, 160.0, 200.0, 250.0, 300.0, 350.0, 400.0, 500.0, 800.0)
TOLERANCE_CENTS = 50.0


@dataclass(frozen=True)
class Voice:
    """Audio at 8 kHz with its f0 on any time grid."""

    name: str
    audio: NDArray[np.float64]
    label_times: NDArray[np.float64]
    label_f0: NDArray[np.float64]

    def f0_at(self, times: NDArray[np.float64]) -> NDArray[np.float64]:
        from melodyrt.model.datasets import labels_on_frames

        return labels_on_frames(self.label_times, self.label_f0, times)


def synthetic_voices() -> list[Voice]:
    """The demo mix and three unaccompanied lines (low, mid, high); f0 per sample."""
    out = []
    for name, notes, chords in (("demo", None, True), ("low", LOW_LINE, None), ("mid", MID_LINE, None),
                                ("high", HIGH_LINE, None)):
        kwargs: dict[str, Any] = {} if notes is None else {"notes": notes, "chords": chords}
        song = sung_melody(sr=8000, seed=0, **kwargs)
        t = np.arange(song.f0.shape[0]) / song.sr
        out.append(Voice(name, song.audio.astype(np.float64), t, song.f0))
    return out


def mir1k_voices(root: Path, singers: Sequence[str] = MIR1K_SINGERS) -> list[Voice]:
    """One voice-channel clip per singer (empty when the data set is not there)."""
    from melodyrt.model.datasets import load_track_audio, read_mir1k

    if not (root / "audio").is_dir():
        return []
    tracks = read_mir1k(root)
    out = []
    for singer in singers:
        mine = [t for t in tracks if t.singer == singer and np.any(t.label_f0 > 0)]
        if not mine:
            continue
        medians = np.array([np.median(t.label_f0[t.label_f0 > 0]) for t in mine])
        track = mine[int(np.argmin(np.abs(medians - np.median(medians))))]
        voice, _ = load_track_audio(track, 8000)
        out.append(Voice(track.name, voice.astype(np.float64), track.label_times, track.label_f0))
    return out


def z_peak_hits(cfg: CfpConfig, voice: Voice) -> dict[str, Any]:
    """Hits of the Z peak on the voiced frames of one voice, at both delays."""
    stream = StreamingCFP(cfg, NormConfig(mode="none"), max_block=voice.audio.shape[0] + 1)
    frames = np.expm1(stream.process(voice.audio).astype(np.float64))
    freqs = bin_frequencies(cfg)
    peak = freqs[np.argmax(frames[:, 1] * frames[:, 2], axis=1)]
    ends = (np.arange(frames.shape[0]) + 1) * cfg.hop
    truth = voice.f0_at((ends - stream.delay_samples) / cfg.sample_rate)
    voiced = truth > 0
    hit = np.abs(1200.0 * np.log2(peak[voiced] / truth[voiced])) <= TOLERANCE_CENTS
    band = np.digitize(truth[voiced], F0_EDGES) - 1
    inside = (band >= 0) & (band < len(F0_EDGES) - 1)
    n_bands = len(F0_EDGES) - 1
    # Per-row delay: look up the truth again at the delay of the row nearest to it.
    row = np.clip(np.round(cfg.bins_per_octave * np.log2(np.maximum(truth, 1.0) / cfg.fmin)), 0, 359).astype(int)
    truth_row = voice.f0_at((ends - stream.row_delay_samples[row]) / cfg.sample_rate)
    ok = (truth_row > 0) & voiced
    hit_row = np.abs(1200.0 * np.log2(peak[ok] / truth_row[ok])) <= TOLERANCE_CENTS
    return {"voiced": int(voiced.sum()), "hits": int(hit.sum()), "voiced_row": int(ok.sum()),
            "hits_row": int(hit_row.sum()),
            "band_voiced": np.bincount(band[inside], minlength=n_bands).tolist(),
            "band_hits": np.bincount(band[inside], weights=hit[inside], minlength=n_bands).astype(int).tolist()}


def candidates() -> list[tuple[str, CfpConfig]]:
    """The baselines and the (short window, split) grid."""
    out = [("symmetric", CfpConfig()), ("asymmetric", CfpConfig(window="asymmetric"))]
    base = CfpConfig(window="multires")
    for length, fall in SHORT_WINDOWS:
        out.append((f"short only {length}/{fall}", replace(CfpConfig(window="asymmetric"), win_length=length,
                                                          asym_fall=fall, n_fft=base.short_n_fft)))
        for split in SPLITS_HZ:
            out.append((f"multires {length}/{fall} split {split:g}",
                        replace(base, short_length=length, short_fall=fall, split_hz=split)))
    for fall in LONG_FALLS:
        out.append((f"multires default, long fall {fall}", replace(base, asym_fall=fall)))
    return out


def run(voices: list[Voice], configs: list[tuple[str, CfpConfig]] | None = None) -> list[dict[str, Any]]:
    """Score every candidate on every voice."""
    rows = []
    for label, cfg in configs or candidates():
        stream = StreamingCFP(cfg)
        per = {v.name: z_peak_hits(cfg, v) for v in voices}
        rows.append({"label": label, "cfg": asdict(cfg), "delay_ms": 1000 * stream.delay_samples / cfg.sample_rate,
                     "low_row_delay_ms": 1000 * float(stream.row_delay_samples[0]) / cfg.sample_rate,
                     "voices": per})
    return rows


def _pct(hits: int, n: int) -> str:
    return f"{100 * hits / n:.1f}" if n else "-"


def table(rows: list[dict[str, Any]], voices: list[Voice]) -> str:
    """Markdown table: delay and % of voiced frames with the Z peak within 50 cents."""
    synth = [v.name for v in voices if not v.name.startswith(MIR1K_SINGERS)]
    real = [v.name for v in voices if v.name.startswith(MIR1K_SINGERS)]
    low_real = [n for n in real if n.startswith(MIR1K_SINGERS[:3])]
    head = ["window", "delay ms (low rows)", *synth]
    if real:
        head += ["MIR-1K low 3", f"MIR-1K all {len(real)}", "MIR-1K all, row delay"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        v = r["voices"]
        cells = [r["label"], f"{r['delay_ms']:.2f} ({r['low_row_delay_ms']:.1f})"]
        cells += [_pct(v[n]["hits"], v[n]["voiced"]) for n in synth]
        if real:
            def pooled(names: list[str], key: str = "hits", n: str = "voiced") -> str:
                return _pct(sum(v[m][key] for m in names), sum(v[m][n] for m in names))
            cells += [pooled(low_real), pooled(real), pooled(real, "hits_row", "voiced_row")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def band_table(rows: list[dict[str, Any]], labels: Sequence[str]) -> str:
    """Markdown table: % of voiced frames within 50 cents per true-f0 band, all voices pooled."""
    head = ["window", *(f"{lo:g}-{hi:g}" for lo, hi in zip(F0_EDGES[:-1], F0_EDGES[1:]))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["label"] not in labels:
            continue
        n = np.sum([v["band_voiced"] for v in r["voices"].values()], axis=0)
        h = np.sum([v["band_hits"] for v in r["voices"].values()], axis=0)
        lines.append("| " + " | ".join([r["label"], *(_pct(int(a), int(b)) for a, b in zip(h, n))]) + " |")
    first = next(r for r in rows if r["label"] in labels)
    n = np.sum([v["band_voiced"] for v in first["voices"].values()], axis=0)
    lines.append("| voiced frames | " + " | ".join(str(int(x)) for x in n) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MIR-1K at 8 kHz (skipped if missing)")
    p.add_argument("--out", type=Path, help="also write the raw counts as JSON")
    args = p.parse_args(argv)
    StreamingCFP(CfpConfig(window="multires")).warmup()
    voices = synthetic_voices() + mir1k_voices(args.data)
    t0 = time.perf_counter()
    rows = run(voices)
    print(table(rows, voices))
    print()
    print(band_table(rows, [r["label"] for r in rows if not r["label"].startswith("multires")]))
    print(f"\n{len(voices)} voices: {', '.join(v.name for v in voices)}; {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

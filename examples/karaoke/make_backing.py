"""Synthesize the backing track of the example song (and, optionally, a sung performance).

    python examples/karaoke/make_backing.py                 # -> little_lantern_backing.wav
    python examples/karaoke/make_backing.py --performance   # also little_lantern_sung.wav
    melodyrt karaoke examples/karaoke/little_lantern.txt    # sing (the .txt names the backing)
    melodyrt karaoke --score-file examples/karaoke/little_lantern.txt examples/karaoke/little_lantern_sung.wav

The backing is a chord pad with a bass, a soft click on every beat and a quiet guide melody
(``--no-guide`` leaves it out). The performance is a synthetic voice singing the melody
(``--cents`` off pitch) over the backing, to try ``--score-file`` without singing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from melodyrt.rt.audio_io import write_wav
from melodyrt.rt.karaoke.backing import sung_f0, sung_voice, synth_backing
from melodyrt.rt.karaoke.song import load_song

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--song", default=str(HERE / "little_lantern.txt"))
    ap.add_argument("--rate", type=int, default=44100)
    ap.add_argument("--no-guide", action="store_true", help="leave the guide melody out")
    ap.add_argument("--performance", action="store_true", help="also write <song>_sung.wav")
    ap.add_argument("--cents", type=float, default=0.0, help="how far off pitch the synthetic singer is")
    args = ap.parse_args()
    song = load_song(args.song)
    stem = Path(args.song).with_suffix("")
    backing = synth_backing(song, args.rate, guide_db=None if args.no_guide else -14.0)
    out = write_wav(f"{stem}_backing.wav", backing, args.rate)
    print(f"wrote {out} ({backing.shape[0] / args.rate:.1f} s)")
    if args.performance:
        f0 = sung_f0(song, args.rate, cents=args.cents, end_s=backing.shape[0] / args.rate)
        voice = sung_voice(f0, args.rate)
        n = min(voice.shape[0], backing.shape[0])
        mix = 0.8 * voice[:n] + 0.25 * synth_backing(song, args.rate, guide_db=None)[:n]
        out = write_wav(f"{stem}_sung.wav", (0.9 * mix / np.max(np.abs(mix))).astype(np.float32), args.rate)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

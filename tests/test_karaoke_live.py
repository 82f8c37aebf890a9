"""The live path on real audio streams: JACK's dummy driver, the backing track played on the
output and wired back into the input, the tracker and the alignment in between.

The "backing track" here is a synthetic voice singing the test song, so what the input hears
is a singer exactly on time. The test checks the timing, not the pitch (the model is an
untrained export): the voice's onset, found from the tracker's frames (``loudness_db`` of the
audio each frame describes), must land where the raw input samples put it on the song
timeline, which rules out a second subtraction of the tracker's delay.

It runs in a subprocess: PortAudio must initialise after jackd starts and terminate before
it stops, and an abort there must not take pytest down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from melodyrt.rt.audio_io import write_wav
from melodyrt.rt.karaoke.backing import sung_f0, sung_voice
from melodyrt.rt.karaoke.song import load_song

HERE = Path(__file__).resolve().parent
TEST_SONG = HERE / "data" / "karaoke_test_song.txt"

SCRIPT = r"""
import json, subprocess, sys
import numpy as np
import melodyrt.rt.karaoke.live as live
from melodyrt.rt.karaoke.session import KaraokeSession
from melodyrt.rt.karaoke.song import load_song

song_path, backing, bundle, out = sys.argv[1:5]
song = load_song(song_path)
raw = np.zeros(48000 * 30, np.float32)
n_raw = [0]
sources, sinks, frames, wired = [], [], [], []


class Source(live._AligningSource):
    # Records the raw input in the worker thread (its pre hook), not in the audio callback:
    # harness code in JACK's real-time thread would need the GIL there. The worker reads the
    # ring in order, so with no sample dropped its positions are the callback's.

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pre = self._record
        sources.append(self)

    def _record(self, block):
        k, n = n_raw[0], block.shape[0]
        m = max(0, min(n, raw.shape[0] - k))
        raw[k:k + m] = block[:m]
        n_raw[0] = k + n
        return block


class Sink(live.LiveKaraoke):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sinks.append(self)

    def send(self, frame):
        t = self.song_time(frame)
        if t is not None:
            frames.append((t, frame.loudness_db))
        super().send(frame)


def tick():
    if not wired:  # the output wired into the input: the "microphone" hears the "speaker"
        wired.append(subprocess.run(["jack_connect", "PortAudio:out_0", "PortAudio:in_0"]).returncode)
        subprocess.run(["jack_disconnect", "system:capture_1", "PortAudio:in_0"])


live._AligningSource, live.LiveKaraoke = Source, Sink
session = KaraokeSession(song)
res = live.run_live(session, backing=backing, device="JACK", output_device="JACK", bundle=bundle,
                    lead_in_s=1.0, on_tick=tick)
src, sink = sources[0], sinks[0]
loud = np.abs(raw[:min(n_raw[0], raw.shape[0])]) > 0.003
i0, i1 = int(np.argmax(loud)), int(loud.shape[0] - 1 - np.argmax(loud[::-1]))
t = np.array([f[0] for f in frames])
db = np.array([f[1] for f in frames])
json.dump({
    "wired": wired, "frames": len(frames), "finished": session.final is not None,
    "raw_onset": sink.player.song_time_at(src.stamps.time_of(i0)),
    "raw_end": sink.player.song_time_at(src.stamps.time_of(i1)),
    "frame_onset": float(t[np.argmax(db > -40)]),
    "frame_end": float(t[len(db) - 1 - np.argmax(db[::-1] > -40)]),
    "offset_s": res.offset_s, "last_offset_s": res.last_offset_s, "monotonic": res.monotonic,
    "stats": res.source_stats.line(), "underflows": res.underflows,
    "dropped": res.source_stats.dropped_samples,
}, open(out, "w"))
"""


@pytest.fixture()
def jack_env():
    """A private jackd (dummy driver, 48 kHz, 256-frame periods) for one test: the bench's
    JackServer under a fixed name, stopped cleanly (a dead one's slot reclaimed) at the end."""
    if shutil.which("jackd") is None or shutil.which("jack_connect") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2)")
    from melodyrt.bench.e2e_bench import JackServer, Unavailable

    try:
        server = JackServer(48000, 256, name="melodyrt-karaoke", default=False)  # the subprocess gets it in env
    except Unavailable as exc:
        pytest.skip(f"jackd did not start (dummy driver): {exc}")
    try:
        yield dict(os.environ, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    finally:
        server.close()


def test_live_session_on_jack_aligns_the_voice_with_the_song(jack_env, untrained_bundle, tmp_path):
    pytest.importorskip("melodyrt.rt.source", reason="the audio source (rt/source.py) is not there")
    song = load_song(TEST_SONG)
    sr = 48000
    voice = write_wav(tmp_path / "voice.wav", sung_voice(sung_f0(song, sr), sr), sr)
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(TEST_SONG), str(voice), str(untrained_bundle.root), str(out)],
                         env=jack_env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(out.read_text())
    print(json.dumps(r))
    assert r["wired"] == [0] and r["finished"] and not r["monotonic"]
    assert r["dropped"] == 0, r  # the raw record's positions are the callback's only then
    assert r["frames"] > 500  # ~8 s of frames at 100/s
    first = song.notes[0].start
    # The wire skips the hardware paths whose latency PortAudio reports (a few periods), so
    # the voice arrives a little early on the song timeline, never late.
    early = first - r["raw_onset"]
    assert -0.005 <= early <= 0.04, r
    # The tracker's frames put the onset where the raw samples do (the -40 dB threshold
    # and the 10 ms hop make it up to ~15 ms later). A second subtraction of the tracker's
    # delay (1077 samples, 22 ms here) would put it before.
    assert -0.003 <= r["frame_onset"] - r["raw_onset"] <= 0.015, r
    assert abs((r["raw_end"] - r["raw_onset"]) - (song.end - first)) < 0.02, r  # no drift or slip
    assert abs(r["frame_end"] - r["raw_end"]) < 0.02, r

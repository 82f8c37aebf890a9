"""`melodyrt bench e2e --quick` on a private JACK dummy server: the machinery and report fields.

Never asserts latencies (an untrained model; a loaded machine). Skips with the reason when
jackd, JACK-Client or PortAudio is missing.
"""

from __future__ import annotations

import json
import shutil

import pytest

from melodyrt.rt.cli import main

pytestmark = pytest.mark.jack


def test_e2e_quick_through_jack(untrained_bundle, tmp_path, capsys):
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
    pytest.importorskip("jack", reason="JACK-Client not installed")
    out = tmp_path / "e2e"
    code = main(["bench", "e2e", "--quick", "--model", str(untrained_bundle.root), "--out", str(out)])
    printed = capsys.readouterr().out
    if "cannot run here" in printed:
        pytest.skip(printed.strip().splitlines()[-1])
    assert code == 0
    r = json.loads((out / "e2e_bench.json").read_text())
    assert r["quick"] is True and r["settings"]["phrases"] == 10
    for kind in ("midi_note_on", "midi_pitch_change", "osc_note_on", "osc_pitch_change"):
        v = r["latency"][kind]
        assert v["events"] == 10 and v["answered"] + v["missed"] == 10
        assert all(x >= 0 for x in v["latencies_ms"]), "an answer never precedes its acoustic event"
    assert r["osc_datagrams"] > 100, "one OSC bundle per 10 ms frame"
    assert r["midi_messages"] > 0 and r["algorithmic"]["cfp_window"]["ms"] > 0
    assert (out / "e2e_hist.png").is_file() and "JACK dummy driver" in (out / "e2e_bench.md").read_text()


def test_analyse_matches_arrivals_to_events():
    """Known arrivals: note-on 5 ms after the onset; the new note 12 ms after the step."""
    import mido
    from pythonosc.osc_message_builder import OscMessageBuilder

    from melodyrt.bench.e2e_bench import Phrase, analyse

    rate = 48000
    ph = [Phrase(onset=4800, step=9600, end=14400, first=60, second=64)]
    on = mido.Message("note_on", note=60, velocity=90).bytes()
    off = mido.Message("note_off", note=60).bytes()
    on2 = mido.Message("note_on", note=64, velocity=90).bytes()
    start = 1000
    midi = [(start + 4800 + 240, bytes(on)), (start + 9600 + 576, bytes(off)), (start + 9600 + 576, bytes(on2))]
    b = OscMessageBuilder("/melodyrt/f0")
    b.add_arg(329.63, "f")
    osc = [(start + 9600 + 480, b.build().dgram)]
    res = analyse(ph, start, midi, osc, rate)
    assert res["midi_note_on"]["latencies_ms"] == [5.0]
    assert res["midi_pitch_change"]["latencies_ms"] == [12.0]
    assert res["osc_pitch_change"]["latencies_ms"] == [10.0]
    assert res["osc_note_on"]["missed"] == 1

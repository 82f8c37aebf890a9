"""OSC output over real UDP loopback: a BlockingOSCUDPServer receives the bundles."""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest
from pythonosc import osc_bundle
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from melodyrt.rt.frames import PitchFrame
from melodyrt.rt.osc_out import OscSink, OscTargetError, parse_target

ADDRESSES = ["/melodyrt/frame", "/melodyrt/f0", "/melodyrt/midi", "/melodyrt/voicing", "/melodyrt/confidence",
             "/melodyrt/loudness"]


class Recorder(Dispatcher):
    """Keeps every bundle as (time tag [s since 1970], [(address, args), ...]) in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.packets: list[tuple[float, list[tuple[str, tuple]]]] = []
        self.lock = threading.Lock()

    def call_handlers_for_packet(self, data, client_address):  # noqa: ANN001
        # OscPacket replaces past time tags by "now"; read the bundle itself.
        bundle = osc_bundle.OscBundle(data)
        msgs = [(m.address, tuple(m.params)) for m in bundle]
        with self.lock:
            self.packets.append((bundle.timestamp, msgs))
        return []


@pytest.fixture
def osc_server():
    rec = Recorder()
    server = BlockingOSCUDPServer(("127.0.0.1", 0), rec)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], rec
    server.shutdown()
    server.server_close()
    thread.join(2)


def frames(track: list[float | None], start_time: float = 0.0) -> list[PitchFrame]:
    out = []
    for i, m in enumerate(track):
        f0 = 440.0 * 2 ** ((m - 69) / 12) if m is not None else 0.0
        out.append(PitchFrame(i, i * 480, start_time + i * 0.01, f0, m is not None, 0.8 if m else 0.05, -20.0 - i * 0.1))
    return out


def wait_for(rec: Recorder, n: int, timeout: float = 2.0) -> list:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with rec.lock:
            if len(rec.packets) >= n:
                break
        time.sleep(0.01)
    with rec.lock:
        return list(rec.packets)


def test_bundles_in_order_with_documented_addresses_and_time_tags(osc_server):
    port, rec = osc_server
    epoch = 1_750_000_000.0     # wall-clock time of sample 0 [s since 1970]
    sink = OscSink("127.0.0.1", port, epoch=epoch, onset_frames=2, min_note_frames=3, release_frames=2)
    track: list[float | None] = [None] * 5 + [69.0] * 30 + [None] * 10 + [72.3] * 15
    fs = frames(track)
    t0 = time.monotonic()
    for k, f in enumerate(fs):
        delay = t0 + k * 0.005 - time.monotonic()     # a real rate (200 frames/s), not a burst
        if delay > 0:
            time.sleep(delay)
        sink.send(f)
    sink.close()
    sink.close()
    got = wait_for(rec, len(fs) + 1)
    assert len(got) == len(fs) + 1                    # one bundle per frame + the closing note-off
    for f, (stamp, msgs) in zip(fs, got):
        assert abs(stamp - (epoch + f.time)) < 1e-6   # NTP time of the frame's audio
        assert [a for a, _ in msgs[:6]] == ADDRESSES
        args = dict(msgs[:6])
        assert args["/melodyrt/frame"] == (f.index,)
        if f.voiced:
            assert args["/melodyrt/f0"][0] == pytest.approx(f.f0_hz, rel=1e-6)
            assert args["/melodyrt/midi"][0] == pytest.approx(69 + 12 * math.log2(f.f0_hz / 440), abs=1e-4)
            assert args["/melodyrt/voicing"] == (1,)
        else:
            assert args["/melodyrt/f0"] == (0.0,) and args["/melodyrt/midi"] == (0.0,)
            assert args["/melodyrt/voicing"] == (0,)
        assert args["/melodyrt/confidence"][0] == pytest.approx(f.confidence, abs=1e-6)
        assert args["/melodyrt/loudness"][0] == pytest.approx(f.loudness_db, abs=1e-4)
        assert isinstance(args["/melodyrt/f0"][0], float) and isinstance(args["/melodyrt/voicing"][0], int)
    notes = [(i, a, p) for i, (_, msgs) in enumerate(got) for a, p in msgs if a.startswith("/melodyrt/note/")]
    assert [(a, p[0]) for _, a, p in notes] == [
        ("/melodyrt/note/on", 69), ("/melodyrt/note/off", 69), ("/melodyrt/note/on", 72), ("/melodyrt/note/off", 72)]
    assert notes[0][0] == 5                          # first voiced frame: confidence 0.8 passes the onset gate
    assert all(len(p) == 2 and 1 <= p[1] <= 127 for _, a, p in notes if a.endswith("/on"))
    assert notes[-1][0] == len(fs)                   # the last note is released by close()


def test_epoch_estimated_from_first_frame(osc_server):
    port, rec = osc_server
    sink = OscSink("localhost", port, prefix="/voice")
    before = time.time()
    sink.send(frames([None], start_time=2.0)[0])     # the frame's audio is taken as "now"
    after = time.time()
    sink.close()
    (stamp, msgs), = wait_for(rec, 1)
    assert sink.epoch == pytest.approx(stamp - 2.0, abs=1e-6)
    assert before - 1e-3 <= stamp <= after + 1e-3
    assert msgs[0][0] == "/voice/frame"


def test_closed_udp_port_is_not_an_error():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                        # nobody listens there now
    sink = OscSink("127.0.0.1", port)
    for f in frames([60.0] * 20):
        sink.send(f)                                  # ICMP "port unreachable" must not raise
        time.sleep(0.001)
    sink.close()
    assert sink.sent >= 20


def test_bad_targets_are_one_clear_line():
    with pytest.raises(OscTargetError, match="cannot resolve OSC host 'no-such-host.invalid'"):
        OscSink("no-such-host.invalid", 9000)
    with pytest.raises(OscTargetError, match="port must be 1..65535"):
        OscSink("127.0.0.1", 70000)
    with pytest.raises(OscTargetError, match="prefix"):
        OscSink("127.0.0.1", 9000, prefix="melodyrt")
    with pytest.raises(OscTargetError, match="HOST:PORT"):
        parse_target("localhost")
    assert parse_target("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_target("[::1]:57120") == ("::1", 57120)


def test_bundle_bytes_equal_python_osc_builders():
    """The hand-rolled encoder must produce exactly what python-osc's builders produce."""
    from pythonosc.osc_bundle_builder import OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    sink = OscSink("127.0.0.1", 9, epoch=1_700_000_000.25, prefix="/sing")
    twin = OscSink("127.0.0.1", 9, epoch=1_700_000_000.25, prefix="/sing")  # its note logic
    try:
        for fr in frames([None, 60.3, 60.2, 64.0, None, None, None]):
            got = sink.bundle(fr)
            voiced = fr.voiced and fr.f0_hz > 0
            b = OscBundleBuilder(1_700_000_000.25 + fr.time)
            for addr, args in [
                ("frame", [(fr.index, "i")]), ("f0", [(fr.f0_hz if voiced else 0.0, "f")]),
                ("midi", [(69 + 12 * math.log2(fr.f0_hz / 440) if voiced else 0.0, "f")]),
                ("voicing", [(int(voiced), "i")]), ("confidence", [(fr.confidence, "f")]),
                ("loudness", [(fr.loudness_db, "f")]),
            ] + [(("note/on", [(m.note, "i"), (m.velocity, "i")]) if m.type == "note_on"
                  else ("note/off", [(m.note, "i")])) for m in twin.notes.process(fr)
                 if m.type in ("note_on", "note_off")]:
                mb = OscMessageBuilder(address=f"/sing/{addr}")
                for v, t in args:
                    mb.add_arg(v, t)
                b.add_content(mb.build())
            assert got == b.build().dgram, fr.index
    finally:
        sink.close()
        twin.close()

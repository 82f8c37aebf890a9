"""The GIL-free input callback (rt/capture.py): the compiled callback called directly, and a
live stream on JACK's dummy driver while another thread hogs the GIL.

The JACK test starts its own ``jackd -d dummy -p 128`` (the e2e bench's ``jack_rig``) and
reads which client jackd blames for each xrun (its stderr): a Python callback is blamed
hundreds of times while a thread runs full garbage collections; the native one only when
the machine stalls its thread, and no input may be lost.
"""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

from melodyrt.rt import capture as C


def _call(state: C.CaptureState, block: np.ndarray, adc: float = 0.0, now: float = 0.0, flags: int = 0) -> int:
    """Invoke the compiled callback as PortAudio would (interleaved float32 frames)."""
    block = np.ascontiguousarray(block, np.float32)
    times = np.array([adc, now, 0.0])
    return C._input_callback.ctypes(block.ctypes.data, None, block.shape[0], times.ctypes.data, flags,
                                    state.array.ctypes.data)


def test_callback_keeps_the_channel_in_order_across_wraps_and_counts_drops(rng):
    st = C.CaptureState(64, channel=1, channels=3, stamps=8)
    try:
        assert st.capacity == 64
        sent, got = [], []
        out = np.zeros(40, np.float32)
        for k in range(30):
            block = rng.standard_normal((17, 3)).astype(np.float32)
            assert _call(st, block, adc=0.1 * k, now=0.1 * k + 0.01) == 0  # paContinue
            sent.append(block[:, 1])
            assert st.wait(0.0)  # the pipe woke us
            n = st.pop(out)
            got.append(out[:n].copy())
        assert np.array_equal(np.concatenate(got), np.concatenate(sent))
        assert st.dropped == 0 and st.callbacks == 30 and len(st) == 0
        # nobody reads: the ring fills, the newest samples are dropped and counted
        for _ in range(5):
            _call(st, np.ones((17, 3), np.float32))
        assert len(st) == 64 and st.dropped == 5 * 17 - 64
        stamps = st.new_stamps()
        assert stamps.shape == (8, 4)  # the stamp ring kept the newest 8 of 35
        # samples delivered before each callback count the dropped ones too: the input timeline
        assert list(stamps[:, 0]) == [17.0 * k for k in range(27, 35)]
        assert st.new_stamps().shape == (0, 4)
    finally:
        st.close()


def test_callback_counts_status_flags_and_stamps_adc_time():
    st = C.CaptureState(256, channel=0, channels=1)
    try:
        _call(st, np.zeros((8, 1)), adc=1.25, now=1.5)
        _call(st, np.zeros((8, 1)), adc=1.5, now=1.75, flags=C.PA_INPUT_OVERFLOW)
        _call(st, np.zeros((8, 1)), flags=0x4)
        assert st.callbacks == 3 and st.flagged == 2 and st.overflows == 1
        assert st.status_log() == [(2, 2), (3, 4)]
        assert C.flags_text(2) == "input overflow" and C.flags_text(0) == "none"
        s = st.new_stamps()
        assert s[0].tolist() == [0.0, 1.25, 1.5, 0.0] and s[1].tolist() == [8.0, 1.5, 1.75, 2.0]
    finally:
        st.close()


def test_wait_times_out_without_a_callback():
    st = C.CaptureState(16, 0, 1)
    try:
        t0 = time.monotonic()
        assert st.wait(0.02) is False
        assert time.monotonic() - t0 >= 0.015
    finally:
        st.close()


# ------------------------------------------------------------------------------ on JACK

RATE, PERIOD = 48000, 128


@pytest.fixture
def jackd_128():
    """A private jackd (dummy driver, 128 frames) with PortAudio on it: the bench's rig."""
    from melodyrt.bench.e2e_bench import Unavailable, jack_rig

    try:
        with jack_rig(RATE, PERIOD, name="mrt-capture") as server:
            yield server
    except Unavailable as exc:
        pytest.skip(str(exc))


def _gil_hog(stop: threading.Event) -> None:
    """Pure-Python work and full collections of a big heap: long GIL holds (~40 ms each)."""
    junk = [[i] for i in range(300_000)]
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < 0.02:
            sum(range(1000))
        gc.collect()
        time.sleep(0.03)
    del junk


@pytest.mark.jack
def test_native_callback_loses_nothing_while_another_thread_hogs_the_gil(jackd_128, untrained_bundle, list_sink):
    from melodyrt.rt.source import AudioSource, SourceConfig, resolve_input
    from melodyrt.rt.tracker import Tracker

    cfg = SourceConfig(device="system", rate=RATE, blocksize=PERIOD, callback="native")
    device, rate = resolve_input(cfg)
    source = AudioSource(Tracker(rate, untrained_bundle, backend="ort"), [list_sink], cfg, device)
    assert source.native
    stop = threading.Event()
    hog = threading.Thread(target=_gil_hog, args=(stop,), daemon=True)
    source.start()
    try:
        hog.start()
        t0 = time.monotonic()
        time.sleep(3.0)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        hog.join()
        stats = source.stop()
    blamed = [ln for ln in jackd_128.read_log().splitlines() if "client = PortAudio was not finished" in ln]
    # A Python callback is blamed in ~16 % of the cycles here (533-541 times in 10 s). The
    # native one is blamed only when the VM itself stalls the thread before it runs (seen
    # once in ~1,100 cycles while two other JACK servers and a training job shared the two
    # cores), which hits C clients as often; 0.5 % keeps a 30x margin to the GIL failure.
    assert len(blamed) <= stats.callbacks // 200, (len(blamed), stats.callbacks, blamed[:3])
    assert stats.dropped_samples == 0, stats
    assert stats.callbacks >= 0.95 * elapsed * RATE / PERIOD, stats
    frames = list_sink.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(frames) >= 0.95 * elapsed * 100  # the worker kept up: ~100 frames a second

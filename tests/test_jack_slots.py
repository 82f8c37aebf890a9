"""JACK2's server slots: test runs that die with their jackd must not use them up.

JACK2 keeps at most 8 servers per machine in its registry (/dev/shm/jack-shm-registry). A
jackd that is killed keeps its slot, its engine segment and its semaphores in /dev/shm
until a server of the same name starts again (it takes the slot over); a clean stop of that
one frees them (measured with jackd 1.9.21, see :func:`melodyrt.bench.e2e_bench.reclaim_server`).
So every test starts its servers through the bench's :class:`~melodyrt.bench.e2e_bench.JackServer`
under a fixed base name, never one per process id: a killed run's slot is taken over by the
next run. With per-pid names every killed run cost a slot, and after about 8 of them no JACK
server started on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.jack

HERE = Path(__file__).resolve().parent
REGISTRY = Path("/dev/shm/jack-shm-registry")
RATE, PERIOD = 48000, 256

#: A test run that dies with its server: a private server through the rig's JackServer,
#: killed with SIGKILL, and no teardown (os._exit). A new process, hence a new pid, each time.
DYING_RUN = r"""
import os, signal, sys
from pathlib import Path
from melodyrt.bench.e2e_bench import JackServer
js = JackServer(%d, %d, name=sys.argv[1], log=Path(sys.argv[2]), default=False)
print(js.name, flush=True)
js.kill(signal.SIGKILL)
os._exit(0)
""" % (RATE, PERIOD)


def need_jackd() -> None:
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2 libportaudio2)")
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm: JACK2 keeps its registry elsewhere here")


def registry_servers() -> dict[str, int] | None:
    """{server name: pid} of the used slots of JACK2's registry; None when it is absent or not
    laid out as jackd 1.9's (8 slots of pid + 257-byte name after a 24-byte header)."""
    try:
        d = REGISTRY.read_bytes()
    except OSError:
        return None
    if len(d) < 24 or d[:4] != struct.pack("<I", 0x4A41434B):  # "JACK"
        return None
    hdr_len = struct.unpack_from("<i", d, 16)[0]
    slot = (hdr_len - 24) // 8
    if slot < 261 or hdr_len != 24 + 8 * slot or len(d) < hdr_len:
        return None
    out = {}
    for i in range(8):
        off = 24 + i * slot
        pid = struct.unpack_from("<i", d, off)[0]
        raw = d[off + 4:off + slot].split(b"\0")[0].decode(errors="replace")
        if pid:
            m = re.fullmatch(r"jack-\d+:(.*):", raw)
            out[m.group(1) if m else raw] = pid
    return out


def test_killed_server_keeps_its_slot_until_close_reclaims_it(tmp_path):
    """kill -9 leaves the slot and /dev/shm files; JackServer.close() frees both."""
    need_jackd()
    from melodyrt.bench.e2e_bench import JackServer, Unavailable, server_running, stale_server_files

    try:
        js = JackServer(RATE, PERIOD, name="mrt-slots", log=tmp_path / "jackd.log", default=False)
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        name = js.name
        assert stale_server_files(name), "a running server's files, by the names this test looks for"
        assert js.kill(signal.SIGKILL) == -signal.SIGKILL
        assert not server_running(name)
        left = stale_server_files(name)
        assert f"jack_sem.{os.getuid()}_{name}_system" in left, left     # what a killed server leaves
        reg = registry_servers()
        if reg is not None:
            assert name in reg, reg                                  # ... and its slot, with a dead pid
    finally:
        js.close()
    assert stale_server_files(name) == []
    reg = registry_servers()
    assert reg is None or name not in reg, reg
    assert not server_running(name)


def test_runs_killed_with_their_server_never_pile_up_slots(tmp_path):
    """Nine runs in a row (more than JACK2's 8 slots), each a new process whose server is
    killed and never stopped: every one starts a server, and at no time is more than one
    dead server of this base name left. Per-pid names fail at the second run."""
    need_jackd()
    from melodyrt.bench.e2e_bench import reclaim_server, stale_server_files

    seen: list[str] = []
    try:
        for run in range(9):
            p = subprocess.run([sys.executable, "-c", DYING_RUN, "mrt-slots-run", str(tmp_path / f"jackd{run}.log")],
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0 and "did not start" in p.stderr and not seen:
                pytest.skip(p.stderr.strip().splitlines()[-1])
            assert p.returncode == 0, f"run {run}: no server started: {p.stderr[-600:]}"
            seen.append(p.stdout.split()[0])
            dead = sorted({n for n in seen if stale_server_files(n)})
            assert len(dead) <= 1, f"run {run}: dead servers piling up: {dead}"
            reg = registry_servers()
            if reg is not None:
                held = sorted(set(seen) & set(reg))
                assert len(held) <= 1, f"run {run}: registry slots held: {held} of {reg}"
    finally:
        for name in dict.fromkeys(seen):
            reclaim_server(name)
    assert all(stale_server_files(n) == [] for n in seen)
    reg = registry_servers()
    assert reg is None or not set(seen) & set(reg), reg


def test_no_test_starts_jackd_itself():
    """Tests start JACK servers only through the bench's JackServer / jack_rig (fixed names,
    clean stop, reclaim): no ``Popen(["jackd", ...])`` and no server named after a pid."""
    own = re.compile(r"""Popen\(\s*\[\s*(?:["']jackd["']|jackd\b)|["']jackd["']\s*,\s*["']-n["']""")
    pid_name = re.compile(r"""(?:JackServer|jack_rig)\([^)]*getpid|name\s*=\s*f["'][^"']*\{os\.getpid\(\)\}""")
    hits = [f"{p.name}:{i}: {line.strip()}" for p in sorted(HERE.glob("test_*.py")) if p.name != Path(__file__).name
            for i, line in enumerate(p.read_text().splitlines(), 1) if own.search(line) or pid_name.search(line)]
    assert hits == []

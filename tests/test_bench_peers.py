"""`melodyrt bench peers --quick`: installed peers are scored beside melodyrt, missing ones skipped with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from melodyrt.rt.cli import main

DATA = Path(os.environ.get("MELODYRT_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k")


def test_peers_quick_scores_installed_and_skips_missing(untrained_bundle, tmp_path, monkeypatch):
    if not (DATA / "audio").is_dir():
        pytest.skip(f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")
    from melodyrt.bench import peers_bench

    def missing():
        raise ImportError("No module named 'nonesuch'")
    monkeypatch.setitem(peers_bench.PEERS, "pesto", missing)  # stands for a peer that is not installed
    have_aubio = True
    try:
        import aubio  # noqa: F401
    except ImportError:
        have_aubio = False
    out = tmp_path / "peers"
    code = main(["bench", "peers", "--quick", "--peers", "pesto,aubio", "--model", str(untrained_bundle.root),
                 "--data", str(DATA), "--singers", "--out", str(out)])
    assert code == 0
    r = json.loads((out / "peers_bench.json").read_text())
    assert "nonesuch" in r["peers"]["pesto"]["skipped"] and "pip install pesto-pitch" in r["peers"]["pesto"]["skipped"]
    md = (out / "peers_bench.md").read_text()
    assert "## Peers" in md and "skipped" in md
    for cond in r["scores"].values():
        assert "melodyrt" in cond
    if have_aubio:
        a = r["peers"]["aubio"]
        assert a["streaming"] and a["compute_per_hop"]["n"] > 100 and 0 <= a["measured_delay_ms"] <= 400
        assert "aubio yinfft (streaming)" in r["scores"]["mix"]
    else:
        assert "skipped" in r["peers"]["aubio"]

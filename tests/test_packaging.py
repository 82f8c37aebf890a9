"""The wheel carries what a non-editable install needs: every packaged model, the model card,
the model and bench configs.

CI installs editable, where the files are read from the checkout, so a package-data glob that
misses a folder goes unnoticed there (``weights/*`` matched the bundle folders, not the files
in them: wheels had no model at all).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """This checkout built as a wheel."""
    out = tmp_path_factory.mktemp("wheel")
    # a copy without build/ and *.egg-info: setuptools would reuse a stale build/lib from there
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs",
                                                             ".cache", "__pycache__", ".pytest_cache"))
    # no build isolation: the venv's setuptools, no index needed
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    wheels = list(out.glob("melodyrt-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_holds_every_packaged_model_file(wheel_names):
    from melodyrt.rt.bundle import PROFILES

    for profile, folder in PROFILES.items():
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
        assert any(p.name == "model.json" for p in files), profile
        for p in files:
            assert f"melodyrt/model/weights/{p.parent.name}/{p.name}" in wheel_names, (profile, p.name)


def test_wheel_holds_card_and_configs(wheel_names):
    assert "melodyrt/model/MODEL_CARD.md" in wheel_names
    for p in sorted((ROOT / "model" / "configs").glob("*.yaml")):
        assert f"melodyrt/model/configs/{p.name}" in wheel_names, p.name
    for p in sorted((ROOT / "bench").glob("*.yaml")):
        assert f"melodyrt/bench/{p.name}" in wheel_names, p.name
    assert not any(n.startswith(("model/", "rt/", "bench/", "tests/")) for n in wheel_names)  # no bare top-level packages


def test_installed_wheel_loads_every_profile(wheel, tmp_path):
    """The wheel unpacked on its own (``pip install --target``; the dependencies are this
    venv's) finds and loads every packaged model from the installed files."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import json\n"
            "from melodyrt.rt import bundle\n"
            "print(json.dumps({'file': bundle.__file__, **{p: [str(d), bundle.load_bundle(d).name]\n"
            "                  for p, d in bundle.PROFILES.items()}}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["file"].startswith(str(target)), got
    from melodyrt.rt.bundle import PROFILES

    assert set(got) == {"file", *PROFILES}
    for folder, name in (got[p] for p in PROFILES):
        assert folder.startswith(str(target)) and name, got

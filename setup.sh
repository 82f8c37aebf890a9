#!/usr/bin/env bash
# Set up melodyrt on a fresh Debian/Ubuntu machine and run the demo or the whole test suite.
#
#   bash setup.sh demo            set up, then run `melodyrt demo`
#   bash setup.sh test [ARGS...]  set up, then run every test (ARGS go to pytest)
#
# Idempotent: the virtual environment lives in .venv/ and is reinstalled only when
# pyproject.toml (or this script) changed since the last successful set-up.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$PWD"
VENV="$ROOT/.venv"
STAMP="$VENV/.melodyrt-setup"
# torch is pinned to the CPU build that lies on disk on our machines; asking pip for plain
# `torch` (or letting another package pull it) would download a multi-GB CUDA build.
TORCH_PIN="torch==2.13.0"

mode="${1:-}"
case "$mode" in
    demo|test) shift ;;
    *) echo "usage: bash setup.sh demo | test [pytest args...]" >&2; exit 2 ;;
esac

say() { printf '\n==> %s\n' "$*"; }

install_system_packages() {
    # PortAudio for sounddevice, JACK for the real-audio tests (dummy driver, no sound card).
    local pkgs=(libportaudio2 jackd2 chromium)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "note: not root, skipping apt-get install ${missing[*]} (audio-device tests will skip)" >&2
        return 0
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

find_python() {
    # 3.11 first: the CPU torch wheel on disk is built for it.
    local c
    for c in python3.11 python3.12 python3.13 python3; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    echo "error: melodyrt needs Python >= 3.11 (apt-get install python3.11 python3.11-venv)" >&2
    return 1
}

setup_hash() {
    cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1
}

setup_venv() {
    local want
    want="$(setup_hash)"
    if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        say "environment up to date ($VENV)"
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        local py
        py="$(find_python)"
        say "creating $VENV with $("$py" --version 2>&1)"
        "$py" -m venv "$VENV"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    say "pip install $TORCH_PIN (CPU build)"
    "${pip[@]}" install -q "$TORCH_PIN"
    say "pip install -e '.[train,dev]'"
    "${pip[@]}" install -q -e ".[train,dev]"
    echo "$want" >"$STAMP"
}

install_system_packages
setup_venv

if [ "$mode" = demo ]; then
    say "melodyrt demo"
    exec "$VENV/bin/melodyrt" demo
else
    say "pytest (whole suite)"
    # Data sets are found at ../shared/data next to the checkout, never copied in.
    exec "$VENV/bin/python" -m pytest -q "$@"
fi

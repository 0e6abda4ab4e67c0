#!/usr/bin/env bash
# Create .venv on first use and install the project into it; later calls only activate it.
# Source it (`. scripts/setup_env.sh`) or call it; other scripts source it.
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ETCHAT_VENV:-$ROOT/.venv}"
STAMP="$VENV/.etchat-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/requirements.txt" -nt "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ] \
    || [ "$ROOT/requirements-lmms.txt" -nt "$STAMP" ]; then
    echo "[setup] installing into $VENV (first run only)" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first: a plain resolver run would otherwise pull a multi-GB CUDA build on CPU machines.
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" \
        -r "$ROOT/requirements-lmms.txt"
    # lmms-eval without its dependencies: its wheel requires torchvision and timm, which would replace the CPU torch
    # by a CUDA build; what its core imports is in requirements-lmms.txt.
    "$VENV/bin/python" -m pip install -q --no-deps "lmms-eval>=0.7.3"
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
    if ! command -v java >/dev/null 2>&1; then
        echo "[setup] java not found: caption metrics (METEOR, PTB tokenizer) need it." >&2
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) || echo "[setup] could not install java" >&2
        else
            echo "[setup] install it with: sudo apt-get install -y default-jre-headless" >&2
        fi
    fi
    touch "$STAMP"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

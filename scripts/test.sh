#!/usr/bin/env bash
# Run the test suite (sets up .venv on first use). Extra arguments go to pytest. Without any, everything runs: the
# default suite and the slow end-to-end checks (about half an hour more). The quick one: `bash scripts/test.sh -m "not
# slow"` (the default suite; CI runs it, then `-m slow`: .ci/run).
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
python -m pytest -q "$@"

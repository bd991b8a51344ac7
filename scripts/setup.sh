#!/usr/bin/env bash
# Create .venv (once) and install flor with one extra: `test` (default: everything the tests
# need) or `tutorial` (torch and scikit-learn only, what scripts/tutorial.sh runs).
# Torch is pinned to 2.13.0 in both, whose CPU wheel is at hand; an unpinned torch pulls a GPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
EXTRA=${1:-test}
.venv/bin/python -m pip install -q -e ".[$EXTRA]"

#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Browser tests of `flor ui` need Debian's chromium and playwright; install them where we may.
if [ -f .ci/ui-setup.sh ] && { [ "$(id -u)" = 0 ] || [ -n "${CI:-}" ]; }; then
  bash .ci/ui-setup.sh .venv
fi
# --require-optional: here every optional package is installed, so a missing one is an error, not a skip.
# Two workers (pytest-xdist): test children run single-threaded, so one worker leaves a core idle;
# a worker takes a test file or a corpus case whole, heaviest first (tests/conftest.py).
# FLOR_TEST_WORKERS=0 runs in one process.
WORKERS=${FLOR_TEST_WORKERS:-2}
if [ "$WORKERS" = 0 ]; then
  exec .venv/bin/python -m pytest --require-optional "$@"
fi
exec .venv/bin/python -m pytest --require-optional -n "$WORKERS" --dist loadgroup --no-loadscope-reorder "$@"

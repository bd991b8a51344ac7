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
exec .venv/bin/python -m pytest --require-optional "$@"

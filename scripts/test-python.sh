#!/usr/bin/env bash
# Run the fast tier (`pytest -m "not slow"`) on another Python, from pyenv: `scripts/test-python.sh 3.13`.
#
# torch's CPU 2.13.0 wheel is at hand for Python 3.11 only (an unpinned torch would pull a GPU
# build), so this leg installs flor with its plain dependencies and the `test-min` extra (pytest,
# hypothesis), without torch or the other optional packages; test files that import one of them
# are skipped, naming it (tests/conftest.py). What it covers: the README, "Tests a newcomer can run".
# A version pyenv does not have is skipped with one line, not failed.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:?usage: scripts/test-python.sh 3.10|3.13 [pytest arguments]}
shift
ROOT=$( (command -v pyenv >/dev/null && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")
PYTHON=$(ls -d "$ROOT/versions/$VERSION".* 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PYTHON" ] || [ ! -x "$PYTHON/bin/python" ]; then
  echo "skipping the Python $VERSION leg: pyenv has no $VERSION.x under $ROOT/versions"
  exit 0
fi
VENV=.venv-$VERSION
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON/bin/python" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -m pip install -q -e ".[test-min]" > "$VENV/pip.log" 2>&1; then
  cat "$VENV/pip.log"
  echo "the Python $VERSION leg could not install flor (above)"
  exit 1
fi
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "note: torch is installed in $VENV; this leg was meant to run without it"
fi
echo "Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'): the fast tier"
exec "$VENV/bin/python" -m pytest -m "not slow" -p no:cacheprovider -rs "$@"

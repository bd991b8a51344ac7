#!/usr/bin/env bash
# Install what the browser tests of `flor ui` need: Debian's chromium and the playwright package.
# Idempotent: does nothing that is already done. Never runs `playwright install` (no browser
# downloads): the tests drive /usr/bin/chromium.
#
#   .ci/ui-setup.sh [VENV]      # VENV: a virtual environment to pip-install into (default: the active python)
set -euo pipefail

venv="${1:-}"
if [[ -n "$venv" ]]; then
    python="$venv/bin/python"
else
    python="$(command -v python3 || command -v python)"
fi
if [[ ! -x "$python" ]]; then
    echo "ui-setup: no python at $python" >&2
    exit 1
fi

# chromium for the browser tests; make for the example pipeline's end-to-end test.
packages=()
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
command -v make >/dev/null || packages+=(make)
if (( ${#packages[@]} )); then
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

if ! "$python" -c "import playwright.sync_api" 2>/dev/null; then
    "$python" -m pip install --quiet playwright
fi
if ! "$python" -c "import flask" 2>/dev/null; then
    "$python" -m pip install --quiet flask
fi

/usr/bin/chromium --version
"$python" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"

#!/usr/bin/env bash
# Set up with what the tutorial needs only (setup.sh tutorial: torch CPU, scikit-learn), then the tutorial end to end in a fresh git repository:
# record two runs with different `hidden`, show the table, read a printed value back out of the
# runs' output, add a statement and replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tutorial
HERE=$(pwd)
WORK=${FLOR_TUTORIAL_DIR:-$(mktemp -d /tmp/flor-tutorial-XXXXXX)}
mkdir -p "$WORK"
cp examples/tutorial/train.py "$WORK/train.py"
cd "$WORK"
export PATH="$HERE/.venv/bin:$PATH"
if [ ! -d .git ]; then
  git init -q
  git add train.py
  git -c user.name=flor-tutorial -c user.email=tutorial@localhost commit -q -m "tutorial"
fi
echo "== recording two runs in $WORK"
python train.py
python train.py --kwargs hidden=75
echo "== flor runs"
flor runs
echo "== flor dataframe hidden accuracy"
flor dataframe hidden accuracy
echo "== flor extract: the accuracy each run printed, read from its captured output (no re-execution)"
flor extract printed_accuracy "accuracy=([0-9.]+)"
flor dataframe hidden printed_accuracy
if [ -f "$HERE/examples/tutorial/replay_weight_norm.py" ]; then
  python "$HERE/examples/tutorial/replay_weight_norm.py" train.py
  echo "== flor replay weight_norm"
  flor replay weight_norm --workers 2
  echo "== flor dataframe hidden weight_norm accuracy"
  flor dataframe hidden weight_norm accuracy
fi
echo "== git status of the tutorial repository (untouched by flor)"
git status --short --branch

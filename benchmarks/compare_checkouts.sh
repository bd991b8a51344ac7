#!/usr/bin/env bash
# Compare two checkouts of flor, alternating them for ROUNDS rounds: the replay of a new epoch-level
# statement (replay_speed.py's (a), one repetition) and flor.log's cost (record_overhead.py --only log).
# Each checkout's own flor runs (PYTHONPATH). Prints the lines to read; writes nothing.
#   bash benchmarks/compare_checkouts.sh BEFORE_DIR AFTER_DIR [ROUNDS]
# e.g. a checkout of an older commit: git worktree add --detach /tmp/before e407e52
set -euo pipefail
BEFORE=${1:?usage: compare_checkouts.sh BEFORE_DIR AFTER_DIR [ROUNDS]}
AFTER=${2:?usage: compare_checkouts.sh BEFORE_DIR AFTER_DIR [ROUNDS]}
ROUNDS=${3:-3}
PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
for round in $(seq 1 "$ROUNDS"); do
  for dir in "$BEFORE" "$AFTER"; do
    echo "== round $round $dir load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$dir" && PYTHONPATH="$dir" BENCH_CHECKOUT_FIRST=1 timeout 400 "$PYTHON" benchmarks/replay_speed.py --only a \
        --no-flordb --no-write --reps 1 2>&1 | grep -E "^\[.*\(a\) rep" | cut -c1-400) || true
    (cd "$dir" && PYTHONPATH="$dir" BENCH_CHECKOUT_FIRST=1 timeout 300 "$PYTHON" benchmarks/record_overhead.py \
        --no-flordb --no-write --only log --reps 3 2>&1 | grep -E "µs per call" | head -3) || true
  done
done

#!/usr/bin/env bash
# The dataflow example end to end, in a fresh git repository (FLOR_PIPELINE_DIR, default a temporary
# folder): documents -> features -> a model -> predictions, then an incremental re-run after adding
# documents, and a feature added today recovered for every past document by flor replay.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [ -z "${FLOR_PYTHON:-}" ]; then
  bash "$REPO/scripts/setup.sh" tutorial
  FLOR_PYTHON="$REPO/.venv/bin/python"
fi
WORK=${FLOR_PIPELINE_DIR:-$(mktemp -d /tmp/flor-pipeline-XXXXXX)}
mkdir -p "$WORK"
cp "$HERE"/Makefile "$HERE"/*.py "$WORK"/
cd "$WORK"
if [ ! -d .git ]; then
  git init -q
  printf 'docs/\n' > .gitignore
  git add -A
  git -c user.name=flor-pipeline -c user.email=pipeline@localhost commit -q -m "pipeline"
fi
echo "== make: featurize -> train -> infer (in $WORK)"
make PYTHON="$FLOR_PYTHON" FLOR="$FLOR_PYTHON -m flor"
echo "== make more: 10 new documents; featurize skips the 30 it already did"
make PYTHON="$FLOR_PYTHON" FLOR="$FLOR_PYTHON -m flor" more
make PYTHON="$FLOR_PYTHON" FLOR="$FLOR_PYTHON -m flor" train infer
echo "== lineage of the last inference run"
"$FLOR_PYTHON" -m flor show "$("$FLOR_PYTHON" -m flor query "SELECT tstamp FROM runs ORDER BY run_id DESC LIMIT 1" --csv | tail -1)" | sed -n '/^read from/,$p'
echo "== make hindsight: n_sentences, added to featurize.py today, replayed for every past document"
make PYTHON="$FLOR_PYTHON" FLOR="$FLOR_PYTHON -m flor" hindsight | tail -8

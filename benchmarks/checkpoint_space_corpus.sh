#!/bin/bash
# Issue 29: .flor size of the nanoGPT-shaped corpus script at the corpus benchmark's size, before
# (compression off, no disk budget: what flor did before) and at today's defaults.
#   OUT=/tmp/x PY=.venv/bin/python bash benchmarks/checkpoint_space_corpus.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python}
mkdir -p ${OUT:-/tmp/flor-corpus-space}
# Record the nanoGPT-shaped corpus script (benchmark size, 300 iterations, eval every 50) once per setting; print .flor sizes.
set -u
for setting in "FLOR_CKPT_COMPRESS=0 FLOR_CKPT_DISK=none" "X=default"; do
  d=${OUT:-/tmp/flor-corpus-space}/$(echo $setting | tr ' =' '__')
  rm -rf $d; cp -r $ROOT/tests/realworld/scripts/nanogpt_style $d; cd $d
  git init -q -b main; git add -A; git -c user.email=a@b -c user.name=a commit -qm x
  PYTHONPATH=$ROOT $PY data/shakespeare_char/prepare.py > /dev/null
  start=$(date +%s)
  env $setting PYTHONPATH=$ROOT $PY train.py --max_iters=300 --lr_decay_iters=300 --warmup_iters=20 --eval_interval=50 --eval_iters=8 --n_layer=4 --n_embd=128 --n_head=4 --block_size=64 --batch_size=12 > rec.log 2>&1
  end=$(date +%s)
  echo "$setting: record $((end-start)) s, .flor $(du -sb .flor | cut -f1) bytes, objects $(du -sb .flor/objects | cut -f1), checkpoints $(ls .flor/checkpoints/*/ | wc -l)"
  PYTHONPATH=$ROOT $PY -m flor show $(PYTHONPATH=$ROOT $PY -c "import sqlite3;print(sqlite3.connect('.flor/flor.db').execute('select tstamp from runs').fetchone()[0])") 2>&1 | grep -i "checkpoint" | head -3
done

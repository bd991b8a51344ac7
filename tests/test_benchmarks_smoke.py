"""The record-overhead benchmark still runs: a quick pass without FlorDB and without RESULTS.md.

It checks that every measurement produces sane numbers, not that they meet their targets:
timings belong in benchmarks/RESULTS.md, never in tests (DESIGN.md §6).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # every test trains or launches processes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "record_overhead.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

# Stands in for the tutorial, which spends seconds importing torch and scikit-learn: the same
# shape (args, checkpointing, nested loops, a last log), so the end-of-run timing path is exercised.
SMALL_SCRIPT = """\
import flor
import numpy as np

hidden = flor.arg("hidden", 8)
epochs = flor.arg("epochs", 3)
weights = np.zeros(hidden)
with flor.checkpointing(weights=weights):
    for epoch in flor.loop("epoch", range(epochs)):
        for step in flor.loop("step", range(20)):
            weights += 0.01
            flor.log("loss", float(weights.sum()))
flor.log("accuracy", 0.5)
"""


def test_record_overhead_quick_runs(tmp_path):
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    raw_path = tmp_path / "raw.json"
    small = tmp_path / "small_train.py"
    small.write_text(SMALL_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-flordb", "--no-write", "--json", str(raw_path),
         "--tutorial", str(small)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The table is printed, with every measurement and no FlorDB numbers.
    table = proc.stdout
    for row in ("flor.log in 2 nested flor.loops", "small_train.py", 'import flor', 'flor.dataframe("loss")'):
        assert row in table, table
    assert "FlorDB 4.0.1" in table and "not measured" in table

    raw = json.loads(raw_path.read_text())
    assert raw["flordb_python"] is None
    assert set(raw["log"]) == {"plain", "flor"}
    for entry in raw["log"]["flor"]:
        assert entry["loop_s"] > 0 and entry["end_s"] > 0
    assert all(e["end_s"] > 0 for e in raw["tutorial"]["flor"])
    assert all(t > 0 for t in raw["imports"]["flor"])
    outer, inner = raw["config"]["dataframe_loop"]
    assert all(e["rows"] == outer * inner for e in raw["dataframe"]["flor"])
    assert raw["heavy_modules"]["torch"] is False

    # --no-write leaves RESULTS.md alone.
    after = RESULTS.read_bytes() if RESULTS.exists() else None
    assert after == before

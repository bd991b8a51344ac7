"""A full disk while writing a checkpoint or the database, simulated with RLIMIT_FSIZE.

Tests run as root, so a read-only folder would not stop writes; a file-size limit does, for every
file the child writes. CPython ignores SIGXFSZ, so an over-limit write fails with EFBIG ("File too
large") instead of killing the process: exactly what a full disk looks like to the program.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

import numpy as np

from flor.checkpoints.restore import read_manifest
from tests.conftest import clean_env

from .helpers import integrity_ok, rows, tally


CKPT = """
import flor, numpy as np
state = np.zeros(flor.arg("size", 500_000))
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        state += 1
        for step in flor.loop("step", range(100)):
            flor.log("v", epoch * 100 + step)
print("trained", flush=True)
"""

LOGGER = """
import flor, sys
for epoch in flor.loop("epoch", range(flor.arg("epochs", 5))):
    for step in flor.loop("step", range(100)):
        flor.log("v", epoch * 1000 + step)
    print(epoch, flush=True)
print("trained", flush=True)
"""


def run_limited(project, script: str, limit: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a script whose files may not grow beyond ``limit`` bytes."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    child = subprocess.Popen([sys.executable, script, *args], cwd=project.root,
                             env=clean_env(PYTHONFAULTHANDLER="1", **(env or {})), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=limit_file_size)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        out, err = child.communicate()
        raise AssertionError(f"{script} hangs when the disk is full:\n{err[-6000:]}") from None
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_disk_full_while_writing_a_checkpoint(project):
    project.write("ckpt.py", CKPT)
    project.commit_all("ckpt")
    project.run("ckpt.py", "--kwargs", "size=1000", env={"FLOR_CKPT_PERIOD": "1"})  # small state: fits
    before = rows(project.db, "SELECT run_id, iteration, location FROM checkpoints")
    assert len(before) == 3
    # 4 MB state: does not fit (raw: a constant array would compress to a few bytes and fit).
    done = run_limited(project, "ckpt.py", 1_000_000, env={"FLOR_CKPT_PERIOD": "1", "FLOR_CKPT_COMPRESS": "0"})
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("flor: warning:")]
    assert warnings and all("not written" in w and "File too large" in w for w in warnings), done.stderr
    assert "Traceback" not in done.stderr
    # Training went on; every value was recorded; no checkpoint of the full-disk run is listed.
    assert rows(project.db, "SELECT status FROM runs WHERE run_id = 2") == [("finished",)]
    values = [v for (v,) in rows(project.db, "SELECT value FROM logs WHERE run_id = 2 ORDER BY rowid")]
    assert values == list(range(300))
    assert rows(project.db, "SELECT COUNT(*) FROM checkpoints WHERE run_id = 2") == [(0,)]
    # No half-written file is left, and the checkpoints recorded earlier still load.
    assert not list((project.root / ".flor").rglob(".*.tmp-*"))
    assert rows(project.db, "SELECT run_id, iteration, location FROM checkpoints") == before
    for _, iteration, location in before:
        assert np.all(read_manifest(project.root / ".flor", location)["state"] == iteration + 1)
    assert project.flor("doctor").returncode == 0
    tally(faults_injected=3, rows_checked=len(values) + 3, rows_lost=300 - len(values))


def _full_database(project):
    project.write("logger.py", LOGGER)
    project.commit_all("logger")
    project.run("logger.py")
    first = rows(project.db, "SELECT value FROM logs ORDER BY rowid")
    assert len(first) == 500
    limit = project.db.stat().st_size + 64 * 1024
    done = run_limited(project, "logger.py", limit, "--kwargs", "epochs=200")
    return first, done


def test_disk_full_while_writing_the_database(project):
    first, done = _full_database(project)
    # The run is told, in flor's own words, that its values could not be written.
    assert "Traceback" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("flor: warning:")]
    assert warnings and str(project.db) in warnings[0] and "cannot write to the flor database" in warnings[0], done.stderr
    # Training itself was not stopped by the full disk.
    assert "trained" in done.stdout
    # What was recorded before stays readable, byte for byte, and the database is sound.
    assert integrity_ok(project.db)
    assert rows(project.db, "SELECT value FROM logs WHERE run_id = 1 ORDER BY rowid") == first
    # What the full-disk run did manage to flush is a prefix, in order.
    second = [v for (v,) in rows(project.db, "SELECT value FROM logs WHERE run_id = 2 ORDER BY rowid")]
    expected = [e * 1000 + s for e in range(200) for s in range(100)]
    assert second == expected[: len(second)]
    # Once space is back, the run shows as killed and recording works again.
    out = project.flor("runs").stdout
    assert rows(project.db, "SELECT status FROM runs ORDER BY run_id") == [("finished",), ("killed",)], out
    project.run("logger.py", "--kwargs", "epochs=2")
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE run_id = 3") == [(200,)]
    frame = [json.loads(line) for line in project.flor("dataframe", "v", "--json").stdout.splitlines() if line.strip()]
    assert sum(1 for record in frame if record.get("v") is not None) == 500 + len(second) + 200
    assert project.flor("doctor").returncode == 0
    tally(faults_injected=1, runs_killed=1, rows_checked=len(first) + len(second) + 200, rows_lost=0)


def test_disk_full_final_warning_says_values_were_lost(project):
    _, done = _full_database(project)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("flor: warning:")]
    assert warnings
    assert "lost" in warnings[-1] or "not recorded" in warnings[-1], done.stderr

"""Sixteen processes recording into one project at once, while readers query it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import clean_env

from .helpers import flor_refs, integrity_ok, rows, tally

WRITERS, EPOCHS, STEPS = 16, 10, 250

MANY = f"""
import flor
worker = flor.arg("worker", 0)
for epoch in flor.loop("epoch", range({EPOCHS})):
    for step in flor.loop("step", range({STEPS})):
        flor.log("value", worker * 1_000_000 + epoch * 1000 + step)
    flor.log("epoch_done", worker * 1000 + epoch)
"""


def test_sixteen_concurrent_recorders_lose_nothing(project):
    project.write("many.py", MANY)
    project.commit_all("many")
    project.run("many.py", "--kwargs", "worker=99")  # the database exists before the crowd arrives
    children = [
        subprocess.Popen([sys.executable, "many.py", "--kwargs", f"worker={w}"], cwd=project.root,
                         env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(WRITERS)
    ]
    # Readers at the same time: the CLI reaps, lists and pivots while the writers write.
    readers = [project.flor(cmd, check=False) for cmd in ("runs", "dataframe", "runs")]
    outputs = [child.communicate(timeout=300) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    for _, err in outputs:
        assert "locked" not in err.lower() and "Traceback" not in err, err
    for reader in readers:
        assert reader.returncode == 0 and "locked" not in reader.stderr.lower(), reader.stderr
    expected = {w * 1_000_000 + e * 1000 + s for w in range(WRITERS) for e in range(EPOCHS) for s in range(STEPS)}
    got = rows(project.db, "SELECT value FROM logs WHERE name = 'value' AND run_id > 1")
    values = [v for (v,) in got]
    assert len(values) == len(expected) and set(values) == expected
    per_run = rows(project.db, """
        SELECT a.value, COUNT(*) FROM logs l JOIN args a ON a.run_id = l.run_id
        WHERE l.name = 'value' AND a.name = 'worker' AND l.run_id > 1 GROUP BY l.run_id ORDER BY a.value""")
    assert per_run == [(w, EPOCHS * STEPS) for w in range(WRITERS)]
    # Each value sits in its own (epoch, step) context of its own run, as the dataframe shows it.
    check = subprocess.run([sys.executable, "-c", """
import flor
df = flor.dataframe("worker", "value").dropna(subset=["value"])
df = df[df.worker != 99]
bad = ((df.value % 1000 != df.step) | (df.value // 1000 % 1000 != df.epoch) | (df.value // 1_000_000 != df.worker))
print(len(df), int(bad.sum()))
"""], cwd=project.root, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert check.stdout.split() == [str(len(expected)), "0"], check.stderr
    assert rows(project.db, "SELECT COUNT(*), COUNT(DISTINCT tstamp) FROM runs WHERE status = 'finished'") == [
        (WRITERS + 1, WRITERS + 1)
    ]
    refs = flor_refs(project.root)
    commits = {c for (c,) in rows(project.db, "SELECT code_commit FROM runs")}
    assert len(refs) == WRITERS + 1 and set(refs.values()) == commits
    assert integrity_ok(project.db)
    tally(faults_injected=1, rows_checked=len(values) + WRITERS * EPOCHS, rows_lost=len(expected - set(values)))

"""SIGKILL and SIGTERM of recording runs at random moments: what was flushed survives, nothing is torn.

Every kill moment comes from a seeded random generator, so a failure names a reproducible moment.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from flor.checkpoints.restore import read_manifest

from .helpers import commit_exists, flor_refs, git_state, integrity_ok, rows, start, tally

TICKER = """
import sys, time, flor
for epoch in flor.loop("epoch", range(100_000)):
    for step in flor.loop("step", range(20)):
        flor.log("v", epoch * 20 + step)
    print(epoch * 20 + 19, time.time(), flush=True)
    time.sleep(0.01)
"""


SLACK_S = 2.5


def _user_files(project) -> None:
    project.write(".gitignore", "*.log\n")
    project.write("notes.txt", "tracked, then edited\n")
    project.commit_all("user work")
    project.write("notes.txt", "tracked, edited and not committed\n")
    project.write("draft.py", "untracked = True\n")
    project.write("ignored.log", "ignored\n")
    project.git("add", "draft.py")  # staged, not committed


def _read_progress(child) -> list[tuple[int, float]]:
    out = child.stdout.read()
    pairs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            pairs.append((int(parts[0]), float(parts[1])))
    return pairs


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_kill_at_random_moments_keeps_flushed_logs(project, sig):
    """Logs up to the last flush survive; the run shows `killed`; git is untouched."""
    project.write("ticker.py", TICKER)
    _user_files(project)
    before = git_state(project.root)
    rng = random.Random(1000 + sig)
    killed_at = []
    for attempt in range(3):
        child = start(project, "ticker.py", env={"PYTHONFAULTHANDLER": "1"})
        assert child.stdout.readline()  # training has begun
        time.sleep(rng.uniform(0.05, 1.6))
        moment = time.time()
        child.send_signal(sig)
        try:
            child.wait(timeout=45)
        except subprocess.TimeoutExpired:  # show where it hangs (faulthandler dumps on SIGABRT)
            child.send_signal(signal.SIGABRT)
            child.wait()
            raise AssertionError(child.stderr.read()[-8000:]) from None
        progress = _read_progress(child)
        killed_at.append(moment)
        (run_id,) = rows(project.db, "SELECT MAX(run_id) FROM runs")[0]
        stored = [r[0] for r in rows(project.db, "SELECT value FROM logs WHERE run_id = ? ORDER BY rowid", (run_id,))]
        # What was flushed is a gap-free prefix, in order, without duplicates.
        assert stored == list(range(len(stored))), f"attempt {attempt}: not a prefix"
        if sig == signal.SIGTERM:
            # SIGTERM unwinds the script: everything it logged is flushed.
            printed = progress[-1][0] if progress else -1
            assert len(stored) >= printed + 1
            lost = 0
        else:
            # Flushes happen at least every second and at every epoch boundary: values logged
            # more than SLACK_S before the kill must be there (1 s period + scheduling on a busy box).
            old = [i for i, t in progress if t < moment - SLACK_S]
            lost = sum(1 for i in old if i >= len(stored))
            assert lost == 0, f"attempt {attempt}: {lost} values logged >{SLACK_S} s before the kill are missing"
        tally(faults_injected=1, runs_killed=1, rows_checked=len(stored), rows_lost=lost)
    runs_out = project.flor("runs").stdout
    assert runs_out.count("killed") == 3, runs_out
    statuses = rows(project.db, "SELECT status, error FROM runs ORDER BY run_id")
    assert [s for s, _ in statuses] == ["killed"] * 3
    if sig == signal.SIGTERM:
        assert all("SIGTERM" in e for _, e in statuses)
    assert integrity_ok(project.db)
    assert git_state(project.root) == before
    for ref, commit in flor_refs(project.root).items():
        assert commit_exists(project.root, commit), ref


BIG_STATE = """
import time, flor, numpy as np
state = np.zeros(2_000_000)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(100_000)):
        state += 1
        flor.log("epoch_seen", epoch)
        print(epoch, flush=True)
        time.sleep(0.005)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_kill_during_checkpoint_writes_never_lists_a_torn_checkpoint(project, sig):
    """16 MB of numpy state checkpointed every epoch; kills land mid-write. Every listed
    checkpoint loads, holds exactly its epoch's state, and doctor finds only leftovers to sweep."""
    project.write("big.py", BIG_STATE)
    project.commit_all("big")
    before = git_state(project.root)
    rng = random.Random(2000 + sig)
    attempt = 0
    # Three kills; on a very busy machine the first checkpoint may not be durable before any of
    # them, so up to two more, later kills make sure some checkpoint is listed to check.
    while attempt < 3 or (attempt < 5 and not rows(project.db, "SELECT 1 FROM checkpoints")):
        child = start(project, "big.py", env={"FLOR_CKPT_PERIOD": "1"})
        assert child.stdout.readline()
        time.sleep(rng.uniform(0.2, 1.2) + (1.5 if attempt >= 3 else 0.0))
        child.send_signal(sig)
        child.stdout.read()
        child.wait(timeout=60)
        tally(faults_injected=1, runs_killed=1)
        attempt += 1
    listed = rows(project.db, "SELECT run_id, iteration, location FROM checkpoints ORDER BY run_id, iteration")
    assert listed, "no checkpoint was listed at all"
    for run_id, iteration, location in listed:
        ckpt = read_manifest(project.root / ".flor", location)
        state = ckpt["state"]
        assert state.shape == (2_000_000,) and (state == iteration + 1).all(), (run_id, iteration)
    for path in (project.root / ".flor" / "checkpoints").rglob("*.json"):
        json.loads(path.read_text())  # a visible manifest is always complete
    tally(rows_checked=len(listed))
    assert integrity_ok(project.db)
    assert [r[0] for r in rows(project.db, "SELECT DISTINCT status FROM runs")] in ([], ["running"], ["killed"])
    project.flor("runs")
    assert [r[0] for r in rows(project.db, "SELECT DISTINCT status FROM runs")] == ["killed"]
    # The only thing a kill may leave behind is a temporary file; doctor sweeps it.
    doctor = project.flor("doctor", "--repair", check=False)
    assert doctor.returncode == 0, doctor.stdout
    assert all("temporary file" in line for line in doctor.stdout.splitlines() if "repaired:" in line), doctor.stdout
    assert not list((project.root / ".flor").rglob(".*.tmp-*"))
    assert project.flor("doctor").returncode == 0
    assert git_state(project.root) == before


ENDING = """
import flor, numpy as np

def batches():  # no len(): the last epoch is known only when the loop ends
    yield from range(3)

state = np.zeros(2_000_000)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", batches()):
        print("epoch", epoch, flush=True)
        state += 1
        for step in flor.loop("step", range(200)):
            flor.log("v", epoch * 1000 + step)
flor.log("final", float(state[0]))
print("ending", flush=True)
"""


def _wait_line(child, marker: str) -> bool:
    for line in child.stdout:
        if line.startswith(marker):
            return True
    return False


def test_kill_during_end_of_run_snapshot_and_final_checkpoint(project):
    """Kills in the middle of training and in the run's ending: the final checkpoint (the loop
    has no len), the last flush, and the wait for the git snapshot (900 files to version)."""
    project.write("ending.py", ENDING)
    for i in range(600):
        project.write(f"data/f{i:04d}.txt", f"{i}\n" * 20)
    project.commit_all("ending")
    for i in range(300):
        project.write(f"scratch/u{i:04d}.txt", f"untracked {i}\n")
    before = git_state(project.root)
    project.run("ending.py")
    assert rows(project.db, "SELECT COUNT(*) FROM logs")[0][0] == 601
    rng = random.Random(3000)
    kills = 0
    for attempt in range(8):
        sig = signal.SIGKILL if attempt % 4 < 2 else signal.SIGTERM
        child = start(project, "ending.py")
        assert _wait_line(child, "epoch 1" if attempt % 2 == 0 else "ending")
        time.sleep(rng.uniform(0.0, 0.06))
        if child.poll() is None:
            child.send_signal(sig)
            kills += 1
        child.stdout.read()
        child.wait(timeout=60)
        tally(faults_injected=1, runs_killed=1 if child.returncode != 0 else 0)
    project.flor("runs")
    statuses = rows(project.db, "SELECT run_id, status, code_commit FROM runs ORDER BY run_id")
    assert {s for _, s, _ in statuses} <= {"finished", "killed"}
    expected = [e * 1000 + s for e in range(3) for s in range(200)]
    for run_id, status, commit in statuses:
        values = [r[0] for r in rows(project.db, "SELECT value FROM logs WHERE run_id = ? AND name = 'v' ORDER BY rowid", (run_id,))]
        assert values == expected[: len(values)], run_id
        if status == "finished":
            assert len(values) == 600 and commit and commit_exists(project.root, commit)
        tally(rows_checked=len(values))
    for iteration, location in rows(project.db, "SELECT iteration, location FROM checkpoints"):
        assert (read_manifest(project.root / ".flor", location)["state"] == iteration + 1).all()
    refs = flor_refs(project.root)
    assert all(commit_exists(project.root, c) for c in refs.values())
    assert all(commit is None or commit in refs.values() for _, _, commit in statuses)
    assert integrity_ok(project.db)
    assert git_state(project.root) == before
    assert kills >= 4

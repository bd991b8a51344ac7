"""SIGKILL of the replay driver (`flor replay`) mid-run: finished work is kept, a second replay
completes it, and no value is stored twice. The toy script is the one of tests/test_replay.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import clean_env
from tests.test_replay import record_toy

from .helpers import git_state, integrity_ok, rows, tally, wait_for

HELPERS = """
import time

def total(w):
    return float(w.sum())

def slow(epoch, step):
    time.sleep(0.04)
    return epoch * 10 + step
"""

PROBE = '            flor.log("probe", helpers.slow(epoch, step))\n'


@pytest.fixture
def toy(project):
    record_toy(project, HELPERS)
    project.write("out.txt", "the user's own file\n")  # the recorded run wrote it; replay must not
    text = (project.root / "train.py").read_text()
    anchor = '            flor.log("loss", float(model.w.sum()))\n'
    (project.root / "train.py").write_text(text.replace(anchor, anchor + PROBE))
    return project


def _probe_rows(db):
    """(epoch, step, value) of the replayed probe values; the value encodes its own context, so
    a duplicate shows as a repeated row."""
    values = [v for (v,) in rows(db, "SELECT value FROM logs WHERE name = 'probe' AND source = 'replay'")]
    return sorted((int(v) // 10, int(v) % 10, int(v)) for v in values)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


EXPECTED = [(e, s, e * 10 + s) for e in range(6) for s in range(5)]


@pytest.mark.parametrize("whole_group", [False, True], ids=["driver-only", "driver-and-workers"])
def test_sigkill_of_replay_driver_then_second_replay_completes_without_duplicates(toy, whole_group):
    before = git_state(toy.root)
    driver = subprocess.Popen(
        [sys.executable, "-m", "flor", "replay", "probe", "--workers", "2"], cwd=toy.root, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    pgid = driver.pid
    try:
        assert wait_for(lambda: toy.db.exists() and len(_probe_rows(toy.db)) >= 5, timeout=60), "replay never stored a value"
        if whole_group:
            os.killpg(pgid, signal.SIGKILL)
        else:
            driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        tally(faults_injected=1, runs_killed=1)
        # Orphaned workers may finish their segments on their own; wait for them to end.
        assert wait_for(lambda: not _group_alive(pgid), timeout=60)
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    kept = _probe_rows(toy.db)
    assert kept and set(kept) <= set(EXPECTED)
    assert len(kept) == len(set((e, s) for e, s, _ in kept)), "duplicate rows after the kill"
    second = toy.flor("replay", "probe", "--workers", "2")
    assert "done" in second.stdout or "already replayed" in second.stdout, second.stdout
    final = _probe_rows(toy.db)
    assert final == EXPECTED, "second replay did not complete exactly once per step"
    # ...and in the right loop context.
    frame = subprocess.run([sys.executable, "-c", (
        "import flor; df = flor.dataframe('probe').dropna(subset=['probe']); "
        "print(sorted((int(e), int(s), int(p)) for e, s, p in zip(df.epoch, df.step, df.probe)))")],
        cwd=toy.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert frame.stdout.strip() == str(EXPECTED), frame.stderr
    assert set(kept) <= set(final)
    lost = len(set(kept) - set(final))
    tally(rows_checked=len(final), rows_lost=lost)
    # A third replay does nothing and duplicates nothing.
    third = toy.flor("replay", "probe")
    assert "already replayed" in third.stdout, third.stdout
    assert _probe_rows(toy.db) == EXPECTED
    assert rows(toy.db, "SELECT COUNT(*) FROM logs WHERE source = 'record'") == [(31,)]
    assert integrity_ok(toy.db)
    assert (toy.root / "out.txt").read_text() == "the user's own file\n"
    assert git_state(toy.root) == before


def test_replay_after_doctor_unlists_a_corrupt_checkpoint(toy):
    """doctor's way out for a damaged checkpoint: unlist it; replay then starts from an earlier one
    and still recovers every value exactly."""
    import json

    listed = rows(toy.db, "SELECT location FROM checkpoints ORDER BY iteration")
    assert len(listed) >= 3
    location = listed[len(listed) // 2][0]
    manifest = json.loads((toy.root / ".flor" / location).read_text())
    from flor.checkpoints.objects import stored

    blob = stored(toy.root / ".flor" / "objects", manifest["blobs"][0])  # raw or compressed
    blob.write_bytes(blob.read_bytes()[:-8])  # truncated
    tally(faults_injected=1)
    assert toy.flor("doctor", check=False).returncode == 1
    repaired = toy.flor("doctor", "--repair").stdout
    assert "unlisted" in repaired
    assert not rows(toy.db, "SELECT 1 FROM checkpoints WHERE location = ?", (location,))
    toy.flor("replay", "probe", "--workers", "2")
    assert _probe_rows(toy.db) == EXPECTED
    tally(rows_checked=len(EXPECTED))

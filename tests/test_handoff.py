"""Handoff: the last checkpoint of a big state is written by a forked process after the run returns."""

import os
import signal
import sqlite3
import sys
import time

import pytest

from flor.checkpoints import handoff
from flor.checkpoints.restore import read_manifest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="handoff forks (Linux only)")

# The state changes after the loop: the last checkpoint must still hold the end of iteration 2.
SCRIPT = """
import flor, numpy as np
state = np.zeros(1_000_000)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        state += 1
        flor.log("first", float(state[0]))
state += 100
print("trained")
"""

HANDOFF = {"FLOR_CKPT_PERIOD": "1", "FLOR_CKPT_HANDOFF_BYTES": "0"}


def _checkpoints(project):
    with sqlite3.connect(project.db) as db:
        return db.execute("SELECT iteration, location FROM checkpoints ORDER BY iteration").fetchall()


def _tstamp(project):
    with sqlite3.connect(project.db) as db:
        return db.execute("SELECT tstamp FROM runs").fetchone()[0]


def _markers(project):
    return list((project.root / ".flor" / "checkpoints").glob("*/*" + handoff.MARKER))


def _wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_last_checkpoint_is_handed_off_exact_and_listed(project):
    project.write("train.py", SCRIPT)
    project.run("train.py", env=HANDOFF)
    handoff.await_writers(project.root / ".flor", 1)
    rows = _checkpoints(project)
    assert [iteration for iteration, _ in rows] == [0, 1, 2]
    last = read_manifest(project.root / ".flor", rows[-1][1])
    assert (last["state"] == 3).all()  # not the +100 made after the loop
    assert not _markers(project)


@pytest.mark.slow
def test_run_returns_before_the_handoff_is_done_and_readers_wait(project):
    project.write("train.py", SCRIPT)
    go = project.root.parent / "go"
    done = project.run("train.py", env={**HANDOFF, "FLOR_CKPT_HANDOFF_HOLD": str(go)})
    assert "trained" in done.stdout
    assert len(_markers(project)) == 1 and [i for i, _ in _checkpoints(project)] == [0, 1]
    show = project.flor("show", _tstamp(project))  # lists the one being written
    assert "being written by pid" in show.stdout
    go.write_text("")
    loaded = project.run("-c", "import flor; print(flor.load_checkpoint(1).iteration)")
    assert loaded.stdout.strip() == "2"
    assert not _markers(project) and [i for i, _ in _checkpoints(project)] == [0, 1, 2]


@pytest.mark.slow
def test_killed_handoff_lists_nothing_half_written(project):
    project.write("train.py", SCRIPT)
    project.run("train.py", env={**HANDOFF, "FLOR_CKPT_HANDOFF_HOLD": str(project.root.parent / "never")})
    (marker,) = _markers(project)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    _wait_until(lambda: not handoff.pending(project.root / ".flor", 1))
    assert not marker.exists() and [i for i, _ in _checkpoints(project)] == [0, 1]
    # Replay and resume read the checkpoints that were listed; the lost one is simply absent.
    loaded = project.run("-c", "import flor; print(flor.load_checkpoint(1).iteration)")
    assert loaded.stdout.strip() == "1"


@pytest.mark.slow
def test_handoff_can_be_turned_off_and_bad_settings_are_refused(project):
    project.write("train.py", SCRIPT)
    never = str(project.root.parent / "never")
    project.run("train.py", env={**HANDOFF, "FLOR_CKPT_HANDOFF": "0", "FLOR_CKPT_HANDOFF_HOLD": never})
    assert not _markers(project) and [i for i, _ in _checkpoints(project)] == [0, 1, 2]
    for name, value in (("FLOR_CKPT_HANDOFF_BYTES", "lots"), ("FLOR_CKPT_HANDOFF", "maybe")):
        bad = project.run("train.py", env={name: value}, check=False)
        assert bad.returncode != 0 and name in bad.stderr and "Traceback" not in bad.stderr
        assert "trained" not in bad.stdout and len(bad.stderr.strip().splitlines()) == 1  # refused before training


@pytest.mark.slow
def test_failed_handoff_is_reported_by_show(project):
    project.write("train.py", SCRIPT)
    go = project.root.parent / "go"
    project.run("train.py", env={**HANDOFF, "FLOR_CKPT_HANDOFF_HOLD": str(go)})
    objects = project.root / ".flor" / "objects"
    objects.rename(objects.with_name("objects-aside"))
    objects.write_text("not a folder")  # the writer cannot store its arrays
    go.write_text("")
    _wait_until(lambda: not handoff.pending(project.root / ".flor", 1))
    assert [i for i, _ in _checkpoints(project)] == [0, 1]
    assert "not written:" in project.flor("show", _tstamp(project)).stdout


CHILD_IMPORTS = r"""
import sys
from pathlib import Path
from types import SimpleNamespace
from flor.checkpoints import handoff

assert "zstandard" not in sys.modules  # imported on first use, as in a run that wrote nothing yet
seen = {}

def fork():
    seen.update({name: name in sys.modules for name in ("zstandard", "numpy", "ctypes")})
    raise RuntimeError("stop before forking")

handoff.os.fork = fork
job = SimpleNamespace(run_id=1, iteration=0, point="end")
try:
    handoff.hand_off(Path(sys.argv[1]), Path(sys.argv[1]) / "flor.db", job, 0.0)
except RuntimeError:
    pass
print(seen)
"""


@pytest.mark.slow
def test_the_handed_off_writer_imports_nothing_after_the_fork(tmp_path):
    """A module another thread of the run was importing when it forked stays locked in the child
    forever: a handed-off writer hung on zstandard's import lock (the writer thread was importing
    it), an orphan process and a checkpoint never written. What the child needs is imported before
    the fork."""
    import subprocess

    from tests.conftest import clean_env

    done = subprocess.run([sys.executable, "-c", CHILD_IMPORTS, str(tmp_path)], env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'zstandard': True, 'numpy': True, 'ctypes': True}", done.stdout + done.stderr

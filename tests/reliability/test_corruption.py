"""A corrupt or truncated database, checkpoint file or git ref: one clear line naming the file and
the way out (`flor doctor`); doctor repairs what can be rebuilt and overwrites nothing."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

import flor
from flor.checkpoints.restore import read_manifest
from flor.errors import CheckpointError
from flor.environment.vcs import ref_for

from .helpers import copy_project, integrity_ok, make_template, one_flor_line, rows, tally

TRAIN = """
import flor, numpy as np
state = np.arange(100_000.0)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(200)):
            flor.log("v", epoch * 1000 + step)
        state += 1
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory, "corruption", {"train.py": TRAIN}, [(("train.py",), {"FLOR_CKPT_PERIOD": "1"})])


@pytest.fixture
def recorded(template, tmp_path):
    return copy_project(template, tmp_path)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["header", "truncated", "middle"])
def test_damaged_database_gives_one_line_then_doctor_recovers(recorded, damage):
    before_logs = rows(recorded.db, "SELECT run_id, ctx_id, name, value, vtype FROM logs ORDER BY rowid")
    before_runs = rows(recorded.db, "SELECT tstamp FROM runs")
    size = recorded.db.stat().st_size
    if damage == "header":
        with open(recorded.db, "r+b") as handle:
            handle.write(b"not a database!!")
    elif damage == "truncated":
        os.truncate(recorded.db, size // 3)
    else:
        with open(recorded.db, "r+b") as handle:
            handle.seek(size // 2)
            handle.write(os.urandom(12288))
    damaged = _sha(recorded.db)
    tally(faults_injected=1)
    if damage != "middle":  # damage in the middle may sit in pages that a command does not read
        for command in (["runs"], ["dataframe"], ["query", "SELECT COUNT(*) FROM logs"], ["show", before_runs[0][0]]):
            done = recorded.flor(*command, check=False)
            assert done.returncode == 1, (command, done.stdout)
            line = one_flor_line(done.stderr)
            assert str(recorded.db) in line and "flor doctor" in line, line
        script = recorded.run("train.py", check=False)
        assert script.returncode != 0 and "Traceback" not in script.stderr
        lines = [l for l in script.stderr.splitlines() if l.startswith("flor: error:")]
        assert lines and str(recorded.db) in lines[0] and "flor doctor" in lines[0]
    assert _sha(recorded.db) == damaged  # no command wrote over the damaged file
    check = recorded.flor("doctor", check=False)
    assert check.returncode == 1 and ".flor/flor.db" in check.stdout and "flor doctor --repair" in check.stdout
    assert _sha(recorded.db) == damaged
    repair = recorded.flor("doctor", "--repair")
    assert "moved aside to .flor/flor.db.corrupt-" in repair.stdout
    (aside,) = [p for p in (recorded.root / ".flor").glob("flor.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert _sha(aside) == damaged
    assert integrity_ok(recorded.db)
    after = rows(recorded.db, "SELECT run_id, ctx_id, name, value, vtype FROM logs ORDER BY rowid")
    remaining = iter(before_logs)
    assert all(any(row == old for old in remaining) for row in after), "recovery invented or reordered rows"
    if damage != "header":
        assert rows(recorded.db, "SELECT tstamp FROM runs") == before_runs
    for (location,) in rows(recorded.db, "SELECT location FROM checkpoints"):
        read_manifest(recorded.root / ".flor", location)
    assert recorded.flor("doctor").returncode == 0
    recorded.run("train.py")
    assert recorded.flor("runs").returncode == 0
    tally(rows_checked=len(before_logs), rows_lost=0)  # rows on damaged pages were lost by the fault itself


def test_damaged_database_error_is_printed_once_by_a_script(recorded):
    with open(recorded.db, "r+b") as handle:
        handle.write(b"not a database!!")
    script = recorded.run("train.py", check=False)
    one_flor_line(script.stderr)


def _checkpoint(project, iteration=1):
    tstamp = rows(project.db, "SELECT tstamp FROM runs")[0][0]
    location = rows(project.db, "SELECT location FROM checkpoints WHERE iteration = ?", (iteration,))[0][0]
    manifest_path = project.root / ".flor" / location
    manifest = json.loads(manifest_path.read_text())
    from flor.checkpoints.objects import stored

    blob = stored(project.root / ".flor" / "objects", manifest["blobs"][0])  # raw or compressed
    return tstamp, manifest_path, blob


def _load(project, tstamp, iteration):
    cwd = os.getcwd()
    os.chdir(project.root)
    try:
        return flor.load_checkpoint(tstamp, iteration)
    finally:
        os.chdir(cwd)


def test_truncated_manifest_gives_checkpoint_error_naming_file_and_doctor(recorded):
    tstamp, manifest_path, _ = _checkpoint(recorded)
    manifest_path.write_text(manifest_path.read_text()[:40])
    tally(faults_injected=1)
    with pytest.raises(CheckpointError) as info:
        _load(recorded, tstamp, 1)
    message = str(info.value)
    assert str(manifest_path) in message and "flor doctor" in message and "\n" not in message
    done = recorded.flor("doctor", "--repair")
    assert "unlisted" in done.stdout and manifest_path.exists()
    assert _load(recorded, tstamp, 0)["state"][1] == 1  # the others still load (nested point: before state += 1)
    assert recorded.flor("doctor").returncode == 0


def test_missing_object_gives_checkpoint_error_naming_file_and_doctor(recorded):
    tstamp, _, blob = _checkpoint(recorded)
    blob.unlink()
    tally(faults_injected=1)
    with pytest.raises(CheckpointError) as info:
        _load(recorded, tstamp, 1)
    # Named by its hash (a missing object may have been raw or compressed: objects/<sha256>[.z]).
    assert str(blob).removesuffix(".z") in str(info.value) and "flor doctor" in str(info.value)


def test_truncated_object_gives_checkpoint_error(recorded):
    tstamp, _, blob = _checkpoint(recorded)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    try:
        _load(recorded, tstamp, 1)
    except CheckpointError as exc:
        assert str(blob) in str(exc) and "flor doctor" in str(exc)
    except Exception as exc:  # noqa: BLE001 - the bug: anything but CheckpointError
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    else:
        raise AssertionError("a truncated object loaded without error")


def test_bit_flipped_object_is_detected_on_load(recorded):
    tstamp, _, blob = _checkpoint(recorded)
    data = bytearray(blob.read_bytes())
    data[8] ^= 0x01
    blob.write_bytes(bytes(data))
    try:
        _load(recorded, tstamp, 1)
    except CheckpointError as exc:
        assert str(blob) in str(exc)
    else:
        raise AssertionError("a corrupt object loaded silently")


def test_corrupt_git_ref_is_named_and_rewritten(recorded):
    tstamp, commit = rows(recorded.db, "SELECT tstamp, code_commit FROM runs")[0]
    ref_file = recorded.root / ".git" / ref_for(tstamp)
    ref_file.write_text("0123")  # truncated
    tally(faults_injected=1)
    # Recording goes on regardless; git's warnings about the broken ref never reach the user's run.
    again = recorded.run("train.py")
    assert "Traceback" not in again.stderr
    check = recorded.flor("doctor", check=False)
    assert check.returncode == 1
    (line,) = [l for l in check.stdout.splitlines() if "problem:" in l]
    assert f".git/{ref_for(tstamp)}" in line and "is corrupt" in line and "flor doctor --repair" in line
    recorded.flor("doctor", "--repair")
    assert recorded.git("rev-parse", ref_for(tstamp)).strip() == commit
    (aside,) = (recorded.root / ".git" / "flor-doctor").iterdir()
    assert aside.read_text() == "0123"
    assert recorded.flor("doctor").returncode == 0
    # The code version is usable again: replay's dry run reads it.
    assert recorded.flor("replay", "--dry-run", "--runs", tstamp).returncode == 0


def test_lost_code_version_gives_a_clear_replay_message(recorded):
    tstamp, commit = rows(recorded.db, "SELECT tstamp, code_commit FROM runs")[0]
    recorded.git("update-ref", "-d", ref_for(tstamp))
    objects = recorded.root / ".git" / "objects"
    loose = objects / commit[:2] / commit[2:]
    loose.unlink()  # the commit object itself is gone
    tally(faults_injected=1)
    recorded.write("train.py", TRAIN + 'flor.log("late", 1)\n')
    done = recorded.flor("replay", "late", check=False)
    assert "Traceback" not in done.stdout + done.stderr
    assert commit[:7] in done.stdout + done.stderr or "code version" in done.stdout + done.stderr, done.stdout + done.stderr
    doctor = recorded.flor("doctor", check=False)
    assert doctor.returncode == 1 and "missing from git" in doctor.stdout
    recorded.flor("doctor", "--repair")
    assert rows(recorded.db, "SELECT code_commit FROM runs WHERE tstamp = ?", (tstamp,)) == [(None,)]

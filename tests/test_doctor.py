"""flor doctor: finds each kind of damage, says the way out, and repairs without overwriting."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from flor.checkpoints.objects import stored
from flor.checkpoints.restore import read_manifest
from flor.doctor import check
from flor.store.salvage import recover_database
from flor.errors import StoreError
from flor.environment.vcs import ref_for
from tests.conftest import clean_env

pytestmark = pytest.mark.slow  # every test reads a recorded training run

SCRIPT = """
import flor, numpy as np
state = np.arange(50_000.0)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(100)):
            flor.log("v", epoch * 1000 + step)
        state += 1
flor.log("note", "done")
"""


def rows(db, sql, params=()):
    connection = sqlite3.connect(str(db))
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from tests.reliability.helpers import make_template

    project = make_template(tmp_path_factory, "doctor", {"train.py": SCRIPT}, [(("train.py",), {"FLOR_CKPT_PERIOD": "1"})])
    assert rows(project.db, "SELECT COUNT(*) FROM checkpoints")[0][0] >= 2
    return project


@pytest.fixture
def recorded(template, tmp_path):
    from tests.reliability.helpers import copy_project

    return copy_project(template, tmp_path)


def lines(report):
    return [p.line() for p in report.problems]


def test_healthy_project_has_no_problems(recorded):
    report = check(recorded.root)
    assert report.ok and report.problems == [] and report.notes == []
    assert report.space and "checkpoints take" in report.space[0]  # space per run (issue 29)
    done = recorded.flor("doctor")
    assert done.stdout.strip().splitlines()[-1] == "flor doctor: no problems found"
    assert all(line.startswith("flor doctor: ") for line in done.stdout.splitlines())


def test_no_database_is_not_a_problem(project):
    report = check(project.root)
    assert report.ok and "nothing recorded yet" in report.notes[0]


def _first_checkpoint(project):
    run_id, iteration, location = rows(project.db, "SELECT run_id, iteration, location FROM checkpoints ORDER BY run_id, iteration")[0]
    manifest = json.loads((project.root / ".flor" / location).read_text())
    return run_id, iteration, location, manifest


def test_missing_and_corrupt_objects_are_unlisted_and_kept(recorded):
    run_id, iteration, location, manifest = _first_checkpoint(recorded)
    objects = recorded.root / ".flor" / "objects"
    digest = manifest["blobs"][0]
    blob = stored(objects, digest)  # raw or compressed (objects.py)
    damaged = bytes([blob.read_bytes()[0] ^ 0xFF]) + blob.read_bytes()[1:]
    blob.write_bytes(damaged)
    report = check(recorded.root)
    assert not report.ok
    assert any(f".flor/{location}" in line and f"object {digest[:12]} is corrupt" in line and "flor doctor --repair" in line
               for line in lines(report)), lines(report)
    listed_before = rows(recorded.db, "SELECT COUNT(*) FROM checkpoints")[0][0]
    users = len(report.problems)  # every checkpoint sharing the damaged object
    report = check(recorded.root, repair=True)
    assert report.ok and all(p.repaired for p in report.problems)
    assert rows(recorded.db, "SELECT COUNT(*) FROM checkpoints")[0][0] == listed_before - users
    assert blob.read_bytes() == damaged and (recorded.root / ".flor" / location).exists()  # kept as they were
    for (location,) in rows(recorded.db, "SELECT location FROM checkpoints"):
        read_manifest(recorded.root / ".flor", location)
    assert check(recorded.root).ok


def test_missing_object_and_unreadable_manifest(recorded):
    listed = rows(recorded.db, "SELECT location FROM checkpoints ORDER BY run_id, iteration")
    first = json.loads((recorded.root / ".flor" / listed[0][0]).read_text())
    for digest in set(first["blobs"]):
        stored(recorded.root / ".flor" / "objects", digest).unlink()
    (recorded.root / ".flor" / listed[-1][0]).write_text('{"format": 1, "bl')
    text = "\n".join(lines(check(recorded.root)))
    assert "is missing" in text and "is not valid JSON" in text
    done = recorded.flor("doctor", check=False)
    assert done.returncode == 1 and "problem(s) remain" in done.stdout
    assert all(line.startswith("flor doctor: ") for line in done.stdout.splitlines())
    fixed = recorded.flor("doctor", "--repair")
    assert "repaired" in fixed.stdout
    assert recorded.flor("doctor").returncode == 0


def test_temporary_files_of_dead_writers_are_removed_live_ones_kept(recorded):
    objects = recorded.root / ".flor" / "objects"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = objects / f".abc.tmp-{dead_pid}-1"
    stale.write_bytes(b"x" * 1000)
    live = recorded.root / ".flor" / "checkpoints" / f".00000009-end.json.tmp-{os.getppid()}-7"
    live.write_text("{}")
    report = check(recorded.root)
    assert [p.what for p in report.problems] == ["1 temporary file(s) (0.0 MB) left by killed checkpoint writers under .flor"]
    check(recorded.root, repair=True)
    assert not stale.exists() and live.exists()


def test_refs_missing_broken_or_pointing_elsewhere_are_rewritten(recorded):
    recorded.run("train.py")
    (t1, c1), (t2, c2) = rows(recorded.db, "SELECT tstamp, code_commit FROM runs ORDER BY run_id")
    recorded.git("update-ref", "-d", ref_for(t1))
    broken = recorded.root / ".git" / ref_for(t2)
    broken.write_text("not a commit\n")
    report = check(recorded.root)
    text = "\n".join(lines(report))
    assert f"{ref_for(t1)} (.git/{ref_for(t1)}) is missing" in text
    assert f"{ref_for(t2)} (.git/{ref_for(t2)}) is corrupt" in text
    report = check(recorded.root, repair=True)
    assert report.ok
    assert recorded.git("rev-parse", ref_for(t1)).strip() == c1
    assert recorded.git("rev-parse", ref_for(t2)).strip() == c2
    kept = list((recorded.root / ".git" / "flor-doctor").iterdir())
    assert len(kept) == 1 and kept[0].read_text() == "not a commit\n"  # moved aside, not overwritten


def test_lost_commit_marks_run_unversioned_keeping_the_hash(recorded):
    (t1, c1), = rows(recorded.db, "SELECT tstamp, code_commit FROM runs ORDER BY run_id")
    connection = sqlite3.connect(recorded.db)
    connection.execute("UPDATE runs SET code_commit = ? WHERE tstamp = ?", ("0" * 40, t1))
    connection.commit()
    connection.close()
    report = check(recorded.root)
    assert any("0000000000" in line and "missing from git" in line for line in lines(report))
    check(recorded.root, repair=True)
    (commit, note), = rows(recorded.db, "SELECT code_commit, vcs_note FROM runs WHERE tstamp = ?", (t1,))
    assert commit is None and "0" * 40 in note


def test_stale_running_run_is_marked_killed(recorded):
    connection = sqlite3.connect(recorded.db)
    connection.execute("UPDATE runs SET status = 'running', pid = 999999999 WHERE run_id = 1")
    connection.commit()
    connection.close()
    report = check(recorded.root)
    assert report.ok and "marked 1 run(s) killed" in report.notes[0]
    assert rows(recorded.db, "SELECT status FROM runs WHERE run_id = 1") == [("killed",)]


def test_missing_schema_is_added_without_deleting(recorded):
    connection = sqlite3.connect(recorded.db)
    connection.execute("DROP TABLE drift")
    connection.commit()
    connection.close()
    before = rows(recorded.db, "SELECT COUNT(*) FROM logs")
    report = check(recorded.root)
    assert "lacks flor's schema (drift)" in lines(report)[0]
    assert check(recorded.root, repair=True).ok
    assert rows(recorded.db, "SELECT COUNT(*) FROM drift") == [(0,)] and rows(recorded.db, "SELECT COUNT(*) FROM logs") == before


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_database_is_moved_aside_and_readable_rows_recovered(recorded):
    expected_logs = rows(recorded.db, "SELECT run_id, ctx_id, name, value, vtype FROM logs ORDER BY rowid")
    expected_runs = rows(recorded.db, "SELECT tstamp, status, code_commit FROM runs ORDER BY run_id")
    size = recorded.db.stat().st_size
    with open(recorded.db, "r+b") as handle:  # damage a run of pages in the middle of the file
        handle.seek(size // 2)
        handle.write(b"\xa5" * 8192)
    damaged = _sha(recorded.db)
    report = check(recorded.root)
    assert not report.ok and "flor doctor --repair" in lines(report)[0] and ".flor/flor.db" in lines(report)[0]
    report = check(recorded.root, repair=True)
    assert report.ok
    (aside,) = report.moved_aside
    assert aside.name.startswith("flor.db.corrupt-") and _sha(aside) == damaged  # kept byte for byte
    recovered_logs = rows(recorded.db, "SELECT run_id, ctx_id, name, value, vtype FROM logs ORDER BY rowid")
    # Nothing is invented: the recovered rows are the original rows, in order.
    it = iter(expected_logs)
    assert all(any(row == candidate for candidate in it) for row in recovered_logs)
    assert rows(recorded.db, "SELECT tstamp, status, code_commit FROM runs ORDER BY run_id") == expected_runs
    assert report.rows_recovered["logs"] == len(recovered_logs) > 0
    for (location,) in rows(recorded.db, "SELECT location FROM checkpoints"):
        read_manifest(recorded.root / ".flor", location)
    assert check(recorded.root).ok
    recorded.run("train.py")  # recording works again
    assert rows(recorded.db, "SELECT COUNT(*) FROM runs") == [(2,)]


def test_unreadable_database_header_gives_a_fresh_database_and_keeps_the_file(recorded):
    with open(recorded.db, "r+b") as handle:
        handle.write(b"this is not sqlite")
    damaged = _sha(recorded.db)
    done = recorded.flor("doctor", check=False)
    assert done.returncode == 1 and "flor doctor --repair" in done.stdout
    done = recorded.flor("doctor", "--repair")
    assert "moved aside to .flor/flor.db.corrupt-" in done.stdout
    (aside,) = [p for p in (recorded.root / ".flor").iterdir() if p.name.startswith("flor.db.corrupt-") and not p.name.endswith(("-wal", "-shm"))]
    assert _sha(aside) == damaged
    out = recorded.flor("doctor").stdout
    assert "git holds the code versions of 1 run(s) that the database does not list" in out


def test_truncated_database_keeps_the_runs(recorded):
    expected_runs = rows(recorded.db, "SELECT tstamp FROM runs ORDER BY run_id")
    os.truncate(recorded.db, recorded.db.stat().st_size // 2)
    report = check(recorded.root, repair=True)
    assert report.ok and report.moved_aside
    assert rows(recorded.db, "SELECT tstamp FROM runs ORDER BY run_id") == expected_runs


def test_recover_database_reads_only(recorded, tmp_path):
    before = _sha(recorded.db)
    counts = recover_database(recorded.db, tmp_path / "copy.db")
    assert _sha(recorded.db) == before
    assert counts["logs"] == rows(recorded.db, "SELECT COUNT(*) FROM logs")[0][0]


def test_moving_aside_fails_with_one_line_store_error(recorded, monkeypatch):
    with open(recorded.db, "r+b") as handle:
        handle.write(b"garbage garbage!")
    import flor.doctor as doctor

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(doctor.os, "replace", refuse)
    with pytest.raises(StoreError, match=r"cannot move the corrupt database .*flor.db aside: Permission denied") as info:
        check(recorded.root, repair=True)
    assert "\n" not in str(info.value)


def test_cli_lists_doctor(project):
    done = project.flor("--help")
    assert "doctor" in done.stdout
    assert "--repair" in project.flor("doctor", "--help").stdout


def test_repair_while_a_run_records_leaves_it_alone(project):
    """doctor --repair during a live run: the run's temporary files and rows are left alone."""
    project.write("live.py", """
import time, flor, numpy as np
state = np.zeros(1_000_000)
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(40)):
        state += 1
        flor.log("epoch", epoch)
        print(epoch, flush=True)
        time.sleep(0.03)
""")
    project.commit_all("live")
    child = subprocess.Popen([sys.executable, "live.py"], cwd=project.root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=clean_env(FLOR_CKPT_PERIOD="1"))
    assert child.stdout.readline()
    outputs = [project.flor("doctor", "--repair", check=False) for _ in range(3)]
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "Traceback" not in err, err
    for done in outputs:
        assert "database" not in done.stdout, done.stdout  # a live database is never moved aside
    assert rows(project.db, "SELECT status FROM runs") == [("finished",)]
    assert [v for (v,) in rows(project.db, "SELECT value FROM logs ORDER BY rowid")] == list(range(40))
    for iteration, location in rows(project.db, "SELECT iteration, location FROM checkpoints"):
        assert (read_manifest(project.root / ".flor", location)["state"] == iteration + 1).all()
    assert check(project.root).ok


# -- issue 26: repairs that never destroy ---------------------------------------------------------


def _read_only_mount_works() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp /tmp"],
                           capture_output=True)
    return probe.returncode == 0


def test_an_unreadable_database_is_named_and_never_moved_aside(recorded):
    # Tests run as root, where chmod 000 does not stop reads: a directory in the database's place
    # is a file flor cannot read that is not damaged. Item 6: it was called corrupt and moved aside.
    db = recorded.db
    saved = db.with_name("saved.db")
    os.replace(db, saved)
    db.mkdir()
    (db / "keep").write_text("x")
    for repair in (False, True):
        report = check(recorded.root, repair=repair)
        (line,) = lines(report)
        assert "is a directory, not a file" in line and "not damage" in line and "corrupt" not in line
        assert not report.ok and not report.moved_aside
    assert (db / "keep").read_text() == "x" and not list(db.parent.glob("flor.db.corrupt-*"))


def test_a_permission_error_is_reported_as_unreadable_not_corrupt(recorded, monkeypatch):
    # As root no file is unreadable by permission; monkeypatching open() to raise what a
    # non-root user gets (EACCES) checks the wording and that --repair does nothing.
    import builtins

    real_open = builtins.open
    db = str(recorded.db)

    def denying(path, *args, **kwargs):
        if str(path) == db:
            raise PermissionError(13, "Permission denied", db)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying)
    report = check(recorded.root, repair=True)
    assert [line for line in lines(report) if "cannot be read (Permission denied)" in line and "not damage" in line]
    assert not report.moved_aside and recorded.db.is_file()


def test_a_read_only_database_is_named_and_repair_changes_nothing(recorded):
    """A read-only bind mount of .flor in a private mount namespace (root ignores chmod)."""
    if not _read_only_mount_works():
        pytest.skip("needs `unshare -m` and mount (root in a namespace) to make .flor read-only")
    flor_dir = recorded.root / ".flor"
    before = sorted(p.name for p in flor_dir.iterdir())
    command = (f"mount --bind {flor_dir} {flor_dir} && mount -o remount,bind,ro {flor_dir} {flor_dir} && "
               f"exec {sys.executable} -m flor doctor --repair")
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=recorded.root, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is read-only" in done.stdout and "corrupt" not in done.stdout, done.stdout
    assert sorted(p.name for p in flor_dir.iterdir()) == before  # nothing moved aside


def test_an_unreadable_checkpoint_object_stays_listed(recorded):
    run_id, iteration, location, manifest = _first_checkpoint(recorded)
    blob = stored(recorded.root / ".flor" / "objects", manifest["blobs"][0])
    os.replace(blob, blob.with_name("saved"))
    blob.mkdir()  # there, but unreadable (see above: root reads any file)
    listed = rows(recorded.db, "SELECT COUNT(*) FROM checkpoints")[0][0]
    report = check(recorded.root, repair=True)
    assert any("cannot be read" in line and "not damage" in line for line in lines(report)), lines(report)
    assert not any("missing" in line or "corrupt" in line for line in lines(report))
    assert rows(recorded.db, "SELECT COUNT(*) FROM checkpoints")[0][0] == listed


@pytest.mark.parametrize("call", ["cat-file", "for-each-ref"])
def test_a_failed_git_call_marks_no_run_unversioned(recorded, monkeypatch, call):
    # A git that fails (a broken object store, a lock, an old git): simulated by making the
    # call that lists commits, or the one that lists refs, fail. The first used to count every
    # commit as missing; the repair must refuse that part in one line and change nothing.
    from flor.errors import VersionControlError
    from flor.environment.vcs import Repo

    real = Repo.git
    refs = real(Repo(recorded.root), "for-each-ref", "refs/flor/")

    def failing(self, *args, **kwargs):
        if call in args:
            raise VersionControlError(f"git {call} failed: fatal: unable to read object store")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Repo, "git", failing)
    report = check(recorded.root, repair=True)
    (line,) = lines(report)
    assert "git failed" in line and "unable to read object store" in line and "missing" not in line
    assert rows(recorded.db, "SELECT COUNT(*) FROM runs WHERE code_commit IS NULL") == [(0,)]
    assert real(Repo(recorded.root), "for-each-ref", "refs/flor/") == refs  # no ref rewritten


def test_an_edited_manifest_fails_the_restore_and_doctor_names_it(recorded):
    # Item 7: another checkpoint's blobs list in this manifest, every array still hashing to its
    # name: restored without complaint before manifests were bound to their content.
    listed = rows(recorded.db, "SELECT location, iteration FROM checkpoints ORDER BY run_id, iteration")
    (first, it0), (second, _it1) = listed[0], listed[1]
    one, two = (json.loads((recorded.root / ".flor" / loc).read_text()) for loc in (first, second))
    one["blobs"] = two["blobs"]
    (recorded.root / ".flor" / first).write_text(json.dumps(one))
    done = subprocess.run([sys.executable, "-c", f"import flor; flor.load_checkpoint(1, {it0})"], cwd=recorded.root,
                          env=clean_env(), capture_output=True, text=True)
    assert done.returncode != 0 and "edited or swapped" in done.stderr and "Traceback" not in done.stderr, done.stderr
    report = check(recorded.root)
    assert any(f".flor/{first}" in line and "edited or swapped" in line for line in lines(report)), lines(report)
    # The repair keeps the row it removes.
    check(recorded.root, repair=True)
    kept = list((recorded.root / ".flor" / "doctor").glob("unlisted-*.json"))
    assert kept and json.loads(kept[0].read_text())[0]["location"] == first

"""End to end: real scripts recorded in temporary git repositories."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import TUTORIAL, clean_env

pytestmark = pytest.mark.slow  # every test trains or launches processes

SMALL = """
import flor
epochs = flor.arg("epochs", 3)
for epoch in flor.loop("epoch", range(epochs)):
    for step in flor.loop("step", range(4)):
        flor.log("loss", epoch + step / 10)
    flor.log("acc", epoch / 10)
flor.log("final", "done")
"""


def rows(db, sql):
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def test_small_script_is_recorded(project):
    project.write("train.py", SMALL)
    project.run("train.py")
    (run,) = rows(project.db, "SELECT status, filename, code_commit, error FROM runs")
    assert run[0] == "finished" and run[1] == "train.py" and run[2] and run[3] is None
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'loss'") == [(12,)]
    out = project.flor("dataframe", "epochs", "loss", "acc", "--json").stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(records) == 12
    assert records[5] == {**records[5], "epoch": 1, "step": 1, "epochs": 3, "loss": 1.1, "acc": 0.1}


def test_tutorial_twice_leaves_git_untouched(project):
    project.write("train.py", TUTORIAL.read_text())
    project.commit_all("tutorial")
    status, log, branches = project.git("status", "--porcelain"), project.git("log", "--oneline"), project.git("branch")
    project.run("train.py")
    project.run("train.py", "--kwargs", "hidden=75")
    assert project.git("status", "--porcelain") == status
    assert project.git("log", "--oneline") == log and project.git("branch") == branches
    out = project.flor("dataframe", "hidden", "accuracy", "--csv").stdout.splitlines()
    assert out[0] == "projid,tstamp,filename,git_head,git_dirty,hidden,accuracy"
    head = project.git("rev-parse", "HEAD").strip()
    assert [line.split(",")[3:6] for line in out[1:]] == [[head, "False", "500"], [head, "False", "75"]]
    assert all(0.5 < float(line.split(",")[6]) <= 1 for line in out[1:])
    refs = project.git("for-each-ref", "refs/flor").splitlines()
    assert len(refs) == 2


def test_sigkill_keeps_flushed_logs_and_shows_killed(project):
    project.write("slow.py", """
        import time, flor
        for epoch in flor.loop("epoch", range(1000)):
            flor.log("tick", epoch)
            print(epoch, flush=True)
            time.sleep(0.05)
    """)
    child = subprocess.Popen([sys.executable, "slow.py"], cwd=project.root, env=clean_env(), stdout=subprocess.PIPE, text=True)
    for _ in range(30):
        child.stdout.readline()
    time.sleep(0.3)  # at least one outer-loop boundary flush has landed
    child.send_signal(signal.SIGKILL)
    child.wait()
    logged = rows(project.db, "SELECT COUNT(*) FROM logs")[0][0]
    assert logged >= 25
    out = project.flor("runs").stdout
    assert "killed" in out
    assert rows(project.db, "SELECT status FROM runs") == [("killed",)]


def test_sigterm_flushes_and_marks_killed(project):
    project.write("slow.py", """
        import time, flor
        for epoch in flor.loop("epoch", range(1000)):
            flor.log("tick", epoch)
            print(epoch, flush=True)
            time.sleep(0.05)
    """)
    child = subprocess.Popen([sys.executable, "slow.py"], cwd=project.root, env=clean_env(), stdout=subprocess.PIPE, text=True)
    for _ in range(10):
        child.stdout.readline()
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=30)
    status, error = rows(project.db, "SELECT status, error FROM runs")[0]
    assert status == "killed" and "SIGTERM" in error
    assert rows(project.db, "SELECT COUNT(*) FROM logs")[0][0] >= 10


def test_eight_concurrent_runs_lose_nothing(project):
    project.write("many.py", """
        import flor
        worker = flor.arg("worker", 0)
        for epoch in flor.loop("epoch", range(20)):
            for step in flor.loop("step", range(50)):
                flor.log("value", worker * 100000 + epoch * 100 + step)
    """)
    children = [
        subprocess.Popen([sys.executable, "many.py", "--kwargs", f"worker={w}"], cwd=project.root,
                         env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    assert not any("locked" in err for _, err in outputs)
    assert rows(project.db, "SELECT COUNT(*), COUNT(DISTINCT value) FROM logs") == [(8000, 8000)]
    assert rows(project.db, "SELECT COUNT(DISTINCT tstamp), COUNT(*) FROM runs WHERE status='finished'") == [(8, 8)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (["hiden=75"], "hiden: not declared with flor.arg (declared args: epochs=3)"),
        (["epochs=three"], "epochs='three': expected an int like 3"),
        (["epochs"], "expects name=value pairs"),
    ],
)
def test_bad_kwargs_fail_in_one_line_and_record_nothing(project, kwargs, message):
    project.write("train.py", SMALL)
    done = project.run("train.py", "--kwargs", *kwargs, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flor: error:") and message in lines[0], done.stderr
    assert not project.db.exists() or rows(project.db, "SELECT COUNT(*) FROM runs") == [(0,)]


def test_script_argparse_keeps_working(project):
    project.write("train.py", """
        import argparse, flor
        parser = argparse.ArgumentParser()
        parser.add_argument("--name")
        options = parser.parse_args()
        lr = flor.arg("lr", 0.1)
        flor.log("seen", f"{options.name}:{lr}")
    """)
    project.run("train.py", "--kwargs", "lr=0.5", "--name", "x")
    assert rows(project.db, "SELECT value FROM logs") == [("x:0.5",)]
    assert json.loads(rows(project.db, "SELECT argv FROM runs")[0][0]) == ["train.py", "--kwargs", "lr=0.5", "--name", "x"]


def test_failed_script_is_recorded_as_failed(project):
    project.write("bad.py", """
        import flor
        for epoch in flor.loop("epoch", range(5)):
            flor.log("x", epoch)
            if epoch == 2:
                raise ValueError("diverged")
    """)
    done = project.run("bad.py", check=False)
    assert done.returncode == 1 and "ValueError: diverged" in done.stderr
    assert rows(project.db, "SELECT status, error FROM runs") == [("failed", "ValueError: diverged")]
    assert rows(project.db, "SELECT COUNT(*) FROM logs") == [(3,)]


def test_duplicate_arg_with_other_default_is_refused(project):
    project.write("dup.py", """
        import flor
        a = flor.arg("lr", 0.1)
        b = flor.arg("lr", 0.2)
    """)
    done = project.run("dup.py", check=False)
    assert done.returncode != 0
    assert "declared twice with different defaults" in done.stderr and "Traceback" not in done.stderr


def test_outside_git_records_unversioned_with_one_warning(tmp_path):
    script = tmp_path / "t.py"
    script.write_text(SMALL)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr.count("not inside a git repository") == 1
    assert rows(tmp_path / ".flor" / "flor.db", "SELECT status, code_commit, vcs_note FROM runs") == [
        ("finished", None, "unversioned: not inside a git repository")
    ]


def test_run_from_subdirectory(project):
    project.write("src/train.py", SMALL)
    project.run("train.py", cwd=project.root / "src")
    assert rows(project.db, "SELECT filename, cwd FROM runs") == [("src/train.py", "src")]


def test_notebook_commit_ends_run_and_querying_creates_none(project):
    pytest.importorskip("IPython")
    code = (
        "import flor; flor.log('a', 1); flor.commit(); flor.log('b', 2); flor.commit(); "
        "print(len(flor.dataframe('a', 'b')))"
    )
    done = subprocess.run([sys.executable, "-m", "IPython", "--quick", "-c", code], cwd=project.root,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rows(project.db, "SELECT status FROM runs") == [("finished",), ("finished",)]
    query = "import flor; print(flor.dataframe().shape)"
    done = subprocess.run([sys.executable, "-m", "IPython", "--quick", "-c", query], cwd=project.root,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rows(project.db, "SELECT COUNT(*) FROM runs") == [(2,)]


FORKS = """
import os, sys
import flor
for epoch in flor.loop("epoch", range(3)):
    flor.log("loss", epoch)
    for attempt in range(3):
        flor.log("before_fork", epoch * 10 + attempt)  # still in the queue when the process forks
        pid = os.fork()
        if pid == 0:
            flor.log("child", 1)
            sys.exit(0)  # runs the exit handlers the child inherited
        _, status = os.waitpid(pid, 0)
        flor.log("child_status", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_never_writes_its_parents_run(project):
    # Issue 26, item 11: the child's sys.exit ran flor's exit handler, which wrote the parent's
    # unflushed values again (or hung on the store lock the fork copied held).
    project.write("forks.py", FORKS)
    done = project.run("forks.py", timeout=30)
    assert "Traceback" not in done.stderr
    assert rows(project.db, "SELECT COUNT(*), status FROM runs") == [(1, "finished")]
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'before_fork'") == [(9,)]
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'loss'") == [(3,)]
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'child'") == [(0,)]
    assert rows(project.db, "SELECT DISTINCT value FROM logs WHERE name = 'child_status'") == [(0,)]


TERMINATED_CHILD = """
import os, signal, time
import flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", epoch)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # as a DataLoader worker: busy when its parent stops it
        os.write(write, b"x")
        time.sleep(30)
        os._exit(0)
    os.read(read, 1)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    flor.log("child_status", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_dies_of_sigterm_as_without_flor(project):
    # CI (stop 34): a dataloader_shuffle recording hung for 300 s. A DataLoader terminates a worker
    # that has not exited 5 s after the loop stopped; the worker had inherited the run's SIGTERM
    # handler, so instead of dying it unwound through its queues' finalizers, which can block on a
    # pipe nobody reads, and the parent's exit waits for it.
    project.write("terminated.py", TERMINATED_CHILD)
    done = project.run("terminated.py", timeout=60)
    assert "Traceback" not in done.stderr
    assert rows(project.db, "SELECT DISTINCT value FROM logs WHERE name = 'child_status'") == [(-15,)]
    assert rows(project.db, "SELECT COUNT(*), status FROM runs") == [(1, "finished")]


def test_a_reader_in_another_pid_namespace_does_not_mark_a_live_run_killed(project):
    # Issue 26: same host name, other PID namespace (a container, `unshare -p`): the run's pid
    # is not there, and the reader marked the live run killed.
    import shutil

    from tests.conftest import clean_env

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-pf", "--mount-proc", "true"]).returncode:
        pytest.skip("needs `unshare -p` (a PID namespace)")
    project.write("slow.py", "import flor, time\nfor epoch in flor.loop('epoch', range(600)):\n"
                             "    flor.log('loss', epoch)\n    print('began', flush=True)\n    time.sleep(0.1)\n")
    process = subprocess.Popen([sys.executable, "slow.py"], cwd=project.root, env=clean_env(),
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "began"
        done = subprocess.run(["unshare", "-pf", "--mount-proc", sys.executable, "-m", "flor", "runs"],
                              cwd=project.root, env=clean_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert rows(project.db, "SELECT status FROM runs") == [("running",)]
    finally:
        process.kill()
        process.wait()


FORK_DURING_WRITE = """
import os, sys, threading, time
import flor
from flor.recording.run import _runs
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", epoch)
store = next(iter(_runs)).store
slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) SELECT COUNT(*) FROM c"
inside = threading.Event()
def write(cursor):
    inside.set()
    return cursor.execute(slow).fetchone()
writer = threading.Thread(target=store._write, args=(write,))
writer.start()
inside.wait()
pid = os.fork()
if pid == 0:
    # The fork waited for the write: the child's copy of the connection is between transactions.
    code = 3 if store.connection.in_transaction else 0
    sys.stdout.flush()
    sys.exit(code)  # the interpreter shuts down: the parent's connection must not be closed here
_, status = os.waitpid(pid, 0)
writer.join()
flor.log("child_status", os.waitstatus_to_exitcode(status))
"""


def test_a_fork_waits_for_the_store_and_the_child_never_closes_it(project):
    # A DataLoader forks its workers while the run's flush thread may be inside SQLite: the
    # child's copy of SQLite's mutexes would be held by a thread it does not have, and a child
    # that closes the inherited connection checkpoints (and may delete) the parent's WAL.
    project.write("forkwrite.py", FORK_DURING_WRITE)
    done = project.run("forkwrite.py", timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert rows(project.db, "SELECT value FROM logs WHERE name = 'child_status'") == [(0,)]
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'loss'") == [(2,)]
    assert rows(project.db, "PRAGMA integrity_check") == [("ok",)]

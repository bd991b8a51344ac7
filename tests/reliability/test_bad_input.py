"""Bad input across the API and the command line: one clear message, and no recorded value lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import clean_env, git

from .helpers import copy_project, git_state, integrity_ok, make_template, one_flor_line, rows, tally

BASE = """
import flor
epochs = flor.arg("epochs", 3)
lr = flor.arg("lr", 0.1)
verbose = flor.arg("verbose", False)
for epoch in flor.loop("epoch", range(epochs)):
    flor.log("loss", lr * epoch)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_template(tmp_path_factory, "bad_input", {"train.py": BASE}, [(("train.py",), {})])


@pytest.fixture
def base(template, tmp_path):
    return copy_project(template, tmp_path)


def _snapshot(project):
    return rows(project.db, "SELECT * FROM logs ORDER BY rowid"), rows(project.db, "SELECT run_id, tstamp, status FROM runs")


@pytest.mark.parametrize("kwargs, expected", [
    (["epoch=3"], "epoch: not declared with flor.arg"),
    (["epochs=3.5"], "epochs='3.5'"),
    (["epochs=three"], "epochs='three'"),
    (["lr=fast"], "lr='fast'"),
    (["verbose=maybe"], "verbose='maybe'"),
    (["epochs"], "name=value"),
    (["=3"], ""),
    (["lr=1", "lr=2"], "--kwargs gives lr twice (lr=1 and lr=2)"),  # issue 26: silently took 2
])
def test_bad_kwargs_stop_before_training_and_record_nothing(base, kwargs, expected):
    before = _snapshot(base)
    done = base.run("train.py", "--kwargs", *kwargs, check=False)
    assert done.returncode == 2, done.stderr
    line = one_flor_line(done.stderr)
    assert expected in line, line
    assert _snapshot(base) == before
    tally(faults_injected=1, rows_checked=len(before[0]))


def test_cli_bad_input_is_one_line_and_changes_nothing(base):
    before = _snapshot(base)
    cases = [
        (["show", "1999"], "no run matches"),
        (["show", ""], "tstamp"),
        (["query", "DELETE FROM logs"], "read-only"),
        (["query", "DROP TABLE runs"], "read-only"),
        (["query", "SELEC 1"], "query failed"),
        (["replay", "--kwargs", "lr=3"], "refused"),
        (["replay", "--iterations", "epoch"], "--iterations"),
        (["replay", "--workers", "two"], "invalid int value"),
    ]
    for args, expected in cases:
        done = base.flor(*args, check=False)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr, (args, done.stderr)
        text = done.stderr.strip().splitlines()[-1]
        assert expected in text, (args, done.stderr)
        tally(faults_injected=1)
    assert _snapshot(base) == before
    assert integrity_ok(base.db)


def test_an_arg_declared_inside_the_loop_gets_a_clear_line(base):
    # Issue 26: it got "not declared with flor.arg (declared args: (none))".
    base.write("late.py", 'import flor\nfor epoch in flor.loop("epoch", range(2)):\n    lr = flor.arg("lr", 0.1)\n'
                          '    flor.log("loss", lr)\n')
    done = base.run("late.py", "--kwargs", "lr=0.5", check=False)
    assert done.returncode == 2, done.stderr
    line = one_flor_line(done.stderr)
    assert "flor.arg('lr') is declared after training began" in line and "before the first flor.loop" in line, line
    tally(faults_injected=1)


FAILS_BEFORE_TRAINING = {
    "duplicate-arg": ('import flor\na = flor.arg("lr", 0.1)\nb = flor.arg("lr", 0.2)\n', "declared twice with different defaults"),
    "non-string-arg-name": ("import flor\nflor.arg(1, 2)\n", "flor.arg name must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(FAILS_BEFORE_TRAINING))
def test_api_misuse_before_training_is_one_line(base, case):
    script, message = FAILS_BEFORE_TRAINING[case]
    base.write("bad.py", script)
    before = _snapshot(base)
    done = base.run("bad.py", check=False)
    assert done.returncode != 0
    assert message in one_flor_line(done.stderr)
    assert rows(base.db, "SELECT * FROM logs ORDER BY rowid") == before[0]
    tally(faults_injected=1, rows_checked=len(before[0]))


@pytest.mark.parametrize("script", [
    'import flor\na = flor.arg("lr", 0.1)\nb = flor.arg("lr", 0.2)\n',
    'import flor\nlr = flor.arg("lr", 0.1)\nraise ValueError("boom before training")\n',
], ids=["duplicate-arg", "error-after-arg"])
def test_script_failing_before_training_is_not_recorded_as_finished(base, script):
    base.write("bad.py", script)
    base.run("bad.py", check=False)
    recorded = rows(base.db, "SELECT filename, status FROM runs WHERE run_id > 1")
    assert all(status != "finished" for _, status in recorded), recorded
    assert all(filename == "bad.py" for filename, _ in recorded), recorded


MISUSE_IN_TRAINING = {
    "log-int-name": ("flor.log(3, 1.0)", "flor.log name must be a string"),
    "log-none-name": ("flor.log(None, 1.0)", "flor.log name must be a string"),
    "loop-none-name": ("list(flor.loop(None, range(2)))", "flor.loop name must be a non-empty string"),
    "loop-not-iterable": ('list(flor.loop("inner", 5))', "needs an iterable"),
}


@pytest.mark.parametrize("case", sorted(MISUSE_IN_TRAINING))
def test_api_misuse_during_training_keeps_what_was_logged(project, case):
    statement, message = MISUSE_IN_TRAINING[case]
    project.write("bad.py", f"""
import flor
for epoch in flor.loop("epoch", range(5)):
    flor.log("kept", epoch)
    if epoch == 2:
        {statement}
""")
    done = project.run("bad.py", check=False)
    assert done.returncode == 1
    assert message in one_flor_line(done.stderr)
    assert rows(project.db, "SELECT value FROM logs ORDER BY rowid") == [(0,), (1,), (2,)]
    (status, error), = rows(project.db, "SELECT status, error FROM runs")
    assert status == "failed" and message in error
    tally(faults_injected=1, rows_checked=3)


def test_unpicklable_huge_and_odd_values_are_kept(project):
    project.write("odd.py", """
import flor, threading, numpy as np
big_text = "x" * 20_000_000
big_list = list(range(1_000_000))
for epoch in flor.loop("epoch", range(2)):
    flor.log("lambda", lambda: 1)
    flor.log("lock", threading.Lock())
    flor.log("gen", (i for i in range(3)))
    flor.log("bytes", b"\\x00\\xff")
    flor.log("big_text", big_text)
    flor.log("big_list", big_list)
    flor.log("array", np.arange(6).reshape(2, 3))
    flor.log("nested", {"a": [1, {"b": None}], "c": "é✓"})
    flor.log("huge_int", 2 ** 80)
    flor.log("after", epoch)
""")
    done = project.run("odd.py")
    warnings = [line for line in done.stderr.splitlines() if "not JSON-serializable" in line]
    assert len(warnings) == 4, done.stderr  # once per name, not per call
    assert "Traceback" not in done.stderr
    import flor.values as fv

    stored = {}
    for name, value, vtype in rows(project.db, "SELECT name, value, vtype FROM logs ORDER BY rowid"):
        stored.setdefault(name, []).append(fv.decode(value, vtype))
    assert stored["big_text"] == ["x" * 20_000_000] * 2
    assert stored["big_list"] == [list(range(1_000_000))] * 2
    assert stored["array"] == [[[0, 1, 2], [3, 4, 5]]] * 2
    assert stored["nested"] == [{"a": [1, {"b": None}], "c": "é✓"}] * 2
    assert stored["huge_int"] == [2 ** 80] * 2
    assert stored["after"] == [0, 1]
    assert all(v.startswith("<function") for v in stored["lambda"])
    assert stored["bytes"] == ["b'\\x00\\xff'"] * 2
    assert rows(project.db, "SELECT status FROM runs") == [("finished",)]
    tally(faults_injected=8, rows_checked=sum(len(v) for v in stored.values()))


def test_nan_and_infinity_round_trip(project):
    project.write("nan.py", """
import flor, numpy as np
values = [float("nan"), float("inf"), -float("inf"), np.float32("nan"), np.float64("-inf"), np.array([float("nan")]), 1.5]
for i in flor.loop("i", range(len(values))):
    flor.log("x", values[i])
flor.log("listed", [1.0, float("nan"), float("inf")])
""")
    project.run("nan.py")
    out = project.flor("dataframe", "x", "--json").stdout
    got = [json.loads(line)["x"] for line in out.splitlines() if line.strip()]
    assert len(got) == 7
    check = subprocess.run([sys.executable, "-c", """
import flor, math
df = flor.dataframe("x").sort_values("i")
xs = list(df["x"])
assert all(isinstance(x, float) for x in xs), xs
assert math.isnan(xs[0]) and xs[1] == math.inf and xs[2] == -math.inf and math.isnan(xs[3])
assert xs[4] == -math.inf and math.isnan(xs[5]) and xs[6] == 1.5
listed = flor.dataframe("listed")["listed"].dropna().iloc[0]
assert listed[0] == 1.0 and math.isnan(listed[1]) and listed[2] == math.inf, listed
print("ok")
"""], cwd=project.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "ok", check.stderr
    tally(faults_injected=6, rows_checked=8)


def test_lone_surrogate_string_loses_nothing_else(project):
    project.write("sur.py", """
import flor
for epoch in flor.loop("epoch", range(3)):
    flor.log("before", epoch)
    flor.log("text", "bad\\ud800" if epoch == 1 else "ok")
    flor.log("after", epoch)
""")
    done = project.run("sur.py", check=False)
    assert "Traceback" not in done.stderr, done.stderr
    assert rows(project.db, "SELECT COUNT(*) FROM logs WHERE name IN ('before', 'after')") == [(6,)]
    assert rows(project.db, "SELECT status FROM runs") == [("finished",)]


def test_loops_that_raise_midway_keep_every_finished_iteration(project):
    project.write("raising.py", """
import flor

def batches():
    for i in range(10):
        if i == 4:
            raise IOError("the data loader broke")
        yield i

for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", batches() if epoch == 1 else range(5)):
        flor.log("v", epoch * 100 + step)
""")
    done = project.run("raising.py", check=False)
    assert done.returncode == 1 and "the data loader broke" in done.stderr
    values = [v for (v,) in rows(project.db, "SELECT value FROM logs ORDER BY rowid")]
    assert values == [0, 1, 2, 3, 4, 100, 101, 102, 103]
    (status, error), = rows(project.db, "SELECT status, error FROM runs")
    assert status == "failed" and "the data loader broke" in error
    # Each value keeps its loop context.
    frame = subprocess.run([sys.executable, "-c", (
        "import flor; df = flor.dataframe('v').dropna(subset=['v']); "
        "print([(int(e), int(s), int(v)) for e, s, v in zip(df.epoch, df.step, df.v)])")],
        cwd=project.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    expected = [(0, s, s) for s in range(5)] + [(1, s, 100 + s) for s in range(4)]
    assert frame.stdout.strip() == str(expected), frame.stderr
    tally(faults_injected=1, rows_checked=len(values))


def test_generators_are_streamed_once(project):
    project.write("gen.py", """
import itertools, flor, numpy as np
events = []

def produce(n):
    for i in range(n):
        events.append(f"make {i}")
        yield i

g = produce(3)
for i in flor.loop("epoch", g):
    events.append(f"use {i}")
    flor.log("seen", i)
for i in flor.loop("again", g):  # already consumed: nothing, no error
    flor.log("never", i)
for i in flor.loop("endless", itertools.count()):  # never materialised
    if i == 5:
        break
    flor.log("endless", i)
state = np.zeros(3)
with flor.checkpointing(state=state):
    for i in flor.loop("outer", produce(3)):  # no len(): the end checkpoint is still taken
        state += 1
print(" | ".join(events))
""")
    done = project.run("gen.py", env={"FLOR_CKPT_PERIOD": "1"})
    events = done.stdout.strip().splitlines()[-1].split(" | ")
    assert events[:6] == ["make 0", "use 0", "make 1", "use 1", "make 2", "use 2"]
    assert rows(project.db, "SELECT name, COUNT(*) FROM logs GROUP BY name ORDER BY name") == [("endless", 5), ("seen", 3)]
    assert rows(project.db, "SELECT MAX(iteration) FROM checkpoints") == [(2,)]
    tally(rows_checked=8)


def test_run_started_in_a_subdirectory(project):
    project.write("src/deep/train.py", BASE)
    project.commit_all("nested")
    project.run("train.py", cwd=project.root / "src" / "deep")
    project.run("src/deep/train.py", cwd=project.root)
    assert not (project.root / "src" / "deep" / ".flor").exists()
    assert rows(project.db, "SELECT filename, cwd FROM runs ORDER BY run_id") == [
        ("src/deep/train.py", "src/deep"), ("src/deep/train.py", ".")]
    out = project.flor("runs", cwd=project.root / "src").stdout
    assert out.count("src/deep/train.py") == 2


def test_detached_head_stays_detached(project):
    project.write("train.py", BASE)
    project.commit_all("one")
    first = project.git("rev-parse", "HEAD").strip()
    project.write("other.txt", "two\n")
    project.commit_all("two")
    project.git("checkout", "-q", "--detach", first)
    before = git_state(project.root)
    project.run("train.py")
    assert git_state(project.root) == before
    (commit,) = rows(project.db, "SELECT code_commit FROM runs")[0]
    assert project.git("rev-parse", f"{commit}^").strip() == first
    assert project.git("show", f"{commit}:train.py") == (project.root / "train.py").read_text()


def test_repository_without_commits(tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text(BASE)
    (root / "staged.txt").write_text("staged\n")
    git(root, "add", "staged.txt")
    index_before = git(root, "ls-files", "-s")
    done = subprocess.run([sys.executable, "train.py"], cwd=root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (commit,) = rows(root / ".flor" / "flor.db", "SELECT code_commit FROM runs")[0]
    assert commit
    tree = git(root, "ls-tree", "-r", "--name-only", commit).split()
    assert tree == ["staged.txt", "train.py"]
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, env=clean_env()).returncode != 0
    assert git(root, "ls-files", "-s") == index_before


def test_bare_repository_records_unversioned(tmp_path):
    root = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(root))
    (root / "train.py").write_text(BASE)
    refs_before = git(root, "for-each-ref")
    done = subprocess.run([sys.executable, "train.py"], cwd=root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    warning = one_flor_line(done.stderr, "flor: warning:")
    assert "code version" in warning or "git" in warning
    assert rows(root / ".flor" / "flor.db", "SELECT status, code_commit FROM runs") == [("finished", None)]
    assert rows(root / ".flor" / "flor.db", "SELECT COUNT(*) FROM logs") == [(3,)]
    assert git(root, "for-each-ref") == refs_before


def _read_only_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp /tmp"],
                           capture_output=True)
    return probe.returncode == 0


def test_read_only_flor_folder(base):
    """As root, chmod does not stop writes; a read-only bind mount of .flor (in a private mount
    namespace, so nothing outside the child sees it) does. Skipped where namespaces are not allowed."""
    if not _read_only_mount_works():
        pytest.skip("needs `unshare -m` and mount (root in a namespace) to make .flor read-only")
    before = _snapshot(base)
    flor_dir = base.root / ".flor"
    command = (f"mount --bind {flor_dir} {flor_dir} && mount -o remount,bind,ro {flor_dir} {flor_dir} && "
               f"exec {sys.executable} train.py")
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=base.root, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    # (The line is printed twice: see test_damaged_database_error_is_printed_once_by_a_script.)
    lines = [l for l in done.stderr.splitlines() if l.startswith("flor: error:")]
    assert lines and str(flor_dir / "flor.db") in lines[0], done.stderr
    assert _snapshot(base) == before
    assert integrity_ok(base.db)
    tally(faults_injected=1, rows_checked=len(before[0]))

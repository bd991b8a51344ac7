"""End to end: hindsight replay of real scripts in temporary git repositories."""

import io
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import TUTORIAL, Project, git

SCRIPT = """
import flor
import numpy as np
import helpers

class Model:
    def __init__(self):
        self.w = np.zeros(3)
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"].copy()

np.random.seed(flor.arg("seed", 0))
model = Model()
data = np.loadtxt("data/values.txt")
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 6))):
        for step in flor.loop("step", range(5)):
            model.w += np.random.rand(3) * data[step % len(data)]
            flor.log("loss", float(model.w.sum()))
        # BODY
        with open("out.txt", "w") as handle:
            handle.write(str(epoch))
# AFTER
flor.log("final", helpers.total(model.w))
"""

HELPERS = """
import os, signal, time

def total(w):
    return float(w.sum())

def maybe_crash(epoch, marker, calls):
    with open(calls, "a") as handle:
        handle.write(f"{epoch}\\n")
    if epoch == 2 and os.path.exists(marker):
        time.sleep(1.0)  # let the flush of the finished epochs land
        os.kill(os.getpid(), signal.SIGKILL)
    return epoch * 2
"""


def values(db, name, where=""):
    sql = f"""
        SELECT r.tstamp, s.parent_iteration, l.iteration, l.value FROM logs l JOIN runs r ON r.run_id = l.run_id
        LEFT JOIN contexts s ON s.run_id = l.run_id AND s.ctx_id = l.ctx_id
        WHERE l.name = ? {where} ORDER BY r.tstamp, l.rowid"""
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, (name,)).fetchall()


def record_toy(project, helpers: str = HELPERS):
    """The toy project committed, with one run recorded (a checkpoint every epoch)."""
    project.write("train.py", SCRIPT)
    project.write("helpers.py", helpers)
    project.write("data/values.txt", "1.0\n2.0\n0.5\n")
    project.write(".gitignore", "data/\nout.txt\n")
    project.write("out.txt", "the user's own file\n")
    project.commit_all("toy")
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    return project


@pytest.fixture(scope="module")
def _toy_recorded(tmp_path_factory):
    """The toy's two recorded runs, made once for this file: each test replays in its own copy
    (a project holds no absolute path, as the corpus's copies show), not in new recordings."""
    root = tmp_path_factory.mktemp("toy") / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    project = Project(root)
    project.write("README", "a project\n")  # as the `project` fixture's first commit
    project.commit_all("init")
    record_toy(project)
    project.run("train.py", "--kwargs", "seed=7", "epochs=5", env={"FLOR_CKPT_PERIOD": "2"})
    return root


@pytest.fixture
def toy(_toy_recorded, tmp_path):
    """A copy of the recorded toy project, this test's own."""
    return Project(Path(shutil.copytree(_toy_recorded, tmp_path / "proj", symlinks=True)))


def _add(project, marker, line, indent):
    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace(marker, " " * indent + line + "\n" + marker, 1))


def _fresh(project, name, args_by_run):
    """Values of ``name`` from fresh full runs of today's script with each run's args."""
    fresh = {}
    for tstamp, args in args_by_run.items():
        before = {r[0] for r in values(project.db, "loss")}
        project.run("train.py", *(["--kwargs", *args] if args else []))
        new = {r[0] for r in values(project.db, "loss")} - before
        (new_tstamp,) = new
        fresh[tstamp] = [row[1:] for row in values(project.db, name) if row[0] == new_tstamp]
    return fresh


def _replayed(project, name, tstamps):
    # Parallel segments insert in any order: compare by loop position.
    rows = values(project.db, name, "AND l.source = 'replay'")
    return {t: sorted((row[1:] for row in rows if row[0] == t), key=lambda r: (r[0] or 0, r[1] or 0)) for t in tstamps}


def _tstamps(project):
    with sqlite3.connect(project.db) as connection:
        return [r[0] for r in connection.execute("SELECT tstamp FROM runs ORDER BY tstamp")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "line, marker, indent, workers",
    [
        ('flor.log("wnorm", float(np.linalg.norm(model.w)))', "        # BODY", 8, 1),
        ('flor.log("wstep", float(model.w[0]) + step)', "        # BODY", 12, 2),
        ('flor.log("wfinal", float(model.w.max()))', "# AFTER", 0, 1),
    ],
    ids=["epoch-body-memo", "step-loop-reexec", "after-loop"],
)
def test_replay_equals_a_fresh_run(toy, line, marker, indent, workers):
    tstamps = _tstamps(toy)
    name = line.split('"')[1]
    if indent == 12:
        marker = "        # BODY"
        text = (toy.root / "train.py").read_text().replace(
            '            flor.log("loss", float(model.w.sum()))\n',
            '            flor.log("loss", float(model.w.sum()))\n            ' + line + "\n",
        )
        (toy.root / "train.py").write_text(text)
    else:
        _add(toy, marker, line, indent)
    status_before = toy.git("status", "--porcelain")
    (toy.root / "out.txt").write_text("the user's own file\n")
    done = toy.flor("replay", name, "--workers", str(workers))
    assert "done" in done.stdout and "fidelity" in done.stdout, done.stdout
    assert toy.git("status", "--porcelain") == status_before
    assert (toy.root / "out.txt").read_text() == "the user's own file\n"
    replayed = _replayed(toy, name, tstamps)
    fresh = _fresh(toy, name, {tstamps[0]: [], tstamps[1]: ["seed=7", "epochs=5"]})
    assert replayed == fresh and all(replayed.values())
    # Replaying again does nothing and duplicates nothing.
    again = toy.flor("replay", name)
    assert "already replayed" in again.stdout
    assert _replayed(toy, name, tstamps) == replayed


@pytest.mark.slow
def test_planning_matches_today_against_each_run_version_once(toy, monkeypatch):
    # The statements are found and placed with one matching per code version (it is the costly
    # part): the toy's two runs share one version, so one matching serves both.
    from flor.replay.propagation.matching import Matching
    from flor.replay.session import Session

    _add(toy, "        # BODY", 'flor.log("wnorm", float(np.linalg.norm(model.w)))', 8)
    built = []
    init = Matching.__init__
    monkeypatch.setattr(Matching, "__init__", lambda self, *args: (built.append(self), init(self, *args))[1])
    session = Session(["wnorm"], start=toy.root, out=io.StringIO())
    try:
        plans = session.plan()
    finally:
        session.close()
    assert [p.status for p in plans] == ["planned", "planned"] and len(built) == 1
    assert all('+        flor.log("wnorm"' in p.diff for p in plans)


@pytest.mark.slow
def test_dry_run_prints_plans_and_diff(toy):
    _add(toy, "        # BODY", 'flor.log("wnorm", float(np.linalg.norm(model.w)))', 8)
    out = toy.flor("replay", "--dry-run", "--diff").stdout
    assert out.count("memo for wnorm") == 2
    assert "+        flor.log(\"wnorm\"" in out and "estimated" in out
    assert "segment 1: memo 0" in out
    assert "exec" in out  # the second run checkpointed every other epoch: gaps are re-executed
    assert values(toy.db, "wnorm") == []


@pytest.mark.slow
def test_killed_worker_keeps_finished_iterations_and_second_replay_does_the_rest(toy, tmp_path):
    marker, calls = tmp_path / "crash", tmp_path / "calls.txt"
    marker.write_text("x")
    _add(toy, "        # BODY", f'flor.log("probe", helpers.maybe_crash(epoch, {str(marker)!r}, {str(calls)!r}))', 8)
    first = toy.flor("replay", "probe", "--runs", _tstamps(toy)[0], check=False)
    assert first.returncode == 1 and "killed by signal 9" in first.stdout
    assert [r[2] for r in values(toy.db, "probe")] == [0, 1]
    marker.unlink()
    # Epochs 0 and 1 are kept: the plan starts at 2 (1 may run again only to restore the state
    # before 2), and the replay stores the four values that were missing.
    plan = toy.flor("replay", "probe", "--runs", _tstamps(toy)[0], "--dry-run").stdout
    assert "segment 1:" in plan and " 0" not in plan.split("segment 1:")[1].split("(")[0]
    second = toy.flor("replay", "probe", "--runs", _tstamps(toy)[0]).stdout
    assert "probe: 4 value(s) stored" in second
    assert [r[3] for r in values(toy.db, "probe")] == [0, 2, 4, 6, 8, 10]


@pytest.mark.slow
def test_drift_is_reported(toy):
    text = (toy.root / "train.py").read_text()
    # The recorded code logs `loss`; make today's version of the run differ in what it logs:
    # replaying with a perturbed data file changes `loss` during re-execution.
    (toy.root / "data" / "values.txt").write_text("1.0\n2.0\n0.6\n")
    toy.write("train.py", text.replace("            flor.log(\"loss\"", "            flor.log(\"probe\", step)\n            flor.log(\"loss\"", 1))
    done = toy.flor("replay", "probe", "--runs", _tstamps(toy)[0], check=False)
    assert done.returncode == 4 and "DRIFTED: loss" in done.stdout
    with sqlite3.connect(toy.db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM drift WHERE name = 'loss'").fetchone()[0] > 0


@pytest.mark.slow
def test_bad_replay_input(toy):
    form = toy.flor("replay", "--iterations", "epoch", check=False)
    assert form.returncode == 2 and form.stderr.startswith("flor: error: --iterations 'epoch'")
    _add(toy, "        # BODY", 'flor.log("wnorm", float(np.linalg.norm(model.w)))', 8)
    wrong = toy.flor("replay", "wnorm", "--iterations", "step=1", check=False)
    assert wrong.returncode == 3 and "the outer loop is 'epoch'" in wrong.stdout
    bad = toy.flor("replay", "--kwargs", "seed=3", check=False)
    assert bad.returncode == 2 and "overrides are refused" in bad.stderr
    none = toy.flor("replay", "nothing_new", check=False)
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr.startswith("flor: error: no flor.log of 'nothing_new' in today's train.py (it logs: ")
    some = toy.flor("replay", "wnorm", "nothing_new", "--dry-run")
    assert "flor: warning: no flor.log of 'nothing_new'" in some.stderr and "wnorm" in some.stdout
    old = toy.flor("replay", "loss").stdout  # logged today, but not new to the recorded version
    assert "adds no flor.log of loss" in old


@pytest.mark.slow
def test_tutorial_weight_norm_equals_fresh_run(project):
    project.write("train.py", TUTORIAL.read_text())
    project.commit_all()
    project.run("train.py", "--kwargs", "epochs=3")
    project.run("train.py", "--kwargs", "epochs=3", "hidden=75")
    tstamps = _tstamps(project)
    _add(project, "\nwith torch.no_grad():",
         'flor.log("weight_norm", sum(p.norm() ** 2 for p in net.parameters()).item() ** 0.5)', 8)
    project.flor("replay", "weight_norm", "--workers", "2")
    replayed = _replayed(project, "weight_norm", tstamps)
    fresh = _fresh(project, "weight_norm", {tstamps[0]: ["epochs=3"], tstamps[1]: ["epochs=3", "hidden=75"]})
    assert replayed == fresh and [len(v) for v in replayed.values()] == [3, 3]


@pytest.mark.slow
def test_replay_imports_the_runs_own_version_of_project_modules(toy):
    toy.write("helpers.py", HELPERS.replace("return float(w.sum())", "return -1.0"))
    _add(toy, "# AFTER", 'flor.log("final_again", helpers.total(model.w))', 0)
    toy.flor("replay", "final_again")
    recorded = [row[3] for row in values(toy.db, "final")]
    assert [row[3] for row in values(toy.db, "final_again")] == recorded and -1.0 not in recorded


ALIASED_SCRIPT = """
import flor as fl
import numpy as np

class Model:
    def __init__(self):
        self.w = np.zeros(3)
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"].copy()

np.random.seed(fl.arg("seed", 0))
model = Model()
with fl.checkpointing(model=model):
    for epoch in fl.loop("epoch", range(4)):
        for step in fl.loop("step", range(3)):
            model.w += np.random.rand(3)
            fl.log("loss", float(model.w.sum()))
        # BODY
"""


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [True, False], ids=["memo", "no-checkpoints"])
def test_replay_of_a_script_that_imports_flor_as_fl(project, checkpointing):
    # Was: the outer `fl.loop` went unseen by the analysis, so replay planned no iterations
    # ("no iterations selected", or "done: 0 value(s) stored" without checkpoints).
    script = ALIASED_SCRIPT
    if not checkpointing:
        script = script.replace("with fl.checkpointing(model=model):", "if True:")
    project.write("train.py", script)
    project.commit_all("aliased")
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    (tstamp,) = _tstamps(project)
    _add(project, "        # BODY", 'fl.log("x", float(model.w[0]))', 8)
    plan = project.flor("replay", "x", "--dry-run").stdout
    assert ("memo for x" if checkpointing else "exec for x") in plan, plan
    done = project.flor("replay", "x").stdout
    assert "done: x: 4 value(s) stored" in done, done
    replayed = _replayed(project, "x", [tstamp])
    assert [row[1] for row in replayed[tstamp]] == [0, 1, 2, 3]  # one value per epoch
    assert replayed == _fresh(project, "x", {tstamp: []})


def test_executor_gives_each_worker_its_gpu_and_threads():
    from flor.replay.executor import LocalProcessExecutor

    executor = LocalProcessExecutor(workers=2, gpus=["0", "1"])
    assert [executor._env(slot, {})["CUDA_VISIBLE_DEVICES"] for slot in (0, 1, 2)] == ["0", "1", "0"]
    # A task's environment is the run's recorded one: a variable it had is set, one it lacked is unset.
    env = executor._env(0, {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": None})
    assert env["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in env


@pytest.mark.slow
def test_a_loop_the_analysis_cannot_see_is_refused_not_planned_empty(project):
    project.write("train.py", """
        import flor
        loop = flor.loop  # flor.loop under a name no import gives it
        total = 0
        for epoch in loop("epoch", range(3)):
            total += epoch
            flor.log("total", total)
    """)
    project.commit_all()
    project.run("train.py")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("total", total)', 'flor.log("total", total)\n    flor.log("double", 2 * total)'))
    done = project.flor("replay", "double", check=False)
    assert done.returncode == 3 and "cannot tell which loop of train.py is the flor.loop 'epoch'" in done.stdout


BRANCHY = """
import flor
import numpy as np

np.random.seed(0)
w = np.zeros(3)

def evaluate(w):
    return float(np.abs(w).sum())

class Box:
    def __init__(self):
        self.w = w
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w[...] = state["w"]

box = Box()
with flor.checkpointing(model=box):
    for epoch in flor.loop("epoch", range(6)):
        for step in flor.loop("step", range(3)):
            w += np.random.rand(3)
            flor.log("loss", float(w.sum()))
        if epoch % 3 == 0:
            flor.log("val", evaluate(w))
            # EVAL
"""


@pytest.mark.slow
def test_a_statement_in_an_eval_branch_replays_only_the_iterations_it_reaches(project):
    project.write("train.py", BRANCHY)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    _add(project, "            # EVAL", 'flor.log("val_norm", float(np.linalg.norm(w)))', 12)
    plan = project.flor("replay", "val_norm", "--dry-run").stdout
    assert "only epoch 0, 3: the statement is in a branch that ran where val was logged" in plan, plan
    assert "memo 0, memo 3" in plan or ("memo 0" in plan and "memo 3" in plan), plan
    replayed = project.flor("replay", "val_norm")
    assert "done: val_norm: 2 value(s) stored" in replayed.stdout
    # Where the time went, on stderr: set-up, restores, memoized and re-executed iterations.
    assert "time: set-up" in replayed.stderr and "memoized iterations" in replayed.stderr
    (tstamp,) = _tstamps(project)
    assert _replayed(project, "val_norm", [tstamp]) == _fresh(project, "val_norm", {tstamp: []})


@pytest.mark.slow
def test_a_statement_in_a_helper_called_from_the_epoch_body_is_memoized(project):
    project.write("train.py", BRANCHY.replace("def evaluate(w):\n", "def evaluate(w):\n    # HELPER\n"))
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    _add(project, "    # HELPER", 'flor.log("seen", float(w[0]))', 4)
    plan = project.flor("replay", "seen", "--dry-run").stdout
    assert "memo for seen" in plan and "only epoch 0, 3" in plan, plan
    project.flor("replay", "seen")
    (tstamp,) = _tstamps(project)
    assert _replayed(project, "seen", [tstamp]) == _fresh(project, "seen", {tstamp: []})


@pytest.mark.slow
def test_an_iteration_cut_short_by_an_error_is_not_marked_done(toy):
    """The statement raises in epoch 3: epochs 0-2 are kept, epoch 3 is not marked replayed (it
    was once taken for a `break`), so the replay of the fixed statement stores it."""
    tstamps = _tstamps(toy)
    _add(toy, "        # BODY", 'flor.log("inv", 1.0 / (epoch - 3))', 8)
    failed = toy.flor("replay", "inv", "--runs", tstamps[0], check=False)
    assert failed.returncode != 0 and "ZeroDivisionError" in failed.stdout + failed.stderr
    with sqlite3.connect(toy.db) as connection:
        done = {i for (i,) in connection.execute("SELECT iteration FROM replay_done WHERE name = 'inv'")}
    assert 3 not in done and done <= {0, 1, 2}
    text = (toy.root / "train.py").read_text().replace("1.0 / (epoch - 3)", "1.0 / (epoch - 3.5)")
    (toy.root / "train.py").write_text(text)
    toy.flor("replay", "inv", "--runs", tstamps[0])
    epochs = sorted(row[2] for row in values(toy.db, "inv", "AND l.source = 'replay'") if row[0] == tstamps[0])
    assert epochs == list(range(6))


@pytest.mark.slow
def test_more_runs_than_the_open_file_limit_is_one_line(project):
    # Issue 26: one lock file is held open per selected run; past the open-file limit (macOS
    # starts at 256) the replay crashed with a raw "Too many open files" traceback.
    import resource
    import subprocess
    import sys

    from tests.conftest import clean_env

    project.write("train.py", "import flor\nfor epoch in flor.loop('epoch', range(2)):\n    flor.log('loss', epoch)\n")
    project.commit_all()
    project.run("train.py")
    with sqlite3.connect(project.db) as connection:  # 60 runs of the same version, without recording each
        columns = [r[1] for r in connection.execute("PRAGMA table_info(runs)") if r[1] not in ("run_id", "tstamp")]
        for n in range(59):
            connection.execute(f"INSERT INTO runs(tstamp, {', '.join(columns)}) SELECT tstamp || '.{n:02d}', "
                               f"{', '.join(columns)} FROM runs WHERE run_id = 1")
    project.write("train.py", "import flor\nfor epoch in flor.loop('epoch', range(2)):\n    flor.log('loss', epoch)\n"
                              "    flor.log('double', 2 * epoch)\n")

    def limited(soft, hard):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run([sys.executable, "-m", "flor", "replay", "double"], cwd=project.root, env=clean_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=limited(48, 48))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "open-file limit (48, at most 48)" in done.stderr and "ulimit -n" in done.stderr
    assert len([l for l in done.stderr.splitlines() if l.startswith("flor: error:")]) == 1


@pytest.mark.slow
def test_runs_of_one_version_share_one_matching(toy, monkeypatch):
    """Both toy runs are of one code version: today's script is matched against it once, and
    both runs get the same placement (a sweep of fifty runs pays one matching, not fifty)."""
    import flor
    from flor.replay import propagation
    from tests.conftest import git_env_in_this_process

    made = []

    class Counting(propagation.Propagator):
        def __init__(self, today, old):
            made.append(old)
            super().__init__(today, old)

    monkeypatch.setattr(propagation, "Propagator", Counting)
    monkeypatch.chdir(toy.root)
    # A third run of the same script but another helpers.py: the slice follows the project's
    # modules of each run's version, so that run's is its own.
    (toy.root / "helpers.py").write_text((toy.root / "helpers.py").read_text() + "\n# changed\n")
    toy.commit_all("helpers changed")
    toy.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    _add(toy, "        # BODY", 'flor.log("wnorm", float(np.linalg.norm(model.w)))', 8)
    with git_env_in_this_process():
        report = flor.replay("wnorm", dry_run=True, out=io.StringIO())
    assert [r.status for r in report.runs] == ["planned", "planned", "planned"]
    assert len(made) == 1
    assert report.runs[0].source == report.runs[1].source == report.runs[2].source
    # What the placed source alone decides is analysed once too, and shared by runs of one tree.
    first, second, third = (r.slice for r in report.runs)
    assert first is not None and first is second and third is not None and third is not first

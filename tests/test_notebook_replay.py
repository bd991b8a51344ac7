"""End to end: notebooks executed by real Jupyter kernels (nbclient), recorded, and replayed with
a statement added to a cell. Each kernel start costs seconds: four in all, in one test."""

import sqlite3
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import clean_env, git

MODEL = """import flor
import numpy as np

class Model:
    def __init__(self):
        self.w = np.zeros(3)
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"].copy()"""

SETUP = """np.random.seed(flor.arg("seed", SEED))
model = Model()"""

TRAIN = """with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 4))):
        for step in flor.loop("step", range(3)):
            model.w += np.random.rand(3)
            flor.log("loss", float(model.w.sum()))
        # BODY"""

AFTER = """%time total = float(model.w.sum())
display(round(float(model.w.sum()), 3))
flor.log("final", float(model.w.max()))"""

STATEMENT = '        flor.log("wnorm", float(np.linalg.norm(model.w)))'


def _notebook(path: Path, seed: int, statement: bool = False, commit: bool = False) -> None:
    train = TRAIN + ("\n" + STATEMENT if statement else "")
    cells = [MODEL, SETUP.replace("SEED", str(seed)), train, AFTER] + (["flor.commit()"] if commit else [])
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)


def _execute(path: Path, session: bool = True) -> str:
    """Execute the notebook in a fresh kernel (as Jupyter Server starts one when ``session``:
    JPY_SESSION_NAME names the notebook); its cells' text output."""
    notebook = nbformat.read(path, as_version=4)
    env = clean_env(FLOR_CKPT_PERIOD="1")
    env.pop("JPY_SESSION_NAME", None)
    if session:
        env["JPY_SESSION_NAME"] = str(path)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env, cwd=str(path.parent))
    return "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))


def _values(db: Path, name: str) -> dict[str, list]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT r.tstamp, l.iteration, l.value FROM logs l JOIN runs r ON r.run_id = l.run_id "
            "WHERE l.name = ? ORDER BY r.tstamp, l.iteration", (name,)).fetchall()
    found: dict[str, list] = {}
    for tstamp, iteration, value in rows:
        found.setdefault(tstamp, []).append((iteration, value))
    return found


@pytest.mark.slow
def test_a_statement_added_to_a_cell_replays_into_each_recorded_notebook_run(project, tmp_path):
    notebook = project.root / "train_nb.ipynb"
    _notebook(notebook, seed=0)
    project.commit_all("notebook")
    _execute(notebook)
    _notebook(notebook, seed=7, commit=True)  # the second run: other args, an uncommitted change, ended in a cell
    _execute(notebook)
    runs = project.flor("runs").stdout
    assert runs.count("train_nb.ipynb") == 2 and "ipykernel" not in runs and "interactive" not in runs, runs
    with sqlite3.connect(project.db) as connection:
        tstamps = [r[0] for r in connection.execute("SELECT tstamp FROM runs ORDER BY tstamp")]
        commits = [r[0] for r in connection.execute("SELECT code_commit FROM runs ORDER BY tstamp")]
    assert len(tstamps) == 2 and all(commits)
    script = project.git("show", f"{commits[1]}:train_nb.ipynb.flor.py")
    assert "# In[1]:" in script and 'flor.arg("seed", 7)' in script and "pass  # flor: IPython syntax" in script
    # Versioned at its first training call, and again by flor.commit() with the cells run since;
    # the first run, never committed, at the kernel's exit (and after each cell) with all of them.
    assert script.rstrip().endswith("flor.commit()")
    assert project.git("show", f"{commits[0]}:train_nb.ipynb.flor.py").rstrip().endswith('flor.log("final", float(model.w.max()))')

    missing = project.flor("replay", "wnorm", check=False)  # not in today's notebook yet: one line, what to do
    assert missing.returncode != 0 and "add the statement to a cell of the notebook first" in missing.stderr
    assert "Traceback" not in missing.stderr

    _notebook(notebook, seed=7, statement=True, commit=True)  # today's notebook: the statement added to the training cell
    plan = project.flor("replay", "wnorm", "--dry-run", "--diff").stdout
    assert "+++ b/train_nb.ipynb.flor.py" in plan and "+" + STATEMENT in plan, plan  # placed in the recorded cells
    done = project.flor("replay", "wnorm")
    # Memoized as for a script: each epoch restored from its checkpoint, its nested loop skipped.
    assert done.stdout.count("done: wnorm") == 2, done.stdout + done.stderr
    assert done.stdout.count("4 epoch(s) memoized from their checkpoints") == 2, done.stdout
    replayed = _values(project.db, "wnorm")

    # A fresh execution of the notebook with the statement, for each run's args, outside git and
    # without a session name: both said in the notebook's output, the values the same.
    fresh = {}
    for tstamp, seed in zip(tstamps, (0, 7)):
        folder = tmp_path / f"fresh{seed}"
        folder.mkdir()
        _notebook(folder / "train_nb.ipynb", seed=seed, statement=True, commit=seed == 7)
        output = _execute(folder / "train_nb.ipynb", session=seed == 7)
        assert "not inside a git repository" in output, output
        if seed == 0:
            assert "cannot tell which notebook this kernel runs" in output, output
        (values,) = _values(folder / ".flor" / "flor.db", "wnorm").values()
        fresh[tstamp] = values
    assert replayed == fresh and all(len(v) == 4 for v in replayed.values())
    assert project.flor("replay", "wnorm").stdout.count("already replayed") == 2
    status = git(project.root, "status", "--porcelain")
    assert "flor.py" not in status  # the cells' script lives only in the runs' versions


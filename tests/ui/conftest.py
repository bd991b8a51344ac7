"""A small recorded project shared by the UI tests: four runs of a pure-Python script (one failed,
one with a changed script), recorded once per session in a temporary git repository that is
isolated from the developer's git config, and copied for each test module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV, git_env_in_this_process

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """\
import flor

lr = flor.arg("lr", 0.01)
epochs = flor.arg("epochs", 3)
optimizer = flor.arg("optimizer", "sgd")
fail = flor.arg("fail", False)

for epoch in flor.loop("epoch", range(epochs)):
    for step in flor.loop("step", range(20)):
        flor.log("loss", 1.0 / (1 + epoch * 20 + step) + lr)
    flor.log("accuracy", 1 - 0.5 / (epoch + 1) - lr)
    print(f"epoch {epoch} done, accuracy {1 - 0.5 / (epoch + 1) - lr:.4f}")
    if fail:
        raise RuntimeError("boom at epoch 0")
flor.log("note", "<b>not markup</b>")
"""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOR_", "GIT_"))}
    env.update(GIT_ENV)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=clean_env(), check=True, capture_output=True,
                          text=True).stdout


@dataclass
class Recorded:
    """The project root and the tstamps of its runs, oldest first."""

    root: Path
    tstamps: list[str]

    @property
    def db(self) -> Path:
        return self.root / ".flor" / "flor.db"

    def record(self, *kwargs: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "train.py", "--kwargs", *kwargs], cwd=self.root, env=clean_env(),
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(done.stderr)
        return done


def record_project(root: Path) -> Recorded:
    """Record the runs that the UI tests look at."""
    import sqlite3

    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text(SCRIPT)
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "train")
    project = Recorded(root, [])
    project.record("lr=0.01")
    project.record("lr=0.001", "epochs=5", "optimizer=adam")
    project.record("fail=true", check=False)
    # A later version of the script: the run page diffs it against the first run.
    (root / "train.py").write_text(SCRIPT.replace("range(20)", "range(30)"))
    project.record("lr=0.0001", "epochs=9")
    with sqlite3.connect(str(project.db)) as connection:
        project.tstamps = [t for (t,) in connection.execute("SELECT tstamp FROM runs ORDER BY tstamp")]
    return project


@pytest.fixture(scope="session")
def _recorded_once(tmp_path_factory) -> Recorded:
    """The four runs, recorded once per session (four processes): never used directly, each
    module gets a copy (a project holds no absolute path)."""
    with git_env_in_this_process():
        return record_project(tmp_path_factory.mktemp("ui-template") / "proj")


@pytest.fixture(scope="module")
def recorded(_recorded_once, tmp_path_factory) -> Recorded:
    """Four recorded runs: lr=0.01; lr=0.001 epochs=5 adam; a failed one; lr=0.0001 epochs=9 (v2).
    This module's own copy: a module may add runs or replayed values."""
    root = tmp_path_factory.mktemp("ui") / "proj"
    shutil.copytree(_recorded_once.root, root, symlinks=True)
    with git_env_in_this_process():  # the server runs git in this process
        yield Recorded(root, list(_recorded_once.tstamps))

"""Shared fixtures: temporary git projects isolated from the developer's git config and environment,
and a helper that runs a script in such a project with the interpreter under test."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = REPO_ROOT / "examples" / "tutorial" / "train.py"
# A run recorded inside pytest's own process ends at its exit, after each test's environment is
# put back: quiet there too (the end-of-run line is tested on its own).
os.environ.setdefault("FLOR_QUIET", "1")

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


@contextlib.contextmanager
def git_env_in_this_process():
    """This process's own environment with GIT_ENV, put back after (for fixtures wider than a
    test, whose code runs git in-process)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in GIT_ENV.items():
            monkeypatch.setenv(key, value)
        yield


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no FLOR_* settings from outside, isolated git."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOR_") and not k.startswith("GIT_")}
    env.update(GIT_ENV)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.setdefault("OMP_NUM_THREADS", "1")
    # The line a recorded run ends with (what was kept, `flor show TSTAMP`) is tested on its own;
    # elsewhere it would be noise in every stderr a test compares.
    env["FLOR_QUIET"] = "1"
    env.update(extra)
    return env


# -- test files that need an optional package ----------------------------------------------------
#
# CI's Python 3.10 and 3.13 legs install flor with its plain dependencies only (torch's CPU wheel
# is at hand for 3.11 alone; see docs/testing.md). A test file that imports one of these packages
# at its top is then skipped, with the package named, rather than failing to collect. The full
# suite (scripts/test.sh) passes --require-optional: there a missing package is an error.

OPTIONAL_PACKAGES = frozenset({
    "torch", "lightning", "pytorch_lightning", "torchmetrics", "transformers", "accelerate", "ray", "s3fs",
    "moto", "boto3", "botocore", "sklearn", "IPython", "tqdm", "playwright", "nbclient", "nbformat", "ipykernel",
})


def pytest_addoption(parser):
    parser.addoption("--require-optional", action="store_true",
                     help="fail, instead of skipping, a test file whose optional package (torch, ...) is missing")


def _top_level_imports(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return set()  # pytest's own collection reports the problem
    return top_level_imports_of(tree)


def top_level_imports_of(tree: ast.Module) -> set[str]:
    """The top-level packages a module's own body imports (not inside functions)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def missing_optional(path: Path) -> list[str]:
    """The optional packages ``path`` imports at its top that this interpreter lacks."""
    return sorted(name for name in _top_level_imports(path) & OPTIONAL_PACKAGES
                  if importlib.util.find_spec(name) is None)


class _NeedsMissingPackage(pytest.Module):
    """A test file whose optional package is not installed: one skip, naming the package."""

    missing: list[str] = []

    def collect(self):
        pytest.skip(f"{self.path.name} needs {', '.join(self.missing)} (not installed)", allow_module_level=True)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    missing = missing_optional(Path(module_path))
    if not missing or parent.config.getoption("require_optional"):
        return None
    module = _NeedsMissingPackage.from_parent(parent, path=Path(module_path))
    module.missing = missing
    return module


# -- the fast tier ---------------------------------------------------------------------------------
#
# `pytest -m "not slow"` runs in under a minute on 2 cores. A test that trains, launches
# processes or takes more than about 2 s carries @pytest.mark.slow; these folders are slow as a
# whole (the realworld corpus records and replays real training; the reliability suite kills and
# corrupts runs). tests/test_fast_tier.py checks that the fast tier still imports every module.

SLOW_FOLDERS = ("realworld", "reliability")


def pytest_collection_modifyitems(config, items):
    tests = REPO_ROOT / "tests"
    for item in items:
        path = Path(str(item.path))
        if path.is_relative_to(tests) and set(path.relative_to(tests).parts[:-1]) & set(SLOW_FOLDERS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch):
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith("FLOR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FLOR_QUIET", "1")  # as clean_env: the end-of-run line is tested on its own


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout (raises on failure)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=clean_env(), check=True, capture_output=True, text=True
    ).stdout


@dataclass
class Project:
    """A temporary git repository with helpers to write and run scripts in it."""

    root: Path

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def commit_all(self, message: str = "work") -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)

    def run(self, script: str, *args: str, cwd: Path | None = None, check: bool = True,
            env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, script, *args],
            cwd=cwd or self.root,
            env=clean_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def flor(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "flor", *args],
            cwd=cwd or self.root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"flor {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def git(self, *args: str) -> str:
        return git(self.root, *args)

    @property
    def db(self) -> Path:
        return self.root / ".flor" / "flor.db"


@pytest.fixture
def project(tmp_path) -> Project:
    """An empty git repository with one commit."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README").write_text("a project\n")
    git(root, "add", "README")
    git(root, "commit", "-q", "-m", "init")
    return Project(root)


@pytest.fixture
def in_project(project, monkeypatch) -> Project:
    """``project``, with the working directory set to its root (for in-process library calls)."""
    monkeypatch.chdir(project.root)
    return project

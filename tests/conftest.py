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
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _group_for_workers(items)


# -- two workers (scripts/test.sh: pytest-xdist, -n 2 --dist loadgroup) -----------------------------
#
# Test children run with one thread (clean_env), so two workers use both cores where one left one
# idle. A worker takes a whole group: a test file (its module-scoped fixtures record once), or one
# case of the realworld corpus (recorded once per session, all its questions checked together;
# the file's fixture is session-wide). Groups go out heaviest first (the corpus cases, then files
# by their slow tests) so that no long one starts last.


def _group_for_workers(items) -> None:
    weight: dict[str, int] = {}
    for item in items:
        if not any(mark.name == "xdist_group" for mark in item.iter_markers()):
            question = getattr(getattr(item, "callspec", None), "params", {}).get("question")
            case = getattr(getattr(question, "case", None), "name", None)
            group = f"corpus-{case}" if case else Path(str(item.path)).stem
            item.add_marker(pytest.mark.xdist_group(group))
        group = next(mark.args[0] for mark in item.iter_markers() if mark.name == "xdist_group")
        corpus = group.startswith("corpus-")
        weight[group] = weight.get(group, 0) + (100 if corpus else 10 if item.get_closest_marker("slow") else 1)
    # A stable sort: within a group, and among equal groups, the collection order stays.
    items.sort(key=lambda item: -weight[next(m.args[0] for m in item.iter_markers() if m.name == "xdist_group")])


# End-of-session reports of the reliability suite (its fault tally) and of the corpus (children that
# hung). Printed by their folders' conftest.py in one process; under xdist the workers send theirs
# here (workeroutput), since the controller collects nothing and loads no folder's conftest.
_FROM_WORKERS: dict = {"tally": {}, "hangs": []}
TALLY_KEYS = ("faults_injected", "runs_killed", "rows_checked", "rows_lost")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    for module, row in output.get("flor_tally", {}).items():
        mine = _FROM_WORKERS["tally"].setdefault(module, dict.fromkeys(TALLY_KEYS, 0))
        for key in TALLY_KEYS:
            mine[key] += row[key]
    _FROM_WORKERS["hangs"].extend(output.get("flor_hangs", []))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    write_tally(terminalreporter, _FROM_WORKERS["tally"])
    write_hangs(terminalreporter, _FROM_WORKERS["hangs"])


def write_tally(terminalreporter, by_module: dict[str, dict[str, int]]) -> None:
    """The reliability suite's fault tally, per test module and in total."""
    if not any(any(row.values()) for row in by_module.values()):
        return
    total = {key: sum(row[key] for row in by_module.values()) for key in TALLY_KEYS}
    terminalreporter.write_sep("-", "flor reliability tally")
    header = ("module",) + TALLY_KEYS
    lines = [(name, *(str(row[k]) for k in TALLY_KEYS)) for name, row in sorted(by_module.items())]
    lines.append(("total", *(str(total[k]) for k in TALLY_KEYS)))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        terminalreporter.write_line("  ".join(str(cell).rjust(w) if i else str(cell).ljust(w)
                                              for i, (cell, w) in enumerate(zip(line, widths))))


def write_hangs(terminalreporter, hangs) -> None:
    """The corpus's children that hung and were started once more, with the end of their stacks."""
    if not hangs:
        return
    terminalreporter.write_sep("-", f"flor corpus: {len(hangs)} hung child(ren), started once more")
    for what, dump, stacks in hangs:
        terminalreporter.write_line(f"{what}: stacks in {dump}; their end:")
        for line in stacks.splitlines()[-40:]:
            terminalreporter.write_line("    " + line)


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

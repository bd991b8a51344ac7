"""Shared helpers of the reliability suite: database reads, git state, and the fault tally."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TALLY_KEYS as KEYS
from tests.conftest import clean_env

# Every test adds what it did here, per test module; conftest.py prints the table at the end.
TALLY = {key: 0 for key in KEYS}
BY_MODULE: dict[str, dict[str, int]] = {}


def tally(**counts: int) -> None:
    """Add to the suite's fault tally (faults injected, runs killed, rows checked, rows lost)."""
    module = sys._getframe(1).f_globals.get("__name__", "?").rsplit(".", 1)[-1]
    row = BY_MODULE.setdefault(module, {key: 0 for key in KEYS})
    for key, value in counts.items():
        TALLY[key] += int(value)
        row[key] += int(value)


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    """Rows of one query, on a fresh connection."""
    connection = sqlite3.connect(str(db), timeout=60)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def integrity_ok(db: Path) -> bool:
    """SQLite's integrity check passes and flor's tables are present."""
    connection = sqlite3.connect(str(db), timeout=60)
    try:
        ok = connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return ok and {"runs", "logs", "contexts", "args", "checkpoints"} <= tables
    finally:
        connection.close()


def git_state(root: Path) -> dict:
    """What flor must never change in the user's repository."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, env=clean_env(), capture_output=True, text=True)
        return done.stdout + (f"<rc {done.returncode}>" if done.returncode else "")

    tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".flor") or not path.is_file():
            continue
        tree[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "HEAD": git("rev-parse", "HEAD"),
        "symbolic": git("symbolic-ref", "-q", "HEAD"),
        "branches": git("for-each-ref", "refs/heads", "refs/tags"),
        "index": git("ls-files", "-s"),
        "status": git("status", "--porcelain", "--untracked-files=all"),
        "stash": git("stash", "list"),
        "gitignore": (root / ".gitignore").read_text() if (root / ".gitignore").exists() else None,
        "tree": tree,
    }


def flor_refs(root: Path) -> dict[str, str]:
    """refs/flor/runs/* -> commit."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/flor"],
                         cwd=root, env=clean_env(), capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def commit_exists(root: Path, commit: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, env=clean_env(),
                          capture_output=True).returncode == 0


def start(project, script: str, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start a script of the project in the background (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, script, *args], cwd=project.root, env=clean_env(**(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(predicate, timeout: float = 30.0, every: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def one_flor_line(stderr: str, prefix: str = "flor: error:") -> str:
    """The single flor line of a stderr that must hold exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr
    return lines[0]


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def copy_project(template, tmp_path: Path):
    """A fresh copy of a recorded project (recording once per module keeps the suite fast)."""
    import shutil

    from tests.conftest import Project

    root = tmp_path / "proj"
    shutil.copytree(template.root, root, symlinks=True)
    return Project(root)


def make_template(tmp_path_factory, name: str, files: dict[str, str], runs: list[tuple[tuple, dict]]):
    """A git project with ``files`` committed and ``runs`` (script args, env) recorded."""
    from tests.conftest import Project, git

    root = tmp_path_factory.mktemp(name) / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    project = Project(root)
    for path, text in files.items():
        project.write(path, text)
    project.commit_all("template")
    for args, env in runs:
        project.run(*args, env=env)
    return project

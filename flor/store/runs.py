"""Runs and their args: inserting a run, updating its status, finding it by tstamp."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..errors import RunNotFoundError
from ..environment.processes import process_gone, this_machine


@dataclass(frozen=True)
class RunRow:
    """One row of ``runs``, as the library and CLI see it."""

    run_id: int
    tstamp: str
    projid: str
    filename: str
    argv: list
    cwd: str
    code_commit: str | None
    vcs_note: str | None
    status: str
    started: float
    ended: float | None
    pid: int | None
    host: str | None
    python: str | None
    error: str | None
    resumed_from: int | None
    git_head: str | None = None  # the user's HEAD when the run started
    git_dirty: bool | None = None  # whether the work tree differed from that HEAD
    environment: dict = field(default_factory=dict)  # numeric environment, main module, left-out files

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while running or when killed before the end."""
        return None if self.ended is None else self.ended - self.started


_RUN_COLUMNS = (
    "run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started, ended, "
    "pid, host, python, error, resumed_from, git_head, git_dirty, environment"
)


def _run_row(row: Sequence) -> RunRow:
    values = list(row)
    values[4] = json.loads(values[4])
    values[17] = None if values[17] is None else bool(values[17])
    values[18] = json.loads(values[18]) if values[18] else {}
    return RunRow(*values)


# Plain logged values bind as they are; NaN arrives as NULL (SQLite has no NaN) and None never


class RunsMixin:
    """What :class:`~flor.store.Store` reads and writes of runs and args."""

    def insert_run(
        self,
        *,
        tstamp: str,
        projid: str,
        filename: str,
        argv: list[str],
        cwd: str,
        started: float,
        args: Iterable[tuple[str, object, str]],
        rng_state: bytes | None = None,
        resumed_from: int | None = None,
        environment: dict | None = None,
    ) -> tuple[int, str]:
        """Insert a running run and its args; return (run_id, tstamp), the tstamp made unique."""
        candidates = _tstamp_candidates(tstamp, started)

        def body(cursor):
            for candidate in candidates:
                if not tstamp_taken(cursor, candidate):
                    break
            run_id = insert_run_row(cursor, candidate, projid=projid, filename=filename, argv=argv, cwd=cwd,
                                    started=started, args=args, rng_state=rng_state, resumed_from=resumed_from,
                                    environment=environment)
            return run_id, candidate

        return self._write(body)

    def update_run(self, run_id: int, **fields: object) -> None:
        """Set columns of one run (status, ended, error, code_commit, vcs_note, heartbeat, git_head, git_dirty)."""
        allowed = {"status", "ended", "error", "code_commit", "vcs_note", "heartbeat", "git_head", "git_dirty",
                   "environment"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update run columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._write(
            lambda c: c.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id)
            )
        )

    def set_arg(self, run_id: int, name: str, stored: object, vtype: str) -> None:
        """Record (or replace) one encoded arg of a run (an arg declared after the run began)."""
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO args(run_id, name, value, vtype) VALUES (?, ?, ?, ?)",
                (run_id, name, stored, vtype),
            )
        )

    def reap_killed(self) -> int:
        """Mark as ``killed`` the running runs whose process is gone; return how many."""
        now = time.time()
        rows = self._read("SELECT run_id, pid, host, heartbeat FROM runs WHERE status = 'running'")
        dead = [run_id for run_id, pid, host, heartbeat in rows if process_gone(pid, host, heartbeat, now)]
        if dead and not self.readonly:
            self._write(
                lambda c: c.executemany(
                    "UPDATE runs SET status = 'killed', error = COALESCE(error, "
                    "'the process ended without finishing the run') "
                    "WHERE run_id = ? AND status = 'running'",
                    [(run_id,) for run_id in dead],
                )
            )
        return len(dead)

    def runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        return [_run_row(r) for r in self._read(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY tstamp")]

    def run(self, run_id: int) -> RunRow:
        """One run by id."""
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise RunNotFoundError(f"no run with id {run_id}")
        return _run_row(rows[0])

    def find_run(self, prefix: str) -> RunRow:
        """The run whose tstamp starts with ``prefix``; an error when none or several match."""
        prefix = str(prefix).strip()
        if not prefix:
            raise RunNotFoundError("give a run's tstamp or a prefix of it (see `flor runs`)")
        exact = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE tstamp = ?", (prefix,))
        if exact:
            return _run_row(exact[0])
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE substr(tstamp, 1, ?) = ? ORDER BY tstamp",
            (len(prefix), prefix),
        )
        if not rows:
            raise RunNotFoundError(f"no run matches {prefix!r}; `flor runs` lists them")
        if len(rows) > 1:
            names = ", ".join(r[1] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise RunNotFoundError(f"{prefix!r} matches {len(rows)} runs ({names}); give more of the tstamp")
        return _run_row(rows[0])

    def rng_state(self, run_id: int) -> bytes | None:
        """The random state recorded when the run started."""
        rows = self._read("SELECT rng_state FROM runs WHERE run_id = ?", (run_id,))
        return rows[0][0] if rows else None

    def runs_brief(self) -> list[tuple]:
        """``(run_id, projid, tstamp, filename, git_head, git_dirty)`` of every run, by tstamp."""
        return self._read("SELECT run_id, projid, tstamp, filename, git_head, git_dirty FROM runs ORDER BY tstamp")

    def arg_names(self) -> list[str]:
        """Every arg name, in the order names first appeared."""
        return [r[0] for r in self._read("SELECT DISTINCT name FROM args ORDER BY rowid")]

    def args_named(self, names: Sequence[str]) -> list[tuple]:
        """``(run_id, name, value, vtype)`` of the args called ``names``, in every run."""
        placeholders = ",".join("?" * len(names))
        return self._read(f"SELECT run_id, name, value, vtype FROM args WHERE name IN ({placeholders})", list(names))

    def args(self, run_id: int) -> dict[str, object]:
        """The run's args, typed."""
        from ..values import decode

        rows = self._read("SELECT name, value, vtype FROM args WHERE run_id = ? ORDER BY rowid", (run_id,))
        return {name: decode(value, vtype) for name, value, vtype in rows}


def tstamp_taken(cursor, tstamp: str) -> bool:
    """Whether a run or a distributed job (flor/recording/job.py) already has ``tstamp``."""
    if cursor.execute("SELECT 1 FROM runs WHERE tstamp = ?", (tstamp,)).fetchone():
        return True
    return cursor.execute("SELECT 1 FROM jobs WHERE tstamp = ?", (tstamp,)).fetchone() is not None


def insert_run_row(cursor, tstamp: str, *, projid: str, filename: str, argv: list[str], cwd: str, started: float,
                   args: Iterable[tuple[str, object, str]], rng_state: bytes | None, resumed_from: int | None,
                   environment: dict | None) -> int:
    """Insert a running run (this process) and its args in ``cursor``'s transaction; its run_id."""
    import sys

    cursor.execute(
        "INSERT INTO runs(tstamp, projid, filename, argv, cwd, status, started, heartbeat, "
        "pid, host, python, resumed_from, rng_state, environment) "
        "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            tstamp, projid, filename, json.dumps(argv), cwd, started, started,
            os.getpid(), this_machine(), sys.executable, resumed_from, rng_state,
            json.dumps(environment or {}),
        ),
    )
    run_id = cursor.lastrowid
    cursor.executemany(
        "INSERT OR REPLACE INTO args(run_id, name, value, vtype) VALUES (?, ?, ?, ?)",
        [(run_id, name, value, vtype) for name, value, vtype in args],
    )
    return run_id


def _tstamp_candidates(tstamp: str, started: float) -> list[str]:
    """The tstamp at second precision, then finer ones, for runs that start in the same second."""
    fraction = f"{started % 1:.6f}"[2:]
    return [tstamp, f"{tstamp}.{fraction[:3]}", f"{tstamp}.{fraction}"] + [
        f"{tstamp}.{fraction}-{n}" for n in range(1, 1000)
    ]

"""The store: the only module that speaks SQL.

One SQLite database per project at ``.flor/flor.db``, in WAL mode with a busy timeout, so that
many runs can write to it at once while readers query it. Every write is one short
``BEGIN IMMEDIATE`` transaction, retried while another process holds the lock, so "database is
locked" never reaches the user.

Tables (``flor query`` reads them directly)::

    runs(run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started,
         ended, heartbeat, pid, host, python, error, resumed_from, rng_state)
    args(run_id, name, value, vtype)
    contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, iterations)
                                         one row per loop *instance* (each time a flor.loop starts)
    iterations(run_id, ctx_id, iteration, t)      start time of each iteration of a top-level loop
    logs(run_id, ctx_id, iteration, name, value, vtype, source)
                                         ctx_id/iteration: the innermost loop and its index (NULL at
                                         run level); source: 'record' or 'replay'
    checkpoints(run_id, iteration, point, location, bytes, bytes_written, snapshot_s, write_s, created)
    drift(run_id, ctx_id, iteration, name, recorded, replayed, difference, replayed_at)

A value's full loop context is its (loop, iteration) and, up the parent links, those of the
enclosing loops: ``epoch=3, step=17``. Keeping one row per loop instance rather than per
iteration keeps the cost of an inner-loop iteration to a counter increment.

>>> store = Store.open(Path(".flor/flor.db"))          # doctest: +SKIP
>>> store.runs()                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import blocks
from .errors import RunNotFoundError, StoreError

SCHEMA_VERSION = 2  # 2: log_blocks and log_names (see blocks.py)
BUSY_TIMEOUT_S = 60.0
STALE_HEARTBEAT_S = 300.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs(
    run_id INTEGER PRIMARY KEY,
    tstamp TEXT NOT NULL UNIQUE,
    projid TEXT NOT NULL,
    filename TEXT NOT NULL,
    argv TEXT NOT NULL,
    cwd TEXT NOT NULL,
    code_commit TEXT,
    vcs_note TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
    started REAL NOT NULL,
    ended REAL,
    heartbeat REAL,
    pid INTEGER,
    host TEXT,
    python TEXT,
    error TEXT,
    resumed_from INTEGER REFERENCES runs(run_id),
    rng_state BLOB
);
CREATE TABLE IF NOT EXISTS args(
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value,
    vtype TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS contexts(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    parent_id INTEGER,
    parent_iteration INTEGER,
    loop_name TEXT NOT NULL,
    t_start REAL,
    t_end REAL,
    iterations INTEGER,
    PRIMARY KEY (run_id, ctx_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iterations(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    t REAL,
    PRIMARY KEY (run_id, ctx_id, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER,
    iteration INTEGER,
    name TEXT NOT NULL,
    value,
    vtype TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'record'
);
CREATE UNIQUE INDEX IF NOT EXISTS logs_replay_once ON logs(run_id, IFNULL(ctx_id, -1), IFNULL(iteration, -1), name)
    WHERE source = 'replay';
CREATE TABLE IF NOT EXISTS log_blocks(
    block_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    vtype TEXT NOT NULL CHECK (vtype IN ('int', 'float')),
    n INTEGER NOT NULL,
    ctx_ids BLOB NOT NULL,
    iterations BLOB NOT NULL,
    value_data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_blocks_by_name ON log_blocks(name, block_id);
CREATE TABLE IF NOT EXISTS log_names(
    name TEXT PRIMARY KEY,
    loose INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints(
    run_id INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    point TEXT NOT NULL DEFAULT 'nested' CHECK (point IN ('nested', 'end')),
    location TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    bytes_written INTEGER NOT NULL,
    snapshot_s REAL,
    write_s REAL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, iteration, point)
);
CREATE TABLE IF NOT EXISTS replay_done(
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    PRIMARY KEY (run_id, name, iteration)
);
CREATE TABLE IF NOT EXISTS drift(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER,
    iteration INTEGER,
    name TEXT NOT NULL,
    recorded,
    replayed,
    difference REAL,
    replayed_at REAL NOT NULL
);
"""

# Tables rebuilt from others, which a recovery does not copy.
DERIVED_TABLES = ("log_blocks", "log_names")
# Rows already in ``logs`` when blocks arrive (an older database, a recovered one) are loose.
SEED_LOG_NAMES = (
    "INSERT OR REPLACE INTO log_names(name, loose) SELECT name, COUNT(*) FROM logs GROUP BY name"
)
_ADD_LOOSE_SQL = (
    "INSERT INTO log_names(name, loose) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET loose = loose + excluded.loose"
)


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

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while running or when killed before the end."""
        return None if self.ended is None else self.ended - self.started


@dataclass(frozen=True)
class CheckpointRow:
    """One durable checkpoint of a run."""

    iteration: int
    point: str
    location: str
    bytes: int
    bytes_written: int
    snapshot_s: float | None
    write_s: float | None
    created: float


_RUN_COLUMNS = (
    "run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started, ended, "
    "pid, host, python, error, resumed_from"
)


def _run_row(row: Sequence) -> RunRow:
    values = list(row)
    values[4] = json.loads(values[4])
    return RunRow(*values)


# Plain logged values bind as they are; NaN arrives as NULL (SQLite has no NaN) and None never
# takes this path, so a NULL here is a float.
_FAST_LOG_SQL = (
    "INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?3, ?4, ?1, ?2, "
    "CASE typeof(?2) WHEN 'real' THEN 'float' WHEN 'integer' THEN 'int' WHEN 'text' THEN 'str' "
    "ELSE 'float' END)"
)


def _count_names(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _encodable(value):
    """A string SQLite can store (lone surrogates, from bad decoding, become escapes)."""
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _encodable_pair(pair):
    return _encodable(pair[0]), pair[1]


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
    """A connection to one project's database; open with :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.connection = connection
        self.readonly = readonly

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, create: bool = True) -> "Store":
        """Open (and, unless readonly, create and migrate) the database at ``path``."""
        path = Path(path)
        if readonly or not create:
            if not path.exists():
                raise StoreError(f"no flor database at {path}; record a run first (python train.py)")
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            store = cls(path, connection, readonly)
            if readonly:
                connection.execute("PRAGMA query_only = 1")
                store._check_readable()
            else:
                store._prepare()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the flor database {path}: {exc}; run `flor doctor` to check and repair it"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot create the flor database {path}: {exc}") from exc
        return store

    def _prepare(self) -> None:
        connection = self.connection
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = self._retry(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
        connection.execute("PRAGMA synchronous = NORMAL")
        if self._schema_version() != SCHEMA_VERSION:
            self._write(lambda c: (c.executescript_body(SCHEMA), c.execute(SEED_LOG_NAMES), c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )))

    def _schema_version(self) -> int | None:
        try:
            row = self.connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return int(row[0]) if row else None

    def _check_readable(self) -> None:
        self.connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self._schema_version() is None:
            raise StoreError(f"{self.path} is not a flor database (no schema); record a run first")

    def begin_read(self) -> None:
        """Start a read transaction: later reads see one snapshot until :meth:`close`."""
        try:
            self._retry(lambda: self.connection.execute("BEGIN"))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the flor database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the connection; further calls fail."""
        self.connection.close()

    # -- transactions ---------------------------------------------------------------------

    def _retry(self, action):
        delay = 0.005
        deadline = time.monotonic() + BUSY_TIMEOUT_S * 2
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)

    def _write(self, body):
        """Run ``body(cursor)`` in one BEGIN IMMEDIATE transaction, retried while busy."""
        if self.readonly:
            raise StoreError("this store was opened read-only")

        def attempt():
            cursor = _Cursor(self.connection)
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                result = body(cursor)
            except BaseException:
                # SQLite may have rolled back already (disk full): keep the original error.
                if self.connection.in_transaction:
                    try:
                        self.connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            self.connection.execute("COMMIT")
            return result

        try:
            return self._retry(attempt)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot write to the flor database {self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise StoreError(f"cannot write to the flor database {self.path}: a string is not valid text ({exc})") from exc

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self._retry(lambda: self.connection.execute(sql, params).fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the flor database {self.path}: {exc}") from exc

    # -- runs -----------------------------------------------------------------------------

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
    ) -> tuple[int, str]:
        """Insert a running run and its args; return (run_id, tstamp), the tstamp made unique."""
        import sys

        candidates = _tstamp_candidates(tstamp, started)

        def body(cursor):
            for candidate in candidates:
                taken = cursor.execute("SELECT 1 FROM runs WHERE tstamp = ?", (candidate,)).fetchone()
                if not taken:
                    break
            cursor.execute(
                "INSERT INTO runs(tstamp, projid, filename, argv, cwd, status, started, heartbeat, "
                "pid, host, python, resumed_from, rng_state) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    candidate, projid, filename, json.dumps(argv), cwd, started, started,
                    os.getpid(), socket.gethostname(), sys.executable, resumed_from, rng_state,
                ),
            )
            run_id = cursor.lastrowid
            cursor.executemany(
                "INSERT OR REPLACE INTO args(run_id, name, value, vtype) VALUES (?, ?, ?, ?)",
                [(run_id, name, value, vtype) for name, value, vtype in args],
            )
            return run_id, candidate

        return self._write(body)

    def update_run(self, run_id: int, **fields: object) -> None:
        """Set columns of one run (status, ended, error, code_commit, vcs_note, heartbeat)."""
        allowed = {"status", "ended", "error", "code_commit", "vcs_note", "heartbeat"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update run columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._write(
            lambda c: c.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id)
            )
        )

    def write_batch(
        self,
        run_id: int,
        contexts: Sequence[tuple],
        logs: Sequence[tuple],
        *,
        special: Sequence[tuple] = (),
        iterations: Sequence[tuple] = (),
        heartbeat: float | None = None,
        run_fields: dict | None = None,
    ) -> None:
        """Write one batch of a recording run in one transaction.

        ``contexts``: loop instances ``(ctx_id, parent_id, parent_iteration, loop_name, t_start,
        t_end, iterations)`` (a later row for the same ctx_id replaces the earlier one);
        ``logs``: plain values as logged, ``(name, value, ctx_id, iteration)`` with value an int,
        float or str (SQLite's typeof gives the type tag, so no Python work per row); ``special``:
        already encoded values ``(ctx_id, iteration, name, stored, vtype)``; ``iterations``:
        ``(ctx_id, iteration, t)`` of top-level loops.
        """
        rid = int(run_id)

        def body(cursor):
            if contexts:
                cursor.executemany(
                    f"INSERT OR REPLACE INTO contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, "
                    f"t_start, t_end, iterations) VALUES ({rid}, ?, ?, ?, ?, ?, ?, ?)",
                    contexts,
                )
            if iterations:
                cursor.executemany(
                    f"INSERT OR REPLACE INTO iterations(run_id, ctx_id, iteration, t) VALUES ({rid}, ?, ?, ?)",
                    iterations,
                )
            loose: dict[str, int] = {}
            if logs:
                cursor.execute("SAVEPOINT plain_logs")
                try:
                    cursor.executemany(_FAST_LOG_SQL.format(rid=rid), logs)
                    columnar, loose = blocks.build(logs)
                    cursor.executemany(
                        f"INSERT INTO log_blocks(run_id, name, vtype, n, ctx_ids, iterations, value_data) "
                        f"VALUES ({rid}, ?, ?, ?, ?, ?, ?)",
                        columnar,
                    )
                    cursor.execute("RELEASE plain_logs")
                except (OverflowError, UnicodeEncodeError):
                    # An int beyond 64 bits, or a string SQLite cannot encode: undo the partial
                    # insert and encode this batch row by row.
                    cursor.execute("ROLLBACK TO plain_logs")
                    cursor.execute("RELEASE plain_logs")
                    from .values import encode

                    encoded = [(ctx, it, _encodable(name), *_encodable_pair(encode(value))) for name, value, ctx, it in logs]
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        encoded,
                    )
                    loose = _count_names(row[2] for row in encoded)
            if special:
                try:
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        special,
                    )
                except UnicodeEncodeError:
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        [(ctx, it, _encodable(name), _encodable(v), t) for ctx, it, name, v, t in special],
                    )
                for name, count in _count_names(_encodable(row[2]) for row in special).items():
                    loose[name] = loose.get(name, 0) + count
            if loose:
                cursor.executemany(_ADD_LOOSE_SQL, loose.items())
            fields = dict(run_fields or {})
            if heartbeat is not None:
                fields["heartbeat"] = heartbeat
            if fields:
                assignments = ", ".join(f"{name} = ?" for name in fields)
                cursor.execute(
                    f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id)
                )

        self._write(body)

    def reap_killed(self) -> int:
        """Mark as ``killed`` the running runs whose process is gone; return how many."""
        host = socket.gethostname()
        now = time.time()
        rows = self._read("SELECT run_id, pid, host, heartbeat FROM runs WHERE status = 'running'")
        dead = []
        for run_id, pid, run_host, heartbeat in rows:
            if run_host == host and pid is not None and not pid_alive(pid):
                dead.append(run_id)
            elif heartbeat is not None and now - heartbeat > STALE_HEARTBEAT_S:
                dead.append(run_id)
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

    def args(self, run_id: int) -> dict[str, object]:
        """The run's args, typed."""
        from .values import decode

        rows = self._read("SELECT name, value, vtype FROM args WHERE run_id = ? ORDER BY rowid", (run_id,))
        return {name: decode(value, vtype) for name, value, vtype in rows}

    def log_names(self, run_id: int) -> list[tuple[str, str, int]]:
        """(name, source, count) of a run's logs."""
        return self._read(
            "SELECT name, source, COUNT(*) FROM logs WHERE run_id = ? GROUP BY name, source ORDER BY MIN(rowid)",
            (run_id,),
        )

    def last_values(self, run_id: int) -> dict[str, object]:
        """The last recorded value of every name a run logged."""
        from .values import decode

        rows = self._read(
            "SELECT name, value, vtype FROM logs WHERE rowid IN "
            "(SELECT MAX(rowid) FROM logs WHERE run_id = ? AND source = 'record' GROUP BY name)",
            (run_id,),
        )
        return {name: decode(value, vtype) for name, value, vtype in rows}

    def contexts(self, run_id: int) -> list[tuple]:
        """Loop instances ``(ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end,
        iterations)`` of a run, in creation order."""
        return self._read(
            "SELECT ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, iterations "
            "FROM contexts WHERE run_id = ? ORDER BY ctx_id",
            (run_id,),
        )

    def iterations(self, run_id: int) -> list[tuple[int, int, float | None]]:
        """``(ctx_id, iteration, t)``: start times of the iterations of a run's top-level loops."""
        return self._read(
            "SELECT ctx_id, iteration, t FROM iterations WHERE run_id = ? ORDER BY ctx_id, iteration", (run_id,)
        )

    def logs(self, run_id: int, names: Sequence[str] | None = None, source: str | None = None):
        """(ctx_id, iteration, name, value, vtype, source) rows of one run, in order."""
        sql = "SELECT ctx_id, iteration, name, value, vtype, source FROM logs WHERE run_id = ?"
        params: list = [run_id]
        if names is not None:
            sql += f" AND name IN ({','.join('?' * len(names))})"
            params.extend(names)
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        return self._read(sql + " ORDER BY rowid", params)

    # -- replay ---------------------------------------------------------------------------

    def write_replayed(
        self, run_id: int, contexts: Sequence[tuple], logs: Sequence[tuple], drift: Sequence[tuple] = (),
        done: Sequence[tuple] = (),
    ) -> None:
        """Store replayed logs ``(ctx_id, iteration, name, value, vtype)`` once per (run, loop,
        iteration, name); new loop instances (as in :meth:`write_batch`); drift rows
        ``(ctx_id, iteration, name, recorded, replayed, difference)``; and finished outer
        iterations ``(name, iteration)`` (-1: the statements outside the outer loop)."""
        now = time.time()
        rid = int(run_id)

        def body(cursor):
            if done:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO replay_done(run_id, name, iteration) VALUES ({rid}, ?, ?)", done
                )
            if contexts:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, "
                    f"t_start, t_end, iterations) VALUES ({rid}, ?, ?, ?, ?, ?, ?, ?)",
                    contexts,
                )
            if logs:
                cursor.executemany(
                    f"INSERT OR REPLACE INTO logs(run_id, ctx_id, iteration, name, value, vtype, source) "
                    f"VALUES ({rid}, ?, ?, ?, ?, ?, 'replay')",
                    logs,
                )
                cursor.executemany(_ADD_LOOSE_SQL, _count_names(row[2] for row in logs).items())
            if drift:
                cursor.executemany(
                    f"INSERT INTO drift(run_id, ctx_id, iteration, name, recorded, replayed, difference, replayed_at) "
                    f"VALUES ({rid}, ?, ?, ?, ?, ?, ?, {now})",
                    drift,
                )

        self._write(body)

    def replay_done(self, run_id: int, name: str) -> set[int]:
        """Outer iterations (and -1 for outside the loop) whose replay of ``name`` finished."""
        return {r[0] for r in self._read("SELECT iteration FROM replay_done WHERE run_id = ? AND name = ?", (run_id, name))}

    def log_blocks(self, name: str) -> list[tuple] | None:
        """Blocks ``(run_id, vtype, n, ctx_ids, iterations, values)`` holding every value of
        ``name``, in write order; None when some values are only rows of ``logs`` (see blocks.py)."""
        try:
            loose = self._read("SELECT loose FROM log_names WHERE name = ?", (name,))
        except StoreError:
            return None  # a database from before blocks, opened read-only
        if not loose or loose[0][0] != 0:
            return None
        return self._read(
            "SELECT run_id, vtype, n, ctx_ids, iterations, value_data FROM log_blocks WHERE name = ? ORDER BY block_id",
            (name,),
        )

    def has_values(self, run_id: int, name: str, source: str | None = None) -> bool:
        """Whether the run holds any value logged under ``name``."""
        sql = "SELECT 1 FROM logs WHERE run_id = ? AND name = ?" + (" AND source = ?" if source else "") + " LIMIT 1"
        return bool(self._read(sql, (run_id, name, source) if source else (run_id, name)))

    # -- checkpoints ----------------------------------------------------------------------

    def add_checkpoint(
        self, run_id: int, iteration: int, point: str, location: str, nbytes: int, written: int,
        snapshot_s: float, write_s: float,
    ) -> None:
        """Record a durable checkpoint of outer iteration ``iteration`` taken at ``point``
        ('nested': where the first nested loop ended; 'end': the end of the iteration)."""
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO checkpoints(run_id, iteration, point, location, bytes, bytes_written, "
                "snapshot_s, write_s, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, iteration, point, location, nbytes, written, snapshot_s, write_s, time.time()),
            )
        )

    def checkpoints(self, run_id: int) -> list["CheckpointRow"]:
        """The run's durable checkpoints, by iteration."""
        return [
            CheckpointRow(*row)
            for row in self._read(
                "SELECT iteration, point, location, bytes, bytes_written, snapshot_s, write_s, created "
                "FROM checkpoints WHERE run_id = ? ORDER BY iteration, point",
                (run_id,),
            )
        ]

    # -- free SQL ---------------------------------------------------------------------------

    def execute_readonly(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        """Run one read-only statement; return (column names, rows).

        ``query_only`` alone lets ATTACH and VACUUM INTO create files anywhere and PRAGMAs change
        the connection, so an authorizer refuses everything but reads while the statement is
        prepared and stepped (see :func:`_read_only_authorizer`)."""
        denied: list[str] = []
        self.connection.set_authorizer(_read_only_authorizer(denied))
        try:
            cursor = self._retry(lambda: self.connection.execute(sql, params))
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: two statements (Python < 3.12)
            text = str(exc)
            if denied:
                # SQLite reports a CREATE or DROP as a write to the schema table, and a VACUUM
                # as the ATTACH it does inside: name them by the statement's first word.
                what, keyword = denied[0], _first_keyword(sql)
                if keyword == "VACUUM" or (what == _SCHEMA_WRITE and keyword in ("CREATE", "DROP")):
                    what = keyword
                raise StoreError(f"flor query is read-only: {what} is not allowed; use SELECT statements") from exc
            if "readonly" in text.replace(" ", "") or "query_only" in text:
                raise StoreError("flor query is read-only; use SELECT statements") from exc
            raise StoreError(f"query failed: {text}") from exc
        finally:
            self.connection.set_authorizer(None)


class _Cursor:
    """The connection as seen inside a transaction (keeps lastrowid of the last insert)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.lastrowid: int | None = None

    def execute(self, sql: str, params: Sequence = ()):
        cursor = self._connection.execute(sql, params)
        self.lastrowid = cursor.lastrowid
        return cursor

    def executemany(self, sql: str, rows):
        return self._connection.executemany(sql, rows)

    def executescript_body(self, script: str) -> None:
        # executescript would COMMIT our transaction; run the statements one by one instead.
        for statement in split_sql(script):
            self._connection.execute(statement)


def split_sql(script: str) -> list[str]:
    """The statements of an SQL script, one by one (for running them inside our own transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]


# PRAGMAs that only describe the schema or the build, whatever their argument.
_SCHEMA_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "collation_list", "function_list", "module_list", "pragma_list",
    "compile_options", "database_list",
})
# PRAGMAs allowed only to read their setting: with an argument they change it.
_SETTING_PRAGMAS = frozenset({
    "journal_mode", "user_version", "schema_version", "application_id", "page_size", "page_count",
    "freelist_count", "encoding", "data_version",
})
# load_extension runs native code from any file; fts3_tokenizer with two arguments installs a
# tokenizer from a raw pointer. Python keeps both disabled by default; refuse them regardless.
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
# Action codes of sqlite3.h (stable); older Pythons do not name all of them.
_READS = (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33))
_FUNCTION = getattr(sqlite3, "SQLITE_FUNCTION", 31)
_SCHEMA_TABLES = ("sqlite_master", "sqlite_temp_master")
_SCHEMA_WRITE = "changing the schema"
_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name.replace(' ', '_')}"): name
    for name in (
        "CREATE INDEX", "CREATE TABLE", "CREATE TEMP INDEX", "CREATE TEMP TABLE", "CREATE TEMP TRIGGER",
        "CREATE TEMP VIEW", "CREATE TRIGGER", "CREATE VIEW", "DELETE", "DROP INDEX", "DROP TABLE",
        "DROP TEMP INDEX", "DROP TEMP TABLE", "DROP TEMP TRIGGER", "DROP TEMP VIEW", "DROP TRIGGER",
        "DROP VIEW", "INSERT", "UPDATE", "ATTACH", "DETACH", "ALTER TABLE", "REINDEX", "ANALYZE",
        "CREATE VTABLE", "DROP VTABLE", "SAVEPOINT", "TRANSACTION",
    )
    if hasattr(sqlite3, f"SQLITE_{name.replace(' ', '_')}")
}


def _read_only_authorizer(denied: list[str]):
    """An sqlite3 authorizer that allows reads (SELECT, column reads, functions, recursive CTEs,
    descriptive PRAGMAs) and denies everything else, naming each denied thing in ``denied``.

    It is an allowlist: an action SQLite adds later is refused, not let through."""

    def authorize(action, arg1, arg2, _db, _trigger):
        if action in _READS:
            return sqlite3.SQLITE_OK
        if action == _FUNCTION:
            if str(arg2).lower() not in _DENIED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            what = f"the function {arg2}()"
        elif action == sqlite3.SQLITE_PRAGMA:
            name = str(arg1).lower()
            if name in _SCHEMA_PRAGMAS or (name in _SETTING_PRAGMAS and arg2 is None):
                return sqlite3.SQLITE_OK
            what = f"PRAGMA {arg1}" + ("" if arg2 is None else f" = {arg2}")
        elif action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
            # SQLite asks this while it sets up an eponymous virtual table (json_each,
            # pragma_table_info) for reading. A statement cannot really update the schema table:
            # SQLite refuses that itself unless PRAGMA writable_schema, which is denied above.
            return sqlite3.SQLITE_OK
        elif arg1 in _SCHEMA_TABLES and action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_DELETE):
            what = _SCHEMA_WRITE
        else:
            what = _ACTIONS.get(action, f"action {action}")
            if action == sqlite3.SQLITE_TRANSACTION:
                what = str(arg1)  # BEGIN, COMMIT or ROLLBACK
        denied.append(what)
        return sqlite3.SQLITE_DENY

    return authorize


def _first_keyword(sql: str) -> str:
    """The first word of a statement, after comments, in capitals."""
    text = sql
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            text = text.partition("\n")[2]
        elif text.startswith("/*"):
            text = text.partition("*/")[2]
        else:
            break
    word = text.split(None, 1)[0] if text.split() else ""
    return "".join(ch for ch in word if ch.isalpha()).upper()


def _tstamp_candidates(tstamp: str, started: float) -> list[str]:
    """The tstamp at second precision, then finer ones, for runs that start in the same second."""
    fraction = f"{started % 1:.6f}"[2:]
    return [tstamp, f"{tstamp}.{fraction[:3]}", f"{tstamp}.{fraction}"] + [
        f"{tstamp}.{fraction}-{n}" for n in range(1, 1000)
    ]


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # A zombie (finished but not reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True

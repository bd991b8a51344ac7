"""What the UI shows, read from the store without ever writing to it.

The database is opened with a ``file:...?mode=ro`` URI and ``PRAGMA query_only = 1``, so neither
a bug here nor a crafted request can change a recorded value. This is the one place outside
``flor/store.py`` that speaks SQL, and only SELECTs.

:class:`RunsTable` keeps one row per run (tstamp, filename, status, duration, commit, args and the
last value of every logged name) in memory and updates it incrementally: logs are append-only,
so each refresh reads only the rows after the last one it saw. :func:`series` gives one run's
curve of one name, downsampled on the server.

>>> data = UIData.open(Path(".flor/flor.db"))                       # doctest: +SKIP
>>> data.table.rows()[0]["tstamp"]                                  # doctest: +SKIP
'2026-11-26T15:04:07'
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import values
from ..errors import RunNotFoundError, StoreError, UsageError
from .downsample import min_max

BASE_COLUMNS = ("tstamp", "filename", "status", "duration", "commit")
NUMERIC = (values.INT, values.FLOAT, values.BOOL)
STALE_HEARTBEAT_S = 300.0
_SERIES_CACHE = 16


class ReadOnlyDB:
    """Read-only connections to one store, pooled so that the server's threads can read at once.

    >>> db = ReadOnlyDB(Path(".flor/flor.db"))                      # doctest: +SKIP
    >>> db.read("SELECT COUNT(*) FROM runs")                        # doctest: +SKIP
    [(2,)]
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.exists():
            raise StoreError(f"no flor database at {self.path}; record a run first (python train.py)")
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # data_version is per connection: it must always be asked of the same one.
        self._watcher = self._connect()
        self._watch_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path.as_uri() + "?mode=ro", uri=True, timeout=60.0, check_same_thread=False,
                isolation_level=None,
            )
            connection.execute("PRAGMA query_only = 1")
            connection.execute("PRAGMA busy_timeout = 60000")
            connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the flor database {self.path} read-only: {exc}") from exc
        with self._lock:
            self._all.append(connection)
        return connection

    def read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """All rows of one SELECT."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the flor database {self.path}: {exc}") from exc
        finally:
            with self._lock:
                self._idle.append(connection)

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's ``PRAGMA data_version``)."""
        with self._watch_lock:
            try:
                return self._watcher.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read the flor database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all, self._idle = [], []


def _plain(value: object) -> object:
    """A value as JSON can carry it: non-finite floats and containers become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _parse_floats(text: str, count: int) -> np.ndarray:
    """Numbers from SQLite's group_concat text; slow path when one does not print as a number."""
    numbers = np.fromstring(text, sep=",")
    if len(numbers) != count:
        numbers = np.array([_as_float(v) for v in text.split(",")], dtype=float)
    return numbers


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass
class _Run:
    run_id: int
    tstamp: str
    filename: str
    status: str
    started: float
    ended: float | None
    heartbeat: float | None
    pid: int | None
    host: str | None
    commit: str | None

    def effective_status(self, now: float) -> str:
        """'killed' for a running run whose process is gone; the store is not changed."""
        if self.status != "running":
            return self.status
        if self.host == socket.gethostname() and self.pid is not None and not _pid_alive(self.pid):
            return "killed"
        if self.heartbeat is not None and now - self.heartbeat > STALE_HEARTBEAT_S:
            return "killed"
        return "running"


class RunsTable:
    """All runs as rows of plain values, refreshed incrementally from the store.

    >>> table = RunsTable(db)                                       # doctest: +SKIP
    >>> table.refresh(); table.columns()[:3]                        # doctest: +SKIP
    [('tstamp', 'run'), ('filename', 'run'), ('status', 'run')]
    """

    def __init__(self, db: ReadOnlyDB) -> None:
        self.db = db
        self.lock = threading.RLock()
        self.version = 0
        self._data_version: int | None = None
        self._runs: dict[int, _Run] = {}
        self._args: dict[int, dict[str, object]] = {}
        self._arg_names: dict[str, None] = {}
        # (run_id, name) -> value; replayed values fill names a run never recorded (hindsight logging).
        self._recorded: dict[int, dict[str, object]] = {}
        self._replayed: dict[int, dict[str, object]] = {}
        self._log_names: dict[str, None] = {}
        self._numeric_names: dict[str, None] = {}
        self._log_cursor = 0
        self._rows: list[dict] | None = None

    def refresh(self) -> bool:
        """Read what changed since the last call; True when anything did."""
        with self.lock:
            current = self.db.data_version()
            if current == self._data_version and self.version:
                return False
            self._data_version = current
            self._read_runs()
            self._read_logs()
            self._rows = None
            self.version += 1
            return True

    def _read_runs(self) -> None:
        rows = self.db.read(
            "SELECT run_id, tstamp, filename, status, started, ended, heartbeat, pid, host, code_commit "
            "FROM runs ORDER BY run_id"
        )
        runs = {row[0]: _Run(*row) for row in rows}
        new = [run_id for run_id in runs if run_id not in self._args]
        if len(runs) < len(self._runs) or any(r not in runs for r in self._runs):
            self._reset()  # runs were removed (a repair): start over rather than show ghosts
            new = list(runs)
        self._runs = runs
        if new:
            low = min(new)
            for run_id, name, value, vtype in self.db.read(
                "SELECT run_id, name, value, vtype FROM args WHERE run_id >= ? ORDER BY rowid", (low,)
            ):
                if run_id in runs:
                    self._args.setdefault(run_id, {})[name] = values.decode(value, vtype)
                    self._arg_names.setdefault(name)
            for run_id in new:
                self._args.setdefault(run_id, {})

    def _reset(self) -> None:
        self._args, self._arg_names = {}, {}
        self._recorded, self._replayed = {}, {}
        self._log_names, self._numeric_names = {}, {}
        self._log_cursor = 0

    def _read_logs(self) -> None:
        top = self.db.read("SELECT MAX(rowid) FROM logs")[0][0] or 0
        if top < self._log_cursor:
            self._recorded, self._replayed, self._log_cursor = {}, {}, 0
        if top == self._log_cursor:
            return
        if self._log_cursor == 0:
            self._read_all_logs(top)
        else:
            # Few new rows: scan them by rowid. SQLite's bare columns come from the MAX(rowid) row.
            rows = self.db.read(
                "SELECT run_id, name, source, value, vtype, MAX(rowid) FROM logs "
                "WHERE rowid > ? AND rowid <= ? GROUP BY run_id, name, source",
                (self._log_cursor, top),
            )
            for run_id, name, source, value, vtype, _ in rows:
                self._remember(run_id, name, source, value, vtype)
        self._log_cursor = top

    def _read_all_logs(self, top: int) -> None:
        """The last value of every (run, name): from the covering index, not a table scan."""
        read = self.db.read
        # The newest row of each pair, whatever its source; then the newest replayed row of each
        # pair from the partial index that holds only replayed rows.
        newest = read(
            "SELECT l.run_id, l.name, l.source, l.value, l.vtype FROM logs AS l WHERE l.rowid IN "
            "(SELECT MAX(rowid) FROM logs WHERE rowid <= ? GROUP BY name, run_id)",
            (top,),
        )
        for run_id, name, source, value, vtype in newest:
            self._remember(run_id, name, source, value, vtype)
        replayed = read(
            "SELECT l.run_id, l.name, l.source, l.value, l.vtype FROM logs AS l WHERE l.rowid IN "
            "(SELECT MAX(rowid) FROM logs INDEXED BY logs_replay_once WHERE source = 'replay' AND rowid <= ? "
            "GROUP BY run_id, name)",
            (top,),
        )
        for run_id, name, source, value, vtype in replayed:
            self._remember(run_id, name, source, value, vtype)
            if name not in self._recorded.get(run_id, {}):
                # The newest row was replayed; the pair may still have recorded rows before it.
                rows = read(
                    "SELECT value, vtype FROM logs WHERE name = ? AND run_id = ? AND source = 'record' "
                    "AND rowid <= ? ORDER BY rowid DESC LIMIT 1",
                    (name, run_id, top),
                )
                if rows:
                    self._remember(run_id, name, "record", *rows[0])

    def _remember(self, run_id: int, name: str, source: str, value: object, vtype: str) -> None:
        target = self._recorded if source == "record" else self._replayed
        target.setdefault(run_id, {})[name] = values.decode(value, vtype)
        if name not in self._log_names:
            self._log_names[name] = None
        if vtype in NUMERIC:
            self._numeric_names.setdefault(name)

    # -- views ------------------------------------------------------------------------------

    def columns(self) -> list[tuple[str, str]]:
        """(column name, kind) in display order; kind is 'run', 'arg' or 'log'.

        An arg or log that shares a name with an earlier column is shown as ``arg_NAME`` or
        ``log_NAME``, so every column can be named in a filter.
        """
        return [(shown, kind) for shown, kind, _ in self._column_map()]

    def _column_map(self) -> list[tuple[str, str, str]]:
        with self.lock:
            out = [(name, "run", name) for name in BASE_COLUMNS]
            taken = set(BASE_COLUMNS)
            for kind, names in (("arg", self._arg_names), ("log", self._log_names)):
                for name in names:
                    shown = f"{kind}_{name}" if name in taken else name
                    out.append((shown, kind, name))
                    taken.add(shown)
            return out

    def metric_names(self) -> list[str]:
        """Logged names with at least one numeric value (the ones a chart can draw)."""
        with self.lock:
            return list(self._numeric_names)

    def rows(self) -> list[dict]:
        """One dict per run, oldest first: column name -> plain value, plus '_run_id'."""
        with self.lock:
            now = time.time()
            if self._rows is None:
                self._rows = self._build_rows(now)
            else:
                # Only running runs change between refreshes: their duration grows, and a
                # run whose process died shows as killed.
                for row in self._rows:
                    run = self._runs[row["_run_id"]]
                    if run.status == "running":
                        row.update(self._timing(run, now))
            return self._rows

    def _timing(self, run: _Run, now: float) -> dict:
        status = run.effective_status(now)
        end = run.ended if run.ended is not None else (now if status == "running" else run.heartbeat)
        duration = None if end is None else round(max(end - run.started, 0.0), 3)
        return {"status": status, "duration": duration}

    def _build_rows(self, now: float) -> list[dict]:
        columns = self._column_map()
        arg_columns = [(shown, name) for shown, kind, name in columns if kind == "arg"]
        log_columns = [(shown, name) for shown, kind, name in columns if kind == "log"]
        rows = []
        for run in sorted(self._runs.values(), key=lambda r: r.tstamp):
            row = {
                "_run_id": run.run_id,
                "tstamp": run.tstamp,
                "filename": run.filename,
                **self._timing(run, now),
                "commit": run.commit[:10] if run.commit else None,
            }
            args = self._args.get(run.run_id, {})
            for shown, name in arg_columns:
                row[shown] = _plain(args.get(name))
            recorded = self._recorded.get(run.run_id, {})
            replayed = self._replayed.get(run.run_id, {})
            for shown, name in log_columns:
                row[shown] = _plain(recorded[name] if name in recorded else replayed.get(name))
            rows.append(row)
        return rows

    def run_id(self, tstamp: str) -> int:
        """The id of the run with this tstamp (exact, or an unambiguous prefix)."""
        with self.lock:
            matches = [r.run_id for r in self._runs.values() if r.tstamp == tstamp]
            if not matches:
                matches = [r.run_id for r in self._runs.values() if r.tstamp.startswith(tstamp)]
            if len(matches) != 1:
                raise RunNotFoundError(
                    f"no run matches {tstamp!r}" if not matches else f"{tstamp!r} matches {len(matches)} runs"
                )
            return matches[0]


def sort_key(value: object) -> tuple:
    """Orders mixed values: numbers, then text, then everything else; missing values last."""
    if value is None:
        return (3, 0)
    if isinstance(value, (bool, int, float)):
        return (0, float(value))
    if isinstance(value, str):
        return (1, value)
    return (2, str(value))


# -- one run ------------------------------------------------------------------------------------


def run_detail(db: ReadOnlyDB, run_id: int) -> dict:
    """Everything the run page shows except code: args, status, error, logs, checkpoints, drift.

    >>> run_detail(db, 1)["status"]                                 # doctest: +SKIP
    'finished'
    """
    rows = db.read(
        "SELECT run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started, "
        "ended, heartbeat, pid, host, python, error, resumed_from FROM runs WHERE run_id = ?",
        (run_id,),
    )
    if not rows:
        raise RunNotFoundError(f"no run with id {run_id}")
    (run_id, tstamp, projid, filename, argv, cwd, commit, vcs_note, status, started, ended,
     heartbeat, pid, host, python, error, resumed_from) = rows[0]
    effective = _Run(run_id, tstamp, filename, status, started, ended, heartbeat, pid, host, commit)
    args = [
        {"name": name, "value": _plain(values.decode(value, vtype)), "type": vtype}
        for name, value, vtype in db.read(
            "SELECT name, value, vtype FROM args WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
    ]
    logs = [
        {"name": name, "source": source, "count": count, "numeric": bool(numeric)}
        for name, source, count, numeric in db.read(
            "SELECT name, source, COUNT(*), MAX(vtype IN ('int', 'float', 'bool')) FROM logs "
            "WHERE run_id = ? GROUP BY name, source ORDER BY MIN(rowid)",
            (run_id,),
        )
    ]
    checkpoints = [
        {"iteration": it, "location": loc, "bytes": size, "bytes_written": written,
         "snapshot_s": snap, "write_s": write}
        for it, loc, size, written, snap, write in db.read(
            "SELECT iteration, location, bytes, bytes_written, snapshot_s, write_s FROM checkpoints "
            "WHERE run_id = ? ORDER BY iteration",
            (run_id,),
        )
    ]
    drift = [
        {"name": name, "count": count, "max_difference": _plain(worst)}
        for name, count, worst in db.read(
            "SELECT name, COUNT(*), MAX(difference) FROM drift WHERE run_id = ? GROUP BY name", (run_id,)
        )
    ]
    resumed = db.read("SELECT tstamp FROM runs WHERE run_id = ?", (resumed_from,)) if resumed_from else []
    try:
        argv = json.loads(argv)
    except (TypeError, ValueError):
        argv = [str(argv)]
    return {
        "tstamp": tstamp, "projid": projid, "filename": filename, "argv": argv, "cwd": cwd,
        "commit": commit, "vcs_note": vcs_note, "status": effective.effective_status(time.time()),
        "recorded_status": status, "started": started, "ended": ended, "host": host, "python": python,
        "error": error, "resumed_from": resumed[0][0] if resumed else None,
        "args": args, "logs": logs, "checkpoints": checkpoints, "drift": drift,
    }


# -- curves -------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One run's full curve of one name, before downsampling; x sorted ascending."""

    x: np.ndarray
    y: np.ndarray
    replayed: np.ndarray  # bool per point
    x_label: str
    run_level: object = None


class SeriesReader:
    """Reads and caches curves; a cached curve is reused while its rows are unchanged.

    >>> SeriesReader(db).series(1, "loss", points=1000)["x_label"]     # doctest: +SKIP
    'step (counted across epoch)'
    """

    def __init__(self, db: ReadOnlyDB) -> None:
        self.db = db
        self._cache: OrderedDict[tuple, Curve] = OrderedDict()
        self._orders: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def curve(self, run_id: int, name: str) -> Curve:
        """The whole curve of ``name`` in run ``run_id`` (cached)."""
        # MIN and MAX of rowid for (name, run) come from the logs_by_name index in two lookups; a
        # new or replayed row gets a new rowid, which changes the key and so refreshes the entry.
        span = self.db.read(
            "SELECT (SELECT MIN(rowid) FROM logs WHERE name = ?1 AND run_id = ?2), "
            "(SELECT MAX(rowid) FROM logs WHERE name = ?1 AND run_id = ?2)",
            (name, run_id),
        )[0]
        key = (run_id, name, *span)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        curve = self._read_curve(run_id, name, *span)
        with self._lock:
            self._cache[key] = curve
            while len(self._cache) > _SERIES_CACHE:
                self._cache.popitem(last=False)
        return curve

    def _where_record(self, run_id: int, name: str, low: int, high: int) -> tuple[str, tuple]:
        """The WHERE clause that finds the recorded numeric rows of (name, run) fastest."""
        numeric = "vtype IN ('int', 'float', 'bool')"
        # A run's rows sit close together in rowid order, so when they are dense in their span a
        # sequential scan of that span beats one index lookup per row (about 2x for long runs).
        sample = self.db.read(
            "SELECT COUNT(*) FROM logs WHERE rowid BETWEEN ? AND ? AND +name = ? AND +run_id = ?",
            (low, low + 9999, name, run_id),
        )[0][0]
        if sample >= 0.3 * min(10_000, high - low + 1):
            return (f"WHERE rowid BETWEEN ? AND ? AND +name = ? AND +run_id = ? AND +source = 'record' "
                    f"AND +{numeric}", (low, high, name, run_id))
        return f"WHERE name = ? AND run_id = ? AND source = 'record' AND {numeric}", (name, run_id)

    def _loop(self, run_id: int, ctx_id: int) -> tuple[str, str, tuple]:
        """(loop name, axis label, (count, min, max, sum) of the loop's ctx ids) for a context."""
        first = self.db.read("SELECT loop_name, parent_id FROM contexts WHERE run_id = ? AND ctx_id = ?", (run_id, ctx_id))
        if not first:
            return "", "iteration", (0, None, None, None)
        loop_name, parent = first[0]
        label = loop_name
        if parent is not None:
            outer = self.db.read("SELECT loop_name FROM contexts WHERE run_id = ? AND ctx_id = ?", (run_id, parent))
            label = f"{loop_name} (counted across {outer[0][0] if outer else 'the outer loop'})"
        stats = self.db.read(
            "SELECT COUNT(*), MIN(ctx_id), MAX(ctx_id), SUM(ctx_id) FROM contexts WHERE run_id = ? AND loop_name = ?",
            (run_id, loop_name),
        )[0]
        return loop_name, label, tuple(stats)

    def _loop_order(self, run_id: int, loop_name: str, stats: tuple) -> np.ndarray:
        """The ctx ids of every iteration of ``loop_name`` in the run, ascending (cached)."""
        key = (run_id, loop_name)
        cached = self._orders.get(key)
        if cached is not None and cached[0] == stats:
            return cached[1]
        text = self.db.read(
            "SELECT group_concat(ctx_id) FROM contexts WHERE run_id = ? AND loop_name = ?", (run_id, loop_name)
        )[0][0]
        order = np.sort(np.fromstring(text, sep=",", dtype=np.int64)) if text else np.zeros(0, np.int64)
        self._orders[key] = (stats, order)
        if len(self._orders) > _SERIES_CACHE:
            self._orders.pop(next(iter(self._orders)))
        return order

    def _read_curve(self, run_id: int, name: str, low: int | None, high: int | None) -> Curve:
        empty = Curve(np.zeros(0), np.zeros(0), np.zeros(0, bool), "run", None)
        if low is None:
            return empty
        read = self.db.read
        first = read("SELECT ctx_id FROM logs WHERE name = ? AND run_id = ? AND ctx_id IS NOT NULL LIMIT 1", (name, run_id))
        where, params = self._where_record(run_id, name, low, high)
        with ThreadPoolExecutor(1) as pool:
            # SQLite lets go of the GIL while it scans: count the loop's iterations on another
            # connection while this one reads the values.
            loop = pool.submit(self._loop, run_id, first[0][0]) if first else None
            scanned = read(
                "SELECT group_concat(CASE WHEN ctx_id IS NOT NULL THEN IFNULL(value, 'nan') END), COUNT(ctx_id), "
                f"MIN(ctx_id), MAX(ctx_id), SUM(ctx_id), MAX(CASE WHEN ctx_id IS NULL THEN rowid END) FROM logs {where}",
                params,
            )[0]
            loop_name, label, stats = loop.result() if loop else ("", "run", (0, None, None, None))
        # The scan above gives the values and a fingerprint of their contexts. The x axis is the
        # position of each value's iteration among all iterations of its loop, in the order
        # they ran (ctx_id order): the epoch index for a top-level loop, and for a nested loop
        # a step count that runs on across epochs. When the values cover every iteration of
        # the loop once, in order (same count, first, last and sum of ctx ids), that position
        # is simply 0, 1, 2, ... and the million context ids need not be read at all.
        values_text, count, lo_ctx, hi_ctx, sum_ctx, run_level_row = scanned
        run_level = read("SELECT value FROM logs WHERE rowid = ?", (run_level_row,))[0][0] if run_level_row else None
        x, y = np.zeros(0), np.zeros(0)
        if count:
            y = _parse_floats(values_text, count)
            if (count, lo_ctx, hi_ctx, sum_ctx) == stats:
                x = np.arange(count, dtype=float)
            else:
                ctx_text = read(f"SELECT group_concat(ctx_id) FROM logs {where} AND ctx_id IS NOT NULL", params)[0][0]
                ctx = np.fromstring(ctx_text, sep=",", dtype=np.int64)
                x = np.searchsorted(self._loop_order(run_id, loop_name, stats), ctx).astype(float)
        # Replayed values come from the partial index that holds only them (usually few).
        replay_text, replay_ctx_text, replay_count = read(
            "SELECT group_concat(IFNULL(value, 'nan')), group_concat(ctx_id), COUNT(*) FROM logs "
            "INDEXED BY logs_replay_once WHERE run_id = ? AND name = ? AND source = 'replay' "
            "AND vtype IN ('int', 'float', 'bool') AND ctx_id IS NOT NULL",
            (run_id, name),
        )[0]
        rx, ry = np.zeros(0), np.zeros(0)
        if replay_count:
            ry = _parse_floats(replay_text, replay_count)
            if not loop_name:
                first_replayed = int(replay_ctx_text.split(",", 1)[0])
                loop_name, label, stats = self._loop(run_id, first_replayed)
            ctx = np.fromstring(replay_ctx_text, sep=",", dtype=np.int64)
            rx = np.searchsorted(self._loop_order(run_id, loop_name, stats), ctx).astype(float)
        if not count and run_level is None:
            replay_run_level = read(
                "SELECT value FROM logs INDEXED BY logs_replay_once WHERE run_id = ? AND name = ? "
                "AND source = 'replay' AND ctx_id IS NULL AND vtype IN ('int', 'float', 'bool')", (run_id, name),
            )
            run_level = replay_run_level[0][0] if replay_run_level else None
        x = np.concatenate([x, rx])
        y = np.concatenate([y, ry])
        replayed = np.concatenate([np.zeros(count or 0, bool), np.ones(replay_count or 0, bool)])
        if len(x) > 1 and np.any(np.diff(x) < 0):
            sort = np.argsort(x, kind="stable")
            x, y, replayed = x[sort], y[sort], replayed[sort]
        return Curve(x, y, replayed, label if len(x) else "run", _plain(run_level))

    def series(self, run_id: int, name: str, points: int = 2000,
               xmin: float | None = None, xmax: float | None = None) -> dict:
        """The recorded and replayed parts of a curve, each cut to [xmin, xmax] and downsampled.

        >>> SeriesReader(db).series(1, "loss", points=500, xmin=0, xmax=100)   # doctest: +SKIP
        """
        if points < 2 or points > 100_000:
            raise UsageError("points must be between 2 and 100000")
        curve = self.curve(run_id, name)
        parts = []
        for source, mask in (("record", ~curve.replayed), ("replay", curve.replayed)):
            x, y = curve.x[mask], curve.y[mask]
            if not len(x):
                continue
            lo = 0 if xmin is None else int(np.searchsorted(x, xmin, side="left"))
            hi = len(x) if xmax is None else int(np.searchsorted(x, xmax, side="right"))
            # One point beyond each edge keeps the line running to the border of a zoomed chart.
            lo, hi = max(lo - 1, 0), min(hi + 1, len(x))
            sx, sy = min_max(x[lo:hi], y[lo:hi], points)
            parts.append({
                "source": source,
                "total": int(len(x)),
                "shown": int(len(sx)),
                "x": sx.tolist(),
                "y": [v if math.isfinite(v) else None for v in sy.tolist()],
            })
        return {"name": name, "x_label": curve.x_label, "parts": parts, "run_level": _plain(curve.run_level)}


def read_code(root: Path, commit: str | None, filename: str) -> str:
    """The text of ``filename`` at ``commit`` (``git show COMMIT:FILENAME`` in the project root).

    >>> read_code(Path("."), "3f2a9c1", "train.py")[:6]              # doctest: +SKIP
    'import'
    """
    from ..vcs import Repo

    if not commit:
        raise UsageError("this run is unversioned (it ran outside git), so its code was not kept")
    return Repo.find(root).read_file(commit, filename)


def diff_code(root: Path, old: str | None, new: str | None, filename: str) -> str:
    """``git diff OLD NEW -- FILE`` in the project root.

    >>> diff_code(Path("."), "3f2a9c1", "8e01b7d", "train.py")      # doctest: +SKIP
    """
    from ..vcs import Repo

    if not old or not new:
        raise UsageError("one of these runs is unversioned, so there is nothing to diff")
    return Repo.find(root).diff(old, new, filename)

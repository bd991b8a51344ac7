"""Pooled read-only connections to one store, and the reads made through them (``flor ui``).

The database is opened with a ``file:...?mode=ro`` URI and ``PRAGMA query_only = 1``, so neither
a bug in a caller nor a crafted request can change a recorded value: any statement other than a
read fails with :class:`~flor.errors.StoreError`. Connections are pooled so that several threads
(a web server's, a background scan's) can read at once; SQLite lets go of the GIL while it works.

The queries below are tuned for a store of millions of log rows and are kept exactly as measured
(``benchmarks/ui.py``, ``benchmarks/ui_scale.py``). Since schema version 11 the logs table has an
index by (run_id, name, source), ``logs_by_run_name``: a run's values of a name are found without
a scan, which lets the page chart and fill in the runs on screen before the pass over all logs
ends. A store not yet migrated (the UI never writes) lacks it: reads of one run's values then
come from a rowid range (once the pass has counted them) or from the partial index of replayed
values, and the page waits for the pass as before.

>>> pool = ReadPool(Path(".flor/flor.db"))                     # doctest: +SKIP
>>> pool.runs_summary()[0][1]                                   # doctest: +SKIP
'2026-11-26T15:04:07'
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..errors import StoreError
from ..logged import LoopInstance
from . import lastvalue
from .connection import unreadable

# SQLite has no boolean or NaN: these are the value types a chart can draw.
_NUMERIC = "vtype IN ('int', 'float', 'bool')"

# Per (run, name, source) of a range of rowids: newest rowid, count, numeric count, count inside a
# loop, sums of ctx_id and iteration, and the order key of the last value (the one definition,
# lastvalue.py); then that row's value and vtype, looked up by the rowid the key ends with.
# Rows are first grouped by loop instance too, keeping the greatest (iteration, rowid) packed in
# one integer (iterations below 2**31, a range under 2**32 rows), so that the order key (text,
# through the loop instance's path) is built once per instance rather than once per row: about
# 2x faster than keying every row.
_PACK = 1 << 32
_LAST_VALUES = (
    "WITH RECURSIVE lv_g AS (SELECT run_id, name, source, ctx_id, MAX(rowid) AS top, COUNT(*) AS n, "
    "SUM(vtype IN ('int', 'float', 'bool')) AS numeric, COUNT(ctx_id) AS looped, SUM(ctx_id) AS ctx_sum, "
    f"SUM(iteration) AS iteration_sum, MAX(IFNULL(iteration, 0) * {_PACK} + rowid - ?1) AS packed "
    "FROM logs WHERE rowid > ?1 AND rowid <= ?2 GROUP BY run_id, name, source, ctx_id), "
    + lastvalue.paths_ctes("SELECT DISTINCT run_id, ctx_id FROM lv_g WHERE ctx_id IS NOT NULL")
    + "SELECT g.run_id, g.name, g.source, x.value, x.vtype, g.top, g.n, g.numeric, g.looped, g.ctx_sum, "
    "g.iteration_sum, g.k FROM ("
    "SELECT g.run_id, g.name, g.source, MAX(g.top) AS top, SUM(g.n) AS n, SUM(g.numeric) AS numeric, "
    "SUM(g.looped) AS looped, SUM(g.ctx_sum) AS ctx_sum, SUM(g.iteration_sum) AS iteration_sum, "
    f"MAX({lastvalue.order_key('g.ctx_id', f'g.packed / {_PACK}', f'g.packed % {_PACK} + ?1')}) AS k "
    "FROM lv_g g LEFT JOIN lv_paths p ON p.run_id = g.run_id AND p.ctx_id = g.ctx_id "
    "GROUP BY g.run_id, g.name, g.source"
    f") g JOIN logs x ON x.rowid = {lastvalue.rowid_of_key('g.k')}"
)


class ReadPool:
    """Read-only connections to one store, pooled so that several threads can read at once.

    >>> pool = ReadPool(Path(".flor/flor.db"))                     # doctest: +SKIP
    >>> pool.max_log_rowid()                                        # doctest: +SKIP
    3000000
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
        self._indexed: bool | None = None

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
            raise unreadable(self.path, exc, "open") from exc
        with self._lock:
            self._all.append(connection)
        return connection

    def read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """All rows of one statement, on an idle connection of the pool (a new one when all are
        busy). The named reads below go through it; a write fails with StoreError."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc
        finally:
            with self._lock:
                self._idle.append(connection)

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's ``PRAGMA data_version``)."""
        with self._watch_lock:
            try:
                return self._watcher.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise unreadable(self.path, exc) from exc

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all, self._idle = [], []

    # -- runs and args --------------------------------------------------------------------------

    def runs_summary(self) -> list[tuple]:
        """``(run_id, tstamp, filename, status, started, ended, heartbeat, pid, host,
        code_commit)`` of every run, by run_id."""
        return self.read(
            "SELECT run_id, tstamp, filename, status, started, ended, heartbeat, pid, host, code_commit "
            "FROM runs ORDER BY run_id"
        )

    def args_after(self, rowid: int) -> list[tuple]:
        """``(run_id, name, value, vtype, rowid)`` of the args written after ``rowid``, in write
        order (args are append-only, so a reader that keeps the last rowid reads only news)."""
        return self.read(
            "SELECT run_id, name, value, vtype, rowid FROM args WHERE rowid > ? ORDER BY rowid", (rowid,)
        )

    def run_row(self, run_id: int) -> tuple | None:
        """``(run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started,
        ended, heartbeat, pid, host, python, error, resumed_from)`` of one run; None if absent."""
        rows = self.read(
            "SELECT run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started, "
            "ended, heartbeat, pid, host, python, error, resumed_from FROM runs WHERE run_id = ?",
            (run_id,),
        )
        return rows[0] if rows else None

    def tstamp_of(self, run_id: int) -> str | None:
        """The tstamp of one run; None if absent."""
        rows = self.read("SELECT tstamp FROM runs WHERE run_id = ?", (run_id,))
        return rows[0][0] if rows else None

    def run_args(self, run_id: int) -> list[tuple]:
        """``(name, value, vtype)`` of one run's args, in the order they were declared."""
        return self.read("SELECT name, value, vtype FROM args WHERE run_id = ? ORDER BY rowid", (run_id,))

    def run_checkpoints(self, run_id: int) -> list[tuple]:
        """``(iteration, location, bytes, bytes_written, snapshot_s, write_s)`` of one run's
        checkpoints, by iteration."""
        return self.read(
            "SELECT iteration, location, bytes, bytes_written, snapshot_s, write_s FROM checkpoints "
            "WHERE run_id = ? ORDER BY iteration",
            (run_id,),
        )

    def run_lineage(self, run_id: int) -> tuple[list[tuple], list[tuple]]:
        """(runs ``run_id`` read from, runs that read it): ``(tstamp, filename, how)`` each; none
        in a database from before lineage was kept (the UI does not migrate what it reads)."""
        if not self.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lineage'"):
            return [], []
        read_from = self.read(
            "SELECT r.tstamp, r.filename, l.how FROM lineage l JOIN runs r ON r.run_id = l.source "
            "WHERE l.reader = ? ORDER BY r.tstamp", (run_id,))
        read_by = self.read(
            "SELECT r.tstamp, r.filename, l.how FROM lineage l JOIN runs r ON r.run_id = l.reader "
            "WHERE l.source = ? ORDER BY r.tstamp", (run_id,))
        return read_from, read_by

    def run_drift(self, run_id: int) -> list[tuple]:
        """``(name, count, max difference)`` of the drift replay found in one run, per name."""
        return self.read(
            "SELECT name, COUNT(*), MAX(difference) FROM drift WHERE run_id = ? GROUP BY name", (run_id,)
        )

    # -- logs -----------------------------------------------------------------------------------

    def max_log_rowid(self) -> int:
        """The rowid of the newest log row; 0 when there is none."""
        return self.read("SELECT MAX(rowid) FROM logs")[0][0] or 0

    def last_values_between(self, low: int, high: int) -> list[tuple]:
        """Per (run, name, source) of the log rows with ``low < rowid <= high``: ``(run_id, name,
        source, value, vtype, newest rowid, count, numeric count, count inside a loop, sum of
        ctx_id, sum of iteration, order key)``, value and vtype those of the last value (the row
        with the greatest order key, see lastvalue.py; a caller merging ranges keeps the greatest).

        SQLite groups by sorting, so a caller covering many rows reads several ranges (on several
        threads) and merges them: sorting many small ranges is faster than one big one."""
        if high - low >= _PACK:  # never in practice: the packed (iteration, rowid) needs less
            middle = low + _PACK - 1
            return self.last_values_between(low, middle) + self.last_values_between(middle, high)
        return self.read(_LAST_VALUES, (low, high))

    def has_run_name_index(self) -> bool:
        """Whether the logs are indexed by (run_id, name, source) (schema version 11 on)."""
        if self._indexed is None:
            self._indexed = bool(self.read(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'logs_by_run_name'"))
        return self._indexed

    def early_log_names(self, rows: int = 5000) -> list[tuple[str, bool]]:
        """``(name, any numeric)`` of the names among the first ``rows`` log rows, in the order
        they first appear: what a page can chart before the pass over all logs has named every
        column (the first run's names, at the cost of reading a few pages)."""
        return [(name, bool(numeric)) for name, numeric in self.read(
            "SELECT name, MAX(vtype IN ('int', 'float', 'bool')) FROM (SELECT rowid AS r, name, vtype FROM logs "
            "ORDER BY rowid LIMIT ?) GROUP BY name ORDER BY MIN(r)", (rows,))]

    def last_values_of(self, run_ids: Sequence[int], names: Sequence[str] | None = None) -> list[tuple]:
        """``(run_id, name, value, vtype, source)``: the last value (lastvalue.py) of each name
        (of ``names`` only, when given) in each of ``run_ids``, in one read. Through
        ``logs_by_run_name`` when the store has it, a page of 100 runs reads only their rows;
        without, it is one scan of the logs."""
        ids = ",".join(str(int(r)) for r in run_ids)
        if not ids or (names is not None and not names):
            return []
        where, params = f"l.run_id IN ({ids})", []
        if names is not None:
            where += f" AND l.name IN ({','.join('?' * len(names))})"
            params = list(names)
        return self.read(lastvalue.last_rows_sql(
            where, f"SELECT run_id, ctx_id FROM contexts WHERE run_id IN ({ids})"), params)

    # -- one name's values over many runs at once (flor ui's chart of a page of runs) -----------

    def looped_values_of_runs(self, run_ids: Sequence[int], name: str) -> list[tuple]:
        """``(run_id, source, values, ctx_ids, iterations, count)`` per run and source: the
        numeric values of ``name`` logged inside a loop, in the order they were stored, the
        first three as group_concat text. One read through ``logs_by_run_name`` (an IN over the
        runs), however many runs; the few values logged outside loops come from
        :meth:`level_values_of_runs`."""
        ids = ",".join(str(int(r)) for r in run_ids)
        return self.read(
            "SELECT run_id, source, group_concat(IFNULL(value, 'nan')), group_concat(ctx_id), group_concat(iteration), "
            f"COUNT(*) FROM (SELECT run_id, source, ctx_id, iteration, value FROM logs WHERE run_id IN ({ids}) "
            f"AND name = ? AND ctx_id IS NOT NULL AND {_NUMERIC} ORDER BY run_id, source, rowid) GROUP BY run_id, source",
            (name,),
        ) if ids else []

    def level_values_of_runs(self, run_ids: Sequence[int], name: str) -> list[tuple]:
        """``(run_id, source, value)`` of the numeric values of ``name`` logged outside any loop
        in the runs, in the order they were stored."""
        ids = ",".join(str(int(r)) for r in run_ids)
        return self.read(
            f"SELECT run_id, source, value FROM logs WHERE run_id IN ({ids}) AND name = ? AND ctx_id IS NULL "
            f"AND {_NUMERIC} ORDER BY rowid", (name,),
        ) if ids else []

    def loops_of_runs(self, run_ids: Sequence[int]) -> list[tuple]:
        """``(run_id, ctx_id, parent_id, loop_name, iterations)`` of every loop instance of the
        runs, by run and ctx_id (what :meth:`loop_instances` gives, for many runs at once)."""
        ids = ",".join(str(int(r)) for r in run_ids)
        return self.read(
            f"SELECT run_id, ctx_id, parent_id, loop_name, iterations FROM contexts WHERE run_id IN ({ids}) "
            "ORDER BY run_id, ctx_id") if ids else []

    def contexts(self, run_id: int) -> list[LoopInstance]:
        """Loop instances of one run (without their times and counts)."""
        return [LoopInstance(*row) for row in self.read(
            "SELECT ctx_id, parent_id, parent_iteration, loop_name FROM contexts WHERE run_id = ? ORDER BY ctx_id",
            (run_id,),
        )]

    def loop_clock(self, run_id: int) -> list[tuple]:
        """``(ctx_id, parent_id, parent_iteration, loop_name, iterations, t_start, t_end)`` of every
        loop instance of one run, by ctx_id: what a chart needs to place values by step or time."""
        return self.read(
            "SELECT ctx_id, parent_id, parent_iteration, loop_name, iterations, t_start, t_end FROM contexts "
            "WHERE run_id = ? ORDER BY ctx_id",
            (run_id,),
        )

    def iteration_starts(self, run_id: int) -> list[tuple]:
        """``(ctx_id, iteration, t)``: when each iteration of a top-level loop of one run began."""
        return self.read("SELECT ctx_id, iteration, t FROM iterations WHERE run_id = ? ORDER BY ctx_id, iteration",
                         (run_id,))

    def run_notes(self) -> list[tuple]:
        """``(run_id, name, tags, note, archived, updated)`` of every annotated run (see
        annotations.py); none in a database from before the table (opened read-only, never migrated)."""
        try:
            return self.read("SELECT run_id, name, tags, note, archived, updated FROM run_notes ORDER BY run_id")
        except StoreError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def output_blocks(self, run_id: int) -> list[tuple]:
        """``(first_line, streams, meta, text)`` of one run's captured output (see output.py)."""
        return self.read(
            "SELECT first_line, streams, meta, text FROM output_blocks WHERE run_id = ? ORDER BY first_line", (run_id,)
        )

    def output_line_count(self, run_id: int) -> int:
        """How many lines of output one run captured."""
        return self.read("SELECT IFNULL(SUM(n), 0) FROM output_blocks WHERE run_id = ?", (run_id,))[0][0]

    def run_log_counts(self, run_id: int) -> list[tuple]:
        """``(name, source, count, any numeric)`` of one run's logs, in the order names first
        appeared. One scan of the whole logs table (it has no index by run)."""
        return self.read(
            "SELECT name, source, COUNT(*), SUM(vtype IN ('int', 'float', 'bool')) > 0 FROM logs "
            "WHERE run_id = ? GROUP BY name, source ORDER BY MIN(rowid)",
            (run_id,),
        )

    # -- one run's values of one name -----------------------------------------------------------
    #
    # Value lists come as SQLite's group_concat text, comma-separated, a NULL (how a NaN is
    # stored) as 'nan': parsing one string is far faster than fetching a million rows.

    @staticmethod
    def _recorded_rows(run_id: int, name: str, top: int | None, count: int | None) -> tuple[str, tuple]:
        """The subquery of the recorded rows of ``name`` in ``run_id``, newest first, and its
        parameters."""
        if top is None or count is None:  # nothing known of where they are: one scan of the logs
            rows = ("(SELECT ctx_id, iteration, value, vtype FROM logs WHERE run_id = ? AND name = ? "
                    "AND source = 'record' ORDER BY rowid DESC)")
            return rows, (run_id, name)
        # Newest row first, stopping after `count`: the scan covers only this run's rows, whatever
        # else the store holds; the unary + on the other columns keeps the planner on that range.
        rows = ("(SELECT ctx_id, iteration, value, vtype FROM logs WHERE rowid <= ? AND +run_id = ? "
                "AND +name = ? AND +source = 'record' ORDER BY rowid DESC LIMIT ?)")
        return rows, (top, run_id, name, count)

    def recorded_run_level_value(self, run_id: int, name: str, *, top: int | None = None,
                                 count: int | None = None) -> object:
        """The stored value of the newest recorded numeric value of ``name`` logged outside any
        loop in ``run_id``; None if there is none.

        ``top`` and ``count`` (both or neither), when the caller knows them: the rowid of the
        newest recorded row of the name in the run and how many there are. The read then scans
        back from ``top`` and stops after ``count`` rows instead of scanning the whole table.
        The same holds for the other ``recorded_*`` reads."""
        rows, params = self._recorded_rows(run_id, name, top, count)
        found = self.read(f"SELECT value FROM {rows} WHERE ctx_id IS NULL AND {_NUMERIC} LIMIT 1", params)
        return found[0][0] if found else None

    def recorded_newest_loop_ctx(self, run_id: int, name: str, *, top: int | None = None,
                                 count: int | None = None) -> int | None:
        """The ctx_id of the newest recorded numeric value of ``name`` logged inside a loop;
        None if there is none."""
        rows, params = self._recorded_rows(run_id, name, top, count)
        found = self.read(f"SELECT ctx_id FROM {rows} WHERE ctx_id IS NOT NULL AND {_NUMERIC} LIMIT 1", params)
        return found[0][0] if found else None

    def recorded_values_text(self, run_id: int, name: str, *, top: int | None = None,
                             count: int | None = None) -> str | None:
        """Every recorded value of ``name`` in ``run_id``, newest first, as group_concat text;
        None when there is none."""
        rows, params = self._recorded_rows(run_id, name, top, count)
        return self.read(f"SELECT group_concat(IFNULL(value, 'nan')) FROM {rows}", params)[0][0]

    def recorded_loop_values_text(self, run_id: int, name: str, *, top: int | None = None,
                                  count: int | None = None) -> tuple:
        """``(values, ctx_ids, iterations, count)`` of the recorded numeric values of ``name``
        logged inside a loop, newest first, the first three as group_concat text."""
        rows, params = self._recorded_rows(run_id, name, top, count)
        return self.read(
            f"SELECT group_concat(IFNULL(value, 'nan')), group_concat(ctx_id), group_concat(iteration), COUNT(*) "
            f"FROM {rows} WHERE ctx_id IS NOT NULL AND {_NUMERIC}",
            params,
        )[0]

    def replayed_loop_values_text(self, run_id: int, name: str) -> tuple:
        """``(values, ctx_ids, iterations, count)`` of the replayed numeric values of ``name``
        logged inside a loop, the first three as group_concat text, read from the partial index
        that holds only replayed rows."""
        return self.read(
            "SELECT group_concat(IFNULL(value, 'nan')), group_concat(ctx_id), group_concat(iteration), COUNT(*) "
            "FROM logs INDEXED BY logs_replay_once WHERE run_id = ? AND source = 'replay' AND name = ? "
            f"AND ctx_id IS NOT NULL AND {_NUMERIC}",
            (run_id, name),
        )[0]

    def replayed_run_level_value(self, run_id: int, name: str) -> object:
        """The stored value of a replayed numeric value of ``name`` logged outside any loop;
        None if there is none."""
        found = self.read(
            "SELECT value FROM logs INDEXED BY logs_replay_once WHERE run_id = ? AND source = 'replay' "
            f"AND name = ? AND ctx_id IS NULL AND {_NUMERIC}",
            (run_id, name),
        )
        return found[0][0] if found else None

    def extracted_values_text(self, run_id: int, name: str, *, top: int | None = None,
                              count: int | None = None) -> tuple:
        """``(values, ctx_ids, iterations, count, run-level value)`` of the extracted numeric
        values of ``name`` (``flor extract``): those logged inside a loop, the first three as
        group_concat text, and the last stored one logged outside any loop (None if none).
        ``top`` and ``count`` as for the ``recorded_*`` reads: the newest extracted row of the
        name in the run and how many there are."""
        if top is None or count is None:
            rows = ("(SELECT ctx_id, iteration, value, vtype FROM logs WHERE run_id = ? AND name = ? "
                    "AND source = 'extract' ORDER BY rowid)")
            params: tuple = (run_id, name)
        else:
            # An extraction writes a run's values of a name together, so this stops soon.
            rows = ("(SELECT * FROM (SELECT rowid AS r, ctx_id, iteration, value, vtype FROM logs WHERE rowid <= ? "
                    "AND +run_id = ? AND +name = ? AND +source = 'extract' ORDER BY rowid DESC LIMIT ?) "
                    "ORDER BY r)")
            params = (top, run_id, name, count)
        looped = self.read(
            "SELECT group_concat(IFNULL(value, 'nan')), group_concat(ctx_id), group_concat(iteration), COUNT(*) "
            f"FROM {rows} WHERE ctx_id IS NOT NULL AND {_NUMERIC}", params)[0]
        run_level = self.read(f"SELECT value FROM {rows} WHERE ctx_id IS NULL AND {_NUMERIC}", params)
        return (*looped, run_level[-1][0] if run_level else None)

    # -- loops ----------------------------------------------------------------------------------

    def loop_instances(self, run_id: int, ctx_id: int) -> list[tuple]:
        """``(ctx_id, parent_id, loop_name, iterations)`` of every instance, in the run, of the
        loop that ``ctx_id`` is an instance of, by ctx_id (iterations None while one runs)."""
        return self.read(
            "SELECT ctx_id, parent_id, loop_name, iterations FROM contexts WHERE run_id = ? AND loop_name = "
            "(SELECT loop_name FROM contexts WHERE run_id = ?1 AND ctx_id = ?2) ORDER BY ctx_id",
            (run_id, ctx_id),
        )

    def loop_name(self, run_id: int, ctx_id: int) -> str | None:
        """The name of the loop of which ``ctx_id`` is an instance; None if absent."""
        found = self.read("SELECT loop_name FROM contexts WHERE run_id = ? AND ctx_id = ?", (run_id, ctx_id))
        return found[0][0] if found else None

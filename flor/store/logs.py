"""Logged values: the batches a recording run flushes, and the reads of logs and loop contexts.

A value's full loop context is its (loop, iteration) and, up the parent links of ``contexts``,
those of the enclosing loops: ``epoch=3, step=17``. Plain numbers are also kept in columnar
``log_blocks`` (see ``flor/store/blocks.py``); ``log_names.loose`` counts the rows of a name that are
not in a block, and the dataframe reads a name from its blocks only when that count is 0.
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from . import blocks
from ..logged import IterationStart, LoggedValue, LoopInstance
from . import lastvalue
from .connection import unreadable
from .items import write_items

ADD_LOOSE_SQL = (
    "INSERT INTO log_names(name, loose) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET loose = loose + excluded.loose"
)


# takes this path, so a NULL here is a float.
_FAST_LOG_SQL = (
    "INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?3, ?4, ?1, ?2, "
    "CASE typeof(?2) WHEN 'real' THEN 'float' WHEN 'integer' THEN 'int' WHEN 'text' THEN 'str' "
    "ELSE 'float' END)"
)


def count_names(names) -> dict[str, int]:
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


class LogsMixin:
    """What :class:`~flor.store.Store` writes and reads of logs, loop instances and blocks."""

    def write_batch(
        self,
        run_id: int,
        contexts: Sequence[LoopInstance],
        logs: Sequence[tuple],
        *,
        special: Sequence[LoggedValue] = (),
        iterations: Sequence[IterationStart] = (),
        heartbeat: float | None = None,
        run_fields: dict | None = None,
        output: Sequence[tuple] = (),
        output_first: int = 0,
        keyed: Sequence[tuple] = (),
        items: Sequence[tuple] = (),
    ) -> None:
        """Write one batch of a recording run in one transaction.

        ``contexts``: :class:`~flor.logged.LoopInstance` records (a later one for the same ctx_id
        replaces the earlier one); ``logs``: plain values as logged, tuples of
        :class:`~flor.logged.PlainLog`'s layout with value an int, float or str (SQLite's typeof
        gives the type tag, so no Python work per row); ``special``: already encoded
        :class:`~flor.logged.LoggedValue` records; ``iterations``: :class:`~flor.logged.IterationStart`
        of top-level loops; ``output``: runs of captured lines ``(stream
        code, t, ctx_id, iteration, texts)``, numbered from ``output_first`` (one block, see output.py);
        ``keyed`` and ``items``: keyed loop instances and their items (see items.py).
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
                    from ..values import encode

                    encoded = [(ctx, it, _encodable(name), *_encodable_pair(encode(value))) for name, value, ctx, it in logs]
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        encoded,
                    )
                    loose = count_names(row[2] for row in encoded)
            if special:
                rows = [(v.ctx_id, v.iteration, v.name, v.value, v.vtype) for v in special]
                try:
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        rows,
                    )
                except UnicodeEncodeError:
                    cursor.executemany(
                        f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES ({rid}, ?, ?, ?, ?, ?)",
                        [(ctx, it, _encodable(name), _encodable(v), t) for ctx, it, name, v, t in rows],
                    )
                for name, count in count_names(_encodable(v.name) for v in special).items():
                    loose[name] = loose.get(name, 0) + count
            if loose:
                cursor.executemany(ADD_LOOSE_SQL, loose.items())
            if output:
                self._insert_output(cursor, rid, output_first, output)
            if keyed or items:
                write_items(cursor, rid, keyed, items)
            fields = dict(run_fields or {})
            if heartbeat is not None:
                fields["heartbeat"] = heartbeat
            if fields:
                assignments = ", ".join(f"{name} = ?" for name in fields)
                cursor.execute(
                    f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id)
                )

        self._write(body)

    def log_names(self, run_id: int) -> list[tuple[str, str, int]]:
        """(name, source, count) of a run's logs."""
        return self._read(
            "SELECT name, source, COUNT(*) FROM logs WHERE run_id = ? GROUP BY name, source ORDER BY MIN(rowid)",
            (run_id,),
        )

    def last_values(self, run_id: int) -> dict[str, object]:
        """The last value of every name a run logged (see lastvalue.py: at its last iteration,
        recorded, replayed or extracted alike)."""
        return {name: value for name, (value, _source) in self.last_values_of_runs([run_id]).get(run_id, {}).items()}

    def last_values_of_runs(self, run_ids: Sequence[int], names: Sequence[str] | None = None,
                            ) -> dict[int, dict[str, tuple[object, str]]]:
        """run_id -> name -> (last value, its source) for the runs given (of ``names`` only, when
        given), in one pass over the logs."""
        from ..values import decode

        ids = ",".join(str(int(r)) for r in run_ids)
        if not ids or (names is not None and not names):
            return {}
        where, params = f"l.run_id IN ({ids})", []
        if names is not None:
            where += f" AND l.name IN ({','.join('?' * len(names))})"
            params = list(names)
        rows = self._read(lastvalue.last_rows_sql(
            where, f"SELECT run_id, ctx_id FROM contexts WHERE run_id IN ({ids})"), params)
        out: dict[int, dict[str, tuple[object, str]]] = {}
        for run_id, name, value, vtype, source in rows:
            out.setdefault(run_id, {})[name] = (decode(value, vtype), source)
        return out

    def contexts(self, run_id: int) -> list[LoopInstance]:
        """A run's loop instances, in creation order."""
        return [LoopInstance._make(row) for row in self._read(
            "SELECT ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, iterations "
            "FROM contexts WHERE run_id = ? ORDER BY ctx_id",
            (run_id,),
        )]

    def iterations(self, run_id: int) -> list[IterationStart]:
        """Start times of the iterations of a run's top-level loops."""
        return [IterationStart._make(row) for row in self._read(
            "SELECT ctx_id, iteration, t FROM iterations WHERE run_id = ? ORDER BY ctx_id, iteration", (run_id,)
        )]

    def logs(self, run_id: int, names: Sequence[str] | None = None, source: str | None = None) -> list[LoggedValue]:
        """The values of one run (of ``names``, from ``source``), in the order they were logged."""
        sql = "SELECT name, value, vtype, ctx_id, iteration, source FROM logs WHERE run_id = ?"
        params: list = [run_id]
        if names is not None:
            sql += f" AND name IN ({','.join('?' * len(names))})"
            params.extend(names)
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        return [LoggedValue._make(row) for row in self._read(sql + " ORDER BY rowid", params)]

    def log_blocks(self, name: str) -> list[tuple] | None:
        """Blocks ``(run_id, vtype, n, ctx_ids, iterations, values)`` holding every value of
        ``name``, in write order; None when some values are only rows of ``logs`` (see blocks.py)."""
        # A database from before blocks has no log_names until a writer migrates it, and a
        # read-only open does not migrate: its values are read row by row. Only that absence
        # falls back; any other failure (a locked or damaged file) is raised, since falling back
        # would hide it and read the same damaged file again, slowly.
        if not self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log_names'"):
            return None
        loose = self._read("SELECT loose FROM log_names WHERE name = ?", (name,))
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

    # -- the dataframe's reads (flor/reading/query.py) -----------------------------------------------

    def log_kinds(self, name: str) -> list[tuple[str, str]]:
        """The distinct ``(vtype, source)`` of the values logged under ``name``."""
        return self._read("SELECT DISTINCT vtype, source FROM logs WHERE name = ?", (name,))

    def numeric_log_rows(self, name: str, record_first: bool):
        """``(run_id, ctx_id or -1, iteration or -1, value or 0, value IS NULL, not recorded)`` of
        the numeric values of ``name`` in the order they were logged (recorded before replayed
        ones with ``record_first``), streamed: the dataframe reads them straight into a numpy
        array, with no list of tuples."""
        order = " ORDER BY source DESC, rowid" if record_first else " ORDER BY rowid"
        try:
            cursor = self._retry(lambda: self.connection.execute(
                "SELECT run_id, IFNULL(ctx_id, -1), IFNULL(iteration, -1), IFNULL(value, 0), value IS NULL, "
                f"source != 'record' FROM logs WHERE name = ?{order}", (name,)))
            yield from cursor
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc

    def log_rows_named(self, name: str, record_first: bool) -> list[tuple]:
        """``(run_id, ctx_id, iteration, value, vtype, not recorded)`` of every value of ``name``,
        in the order they were logged (recorded first with ``record_first``)."""
        order = " ORDER BY source DESC, rowid" if record_first else " ORDER BY rowid"
        return self._read(
            f"SELECT run_id, ctx_id, iteration, value, vtype, source != 'record' FROM logs WHERE name = ?{order}", (name,))

    def logged_names(self) -> list[str]:
        """Every logged name, in the order names first appeared."""
        return [r[0] for r in self._read("SELECT name FROM logs GROUP BY name ORDER BY MIN(rowid)")]

    def contexts_of_runs(self, run_ids: Sequence[int]) -> list[tuple]:
        """``(run_id, ctx_id, parent_id, parent_iteration, loop_name)`` of the runs' loop instances."""
        ids = ",".join(str(int(r)) for r in run_ids)
        return self._read(
            f"SELECT run_id, ctx_id, parent_id, parent_iteration, loop_name FROM contexts WHERE run_id IN ({ids})"
        )

"""Keyed loops and their items, and the lineage between runs.

``keyed_loops`` has one row per instance of a keyed loop: its loop name, the fingerprint of its
body's code (``flor/recording/fingerprint.py``) and whether it was incremental. ``item_keys`` has one row per
item: ``started`` when it was yielded, ``done`` once its body finished (both at the item's
position ``iteration``), or ``skipped`` (no position) when an incremental loop left it out because
run ``by_run`` had done it. ``path`` is the item's key path (``flor/recording/keys.py``), the item's identity
across runs. ``lineage`` has one row per (reader run, run whose values it read).
"""

from __future__ import annotations

from typing import Sequence

from ..logged import ItemPath

ITEM_SQL = (
    "INSERT OR REPLACE INTO item_keys(run_id, ctx_id, iteration, key, ktype, path, state, by_run) "
    "VALUES ({rid}, ?, ?, ?, ?, ?, ?, ?)"
)
KEYED_LOOP_SQL = (
    "INSERT OR REPLACE INTO keyed_loops(run_id, ctx_id, loop_name, fingerprint, incremental) VALUES ({rid}, ?, ?, ?, ?)"
)


def write_items(cursor, rid: int, keyed: Sequence[tuple], items: Sequence[tuple]) -> None:
    """Inside a write transaction: keyed loop instances ``(ctx_id, loop_name, fingerprint,
    incremental)`` and items ``(ctx_id, iteration, key, ktype, path, state, by_run)``."""
    if keyed:
        cursor.executemany(KEYED_LOOP_SQL.format(rid=rid), keyed)
    if items:
        cursor.executemany(ITEM_SQL.format(rid=rid), items)


class ItemsMixin:
    """What :class:`~flor.store.Store` reads and writes of keyed loops and lineage."""

    def runs_with_args(self, wanted: dict[str, tuple], exclude: int | None) -> list[int]:
        """Runs whose args are exactly ``wanted`` (name -> (stored, vtype)), ``exclude`` aside."""
        rows = self._read("SELECT run_id, name, value, vtype FROM args")
        by_run: dict[int, dict] = {}
        for run_id, name, value, vtype in rows:
            by_run.setdefault(run_id, {})[name] = (value, vtype)
        candidates = [r[0] for r in self._read("SELECT run_id FROM runs")]
        return [r for r in candidates if r != exclude and by_run.get(r, {}) == wanted]

    def done_items(self, loop_name: str, fingerprint: str, run_ids: Sequence[int]) -> dict[str, int]:
        """Key path -> the latest of ``run_ids`` that finished that item in a ``loop_name`` loop
        whose body had ``fingerprint``."""
        if not run_ids:
            return {}
        ids = ",".join(str(int(r)) for r in run_ids)
        rows = self._read(
            "SELECT i.path, i.run_id FROM item_keys i JOIN keyed_loops k ON k.run_id = i.run_id AND k.ctx_id = i.ctx_id "
            f"WHERE i.state = 'done' AND k.loop_name = ? AND k.fingerprint = ? AND i.run_id IN ({ids}) "
            "ORDER BY i.run_id",
            (loop_name, fingerprint),
        )
        return {path: run_id for path, run_id in rows}

    def item_keys_of_runs(self, run_ids: Sequence[int]) -> list[tuple]:
        """``(run_id, ctx_id, iteration, key, ktype)`` of the items the runs yielded."""
        if not run_ids:
            return []
        ids = ",".join(str(int(r)) for r in run_ids)
        return self._read(
            f"SELECT run_id, ctx_id, iteration, key, ktype FROM item_keys WHERE run_id IN ({ids}) AND state != 'skipped'"
        )

    def keyed_loop_names(self) -> set[str]:
        """Names of the loops that some run keyed."""
        return {r[0] for r in self._read("SELECT DISTINCT loop_name FROM keyed_loops")}

    def item_paths(self, run_id: int) -> list[ItemPath]:
        """The items one run yielded, in order."""
        return [ItemPath._make(row) for row in self._read(
            "SELECT k.loop_name, i.path, i.iteration FROM item_keys i JOIN keyed_loops k "
            "ON k.run_id = i.run_id AND k.ctx_id = i.ctx_id WHERE i.run_id = ? AND i.state != 'skipped' "
            "ORDER BY i.ctx_id, i.iteration",
            (run_id,),
        )]

    def keyed_loops_of(self, run_id: int) -> list[str]:
        """Names of the keyed loops one run ran (also those that yielded no item)."""
        return [r[0] for r in self._read("SELECT DISTINCT loop_name FROM keyed_loops WHERE run_id = ?", (run_id,))]

    def item_counts(self, run_id: int) -> list[tuple[str, str, int, int | None]]:
        """``(loop_name, state, count, by_run)`` of one run's items (flor show)."""
        return self._read(
            "SELECT k.loop_name, i.state, COUNT(*), i.by_run FROM item_keys i JOIN keyed_loops k "
            "ON k.run_id = i.run_id AND k.ctx_id = i.ctx_id WHERE i.run_id = ? "
            "GROUP BY k.loop_name, i.state, i.by_run ORDER BY k.loop_name, i.state",
            (run_id,),
        )

    def add_lineage(self, reader: int, sources: Sequence[int], how: str) -> None:
        """Record that run ``reader`` read values of ``sources`` (through ``how``)."""
        rows = [(int(reader), int(s), how) for s in sources if int(s) != int(reader)]
        if rows:
            self._write(lambda cursor: cursor.executemany(
                "INSERT OR IGNORE INTO lineage(reader, source, how) VALUES (?, ?, ?)", rows))

    def read_from(self, run_id: int) -> list[tuple]:
        """``(run_id, tstamp, filename, how)`` of the runs that ``run_id`` read."""
        return self._read(
            "SELECT r.run_id, r.tstamp, r.filename, l.how FROM lineage l JOIN runs r ON r.run_id = l.source "
            "WHERE l.reader = ? ORDER BY r.tstamp", (run_id,))

    def read_by(self, run_id: int) -> list[tuple]:
        """``(run_id, tstamp, filename, how)`` of the runs that read ``run_id``."""
        return self._read(
            "SELECT r.run_id, r.tstamp, r.filename, l.how FROM lineage l JOIN runs r ON r.run_id = l.reader "
            "WHERE l.source = ? ORDER BY r.tstamp", (run_id,))

"""Reading a damaged database before anything may trust it: ``flor doctor``'s integrity check
and its recovery of every readable row into a fresh file.

This is the store package's one reader that goes around :class:`~flor.store.Store`: a ``Store``
opens a file by trusting its schema and pages, and the file in question here is the one whose
pages may be damaged. So it reads with raw ``sqlite3``, row by row, skipping what cannot be read
(a plain scan first; past a damaged page column by column; past that by seeking to the next rowid
that reads). The file it recovers from is only ever read.

>>> state(Path(".flor/flor.db"))                                       # doctest: +SKIP
(None, [])
>>> recover_database(Path(".flor/flor.db.corrupt-20261126T150407"), Path("/tmp/fresh.db"))  # doctest: +SKIP
{'runs': 12, 'args': 40, 'contexts': 96, 'logs': 5120, 'checkpoints': 24, ...}
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import StoreError
from . import DERIVED_TABLES, SEED_LOG_NAMES, TABLES, Store
from .schema import migrate

_CHUNK = 2000
_SKIP_TRIES = 48


def state(db: Path, read_only: bool = False) -> tuple[str | None, list[str]]:
    """(what is wrong with the database file or None, tables of the schema that are missing).
    ``read_only``: the file cannot be written, so it is read as immutable (no -shm to make)."""
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro" + ("&immutable=1" if read_only else ""), uri=True, timeout=30)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})", []
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            first = str(rows[0][0]) if rows else "no answer"
            more = f" (+{len(rows) - 1} more)" if len(rows) > 1 else ""
            return f"fails SQLite's integrity check: {first}{more}", []
        names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # Derived tables are added by the next writer that opens an older database.
        missing = [t for t in TABLES if t not in names and t not in DERIVED_TABLES]
        if "meta" in names:
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None and "meta" not in missing:
                missing.append("meta(schema_version)")
        return None, missing
    except sqlite3.DatabaseError as exc:
        return f"is corrupt ({exc})", []
    finally:
        connection.close()


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in connection.execute(f'PRAGMA table_info("{table}")')]


def _rows_by_rowid(old: sqlite3.Connection, table: str, columns: list[str]):
    """Yield chunks of readable rows, in rowid order: a plain scan first; past a damaged page,
    column by column; past that, by seeking to the next rowid that reads."""
    listed = ", ".join(f'"{c}"' for c in columns)
    last = None
    chunk = []
    try:
        for row in old.execute(f'SELECT rowid, {listed} FROM "{table}"'):
            chunk.append(row[1:])
            last = row[0]
            if len(chunk) >= _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    except sqlite3.DatabaseError:
        if chunk:
            yield chunk
    # Column by column: a damaged overflow page loses one value, not the whole row.
    by_column: list[dict] = []
    for column in columns:
        seen: dict = {}
        try:
            for rowid, value in old.execute(f'SELECT rowid, "{column}" FROM "{table}"'):
                if last is None or rowid > last:
                    seen[rowid] = value
        except sqlite3.DatabaseError:
            pass
        by_column.append(seen)
    rowids = sorted(set().union(*by_column)) if by_column else []
    for start in range(0, len(rowids), _CHUNK):
        yield [tuple(col.get(r) for col in by_column) for r in rowids[start:start + _CHUNK]]
    if rowids:
        last = rowids[-1]
    yield from _rows_after(old, table, columns, last)


def _rows_after(old: sqlite3.Connection, table: str, columns: list[str], last):
    """Rows after rowid ``last``, found by seeking (reaches leaves that a scan cannot)."""
    listed = ", ".join(f'"{c}"' for c in columns)
    try:
        top = old.execute(f'SELECT MAX(rowid) FROM "{table}"').fetchone()[0]
    except sqlite3.DatabaseError:
        top = None
    floor = 1  # where the next search for a readable rowid starts
    while True:
        chunk = []
        try:
            query = f'SELECT rowid, {listed} FROM "{table}"' + ("" if last is None else " WHERE rowid > ?")
            for row in old.execute(query + f" ORDER BY rowid LIMIT {_CHUNK}", () if last is None else (last,)):
                chunk.append(row[1:])
                last = row[0]
        except sqlite3.DatabaseError:
            if chunk:
                yield chunk
            salvaged = _salvage_next_row(old, table, columns, last)
            if salvaged is not None:
                rowid, row = salvaged
                if row is not None:
                    yield [row]
                last = rowid
                continue
            # A damaged page: look for the next rowid that reads, in growing steps.
            start = max(floor, (last or 0) + 1)
            found = None
            step = 0
            for _ in range(_SKIP_TRIES):
                probe = start + step
                if top is not None and probe > top:
                    break
                try:
                    old.execute(f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1', (probe,)).fetchall()
                    found = probe
                    break
                except sqlite3.DatabaseError:
                    step = step * 2 or 1
            if found is None:
                return
            last, floor = found - 1, found + 1
            continue
        if not chunk:
            return
        yield chunk
        if len(chunk) < _CHUNK:
            return


def _salvage_next_row(old: sqlite3.Connection, table: str, columns: list[str], last):
    """(rowid, row with unreadable columns as NULL, or None) of the row after ``last``; None
    when even its rowid cannot be read."""
    where, params = ("", ()) if last is None else (" WHERE rowid > ?", (last,))
    try:
        found = old.execute(f'SELECT rowid FROM "{table}"{where} ORDER BY rowid LIMIT 1', params).fetchone()
    except sqlite3.DatabaseError:
        return None
    if found is None:
        return None
    rowid, row = found[0], []
    for column in columns:
        try:
            row.append(old.execute(f'SELECT "{column}" FROM "{table}" WHERE rowid = ?', (rowid,)).fetchone()[0])
        except sqlite3.DatabaseError:
            row.append(None)
    return rowid, (tuple(row) if any(v is not None for v in row) else None)


def _without_rowid(old: sqlite3.Connection, new: sqlite3.Connection, table: str) -> bool:
    for connection in (old, new):
        try:
            row = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row and row[0]:
            return "WITHOUT ROWID" in row[0].upper()
    return False


def _rows_whole(old: sqlite3.Connection, table: str, columns: list[str], run_ids: list[int]):
    """Rows of a table without rowid: all at once, else run by run (a damaged run loses only itself)."""
    listed = ", ".join(f'"{c}"' for c in columns)
    try:
        yield old.execute(f'SELECT {listed} FROM "{table}"').fetchall()
        return
    except sqlite3.DatabaseError:
        pass
    if "run_id" not in columns:
        return
    for run_id in run_ids:
        try:
            yield old.execute(f'SELECT {listed} FROM "{table}" WHERE run_id = ?', (run_id,)).fetchall()
        except sqlite3.DatabaseError:
            continue


def recover_database(corrupt: Path, fresh: Path) -> dict[str, int]:
    """Copy every readable row of ``corrupt`` into a new flor database at ``fresh``.

    Returns the number of rows recovered per table. ``corrupt`` is only read; a failure to write
    ``fresh`` is a :class:`StoreError` (the damaged file is untouched).
    """
    try:
        return _recover(corrupt, fresh)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write the recovered rows to {fresh}: {exc}") from exc


def _recover(corrupt: Path, fresh: Path) -> dict[str, int]:
    Store.open(fresh).close()  # the current schema
    counts: dict[str, int] = {}
    try:
        old = sqlite3.connect(f"file:{corrupt}?mode=ro", uri=True, timeout=30)
        # Lets SQLite read a file shorter than its header says (a truncated database).
        old.execute("PRAGMA writable_schema = ON")
    except sqlite3.Error:
        return counts
    new = sqlite3.connect(str(fresh), timeout=60, isolation_level=None)
    try:
        try:
            tables = [r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        except sqlite3.DatabaseError:
            tables = list(TABLES)  # the schema page itself is damaged: try the known tables
        order = [t for t in TABLES if t in tables]
        run_ids: list[int] = []
        for table in order:
            if table == "meta":
                continue  # the fresh database carries its own schema version
            if table in DERIVED_TABLES:
                continue  # blocks are copies of logs rows; the recovered rows are read as rows
            try:
                old_cols = _columns(old, table)
            except sqlite3.DatabaseError:
                continue
            columns = [c for c in _columns(new, table) if c in old_cols]
            if not columns:
                continue
            placeholders = ", ".join("?" * len(columns))
            insert = f'INSERT OR IGNORE INTO "{table}"({", ".join(columns)}) VALUES ({placeholders})'
            without_rowid = _without_rowid(old, new, table)
            chunks = _rows_whole(old, table, columns, run_ids) if without_rowid else _rows_by_rowid(old, table, columns)
            fill = _filler(table, columns)
            before = new.total_changes
            for chunk in chunks:
                new.execute("BEGIN")
                new.executemany(insert, [fill(row) for row in chunk] if fill else chunk)
                new.execute("COMMIT")
            counts[table] = new.total_changes - before
            if table == "runs":
                run_ids = [r[0] for r in new.execute("SELECT run_id FROM runs")]
        new.execute(SEED_LOG_NAMES)
    finally:
        old.close()
        new.close()
    return counts


# A run whose row is partly unreadable is still worth keeping: its logs and checkpoints refer to it.
_RUN_DEFAULTS = {"projid": "unknown", "filename": "unknown", "argv": "[]", "cwd": ".", "status": "killed", "started": 0.0}


def _filler(table: str, columns: list[str]):
    """For ``runs``: a function that fills unreadable required fields and says so in ``error``."""
    if table != "runs" or "error" not in columns:
        return None
    where = {name: columns.index(name) for name in _RUN_DEFAULTS if name in columns}
    error_at = columns.index("error")

    def fill(row):
        missing = [name for name, i in where.items() if row[i] is None]
        if not missing:
            return row
        row = list(row)
        for name in missing:
            row[where[name]] = _RUN_DEFAULTS[name]
        row[error_at] = f"recovered by flor doctor; unreadable: {', '.join(missing)}" + (f"; {row[error_at]}" if row[error_at] else "")
        return tuple(row)

    return fill


def create_missing_tables(db: Path) -> None:
    connection = sqlite3.connect(str(db), timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        has_meta = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
        migrate(connection, int(row[0]) if row else None)
        connection.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot add the missing tables to {db}: {exc}; move it aside and run `flor doctor --repair`") from exc
    finally:
        connection.close()


def settle(db: Path) -> None:
    """Fold a freshly recovered database's write-ahead log into the file and leave it in rollback
    mode, so that it is one file that can be moved into place."""
    try:
        connection = sqlite3.connect(str(db))
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode = DELETE")
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot finish the recovered database {db}: {exc}") from exc

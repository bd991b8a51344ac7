"""Free SQL (``flor query``): one read-only statement over the store.

``PRAGMA query_only`` alone lets ATTACH and VACUUM INTO create files anywhere and PRAGMAs change
the connection, so an authorizer (an allowlist) refuses everything but reads while a statement is
prepared and stepped. A statement is also bounded in time (a progress handler), in the size of
one value (SQLite's length limit: ``randomblob(9e8)``) and in the size of its result (rows are
fetched in chunks and counted), so a recursive CTE without an end stops with one line instead of
filling memory.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from typing import Sequence

from ..errors import StoreError, UsageError

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
# Python 3.11 clears an authorizer with None; 3.10 keeps None as the callback, which then denies
# everything the connection reads afterwards ("not authorized"), so there one that allows all.
_NO_AUTHORIZER = None if sys.version_info >= (3, 11) else (lambda *_: sqlite3.SQLITE_OK)
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


MAX_VALUE_BYTES = 64 << 20  # the longest string or blob one value may be
_FETCH = 1000
_CHECK_EVERY = 20_000  # SQLite VM instructions between two looks at the clock


def _row_bytes(row: tuple) -> int:
    """About what a row costs in memory (enough to bound a result, cheap to compute)."""
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row) + 16 * len(row)


class FreeSQLMixin:
    """``flor query``'s statements, read-only."""

    def execute_readonly(self, sql: str, params: Sequence = (), max_seconds: float = 60.0,
                         max_bytes: int = 256 << 20) -> tuple[list[str], list[tuple]]:
        """Run one read-only statement; return (column names, rows).

        ``query_only`` alone lets ATTACH and VACUUM INTO create files anywhere and PRAGMAs change
        the connection, so an authorizer refuses everything but reads while the statement is
        prepared and stepped (see :func:`_read_only_authorizer`). It stops, with one line, past
        ``max_seconds``, a value over ``MAX_VALUE_BYTES`` or a result over ``max_bytes``."""
        denied: list[str] = []
        deadline = time.monotonic() + max_seconds
        connection = self.connection
        connection.set_authorizer(_read_only_authorizer(denied))
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), _CHECK_EVERY)
        length = connection.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) if hasattr(connection, "getlimit") else None
        if length is not None:
            connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        try:
            cursor = self._retry(lambda: connection.execute(sql, params))
            columns = [d[0] for d in cursor.description or ()]
            rows: list[tuple] = []
            size = 0
            while True:
                chunk = cursor.fetchmany(_FETCH)
                if not chunk:
                    return columns, rows
                rows += chunk
                size += sum(map(_row_bytes, chunk))
                if size > max_bytes:
                    raise UsageError(f"flor query stopped: the result is over {max_bytes >> 20} MiB after "
                                     f"{len(rows):,} rows (FLOR_QUERY_MAX_BYTES); add a LIMIT or aggregate")
        except (sqlite3.Error, sqlite3.Warning) as exc:  # Warning: two statements (Python < 3.12)
            text = str(exc)
            if "interrupted" in text and time.monotonic() > deadline:
                raise UsageError(f"flor query stopped after {max_seconds:g} s (FLOR_QUERY_MAX_S): a recursive "
                                 "query without an end, or too much to compute; add a LIMIT") from exc
            if "too big" in text:
                raise UsageError(f"flor query stopped: a value over {MAX_VALUE_BYTES >> 20} MiB ({text})") from exc
            if denied:
                # SQLite reports a CREATE or DROP as a write to the schema table, and a VACUUM
                # as the ATTACH it does inside: name them by the statement's first word.
                what, keyword = denied[0], _first_keyword(sql)
                if keyword == "VACUUM" or (what == _SCHEMA_WRITE and keyword in ("CREATE", "DROP")):
                    what = keyword
                raise UsageError(f"flor query is read-only: {what} is not allowed; use SELECT statements") from exc
            if "readonly" in text.replace(" ", "") or "query_only" in text:
                raise UsageError("flor query is read-only; use SELECT statements") from exc
            if isinstance(exc, (sqlite3.OperationalError, sqlite3.ProgrammingError, sqlite3.Warning)):
                # No such table, a syntax error, two statements: a mistake in the SQL itself.
                raise UsageError(f"query failed: {text}") from exc
            raise StoreError(f"query failed: {text}") from exc
        finally:
            connection.set_authorizer(_NO_AUTHORIZER)
            connection.set_progress_handler(None, 0)
            if length is not None:
                connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length)

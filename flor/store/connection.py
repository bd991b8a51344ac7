"""The connection to a project's database: opening, migrating, and transactions.

One SQLite database per project, in WAL mode with a busy timeout, so that many runs can write to
it at once while readers query it. Every write is one short ``BEGIN IMMEDIATE`` transaction,
retried while another process holds the lock, so "database is locked" never reaches the user.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

from ..errors import StoreError
from ..environment.paths import ProjectPaths
from .schema import SCHEMA_VERSION, migrate

BUSY_TIMEOUT_S = 60.0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def unreadable(path: Path, exc: BaseException, doing: str = "read") -> StoreError:
    """The one error for a database that SQLite cannot open or read (every reader of the store
    raises it): what failed, in SQLite's words, and the way out."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return StoreError(f"cannot {doing} the flor database {path}: {reason}; if this persists, "
                      "`flor doctor` checks it and `flor doctor --repair` repairs it")


FORK_WAIT_S = 1.0  # how long a fork waits for a write transaction of this process to finish

# Every open connection of this process: a fork waits for their write transactions (below).
_open: "weakref.WeakSet[Connection]" = weakref.WeakSet()
_held: list[threading.RLock] = []  # the locks taken for the fork in progress
_inherited: list[sqlite3.Connection] = []  # a forked child's copies, kept open forever


def _before_fork() -> None:
    # No thread of ours inside SQLite while the process forks (a DataLoader starting its workers):
    # the child's copy of SQLite's mutexes would be held by a thread the child does not have.
    if _open:
        import ctypes  # noqa: F401  (imported here, so that the child's import is a lookup)
    for connection in list(_open):
        if connection.lock.acquire(timeout=FORK_WAIT_S):
            _held.append(connection.lock)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop().release()


def _after_fork_in_child() -> None:
    # The parent's connections are the parent's: the child must never close them. Closing the
    # last connection of a process checkpoints the write-ahead log and may delete it, which the
    # parent still uses (SQLite: "do not carry an open connection across a fork"), so each is
    # kept from ever being freed, even when the child's interpreter shuts down.
    import ctypes

    _after_fork_in_parent()
    for connection in list(_open):
        _inherited.append(connection.connection)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(connection.connection))
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


class Connection:
    """A connection to one project's database, and its transactions; :class:`~flor.store.Store`
    adds what is read and written. Open with :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.connection = connection
        self.readonly = readonly
        # The threads of one run (the log flusher, the checkpoint writer) share this connection:
        # one write transaction at a time. Held across a fork so no thread is inside SQLite then.
        self.lock = threading.RLock()
        _open.add(self)

    @property
    def paths(self) -> ProjectPaths:
        """The paths of the project whose database this is (``.flor/`` is the database's folder)."""
        return ProjectPaths.of_db(self.path)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, create: bool = True):
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
            raise unreadable(path, exc, "open") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the flor database {path}: {exc}") from exc
        return store

    def _prepare(self) -> None:
        connection = self.connection
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # 8 KiB pages (a new database only; this does nothing to an existing one): the schema's
        # text then fits in page 1, so a file cut short keeps the schema that `flor doctor` needs
        # to read what survives. At 4 KiB it spilled into pages allocated after the first tables.
        connection.execute("PRAGMA page_size = 8192")
        mode = self._retry(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
        connection.execute("PRAGMA synchronous = NORMAL")
        if self._checked_version() != SCHEMA_VERSION:
            def upgrade(cursor):
                version = self._checked_version()  # again inside the transaction: another writer may have upgraded it
                if version != SCHEMA_VERSION:
                    migrate(cursor, version)

            self._write(upgrade)

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

    def _checked_version(self) -> int | None:
        """The schema version; a database made by a newer flor is refused, never rewritten."""
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was made by a newer flor (schema {version}, this flor knows {SCHEMA_VERSION}); "
                "upgrade flor (pip install -U flor-hindsight) to use it"
            )
        return version

    def _check_readable(self) -> None:
        self.connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self._checked_version() is None:
            raise StoreError(f"{self.path} is not a flor database (no schema); record a run first")

    def begin_read(self) -> None:
        """Start a read transaction: later reads see one snapshot until :meth:`close`."""
        try:
            self._retry(lambda: self.connection.execute("BEGIN"))
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc

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
            with self.lock:
                return self._retry(attempt)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot write to the flor database {self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise StoreError(f"cannot write to the flor database {self.path}: a string is not valid text ({exc})") from exc

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self._retry(lambda: self.connection.execute(sql, params).fetchall())
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc


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

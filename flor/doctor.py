"""``flor doctor``: check a project's records, and repair what can be rebuilt without losing anything.

It checks, in order:

- the database ``.flor/flor.db``: SQLite's ``PRAGMA integrity_check`` and flor's schema;
- every checkpoint listed in the ``checkpoints`` table: its manifest is readable JSON and every
  array it names exists under ``.flor/objects/<sha256>`` with that sha256;
- the code version of every run: its commit exists and ``refs/flor/runs/<tstamp>`` points to it;
- runs still marked ``running`` whose process is gone (they are marked ``killed``);
- temporary files that a killed writer left under ``.flor/objects`` and ``.flor/checkpoints``.

It prints one line per problem with the way out, and exits 1 while problems remain.
``flor doctor --repair`` never overwrites anything silently: a corrupt database is moved aside to
``flor.db.corrupt-<time>`` and its readable rows are copied into a fresh one; checkpoints whose
files are missing or corrupt are unlisted (their files are kept); a broken ref is moved aside
before it is written again from the commit the database holds; leftover temporary files of
processes that are gone are removed.

It reads the store through :class:`~flor.store.Store` like every other module, except where the
database itself is in question: the integrity check and the recovery of a damaged file read it
with raw ``sqlite3`` (row by row, skipping what cannot be read), which no ``Store`` method could
do without first trusting the file.

>>> report = check(Path("."), repair=True)       # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, FlorError, StoreError
from .paths import ProjectPaths
from .processes import pid_alive
from .checkpoints.restore import unexpected_pickles
from .store import DERIVED_TABLES, SEED_LOG_NAMES, TABLES, Store
from .store.schema import migrate
from .vcs import REF_PREFIX, Repo, find_root, ref_for

_CHUNK = 2000
_SKIP_TRIES = 48


@dataclass
class Problem:
    """One thing found wrong: what it is, the way out, and whether ``--repair`` fixed it."""

    what: str
    fix: str
    repaired: bool = False
    note: str = ""

    def line(self) -> str:
        """The one line printed for this problem."""
        if self.repaired:
            text = f"repaired: {self.what}; {self.note}" if self.note else f"repaired: {self.what}"
        else:
            text = f"problem: {self.what}; {self.fix}"
        return " ".join(text.split())


@dataclass
class Report:
    """What ``flor doctor`` found and did."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows_recovered: dict[str, int] = field(default_factory=dict)
    moved_aside: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem remains (none found, or all repaired)."""
        return all(p.repaired for p in self.problems)

    def add(self, what: str, fix: str) -> Problem:
        """Record a problem found (not yet repaired) and return it."""
        problem = Problem(what, fix)
        self.problems.append(problem)
        return problem


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# -- the database -----------------------------------------------------------------------------


def _access_problem(path: Path, root: Path) -> tuple[str, str] | None:
    """``("unreadable" | "read-only", what)`` when flor cannot read or write the file as it needs
    to. Neither is damage: the file may be whole, so a repair must never treat it as corrupt."""
    if path.is_dir():
        return "unreadable", "is a directory, not a file"
    try:
        with open(path, "rb") as handle:
            handle.read(100)
    except OSError as exc:
        return "unreadable", f"cannot be read ({exc.strerror or exc})"
    for target in (path, path.parent):
        try:
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY) or not os.access(target, os.W_OK)
        except OSError:
            read_only = False
        if read_only:
            which = "" if target == path else f" (its folder {_rel(target, root)})"
            return "read-only", f"is read-only{which}"
    return None


def _database_state(db: Path, read_only: bool = False) -> tuple[str | None, list[str]]:
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


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def _move_aside(db: Path) -> Path:
    """Move the database and its -wal/-shm files to ``flor.db.corrupt-<time>`` (never overwrite)."""
    stamp = _stamp()
    target = db.with_name(f"{db.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = db.with_name(f"{db.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        for suffix in ("-wal", "-shm"):
            side = db.with_name(db.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        os.replace(db, target)
    except OSError as exc:
        raise StoreError(f"cannot move the corrupt database {db} aside: {exc.strerror}; free the disk or fix permissions, then run `flor doctor --repair` again") from exc
    return target


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

    Returns the number of rows recovered per table. ``corrupt`` is only read.

    >>> recover_database(Path(".flor/flor.db.corrupt-20261126T150407"), Path("/tmp/fresh.db"))  # doctest: +SKIP
    {'runs': 12, 'args': 40, 'contexts': 96, 'logs': 5120, 'checkpoints': 24, ...}
    """
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


def _create_missing_tables(db: Path) -> None:
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


def _check_database(report: Report, db: Path, repair: bool) -> bool:
    """Check (and repair) the database; True when it can be used afterwards."""
    root = report.root
    access = _access_problem(db, root)
    if access is not None:
        kind, what = access
        if kind == "unreadable":
            report.add(f"the database {_rel(db, root)} {what}; this is not damage, and nothing was changed",
                       "fix its permissions (or put the file back), then run `flor doctor` again; "
                       "`--repair` changes nothing while it cannot be read")
            return False
        wrong, _missing = _database_state(db, read_only=True)
        state = f"; SQLite's check says it {wrong}" if wrong else "; it reads whole"
        report.add(f"the database {_rel(db, root)} {what}{state}; nothing was changed",
                   "make it writable (permissions, or the mount), then run `flor doctor` again; "
                   "`--repair` changes nothing while it is read-only")
        return False
    wrong, missing = _database_state(db)
    if wrong is not None:
        problem = report.add(
            f"the database {_rel(db, root)} {wrong}",
            "run `flor doctor --repair` to move it aside and recover its readable rows into a fresh one",
        )
        if not repair:
            return False
        aside = _move_aside(db)
        report.moved_aside.append(aside)
        fresh_tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}-recover")
        for leftover in (fresh_tmp, fresh_tmp.with_name(fresh_tmp.name + "-wal"), fresh_tmp.with_name(fresh_tmp.name + "-shm")):
            if leftover.exists():
                leftover.unlink()
        try:
            counts = recover_database(aside, fresh_tmp)
            connection = sqlite3.connect(str(fresh_tmp))
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode = DELETE")
            connection.close()
            os.replace(fresh_tmp, db)
        except (sqlite3.Error, OSError, FlorError) as exc:
            raise StoreError(f"cannot build a fresh database at {db}: {exc}; the damaged one is kept at {aside}") from exc
        for leftover in (fresh_tmp.with_name(fresh_tmp.name + "-wal"), fresh_tmp.with_name(fresh_tmp.name + "-shm")):
            if leftover.exists():
                leftover.unlink()
        report.rows_recovered = counts
        shown = ", ".join(f"{n} {t}" for t, n in counts.items() if n) or "no rows"
        problem.repaired = True
        problem.note = f"moved aside to {_rel(aside, root)}; recovered {shown} into a fresh {_rel(db, root)}"
        return True
    if missing:
        problem = report.add(
            f"the database {_rel(db, root)} lacks flor's schema ({', '.join(missing)})",
            "run `flor doctor --repair` to add the missing tables (nothing is deleted)",
        )
        if repair:
            _create_missing_tables(db)
            problem.repaired = True
            problem.note = "missing tables added"
    return True


# -- checkpoints ------------------------------------------------------------------------------


MISSING, DAMAGED, UNREADABLE = "missing", "damaged", "unreadable"


def _local_state(flor_dir: Path, location: str, verified: dict, pickled: list[str] | None = None,
                 sha256: str | None = None) -> tuple[str, str] | None:
    """``(kind, what)`` is wrong with one checkpoint's files in ``.flor/``, or None. ``kind``:
    MISSING (a file is not there), DAMAGED (corrupt, edited, swapped), UNREADABLE (there but
    cannot be read: permissions, a folder in its place; never a reason to unlist). ``verified``
    caches per-blob answers; ``pickled``: the objects the store recorded as pickled in it;
    ``sha256``: of the manifest's bytes, as the store kept it."""
    path = flor_dir / location
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return MISSING, f"its manifest {path.name} is missing"
    except OSError as exc:
        return UNREADABLE, f"its manifest {path.name} cannot be read ({exc.strerror or exc})"
    wrong = _manifest_content(data, pickled)
    if wrong:
        return DAMAGED, f"its manifest {path.name} {wrong}"
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return DAMAGED, (f"its manifest {path.name} is not the one written (its sha256 differs from the store's): "
                         "it was edited or swapped")
    for digest in json.loads(data)["blobs"]:
        if digest not in verified:
            blob = flor_dir / "objects" / str(digest)
            try:
                sha = hashlib.sha256()
                with open(blob, "rb") as handle:
                    for piece in iter(lambda: handle.read(1 << 22), b""):
                        sha.update(piece)
                verified[digest] = None if sha.hexdigest() == digest else (DAMAGED, f"object {digest[:12]} is corrupt (sha256 differs)")
            except FileNotFoundError:
                verified[digest] = (MISSING, f"object {digest[:12]} is missing")
            except OSError as exc:
                verified[digest] = (UNREADABLE, f"object {digest[:12]} cannot be read ({exc.strerror or exc})")
        if verified[digest]:
            return verified[digest]
    return None


def _manifest_content(data: bytes, pickled: list[str] | None) -> str | None:
    """What is wrong with a manifest's text (not JSON, no list of objects, smuggled pickles)."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        return f"is not valid JSON ({exc})"
    blobs = manifest.get("blobs") if isinstance(manifest, dict) else None
    if not isinstance(blobs, list) or "objects" not in manifest:
        return "lacks the list of objects"
    unexpected = unexpected_pickles(manifest, pickled)
    if unexpected:
        return (f"holds pickled code the run did not record ({', '.join(unexpected)}): it may have been "
                "tampered with; do not load it with trusted=True")
    return None


def _verify_manifest(flor_dir: Path, location: str, verified: dict, pickled: list[str] | None = None,
                     sha256: str | None = None) -> str | None:
    """What is wrong with one checkpoint in ``.flor/``, or None (see :func:`_local_state`)."""
    state = _local_state(flor_dir, location, verified, pickled, sha256)
    return None if state is None else state[1]


def _remote_state(remote, location: str, verified: dict, pickled: list[str] | None = None,
                  sha256: str | None = None) -> str | None:
    """What is wrong with one checkpoint's copy in the checkpoint store, or None (arrays
    downloaded and hashed, as a replay on another machine would). An unreachable store raises
    CheckpointError: that is not an answer about the checkpoint."""
    data = remote.fetch(location)
    if data is None:
        return "its manifest is not there"
    wrong = _manifest_content(data, pickled)
    if wrong:
        return f"its manifest {wrong}"
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return "its manifest is not the one written (its sha256 differs from the store's): it was edited or swapped"
    for digest in json.loads(data)["blobs"]:
        if digest not in verified:
            blob = remote.fetch(f"objects/{digest}")
            verified[digest] = (f"object {digest[:12]} is missing" if blob is None else None
                                if hashlib.sha256(blob).hexdigest() == digest else f"object {digest[:12]} is corrupt (sha256 differs)")
        if verified[digest]:
            return verified[digest]
    return None


def _keep_rows(flor_dir: Path, store: Store, keys: list[tuple]) -> Path:
    """Write the rows of checkpoints about to be unlisted to ``.flor/doctor/unlisted-<time>.json``
    (a repair keeps what it removes; ``flor doctor --repair`` can list them again from there)."""
    folder = flor_dir / "doctor"
    folder.mkdir(exist_ok=True)
    target = folder / f"unlisted-{_stamp()}-{os.getpid()}.json"
    target.write_text(json.dumps(store.checkpoint_rows(keys), indent=1))
    return target


def _move_local_aside(flor_dir: Path, location: str, verified: dict) -> list[str]:
    """Move a checkpoint's damaged local files to ``.flor/doctor/`` (reads then go to the
    checkpoint store, whose copy is whole); the paths they were moved to."""
    folder = flor_dir / "doctor"
    moved = []
    candidates = [flor_dir / location]
    candidates += [flor_dir / "objects" / d for d, wrong in verified.items() if wrong and wrong[0] == DAMAGED]
    for path in candidates:
        if path.is_file():
            target = folder / f"{path.relative_to(flor_dir)}.{_stamp()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(str(target.relative_to(flor_dir)))
    return moved


def _remote_for_doctor(report: Report):
    """(the checkpoint store or None, why it cannot be reached or None)."""
    from .checkpoints.remote import remote_store
    from . import settings

    try:
        remote = remote_store()
    except FlorError as exc:
        report.add(f"the checkpoint store cannot be used ({exc})",
                   "install what it needs or fix FLOR_CHECKPOINT_STORE; nothing is unlisted until its copies can be checked")
        return None, str(exc)
    if remote is None:
        return None, None
    return remote, remote.check(settings.store_check_s())


def _check_checkpoints(report: Report, store: Store, flor_dir: Path, repair: bool, relist: bool) -> None:
    """Every listed checkpoint, in ``.flor/`` and (with FLOR_CHECKPOINT_STORE) in the store. A
    checkpoint is unlisted only where neither copy is whole and both could be checked."""
    remote, unreachable = _remote_for_doctor(report)
    if remote is None and unreachable is not None:
        remote = False  # configured but unusable: said above
    url = remote.url if remote else "FLOR_CHECKPOINT_STORE"
    verified: dict = {}
    far_verified: dict = {}
    unlist: list[tuple] = []
    only_remote = 0
    if remote and unreachable:
        report.add(f"the checkpoint store {url} does not answer ({unreachable}); checkpoints whose copy is only "
                   "there were not checked, and nothing is unlisted or uploaded",
                   "run `flor doctor` again when the store answers (endpoint, credentials)")
    for run_id, iteration, point, location, tstamp, pickled, sha, uploaded in store.all_checkpoints():
        key = (run_id, iteration, point)
        name = f"checkpoint .flor/{location} (run {tstamp or f'#{run_id}'}, iteration {iteration})"
        local = _local_state(flor_dir, location, verified, pickled, sha)
        if local is not None and local[0] == UNREADABLE:
            report.add(f"{name}: {local[1]}; this is not damage, and it stays listed",
                       "fix the file's permissions, then run `flor doctor` again; `--repair` leaves it alone")
            continue
        if remote is None:
            if local:
                unlist.append((report.add(f"{name}: {local[1]}", "run `flor doctor --repair` to unlist it (its files "
                                          "and its row are kept); replay then starts from an earlier checkpoint"), key))
            continue
        if remote is False or unreachable:
            continue  # said once above
        try:
            far = _remote_state(remote, location, far_verified, pickled, sha)
        except FlorError as exc:
            report.add(f"{name}: its copy in {url} cannot be checked ({exc}); not unlisted",
                       "run `flor doctor` again when the store answers")
            continue
        if local is None and far is None:
            if uploaded == 0 and repair:
                store.mark_uploaded(*key)  # a run that ended before the upload's mark was written
            continue
        if local is None:
            problem = report.add(f"{name}: {'it was not uploaded to ' + url if uploaded == 0 and far.startswith('its manifest is not there') else 'its copy in ' + url + ': ' + far}",
                                 "run `flor doctor --repair` to upload it from .flor/")
            if repair:
                stamp = _stamp()
                kept = [remote.keep_aside(location, stamp)] if not far.startswith("its manifest is not there") else []
                damaged = frozenset(d for d, wrong in far_verified.items() if wrong and "corrupt" in wrong)
                kept += [remote.keep_aside(f"objects/{d}", stamp) for d in sorted(damaged)]
                remote.upload_written(flor_dir, location, replace=damaged)
                for digest in damaged:
                    far_verified[digest] = None
                store.mark_uploaded(*key)
                problem.repaired = True
                kept = [k for k in kept if k]
                problem.note = "uploaded again from .flor/" + (f" (what it replaced is kept at {', '.join(kept)})" if kept else "")
            continue
        if far is None:
            if local[0] == MISSING:
                only_remote += 1  # local copies deleted to save space: the store's copy serves reads
                continue
            problem = report.add(f"{name}: {local[1]}; its copy in {url} is whole",
                                 "run `flor doctor --repair` to move the damaged local files aside (kept under "
                                 ".flor/doctor/); reads then use the copy in the store")
            if repair:
                moved = _move_local_aside(flor_dir, location, verified)
                problem.repaired = True
                problem.note = f"moved aside to .flor/{', .flor/'.join(moved)}" if moved else "nothing local to move"
            continue
        unlist.append((report.add(f"{name}: {local[1]}; its copy in {url}: {far}",
                                  "run `flor doctor --repair` to unlist it (its files and its row are kept); "
                                  "replay then starts from an earlier checkpoint"), key))
    if only_remote:
        report.notes.append(f"{only_remote} checkpoint(s) are only in {url} (no local copy): replay reads them from there")
    if repair and unlist:
        kept = _keep_rows(flor_dir, store, [key for _, key in unlist])
        store.unlist_checkpoints([key for _, key in unlist])
        for problem, _ in unlist:
            problem.repaired = True
            problem.note = f"unlisted; its files are kept, and its row in .flor/{kept.relative_to(flor_dir)}"
    if relist:
        _relist_manifests(report, store, flor_dir, verified)
    if remote and not unreachable:
        _relist_from_remote(report, store, flor_dir, remote, repair)


def _relist_manifests(report: Report, store: Store, flor_dir: Path, verified: dict) -> None:
    """After a recovery, list again the intact checkpoints of recovered runs that lost their row."""
    listed = {(r[0], r[1], r[2]) for r in store.all_checkpoints()}
    runs = {r.run_id for r in store.runs()}
    rows = []
    folder = flor_dir / "checkpoints"
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        location = str(path.relative_to(flor_dir))
        try:
            data = path.read_bytes()
            manifest = json.loads(data)
            key = (int(manifest["run_id"]), int(manifest["iteration"]), str(manifest["point"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if key in listed or key[0] not in runs or _verify_manifest(flor_dir, location, verified):
            continue
        size = int(manifest.get("bytes", 0))
        rows.append((*key, location, size, size, None, None, float(manifest.get("created", time.time())),
                     hashlib.sha256(data).hexdigest(), None))
    if rows:
        store.relist_checkpoints(rows)
        report.notes.append(f"listed again {len(rows)} intact checkpoint(s) found on disk")


def _kept_digests(flor_dir: Path) -> dict[tuple, str]:
    """(run_id, iteration, point) -> the manifest sha256 of rows an earlier repair unlisted."""
    kept: dict[tuple, str] = {}
    for path in sorted((flor_dir / "doctor").glob("unlisted-*.json")) if (flor_dir / "doctor").is_dir() else []:
        try:
            for row in json.loads(path.read_text()):
                if row.get("manifest_sha256"):
                    kept[(row["run_id"], row["iteration"], row["point"])] = row["manifest_sha256"]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return kept


def _relist_from_remote(report: Report, store: Store, flor_dir: Path, remote, repair: bool) -> None:
    """List again the whole checkpoints the checkpoint store holds for listed runs that lost
    their row (an earlier repair that unlisted checkpoints whose local copies were deleted)."""
    listed = {(r[0], r[1], r[2]) for r in store.all_checkpoints()}
    runs = {r.run_id for r in store.runs()}
    kept = _kept_digests(flor_dir)
    verified: dict = {}
    rows = []
    try:
        locations = remote.manifests()
        for location in locations:
            data = remote.fetch(location)
            if data is None:
                continue
            try:
                manifest = json.loads(data)
                key = (int(manifest["run_id"]), int(manifest["iteration"]), str(manifest["point"]))
            except (ValueError, KeyError, TypeError):
                continue
            sha = hashlib.sha256(data).hexdigest()
            if key in listed or key[0] not in runs or kept.get(key, sha) != sha:
                continue
            if location != ProjectPaths.of_flor_dir(flor_dir).location(ProjectPaths.of_flor_dir(flor_dir).manifest(*key)):
                continue  # a manifest under another checkpoint's name
            if _remote_state(remote, location, verified, None, sha):
                continue
            size = int(manifest.get("bytes", 0))
            rows.append((*key, location, size, size, None, None, float(manifest.get("created", time.time())), sha, 1))
    except FlorError as exc:
        report.add(f"the checkpoints in {remote.url} cannot be listed ({exc})", "run `flor doctor` again when the store answers")
        return
    if not rows:
        return
    problem = report.add(f"{len(rows)} whole checkpoint(s) in {remote.url} are not listed (e.g. {rows[0][3]})",
                         "run `flor doctor --repair` to list them again")
    if repair:
        store.relist_checkpoints(rows)
        problem.repaired = True
        problem.note = "listed again"


# -- code versions ------------------------------------------------------------------------------


def _git_dir(repo: Repo) -> Path | None:
    try:
        return repo.git_dir()
    except FlorError:
        return None


def _existing_commits(repo: Repo, commits: list[str]) -> set[str]:
    """The commits git holds; a failed git call raises (it says nothing about the commits)."""
    if not commits:
        return set()
    out = repo.git("cat-file", "--batch-check=%(objectname) %(objecttype)", input="\n".join(commits).encode() + b"\n")
    found = set()
    for line in out.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "commit":
            found.add(parts[0])
    return found


def _refs(repo: Repo) -> dict[str, str]:
    """flor's refs; a failed git call raises (it says nothing about the refs)."""
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)", REF_PREFIX)
    refs = {}
    for line in out.decode(errors="replace").splitlines():
        name, _, commit = line.partition(" ")
        refs[name] = commit
    return refs


def _check_code_versions(report: Report, store: Store, repair: bool) -> None:
    root = report.root
    if not (root / ".git").exists():
        return
    repo = Repo(root)
    git_dir = _git_dir(repo)
    if git_dir is None:
        report.add(f"git cannot read the repository at {root}", "run `git fsck` and fix the repository first")
        return
    every_run = store.runs()
    runs = [(r.run_id, r.tstamp, r.code_commit) for r in every_run if r.code_commit is not None]
    try:
        existing = _existing_commits(repo, sorted({r[2] for r in runs}))
        refs = _refs(repo)
    except FlorError as exc:
        # Not "missing": a failed call knows nothing about the commits or refs. Acting on it
        # would mark every run unversioned.
        report.add(f"git failed while reading the runs' code versions ({' '.join(str(exc).split())[:300]}); "
                   "nothing was checked or changed",
                   "fix git (run `git status` in the project to see the error), then run `flor doctor` again")
        return
    known = {ref_for(r.tstamp) for r in every_run}
    unknown = sorted(set(refs) - known)
    if unknown:
        report.notes.append(
            f"git holds the code versions of {len(unknown)} run(s) that the database does not list "
            f"(e.g. {unknown[0]}); if the database was replaced or emptied, look for "
            f".flor/flor.db.corrupt-* or a backup"
        )
    for run_id, tstamp, commit in runs:
        ref = ref_for(tstamp)
        loose = git_dir / ref
        if commit not in existing:
            problem = report.add(
                f"run {tstamp}: its code version {commit[:12]} is missing from git ({ref})",
                "restore the commit from a clone or backup (git fetch), or run `flor doctor --repair` "
                "to mark the run unversioned (the commit is kept in its note)",
            )
            if repair:
                store.update_run(run_id, code_commit=None, vcs_note=f"unversioned: code version {commit} missing (flor doctor)")
                problem.repaired = True
                problem.note = "marked unversioned; replay refuses it with a clear message"
            continue
        if refs.get(ref) == commit:
            continue
        if ref in refs:
            state = f"points to {refs[ref][:12]} instead of {commit[:12]}"
        elif loose.exists():
            state = "is corrupt"
        else:
            state = "is missing"
        problem = report.add(
            f"run {tstamp}: the ref {ref} ({_rel(loose, root)}) {state}",
            "run `flor doctor --repair` to write it again from the commit the database holds (a damaged ref is moved aside)",
        )
        if not repair:
            continue
        try:
            if loose.exists():
                aside_dir = git_dir / "flor-doctor"
                aside_dir.mkdir(exist_ok=True)
                aside = aside_dir / f"{loose.name}.{_stamp()}"
                os.replace(loose, aside)
                problem.note = f"old ref moved to {_rel(aside, root)}; "
            repo.git("update-ref", ref, commit)
        except (OSError, FlorError) as exc:
            problem.note = f"could not be rewritten: {exc}"
            continue
        problem.repaired = True
        problem.note += f"{ref} points to {commit[:12]} again"


# -- leftovers ----------------------------------------------------------------------------------


def _leftover_pid(name: str) -> int | None:
    tail = name.rsplit(".tmp-", 1)[-1]
    head = tail.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _check_temp_files(report: Report, flor_dir: Path, repair: bool) -> None:
    leftovers = []
    for folder in (flor_dir / "objects", flor_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.rglob(".*.tmp-*"):
            pid = _leftover_pid(path.name)
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                continue  # a live writer's file
            leftovers.append(path)
    if not leftovers:
        return
    size = sum(p.stat().st_size for p in leftovers if p.exists())
    problem = report.add(
        f"{len(leftovers)} temporary file(s) ({size / 1e6:.1f} MB) left by killed checkpoint writers under .flor",
        "run `flor doctor --repair` to remove them (no checkpoint refers to them)",
    )
    if repair:
        for path in leftovers:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CheckpointError(f"cannot remove {path}: {exc.strerror}") from exc
        problem.repaired = True
        problem.note = "removed"


# -- the whole check ----------------------------------------------------------------------------


def check(start: Path | None = None, repair: bool = False) -> Report:
    """Check the project that contains ``start`` (default: the working directory).

    With ``repair=True``, fix what can be rebuilt, moving damaged files aside, never overwriting.

    >>> report = check()                               # doctest: +SKIP
    >>> [p.line() for p in report.problems]            # doctest: +SKIP
    """
    root, _ = find_root(Path.cwd() if start is None else Path(start))
    report = Report(root)
    flor_dir = root / ".flor"
    db = flor_dir / "flor.db"
    if not db.exists():
        report.notes.append(f"no flor database at {_rel(db, root)}: nothing recorded yet")
        if flor_dir.is_dir():
            _check_temp_files(report, flor_dir, repair)
        return report
    usable = _check_database(report, db, repair)
    if usable:
        recovered = bool(report.moved_aside)
        store = Store.open(db, create=False)
        try:
            reaped = store.reap_killed()
            if reaped:
                report.notes.append(f"marked {reaped} run(s) killed: their process is gone")
            _check_checkpoints(report, store, flor_dir, repair, relist=recovered and repair)
            _check_code_versions(report, store, repair)
        finally:
            store.close()
    _check_temp_files(report, flor_dir, repair)
    return report

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
``flor.db.corrupt-<time>`` and its readable rows are copied into a fresh one; checkpoints with no
whole copy left are unlisted, their files and rows kept (``checkpoints/audit.py``: the bucket of
``FLOR_CHECKPOINT_STORE`` is checked first); a broken ref is moved aside before it is written
again from the commit the database holds; leftover temporary files of processes that are gone are
removed. What cannot be read (permissions, a read-only file, a failed git call) is named as what
it is, never as damage, and is never acted on.

It reads the store through :class:`~flor.store.Store` like every other module, except where the
database itself is in question: the integrity check and the recovery of a damaged file read it
with raw ``sqlite3`` (row by row, skipping what cannot be read), which no ``Store`` method could
do without first trusting the file.

>>> report = check(Path("."), repair=True)       # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, FlorError, StoreError
from .processes import pid_alive
from .checkpoints.audit import check_checkpoints
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
    space: list[str] = field(default_factory=list)  # what each run's checkpoints take on disk (not a problem)

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


def _space_per_run(store, flor_dir: Path) -> list[str]:
    """What each run's checkpoints take on disk (objects no other run shares, and manifests)."""
    from .checkpoints.gc import space

    rows = space(store, flor_dir)
    if not rows:
        return []
    total = sum(size for _, _, size in rows)
    lines = [f"checkpoints take {total / 1e6:.1f} MB in {len(rows)} run(s) (`flor gc --dry-run` says what thinning frees):"]
    lines += [f"  {tstamp}: {count} checkpoint(s), {size / 1e6:.1f} MB" for tstamp, count, size in rows]
    return lines


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
            check_checkpoints(report, store, flor_dir, repair, relist=recovered and repair)
            _check_code_versions(report, store, repair)
            report.space = _space_per_run(store, flor_dir)
        finally:
            store.close()
    _check_temp_files(report, flor_dir, repair)
    return report

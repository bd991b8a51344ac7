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

It reads the store through :class:`~flor.store.Store`, and a database that is itself in question
through ``store/salvage.py`` (raw, row by row, before anything trusts the file); git through
:class:`~flor.environment.vcs.Repo`.

>>> report = check(Path("."), repair=True)       # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, FlorError, StoreError
from .environment.paths import ProjectPaths
from .recording.job import job_notes, job_tstamp
from .environment.processes import pid_alive
from .checkpoints.audit import check_checkpoints
from .store import Store, salvage
from .environment.vcs import Repo, find_root, ref_for

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


# The stable keys of `flor doctor --json/--csv`: kind is problem, repaired or note.
ROW_COLUMNS = ("kind", "what", "fix", "note")


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

    def rows(self) -> list[tuple]:
        """``flor doctor --json/--csv``: one row of :data:`ROW_COLUMNS` per problem, then per note."""
        found = [("repaired" if p.repaired else "problem", p.what, p.fix, p.note or None) for p in self.problems]
        return found + [("note", note, None, None) for note in self.notes]

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
        wrong, _missing = salvage.state(db, read_only=True)
        state = f"; SQLite's check says it {wrong}" if wrong else "; it reads whole"
        report.add(f"the database {_rel(db, root)} {what}{state}; nothing was changed",
                   "make it writable (permissions, or the mount), then run `flor doctor` again; "
                   "`--repair` changes nothing while it is read-only")
        return False
    wrong, missing = salvage.state(db)
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
            counts = salvage.recover_database(aside, fresh_tmp)
            salvage.settle(fresh_tmp)
            os.replace(fresh_tmp, db)
        except (OSError, FlorError) as exc:
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
            salvage.create_missing_tables(db)
            problem.repaired = True
            problem.note = "missing tables added"
    return True


# -- checkpoints ------------------------------------------------------------------------------


# -- code versions ------------------------------------------------------------------------------


def _check_code_versions(report: Report, store: Store, repair: bool) -> None:
    root = report.root
    if not (root / ".git").exists():
        return
    repo = Repo(root)
    try:
        git_dir = repo.git_dir()
    except FlorError:
        git_dir = None
    if git_dir is None:
        report.add(f"git cannot read the repository at {root}", "run `git fsck` and fix the repository first")
        return
    every_run = store.runs()
    runs = [(r.run_id, r.tstamp, r.code_commit) for r in every_run if r.code_commit is not None]
    try:
        existing = repo.existing_commits(sorted({r[2] for r in runs}))
        refs = repo.flor_refs()
    except FlorError as exc:
        # Not "missing": a failed call knows nothing about the commits or refs. Acting on it
        # would mark every run unversioned.
        report.add(f"git failed while reading the runs' code versions ({' '.join(str(exc).split())[:300]}); "
                   "nothing was checked or changed",
                   "fix git (run `git status` in the project to see the error), then run `flor doctor` again")
        return
    known = {ref_for(job_tstamp(r.tstamp)) for r in every_run}  # a job's ranks share its snapshot
    unknown = sorted(set(refs) - known)
    if unknown:
        report.notes.append(
            f"git holds the code versions of {len(unknown)} run(s) that the database does not list "
            f"(e.g. {unknown[0]}); if the database was replaced or emptied, look for "
            f".flor/flor.db.corrupt-* or a backup"
        )
    for run_id, tstamp, commit in runs:
        ref = ref_for(job_tstamp(tstamp))
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
            aside = repo.rewrite_ref(ref, commit, aside_suffix=_stamp())
            if aside is not None:
                problem.note = f"old ref moved to {_rel(aside, root)}; "
        except FlorError as exc:
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
    paths = ProjectPaths.of_flor_dir(flor_dir)
    for folder in (paths.objects, paths.all_checkpoints):
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
    paths = ProjectPaths(root)
    flor_dir, db = paths.flor_dir, paths.db
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
            report.notes.extend(job_notes(store))  # distributed jobs that did not finish (flor/recording/job.py)
            check_checkpoints(report, store, flor_dir, repair, relist=recovered and repair)
            _check_code_versions(report, store, repair)
            report.space = _space_per_run(store, flor_dir)
        finally:
            store.close()
    _check_temp_files(report, flor_dir, repair)
    return report

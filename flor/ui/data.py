"""What the UI shows, read from the store without ever writing to it.

Every read goes through :class:`~flor.store.ReadPool`'s named reads (the store opens the database
read-only and holds the SQL), so neither a bug here nor a crafted request can change a recorded
value.

:class:`RunsTable` keeps one row per run (tstamp, filename, status, duration, commit, args and the
last value of every logged name) in memory and updates it incrementally: logs and args are
append-only, so each refresh reads only the rows after the last one it saw. Curves are in
``curves.py``.

>>> table = RunsTable(ReadPool(Path(".flor/flor.db")))           # doctest: +SKIP
>>> table.refresh(); table.rows()[0]["tstamp"]                      # doctest: +SKIP
'2026-11-26T15:04:07'
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import values
from ..errors import RunNotFoundError, StoreError, UsageError
from ..environment.processes import process_gone
from ..store import ReadPool, RunNote

BASE_COLUMNS = ("tstamp", "filename", "status", "duration", "commit")
# What people wrote about runs (flor ui --allow-edit): shown once any run has some.
NOTE_COLUMNS = ("run_name", "run_tags", "run_note", "archived")
NUMERIC = (values.INT, values.FLOAT, values.BOOL)
_SCAN_SLICE = 20_000  # rowids per query of the first pass over the logs
QUICK_PASS_ROWS = 100_000  # a pass over fewer log rows takes well under a first answer's wait


def _yield_cpu() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread is a task with its own nice
    value). The pass over the logs takes seconds of CPU on a large store; the requests of the
    page that opens meanwhile (first rows, the chart), and the browser drawing them on the same
    machine, should not wait behind it. Elsewhere, or when refused, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _plain(value: object) -> object:
    """A value as JSON can carry it: non-finite floats and containers become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


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
        return "killed" if process_gone(self.pid, self.host, self.heartbeat, now) else "running"


SOURCES = ("record", "replay", "extract")


@dataclass
class _Pair:
    """What the table knows of one (run, logged name)."""

    record_count: int = 0
    record_top: int = 0       # the rowid of the newest recorded row
    numeric_count: int = 0    # recorded rows with a number
    looped_count: int = 0     # recorded rows logged inside a loop (ctx_id not NULL)
    ctx_sum: int = 0          # sums of ctx_id and iteration over recorded rows: a fingerprint
    iteration_sum: int = 0    # that lets a chart skip reading them (see curves.py)
    replay_count: int = 0
    replay_top: int = 0
    extract_count: int = 0    # exact: an extraction replaces all of a run's values of the name
    extract_top: int = 0
    # source -> (order key, value) of its last value (store/lastvalue.py: the greatest key is the
    # last value, whatever the source; the key orders by loop position, not by storage).
    lasts: dict = field(default_factory=dict)
    numeric: bool = False

    def last(self) -> tuple[object, str | None]:
        """(the run's last value of the name, its source): the one with the greatest order key."""
        if not self.lasts:
            return None, None
        source = max(self.lasts, key=lambda s: self.lasts[s][0])
        return self.lasts[source][1], source


class RunsTable:
    """All runs as rows of plain values, refreshed incrementally from the store.

    The first refresh reads runs and args at once and starts reading the last logged values in
    a background thread (one pass over the logs); until it is done, :attr:`loading` is true and
    rows have no log columns yet. Later refreshes read only rows added since.

    >>> table = RunsTable(db)                                       # doctest: +SKIP
    >>> table.refresh(); table.columns()[:3]                        # doctest: +SKIP
    [('tstamp', 'run'), ('filename', 'run'), ('status', 'run')]
    """

    def __init__(self, db: ReadPool) -> None:
        self.db = db
        self.lock = threading.RLock()
        self.version = 0
        self.loading = True
        self.load_error: str | None = None
        self._data_version: int | None = None
        self._runs: dict[int, _Run] = {}
        self._args: dict[int, dict[str, object]] = {}
        self._arg_names: dict[str, None] = {}
        self._pairs: dict[int, dict[str, _Pair]] = {}
        self._log_names: dict[str, None] = {}
        self._numeric_names: dict[str, None] = {}
        self._log_cursor = 0
        self._arg_cursor = 0
        self._scan: threading.Thread | None = None
        self._scan_top = 0
        self._stopping = threading.Event()
        self._rows: list[dict] | None = None
        self._row_of: dict[int, dict] = {}
        self._dirty: set[int] = set()  # runs whose row must be rebuilt at the next rows()
        self._notes: dict[int, RunNote] = {}
        self._by_tstamp: dict[str, int] | None = None
        self._early: list[tuple[str, bool]] | None = None  # names of the first log rows (metric_names)

    def refresh(self) -> bool:
        """Read what changed since the last call; True when anything did."""
        with self.lock:
            current = self.db.data_version()
            if current == self._data_version and self.version:
                return False
            self._data_version = current
            names = (len(self._arg_names), len(self._log_names))
            dirty: set[int] = set()
            had_notes = bool(self._notes)
            self._read_runs(dirty)
            self._read_args(dirty)
            self._read_notes(dirty)
            if had_notes != bool(self._notes):
                self._rows = None  # the note columns appear (or go)
            if self._scan is None:
                self._start_scan()
            elif not self.loading:
                self._read_new_logs(dirty)
            if names != (len(self._arg_names), len(self._log_names)):
                self._rows = None  # a new column: rebuild every row
            self._dirty |= dirty
            self.version += 1
            return True

    def stop(self) -> None:
        """Stop the pass over the logs and wait for the slices being read to end: closing the
        connections under a running query crashes the interpreter (SQLite frees what the query
        still uses), which a server closed soon after it started did."""
        self._stopping.set()
        scan = self._scan
        if scan is not None:
            scan.join()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until the first pass over the logs is done; True when it is."""
        scan = self._scan
        if scan is not None:
            scan.join(timeout)
        return not self.loading

    def _read_runs(self, dirty: set[int]) -> None:
        runs = {row[0]: _Run(*row) for row in self.db.runs_summary()}
        if any(run_id not in runs for run_id in self._runs):
            # Runs were removed (a repair): forget them rather than show ghosts.
            for gone in [run_id for run_id in self._runs if run_id not in runs]:
                self._pairs.pop(gone, None)
                self._args.pop(gone, None)
            self._rows = None
        dirty.update(run_id for run_id, run in runs.items() if self._runs.get(run_id) != run)
        self._runs = runs
        self._by_tstamp = None

    def _read_args(self, dirty: set[int]) -> None:
        # Args are written with their run, and late ones (flor.arg after the first log) later.
        rows = self.db.args_after(self._arg_cursor)
        if not rows:
            return
        decode, args, names = values.decode, self._args, self._arg_names
        for run_id, name, value, vtype, _ in rows:
            run_args = args.get(run_id)
            if run_args is None:
                run_args = args[run_id] = {}
            run_args[name] = decode(value, vtype)
            if name not in names:
                names[name] = None
        dirty.update({row[0] for row in rows})
        self._arg_cursor = rows[-1][4]

    def _read_notes(self, dirty: set[int]) -> None:
        # A small table rewritten in place (not append-only): read whole, compare.
        notes = {note.run_id: note for note in map(RunNote.from_row, self.db.run_notes())}
        dirty.update(run_id for run_id in notes.keys() | self._notes.keys()
                     if notes.get(run_id) != self._notes.get(run_id))
        self._notes = notes

    def elapsed(self, run_id: int) -> float | None:
        """Seconds from the run's start to its end; None while it runs (or when unknown)."""
        with self.lock:
            run = self._runs.get(run_id)
        if run is None or run.ended is None:
            return None
        return run.ended - run.started

    def note(self, run_id: int) -> RunNote | None:
        """What people wrote about the run, if anything."""
        with self.lock:
            return self._notes.get(run_id)

    @property
    def quick_pass(self) -> bool:
        """Whether the pass over the logs is short (under ``QUICK_PASS_ROWS`` rows): worth a
        first answer's brief wait for the whole table rather than one without logged values."""
        return self._scan_top < QUICK_PASS_ROWS

    def _start_scan(self) -> None:
        top = self._scan_top = self.db.max_log_rowid()

        def scan() -> None:
            _yield_cpu()
            try:
                rows = self._scan_logs(top)
            except StoreError as exc:
                with self.lock:
                    self.load_error, self.loading = str(exc), False
                return
            with self.lock:
                for row in rows:
                    self._merge(*row)
                self._log_cursor = top
                self.loading = False
                self._rows = None
                self._data_version = None  # read what was written during the scan at the next refresh
                self.rows()  # build them here rather than in the next request
                self.version += 1

        self._scan = threading.Thread(target=scan, name="flor-ui-scan", daemon=True)
        self._scan.start()

    def _scan_logs(self, top: int) -> list[list]:
        """:meth:`~flor.store.ReadPool.last_values_between` over rowids up to ``top``, in slices:
        SQLite groups by sorting, and sorting many small slices is faster than one big one (about
        1.6x on 3M rows)."""
        from concurrent.futures import ThreadPoolExecutor

        merged: dict[tuple, list] = {}
        lows = range(0, top, _SCAN_SLICE)
        # SQLite lets go of the GIL while it works, so slices read on several connections at once.
        def read(low: int) -> list:
            if self._stopping.is_set():  # the server is closing: read no more slices
                raise StoreError("the pass over the logs was stopped")
            return self.db.last_values_between(low, min(low + _SCAN_SLICE, top))

        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), initializer=_yield_cpu) as pool:
            slices = list(pool.map(read, lows))
        for row in (row for rows in slices for row in rows):
            known = merged.get(row[:3])
            if known is None:
                merged[row[:3]] = [*row, row[5]]  # the last item: where the pair first showed up
                continue
            if row[11] > known[11]:  # the greater order key holds the last value
                known[3], known[4], known[11] = row[3], row[4], row[11]
            known[5] = max(known[5], row[5])
            for i in range(6, 11):
                known[i] = (known[i] or 0) + (row[i] or 0)
        # Columns in the order their names first showed up.
        return [row[:12] for row in sorted(merged.values(), key=lambda row: row[12])]

    def _read_new_logs(self, dirty: set[int]) -> None:
        top = self.db.max_log_rowid()
        if top <= self._log_cursor:
            return
        for row in self.db.last_values_between(self._log_cursor, top):
            self._merge(*row, fresh=True)
            dirty.add(row[0])
        self._log_cursor = top

    def _merge(self, run_id, name, source, value, vtype, top, count, numeric, looped, ctx_sum, iteration_sum, key,
               fresh: bool = False) -> None:
        pair = self._pairs.setdefault(run_id, {}).get(name)
        if pair is None:
            pair = self._pairs[run_id][name] = _Pair()
        if source == "record":
            pair.record_count += count
            pair.numeric_count += numeric or 0
            pair.looped_count += looped or 0
            pair.ctx_sum += ctx_sum or 0
            pair.iteration_sum += iteration_sum or 0
            pair.record_top = top
        elif source == "extract":
            # Extracting again deletes the earlier values in the same transaction: rows that
            # arrive after the first pass are all the run's values of the name.
            if fresh:
                pair.extract_count = 0
                pair.lasts.pop(source, None)
            pair.extract_count += count
            pair.extract_top = top
        else:
            # Replay replaces the values of each context it stores again, so this count may run
            # high (it only says that replayed values exist); the replacements have greater keys.
            pair.replay_count += count
            pair.replay_top = top
        known = pair.lasts.get(source)
        if known is None or key > known[0]:
            pair.lasts[source] = (key, values.decode(value, vtype))
        self._log_names.setdefault(name)
        if numeric:
            pair.numeric = True
            self._numeric_names.setdefault(name)

    # -- what other views ask ---------------------------------------------------------------

    def pair(self, run_id: int, name: str) -> _Pair | None:
        """What is known of ``name`` in run ``run_id``: counts, newest rowids; None if nothing."""
        with self.lock:
            if self.loading:
                return None
            pair = self._pairs.get(run_id, {}).get(name)
            return None if pair is None else _Pair(**{**vars(pair), "lasts": dict(pair.lasts)})

    def log_summary(self, run_id: int) -> list[dict] | None:
        """[{name, source, count, numeric}] of one run, or None while the first scan runs."""
        with self.lock:
            if self.loading:
                return None
            out = []
            pairs = sorted(self._pairs.get(run_id, {}).items(),
                           key=lambda item: item[1].record_top or item[1].replay_top or item[1].extract_top)
            for name, pair in pairs:
                counts = (pair.record_count, pair.replay_count, pair.extract_count)
                for source, count in zip(SOURCES, counts):
                    if count:
                        out.append({"name": name, "source": source, "count": count, "numeric": pair.numeric})
            return out

    # -- views ------------------------------------------------------------------------------

    def columns(self) -> list[tuple[str, str]]:
        """(column name, kind) in display order; kind is 'run', 'arg' or 'log'.

        Args come in the order they were declared, logged names in the order of their last
        value in the earliest run that has them (so ``loss`` of the step loop comes before
        ``accuracy`` logged after it). An arg or log that shares a name with an earlier column
        is shown as ``arg_NAME`` or ``log_NAME``, so every column can be named in a filter.
        """
        return [(shown, kind) for shown, kind, _ in self._column_map()]

    def _column_map(self) -> list[tuple[str, str, str]]:
        with self.lock:
            base = BASE_COLUMNS + (NOTE_COLUMNS if self._notes else ())
            out = [(name, "run", name) for name in base]
            taken = set(base)
            for kind, names in (("arg", self._arg_names), ("log", self._log_names)):
                for name in names:
                    shown = f"{kind}_{name}" if name in taken else name
                    out.append((shown, kind, name))
                    taken.add(shown)
            return out

    def metric_names(self) -> list[str]:
        """Logged names with at least one numeric value (the ones a chart can draw). While the
        pass over the logs runs, on a store indexed by run and name, the numeric names of the
        first log rows: enough for the page to open on a chart without waiting for the pass."""
        with self.lock:
            if not self.loading:
                return list(self._numeric_names)
        return [name for name, numeric in self._early_names() if numeric] if self.charts_ready else []

    @property
    def charts_ready(self) -> bool:
        """Whether curves and last values can be read now: once the pass is done, or before on a
        store whose logs are indexed by run and name (each read is then an index search; without
        the index, each would be a scan of every run's logs)."""
        return not self.loading or self.db.has_run_name_index()

    def _early_names(self) -> list[tuple[str, bool]]:
        if self._early is None:
            self._early = self.db.early_log_names()
        return self._early

    def lasts_of(self, run_ids: list[int], names: list[str] | None = None) -> dict[int, dict[str, tuple]]:
        """run_id -> name -> (last value as JSON carries it, source), read from the store for
        these runs only (lastvalue.py's one definition, the same the pass keeps)."""
        out: dict[int, dict[str, tuple]] = {}
        for run_id, name, value, vtype, source in self.db.last_values_of(run_ids, names):
            out.setdefault(run_id, {})[name] = (_plain(values.decode(value, vtype)), source)
        return out

    def page_while_loading(self, page: list[dict], names: list[str]) -> tuple[list[str], list[list], list[dict]]:
        """While the pass runs (and charts_ready): the log columns of the first log rows' names,
        and for the runs of ``page`` their values and sources, read for those runs only, so the
        first rows show values. Display only: filters and sorts still wait for the pass, which
        knows every run. Returns (extra column names, their values per row, sources per row)."""
        taken = set(names)
        extra = [(name if name not in taken else f"log_{name}", name) for name, _ in self._early_names()]
        lasts = self.lasts_of([row["_run_id"] for row in page], [name for _, name in extra])
        cells, sources = [], []
        for row in page:
            known = lasts.get(row["_run_id"], {})
            cells.append([known.get(name, (None, None))[0] for _, name in extra])
            sources.append({**row["_sources"], **{shown: known[name][1] for shown, name in extra
                                                  if name in known and known[name][1] != "record"}})
        return [shown for shown, _ in extra], cells, sources

    def rows(self) -> list[dict]:
        """One dict per run, oldest first: column name -> plain value, plus '_run_id',
        '_recorded_status' (the status in the store, before a dead process shows as killed) and
        '_sources' (log column -> 'replay' or 'extract' where the last value was not recorded)."""
        with self.lock:
            now = time.time()
            if self._rows is None:
                columns = self._column_map()
                self._row_of = {run_id: self._make_row(run, columns, now) for run_id, run in self._runs.items()}
                self._rows = sorted(self._row_of.values(), key=lambda row: row["tstamp"])
                self._dirty.clear()
            if self._dirty:
                columns = self._column_map()
                added = False
                for run_id in self._dirty:
                    run = self._runs.get(run_id)
                    if run is None:
                        continue
                    row = self._make_row(run, columns, now)
                    if run_id in self._row_of:
                        self._row_of[run_id].update(row)
                    else:
                        self._row_of[run_id] = row
                        self._rows.append(row)
                        added = True
                if added:
                    self._rows.sort(key=lambda row: row["tstamp"])
                self._dirty.clear()
            # Running runs change between refreshes too: their duration grows, and a run whose
            # process died shows as killed.
            for row in self._rows:
                if row["_recorded_status"] == "running":
                    row.update(self._timing(self._runs[row["_run_id"]], now))
            return self._rows

    def _timing(self, run: _Run, now: float) -> dict:
        status = run.effective_status(now)
        end = run.ended if run.ended is not None else (now if status == "running" else run.heartbeat)
        duration = None if end is None else round(max(end - run.started, 0.0), 3)
        return {"status": status, "duration": duration}

    def _make_row(self, run: _Run, columns: list[tuple[str, str, str]], now: float) -> dict:
        row = {
            "_run_id": run.run_id,
            "_recorded_status": run.status,
            "tstamp": run.tstamp,
            "filename": run.filename,
            **self._timing(run, now),
            "commit": run.commit[:10] if run.commit else None,
        }
        note = self._notes.get(run.run_id)
        if self._notes:
            row.update({"run_name": note.name if note else None, "run_tags": ", ".join(note.tags) if note else None,
                        "run_note": note.note if note else None, "archived": bool(note and note.archived)})
        row["_archived"] = bool(note and note.archived)
        args = self._args.get(run.run_id, {})
        pairs = self._pairs.get(run.run_id, {})
        sources = row["_sources"] = {}
        for shown, kind, name in columns:
            if kind == "arg":
                row[shown] = _plain(args.get(name))
            elif kind == "log":
                pair = pairs.get(name)
                value, source = (None, None) if pair is None else pair.last()
                row[shown] = _plain(value)
                if source not in (None, "record"):
                    sources[shown] = source
        return row

    def run_id(self, tstamp: str) -> int:
        """The id of the run with this tstamp (exact, or an unambiguous prefix)."""
        with self.lock:
            # By a dict rather than a scan: a chart of 100 runs of 10,000 asks 100 times.
            if self._by_tstamp is None or len(self._by_tstamp) != len(self._runs):
                self._by_tstamp = {r.tstamp: r.run_id for r in self._runs.values()}
            exact = self._by_tstamp.get(tstamp)
            matches = [exact] if exact is not None else []
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


def run_detail(db: ReadPool, table: RunsTable, run_id: int) -> dict:
    """Everything the run page shows except code: args, status, error, logs, checkpoints, drift,
    lineage (the runs it read from and the runs that read it).

    >>> run_detail(db, table, 1)["status"]                          # doctest: +SKIP
    'finished'
    """
    row = db.run_row(run_id)
    if row is None:
        raise RunNotFoundError(f"no run with id {run_id}")
    (run_id, tstamp, projid, filename, argv, cwd, commit, vcs_note, status, started, ended,
     heartbeat, pid, host, python, error, resumed_from) = row
    effective = _Run(run_id, tstamp, filename, status, started, ended, heartbeat, pid, host, commit)
    args = [
        {"name": name, "value": _plain(values.decode(value, vtype)), "type": vtype}
        for name, value, vtype in db.run_args(run_id)
    ]
    logs = table.log_summary(run_id)
    if logs is None:  # the table is still reading the store: ask it directly (one scan of the logs)
        logs = [
            {"name": name, "source": source, "count": count, "numeric": bool(numeric)}
            for name, source, count, numeric in db.run_log_counts(run_id)
        ]
    checkpoints = [
        {"iteration": it, "location": loc, "bytes": size, "bytes_written": written,
         "snapshot_s": snap, "write_s": write}
        for it, loc, size, written, snap, write in db.run_checkpoints(run_id)
    ]
    drift = [
        {"name": name, "count": count, "max_difference": _plain(worst)}
        for name, count, worst in db.run_drift(run_id)
    ]
    resumed = db.tstamp_of(resumed_from) if resumed_from else None
    read_from, read_by = db.run_lineage(run_id)
    lineage = {
        "read_from": [{"tstamp": t, "filename": f, "how": h} for t, f, h in read_from],
        "read_by": [{"tstamp": t, "filename": f, "how": h} for t, f, h in read_by],
    }
    try:
        argv = json.loads(argv)
    except (TypeError, ValueError):
        argv = [str(argv)]
    return {
        "tstamp": tstamp, "projid": projid, "filename": filename, "argv": argv, "cwd": cwd,
        "commit": commit, "vcs_note": vcs_note, "status": effective.effective_status(time.time()),
        "recorded_status": status, "started": started, "ended": ended, "host": host, "python": python,
        "error": error, "resumed_from": resumed,
        "args": args, "logs": logs, "checkpoints": checkpoints, "drift": drift, "lineage": lineage,
        "annotations": note_json(table.note(run_id)),
    }


def note_json(note: RunNote | None) -> dict:
    """A run's annotations as the page reads them (empty when it has none)."""
    if note is None:
        return {"name": None, "tags": [], "note": None, "archived": False}
    return {"name": note.name, "tags": list(note.tags), "note": note.note, "archived": note.archived}


def read_code(root: Path, commit: str | None, filename: str) -> str:
    """The text of ``filename`` at ``commit`` (``git show COMMIT:FILENAME`` in the project root);
    for a notebook, the cells the run executed (docs/notebooks.md).

    >>> read_code(Path("."), "3f2a9c1", "train.py")[:6]              # doctest: +SKIP
    'import'
    """
    from ..environment.vcs import Repo

    if not commit:
        raise UsageError("this run is unversioned (it ran outside git), so its code was not kept")
    from ..recording.notebook import script_of

    return Repo.find(root).read_file(commit, script_of(filename))


def diff_code(root: Path, old: str | None, new: str | None, filename: str) -> str:
    """``git diff OLD NEW -- FILE`` in the project root (a notebook: of the cells its runs executed).

    >>> diff_code(Path("."), "3f2a9c1", "8e01b7d", "train.py")      # doctest: +SKIP
    """
    from ..environment.vcs import Repo

    if not old or not new:
        raise UsageError("one of these runs is unversioned, so there is nothing to diff")
    from ..recording.notebook import script_of

    return Repo.find(root).diff(old, new, script_of(filename))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def table_csv(rows: list[dict], columns: list[str]) -> str:
    """The runs table as CSV: the chosen columns, then ``hindsight``, which names each last value
    that was replayed or extracted rather than recorded (``accuracy=replay;loss=extract``).

    Text that a spreadsheet would run as a formula (starting with =, +, -, @) is prefixed with a
    quote: a logged string must not become a formula in someone's spreadsheet.

    >>> print(table_csv([{"tstamp": "t1", "lr": 0.1, "note": "=1+1", "_sources": {"acc": "replay"}}],
    ...                 ["tstamp", "lr", "note"]), end="")
    tstamp,lr,note,hindsight
    t1,0.1,'=1+1,acc=replay
    """
    import csv
    import io

    def cell(value: object) -> object:
        value = _plain(value)
        if isinstance(value, str) and value.startswith(_FORMULA_START):
            return "'" + value
        return "" if value is None else value

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, "hindsight"])
    for row in rows:
        sources = row.get("_sources") or {}
        writer.writerow([*(cell(row.get(name)) for name in columns),
                         ";".join(f"{name}={source}" for name, source in sorted(sources.items()))])
    return out.getvalue()

"""Run: one recording session of a script (or notebook), from its first flor call to its end.

A run is created in memory at the first flor call, and *begins* — is validated, inserted into
the store, versioned in git, its random state captured — at the first call that marks training
(``flor.loop``, ``flor.log``) or at exit. ``flor.arg`` and entering ``flor.checkpointing`` do not
begin it, so that a bad ``--kwargs`` is refused before anything is recorded, even for args
declared in the outer loop's header.

The hot path (``flor.log`` inside loops) only appends a tuple to a deque; a background thread
flushes the deque to the store at least every second and at every outer-loop boundary.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from itertools import islice
from pathlib import Path

from ..environment import numerics, rng, settings
from .. import values
from .args import convert, describe_declared
from ..errors import ArgumentError, FlorError, StoreError, UsageError
from ..environment.imported import imported
from .loopcontext import LoopContext
from ..messages import say, warn
from ..environment.paths import ProjectPaths

# The store (sqlite3) and git helpers are imported when a run begins, so that `import flor`
# stays fast for scripts and for sessions that only query.

FLUSH_INTERVAL_S = 1.0
_NEVER = object()  # a sentinel no queue holds
SNAPSHOT_WAIT_S = 30.0
MAX_EXCLUDED_LISTED = 200  # entries of what the snapshot left out, kept with the run

# Every Run of this process, so that a forked child can drop them (see _drop_runs_in_child).
_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()


def _drop_runs_in_child() -> None:
    """In a child made by ``os.fork()``: the runs belong to the parent. The child must never
    flush them (its copy of the queues holds values the parent writes too), never end them (the
    run is the parent's), and never take their store lock (the fork may have copied it held by
    a thread that does not exist here). Values it logs go nowhere.

    Nor does the child keep the run's SIGTERM handler: a DataLoader's worker that its parent
    terminates (it does so to any worker that has not exited 5 s after the loop stopped, and
    multiprocessing does to daemonic workers at exit before joining them) must die as it would
    without flor, not raise SystemExit and run cleanup the DataLoader never expects there."""
    import signal

    runs = list(_runs)
    handler = signal.getsignal(signal.SIGTERM)
    if any(handler == getattr(run, "_on_sigterm", None) for run in runs):
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):  # not the main thread: Run._on_sigterm passes it on
            pass
    for run in runs:
        run.forked = True
        run.ended = True
        run.managers = []
        if getattr(run, "capture", None) is not None:
            run.capture.on = False  # what the child prints goes to the streams only
        run.capture = None
        run.store = None


def flush_forever(stop: threading.Event, wake: threading.Event, flush) -> None:
    """The body of a run's flush thread (a replay worker's too): ``flush()`` at least every
    FLUSH_INTERVAL_S, and as soon as ``wake`` is set, until ``stop`` is."""
    while not stop.is_set():
        wake.wait(FLUSH_INTERVAL_S)
        wake.clear()
        if stop.is_set():
            break
        flush()


def drop_in_forked_children(run) -> None:
    """Treat ``run`` (a replay worker's run too) as the parent's in a forked child: see
    ``_drop_runs_in_child``."""
    _runs.add(run)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_runs_in_child)


def script_identity() -> tuple[Path, str]:
    """(directory the run belongs to, filename) of the running script or notebook."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and not os.path.basename(path).startswith("<"):
        path = Path(path).resolve()
        return path.parent, path.name
    from .notebook import identify

    notebook = identify()  # a Jupyter kernel: the notebook it runs (notebook.py)
    if notebook is not None:
        return notebook.folder, notebook.filename
    session = os.environ.get("JPY_SESSION_NAME") or getattr(main, "__session__", None)
    if session:
        return Path.cwd(), Path(str(session)).name
    return Path.cwd(), "interactive"


class Run:
    """One recording session. The API module holds the current one."""

    def __init__(self, overrides: dict[str, str], argv: list[str]) -> None:
        self.overrides = overrides
        self.argv = argv
        self.args: dict[str, object] = {}
        self.defaults: dict[str, object] = {}
        self.begun = False
        self.ended = False
        self.run_id: int | None = None
        self.tstamp: str | None = None
        self.store = None  # flor.store.Store once the run has begun
        self.root: Path | None = None
        self.scope = None  # the checkpoint manager of the active flor.checkpointing, if any
        self.managers: list = []
        # Resuming a killed run: the checkpoint to start from, and the nested loop it replaces.
        self.resume: dict | None = settings.resume_checkpoint()
        self._skip_nested: str | None = None
        self._resume_pickled: list | None = None
        self._outer_frame = None
        self.t0 = time.perf_counter()
        # Appending to a deque is atomic, so the flush thread can drain while training appends.
        self._log_queue: deque = deque()
        self._special_queue: deque = deque()
        self.push_log = self._log_queue.append
        self.push_special = self._special_queue.append
        # Keyed loops (keyed.py): the enclosing items' (loop, key), and their rows for the store.
        self.key_stack: list = []
        self._item_queue: deque = deque()
        self.push_item = self._item_queue.append
        self.read_runs: dict[int, str] = {}  # runs whose values this run read (lineage) -> how
        self._lineage_written: set[int] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Where the script is among its loops (flor.log files values there); shared in kind
        # with a replay worker's run, by composition.
        self.loops = LoopContext(self._wake.set)
        self._flusher: threading.Thread | None = None
        self._snapshot_thread: threading.Thread | None = None
        self._run_fields: dict[str, object] = {}
        self.capture = None  # flor.recording.capture.Capture while the run keeps what it prints
        self._output_lines = 0  # captured lines written so far (the next block's first line)
        self.environment: dict = {}
        self.failure: str | None = None
        self.flor_error = False  # the uncaught error was flor's own (a misuse), not the script's
        # Which script this is, taken now: at exit __main__ may be half torn down.
        self.identity = script_identity()
        from .notebook import current_cell, is_notebook

        # A notebook's run: the cell of its first flor call (its code version is the cells run).
        self.first_cell = current_cell() if is_notebook(self.identity[1]) else None
        self.killed_by: str | None = None
        self._flush_error_reported = False
        self.forked = False  # a copy of the parent's run in a forked child: never written
        self.job = None  # flor.store.Membership when this process is a rank of a distributed job
        self.notebook = None  # notebook.Versioning: how a notebook's run is versioned, once it begins
        _runs.add(self)

    # -- args -------------------------------------------------------------------------------

    def arg(self, name: str, default: object = None) -> object:
        """The value of hyper-parameter ``name``: override, else default (see flor.arg)."""
        if type(name) is not str or not name:
            raise UsageError(f"flor.arg name must be a non-empty string, got {name!r}")
        if name in self.args:
            if self.defaults[name] != default:
                raise UsageError(
                    f"flor.arg({name!r}) declared twice with different defaults "
                    f"({self.defaults[name]!r} and {default!r}); use one default"
                )
            return self.args[name]
        if name in self.overrides:
            try:
                value = convert(self.overrides[name], default, name)
            except ArgumentError as exc:
                raise ArgumentError(f"{exc} (declared args: {describe_declared({**self.defaults, name: default})})") from None
        else:
            value = default
        if self.begun and self.store is not None:
            self._store_late_arg(name, value)
        self.defaults[name] = default
        self.args[name] = value
        return value

    def _store_late_arg(self, name: str, value: object) -> None:
        self.store.set_arg(self.run_id, name, *values.encode(value))

    def check_overrides(self, early: bool = False) -> None:
        """Refuse --kwargs names that the script never declared (before anything is recorded).

        ``early`` (when a whole config was declared, before the model is built): refuse only the
        names that the script's text does not even mention, which no later flor.arg can declare."""
        unknown = [name for name in self.overrides if name not in self.args]
        if early and unknown:
            text = _script_text(self.identity)
            unknown = [name for name in unknown if text is not None and name.rpartition(".")[2] not in text]
        if unknown and not early:
            late = _declared_later(self.identity, unknown)
            if late:
                raise ArgumentError(
                    f"--kwargs {', '.join(late)}: flor.arg({late[0]!r}) is declared after training began (inside "
                    "the loop?), where --kwargs can no longer be checked before anything is recorded; declare it "
                    "before the first flor.loop or flor.log"
                )
        if unknown:
            raise ArgumentError(
                f"--kwargs {', '.join(unknown)}: not declared with flor.arg "
                f"(declared args: {describe_declared(self.defaults)})"
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Validate, insert the run into the store, and start flushing and versioning."""
        if self.begun:
            return
        from datetime import datetime

        from ..store import Store
        from ..environment.vcs import find_root

        self.check_overrides()
        # Settings that shape the recording are read now: a typo stops the script before training.
        snapshot_max_bytes = settings.snapshot_max_bytes()
        if settings.checkpoint_store():  # a malformed store URL stops the run here, not in the writer
            self._check_checkpoint_store()
        resumed_from = settings.resumed_from()
        capture_max_bytes = settings.capture_max_bytes() if settings.capture() else None
        folder, filename = self.identity
        self.root, is_git = find_root(folder)
        try:
            rel_file = str((folder / filename).relative_to(self.root)) if filename != "interactive" else filename
        except ValueError:
            rel_file = filename
        try:
            cwd = str(Path.cwd().resolve().relative_to(self.root))
        except ValueError:
            cwd = str(Path.cwd().resolve())
        started = time.time()
        # Notes made before the run began (the framework that drives its loops) are kept.
        self.environment = {**self.environment, "numeric": numerics.capture(), "main_module": main_module()}
        self.store = Store.open(ProjectPaths(self.root).db)
        fields = dict(
            tstamp=datetime.fromtimestamp(started).strftime("%Y-%m-%dT%H:%M:%S"),
            projid=self.root.name,
            filename=rel_file,
            argv=[rel_file] if self.first_cell is not None else list(self.argv),
            cwd=cwd,
            started=started,
            args=[(name, *values.encode(value)) for name, value in self.args.items()],
            rng_state=rng.encode(rng.capture()),
            resumed_from=resumed_from,
            environment=self.environment,
        )
        # A rank of a distributed launch joins its job's run (flor/recording/job.py); anything else is a run.
        from .job import join

        self.job = join(self.store, fields)
        if self.job is not None:
            self.run_id, self.tstamp = self.job.run_id, self.job.tstamp
        else:
            self.run_id, self.tstamp = self.store.insert_run(**fields)
        self.begun = True
        self.t0 = time.perf_counter()
        if self.first_cell is not None:
            from .notebook import Versioning

            self.notebook = Versioning(self.first_cell, rel_file, lambda: self._snapshot(rel_file, snapshot_max_bytes))
            self.notebook.begin(is_git)  # versioned in this cell
        elif is_git:
            if self.job is None or self.job.snapshots:  # one snapshot per job: its other ranks name it
                self._snapshot_thread = threading.Thread(
                    target=self._snapshot, args=(rel_file, snapshot_max_bytes), name="flor-snapshot", daemon=True
                )
                self._snapshot_thread.start()
        if not is_git:
            warn("not inside a git repository: this run is recorded, but its code version is not kept")
            self._run_fields["vcs_note"] = "unversioned: not inside a git repository"
        if capture_max_bytes is not None:
            from .capture import Capture

            self.capture = Capture(self, capture_max_bytes)
            self.capture.start()
        self._flusher = threading.Thread(target=self._flush_forever, name="flor-flush", daemon=True)
        self._flusher.start()
        self._install_exit_hooks()

    @staticmethod
    def _check_checkpoint_store() -> None:
        """Endpoint and credentials of FLOR_CHECKPOINT_STORE, checked once before training, within
        FLOR_STORE_CHECK_S: a store that does not answer is said in one line, and this run's
        checkpoints stay in .flor/ (listed as local) instead of waiting on it."""
        from ..checkpoints.remote import remote_store

        timeout = settings.store_check_s()
        try:
            remote = remote_store()
        except FlorError as exc:  # fsspec or the protocol's package missing: checkpoints stay local
            warn(f"{exc}; this run's checkpoints stay in .flor/")
            return
        reason = remote.check(timeout)
        remote.unreachable = reason
        if reason is not None:
            warn(f"checkpoint store {remote.url} unreachable ({reason}): this run's checkpoints stay in .flor/, "
                 "listed as local; run `flor doctor --repair` to upload them later")

    def _snapshot(self, rel_file: str, max_bytes: int) -> None:
        from ..environment.vcs import FLORIGNORE, Repo

        tstamp = self.tstamp if self.job is None else self.job.job_tstamp
        try:
            snap = Repo(self.root).snapshot(tstamp, f"flor: run {tstamp} of {rel_file}", max_bytes,
                                            extra=self.notebook.cells() if self.notebook is not None else None)
        except FlorError as exc:
            warn(f"code version not kept for this run: {exc}")
            self._run_fields["vcs_note"] = f"unversioned: {exc}"
            if self.job is not None:
                from .job import share_snapshot

                share_snapshot(self, None, f"unversioned: {exc}")
            return
        if snap.excluded:
            # Listed with the run for flor show; folders are one entry each, so the list stays short.
            listed = snap.excluded[:MAX_EXCLUDED_LISTED]
            self.environment["excluded"] = [entry.as_json() for entry in listed]
            if len(snap.excluded) > len(listed):
                self.environment["excluded_more"] = len(snap.excluded) - len(listed)
            self._run_fields["environment"] = _json(self.environment)
            code = [entry for entry in snap.excluded if entry.scripts]
            if code:
                shown = ", ".join(f"{e.path} ({e.pattern})" for e in code[:5]) + (" ..." if len(code) > 5 else "")
                warn(f"Python files left out of the code version as other tools' output: {shown}; "
                     f"add `!PATTERN` to {FLORIGNORE} to keep them, or commit them")
        if snap.skipped:
            shown = ", ".join(snap.skipped[:5]) + (" ..." if len(snap.skipped) > 5 else "")
            warn(f"left out of the code version, over the size cap (FLOR_SNAPSHOT_MAX_BYTES): {shown}")
            self._run_fields["vcs_note"] = f"skipped {len(snap.skipped)} large file(s)"
            # Replay reads today's copy of these; it refuses when one changed (size or time).
            self.environment["left_out"] = _file_stamps(self.root, snap.skipped)
            self._run_fields["environment"] = _json(self.environment)
        self._run_fields.update(code_commit=snap.commit, git_head=snap.head, git_dirty=int(snap.dirty))
        if self.job is not None:
            from .job import share_snapshot

            share_snapshot(self, snap, self._run_fields.get("vcs_note"))
        self._wake.set()

    def _install_exit_hooks(self) -> None:
        import signal

        atexit.register(self._at_exit)
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                    signal.signal(signal.SIGTERM, self._on_sigterm)
            except (ValueError, OSError):
                pass

    def _on_sigterm(self, signum, frame) -> None:
        if self.forked:  # a forked child's, where the handler could not be reset: die as without flor
            import signal

            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.killed_by = "terminated by SIGTERM"
        # Unwind the script so that its finally blocks run and the exit hook records the run.
        raise SystemExit(128 + signum)

    def _at_exit(self) -> None:
        if not self.ended:
            self.end()

    def note_failure(self, exc: BaseException) -> None:
        """Remember the uncaught error that is ending the script."""
        self.flor_error = isinstance(exc, FlorError)
        if isinstance(exc, KeyboardInterrupt):
            self.killed_by = "interrupted (KeyboardInterrupt)"
            return
        self.failure = f"{type(exc).__name__}: {exc}".strip()

    def end(self) -> None:
        """Flush, wait for the code snapshot, and record the final status."""
        if self.ended:
            return
        self.ended = True
        if not self.begun:
            return
        if "threads" not in self.environment.get("numeric", {}) and imported("torch") is not None:
            # torch was imported after the run began: take its numeric environment now.
            self.environment["numeric"] = numerics.capture()
            self._run_fields["environment"] = _json(self.environment)
        self.before_end()
        if "checkpoints" in self.environment:  # the checkpoint policy's account (flor show)
            self._run_fields["environment"] = _json(self.environment)
        if self.capture is not None:
            self.capture.stop()  # the real streams back: what is printed from here on is flor's
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=60)
        if self._snapshot_thread is not None:
            self._snapshot_thread.join(timeout=SNAPSHOT_WAIT_S)
        if self.notebook is not None:
            self.notebook.end(SNAPSHOT_WAIT_S)
        if self.killed_by:
            status, error = "killed", self.killed_by
        elif self.failure:
            status, error = "failed", self.failure
        else:
            status, error = "finished", None
        self._run_fields.update(status=status, ended=time.time(), error=error)
        self.flush(final=True)
        if self.store is not None:
            self._say_kept(status)
            self.store.close()

    def _say_kept(self, status: str) -> None:
        """One line on stderr: what was kept of this run and how to look at it (FLOR_QUIET=1: none)."""
        try:
            quiet = settings.quiet()
        except UsageError as exc:
            warn(str(exc))  # the run is kept; only its closing line is in question
            return
        if quiet:
            return
        try:
            values = sum(count for _name, _source, count in self.store.log_names(self.run_id))
            checkpoints = len(self.store.checkpoints(self.run_id))
            code = self.store.run(self.run_id).code_commit
        except (FlorError, OSError):
            return
        kept = f"{values} value(s), {checkpoints} checkpoint(s)" + (f", code {str(code)[:10]}" if code else "")
        say(f"flor: {status} run {self.tstamp} kept ({kept}); see it with: flor show {self.tstamp}")

    def before_end(self) -> None:
        """Called once before the final flush: let checkpoint writers finish."""
        for manager in self.managers:
            manager.finish(self)

    def note_environment(self, key: str, value) -> None:
        """Keep ``value`` under ``key`` in the run's environment (stored now, or when it begins)."""
        self.environment[key] = value
        if self.begun:
            self._run_fields["environment"] = _json(self.environment)

    def checkpoint_manager(self, objects: dict):
        """What takes (record) or restores (replay) the checkpoints of a flor.checkpointing block."""
        from ..checkpoints.manager import RecordManager

        manager = RecordManager(self, objects)
        self.managers.append(manager)
        return manager

    # -- flushing -----------------------------------------------------------------------------

    def _flush_forever(self) -> None:
        flush_forever(self._stop, self._wake, self.flush)

    def _drain(self) -> tuple[list, ...]:
        def take(queue: deque) -> list:
            # Built in C (no bytecode per item), bounded to what is there now.
            return list(islice(iter(queue.popleft, _NEVER), len(queue)))

        # Loop instances first: a log drained below never refers to one drained later.
        instances, starts = self.loops.drain()
        return instances, starts, take(self._log_queue), take(self._special_queue)

    def flush(self, final: bool = False) -> None:
        """Write what was logged since the last flush; keep it in memory if the write fails."""
        if self.forked:
            return  # the parent's run (see _drop_runs_in_child)
        # The store's lock: the checkpoint writer's thread shares the connection.
        with self.store.lock:
            # Items first: an item marked done here has its values in this batch or an earlier one.
            items = list(islice(iter(self._item_queue.popleft, _NEVER), len(self._item_queue)))
            batch = self._drain()
            output = self.capture.drain(final) if self.capture is not None else []
            if final and self.capture is not None:
                self.environment["capture"] = self.capture.summary()  # for flor show
                self._run_fields["environment"] = _json(self.environment)
            fields = dict(self._run_fields)
            try:
                self.write(*batch, fields, output, items)
            except StoreError as exc:
                self._item_queue.extendleft(reversed(items))
                if output:
                    self.capture.give_back(output)
                if final:
                    count = len(batch[2]) + len(batch[3])
                    warn(f"{count} logged value(s) of run {self.tstamp} could not be written and are lost: {exc}")
                    return
                # Put everything back in front so that the next flush retries it in order.
                self.loops.give_back(batch[0], batch[1])
                for queue, items in zip((self._log_queue, self._special_queue), batch[2:]):
                    queue.extendleft(reversed(items))
                if not self._flush_error_reported:
                    self._flush_error_reported = True
                    warn(f"{exc}; logged values are kept in memory and retried")
                return
            for key in fields:
                if self._run_fields.get(key) == fields[key]:
                    self._run_fields.pop(key, None)
            try:
                self._write_lineage()  # its own transaction: a failure here must not re-send the batch
            except StoreError as exc:
                warn(f"which runs run {self.tstamp} read could not be written yet ({exc}); retried")

    def write(self, contexts: list, iterations: list, logs: list, special: list, fields: dict,
              output: list = (), items: list = ()) -> None:
        """Persist one batch (record mode)."""
        keyed = [row for kind, row in items if kind == "loop"]
        item_rows = [row for kind, row in items if kind == "item"]
        self.store.write_batch(
            self.run_id, contexts, logs, special=special, iterations=iterations,
            heartbeat=time.time(), run_fields=fields, output=output, output_first=self._output_lines,
            keyed=keyed, items=item_rows,
        )
        if output:
            from .capture import line_count

            self._output_lines += line_count(output)

    # -- lineage ------------------------------------------------------------------------------

    def note_read(self, run_ids, how: str) -> None:
        """This run read values of ``run_ids`` (through ``how``); stored with the next flush."""
        for run_id in run_ids:
            if run_id != self.run_id:
                self.read_runs.setdefault(int(run_id), how)
        if self.begun and not self.ended:
            self._wake.set()

    def _write_lineage(self) -> None:
        # A copy first: the script's thread may note a read while the flush thread writes.
        reads = list(self.read_runs.items())
        new = [(r, how) for r, how in reads if r not in self._lineage_written]
        if not new or self.store is None:
            return
        by_how: dict[str, list[int]] = {}
        for run_id, how in new:
            by_how.setdefault(how, []).append(run_id)
        for how, ids in by_how.items():
            self.store.add_lineage(self.run_id, ids, how)
        self._lineage_written.update(r for r, _how in new)

    # -- loops --------------------------------------------------------------------------------

    def items_done_before(self, loop_name: str, fingerprint: str) -> dict[str, int]:
        """Key path -> run, of the items that runs with this run's args finished in a loop of
        this name and body (what an incremental loop skips)."""
        wanted = {name: tuple(values.encode(value)) for name, value in self.args.items()}
        # A resumed run catches up to the killed run's checkpoint by position: the killed run's
        # own items are not "done before" for it (its earlier runs' items still are).
        resumed = settings.resumed_from()
        with self.store.lock:
            runs = [r for r in self.store.runs_with_args(wanted, exclude=self.run_id) if r != resumed]
            return self.store.done_items(loop_name, fingerprint, runs)

    def keyed_loop(self, name: str, iterable, key, incremental: bool, frame):
        """A keyed loop's bookkeeping and the items it yields (see keyed.py)."""
        from .fingerprint import loop_fingerprint
        from .keyed import KeyedLoop

        fingerprint = loop_fingerprint(frame, self.root) if incremental else None
        if incremental and fingerprint is None:
            from ..messages import warn

            warn(f"flor.loop({name!r}, incremental=True): its source cannot be read here, so every item runs")
        keyed = KeyedLoop(self, name, key, incremental, fingerprint)
        return keyed, keyed.items(iterable)

    def loop(self, name: str, iterable, keyed=None):
        """Generator behind flor.loop in record mode (a resumed run first catches up)."""
        depth = self.loops.depth
        if self.resume is not None and depth == 0 and self.scope is not None:
            resume, self.resume = self.resume, None
            return self._resumed_outer_loop(name, iterable, resume, keyed)
        if depth == 1 and self._skip_nested is not None:
            location, self._skip_nested = self._skip_nested, None
            return self._restored_nested_loop(location)
        return self.loops.loop(self, name, iterable, keyed)

    def _restored_nested_loop(self, location: str):
        from ..checkpoints.restore import restore_into

        # Runs at the first next(): the caller's frame is the user's for statement.
        restore_into(ProjectPaths(self.root).flor_dir, location, self.scope.objects, sys._getframe(1), self._outer_frame,
                     pickled=self._resume_pickled, sha256=(self.resume or {}).get("sha256"))
        return
        yield

    def _resumed_outer_loop(self, name: str, iterable, resume: dict, keyed=None):
        """Skip to the checkpoint a killed run left, restore it, and record from there on."""
        from ..checkpoints.restore import restore_into

        index, point, location = resume["iteration"], resume["point"], resume["location"]
        self._resume_pickled = resume.get("pickled")
        iterator = iter(iterable)
        skip = index + 1 if point == "end" else index
        fast_forward = getattr(iterable, "fast_forward", None)
        if fast_forward is not None:
            # A framework's driven loop: its trainer skips the epochs itself (its progress set to
            # the checkpoint's); drawing items here would end the loop.
            fast_forward(skip)
        else:
            for _ in range(skip):
                next(iterator, None)
        self._outer_frame = sys._getframe(1)
        if point == "end":
            restore_into(ProjectPaths(self.root).flor_dir, location, self.scope.objects, None, self._outer_frame,
                         pickled=self._resume_pickled, sha256=resume.get("sha256"))
        else:
            self._skip_nested = location
        offset = skip

        class _Offset:
            def __iter__(self_inner):
                return iterator

        yield from self.loops.loop(self, name, _Offset(), keyed, first=offset)


def _declared_later(identity: tuple[Path, str], names: list[str]) -> list[str]:
    """Those of ``names`` that the script's text declares with ``flor.arg("name", ...)`` (so a
    declaration that had not run yet when the run began: one inside the loop body)."""
    import re

    text = _script_text(identity)
    if text is None:
        return []
    return [name for name in names if re.search(r"\barg\(\s*(['\"])" + re.escape(name) + r"\1", text)]


def _script_text(identity: tuple[Path, str]) -> str | None:
    """The running script's source, or None (a notebook, an unreadable file)."""
    folder, filename = identity
    try:
        return (folder / filename).read_text()
    except (OSError, ValueError):
        return None


def _json(value) -> str:
    import json  # here: `import flor` does not pay for it

    return json.dumps(value)


def main_module() -> str | None:
    """The module name when the script runs as ``python -m NAME``, else None."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return name if name and name != "__main__" else None


def _file_stamps(root: Path, paths: list[str]) -> dict[str, list]:
    """(size, mtime in ns) of files, to tell later whether they changed."""
    stamps = {}
    for rel in paths:
        try:
            info = os.stat(root / rel)
        except OSError:
            continue
        stamps[rel] = [info.st_size, info.st_mtime_ns]
    return stamps

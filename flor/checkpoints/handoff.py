"""Handoff: the last checkpoint of a big state is written by a forked process that may outlive the run.

The last iteration is always checkpointed, and for a big model that checkpoint is the most
expensive thing flor does: copying 600 MB into host buffers took 0.6-0.8 s here, and hashing and
writing it another 1.6-2 s that the run's exit would wait for. After the last iteration nothing
needs the state to stay in the training process, so on Linux flor forks instead: the child sees
the state as it was at the fork (the kernel copies a page only if the parent later writes it),
writes the checkpoint with the same durable protocol as the writer thread, lists it in the store,
and exits. The parent goes on at once and does not wait for it.

While the child works, ``.flor/checkpoints/<run>/<iteration>-<point>.writing`` holds its pid.
Readers that need a run's checkpoints (replay, ``flor resume``, ``flor.load_checkpoint``) call
:func:`await_writers` first. A child that dies leaves its marker with a dead pid and no listed
checkpoint, the same as a SIGKILL of the writer thread; ``await_writers`` removes such markers.
A failure is written next to the marker as ``.failed`` (there is no terminal to print it on).

Used only where it is safe and pays: Linux (``os.fork``), state of at least
``FLOR_CKPT_HANDOFF_BYTES`` (default 64 MiB) in host memory; ``FLOR_CKPT_HANDOFF=0`` turns it off.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path

from ..environment import settings
from ..errors import CheckpointError
from ..environment.paths import ProjectPaths
from ..environment.processes import pid_alive
from .snapshot import pickled_objects
from .writer import Deltas, Encoding, Job, persist

MARKER, FAILED = ".writing", ".failed"


def min_bytes() -> int | None:
    """The smallest state handed off, or None when handoff is off or unavailable here."""
    if not settings.ckpt_handoff():
        return None
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return None
    return settings.ckpt_handoff_bytes()


def marker_path(root: Path, run_id: int, iteration: int, point: str) -> Path:
    """Where the pid of the process writing this checkpoint is kept while it writes."""
    manifest = ProjectPaths(root).manifest(run_id, iteration, point)
    return manifest.with_name(manifest.stem + MARKER)


def hand_off(root: Path, db_path: Path, job: Job, snapshot_s: float) -> int:
    """Fork a process that writes ``job`` and lists it in the store at ``db_path``; return its pid.

    The caller must hold every lock its own threads take around the store, so that no thread
    of the parent is inside SQLite when the process forks.
    """
    marker = marker_path(root, job.run_id, job.iteration, job.point)
    marker.parent.mkdir(parents=True, exist_ok=True)
    # The child imports nothing: a handed-off writer hung forever on zstandard's import lock,
    # which the writer thread held (importing it) when the run forked.
    import ctypes  # noqa: F401, PLC0415 - writer._syncfs's, on the child's first sync

    from .objects import import_codecs

    import_codecs()
    ready_r, ready_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()": see above
        pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            gc.disable()  # no finalizer of the parent's objects (a database connection) may run here
            os.close(ready_r)
            _child(root, db_path, job, snapshot_s, marker, ready_w)
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # the marker exists once the child says so (or it died trying)
    finally:
        os.close(ready_r)
    return pid


def _child(root: Path, db_path: Path, job: Job, snapshot_s: float, marker: Path, ready_w: int) -> None:
    failure = "the writer stopped"
    try:
        os.setsid()  # not in the terminal's process group: Ctrl-C after the run does not stop it
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the parent's pipes close when the parent exits
            os.dup2(devnull, fd)
        try:
            os.nice(10)
        except OSError:
            pass
        marker.write_text(str(os.getpid()))
        os.write(ready_w, b"1")
        os.close(ready_w)
        compress = settings.ckpt_compress()
        hold = settings.handoff_hold()  # for tests: write once this file exists
        if hold:
            deadline = time.monotonic() + 120
            while not os.path.exists(hold) and time.monotonic() < deadline:
                time.sleep(0.02)
        started = time.perf_counter()
        # A forked writer has no previous checkpoint in memory: compressed, never a delta.
        location, written, sha = persist(root, job, set(), None, Deltas(Encoding(compress, 1)))
        # SQLite must not be used in a forked copy of a process that has the database open (its
        # locks are per process): a fresh interpreter, with this pid, lists the checkpoint.
        package_parent = str(Path(__file__).resolve().parents[2])
        row = [str(db_path), str(marker), str(job.run_id), str(job.iteration), job.point, location,
               str(job.snapshot.nbytes), str(written), repr(snapshot_s), repr(time.perf_counter() - started),
               json.dumps(pickled_objects(job.snapshot.skeleton)), sha]
        os.execv(sys.executable, [sys.executable, "-c", _REGISTER.format(package_parent=package_parent), *row])
    except BaseException as exc:  # noqa: BLE001 - the child reports every failure in a file
        failure = f"{type(exc).__name__}: {exc}"
    _fail(marker, failure)


_REGISTER = """import sys
sys.path.insert(0, {package_parent!r})
from flor.checkpoints.handoff import register
register(sys.argv[1:])
"""


def register(argv: list[str]) -> None:
    """The end of a handed-off write (a fresh interpreter): list the checkpoint (as local), drop
    the marker, then upload it to the checkpoint store, if one is configured, and mark it uploaded
    (readers do not wait for the upload: the local copy is whole)."""
    db_path, marker, run_id, iteration, point, location, nbytes, written, snapshot_s, write_s, pickled, sha = argv
    marker = Path(marker)
    key = (int(run_id), int(iteration), point)
    try:
        from ..store import Store
        from .remote import remote_store

        remote = remote_store()
        store = Store.open(Path(db_path), create=False)
        try:
            store.add_checkpoint(*key, location, int(nbytes), int(written), float(snapshot_s), float(write_s),
                                 json.loads(pickled), sha256=sha, uploaded=None if remote is None else 0)
        finally:
            store.close()
    except BaseException as exc:  # noqa: BLE001
        _fail(marker, f"written but not listed: {type(exc).__name__}: {exc}")
    try:
        marker.unlink()
    except OSError:
        pass
    if remote is None:
        return
    try:
        if remote.check(settings.store_check_s()) is None:
            remote.upload_written(Path(db_path).parent, location)
            store = Store.open(Path(db_path), create=False)
            try:
                store.mark_uploaded(*key)
            finally:
                store.close()
    except BaseException:  # noqa: BLE001 - it stays local, listed so; `flor doctor --repair` uploads it
        pass


def _fail(marker: Path, message: str) -> None:
    try:
        marker.with_name(marker.name.replace(MARKER, FAILED)).write_text(message + "\n")
    except OSError:
        pass
    try:
        marker.unlink()
    except OSError:
        pass
    os._exit(1)


def pending(flor_dir: Path, run_id: int) -> list[tuple[Path, int]]:
    """Markers of checkpoints of ``run_id`` being written, with their writers' pids."""
    found = []
    for marker in sorted(ProjectPaths.of_flor_dir(flor_dir).run_checkpoints(run_id).glob(f"*{MARKER}")):
        try:
            pid = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and pid_alive(pid):
            found.append((marker, pid))
        else:
            try:
                marker.unlink()  # its writer died: that checkpoint was never listed
            except OSError:
                pass
    return found


def await_writers(flor_dir: Path, run_id: int, timeout: float = 600.0, say=None) -> None:
    """Wait until no process is still writing a checkpoint of ``run_id``."""
    waiting = pending(flor_dir, run_id)
    if not waiting:
        return
    if say is not None:
        say(f"waiting for the last checkpoint of run {run_id} to be written (pid {waiting[0][1]})")
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise CheckpointError(
                f"a checkpoint of run {run_id} is still being written by pid {waiting[0][1]} after {timeout:.0f}s; "
                "try again when it is done"
            )
        time.sleep(0.05)
        waiting = pending(flor_dir, run_id)


def failures(flor_dir: Path, run_id: int) -> list[str]:
    """What handed-off writers of ``run_id`` reported when they failed."""
    messages = []
    for path in sorted(ProjectPaths.of_flor_dir(flor_dir).run_checkpoints(run_id).glob(f"*{FAILED}")):
        try:
            messages.append(f"{path.name.removesuffix(FAILED)}: {path.read_text().strip()}")
        except OSError:
            continue
    return messages

"""Writer: the background phase — hash, deduplicate and durably write snapshots.

Arrays are stored once by content (sha256) under ``.flor/objects/``; a checkpoint is a small JSON
manifest under ``.flor/checkpoints/<run_id>/`` naming them. Every file is written to a temporary
name and renamed; a checkpoint's new objects are made durable together (one ``syncfs`` of their
file system on Linux, a fsync each elsewhere), the manifest is written and fsynced only after
them, and the store lists a checkpoint only after its manifest is durable. A SIGKILL at any moment leaves the previous
set of checkpoints or the new one, never a half-written one.

The heavy calls (hashing, writing) release the interpreter lock, so the training loop keeps
running while a checkpoint is written. At most ``MAX_IN_FLIGHT`` snapshots wait for the writer;
when it falls behind, the caller skips a checkpoint instead of stalling training.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..environment.paths import ProjectPaths
from .objects import Encoder, itemsize_of
from .snapshot import Snapshot

MAX_IN_FLIGHT = 2
FORMAT = 1
DELTA_MAX_BYTES = 1 << 30  # a larger state keeps no copy of the previous checkpoint: no deltas


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Flush the whole file system that holds ``path`` in one call (Linux ``syncfs``); False where
    the call is not there, and the caller syncs file by file."""
    global _SYNCFS
    if _SYNCFS is None:
        try:
            import ctypes

            _SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _SYNCFS = False
    if not _SYNCFS:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _SYNCFS(fd) == 0
    finally:
        os.close(fd)


_SYNCFS = None


# Direct I/O: objects are written past the page cache. A buffered write of a 15 MB checkpoint cost
# the writer 45-60 ms of CPU here (page allocation and copying into the cache, on a machine whose
# two cores the training loop already uses); from an aligned staging buffer with O_DIRECT the same
# write costs about 6 ms, and the one ``syncfs`` after it has little left to flush.
_ALIGN = 4096
_CHUNK = 4 << 20
_DIRECT_MIN = 64 << 10  # smaller objects: the staging copy and padding cost more than they save
_direct = threading.local()
_DIRECT_REFUSED: set[int] = set()  # devices whose file system refused O_DIRECT (tmpfs, some FUSE)


def _write_direct(tmp: Path, data) -> bool:
    """Write ``data`` to ``tmp`` with O_DIRECT through an aligned buffer; False (nothing left
    behind) where the file system does not take direct I/O, and the caller writes it buffered."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        device = os.stat(tmp.parent).st_dev
    except OSError:
        return False
    if device in _DIRECT_REFUSED:
        return False
    stage = getattr(_direct, "stage", None)
    if stage is None:
        stage = _direct.stage = mmap.mmap(-1, _CHUNK)  # anonymous maps are page aligned
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
    except OSError:
        _DIRECT_REFUSED.add(device)
        return False
    try:
        total = len(view)
        for start in range(0, total, _CHUNK):
            part = view[start : start + _CHUNK]
            size = len(part)
            stage[:size] = part
            padded = -(-size // _ALIGN) * _ALIGN
            if padded > size:
                stage[size:padded] = bytes(padded - size)
            done = 0
            while done < padded:
                done += os.write(fd, memoryview(stage)[done:padded])
        os.ftruncate(fd, total)
    except OSError:
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        _DIRECT_REFUSED.add(device)
        return False
    os.close(fd)
    return True


def write_durably(path: Path, data, sync: bool = True, direct: bool = False) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` through a temporary name, fsync and rename;
    with ``sync=False`` the caller makes it durable (see :func:`persist`); ``direct`` writes past the
    page cache where the file system allows it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        if not (direct and _write_direct(tmp, data)):
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
        elif sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


@dataclass
class Encoding:
    """How the writer stores arrays: compressed (``compress``), and as deltas (objects.py) against the
    previous checkpoint of the run with a standalone copy every ``full_every`` checkpoints
    (1: never a delta), so a restore decodes at most ``full_every - 1`` deltas."""

    compress: bool = True
    full_every: int = 4


@dataclass
class Previous:
    """An array of the run's previous checkpoint: what the next one's delta is taken against."""

    digest: str
    raw: object  # numpy uint8 copy of its bytes
    depth: int  # deltas between it and a standalone object (0: it stands alone)


class Deltas:
    """What one writer remembers to write deltas: per run, the arrays of its last checkpoint by
    position, and how deep in a chain each object it wrote is."""

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self.encoder = Encoder() if encoding.compress else None
        self.previous: dict[int, dict[int, Previous]] = {}
        self.depth: dict[str, int] = {}


@dataclass
class Job:
    """One checkpoint to write."""

    run_id: int
    tstamp: str
    iteration: int
    point: str
    snapshot: Snapshot
    extra: dict


@dataclass
class Written:
    """What the writer did with a job."""

    job: Job
    location: str
    nbytes: int
    written: int
    seconds: float
    cpu_seconds: float
    share: float | None = None  # CPU time over wall time while hashing and writing (not syncing)
    sha256: str | None = None  # of the manifest's bytes, kept in the store (a swapped manifest is refused)
    # What the run now keeps that it did not: ``written`` and the stored size of objects another
    # run wrote (dedup): the disk budget's charge, so that a second identical run spends its budget
    # on the same checkpoints as the first (and shares them) instead of on others.
    kept: int | None = None


class Writer:
    """A background thread that persists checkpoint jobs in order."""

    def __init__(self, root: Path, on_written, on_failed, recycle, encoding: Encoding | None = None) -> None:
        self.root = Path(root)
        self.encoding = encoding or Encoding()
        self._deltas: Deltas | None = None  # made in the writer's thread (its compressor is its own)
        self.on_written = on_written
        self.on_failed = on_failed
        self.recycle = recycle
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_IN_FLIGHT)
        self._known: set[str] = set()
        # When the writer was busy (perf_counter intervals), so the policy can tell the iterations
        # it overlapped from those it did not.
        self._busy: list[list[float | None]] = []
        self._thread = threading.Thread(target=self._work, name="flor-checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; False (and nothing queued) when the writer is behind."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            return False

    def pending(self) -> int:
        """Jobs queued or being written."""
        return self._queue.unfinished_tasks

    def busy_within(self, start: float, end: float) -> float:
        """Seconds the writer was busy between ``start`` and ``end`` (perf_counter times)."""
        total = 0.0
        for began, ended in list(self._busy):
            total += max(0.0, min(end, ended if ended is not None else end) - max(start, began))
        return total

    def wait_below(self, count: int, timeout: float) -> bool:
        """Wait until fewer than ``count`` jobs are queued or being written; True when so."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks >= count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Wait for queued jobs to be written; True when all were."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _work(self) -> None:
        # On Linux a thread has its own scheduling priority: let training win the CPU.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            job = self._queue.get()
            interval: list[float | None] = [time.perf_counter(), None]
            self._busy = (self._busy + [interval])[-16:]
            try:
                started, cpu_started = time.perf_counter(), time.thread_time()
                timing: dict = {}
                if self._deltas is None:
                    self._deltas = Deltas(self.encoding)
                location, written, sha = persist(self.root, job, self._known, timing, self._deltas)
                seconds = time.perf_counter() - started
                cpu = time.thread_time() - cpu_started
                share = timing["cpu"] / timing["wall"] if timing.get("wall", 0) > 1e-3 else None
                self.on_written(Written(job, location, job.snapshot.nbytes, written, seconds, cpu, share, sha,
                                        written + timing.get("reused", 0)))
            except Exception as exc:  # disk full, permissions: tell the run, keep training
                self.on_failed(job, exc)
            finally:
                interval[1] = time.perf_counter()
                self.recycle(job.snapshot.buffers)
                self._queue.task_done()


def persist(root: Path, job: Job, known: set[str], timing: dict | None = None,
            deltas: Deltas | None = None) -> tuple[str, int, str]:
    """Write ``job`` durably: its arrays by content, then its manifest. Returns the manifest's
    location (relative to ``.flor``), the bytes written and the manifest's sha256 (the store keeps
    it); ``known`` holds digests already stored. Uploading to a checkpoint store is not done here
    (``upload.py``): a slow store must never hold the writer.
    ``timing`` gets the thread's CPU and wall seconds of hashing and writing (the policy tells
    from them how much CPU the writer got: disk waits are left out), and the stored bytes of
    objects it found already there and not yet known to this writer (``reused``: another run's). ``deltas``: how arrays are
    encoded (objects.py) and what the run's previous checkpoint held; None writes raw bytes."""
    wall, cpu = time.perf_counter(), time.thread_time()
    paths = ProjectPaths(root)
    objects = paths.objects
    objects.mkdir(parents=True, exist_ok=True)
    blobs, written, new, reused = [], 0, [], [0]
    encoder = deltas.encoder if deltas is not None else None
    previous = _previous_of(deltas, job)
    for index, buffer in enumerate(job.snapshot.buffers):
        view = memoryview(buffer.array).cast("B") if buffer.array.flags.c_contiguous else buffer.array.tobytes()
        digest = hashlib.sha256(view).hexdigest()
        blobs.append(digest)
        before = previous.get(index) if previous is not None else None
        depth = _store(objects, digest, view, itemsize_of(buffer.dtype), known, encoder, before, deltas, new, reused)
        if depth is not None:
            written += depth[1]
        if previous is not None:
            _remember(previous, index, digest, view, deltas, before)
    if timing is not None:
        timing["wall"], timing["cpu"] = time.perf_counter() - wall, time.thread_time() - cpu
        timing["reused"] = reused[0]
    if new and not _syncfs(objects):
        for target in new:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(objects)
    manifest = {
        "format": FORMAT,
        "run_id": job.run_id,
        "tstamp": job.tstamp,
        "iteration": job.iteration,
        "point": job.point,
        "created": time.time(),
        "bytes": job.snapshot.nbytes,
        "blobs": blobs,
        **job.snapshot.skeleton,
        **job.extra,
    }
    path = paths.manifest(job.run_id, job.iteration, job.point)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, separators=(",", ":")).encode()
    write_durably(path, text)
    _fsync_dir(path.parent)
    location = paths.location(path)
    return location, written + len(text), hashlib.sha256(text).hexdigest()


def _previous_of(deltas: Deltas | None, job: Job) -> dict | None:
    """The run's previous arrays by position, where deltas are written (else None)."""
    if deltas is None or deltas.encoder is None or deltas.encoding.full_every <= 1:
        return None
    if job.snapshot.nbytes > DELTA_MAX_BYTES:
        deltas.previous.pop(job.run_id, None)
        return None
    return deltas.previous.setdefault(job.run_id, {})


def _store(objects: Path, digest: str, view, itemsize: int, known: set[str], encoder, before: Previous | None,
           deltas: Deltas | None, new: list, reused: list | None = None) -> tuple[int, int] | None:
    """Store one array unless it is there; (its chain depth, bytes written), or None when it was
    there already (``reused[0]`` then grows by its stored size, the first time this writer sees it)."""
    from .objects import stored

    if digest in known:
        return None
    there = stored(objects, digest)
    if there is not None:
        known.add(digest)
        if reused is not None:
            try:
                reused[0] += there.stat().st_size
            except OSError:
                pass
        return None
    # No fsync per object: a checkpoint holds hundreds of tensors, and a fsync each cost the
    # writer about 3 ms of CPU and 5 ms of wall time apiece. One flush of the file system after
    # them makes them all durable before the manifest that names them is written.
    depth = 0
    if encoder is None:
        data, target = view, objects / digest
    else:
        limit = deltas.encoding.full_every - 1
        chain = before is not None and before.digest != digest and before.depth < limit
        encoded = encoder.encode(view, itemsize, before.raw if chain else None, before.digest if chain else None)
        data, target = encoded.data, objects / f"{digest}{encoded.suffix}"
        depth = before.depth + 1 if encoded.base else 0
        deltas.depth[digest] = depth
    write_durably(target, data, sync=False, direct=len(data) >= _DIRECT_MIN)
    new.append(target)
    known.add(digest)
    return depth, len(data)


def _remember(previous: dict, index: int, digest: str, view, deltas: Deltas, before: Previous | None) -> None:
    """Keep array ``index`` of this checkpoint for the next one's delta (its memory reused)."""
    import numpy

    if before is not None and before.digest == digest:
        return
    # An object this writer did not write (there already) has a depth it does not know: the
    # next one at this position stands alone.
    depth = deltas.depth.get(digest, deltas.encoding.full_every)
    source = numpy.frombuffer(view, dtype=numpy.uint8)
    if before is not None and before.raw.nbytes == source.nbytes:
        numpy.copyto(before.raw, source)
        before.digest, before.depth = digest, depth
    else:
        previous[index] = Previous(digest, source.copy(), depth)

"""Uploader: copies checkpoints whose local copy is written to ``FLOR_CHECKPOINT_STORE``, in a
thread of its own, so a slow or absent store never slows training or loses a checkpoint.

A checkpoint is listed in the store (as local, ``uploaded = 0``) as soon as its local copy is
durable; the uploader then sends it (``remote.RemoteStore.upload_written``) and marks it
uploaded. At most ``MAX_QUEUED`` checkpoints wait: past that a checkpoint stays local, with one
warning, rather than holding memory or the training thread. A run waits for uploads in flight at
its end for ``FLOR_UPLOAD_WAIT_S`` seconds (5), then names what remains in one line and exits;
``flor doctor --repair`` uploads it later. The uploader reads from ``.flor/``, never from the
snapshot's buffers, so nothing of the training process is held while a store is slow.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

MAX_QUEUED = 64


class Uploader:
    """A background thread that uploads written checkpoints in order."""

    def __init__(self, flor_dir: Path, remote, on_uploaded, on_failed) -> None:
        self.flor_dir = Path(flor_dir)
        self.remote = remote
        self.on_uploaded = on_uploaded  # (key) -> None, key = (run_id, iteration, point)
        self.on_failed = on_failed  # (key, exception) -> None
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._lock = threading.Lock()
        self._waiting: list[tuple] = []  # keys queued or being uploaded, in order
        self._thread = threading.Thread(target=self._work, name="flor-checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, key: tuple, location: str) -> bool:
        """Queue one checkpoint; False (nothing queued) when ``MAX_QUEUED`` already wait."""
        with self._lock:
            try:
                self._queue.put_nowait((key, location))
            except queue.Full:
                return False
            self._waiting.append(key)
            return True

    def remaining(self) -> list[tuple]:
        """Keys of the checkpoints not uploaded yet (queued or in flight)."""
        with self._lock:
            return list(self._waiting)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued upload; True when none remains."""
        deadline = time.monotonic() + timeout
        while self.remaining():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _work(self) -> None:
        while True:
            key, location = self._queue.get()
            try:
                try:
                    self.remote.upload_written(self.flor_dir, location)
                except Exception as exc:  # noqa: BLE001 - a store that fails: the checkpoint stays local
                    self.on_failed(key, exc)
                else:
                    self.on_uploaded(key)
            except Exception:  # noqa: BLE001 - a callback that fails must not stop the uploads after it
                pass
            finally:
                self._done(key)  # after the callbacks: a run that waits sees the mark written

    def _done(self, key: tuple) -> None:
        with self._lock:
            if key in self._waiting:
                self._waiting.remove(key)

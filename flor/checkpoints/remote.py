"""Checkpoints in object storage: ``FLOR_CHECKPOINT_STORE=s3://bucket/prefix`` (any fsspec URL).

The local ``.flor/`` stays where checkpoints are written first; with a store configured, the
background writer then uploads the checkpoint's new arrays (by content: an array the store holds
already is not sent again) and, last, its manifest, under the same layout as ``.flor/``
(``objects/<sha256>``, ``checkpoints/<run_id>/<iteration>-<point>.json``). A checkpoint is listed
in the store only once both are there, so a node that reads from the URL never sees a manifest
without its arrays. Reading, a file missing locally (a replay worker on another node) is read
from the URL, and every array is checked against its hash as a local one is.

One prefix per project: run ids are the project's own. fsspec and the protocol's package (s3fs
for ``s3://``) are imported only when a store is configured; credentials and endpoints come from
the usual variables (``AWS_*``, ``FSSPEC_S3_ENDPOINT_URL``).

>>> store = remote_store()          # None unless FLOR_CHECKPOINT_STORE is set   # doctest: +SKIP
"""

from __future__ import annotations

import threading

from .. import settings
from ..errors import CheckpointError

_stores: dict[str, "RemoteStore"] = {}
_lock = threading.Lock()


class RemoteStore:
    """One fsspec location holding a project's checkpoints."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec

            self.fs, self.base = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            raise CheckpointError(f"FLOR_CHECKPOINT_STORE={url}: {exc}; for s3:// pip install 'flor-hindsight[s3]'") from None
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"FLOR_CHECKPOINT_STORE={url}: {exc}") from None
        self.url = url
        self.base = self.base.rstrip("/")
        _keep_working_at_exit()
        self.known: set[str] = set()  # digests this process saw in the store

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def upload(self, arrays: dict, manifest_location: str, manifest: bytes) -> int:
        """Put the arrays the store lacks, then the manifest; the bytes sent."""
        sent = 0
        try:
            for digest, data in arrays.items():
                if digest in self.known:
                    continue
                target = self.path(f"objects/{digest}")
                if not self.fs.exists(target):
                    self.fs.pipe_file(target, bytes(data))
                    sent += len(data)
                self.known.add(digest)
            self.fs.pipe_file(self.path(manifest_location), manifest)  # last: the checkpoint is whole
        except Exception as exc:  # noqa: BLE001 - any failure of the remote file system, converted here
            raise CheckpointError(f"checkpoint not uploaded to {self.url}: {type(exc).__name__}: {exc}") from exc
        return sent + len(manifest)

    def put(self, relative: str, data: bytes) -> None:
        """Write one file, replacing what is there (``flor doctor --repair``)."""
        try:
            self.fs.pipe_file(self.path(relative), bytes(data))
        except Exception as exc:  # noqa: BLE001 - converted at the boundary
            raise CheckpointError(f"cannot write {relative} to {self.url}: {type(exc).__name__}: {exc}") from exc

    def read(self, relative: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            raise CheckpointError(f"{relative} is in neither .flor/ nor {self.url}; run `flor doctor`") from None
        except Exception as exc:  # noqa: BLE001 - converted at the boundary
            raise CheckpointError(f"cannot read {relative} from {self.url}: {type(exc).__name__}: {exc}") from exc

    def exists(self, relative: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(relative)))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from exc


def _keep_working_at_exit() -> None:
    """Let fsspec's event loop run blocking calls (name lookups) during interpreter exit.

    A run's last checkpoints are written while Python exits (the run ends in an ``atexit``
    handler), after ``concurrent.futures`` refuses new work ("cannot schedule new futures after
    interpreter shutdown"), which the loop's default executor is. Its replacement starts a thread
    per call, which Python still allows then."""
    import concurrent.futures

    try:
        from fsspec.asyn import get_loop
    except ImportError:
        return

    class ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            future = concurrent.futures.Future()

            def run():
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                    future.set_exception(exc)

            threading.Thread(target=run, name="flor-remote-call", daemon=True).start()
            return future

    loop = get_loop()
    loop.call_soon_threadsafe(loop.set_default_executor, ThreadPerCall(max_workers=1))


def remote_store() -> RemoteStore | None:
    """The configured store (one per URL and process), or None."""
    url = settings.checkpoint_store()
    if not url:
        return None
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = RemoteStore(url)
        return store

"""Checkpoints in object storage: ``FLOR_CHECKPOINT_STORE=s3://bucket/prefix`` (any fsspec URL).

The local ``.flor/`` stays where checkpoints are written first, and a checkpoint is listed (as
local) as soon as its local copy is durable. With a store configured, an uploader thread
(``upload.py``) then sends the checkpoint's new arrays (by content: an array the store holds
already is not sent again) and, last, its manifest, under the same layout as ``.flor/``
(``objects/<sha256>``, ``checkpoints/<run_id>/<iteration>-<point>.json``), and marks it uploaded.
A node that reads from the URL never sees a manifest without its arrays. A slow or absent store
never slows or loses a run: it is checked (endpoint, credentials) when the run begins, with a
time limit; uploads never block training; what did not reach it stays in ``.flor/``, listed as
local, and ``flor doctor --repair`` uploads it. Reading, a file missing locally (a replay worker on another node) is read
from the URL, and every array is checked against its hash as a local one is.

One prefix per project: run ids are the project's own. fsspec and the protocol's package (s3fs
for ``s3://``) are imported only when a store is configured; credentials and endpoints come from
the usual variables (``AWS_*``, ``FSSPEC_S3_ENDPOINT_URL``).

>>> store = remote_store()          # None unless FLOR_CHECKPOINT_STORE is set   # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..environment import settings
from ..errors import CheckpointError
from ..environment.paths import ProjectPaths
from .objects import base_of, files, stored

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
        self.unreachable: str | None = None  # why the check when the run began failed

    def check(self, timeout: float) -> str | None:
        """Whether the store answers, with these credentials, within ``timeout`` seconds: None,
        or why not. Runs in a thread of its own: a store that accepts connections and never
        answers must not hold the caller."""
        outcome: list[str | None] = []

        def probe():
            try:
                self.fs.ls(self.base, refresh=True)
                outcome.append(None)
            except FileNotFoundError:
                outcome.append(None)  # reachable; the prefix is made by the first upload
            except Exception as exc:  # noqa: BLE001 - any failure of the remote file system, named
                outcome.append(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))

        thread = threading.Thread(target=probe, name="flor-store-check", daemon=True)
        thread.start()
        thread.join(timeout)
        if not outcome:
            return f"no answer within {timeout:g}s"
        return outcome[0]

    def upload_written(self, flor_dir: Path, location: str, replace: frozenset = frozenset()) -> int:
        """Upload a checkpoint whose local copy is whole: the arrays the store lacks (from
        ``.flor/objects``) and those in ``replace`` (damaged there), then its manifest, byte for
        byte; the bytes sent."""
        paths = ProjectPaths.of_flor_dir(flor_dir)
        local = paths.at(location)
        try:
            text = local.read_bytes()
            blobs = json.loads(text)["blobs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {location} cannot be uploaded: its local manifest cannot be read ({exc})") from None
        sent = 0
        try:
            for digest in _with_bases(ProjectPaths.of_flor_dir(Path(flor_dir)).objects, blobs):
                if digest in self.known and digest not in replace:
                    continue
                source = stored(ProjectPaths.of_flor_dir(Path(flor_dir)).objects, digest) or ProjectPaths.of_flor_dir(Path(flor_dir)).objects / digest
                target = self.path(f"objects/{source.name}")  # raw or encoded, as it is kept locally
                # One look, under the name it has here (a copy under the other name is a rare
                # re-encoding; sending it again is harmless): uploads must keep up with the run.
                if digest in replace or not self.fs.exists(target):
                    self.fs.put_file(str(source), target)
                    sent += source.stat().st_size
                    if digest in replace:  # a damaged copy under the other name would still be read first
                        for other in files(ProjectPaths.of_flor_dir(Path(flor_dir)).objects, digest):
                            if other.name != source.name and self.fs.exists(self.path(f"objects/{other.name}")):
                                self.fs.rm(self.path(f"objects/{other.name}"))
                self.known.add(digest)
            self.fs.pipe_file(self.path(location), text)  # last: the checkpoint is whole
        except Exception as exc:  # noqa: BLE001 - any failure of the remote file system, converted here
            raise CheckpointError(f"checkpoint not uploaded to {self.url}: {type(exc).__name__}: {exc}") from exc
        return sent + len(text)

    def keep_aside(self, relative: str, stamp: str) -> str | None:
        """Copy ``relative`` to ``doctor/<relative>.replaced-<stamp>`` in the store before a
        repair replaces it; the copy's path (None when there was nothing to keep)."""
        try:
            data = self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - converted at the boundary
            raise CheckpointError(f"cannot read {relative} from {self.url}: {type(exc).__name__}: {exc}") from exc
        aside = f"doctor/{relative}.replaced-{stamp}"
        self.put(aside, data)
        return aside

    def manifests(self) -> list[str]:
        """The locations of every manifest the store holds (``checkpoints/<run>/<name>.json``)."""
        try:
            found = self.fs.glob(self.path("checkpoints/*/*.json"))
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - converted at the boundary
            raise CheckpointError(f"cannot list {self.url}: {type(exc).__name__}: {exc}") from exc
        prefix = self.base + "/"
        return sorted(str(p)[len(prefix):] if str(p).startswith(prefix) else str(p) for p in found)

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

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

    def fetch(self, relative: str) -> bytes | None:
        """The bytes of ``relative``, or None when the store does not hold it (an unreachable
        store raises: absent and unreachable are different answers)."""
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - converted at the boundary
            raise CheckpointError(f"cannot read {relative} from {self.url}: {type(exc).__name__}: {exc}") from exc

    def exists(self, relative: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(relative)))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from exc


def _with_bases(objects: Path, blobs: list[str]) -> list[str]:
    """The digests of a checkpoint's objects and of the delta bases they need, bases first (a
    reader of the store never meets a delta whose base is not there)."""
    ordered: dict[str, None] = {}

    def add(digest: str, depth: int = 0) -> None:
        if digest in ordered or depth > 64:
            return
        base = base_of(objects, digest)
        if base:
            add(base, depth + 1)
        ordered[digest] = None

    for digest in blobs:
        add(digest)
    return list(ordered)


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

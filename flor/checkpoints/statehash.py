"""A fingerprint of the registered state: one digest per registered object.

Replay verifies a re-executed stretch by the values the old code logs again; where it logs none
(code after the loop, a value logged every 10th step), the state it ends with is compared with
the recording's instead. A checkpoint's manifest already names each array by its sha256 (the
writer stores arrays by content), so the recording's fingerprint at a checkpoint costs nothing:
it is read off the manifest. The fingerprint at the end of the run is taken when the run ends
(small states only: hashing a large one would lengthen every run's end).

An object's digest is the sha256 of its snapshot skeleton (``snapshot.py``) with every array
replaced by the sha256 of its bytes: the same tree the checkpoint stores, minus where it lives.

>>> of_manifest(json.loads(path.read_text()))          # doctest: +SKIP
{'model': '3f2a...', 'optimizer': '9c1e...'}
"""

from __future__ import annotations

import hashlib
import json

from .snapshot import ARRAY, Snapshotter, object_state, state_size

END_MAX_BYTES = 256 << 20  # the largest state whose fingerprint is taken at the end of a run


def _canonical(node, digests: list[str]):
    if isinstance(node, list):
        return [_canonical(v, digests) for v in node]
    if isinstance(node, dict):
        if ARRAY in node:
            return {ARRAY: digests[node[ARRAY]], "dtype": node.get("dtype"), "shape": node.get("shape")}
        return {k: _canonical(v, digests) for k, v in node.items()}
    return node


def of_skeleton(objects: dict, digests: list[str]) -> dict[str, str]:
    """The fingerprint from the ``objects`` part of a snapshot skeleton and its arrays' digests."""
    return {name: hashlib.sha256(json.dumps(_canonical(tree, digests), separators=(",", ":")).encode()).hexdigest()
            for name, tree in objects.items()}


def of_manifest(manifest: dict) -> dict[str, str]:
    """The fingerprint of the registered state a checkpoint holds."""
    return of_skeleton(manifest.get("objects") or {}, manifest.get("blobs") or [])


def of_objects(objects: dict[str, object]) -> dict[str, str]:
    """The fingerprint of live registered objects (views of tensors in host memory, no copy)."""
    snapshot = Snapshotter().take({name: object_state(obj) for name, obj in objects.items()}, copy=False)
    digests = []
    for buffer in snapshot.buffers:
        array = buffer.array
        view = memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes()
        digests.append(hashlib.sha256(view).hexdigest())
    return of_skeleton(snapshot.skeleton, digests)


def at_end(objects: dict[str, object]) -> dict[str, str] | None:
    """The fingerprint to keep with a run that ends, or None for a state too large to hash then."""
    try:
        if state_size(objects) > END_MAX_BYTES:
            return None
        return of_objects(objects)
    except Exception:  # noqa: BLE001 - a probe of a user object never fails the run's end
        return None


def differing(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The registered objects whose digests differ (or are missing on one side)."""
    return sorted(name for name in recorded.keys() | now.keys() if recorded.get(name) != now.get(name))

"""Restores that cost what the slice needs (issue 30): a checkpoint read for some of its objects
decodes only theirs; consecutive restores decode each delta against the arrays of the one before
(kept from it, verified when decoded) on a few threads; every array is still checked against its
hash. numpy only: no training, no process."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from flor.checkpoints import restore
from flor.checkpoints.objects import Encoder
from flor.checkpoints.snapshot import ARRAY
from flor.errors import CheckpointError


def _store(objects, array, previous=None) -> str:
    raw = array.tobytes()
    digest = hashlib.sha256(raw).hexdigest()
    base = hashlib.sha256(previous.tobytes()).hexdigest() if previous is not None else None
    encoded = Encoder().encode(raw, 4, previous.tobytes() if previous is not None else None, base)
    (objects / f"{digest}{encoded.suffix}").write_bytes(encoded.data)
    return digest


def _checkpoints(tmp_path, count=4):
    """``count`` checkpoints of two objects (`model`, `optimizer`), each array a delta against
    the one before: .flor/checkpoints/<i>.json."""
    flor_dir = tmp_path / ".flor"
    objects = flor_dir / "objects"
    objects.mkdir(parents=True)
    (flor_dir / "checkpoints").mkdir()
    rng = np.random.default_rng(0)
    weights, moments = rng.standard_normal(4096, dtype=np.float32), rng.standard_normal(8192, dtype=np.float32)
    previous: dict = {}
    truth = []
    for index in range(count):
        weights, moments = weights + np.float32(1e-3) * index, moments * np.float32(0.99)
        blobs = []
        tree = {}
        for name, array in (("model", weights), ("optimizer", moments)):
            blobs.append(_store(objects, array, previous.get(name)))
            tree[name] = {"ndarray": {ARRAY: len(blobs) - 1, "kind": "numpy", "dtype": "float32", "shape": [len(array)]}}
            previous[name] = array.copy()
        manifest = {"run_id": 1, "tstamp": "t", "iteration": index, "point": "nested", "objects": tree, "rng": {},
                    "blobs": blobs}
        (flor_dir / "checkpoints" / f"{index}.json").write_text(json.dumps(manifest))
        truth.append({"model": weights.copy(), "optimizer": moments.copy()})
    return flor_dir, truth


def test_only_the_objects_asked_for_are_read(tmp_path):
    flor_dir, truth = _checkpoints(tmp_path, 2)
    read = restore.read_manifest(flor_dir, "checkpoints/1.json", trusted=True, only=frozenset({"model"}))
    assert list(read.states) == ["model"]
    assert np.array_equal(read.states["model"]["ndarray"], truth[1]["model"])


def test_consecutive_restores_decode_against_the_last_and_equal_a_fresh_read(tmp_path, monkeypatch):
    flor_dir, truth = _checkpoints(tmp_path)
    restore._recent.clear()
    decoded = []
    original = restore.Reader._stored_bytes

    def counting(self, digest):
        decoded.append(digest)
        return original(self, digest)

    monkeypatch.setattr(restore.Reader, "_stored_bytes", counting)
    for index in range(4):
        decoded.clear()
        kept = restore.read_manifest(flor_dir, f"checkpoints/{index}.json", trusted=True, keep=True)
        # one stored object read per array: its delta's base came from the restore before
        assert len(decoded) == 2, (index, decoded)
        fresh = restore.read_manifest(flor_dir, f"checkpoints/{index}.json", trusted=True)
        for name in ("model", "optimizer"):
            assert np.array_equal(kept.states[name]["ndarray"], truth[index][name])
            assert np.array_equal(fresh.states[name]["ndarray"], truth[index][name])
    assert set(restore._recent) == set(json.loads((flor_dir / "checkpoints/3.json").read_text())["blobs"])
    restore._recent.clear()


def test_a_damaged_array_still_fails_the_restore_with_the_cache_and_the_threads(tmp_path):
    flor_dir, _truth = _checkpoints(tmp_path)
    restore._recent.clear()
    restore.read_manifest(flor_dir, "checkpoints/1.json", trusted=True, keep=True)
    manifest = json.loads((flor_dir / "checkpoints/2.json").read_text())
    damaged = next((flor_dir / "objects").glob(f"{manifest['blobs'][1]}*"))
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        restore.read_manifest(flor_dir, "checkpoints/2.json", trusted=True, keep=True)
    restore._recent.clear()

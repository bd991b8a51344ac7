"""Reading checkpoints back: manifests, content-addressed arrays, and restoring into objects.

Tensors and arrays are rebuilt from raw bytes, with no pickle (the safety of
``torch.load(weights_only=True)``). Only objects that were registered as plain picklable objects
are unpickled, and only when the caller allows it (``trusted=True``, the default for a project's
own checkpoints).

>>> ckpt = flor.load_checkpoint("2026-11-26T15:04", iteration=3)     # doctest: +SKIP
>>> net.load_state_dict(ckpt["model"])
>>> ckpt.restore(model=net, optimizer=opt)
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..rng import restore as restore_random_state
from ..errors import CheckpointError, UsageError
from ..paths import ProjectPaths
from .snapshot import ARRAY, DICT, PICKLE, TUPLE


@dataclass
class Checkpoint:
    """A checkpoint read back: the state of each registered object, the random state and variables."""

    run_id: int
    tstamp: str
    iteration: int
    point: str
    states: dict[str, object]
    rng: dict
    variables: dict = field(default_factory=dict)
    variables_missing: list = field(default_factory=list)
    variables_known: bool = False

    def __getitem__(self, name: str):
        """The stored state of one registered object: a state_dict, an array or the object."""
        try:
            stored = self.states[name]
        except KeyError:
            raise UsageError(
                f"checkpoint has no object {name!r}; it has {', '.join(self.states) or 'none'}"
            ) from None
        return next(iter(stored.values()))

    def keys(self):
        """Names of the registered objects."""
        return self.states.keys()

    def restore(self, *objs, rng: bool = False, **named) -> None:
        """Load the stored state into live objects (by position or name, as registered).

        >>> ckpt.restore(model=net, optimizer=opt)      # doctest: +SKIP
        """
        targets = {str(i): obj for i, obj in enumerate(objs)}
        targets.update(named)
        for name, obj in targets.items():
            restore_object(obj, self.states.get(name), name)
        if rng:
            restore_random_state(self.rng)


def restore_object(obj, stored, name: str) -> None:
    """Put ``stored`` (as kept by :func:`~flor.checkpoints.snapshot.object_state`) into ``obj``."""
    if stored is None:
        raise CheckpointError(f"the checkpoint holds no state for {name!r}")
    if "state_dict" in stored:
        loader = getattr(obj, "load_state_dict", None)
        if not callable(loader):
            raise CheckpointError(f"{name!r} was checkpointed with a state_dict but {type(obj).__name__} cannot load one")
        loader(stored["state_dict"])
    elif "ndarray" in stored:
        obj[...] = stored["ndarray"]
    elif "object" in stored:
        value = stored["object"]
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor) and isinstance(value, torch.Tensor):
            with torch.no_grad():
                obj.copy_(value)
        elif hasattr(obj, "__dict__") and hasattr(value, "__dict__"):
            obj.__dict__.clear()
            obj.__dict__.update(value.__dict__)
        elif isinstance(obj, dict) and isinstance(value, dict):
            obj.clear()
            obj.update(value)
        elif isinstance(obj, list) and isinstance(value, list):
            obj[:] = value
        else:
            raise CheckpointError(
                f"cannot restore {name!r} in place ({type(obj).__name__}); read it from the checkpoint instead"
            )


def _rebuild(node, blobs: list[str], objects: Path, trusted: bool, cache: dict):
    if isinstance(node, list):
        return [_rebuild(v, blobs, objects, trusted, cache) for v in node]
    if not isinstance(node, dict):
        return node
    if ARRAY in node:
        return _array(node, blobs[node[ARRAY]], objects, cache)
    if TUPLE in node:
        return tuple(_rebuild(v, blobs, objects, trusted, cache) for v in node[TUPLE])
    if DICT in node:
        return {
            _key(_rebuild(k, blobs, objects, trusted, cache)): _rebuild(v, blobs, objects, trusted, cache)
            for k, v in node[DICT]
        }
    if PICKLE in node:
        if not trusted:
            raise CheckpointError("this checkpoint holds pickled objects; load it with trusted=True if you trust it")
        return pickle.loads(bytes.fromhex(node[PICKLE]))
    return {k: _rebuild(v, blobs, objects, trusted, cache) for k, v in node.items()}


def _key(value):
    return value


def _array(meta: dict, digest: str, objects: Path, cache: dict):
    import hashlib

    path = objects / digest
    data = cache.get(digest)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint data {path} is missing or unreadable ({exc.strerror}); run `flor doctor`"
            ) from exc
        # Content addressed: a file that no longer hashes to its name is damaged; never restore it.
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"checkpoint data {path} is damaged (its content does not match its hash); run `flor doctor`")
        cache[digest] = data
    if meta["kind"] == "torch":
        import torch

        dtype = getattr(torch, meta["dtype"])
        if not data:
            return torch.empty(meta["shape"], dtype=dtype)
        tensor = torch.frombuffer(bytearray(data), dtype=dtype).reshape(meta["shape"])
        return tensor
    import numpy

    return numpy.frombuffer(data, dtype=numpy.dtype(meta["dtype"])).reshape(meta["shape"]).copy()


def read_manifest(flor_dir: Path, location: str, trusted: bool = True, with_variables: bool = True) -> Checkpoint:
    """Read one checkpoint from its manifest location (relative to ``.flor``)."""
    paths = ProjectPaths.of_flor_dir(flor_dir)
    path = paths.at(location)
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}); run `flor doctor`") from exc
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); run `flor doctor`") from exc
    objects = paths.objects
    blobs = manifest["blobs"]
    cache: dict = {}
    states = _rebuild(manifest["objects"], blobs, objects, trusted, cache)
    rng = _rebuild(manifest["rng"], blobs, objects, trusted, cache)
    variables = _rebuild(manifest.get("variables", {}), blobs, objects, trusted, cache) if with_variables else {}
    return Checkpoint(
        manifest["run_id"], manifest["tstamp"], manifest["iteration"], manifest["point"], states, rng,
        variables, manifest.get("variables_missing", []), manifest.get("variables_known", False),
    )


def restore_into(flor_dir: Path, location: str, objects: dict[str, object], frame=None, outer_frame=None) -> Checkpoint:
    """Restore a checkpoint into live registered objects and the random state, and the variables
    it kept: those of the nested loop into ``frame`` (the frame running that loop), those of the
    outer body into ``outer_frame`` (what replay and resume do)."""
    from .variables import restore as restore_variables

    checkpoint = read_manifest(flor_dir, location)
    for name, obj in objects.items():
        restore_object(obj, checkpoint.states.get(name), name)
    restore_random_state(checkpoint.rng)
    kept = checkpoint.variables or {}
    if outer_frame is not None and kept.get("outer"):
        restore_variables(outer_frame, kept["outer"])
    if frame is not None and kept.get("nested"):
        restore_variables(frame, kept["nested"])
    return checkpoint


def load_checkpoint(run: str | int, iteration: int | None = None, *objs, trusted: bool = True, **named) -> Checkpoint:
    """The checkpoint of ``run`` (tstamp prefix or run id) at ``iteration`` (default: the last).

    With objects given, their state is restored too. This is also the model registry: pick the
    best epoch from ``flor.dataframe`` and load its weights.

    >>> best = flor.dataframe("val_acc").sort_values("val_acc").iloc[-1]        # doctest: +SKIP
    >>> flor.load_checkpoint(best.tstamp, best.epoch, model=net)                 # doctest: +SKIP
    """
    from ..query import project_store
    from .handoff import await_writers

    store = project_store()
    try:
        row = store.run(run) if isinstance(run, int) else store.find_run(str(run))
        await_writers(store.path.parent, row.run_id)
        rows = store.checkpoints(row.run_id)
    finally:
        store.close()
    if not rows:
        raise CheckpointError(f"run {row.tstamp} has no checkpoints (did it use flor.checkpointing?)")
    if iteration is None:
        chosen = rows[-1]
    else:
        matches = [r for r in rows if r.iteration == int(iteration)]
        if not matches:
            have = ", ".join(str(r.iteration) for r in rows)
            raise CheckpointError(f"run {row.tstamp} has no checkpoint at iteration {iteration}; it has {have}")
        chosen = matches[0]
    flor_dir = store.path.parent
    checkpoint = read_manifest(flor_dir, chosen.location, trusted=trusted)
    if objs or named:
        checkpoint.restore(*objs, **named)
    return checkpoint

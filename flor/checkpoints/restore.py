"""Reading checkpoints back: manifests, content-addressed arrays, and restoring into objects.

Checkpoints are data, not code. Tensors and arrays are rebuilt from raw bytes, with no pickle
(the safety of ``torch.load(weights_only=True)``); everything else is JSON. The one exception is a
registered object that has no ``state_dict`` and was kept as a pickle (a plain Python object):
its state is unpickled only when the caller asks for it (``trusted=True``) *and* the store
recorded, when the checkpoint was written, that this object of this checkpoint is pickled. So a
manifest that someone edited to smuggle a pickle in is refused even with ``trusted=True``.
Pickled parts that need no class at all (numbers, strings, tuples: older manifests kept NaN
this way) are read with an unpickler that loads no class, which runs nothing.

>>> ckpt = flor.load_checkpoint("2026-11-26T15:04", iteration=3)     # doctest: +SKIP
>>> net.load_state_dict(ckpt["model"])
>>> ckpt.restore(model=net, optimizer=opt)
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from ..environment.rng import restore as restore_random_state
from ..environment.rng import restore_generators
from .iterators import restore as restore_iterators
from ..errors import CheckpointError, UsageError
from ..environment.imported import imported
from ..environment.paths import ProjectPaths
from .objects import Reader
from .remote import remote_store
from .snapshot import ARRAY, DICT, FLOAT, PICKLE, TUPLE


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
    grads: dict = field(default_factory=dict)
    generators: dict = field(default_factory=dict)
    auto: dict = field(default_factory=dict)  # unregistered objects with a state_dict the loop changed
    iterators: dict = field(default_factory=dict)  # data iterators that live across iterations (iterators.py)
    iterators_missing: list = field(default_factory=list)  # those flor could not keep

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
        loader(_match_wrapping(obj, stored["state_dict"]))
    elif "ndarray" in stored:
        obj[...] = stored["ndarray"]
    elif "object" in stored:
        value = stored["object"]
        torch = imported("torch")
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


WRAPPED_PREFIX = "module."  # DistributedDataParallel / DataParallel keep the model as `.module`


def _match_wrapping(obj, state):
    """``state`` with its keys matched to ``obj``'s wrapping: a model checkpointed inside
    DistributedDataParallel (keys ``module.*``) restores into the bare model, and the other way
    round. A replay may run the model unwrapped where the recording wrapped it (a script that
    wraps only when ``RANK`` is set), and ``load_checkpoint`` is often called on the bare model."""
    own = getattr(obj, "state_dict", None)
    if not isinstance(state, dict) or not state or not callable(own) or not hasattr(obj, "named_parameters"):
        return state  # not a torch module (an optimizer's state has no such keys)
    keys = list(own().keys())
    if not keys:
        return state
    stored_wrapped = all(isinstance(k, str) and k.startswith(WRAPPED_PREFIX) for k in state)
    target_wrapped = all(k.startswith(WRAPPED_PREFIX) for k in keys)
    if stored_wrapped and not target_wrapped:
        return type(state)((k[len(WRAPPED_PREFIX):], v) for k, v in state.items())
    if target_wrapped and not stored_wrapped:
        return type(state)((WRAPPED_PREFIX + k, v) for k, v in state.items())
    return state


class _DataUnpickler(pickle.Unpickler):
    """Loads pickles of plain values only (no class is ever looked up, so no code runs)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")


def _unpickle(hexdata: str, allowed: bool, what: str):
    data = bytes.fromhex(hexdata)
    try:
        return _DataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError:
        pass  # it needs a class: only for an object the run recorded as pickled, when trusted
    except Exception as exc:  # noqa: BLE001 - a damaged pickle is a damaged checkpoint
        raise CheckpointError(f"checkpoint data of {what} is damaged ({exc}); run `flor doctor`") from exc
    if allowed is not True:
        raise CheckpointError(allowed or f"the checkpoint holds a pickled object in {what}; refusing to unpickle it")
    return pickle.loads(data)


def _needs_class(node) -> bool:
    """Whether a stored tree holds a pickle that loads a class (one that can run code)."""
    if isinstance(node, list):
        return any(_needs_class(v) for v in node)
    if not isinstance(node, dict):
        return False
    if PICKLE in node:
        try:
            _DataUnpickler(io.BytesIO(bytes.fromhex(str(node[PICKLE])))).load()
            return False
        except Exception:  # noqa: BLE001 - anything but plain data counts
            return True
    return any(_needs_class(v) for v in node.values())


def unexpected_pickles(manifest: dict, recorded: list[str] | None) -> list[str]:
    """The parts of a manifest that hold code-running pickles the store did not record: objects
    not in ``recorded`` (not checked when None: listed before flor recorded it), and the random
    state, variables and gradients, which are data only."""
    found = []
    for name, tree in (manifest.get("objects") or {}).items():
        if recorded is not None and name not in recorded and _needs_class(tree):
            found.append(repr(name))
    for part in ("rng", "variables", "grads", "generators", "auto", "iterators"):
        if _needs_class(manifest.get(part)):
            found.append(f"the {part}")
    return found


def _rebuild(node, blobs: list[str], objects: Path, allowed, cache: dict, what: str = "the checkpoint"):
    """Rebuild a stored tree; ``allowed`` is True where unpickling objects is allowed, else the
    message that refuses it."""

    def again(value):
        return _rebuild(value, blobs, objects, allowed, cache, what)

    if isinstance(node, list):
        return [again(v) for v in node]
    if not isinstance(node, dict):
        return node
    if ARRAY in node:
        return _array(node, blobs[node[ARRAY]], objects, cache)
    if TUPLE in node:
        return tuple(again(v) for v in node[TUPLE])
    if DICT in node:
        return {_key(again(k)): again(v) for k, v in node[DICT]}
    if FLOAT in node and len(node) == 1:
        return float(node[FLOAT])
    if PICKLE in node:
        return _unpickle(node[PICKLE], allowed, what)
    return {k: again(v) for k, v in node.items()}


def _key(value):
    return value


def _array(meta: dict, digest: str, objects, cache: dict):
    """One array, rebuilt from its object (``objects``: an ``objects.Reader``, which decodes,
    follows delta chains and verifies every hash)."""
    data = objects.read(digest)
    if meta["kind"] == "torch":
        import torch

        dtype = getattr(torch, meta["dtype"])
        if not data:
            return torch.empty(meta["shape"], dtype=dtype)
        tensor = torch.frombuffer(bytearray(data), dtype=dtype).reshape(meta["shape"])
        return tensor
    import numpy

    return numpy.frombuffer(data, dtype=numpy.dtype(meta["dtype"])).reshape(meta["shape"]).copy()


# The arrays of the checkpoint restored last in this process (sha256 -> raw bytes, verified when
# decoded). A replay worker restores its memoized iterations' checkpoints one after the other, and
# each array of one is stored as a delta against the same array of the one before: without these,
# every restore decoded the whole chain back to a standalone copy again (up to
# FLOR_CKPT_FULL_EVERY - 1 links, each read, decompressed and hashed). Only restore_into keeps
# them, and only the last checkpoint's, where a replay worker asks (``keep``): a user's
# load_checkpoint, and a resumed recording, hold nothing afterwards.
_recent: dict[str, bytes] = {}


def read_manifest(flor_dir: Path, location: str, trusted: bool = False, with_variables: bool = True,
                  pickled: list[str] | None = None, sha256: str | None = None, only=None,
                  keep: bool = False) -> Checkpoint:
    """Read one checkpoint from its manifest location (relative to ``.flor``).

    ``pickled``: the objects the store recorded as pickled in this checkpoint (None: a checkpoint
    listed before flor recorded that, where ``trusted`` alone decides). ``sha256``: of the
    manifest's bytes as written, which the store kept; a manifest that differs (edited, or
    another checkpoint's put in its place) is refused. ``only``: the registered objects to read
    (None: all); the others' arrays (and gradients) are not read at all. ``keep``: decode deltas
    against the arrays of the checkpoint read last with ``keep`` (their bytes were verified when
    they were decoded), and keep this one's for the next."""
    import hashlib

    paths = ProjectPaths.of_flor_dir(flor_dir)
    path = paths.at(location)
    where = str(path)
    try:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            remote = remote_store()
            if remote is None:
                raise
            data = remote.read(location)  # on another machine: from object storage
            where = remote.path(location)
        manifest = json.loads(data)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(f"checkpoint {where} is not the manifest that was written (its sha256 differs from "
                                  "the one the store kept): it was edited or swapped; run `flor doctor`")
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}); run `flor doctor`") from exc
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); run `flor doctor`") from exc
    objects = Reader(paths.objects, remote_store)
    if keep:
        objects.cache.update(_recent)
    blobs = manifest["blobs"]
    cache: dict = {}
    try:
        objects.prefetch(_arrays(manifest, blobs, only, with_variables))
        checkpoint = _read_states(manifest, blobs, objects, cache, trusted, pickled, path, with_variables, only)
        if keep:
            _recent.clear()
            _recent.update((digest, objects.cache[digest]) for digest in blobs if digest in objects.cache)
        return checkpoint
    except CheckpointError as exc:
        # A damaged object (a link of a delta chain, too) fails in one line naming the checkpoint.
        raise CheckpointError(f"checkpoint of iteration {manifest.get('iteration')} ({location}): {exc}") from None


def _arrays(manifest: dict, blobs: list, only, with_variables: bool) -> list[str]:
    """The sha256 of every array that reading ``manifest`` (as _read_states does) decodes."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, dict):
            if ARRAY in node:
                index = node[ARRAY]
                if isinstance(index, int) and 0 <= index < len(blobs):
                    found.append(blobs[index])
                return
            for value in node.values():
                walk(value)

    for name, tree in (manifest.get("objects") or {}).items():
        if only is None or name in only:
            walk(tree)
    grads = manifest.get("grads") or {}
    if with_variables:
        walk({k: v for k, v in grads.items() if only is None or k in only} if isinstance(grads, dict) else grads)
        walk(manifest.get("variables"))
    for part in ("rng", "generators", "auto", "iterators"):
        walk(manifest.get(part))
    return found


def _read_states(manifest: dict, blobs: list, objects, cache: dict, trusted: bool, pickled, path,
                 with_variables: bool, only=None) -> Checkpoint:
    states = {}
    for name, tree in manifest["objects"].items():
        if only is not None and name not in only:
            continue
        if not trusted:
            allowed = (f"the checkpoint holds {name!r} as a pickled object; load it with trusted=True "
                       "only if you trust where this .flor came from")
        elif pickled is not None and name not in pickled:
            allowed = (f"the manifest {path} holds a pickle for {name!r}, which the run did not record as "
                       "pickled: it may have been tampered with; run `flor doctor`")
        else:
            allowed = True
        states[name] = _rebuild(tree, blobs, objects, allowed, cache, repr(name))
    data_only = f"the manifest {path} holds a pickle where only data belongs; run `flor doctor`"
    rng = _rebuild(manifest["rng"], blobs, objects, data_only, cache, "the random state")
    variables = _rebuild(manifest.get("variables", {}), blobs, objects, data_only, cache, "the variables") if with_variables else {}
    stored_grads = manifest.get("grads", {})
    if only is not None and isinstance(stored_grads, dict) and not set(stored_grads) & {ARRAY, DICT, TUPLE, FLOAT, PICKLE}:
        stored_grads = {name: tree for name, tree in stored_grads.items() if name in only}
    grads = _rebuild(stored_grads, blobs, objects, data_only, cache, "the gradients") if with_variables else {}
    generators = _rebuild(manifest.get("generators", {}), blobs, objects, data_only, cache, "the generators")
    auto = _rebuild(manifest.get("auto", {}), blobs, objects, data_only, cache, "the unregistered objects")
    iterators = _rebuild(manifest.get("iterators", {}), blobs, objects, data_only, cache, "the data iterators")
    return Checkpoint(
        manifest["run_id"], manifest["tstamp"], manifest["iteration"], manifest["point"], states, rng,
        variables, manifest.get("variables_missing", []), manifest.get("variables_known", False), grads, generators,
        auto, iterators, manifest.get("iterators_missing", []),
    )


def restore_into(flor_dir: Path, location: str, objects: dict[str, object], frame=None, outer_frame=None,
                 pickled: list[str] | None = None, sha256: str | None = None, keep: bool = False) -> Checkpoint:
    """Restore a checkpoint into live registered objects and the random state, and the variables
    it kept: those of the nested loop into ``frame`` (the frame running that loop), those of the
    outer body into ``outer_frame`` (what replay and resume do). ``keep``: a replay worker that
    restores one checkpoint after another keeps the last one's arrays to decode the next one's
    deltas against (see ``read_manifest``)."""
    from .variables import restore as restore_variables
    from .variables import lookup, restore_globals

    checkpoint = read_manifest(flor_dir, location, trusted=True, pickled=pickled, sha256=sha256, only=frozenset(objects),
                               keep=keep)
    for name, obj in objects.items():
        restore_object(obj, checkpoint.states.get(name), name)
        restore_gradients(obj, checkpoint.grads.get(name), name)
    restore_random_state(checkpoint.rng)
    restore_generators((frame, outer_frame), checkpoint.generators)
    restore_iterators((frame, outer_frame), checkpoint.iterators)
    for name, stored in (checkpoint.auto or {}).items():
        live = lookup(outer_frame, name)
        if live is None and frame is not None:
            live = lookup(frame, name)
        if live is not None:
            restore_object(live, stored, name)
    kept = checkpoint.variables or {}
    restore_globals(kept.get("globals"))
    if outer_frame is not None and kept.get("outer"):
        restore_variables(outer_frame, kept["outer"])
    if frame is not None and kept.get("nested"):
        restore_variables(frame, kept["nested"], frozenset(kept.get("inplace", ())))
    return checkpoint


def restore_gradients(obj, grads: dict | None, name: str) -> None:
    """Set the ``.grad`` of each parameter of module ``obj`` as the checkpoint kept it (None
    clears it); a module checkpointed without gradients gets none."""
    named = getattr(obj, "named_parameters", None)
    if not callable(named):
        return
    grads = grads or {}
    for pname, param in named():
        saved = grads.get(pname)
        param.grad = None if saved is None else saved.to(device=param.device, dtype=param.dtype)


def load_checkpoint(run: str | int, iteration: int | None = None, *objs, trusted: bool = False, **named) -> Checkpoint:
    """The checkpoint of ``run`` (tstamp prefix or run id) at ``iteration`` (default: the last).

    With objects given, their state is restored too. This is also the model registry: pick the
    best epoch from ``flor.dataframe`` and load its weights. Tensors, arrays and plain values are
    read as data; a registered object kept as a pickle is unpickled only with ``trusted=True``,
    and only when the store recorded it as pickled (see the module docstring).

    >>> best = flor.dataframe("val_acc").sort_values("val_acc").iloc[-1]        # doctest: +SKIP
    >>> flor.load_checkpoint(best.tstamp, best.epoch, model=net)                 # doctest: +SKIP
    """
    from ..store.project import project_store
    from .handoff import await_writers

    store = project_store()
    try:
        row = store.run(run) if isinstance(run, int) else store.find_run(str(run))
        await_writers(store.paths.flor_dir, row.run_id)
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
    flor_dir = store.paths.flor_dir
    checkpoint = read_manifest(flor_dir, chosen.location, trusted=trusted, pickled=chosen.pickled, sha256=chosen.sha256)
    if objs or named:
        checkpoint.restore(*objs, **named)
    return checkpoint

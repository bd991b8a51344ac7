"""Data iterators that live across outer iterations: kept with checkpoints, rebuilt on restore.

A script may make one DataLoader iterator before its loop and draw from it with ``next()`` in
every iteration (makemore's ``InfiniteDataLoader``, a ``while True`` loop over batches). Its
position and its sampler's generator are then state of the run: a replay that restores
checkpoint k must also give the iterator the position it had after k, or every segment after a
checkpoint trains on the batches of steps 0, 1, ... .

A DataLoader iterator cannot be copied, but it can be rebuilt from little: the states of the
loader's generators when the iterator was made, and the number of batches drawn since. So flor
notes, when torch makes a DataLoader iterator (:func:`install` wraps its ``__init__``), the
generator states just before, and the global torch random state just before the sampler's first
draw (a sampler without a generator seeds itself from it then). A checkpoint keeps, for each
iterator its frames hold (a variable, or an attribute of one: ``batch_loader.data_iter``), that
creation record, the count of batches drawn, and the generators' states now. Restoring rebuilds
it: generators back to their creation states, a fresh sampler iterator advanced by the count
(indices only, no data loaded) for a single-process map-style loader, else a new iterator
fast-forwarded batch by batch; then the generators must be in the states kept (else the restore
fails, saying so).

Iterators flor cannot rebuild (a generator object, an iterator of another kind that the script
advances with ``next()``, a loader with persistent workers) are listed as missing: recording
says so once, and replay never starts a segment after such a checkpoint.
"""

from __future__ import annotations

import io
import sys
import types

from ..environment.imported import imported
from ..environment.rng import LOADER_PATHS, attribute_at

_installed = False


class FirstDraw:
    """Stands in for a DataLoader iterator's sampler iterator and notes the global torch random
    state just before its first draw (a sampler without a generator seeds itself from it)."""

    __slots__ = ("inner", "state")

    def __init__(self, inner) -> None:
        self.inner = inner
        self.state = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.state is None:
            self.state = imported("torch").get_rng_state()
        return next(self.inner)


def _generators(loader) -> dict[str, object]:
    """The loader's torch generators by path (one entry per object)."""
    torch = imported("torch")
    found, seen = {}, set()
    for path in LOADER_PATHS:
        obj = attribute_at(loader, path)
        if obj is not None and isinstance(obj, torch.Generator) and id(obj) not in seen:
            seen.add(id(obj))
            found[path] = obj
    return found


def install() -> None:
    """Note how each DataLoader iterator was made (see the module docstring); once, and only when
    torch's data module is already imported (``import flor`` never imports torch)."""
    global _installed
    if _installed:
        return
    module = sys.modules.get("torch.utils.data.dataloader")
    base = getattr(module, "_BaseDataLoaderIter", None)
    if base is None:
        return
    _installed = True
    original = base.__init__
    torch = imported("torch")

    def __init__(self, loader, *args, **kwargs):
        try:
            created = {"generators": {p: g.get_state() for p, g in _generators(loader).items()},
                       "torch": torch.get_rng_state()}
        except Exception:  # noqa: BLE001 - noting never breaks the user's loader
            created = None
        original(self, loader, *args, **kwargs)
        try:
            self._flor_loader = loader
            self._flor_created = created
            if created is not None and type(self).__name__ == "_SingleProcessDataLoaderIter":
                self._sampler_iter = FirstDraw(self._sampler_iter)
        except Exception:  # noqa: BLE001
            pass

    __init__.__wrapped__ = original
    base.__init__ = __init__


def _is_loader_iter(value) -> bool:
    module = sys.modules.get("torch.utils.data.dataloader")
    base = getattr(module, "_BaseDataLoaderIter", None)
    return base is not None and isinstance(value, base)


def _is_other_iterator(value) -> bool:
    """An iterator whose position flor cannot keep: a generator, a list or itertools iterator, a
    user's iterator class (not files, readers or torch's own)."""
    if isinstance(value, types.GeneratorType):
        return True
    if isinstance(value, (io.IOBase, type, types.ModuleType, FirstDraw)):
        return False
    kind = type(value)
    module = kind.__module__ or ""
    if module.startswith(("flor", "torch", "_io", "io", "csv", "tqdm", "numpy")):
        return False
    return hasattr(kind, "__next__") and hasattr(kind, "__iter__")


def found(frames, exclude: tuple = ()) -> dict[str, object]:
    """path -> iterator: DataLoader iterators and other iterators that the frames hold, as
    variables or as attributes of their variables (``batch_loader.data_iter``)."""
    result: dict[str, object] = {}
    seen: set[int] = set()
    for frame in frames:
        if frame is None:
            continue
        for name, value in list(frame.f_locals.items()):
            if name.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
                continue
            if any(value is obj for obj in exclude):
                continue
            candidates = [(name, value)]
            attributes = getattr(value, "__dict__", None)
            if type(attributes) is dict and not _is_loader_iter(value) and len(attributes) <= 256:
                candidates += [(f"{name}.{key}", item) for key, item in list(attributes.items())
                               if not key.startswith("_")]
            for path, item in candidates:
                if id(item) in seen:
                    continue
                if _is_loader_iter(item) or _is_other_iterator(item):
                    seen.add(id(item))
                    result[path] = item
    return result


def capture(frames, exclude: tuple = (), script_advances: bool = True) -> tuple[dict, list[str]]:
    """({path: record} of the DataLoader iterators flor can rebuild, [paths of iterators it
    cannot]) in ``frames``. Other iterators count only when the script calls ``next(``
    (``script_advances``): one the loop merely holds is no state of the run."""
    kept, missing = {}, []
    for path, item in found(frames, exclude).items():
        if not _is_loader_iter(item):
            if script_advances:
                missing.append(path)
            continue
        record = _record(item)
        if record is None:
            missing.append(path)
        else:
            kept[path] = record
    return kept, missing


def _record(live) -> dict | None:
    created = getattr(live, "_flor_created", None)
    loader = getattr(live, "_flor_loader", None)
    if created is None or loader is None:
        return None
    single = type(live).__name__ == "_SingleProcessDataLoaderIter"
    if not single and getattr(live, "_persistent_workers", False):
        return None  # its workers outlive the iterator: a new one would not be the same
    sampler_iter = live._sampler_iter
    first = None
    if single:
        if not isinstance(sampler_iter, FirstDraw):
            return None  # re-made (a reset): the creation record no longer describes it
        first = sampler_iter.state
    map_style = getattr(live, "_dataset_kind", 0) == 0
    return {
        "mode": "sampler" if single and map_style else "forward",
        "drawn": int(live._num_yielded),
        "created": created,
        "first_draw": first,
        "now": {p: g.get_state() for p, g in _generators(loader).items()},
    }


def restore(frames, records: dict) -> None:
    """Rebuild the iterators the frames hold to the positions ``records`` kept."""
    if not records:
        return
    from ..errors import CheckpointError

    torch = imported("torch")
    live = found(frames)
    for path, record in records.items():
        item = live.get(path)
        if item is None or not _is_loader_iter(item):
            raise CheckpointError(f"the data iterator `{path}` kept with the checkpoint is not there to restore")
        saved = torch.get_rng_state()
        try:
            rebuilt = _rebuild(item, record, torch)
        finally:
            torch.set_rng_state(saved)
        if rebuilt is not item:
            _assign(frames, path, rebuilt)
            shutdown = getattr(item, "_shutdown_workers", None)
            if callable(shutdown):
                shutdown()
        loader = getattr(rebuilt, "_flor_loader", None)
        now = {p: g.get_state() for p, g in _generators(loader).items()} if loader is not None else {}
        for gpath, state in (record.get("now") or {}).items():
            if gpath not in now or not bool(now[gpath].equal(_tensor(state, torch))):
                raise CheckpointError(
                    f"the data iterator `{path}` could not be rebuilt as it was: its loader's {gpath} is not in "
                    "the state the checkpoint kept (something else draws from it)")


def _tensor(state, torch):
    if isinstance(state, (bytes, bytearray)):
        return torch.frombuffer(bytearray(state), dtype=torch.uint8)
    return state if isinstance(state, torch.Tensor) else torch.as_tensor(state, dtype=torch.uint8)


def _rebuild(live, record: dict, torch):
    from ..errors import CheckpointError

    loader = getattr(live, "_flor_loader", None)
    if loader is None:
        raise CheckpointError("a data iterator kept with the checkpoint cannot be rebuilt here (made before flor "
                              "could note how)")
    created = record["created"]
    generators = _generators(loader)
    for gpath, state in (created.get("generators") or {}).items():
        if gpath in generators:
            generators[gpath].set_state(_tensor(state, torch))
    torch.set_rng_state(_tensor(created["torch"], torch))
    drawn = int(record["drawn"])
    if record["mode"] == "sampler":
        # The cheap way: a fresh sampler iterator advanced by the batches drawn; no data is loaded.
        sampler_iter = iter(live._index_sampler)
        live._base_seed = torch.empty((), dtype=torch.int64).random_(generator=loader.generator).item()
        if record.get("first_draw") is not None:
            torch.set_rng_state(_tensor(record["first_draw"], torch))
        for _ in range(drawn):
            next(sampler_iter)
        wrapper = FirstDraw(sampler_iter)
        wrapper.state = record.get("first_draw") if drawn else None
        live._sampler_iter = wrapper
        live._num_yielded = drawn
        return live
    # Worker processes or an iterable dataset: a new iterator, fast-forwarded batch by batch.
    rebuilt = iter(loader)
    for _ in range(drawn):
        next(rebuilt)
    return rebuilt


def _assign(frames, path: str, value) -> None:
    from .variables import restore as restore_variables

    name, _, attribute = path.partition(".")
    for frame in frames:
        if frame is None or name not in frame.f_locals:
            continue
        if attribute:
            setattr(frame.f_locals[name], attribute, value)
        else:
            restore_variables(frame, {name: value})
        return

"""Snapshot: the short phase in the training process — copy registered state into host memory.

A state is a tree (a ``state_dict``, a numpy array, or any picklable object). The snapshot turns
it into a JSON-able *skeleton*, where each tensor or array is replaced by a reference
``{"__array__": i, ...}`` to a host-memory copy in a list of buffers. Nothing is serialized,
hashed or written here; the writer does that in the background. Buffers of a finished checkpoint
are reused for the next one, because copying into memory that is already mapped is several times
faster than allocating fresh pages.

>>> skeleton, buffers = Snapshotter().take({"w": np.zeros(3)})     # doctest: +SKIP
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass, field

from ..errors import CheckpointError
from ..environment.imported import imported
from ..values import is_plain

ARRAY, PICKLE, TUPLE, DICT, FLOAT = "__array__", "__pickle__", "__tuple__", "__dict__", "__float__"
PER_OBJECT = ("objects", "auto")  # sections of a checkpoint tree copied object by object


@dataclass
class Buffer:
    """One host copy: a numpy array viewed as bytes when written."""

    array: object  # numpy.ndarray (a torch tensor is copied into one through .numpy())
    tensor: object | None  # the torch tensor sharing memory with ``array``, when from torch
    kind: str  # "torch" or "numpy"
    dtype: str
    owned: bool = True  # False: a view of the live state (see Snapshotter.take(copy=False))


@dataclass
class Snapshot:
    """What the training process hands to the writer."""

    skeleton: dict
    buffers: list[Buffer] = field(default_factory=list)
    nbytes: int = 0
    seconds: float = 0.0
    # (section, name, exception): objects left out because copying them failed (see take)
    dropped: list[tuple[str, str, BaseException]] = field(default_factory=list)


def _torch():
    return imported("torch")


def _is_tensor(value) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _is_ndarray(value) -> bool:
    numpy = imported("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray) and value.dtype != object


class Snapshotter:
    """Copies state trees into host buffers, reusing the buffers of finished checkpoints."""

    def __init__(self) -> None:
        self._pool: list[list[Buffer]] = []

    def recycle(self, buffers: list[Buffer]) -> None:
        """Give back the buffers of a checkpoint the writer has finished with."""
        # Views of live tensors must never be copied into: that would overwrite the model.
        if len(self._pool) < 2 and all(buffer.owned for buffer in buffers):
            self._pool.append(buffers)

    def take(self, state: dict, copy: bool = True) -> Snapshot:
        """Copy ``state`` (name -> tree) into host memory; return the skeleton and buffers.

        In the sections listed in :data:`PER_OBJECT` (the registered objects, the unregistered
        ones kept on their own), each object is copied on its own: one that fails (a pickle that
        raises) is left out and listed in ``Snapshot.dropped``, and the others are kept.

        With ``copy=False``, arrays already in host memory are not copied: the buffers are views
        of the live state, for a caller that freezes it another way (a forked process).
        """
        spare = self._pool.pop() if self._pool else []
        spare_by_sig: dict = {}
        for buffer in spare:
            spare_by_sig.setdefault((buffer.kind, buffer.dtype, buffer.array.shape), []).append(buffer)
        buffers: list[Buffer] = []

        def copy_array(value, kind: str):
            if kind == "torch":
                source = value.detach()
                dtype = str(source.dtype).replace("torch.", "")
                shape = tuple(source.shape)
                reuse = spare_by_sig.get(("torch", dtype, shape))
                if not copy and source.device.type == "cpu":
                    host = source.contiguous()
                    buffer = Buffer(_host_array(host), host, "torch", dtype, owned=False)
                elif reuse:
                    buffer = reuse.pop()
                    buffer.tensor.copy_(source)
                else:
                    torch = _torch()
                    host = torch.empty(shape, dtype=source.dtype, device="cpu")
                    host.copy_(source)
                    buffer = Buffer(_host_array(host), host, "torch", dtype)
                meta = {ARRAY: len(buffers), "kind": "torch", "dtype": dtype, "shape": list(shape),
                        "device": str(value.device), "requires_grad": bool(value.requires_grad)}
            else:
                dtype = value.dtype.str
                shape = tuple(value.shape)
                reuse = spare_by_sig.get(("numpy", dtype, shape))
                if not copy:
                    buffer = Buffer(numpy_module().ascontiguousarray(value), None, "numpy", dtype, owned=False)
                elif reuse:
                    buffer = reuse.pop()
                    buffer.array[...] = value
                else:
                    buffer = Buffer(value.copy(order="C"), None, "numpy", dtype)
                meta = {ARRAY: len(buffers), "kind": "numpy", "dtype": dtype, "shape": list(shape)}
            buffers.append(buffer)
            return meta

        def walk(value):
            if is_plain(value):
                if type(value) is float and value != value:
                    return {FLOAT: "nan"}  # JSON has no NaN; data, not a pickle
                return value
            if _is_tensor(value):
                return copy_array(value, "torch")
            if _is_ndarray(value):
                return copy_array(value, "numpy")
            if type(value) is list:
                return [walk(v) for v in value]
            if type(value) is tuple:
                return {TUPLE: [walk(v) for v in value]}
            if isinstance(value, dict):
                if all(type(k) is str and not k.startswith("__") for k in value):
                    return {k: walk(v) for k, v in value.items()}
                return {DICT: [[walk(k), walk(v)] for k, v in value.items()]}
            try:
                return {PICKLE: pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL).hex()}
            except Exception as exc:
                raise CheckpointError(
                    f"cannot checkpoint a {type(value).__name__}: it has no state_dict and does not pickle ({exc})"
                ) from exc

        import time

        started = time.perf_counter()
        skeleton: dict = {}
        dropped: list[tuple[str, str, BaseException]] = []
        for section, tree in state.items():
            if section not in PER_OBJECT or not isinstance(tree, dict):
                skeleton[section] = walk(tree)
                continue
            kept = skeleton[section] = {}
            for name, value in tree.items():
                mark = len(buffers)
                try:
                    kept[name] = walk(value)
                except Exception as exc:  # the user's objects: a pickle may raise anything
                    del buffers[mark:]  # copies of the object's tensors made before it failed
                    dropped.append((section, name, exc))
        nbytes = sum(b.array.nbytes for b in buffers)
        return Snapshot(skeleton, buffers, nbytes, time.perf_counter() - started, dropped)


def _host_array(host):
    """A numpy view of a CPU tensor's memory (raw bytes for dtypes numpy lacks, e.g. bfloat16)."""
    try:
        return host.numpy()
    except TypeError:
        torch = _torch()
        return host.view(torch.uint8).numpy() if host.dim() else host.reshape(1).view(torch.uint8).numpy()


def numpy_module():
    return sys.modules["numpy"]


def has_state_dict(obj) -> bool:
    """Whether ``obj`` saves and loads its state like torch objects do (modules, optimizers,
    schedulers, scalers)."""
    try:
        return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))
    except Exception:  # a __getattr__ that raises something other than AttributeError: no
        return False


def object_state(obj) -> object:
    """The tree flor keeps for a registered object."""
    if has_state_dict(obj):
        return {"state_dict": obj.state_dict()}
    if _is_ndarray(obj):
        return {"ndarray": obj}
    return {"object": obj}


def state_size(objects: dict[str, object], on_error=None) -> int:
    """Bytes of the tensors and arrays that checkpointing the objects would copy (no copy made).

    An object whose state cannot be read counts nothing; ``on_error(name, exc)`` hears of it
    (without it, the exception propagates)."""
    total = 0
    for name, obj in objects.items():
        try:
            total += tree_size(object_state(obj))
        except Exception as exc:  # the user's state_dict
            if on_error is None:
                raise
            on_error(name, exc)
    return total


def tree_size(tree) -> int:
    """Bytes of the tensors and arrays in a state tree (as :func:`object_state` gives it)."""
    total = 0

    def walk(value) -> None:
        nonlocal total
        if _is_tensor(value):
            total += value.numel() * value.element_size()
        elif _is_ndarray(value):
            total += value.nbytes
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(tree)
    return total


def gradients(objects: dict[str, object], on_error=None) -> dict:
    """The ``.grad`` of each parameter of the registered modules, by module and parameter name
    (None where a parameter has none); modules without any gradient are left out. A module whose
    parameters cannot be listed is left out too, and ``on_error(name, exc)`` hears of it."""
    found = {}
    for name, obj in objects.items():
        try:
            named = getattr(obj, "named_parameters", None)
            if not callable(named):
                continue
            grads = {pname: param.grad for pname, param in named()}
        except Exception as exc:  # the user's module
            if on_error is None:
                raise
            on_error(name, exc)
            continue
        if any(g is not None for g in grads.values()):
            found[name] = grads
    return found


def pickled_objects(skeleton: dict) -> list[str]:
    """Names of the registered objects whose state in ``skeleton["objects"]`` holds pickled
    parts: recorded in the store, so that a manifest claiming other pickles is known as tampered."""

    def holds(node) -> bool:
        if isinstance(node, list):
            return any(holds(v) for v in node)
        if isinstance(node, dict):
            return PICKLE in node or any(holds(v) for v in node.values())
        return False

    return sorted(name for name, tree in skeleton.get("objects", {}).items() if holds(tree))

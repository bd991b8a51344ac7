"""Random state: one capture and one restore for python, numpy, torch CPU and CUDA.

The same state is kept in two places: with every checkpoint (a tree whose arrays the checkpoint
writer stores by content) and with the run itself, taken where recording begins (bytes in
``runs.rng_state``, which replay restores at the same point). :func:`encode` turns a state into
JSON bytes — data, never pickle, so reading someone else's database cannot run code. Databases
written before that kept a pickle; :func:`decode` still reads those with an unpickler that accepts
only the plain types and numpy arrays such a state holds.

>>> state = capture()
>>> restore(decode(encode(state)))
"""

from __future__ import annotations

import random

from .imported import imported

_BYTES = "$bytes"


def _torch():
    return imported("torch")


def capture() -> dict:
    """The random state of python, numpy and torch (those already imported), CUDA included."""
    state: dict = {"python": random.getstate()}
    numpy = imported("numpy")
    if numpy is not None:
        kind, keys, pos, has_gauss, gauss = numpy.random.get_state()
        state["numpy"] = {"kind": kind, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    torch = _torch()
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = torch.get_rng_state()
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            state["cuda"] = list(cuda.get_rng_state_all())
    return state


def _byte_tensor(value):
    import torch

    if isinstance(value, (bytes, bytearray, memoryview)):
        return torch.frombuffer(bytearray(value), dtype=torch.uint8)
    return torch.as_tensor(value, dtype=torch.uint8).cpu()


def restore(state: dict | None) -> None:
    """Set the random state that :func:`capture` took (or :func:`decode` read back)."""
    if not state:
        return
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy

        s = state["numpy"]
        numpy.random.set_state((s["kind"], numpy.asarray(s["keys"], dtype=numpy.uint32), s["pos"], s["has_gauss"], s["gauss"]))
    if "torch" in state:
        import torch

        torch.set_rng_state(_byte_tensor(state["torch"]))
        if "cuda" in state and torch.cuda.is_available():
            states = [_byte_tensor(s) for s in state["cuda"]]
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def _plain(value):
    """A JSON-able copy of a state tree: arrays and tensors become base64 bytes."""
    import base64

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return {_BYTES: base64.b64encode(value.cpu().numpy().tobytes()).decode("ascii")}
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars
        return tolist()
    return value


def _unplain(value):
    import base64

    if isinstance(value, dict):
        if set(value) == {_BYTES}:
            return base64.b64decode(value[_BYTES])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def encode(state: dict) -> bytes:
    """The state as JSON bytes, for the store."""
    import json

    return json.dumps(_plain(state), separators=(",", ":")).encode()


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


def _state_unpickler(data: bytes):
    """An unpickler for the pickled states of older databases: plain values and numpy arrays,
    nothing else (imported here: ``import flor`` does not pay for pickle)."""
    import io
    import pickle

    class StateUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a random state")

    return StateUnpickler(io.BytesIO(data))


def decode(blob: bytes | None) -> dict | None:
    """The state that :func:`encode` wrote (or an older database pickled); None when there is none."""
    if not blob:
        return None
    blob = bytes(blob)
    if blob[:1] == b"{":
        import json

        return _unplain(json.loads(blob))
    state = _state_unpickler(blob).load()
    if isinstance(state.get("numpy"), tuple):
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        state["numpy"] = {"kind": kind, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return state


# -- generators of the script's own ---------------------------------------------------------
#
# Besides the global random state, scripts seed generators of their own: a torch.Generator handed
# to a DataLoader (its shuffle order), numpy's default_rng(), a random.Random. A skipped loop
# advances them, so a checkpoint keeps their state too: found by name in the frames that run the
# loops, and on the loaders held there (DataLoader.generator, its sampler's).

LOADER_PATHS = ("generator", "sampler.generator", "batch_sampler.sampler.generator")


# id(type) -> (the type, its kind): by identity, since a metaclass may define __eq__ and __hash__
# (two classes equal to each other); the type is held so that its id is not reused.
_KIND_BY_TYPE: dict[int, tuple[type, str | None]] = {}


def _kind(value) -> str | None:
    """Which kind of generator ``value`` is (None: not one). Asked of every variable the outer
    loop's frame and a new statement's frame hold, at every hindsight statement a replay runs: the
    isinstance tests (torch's Generator has a metaclass hook of its own) cost about 4 us a value,
    two thirds of what observing a step-level statement cost, so the answer is kept per type. It
    depends on the type alone: a type that does not exist yet cannot have instances, and the one
    per-instance test torch makes (``FakeScriptObject``, tracing's stand-in for a script object)
    is answered without the cache."""
    kind_of = type(value)
    known = _KIND_BY_TYPE.get(id(kind_of))
    if known is not None and known[0] is kind_of:
        return known[1]
    kind = _kind_of(value)
    if not kind_of.__name__.startswith("FakeScriptObject"):
        _KIND_BY_TYPE[id(kind_of)] = (kind_of, kind)
    return kind


def _kind_of(value) -> str | None:
    torch = _torch()
    if torch is not None and isinstance(value, torch.Generator):
        return "torch"
    numpy = imported("numpy")
    if numpy is not None:
        if isinstance(value, numpy.random.Generator):
            return "numpy"
        if isinstance(value, numpy.random.RandomState):
            return "randomstate"
    if isinstance(value, random.Random) and type(value).__module__ == "random":
        return "python"
    return None


def attribute_at(value, path: str):
    """``value.a.b`` for the path ``"a.b"``; None where a part is missing or None."""
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _found(frames, on_error=None) -> dict[str, object]:
    """name (or name.attribute path) -> generator object, in the given frames' variables. A
    variable whose attributes cannot be looked at (a ``__getattr__`` raising KeyError) is passed
    over; ``on_error(name, exc)`` hears of it."""
    found: dict[str, object] = {}
    seen: set[int] = set()
    for frame in frames:
        if frame is None:
            continue
        scope = frame.f_locals
        for name, value in list(scope.items()):
            candidates = [(name, value)]
            try:
                if _kind(value) is None and hasattr(value, "sampler"):  # a DataLoader, say
                    candidates = [(f"{name}.{path}", attribute_at(value, path)) for path in LOADER_PATHS]
            except Exception as exc:  # the script's object: its attribute hooks may raise anything
                if on_error is not None:
                    on_error(name, exc)
                continue
            for key, obj in candidates:
                if obj is not None and _kind(obj) is not None and id(obj) not in seen and key not in found:
                    seen.add(id(obj))
                    found[key] = obj
    return found


def _state_of(obj):
    kind = _kind(obj)
    if kind == "torch":
        return {"kind": kind, "state": obj.get_state()}
    if kind == "numpy":
        return {"kind": kind, "state": obj.bit_generator.state}
    if kind == "randomstate":
        name, keys, pos, has_gauss, gauss = obj.get_state()
        return {"kind": kind, "state": {"kind": name, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss),
                                        "gauss": float(gauss)}}
    return {"kind": kind, "state": obj.getstate()}


def capture_generators(frames, on_error=None) -> dict:
    """The state of every generator the frames hold (see above), by the name it was found under;
    ``on_error(name, exc)`` hears of a variable that could not be looked into."""
    return {key: _state_of(obj) for key, obj in _found(frames, on_error).items()}


def restore_generators(frames, states: dict) -> None:
    """Set the generators the frames hold to the states :func:`capture_generators` kept."""
    if not states:
        return
    live = _found(frames)
    for key, saved in states.items():
        obj = live.get(key)
        if obj is None or _kind(obj) != saved.get("kind"):
            continue
        set_generator_state(obj, saved)


def generators_in(frames) -> dict[str, object]:
    """name -> generator object of the script's own generators that ``frames`` hold (see above)."""
    return _found(frames)


def generator_state(obj) -> dict:
    """The state of one generator, as :func:`capture_generators` keeps it."""
    return _state_of(obj)


def same_generator_state(obj, saved: dict) -> bool:
    """Whether ``obj`` is still in the state ``saved`` (from :func:`generator_state`)."""
    now = _state_of(obj)["state"]
    if saved["kind"] == "torch":
        return bool(now.equal(saved["state"]))
    return _plain(now) == _plain(saved["state"])  # numpy's states hold arrays


def set_generator_state(obj, saved: dict) -> None:
    """Put one generator back into the state ``saved`` (from :func:`generator_state`)."""
    state = saved["state"]
    if saved["kind"] == "torch":
        obj.set_state(_byte_tensor(state) if not hasattr(state, "dtype") else state)
    elif saved["kind"] == "numpy":
        obj.bit_generator.state = state
    elif saved["kind"] == "randomstate":
        import numpy

        obj.set_state((state["kind"], numpy.asarray(state["keys"], dtype=numpy.uint32), state["pos"],
                       state["has_gauss"], state["gauss"]))
    else:
        version, internal, gauss = state
        obj.setstate((version, tuple(internal), gauss))

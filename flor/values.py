"""Typed values: how a logged Python value is kept in the store and read back.

Numbers, bools, strings and None are stored as themselves with a type tag; numpy scalars and
one-element tensors become Python numbers; anything else is stored as JSON, or as its repr with a
one-time warning. Reading gives back the typed value.

>>> encode(3)
(3, 'int')
>>> decode(*encode([1, 2.5]))
[1, 2.5]
"""

from __future__ import annotations

import math

INT, FLOAT, BOOL, STR, NONE, JSON, REPR = "int", "float", "bool", "str", "none", "json", "repr"

# The one definition of a *plain* value, for every part of flor that asks: None, bool, int, float,
# str, by exact type. A subclass (numpy.float64, an IntEnum, a str subclass) may carry precision
# or behaviour of its own, so it is converted or refused, never taken for the plain value.
_PLAIN = {int: INT, float: FLOAT, str: STR, bool: BOOL, type(None): NONE}
PLAIN_TYPES = tuple(_PLAIN)
_MAX_SETTING_ITEMS = 64
_warned_repr: set[str] = set()


class Encoded:
    """A value already converted at log time (kept apart from plain strings by its type tag)."""

    __slots__ = ("stored", "vtype")

    def __init__(self, stored: object, vtype: str) -> None:
        self.stored = stored
        self.vtype = vtype


def is_plain(value: object) -> bool:
    """True for values that are immutable and stored as themselves (the hot path of flor.log)."""
    return type(value) in _PLAIN


def is_plain_setting(value: object) -> bool:
    """A value that can be recorded as an arg: plain, or a short list or tuple of plain values."""
    if type(value) in _PLAIN:
        return True
    return type(value) in (list, tuple) and len(value) <= _MAX_SETTING_ITEMS and all(type(v) in _PLAIN for v in value)


def _as_number(value: object) -> object | None:
    """numpy scalars, 0-d arrays and one-element tensors as Python numbers; None otherwise."""
    item = getattr(value, "item", None)
    if item is None:
        return None
    size = getattr(value, "size", None)
    if callable(size):  # torch: size() is a method, numel() the count
        numel = getattr(value, "numel", None)
        size = numel() if callable(numel) else None
    if size != 1:
        return None
    try:
        number = item()
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if type(number) in _PLAIN else None


def _jsonable(value: object) -> object:
    """Convert containers of numpy/tensor values into plain JSON-able Python values."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (list, tuple, dict)):
        value = tolist()
        if hasattr(value, "tolist"):
            raise TypeError("not convertible")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if type(value) in _PLAIN:
        return value
    number = _as_number(value)
    if number is not None:
        return number
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def prepare(value: object, name: str) -> object:
    """Turn a non-plain logged value into something safe to keep until the next flush.

    Called in the training process for values that may be mutated after flor.log returns
    (arrays, lists, tensors), so the store gets the value as it was when logged.
    """
    number = _as_number(value)
    if number is not None:
        return number
    import json

    try:
        text = json.dumps(_jsonable(value), allow_nan=True)
        return Encoded(text, JSON)
    except (TypeError, ValueError, RecursionError):
        pass
    if name not in _warned_repr:
        import warnings

        _warned_repr.add(name)
        warnings.warn(
            f"flor.log({name!r}): a {type(value).__name__} is not JSON-serializable; storing its repr",
            stacklevel=3,
        )
    try:
        return Encoded(repr(value), REPR)
    except Exception as exc:  # a broken __repr__ must not lose the log call
        return Encoded(f"<unrepresentable {type(value).__name__}: {exc}>", REPR)


def encode(value: object) -> tuple[object, str]:
    """(stored value, type tag) for a value as produced by :func:`prepare` or a plain value."""
    vtype = _PLAIN.get(type(value))
    if vtype is not None:
        if vtype is BOOL:
            return int(value), BOOL
        if vtype is INT and not -(2**63) <= value < 2**63:
            return str(value), INT  # beyond SQLite's 64-bit integers
        if vtype is FLOAT and not math.isfinite(value):
            # SQLite turns NaN into NULL; keep it as text under the float tag.
            return repr(value), FLOAT
        return value, vtype
    if type(value) is Encoded:
        return value.stored, value.vtype
    prepared = prepare(value, "value")
    return encode(prepared)


def encode_logged(value: object, name: str) -> tuple[object, str]:
    """(stored value, type tag) for a value that is not an int, float or str (flor.log's slow path)."""
    vtype = _PLAIN.get(type(value))
    if vtype is not None:
        return encode(value)
    return encode(prepare(value, name))


def decode(stored: object, vtype: str) -> object:
    """The Python value for a stored value and its type tag."""
    if vtype == FLOAT:
        return math.nan if stored is None else float(stored)
    if vtype == INT:
        return int(stored)
    if vtype == BOOL:
        return bool(stored)
    if vtype == NONE:
        return None
    if vtype == JSON:
        import json

        return json.loads(stored)
    return stored

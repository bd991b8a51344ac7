"""Item keys: what identifies an iteration of a keyed loop across runs and stages.

``flor.loop("document", paths, key=True)`` gives each iteration the item's own key (a path) and
``key=fn`` the key ``fn(item)``; nested keyed loops give a page the path ``(document, page)``.
A key is a string, an int, a float or a tuple of keys; it is stored as SQLite's own type, a tuple
as JSON text. A key *path* (the keys of the enclosing keyed loops and the item's own, with their
loop names) is one canonical JSON text, so that "was this item done before" is one set lookup.

>>> encode(("a.pdf", 3))
('["a.pdf",3]', 'tuple')
>>> decode(*encode(("a.pdf", 3)))
('a.pdf', 3)
>>> path_text((("document", "a.pdf"), ("page", 3)))
'[["document","a.pdf"],["page",3]]'
"""

from __future__ import annotations

import json
import math

from ..errors import UsageError

_INT64 = (-(2**63), 2**63)


def key_of(item, key, loop: str):
    """The key of ``item``: the item itself (``key=True``) or ``key(item)``, checked."""
    value = item if key is True else key(item)
    return checked(value, loop)


def checked(value, loop: str):
    """``value`` when it can be a key (lists become tuples, paths their text, numpy scalars
    Python numbers), else a one-line UsageError."""
    if type(value) is list:
        value = tuple(value)
    elif type(value) not in (tuple, str, int, float):
        value = _plain(value)
    if type(value) is tuple:
        return tuple(checked(part, loop) for part in value)
    if type(value) is str:
        return value
    if type(value) is int:
        if not _INT64[0] <= value < _INT64[1]:
            raise UsageError(f"flor.loop({loop!r}): key {value} does not fit in 64 bits; use a string")
        return value
    if type(value) is float and math.isfinite(value):
        return value
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise UsageError(
        f"flor.loop({loop!r}): a key must be a string, an int, a finite float or a tuple of them, "
        f"got {type(value).__name__} {shown}; pass key=lambda item: ... that returns one"
    )


def _plain(value):
    """A path as its text, a numpy integer or float as a Python one; anything else unchanged."""
    import os

    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    try:
        import operator

        return operator.index(value)
    except TypeError:
        pass
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        return float(value) if value.dtype.kind == "f" else value
    return value


def encode(key) -> tuple[object, str]:
    """(stored, ktype) of a checked key."""
    if type(key) is tuple:
        return json.dumps(key, separators=(",", ":")), "tuple"
    return key, type(key).__name__


def decode(stored, ktype: str):
    """The key that :func:`encode` stored."""
    if ktype == "tuple":
        return _tuples(json.loads(stored))
    if ktype == "int":
        return int(stored)
    if ktype == "float":
        return float(stored)
    return stored


def _tuples(value):
    return tuple(_tuples(v) for v in value) if type(value) is list else value


def path_text(path) -> str:
    """The canonical text of a key path ``((loop name, key), ...)``."""
    return json.dumps(path, separators=(",", ":"))


def shown(key) -> str:
    """A key as a user reads it in a message."""
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."

"""``--kwargs name=value ...``: parsing the command line and converting overrides to a default's type.

flor takes ``--kwargs`` out of ``sys.argv`` at import, so the script's own argparse never sees it,
and keeps the raw strings until ``flor.arg`` asks for a name. Conversion follows the default's
type; with no default, a Python literal if it parses, else the string.

>>> split_kwargs(["train.py", "--epochs", "3", "--kwargs", "hidden=75", "lr=0.01"])
(['train.py', '--epochs', '3'], {'hidden': '75', 'lr': '0.01'})
>>> convert("75", 500, "hidden")
75
"""

from __future__ import annotations

from ..errors import ArgumentError

FLAG = "--kwargs"
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def split_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return ``argv`` without the ``--kwargs`` group, and the ``name -> raw value`` overrides.

    The group runs from ``--kwargs`` up to the next token that starts with ``-`` (the script's
    own options may follow it). ``--kwargs`` may appear more than once.
    """
    kept: list[str] = []
    overrides: dict[str, str] = {}
    in_group = False
    for token in argv:
        if token == FLAG:
            in_group = True
            continue
        if in_group and token.startswith("-"):
            in_group = False
        if not in_group:
            kept.append(token)
            continue
        name, sep, raw = token.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ArgumentError(
                f"--kwargs expects name=value pairs, got {token!r}; write it as {token or 'name'}=VALUE"
            )
        if not all(part.isidentifier() for part in name.split(".")):
            raise ArgumentError(f"--kwargs name {name!r} is not a valid argument name (letters, digits, _ and dots)")
        if name in overrides:
            # Which one was meant is a guess; a run recorded with the other would be a wrong value.
            raise ArgumentError(f"--kwargs gives {name} twice ({name}={overrides[name]} and {name}={raw}); give it once")
        overrides[name] = raw
    return kept, overrides


def _literal(raw: str):
    import ast

    return ast.literal_eval(raw)


def convert(raw: str, default: object, name: str) -> object:
    """Convert the command-line string ``raw`` to the type of ``default``.

    bool accepts true/false/1/0/yes/no; with no default, a Python literal if it parses, else the
    string. Raises :class:`ArgumentError` naming the argument and the expected type.
    """
    if default is None:
        try:
            return _literal(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return raw
    kind = type(default)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ArgumentError(f"--kwargs {name}={raw!r}: expected a bool (true/false/1/0/yes/no)")
    if kind is str:
        return raw
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ArgumentError(f"--kwargs {name}={raw!r}: expected an int like {default!r}") from None
    if kind is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ArgumentError(f"--kwargs {name}={raw!r}: expected a float like {default!r}") from None
    try:
        value = _literal(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ArgumentError(
            f"--kwargs {name}={raw!r}: expected a {kind.__name__} literal like {default!r}"
        ) from None
    if isinstance(value, kind):
        return value
    if kind in (list, tuple, set, frozenset) and isinstance(value, (list, tuple, set, frozenset)):
        return kind(value)
    raise ArgumentError(f"--kwargs {name}={raw!r}: expected a {kind.__name__} like {default!r}")


def describe_declared(declared: dict[str, object]) -> str:
    """'hidden=500, lr=0.001' for error messages, or '(none)'."""
    if not declared:
        return "(none)"
    return ", ".join(f"{name}={value!r}" for name, value in declared.items())

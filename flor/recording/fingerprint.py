"""The code version of one loop's body, for incremental loops.

An incremental loop skips an item only when an earlier run processed it with the same code, so
the fingerprint must change whenever the body could compute something else: it hashes the
``for`` statement (target, iterable and body, as syntax trees: comments and blank lines do not
count) and the source of every function, class and module of the project that the body calls,
followed transitively, and the *values* of the plain data those read by name (numbers, strings,
tuples, lists, dicts and sets of them, numpy arrays: a reordered label list or a changed
threshold is a change). An object of a project class is followed through its class. Code outside
the project (installed libraries) is not followed; its version is the environment's, like the
Python version. Other objects (a model, an open file) are not hashed. Past ``_MAX_DEPTH`` levels
of calls the fingerprint is not trusted: the loop has none, and every item runs.

A loop whose source cannot be read (``exec``) has no fingerprint, and an incremental loop without
one runs every item; a notebook cell's source is read from IPython's line cache.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import types
from pathlib import Path

_trees: dict[str, tuple[float, ast.Module | None]] = {}
_MAX_DEPTH = 6


def _tree(filename: str) -> ast.Module | None:
    try:
        stamp = os.stat(filename).st_mtime_ns
    except OSError:
        return None
    cached = _trees.get(filename)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        tree = ast.parse(Path(filename).read_text(), filename)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        tree = None
    _trees[filename] = (stamp, tree)
    return tree


def _for_statement(tree: ast.Module, line: int) -> ast.For | None:
    """The innermost ``for`` whose iterable spans ``line`` (where flor.loop is called)."""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            iterable = node.iter
            if iterable.lineno <= line <= (iterable.end_lineno or iterable.lineno):
                if best is None or node.lineno >= best.lineno:
                    best = node
    return best


def loop_fingerprint(frame, root: Path | None) -> str | None:
    """The fingerprint of the ``for`` statement running in ``frame`` (the caller of flor.loop)."""
    tree = _tree(frame.f_code.co_filename)
    if tree is None:
        return None
    statement = _for_statement(tree, frame.f_lineno)
    if statement is None:
        return None
    digest = hashlib.sha256()
    digest.update(Path(frame.f_code.co_filename).name.encode())
    digest.update(ast.dump(statement, include_attributes=False).encode())
    seen: set[str] = set()
    # Names the loop binds itself are not inputs of it; the iterable's *values* (which items
    # there are) are what incremental is about, so only its code is followed.
    bound = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    names = {k: v for k, v in {**frame.f_globals, **frame.f_locals}.items() if k not in bound}
    try:
        _follow(ast.Module(body=statement.body, type_ignores=[]), frame.f_globals, names, root, digest, seen, 0)
        _follow(statement.iter, frame.f_globals, names, root, digest, seen, 0, values=False)
    except _TooDeep:
        return None
    return digest.hexdigest()


class _TooDeep(Exception):
    pass


_PLAIN = (int, float, str, bytes, bool, type(None), complex)
_MAX_VALUE = 1 << 20


def _value_text(value, budget: list[int]) -> str | None:
    """A stable text of plain data (None: not plain data, or too big to be a setting)."""
    if isinstance(value, _PLAIN):
        text = repr(value)
    elif isinstance(value, (tuple, list, set, frozenset)):
        parts = [_value_text(v, budget) for v in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)]
        if any(p is None for p in parts):
            return None
        text = type(value).__name__ + "(" + ",".join(parts) + ")"
    elif isinstance(value, dict):
        parts = [(_value_text(k, budget), _value_text(v, budget)) for k, v in value.items()]
        if any(a is None or b is None for a, b in parts):
            return None
        text = "{" + ",".join(f"{a}:{b}" for a, b in parts) + "}"
    elif type(value).__module__ == "numpy" and hasattr(value, "tobytes") and getattr(value, "nbytes", _MAX_VALUE + 1) <= _MAX_VALUE:
        text = f"ndarray{value.dtype}{value.shape}:" + hashlib.sha256(value.tobytes()).hexdigest()
    else:
        return None
    budget[0] -= len(text)
    return text if budget[0] >= 0 else None


def _inside(path: str | None, root: Path | None) -> bool:
    if not path or root is None:
        return False
    try:
        Path(path).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return "site-packages" not in path and "dist-packages" not in path


def _follow(node: ast.AST, globals_: dict, names: dict, root, digest, seen: set, depth: int, values: bool = True) -> None:
    """Hash the project code that ``node`` refers to by name (functions, classes, modules) and
    the plain data it reads by name."""
    if depth > _MAX_DEPTH:
        raise _TooDeep
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            if sub.id not in names:
                continue
            target = names[sub.id]
            key = f"value:{id(names)}:{sub.id}"
            if values and key not in seen and not callable(target) and not isinstance(target, types.ModuleType):
                seen.add(key)
                text = _value_text(target, [_MAX_VALUE])
                if text is not None:
                    digest.update(f"{sub.id}={text}".encode())
                else:
                    kind = type(target)
                    if kind.__module__ not in ("builtins",):
                        _add(kind, root, digest, seen, depth)  # an object of a project class: its class
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            owner = names.get(sub.value.id)
            target = getattr(owner, sub.attr, None) if isinstance(owner, types.ModuleType) else None
        else:
            continue
        _add(target, root, digest, seen, depth)


def _add(target, root, digest, seen: set, depth: int) -> None:
    if isinstance(target, types.ModuleType):
        path = getattr(target, "__file__", None)
        if _inside(path, root) and path not in seen:
            seen.add(path)
            tree = _tree(path)
            digest.update(path.encode())
            digest.update(ast.dump(tree, include_attributes=False).encode() if tree else b"?")
        return
    function = inspect.unwrap(target) if callable(target) else None
    if isinstance(function, (types.FunctionType, type)):
        try:
            path = inspect.getsourcefile(function)
        except TypeError:
            return
        key = f"{path}:{getattr(function, '__qualname__', '')}"
        if not _inside(path, root) or key in seen:
            return
        seen.add(key)
        try:
            source = inspect.getsource(function)
            tree = ast.parse(_dedent(source))
        except (OSError, TypeError, SyntaxError):
            digest.update(key.encode() + b"?")
            return
        digest.update(key.encode())
        digest.update(ast.dump(tree, include_attributes=False).encode())
        globals_ = getattr(function, "__globals__", None) or vars(inspect.getmodule(function) or types)
        _follow(tree, globals_, globals_, root, digest, seen, depth + 1)


def _dedent(source: str) -> str:
    import textwrap

    return textwrap.dedent(source)

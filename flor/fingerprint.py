"""The code version of one loop's body, for incremental loops.

An incremental loop skips an item only when an earlier run processed it with the same code, so
the fingerprint must change whenever the body could compute something else: it hashes the
``for`` statement (target, iterable and body, as syntax trees: comments and blank lines do not
count) and the source of every function, class and module of the project that the body calls,
followed transitively. Code outside the project (installed libraries) is not followed; its
version is the environment's, like the Python version.

A loop whose source cannot be read (a notebook cell, ``exec``) has no fingerprint, and an
incremental loop without one runs every item.
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
    digest.update(ast.dump(statement, include_attributes=False).encode())
    seen: set[str] = set()
    _follow(statement, frame.f_globals, {**frame.f_globals, **frame.f_locals}, root, digest, seen, 0)
    return digest.hexdigest()


def _inside(path: str | None, root: Path | None) -> bool:
    if not path or root is None:
        return False
    try:
        Path(path).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return "site-packages" not in path and "dist-packages" not in path


def _follow(node: ast.AST, globals_: dict, names: dict, root, digest, seen: set, depth: int) -> None:
    """Hash the project code that ``node`` refers to by name (functions, classes, modules)."""
    if depth > _MAX_DEPTH:
        return
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            target = names.get(sub.id)
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

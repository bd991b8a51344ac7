"""Syntax-tree helpers: the statement fields that hold blocks, walks, and serialization.

A statement is serialized twice in one pass (:func:`describe`): exactly, and with variable names
blanked, so that matching can compare statements as they are and up to renaming.
"""

from __future__ import annotations

import ast

BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")
_SKIPPED_FIELDS = ("ctx", "type_comment", "type_ignores")
STMT_TYPES = (ast.stmt, ast.excepthandler, ast.match_case)
DEF_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)
SCOPE_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# Node kinds that match each other: an `async for` is a `for` with another keyword.
KIND = {"AsyncFor": "For", "AsyncWith": "With", "AsyncFunctionDef": "FunctionDef", "TryStar": "Try"}


# Calls that train the run rather than observe it: a hindsight statement never makes them.
TRAINING_CALLS = {"backward": "backward()", "step": "an optimizer or scheduler step()", "zero_grad": "zero_grad()",
                  "clip_grad_norm_": "gradient clipping", "clip_grad_value_": "gradient clipping"}


def training_call(node: ast.AST) -> str:
    """The first call under ``node`` that trains the run (see ``TRAINING_CALLS``), described for a
    reason; '' when there is none."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in TRAINING_CALLS:
                return f"`{ast.unparse(sub)}` ({TRAINING_CALLS[name]})"
    return ""


def is_self(node: ast.AST) -> bool:
    """``self``, the name."""
    return isinstance(node, ast.Name) and node.id == "self"


def _anon_field(node: ast.AST, name: str) -> bool:
    return (
        (isinstance(node, ast.Name) and name == "id")
        or (isinstance(node, ast.arg) and name == "arg")
        or (isinstance(node, ast.Attribute) and name == "attr" and is_self(node.value))
        or (isinstance(node, ast.ExceptHandler) and name == "name")
    )


def _ser(value, anon: bool, out: list[str]) -> None:
    if isinstance(value, ast.AST):
        out.append(type(value).__name__ + "(")
        for name, child in ast.iter_fields(value):
            if name in _SKIPPED_FIELDS:
                continue
            out.append(name + "=")
            if anon and _anon_field(value, name):
                out.append("_")
            else:
                _ser(child, anon, out)
            out.append(",")
        out.append(")")
    elif isinstance(value, list):
        out.append("[")
        for item in value:
            _ser(item, anon, out)
            out.append(",")
        out.append("]")
    else:
        out.append(repr(value))


_ANON_FIELDS = {ast.Name: "id", ast.arg: "arg", ast.Attribute: "attr", ast.ExceptHandler: "name"}


def describe(value, exact: list[str], anon: list[str], nodes: list[ast.AST], top: bool = False) -> None:
    """Serialize a statement's header (``top``) or any value twice in one pass: exactly, and with
    variable names blanked; collect the visited nodes in order."""
    if isinstance(value, ast.AST):
        if not top:
            nodes.append(value)
        head = type(value).__name__ + "("
        exact.append(head)
        anon.append(head)
        blank = _ANON_FIELDS.get(type(value))
        if blank == "attr" and not is_self(value.value):
            blank = None
        for name in value._fields:
            if name in _SKIPPED_FIELDS or (top and name in BLOCK_FIELDS):
                continue
            child = getattr(value, name, None)
            exact.append(name + "=")
            anon.append(name + "=")
            if name == blank:
                exact.append(repr(child))
                anon.append("_")
            else:
                describe(child, exact, anon, nodes)
            exact.append(",")
            anon.append(",")
        exact.append(")")
        anon.append(")")
    elif isinstance(value, list):
        exact.append("[")
        anon.append("[")
        for item in value:
            describe(item, exact, anon, nodes)
            exact.append(",")
            anon.append(",")
        exact.append("]")
        anon.append("]")
    else:
        text = repr(value)
        exact.append(text)
        anon.append(text)


def full_ser(node: ast.AST, anon: bool) -> str:
    """The whole subtree serialized, with variable names blanked when ``anon``."""
    out: list[str] = []
    _ser(node, anon, out)
    return "".join(out)


def dfs(value):
    """Every node under ``value`` (a node or a list of them), in pre-order, fields in order."""
    if isinstance(value, ast.AST):
        yield value
        for _, child in ast.iter_fields(value):
            yield from dfs(child)
    elif isinstance(value, list):
        for item in value:
            yield from dfs(item)


def header_nodes(node: ast.AST):
    """The expression nodes of a statement outside its nested blocks, in a fixed order."""
    for name, child in ast.iter_fields(node):
        if name not in BLOCK_FIELDS:
            yield from dfs(child)


def token(node: ast.AST) -> str:
    """One header node as a token for similarity: names, attributes, constants, arguments by value."""
    if isinstance(node, ast.Name):
        return "N:" + node.id
    if isinstance(node, ast.Attribute):
        return "A:" + node.attr
    if isinstance(node, ast.Constant):
        return "C:" + repr(node.value)[:40]
    if isinstance(node, ast.arg):
        return "G:" + node.arg
    return type(node).__name__


def first_line(node: ast.AST) -> int:
    """The first line of a statement, its decorators included."""
    if isinstance(node, ast.match_case):
        return node.pattern.lineno
    if isinstance(node, ast.Module):
        return 1
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def is_docstring(node: ast.AST) -> bool:
    """A statement that is a string constant alone."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)

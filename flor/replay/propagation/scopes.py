"""Scopes and bindings: which names a statement reads and assigns, and which names are bound
where (before a position of a block, anywhere in a scope), so that a statement is only placed
where the variables it reads exist.

Names are variables, and ``self.x`` attributes spelled out as ``"self.x"``.
"""

from __future__ import annotations

import ast
import builtins

from .syntax import BLOCK_FIELDS, DEF_TYPES, SCOPE_TYPES, dfs, is_self

_OWN_SCOPE_EXPRS = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_TRY_TYPES = tuple(t for t in (ast.Try, getattr(ast, "TryStar", None)) if t is not None)
RUNS_BODY_FIRST = (*_TRY_TYPES, ast.For, ast.AsyncFor, ast.While)  # their else/finally/handlers
BUILTINS = frozenset(dir(builtins))


def header_names(node: ast.AST, header: list[ast.AST]) -> list[tuple[str, str]]:
    """Variable names in the header, in order, each marked 'outer' (the statement's scope), 'inner'
    (a function's parameter) or 'skip' (a lambda's parameter)."""
    out = []
    lambda_args = {id(a) for x in header if isinstance(x, ast.Lambda) for a in all_args(x.args)}
    for x in header:
        if isinstance(x, ast.Name):
            out.append((x.id, "outer"))
        elif isinstance(x, ast.Attribute) and is_self(x.value):
            out.append((f"self.{x.attr}", "outer"))
        elif isinstance(x, ast.arg):
            out.append((x.arg, "skip" if id(x) in lambda_args or not isinstance(node, DEF_TYPES) else "inner"))
    if isinstance(node, ast.ExceptHandler) and node.name:
        out.append((node.name, "outer"))
    return out


def binding(fn: ast.AST, call: ast.Call) -> list[tuple[str, str]]:
    """(parameter, variable passed for it) of a call, for the arguments that are plain names."""
    if not isinstance(fn, DEF_TYPES):
        return []
    positional = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    out = []
    for param, arg in zip(positional, call.args):
        if isinstance(arg, ast.Starred):
            break
        if isinstance(arg, ast.Name):
            out.append((param, arg.id))
    by_name = {a.arg for a in (*fn.args.args, *fn.args.kwonlyargs)}
    for kw in call.keywords:
        if kw.arg in by_name and isinstance(kw.value, ast.Name):
            out.append((kw.arg, kw.value.id))
    return out


def all_args(args: ast.arguments) -> list[ast.arg]:
    """Every parameter of a signature, ``*args`` and ``**kwargs`` included."""
    out = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    out += [a for a in (args.vararg, args.kwarg) if a is not None]
    return out


def bind_walk(node: ast.AST, out: set[str]) -> None:
    """Add to ``out`` the names that ``node`` binds in its own scope (not inside nested scopes)."""
    if isinstance(node, SCOPE_TYPES):
        out.add(node.name)
        return
    if isinstance(node, _OWN_SCOPE_EXPRS):
        return
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Store):
            out.add(node.id)
        return
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and is_self(node.value):
        out.add(f"self.{node.attr}")
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        out.update(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
    elif isinstance(node, ast.ExceptHandler) and node.name:
        out.add(node.name)
    elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        out.add(node.name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
        out.add(node.rest)
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        out.update(node.names)
    for child in ast.iter_child_nodes(node):
        bind_walk(child, out)


def bind_all(stmts, out: set[str]) -> None:
    """:func:`bind_walk` over several statements."""
    for st in stmts:
        bind_walk(st, out)


def bind_header(node: ast.AST, out: set[str]) -> None:
    """Names bound by a compound statement's header: loop targets, `as` names, walrus in tests."""
    for name, child in ast.iter_fields(node):
        if name in BLOCK_FIELDS:
            continue
        if isinstance(child, str) and name == "name" and isinstance(node, ast.ExceptHandler):
            out.add(child)
        for x in child if isinstance(child, list) else [child]:
            if isinstance(x, ast.AST):
                bind_walk(x, out)


def params(node: ast.AST) -> set[str]:
    """The parameter names of a function; empty for anything else."""
    if isinstance(node, DEF_TYPES):
        return {a.arg for a in all_args(node.args)}
    return set()


def statement_names(stmt: ast.stmt) -> tuple[list[str], set[str]]:
    """(free variables the statement reads, in order; variables it assigns). Names bound by its own
    comprehensions and lambdas are neither."""
    local = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.comprehension):
            local.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Lambda):
            local.update(a.arg for a in all_args(node.args))
    loads, binds = [], set()
    for node in dfs(stmt):
        if isinstance(node, ast.Name) and node.id not in local:
            (loads.append(node.id) if isinstance(node.ctx, ast.Load) else binds.add(node.id))
        elif isinstance(node, ast.Attribute) and is_self(node.value) and "self" not in local:
            key = f"self.{node.attr}"
            (loads.append(key) if isinstance(node.ctx, ast.Load) else binds.add(key))
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            bind_walk(node, binds)
    free = []
    for name in loads:
        if name not in binds and name not in free:
            free.append(name)
    return free, binds

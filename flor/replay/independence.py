"""Whether the iterations of a loop share state, from its syntax tree.

A pipeline's keyed loop (one document per iteration) usually computes each item from the item
alone; then any iteration can be replayed without the ones before it, so replay splits the items
across workers and runs only those asked for. This module says, for a ``for`` statement, what
(if anything) one iteration leaves for the next:

- a name the body binds and also reads before binding it in the body (``total += n``,
  ``count = count + 1``, ``prev = x`` read at the top of the next iteration);
- ``global`` or ``nonlocal`` in the body;
- a change to an object made outside the body: an attribute or item assigned or deleted
  (``cache[k] = v``, ``self.n = 1``), or a method that changes its object (``results.append``,
  ``seen.add``, ``f.write``, ``optimizer.step``).

Calls into other functions are not followed: a helper that changes module state is not seen
here. Replay still compares every recorded value it passes; an iteration whose values drift is
re-executed from the start of the run, so a wrong "independent" costs time, never a wrong value.

>>> carried(ast.parse("for d in flor.loop('doc', docs, key=True):\\n    n = len(d)\\n    flor.log('n', n)").body[0])
[]
"""

from __future__ import annotations

import ast

MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "sort", "reverse", "update", "add",
    "discard", "setdefault", "write", "writelines", "send", "put", "put_nowait", "step", "backward",
    "zero_grad", "fit", "partial_fit", "train", "eval", "load_state_dict", "seek", "truncate", "flush",
    "__setitem__", "__delitem__", "appendleft", "extendleft", "rotate", "shuffle", "fill_", "copy_", "add_",
    "mul_", "sub_", "div_", "zero_", "set_", "register_buffer", "seed", "manual_seed",
})


def carried(loop: ast.For) -> list[str]:
    """What one iteration of ``loop`` leaves for the next (empty: none seen)."""
    reasons: list[str] = []
    fresh = _bound(loop.target)
    body = ast.Module(body=loop.body, type_ignores=[])
    bound_in_body: dict[str, int] = {}
    for node in ast.walk(body):
        for name in _stored_names(node):
            line = getattr(node, "lineno", 0)
            bound_in_body[name] = min(line, bound_in_body.get(name, line))
    imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(body)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    for node in ast.walk(body):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            reasons.append(f"`{'global' if isinstance(node, ast.Global) else 'nonlocal'} {', '.join(node.names)}`")
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id not in fresh:
            reasons.append(f"`{node.target.id}` is updated from its previous value")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            first = bound_in_body.get(node.id)
            if first is not None and node.id not in fresh and node.lineno < first:
                reasons.append(f"`{node.id}` is read before the body assigns it")
            elif first is not None and node.id not in fresh and node.lineno == first and _reads_own_target(body, node):
                reasons.append(f"`{node.id}` is computed from its previous value")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                owner = _owner(target)
                if owner is not None and owner not in fresh and owner not in bound_in_body:
                    reasons.append(f"`{owner}` (made outside the loop) is changed")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = _owner(node.func.value, attribute_ok=True)
            if (node.func.attr in MUTATING_METHODS and owner is not None and owner not in fresh
                    and owner not in bound_in_body and owner not in imported and owner != "flor"):
                reasons.append(f"`{owner}.{node.func.attr}(...)` changes an object made outside the loop")
    return list(dict.fromkeys(reasons))


def _bound(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _stored_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names]
    return []


def _owner(node: ast.AST, attribute_ok: bool = False) -> str | None:
    """The name at the root of ``x.a[b].c`` when ``node`` changes part of it (not a bare name)."""
    if isinstance(node, ast.Name):
        return node.id if attribute_ok else None
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _reads_own_target(body: ast.Module, name: ast.Name) -> bool:
    """``x = x + 1`` on one line: the read is of the previous iteration's value."""
    for node in ast.walk(body):
        if isinstance(node, ast.Assign) and node.lineno == name.lineno:
            stored = {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if name.id in stored and any(n is name for n in ast.walk(node.value)):
                return True
    return False

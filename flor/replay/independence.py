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
  ``seen.add``, ``f.write``, ``optimizer.step``);
- random state: ``random.*``, ``np.random.*``, ``torch.rand*`` and the like, a generator's
  methods (``rng.integers``), ``next(it)`` or ``f.readline()`` on an object made outside;
- a call of an object the script made by assignment (``model(x)``, ``augment(x)`` where
  ``augment = Compose(...)``): it may hold state, such as dropout drawing random numbers;
- a name the body binds only in some branches and reads elsewhere (the previous item's value
  shows through when the branch does not run).

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


RANDOM_MODULES = frozenset({"random", "np.random", "numpy.random", "torch", "torch.cuda", "secrets"})
RANDOM_FUNCTIONS = frozenset({
    "random", "rand", "randn", "randint", "randrange", "randperm", "rand_like", "randn_like", "randint_like",
    "integers", "choice", "choices", "shuffle", "permutation", "normal", "uniform", "sample", "bernoulli",
    "multinomial", "binomial", "poisson", "exponential", "gauss", "standard_normal", "getrandbits", "seed",
    "manual_seed", "dropout", "token_bytes",
})
READING_METHODS = frozenset({"readline", "readlines", "read", "recv", "get_nowait", "__next__"})


def carried(loop: ast.For, tree: ast.AST | None = None) -> list[str]:
    """What one iteration of ``loop`` leaves for the next (empty: none seen). ``tree``: the whole
    script, which tells objects made by assignment from functions, classes and modules."""
    reasons: list[str] = []
    made = _made_by_assignment(tree, loop) if tree is not None else set()
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
        if isinstance(node, ast.Call):
            reasons += _call_reasons(node, fresh, bound_in_body, imported, made)
    reasons += _conditionally_bound(loop, fresh)
    return list(dict.fromkeys(reasons))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _call_reasons(node: ast.Call, fresh: set, bound_in_body: dict, imported: set, made: set) -> list[str]:
    func = node.func
    outside = lambda name: name is not None and name not in fresh and name not in bound_in_body and name != "flor"
    if isinstance(func, ast.Attribute):
        owner = _owner(func.value, attribute_ok=True)
        dotted = _dotted(func.value)
        if func.attr in RANDOM_FUNCTIONS and (dotted in RANDOM_MODULES or outside(owner)):
            return [f"`{dotted or owner}.{func.attr}(...)` draws random numbers"]
        if func.attr in MUTATING_METHODS and outside(owner) and owner not in imported:
            return [f"`{owner}.{func.attr}(...)` changes an object made outside the loop"]
        if func.attr in READING_METHODS and outside(owner) and owner not in imported and dotted not in RANDOM_MODULES:
            return [f"`{owner}.{func.attr}(...)` reads on from where the previous item left"]
    elif isinstance(func, ast.Name):
        if func.id == "next" and node.args and outside(_owner(node.args[0], attribute_ok=True)):
            return ["`next(...)` on an iterator made outside the loop"]
        if func.id in made and outside(func.id):
            return [f"`{func.id}(...)` calls an object made outside the loop (it may hold state)"]
    return []


def _made_by_assignment(tree: ast.AST, loop: ast.For) -> set[str]:
    """Names the script binds by assignment (objects), not by def, class or import, outside ``loop``."""
    inside = {id(n) for n in ast.walk(loop)}
    made, defined = set(), set()
    for node in ast.walk(tree):
        if id(node) in inside:
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.With, ast.For)):
            targets = (node.targets if isinstance(node, ast.Assign) else [node.target] if not isinstance(node, ast.With)
                       else [i.optional_vars for i in node.items if i.optional_vars is not None])
            for target in targets:
                made |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {a.asname or a.name.split(".")[0] for a in node.names}
    return made - defined


def _conditionally_bound(loop: ast.For, fresh: set) -> list[str]:
    """Names bound only inside a branch of one top-level statement of the body and read in another."""
    always: set[str] = set()
    where: dict[str, set[int]] = {}
    reads: dict[str, set[int]] = {}
    for index, statement in enumerate(loop.body):
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            always |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        for node in ast.walk(statement):
            if isinstance(node, ast.Name):
                (where if isinstance(node.ctx, ast.Store) else reads).setdefault(node.id, set()).add(index)
    reasons = []
    for name, places in where.items():
        if name in always or name in fresh:
            continue
        if reads.get(name, set()) - places:
            reasons.append(f"`{name}` is set only in some branches and read elsewhere")
    return reasons


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

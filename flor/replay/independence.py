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

The project's own helpers are followed, transitively (functions and classes of the script, and
of the project modules it imports when ``modules`` can read them): a helper that declares
``global``/``nonlocal``, changes a name it does not own (``seen["n"] += 1``, ``cache.append``,
``self.count += 1`` on an object made outside the loop, a mutable default argument), or draws
random numbers, carries state too. A new statement has no recorded value to compare, so a wrong
"independent" would store a wrong value: where in doubt, items are replayed in order. Code outside
the project (installed libraries) is not followed; only the calls above (random draws, methods
that change their object) are judged there.

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


def carried(loop: ast.For, tree: ast.AST | None = None, modules=None) -> list[str]:
    """What one iteration of ``loop`` leaves for the next (empty: none seen). ``tree``: the whole
    script, which tells objects made by assignment from functions, classes and modules, and
    holds the helpers the body calls; ``modules``: dotted module name -> its syntax tree (or
    None), for the project modules the script imports."""
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
    if tree is not None:
        outside = lambda name: name not in fresh and name not in bound_in_body
        reasons += _Helpers(tree, modules).reasons(body, outside, made)
    return list(dict.fromkeys(reasons))


def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain on a name, else None."""
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
        dotted = dotted_name(func.value)
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


# -- the project's own helpers ---------------------------------------------------------------------

_MAX_HELPER_DEPTH = 8


class _Namespace:
    """The functions, classes and imports of one module's syntax tree."""

    def __init__(self, tree: ast.AST, name: str) -> None:
        self.name = name
        self.functions: dict[str, list[ast.AST]] = {}
        self.classes: dict[str, list[ast.ClassDef]] = {}
        self.modules: dict[str, str] = {}  # alias -> dotted module (import x.y as z)
        self.imported: dict[str, tuple[str, str]] = {}  # alias -> (module, name) (from m import n)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.ClassDef):
                self.classes.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.modules[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (node.module, alias.name)

    def methods(self, name: str) -> list[ast.AST]:
        return [item for classes in self.classes.values() for cls in classes for item in cls.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name]


class _Helpers:
    """Follows the calls of a loop body into the project's functions and methods."""

    def __init__(self, tree: ast.AST, modules) -> None:
        self.script = _Namespace(tree, "")
        self.read = modules
        self.loaded: dict[str, _Namespace | None] = {}
        self.seen: set = set()

    def _module(self, dotted: str) -> "_Namespace | None":
        if self.read is None:
            return None
        if dotted not in self.loaded:
            try:
                tree = self.read(dotted)
            except Exception:  # noqa: BLE001 - an unreadable module is not followed
                tree = None
            self.loaded[dotted] = _Namespace(tree, dotted) if tree is not None else None
        return self.loaded[dotted]

    def _resolve(self, func: ast.AST, space: _Namespace, outside_objects) -> list[tuple[ast.AST, _Namespace, bool]]:
        """The project functions a call may run: (definition, its module, called on an object
        that outlives the item)."""
        found = []
        if isinstance(func, ast.Name):
            for definition in space.functions.get(func.id, []):
                found.append((definition, space, False))
            for cls in space.classes.get(func.id, []):
                found += [(item, space, False) for item in cls.body
                          if isinstance(item, ast.FunctionDef) and item.name in ("__init__", "__call__", "__post_init__")]
            if func.id in space.imported:
                module, name = space.imported[func.id]
                other = self._module(module)
                if other is not None:
                    found += self._resolve(ast.Name(id=name, ctx=ast.Load()), other, lambda n: False)
                else:
                    submodule = self._module(f"{module}.{name}")  # from pkg import helpers
                    if submodule is not None:
                        found += [(d, submodule, False) for d in submodule.functions.get("__call__", [])]
        elif isinstance(func, ast.Attribute):
            base = func.value
            if isinstance(base, ast.Name) and base.id in space.modules:
                other = self._module(space.modules[base.id])
                if other is not None:
                    found += self._resolve(ast.Name(id=func.attr, ctx=ast.Load()), other, lambda n: False)
            elif isinstance(base, ast.Name) and base.id in space.imported:
                module, name = space.imported[base.id]
                other = self._module(f"{module}.{name}")
                if other is not None:
                    found += self._resolve(ast.Name(id=func.attr, ctx=ast.Load()), other, lambda n: False)
            else:
                owner = _owner(base, attribute_ok=True)
                on_outside = owner is not None and outside_objects(owner)
                found += [(method, space, on_outside) for method in space.methods(func.attr)]
        return found

    def reasons(self, body: ast.AST, outside, made: set, space: _Namespace | None = None, depth: int = 0) -> list[str]:
        """Why the helpers that ``body`` calls carry state from one item to the next."""
        space = space or self.script
        found: list[str] = []
        for node in ast.walk(body):
            if not isinstance(node, ast.Call):
                continue
            for definition, where, on_outside in self._resolve(node.func, space, outside):
                outside_params = self._outside_params(definition, node, outside, on_outside)
                found += self._function(definition, where, outside_params, depth)
        return found

    @staticmethod
    def _outside_params(definition, call: ast.Call, outside, on_outside: bool) -> set[str]:
        """Parameters through which the function reaches state that outlives the item: ``self``
        of a method called on such an object, arguments naming such objects, mutable defaults."""
        args = definition.args
        positional = [a.arg for a in args.posonlyargs + args.args]
        result: set[str] = set()
        is_method = bool(positional) and positional[0] in ("self", "cls")
        if is_method:
            if on_outside:
                result.add(positional[0])
            positional = positional[1:]
        for name, value in zip(positional, call.args):
            owner = _owner(value, attribute_ok=True)
            if owner is not None and outside(owner):
                result.add(name)
        keywords = {a.arg for a in args.args + args.kwonlyargs}
        for keyword in call.keywords:
            owner = _owner(keyword.value, attribute_ok=True)
            if keyword.arg in keywords and owner is not None and outside(owner):
                result.add(keyword.arg)
        defaults = list(zip(reversed(args.args), reversed(args.defaults))) + [
            (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        for arg, default in defaults:
            if isinstance(default, (ast.List, ast.Dict, ast.Set, ast.Call, ast.ListComp, ast.DictComp, ast.SetComp)):
                result.add(arg.arg)  # one object shared by every call
        return result

    def _function(self, definition, space: _Namespace, outside_params: set[str], depth: int) -> list[str]:
        key = (id(definition), frozenset(outside_params))
        if key in self.seen:
            return []
        self.seen.add(key)
        name = definition.name
        if depth > _MAX_HELPER_DEPTH:
            return [f"`{name}(...)` calls helpers too deep to follow"]
        args = definition.args
        params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        declared = {n for node in ast.walk(definition) if isinstance(node, (ast.Global, ast.Nonlocal)) for n in node.names}
        local = {n for node in ast.walk(definition) for n in _stored_names(node) if node is not definition}
        local = (local | params) - declared - outside_params
        imported = set(space.modules) | set(space.imported)
        reach = lambda owner: owner is not None and owner not in local and owner not in imported and owner != "flor"
        where = f"`{name}(...)`" + (f" (in {space.name})" if space.name else "")
        reasons: list[str] = []
        for node in ast.walk(definition):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                reasons.append(f"{where} declares `{'global' if isinstance(node, ast.Global) else 'nonlocal'} "
                               f"{', '.join(node.names)}`")
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for target in targets:
                    owner = _owner(target)
                    if reach(owner):
                        reasons.append(f"{where} changes `{owner}`, which outlives the item")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func = node.func
                owner = _owner(func.value, attribute_ok=True)
                dotted = dotted_name(func.value)
                if func.attr in RANDOM_FUNCTIONS and (dotted in RANDOM_MODULES or (reach(owner) and owner not in params)):
                    reasons.append(f"{where} draws random numbers (`{dotted or owner}.{func.attr}(...)`)")
                elif func.attr in MUTATING_METHODS and reach(owner):
                    reasons.append(f"{where} changes `{owner}` (`.{func.attr}(...)`), which outlives the item")
                elif func.attr in READING_METHODS and reach(owner) and dotted not in RANDOM_MODULES:
                    reasons.append(f"{where} reads on from where the previous item left (`{owner}.{func.attr}(...)`)")
        if reasons:
            return reasons
        inner_outside = lambda owner: owner not in local
        return self.reasons(ast.Module(body=definition.body, type_ignores=[]), inner_outside, set(), space, depth + 1)

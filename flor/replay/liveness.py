"""Which names a skipped nested loop leaves *live*: read later before the script assigns them again.

Memoization skips an outer iteration's first nested loop and restores its effect from a
checkpoint. A name the loop assigns that the checkpoint does not keep (``outputs = model(**batch)``:
a model output object, too big or not plain data) matters only if something reads it before the
script assigns it again. The paths out of the nested loop are:

* the rest of the outer body (what follows the loop at each level up to the outer body; an
  enclosing plain ``for``/``while`` runs again, so its whole body counts);
* the next outer iteration, from the top of the body through the nested loop itself: the names
  the rest of the body assigns on every path are no longer the skipped loop's there (unless a
  ``break``/``continue`` may cut the body short);
* the code after the outer loop;
* functions of the script that read the name as a global (or, for a loop inside a function,
  closures defined there);
* anything at all, where the body calls ``locals()``, ``vars()``, ``eval`` or ``exec``.

The reads inside the nested loop of the next iteration are reported apart (``nested``): they
matter only where that loop runs again after a memoized iteration, which a plan can avoid.

The analysis is syntactic and conservative: an assignment counts only where it happens on every
path (both branches of an ``if``; not inside a loop, which may run no times, or a ``try`` body);
a read in any branch counts.

>>> live = live_names(outer_loop, nested_loop, module)                 # doctest: +SKIP
>>> live.rest, live.nested
({'total_loss'}, {'train_loader'})
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

DYNAMIC = frozenset({"locals", "vars", "eval", "exec", "globals"})
EVERYTHING = "*"  # in a live set: every name may be read


@dataclass(frozen=True)
class Live:
    """Names live where the nested loop ends: read on a path that does not run the nested loop
    again (``rest``), and read only by the nested loop itself in a later iteration (``nested``)."""

    rest: frozenset[str]
    nested: frozenset[str]

    def reads(self, name: str) -> bool:
        return EVERYTHING in self.rest or name in self.rest

    def reads_in_nested(self, name: str) -> bool:
        return not self.reads(name) and (EVERYTHING in self.nested or name in self.nested)


def _stored(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


class _Scan:
    """Reads before definite assignment, over statements in order."""

    def __init__(self, nested: ast.AST | None = None) -> None:
        self.reads: set[str] = set()
        self.nested_reads: set[str] = set()
        self.nested = nested
        self._in_nested = False

    def _load(self, node: ast.AST | None, pending: set[str]) -> None:
        """Record the names ``node`` (an expression, or a statement read whole) loads."""
        if node is None:
            return
        bound = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.comprehension):
                bound |= _stored(sub.target)  # a comprehension's own variables
            elif isinstance(sub, ast.Lambda):
                bound |= {a.arg for a in ast.walk(sub.args) if isinstance(a, ast.arg)}
        target = self.nested_reads if self._in_nested else self.reads
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Load, ast.Del)):
                if sub.id in pending and sub.id not in bound:
                    target.add(sub.id)
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in DYNAMIC):
                target.add(EVERYTHING)

    def block(self, statements: list[ast.stmt], pending: set[str]) -> set[str]:
        """Scan ``statements``; return the names they assign on every path (removed from a copy
        of ``pending`` as the scan goes)."""
        pending = set(pending)
        assigned: set[str] = set()
        for statement in statements:
            done = self.statement(statement, pending)
            pending -= done
            assigned |= done
        return assigned

    def statement(self, node: ast.stmt, pending: set[str]) -> set[str]:
        """Scan one statement; return the names it assigns on every path."""
        if node is self.nested:
            outer, self._in_nested = self._in_nested, True
            try:
                return self._statement(node, pending)
            finally:
                self._in_nested = outer
        return self._statement(node, pending)

    def _statement(self, node: ast.stmt, pending: set[str]) -> set[str]:
        if isinstance(node, ast.Assign):
            self._load(node.value, pending)
            for target in node.targets:
                self._load_target(target, pending)
            return set().union(*(_stored(t) for t in node.targets))
        if isinstance(node, ast.AugAssign):
            self._load(node.value, pending)
            if isinstance(node.target, ast.Name):
                if node.target.id in pending:
                    (self.nested_reads if self._in_nested else self.reads).add(node.target.id)
                return {node.target.id}
            self._load_target(node.target, pending)
            return set()
        if isinstance(node, ast.AnnAssign):
            self._load(node.value, pending)
            self._load_target(node.target, pending)
            return _stored(node.target) if node.value is not None else set()
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self._load(node.iter, pending)
            self.block(node.body, pending - _stored(node.target))
            self.block(node.orelse, pending)
            return set()  # the body may run no times
        if isinstance(node, ast.While):
            self._load(node.test, pending)
            self.block(node.body, pending)
            self.block(node.orelse, pending)
            return set()
        if isinstance(node, ast.If):
            self._load(node.test, pending)
            return self.block(node.body, pending) & self.block(node.orelse, pending)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            bound = set()
            for item in node.items:
                self._load(item.context_expr, pending - bound)
                if item.optional_vars is not None:
                    bound |= _stored(item.optional_vars)
            return bound | self.block(node.body, pending - bound)
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self.block(node.body, pending)  # may stop anywhere: assigns nothing for sure
            for handler in node.handlers:
                self._load(handler.type, pending)
                self.block(handler.body, pending - ({handler.name} if handler.name else set()))
            self.block(node.orelse, pending)
            return self.block(node.finalbody, pending)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                self._load(decorator, pending)
            if not isinstance(node, ast.ClassDef):
                for default in [*node.args.defaults, *node.args.kw_defaults]:
                    self._load(default, pending)
            # Its body reads free names when called, maybe here: counted as reads now.
            self._load_free(node, pending)
            return {node.name}
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            return set()
        # Expr, Return, Raise, Assert, Delete, Match and the rest: every name it mentions is read.
        self._load(node, pending)
        return set()

    def _load_target(self, target: ast.AST, pending: set[str]) -> None:
        """An assignment target reads the objects it subscripts or sets attributes of."""
        for sub in ast.walk(target):
            if isinstance(sub, (ast.Attribute, ast.Subscript)):
                self._load(sub.value, pending)
                if isinstance(sub, ast.Subscript):
                    self._load(sub.slice, pending)

    def _load_free(self, function: ast.AST, pending: set[str]) -> None:
        """Names a function (or class) body reads without assigning them itself."""
        local = set()
        for sub in ast.walk(function):
            if sub is function:
                continue
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                local.add(sub.id)
            elif isinstance(sub, ast.arg):
                local.add(sub.arg)
        for sub in ast.walk(function):
            if isinstance(sub, (ast.Global, ast.Nonlocal)):
                local -= set(sub.names)
        self._load(function, pending - local)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _block_of(parent: ast.AST, child: ast.AST) -> list[ast.stmt] | None:
    """The statement list of ``parent`` that holds ``child``."""
    for name in ("body", "orelse", "finalbody", "handlers"):
        block = getattr(parent, name, None)
        if isinstance(block, list) and child in block:
            return block
    return None


def _cuts_short(statements: list[ast.stmt]) -> bool:
    """Whether a ``break`` or ``continue`` of the enclosing loop appears in ``statements``."""
    def walk(node, inner_loop: bool) -> bool:
        if isinstance(node, (ast.Break, ast.Continue)) and not inner_loop:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return False
        for child in ast.iter_child_nodes(node):
            if walk(child, inner_loop or isinstance(node, (ast.For, ast.AsyncFor, ast.While))):
                return True
        return False

    return any(walk(s, False) for s in statements)


def live_names(outer: ast.For, nested: ast.For, module: ast.Module, names: set[str] | None = None) -> Live:
    """The names (of ``names``; None: any) live where ``nested``, the first nested loop of the
    outer loop ``outer``, ends (see the module's docstring)."""
    parents = _parents(module)
    pending = set(names) if names is not None else _all_names(module)
    scan = _Scan(nested)

    # The rest of the body, level by level up to the outer loop.
    current: ast.AST = nested
    assigned: set[str] = set()
    rest_statements: list[ast.stmt] = []
    while current is not outer:
        parent = parents.get(current)
        if parent is None:
            break
        block = _block_of(parent, current)
        if isinstance(parent, (ast.For, ast.AsyncFor, ast.While)) and parent is not outer:
            # A plain loop around the nested one runs its body again, the nested loop included
            # (only its first run in an iteration is skipped): all of it reads as the rest does.
            scan.nested, nested_again = None, scan.nested
            scan.block(parent.body, pending - assigned)
            scan._load(getattr(parent, "test", None), pending - assigned)
            scan.nested = nested_again
        elif isinstance(parent, ast.Try) and block is parent.body:
            for handler in parent.handlers:
                scan.block(handler.body, pending - assigned)
        if block is not None:
            following = block[block.index(current) + 1:]
            rest_statements += following
            assigned |= scan.block(following, pending - assigned)
        current = parent
    # The next iteration, from the top of the body through the nested loop (and on).
    short = _cuts_short(rest_statements) or _cuts_short(outer.body)
    again = pending if short else pending - assigned
    scan.block(outer.body, again - _stored(outer.target))
    # After the outer loop: what follows it at each level up to its function or module.
    current = outer
    while True:
        parent = parents.get(current)
        if parent is None:
            break
        block = _block_of(parent, current)
        if block is not None:
            scan.block(block[block.index(current) + 1:], pending)
        if isinstance(parent, (ast.For, ast.AsyncFor, ast.While)):
            scan.block(parent.body, pending)
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            break
        current = parent
    # Functions that read the names as globals (the loop at module level, or names declared
    # global) or as closures (functions defined in the function that holds the loop).
    home = _function_of(outer, parents)
    declared = {n for node in ast.walk(home) for n in getattr(node, "names", ())
                if isinstance(node, ast.Global)} if home is not None else set()
    for function in ast.walk(module):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or function is home:
            continue
        if _encloses(function, outer):
            continue
        inside_home = home is not None and _encloses(home, function)
        visible = pending if (home is None or inside_home) else pending & declared
        if visible:
            scan._load_free(function, visible)
    return Live(frozenset(scan.reads), frozenset(scan.nested_reads - scan.reads))


def _all_names(module: ast.Module) -> set[str]:
    return {n.id for n in ast.walk(module) if isinstance(n, ast.Name)}


def _function_of(node: ast.AST, parents: dict) -> ast.AST | None:
    current = parents.get(node)
    while current is not None:
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return current
        current = parents.get(current)
    return None


def _encloses(outer: ast.AST, inner: ast.AST) -> bool:
    return any(node is inner for node in ast.walk(outer))

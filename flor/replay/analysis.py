"""Where statements stand relative to the checkpointed loops of a script, from its syntax tree.

The *outer loop* is the outermost ``for ... in flor.loop(...)`` (preferably inside a
``with flor.checkpointing(...)``); *nested loops* are the ``flor.loop`` loops inside its body.
flor is recognised under the names the script's imports give it (``import flor as fl``,
``from flor import loop``): see ``florcalls``.
A statement is ``before`` or ``after`` the outer loop, in its ``body`` (outside nested loops),
or ``nested`` (inside a nested loop, or anywhere replay cannot see statically: those are
re-executed, which is always correct). A statement in a helper function stands where the helper
is *called*: the script's calls of it are found by name (``test(...)``, ``self.test(...)``), each
placed in turn; a helper called from the epoch body is ``body``, one called from a nested loop (or
from both, or never seen called) ``nested``.

``guards(lineno)`` tells in which outer iterations a statement runs when it sits under an ``if``
(``if it % eval_interval == 0:``): the recorded flor.log calls in the same branch, which ran in
exactly those iterations.

>>> layout = Layout.of(source)                                       # doctest: +SKIP
>>> layout.where(42)
'body'
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .florcalls import FlorNames, flor_names, is_flor_call
from .liveness import Live, live_names

BEFORE, BODY, NESTED, AFTER = "before", "body", "nested", "after"


def is_flor_loop(node: ast.AST, names: FlorNames) -> bool:
    """``for ... in flor.loop(...)``, under whatever name the script imported flor or its loop."""
    return isinstance(node, (ast.For, ast.AsyncFor)) and is_flor_call(node.iter, "loop", names)


def _loop_name(node: ast.For) -> str | None:
    args = node.iter.args if isinstance(node.iter, ast.Call) else []
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


@dataclass
class Layout:
    """The checkpointed loops of one script version."""

    tree: ast.Module
    outer: ast.For | None
    nested: list[ast.For] = field(default_factory=list)
    functions: list[ast.AST] = field(default_factory=list)
    other_loops: list[ast.For] = field(default_factory=list)
    names: FlorNames = field(default_factory=FlorNames)
    _calls: dict | None = None
    _live: dict = field(default_factory=dict)

    @classmethod
    def of(cls, source: str) -> "Layout":
        """Analyse ``source``."""
        tree = ast.parse(source)
        names = flor_names(tree)
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node

        def enclosing_flor_loop(node):
            current = parents.get(node)
            while current is not None:
                if is_flor_loop(current, names):
                    return current
                if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return None
                current = parents.get(current)
            return None

        def in_checkpointing(node):
            current = parents.get(node)
            while current is not None:
                if isinstance(current, (ast.With, ast.AsyncWith)) and any(
                    is_flor_call(item.context_expr, "checkpointing", names) for item in current.items
                ):
                    return True
                current = parents.get(current)
            return False

        loops = [n for n in ast.walk(tree) if is_flor_loop(n, names)]
        top = [n for n in loops if enclosing_flor_loop(n) is None]
        checkpointed = [n for n in top if in_checkpointing(n)]
        outer = min(checkpointed or top, key=lambda n: n.lineno) if (checkpointed or top) else None
        nested = [n for n in loops if outer is not None and enclosing_flor_loop(n) is outer]
        others = [n for n in loops if n is not outer and n not in nested]
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return cls(tree, outer, sorted(nested, key=lambda n: n.lineno), functions, others, names)

    @property
    def outer_name(self) -> str | None:
        """The name given to flor.loop for the outer loop."""
        return None if self.outer is None else _loop_name(self.outer)

    @property
    def nested_name(self) -> str | None:
        """The name given to flor.loop for the first nested loop."""
        return _loop_name(self.nested[0]) if self.nested else None

    def _function_at(self, lineno: int):
        """The innermost function holding ``lineno`` that does not hold the outer loop (a helper)."""
        outer = self.outer
        inside = [f for f in self.functions if f.lineno <= lineno <= f.end_lineno
                  and not (outer is not None and f.lineno <= outer.lineno <= f.end_lineno)]
        return max(inside, key=lambda f: f.lineno) if inside else None

    def _calls_of(self, function) -> list[ast.Call]:
        if self._calls is None:
            calls: dict[str, list[ast.Call]] = {}
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                    if name is not None:
                        calls.setdefault(name, []).append(node)
            self._calls = calls
        return [c for c in self._calls.get(function.name, []) if not (function.lineno <= c.lineno <= function.end_lineno)]

    def places(self, lineno: int, _seen: frozenset = frozenset()) -> set[str]:
        """Every place line ``lineno`` runs from: {before, body, nested, after}, through the calls
        of the helper it is in."""
        if self.outer is None:
            return {NESTED}
        for loop in self.nested + self.other_loops:
            if loop.lineno <= lineno <= loop.end_lineno:
                return {NESTED}
        function = self._function_at(lineno)
        if function is not None:
            calls = self._calls_of(function)
            if not calls or function in _seen:
                return {NESTED}  # never seen called (or recursive): re-execute
            found: set[str] = set()
            for call in calls:
                found |= self.places(call.lineno, _seen | {function})
            return found
        outer = self.outer
        if outer.lineno <= lineno <= outer.end_lineno:
            return {BODY}
        return {BEFORE if lineno < outer.lineno else AFTER}

    def where(self, lineno: int) -> str:
        """Where line ``lineno`` stands, the most demanding of its :meth:`places`."""
        found = self.places(lineno)
        for place in (NESTED, BODY, AFTER, BEFORE):
            if place in found:
                return place
        return NESTED

    def guards(self, lineno: int, _seen: frozenset = frozenset()) -> list[set[str]] | None:
        """For each way line ``lineno`` is reached inside the outer body under an ``if``, the
        constant names of the flor.log calls that run unconditionally in the same branch; None
        when one way is not guarded like that (the line may run in any iteration)."""
        if self.outer is None:
            return None
        function = self._function_at(lineno)
        if function is not None:
            calls = self._calls_of(function)
            if not calls or function in _seen:
                return None
            found: list[set[str]] = []
            for call in calls:
                sub = self.guards(call.lineno, _seen | {function})
                if sub is None:
                    return None
                found += sub
            return found
        branch = self._branch_at(lineno)
        if branch is None:
            return None
        names = {name for statement in branch for name in self._unconditional_logs(statement)}
        return [names] if names else None

    def _branch_at(self, lineno: int) -> list[ast.stmt] | None:
        """The statements of the innermost branch of an ``if`` inside the outer loop's body (and
        not in a nested loop) that holds ``lineno``."""
        best = None
        for node in ast.walk(self.outer):
            if isinstance(node, ast.If) and not any(loop.lineno <= node.lineno <= loop.end_lineno for loop in self.nested):
                for block in (node.body, node.orelse):
                    if block and block[0].lineno <= lineno <= max(s.end_lineno for s in block):
                        if best is None or block[0].lineno >= best[0].lineno:
                            best = block
        return best

    def _unconditional_logs(self, statement: ast.stmt) -> list[str]:
        """Constant names of the flor.log calls a statement makes whenever it runs (not under
        another if, loop or function)."""
        if isinstance(statement, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.FunctionDef,
                                  ast.AsyncFunctionDef, ast.ClassDef, ast.Try)):
            return []
        if isinstance(statement, (ast.With, ast.AsyncWith)):
            return [n for inner in statement.body for n in self._unconditional_logs(inner)]
        found = []
        for node in ast.walk(statement):
            if is_flor_call(node, "log", self.names) and node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    found.append(node.args[0].value)
        return found

    def _first_nested_line(self) -> int | None:
        """The line of the outer body where its first nested flor loop runs: the loop itself, or the
        call of a helper that holds one (``train(...)``); None when the body runs none."""
        if self.outer is None:
            return None
        lines = [loop.lineno for loop in self.nested]
        holders = {f.name for f in self.functions if any(f.lineno <= loop.lineno <= f.end_lineno
                                                         for loop in self.other_loops)}
        for node in ast.walk(self.outer):
            if isinstance(node, ast.Call) and node is not self.outer.iter:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                if name in holders:
                    lines.append(node.lineno)
        return min(lines) if lines else None

    def before_first_nested(self, lineno: int, _seen: frozenset = frozenset()) -> bool:
        """Whether line ``lineno`` may run in the outer body before its first nested loop (itself,
        or through a helper called there): a memoized iteration then needs the state that the
        iteration before it left, not only its own checkpoint."""
        first = self._first_nested_line()
        if first is None:
            return False
        function = self._function_at(lineno)
        if function is not None:
            if function in _seen:
                return False
            return any(self.before_first_nested(call.lineno, _seen | {function}) for call in self._calls_of(function))
        return self.outer.lineno < lineno < first

    def live_after_first_nested(self, names: set[str]) -> Live:
        """Which of ``names`` are live where the first nested loop ends (read later before the
        script assigns them again; see ``liveness``): the values that must come from the skipped
        loop's checkpoint."""
        if self.outer is None or not self.nested:
            return Live(frozenset(), frozenset())
        key = frozenset(names)
        if key not in self._live:  # a layout shared by the runs of one version asks once per set of names
            self._live[key] = live_names(self.outer, self.nested[0], self.tree, names)
        return self._live[key]


def strategy_for(places: list[str]) -> str:
    """The plan that the most demanding statement needs: 'reexec', 'memo' or 'outside'."""
    if NESTED in places:
        return "reexec"
    if BODY in places:
        return "memo"
    return "outside"

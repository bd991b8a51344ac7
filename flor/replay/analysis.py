"""Where statements stand relative to the checkpointed loops of a script, from its syntax tree.

The *outer loop* is the outermost ``for ... in flor.loop(...)`` (preferably inside a
``with flor.checkpointing(...)``); *nested loops* are the ``flor.loop`` loops inside its body.
flor is recognised under the names the script's imports give it (``import flor as fl``,
``from flor import loop``): see ``florcalls``.
A statement is ``before`` or ``after`` the outer loop, in its ``body`` (outside nested loops),
or ``nested`` (inside a nested loop, or anywhere replay cannot see statically, such as a helper
function: those are re-executed, which is always correct).

>>> layout = Layout.of(source)                                       # doctest: +SKIP
>>> layout.where(42)
'body'
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .florcalls import FlorNames, flor_names, is_flor_call

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
        return cls(tree, outer, sorted(nested, key=lambda n: n.lineno), functions, others)

    @property
    def outer_name(self) -> str | None:
        """The name given to flor.loop for the outer loop."""
        return None if self.outer is None else _loop_name(self.outer)

    def where(self, lineno: int) -> str:
        """Where line ``lineno`` stands: before, body, nested or after."""
        if self.outer is None:
            return NESTED
        for loop in self.nested + self.other_loops:
            if loop.lineno <= lineno <= loop.end_lineno:
                return NESTED
        outer = self.outer
        inside_function = [
            f for f in self.functions
            if f.lineno <= lineno <= f.end_lineno and not (f.lineno <= outer.lineno <= f.end_lineno)
        ]
        if inside_function:
            return NESTED  # a helper may be called from anywhere: re-execute
        if outer.lineno <= lineno <= outer.end_lineno:
            return BODY
        return BEFORE if lineno < outer.lineno else AFTER

    def names_read_after_first_nested(self) -> set[str]:
        """Names the outer body reads after its first nested loop before assigning them there:
        the values that must come from the skipped loop or earlier iterations."""
        if self.outer is None or not self.nested:
            return set()
        first = self.nested[0]
        assigned: set[str] = set()
        read: set[str] = set()
        for statement in self.outer.body:
            if statement.lineno <= first.end_lineno:
                continue
            bound_first = set()
            for node in ast.walk(statement):
                if isinstance(node, (ast.With, ast.AsyncWith)):
                    for item in node.items:
                        if item.optional_vars is not None:
                            bound_first |= _stored(item.optional_vars)
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                    bound_first |= _stored(node.target)
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    if node.id not in assigned and node.id not in bound_first:
                        read.add(node.id)
            assigned |= _stored(statement)
        return read


def _stored(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def strategy_for(places: list[str]) -> str:
    """The plan that the most demanding statement needs: 'reexec', 'memo' or 'outside'."""
    if NESTED in places:
        return "reexec"
    if BODY in places:
        return "memo"
    return "outside"

"""Splicing: the old text with the placed statements' lines inserted, checked, and each
statement's outcome.

Nothing else of the old file changes. The result is compiled, and removing the inserted statements
from its syntax tree must give back exactly the old tree, with each one where it was meant to go.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, field

from .results import InsertedStatement, NewStatement
from .syntax import BLOCK_FIELDS, first_line
from .text import indentation, parse_statement
from .trees import Node, Tree


@dataclass
class Decision:
    """What :class:`~flor.replay.propagation.placement.Placer` decided for one statement: the block
    ``owner.block`` and position ``k`` of the old tree, and the lines to insert there."""

    statement: NewStatement
    node: Node | None
    order: int
    label: str
    confidence: float = 0.0
    reason: str = ""
    placed: bool = False
    present: Node | None = None  # already in this version (mapped)
    owner: Node | None = None
    block: str = ""
    k: int = 0
    mode: str = "after"
    detail: str = ""
    text: str = ""
    lines: list[str] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    binds: set[str] = field(default_factory=set)
    line_index: int = 0


class Splice:
    """The output of one placement: the ``old`` tree's text with the lines of ``decisions`` spliced in."""

    def __init__(self, old: Tree, decisions: list[Decision]):
        self.old, self.decisions = old, decisions
        # The old file's own line ending (of its first line), for the inserted lines.
        self.newline = "\r\n" if "\r\n" in old.source[: old.source.find("\n") + 1 or None] else "\n"

    def assemble(self) -> tuple[str, dict[int, tuple[int, int]]]:
        """The output text, and for each decision (by ``order``) its first and last output line."""
        lines = list(self.old.lines)
        inserting = [d for d in self.decisions if d.present is None]
        # Statements going to the same position stay together, in today's order.
        first_mode: dict[tuple[int, str, int], str] = {}
        for d in sorted(inserting, key=lambda d: d.order):
            d.mode = first_mode.setdefault((id(d.owner), d.block, d.k), d.mode)
            d.line_index = self._insertion_index(d)
        at_end = any(d.line_index == len(lines) for d in inserting)
        if lines and not lines[-1].endswith(("\n", "\r")) and at_end:
            lines[-1] += self.newline
        out: list[str] = []
        cursor = 0
        spans: dict[int, tuple[int, int]] = {}
        for d in sorted(inserting, key=lambda d: (d.line_index, d.order)):
            out.extend(lines[cursor : d.line_index])
            cursor = d.line_index
            start = len(out) + 1
            out.extend(line + self.newline for line in d.lines)
            spans[d.order] = (start, len(out))
        out.extend(lines[cursor:])
        for d in self.decisions:
            if d.present is not None:
                line = self._shift(d.present.first_line)
                spans[d.order] = (line, line + d.present.node.end_lineno - d.present.first_line)
        return "".join(out), spans

    def _insertion_index(self, d: Decision) -> int:
        lines = self.old.lines
        O = d.owner.blocks[d.block]
        indent = len(indentation(lines[O[0].first_line - 1]))
        if d.mode == "after":
            idx = O[d.k - 1].node.end_lineno
            # Comments indented deeper than the block belong to the block that just ended.
            j = idx
            while j < len(lines):
                text = lines[j].strip()
                if not text:
                    j += 1
                    continue
                if text.startswith("#") and len(indentation(lines[j])) > indent:
                    idx = j = j + 1
                    continue
                break
            return idx
        idx = O[d.k].first_line - 1
        while idx > 0 and lines[idx - 1].strip().startswith("#") and len(indentation(lines[idx - 1])) == indent:
            idx -= 1
        return idx

    def _shift(self, line: int) -> int:
        """Where old line ``line`` ends up in the output."""
        return line + sum(len(d.lines) for d in self.decisions if d.present is None and d.line_index < line)

    def verify(self, source: str, spans: dict[int, tuple[int, int]]) -> str:
        """An empty string when the output compiles and differs from the old tree exactly by the
        inserted statements, each in its intended block and position; else what is wrong."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(source, "<propagated>", "exec", dont_inherit=True)
            tree = ast.parse(source)
        except (SyntaxError, ValueError) as exc:
            return f"the result would not compile ({getattr(exc, 'msg', exc)})"
        inserting = {spans[d.order][0]: d for d in self.decisions if d.present is None}
        found: dict[int, tuple[ast.AST, str, int, ast.stmt]] = {}

        def strip(node: ast.AST) -> None:
            for fld in BLOCK_FIELDS:
                value = getattr(node, fld, None)
                if not isinstance(value, list):
                    continue
                keep = []
                for child in value:
                    if isinstance(child, ast.stmt) and child.lineno in inserting and child.lineno not in found:
                        found[child.lineno] = (node, fld, len(keep), child)
                        continue
                    keep.append(child)
                setattr(node, fld, keep)
                for child in keep:
                    strip(child)

        strip(tree)
        if ast.dump(tree) != ast.dump(self.old.module):
            return "internal check failed: the result changes more than the inserted lines"
        for line, d in inserting.items():
            if line not in found:
                return "internal check failed: an inserted statement did not land as a statement"
            parent, fld, index, child = found[line]
            if fld != d.block or index != d.k:
                return "internal check failed: an inserted statement landed in another position"
            if d.owner.parent is None:
                if not isinstance(parent, ast.Module):
                    return "internal check failed: an inserted statement landed in another block"
            elif first_line(parent) != self._shift(d.owner.first_line):
                return "internal check failed: an inserted statement landed in another block"
            if ast.dump(child) != ast.dump(parse_statement(d.text)):
                return "internal check failed: an inserted statement changed on the way"
        return ""

    def results(self, spans: dict[int, tuple[int, int]] | None) -> list[InsertedStatement]:
        """Each statement's outcome; ``spans`` None when nothing is placed (the old source stays)."""
        out = []
        for d in self.decisions:
            placed = spans is not None and d.placed
            start, end = spans[d.order] if placed else (None, None)
            text = "\n".join(d.lines) if d.lines else d.text
            out.append(
                InsertedStatement(start, end, text, d.confidence, d.reason, list(d.statement.names), placed,
                                  dict(d.renames), d.statement)
            )  # fmt: skip
        return out

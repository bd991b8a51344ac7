"""Renaming: which old variable a variable of today's statement is, by majority vote over the
statements mapped to each other, and the statement's text with its variables renamed.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict

from .inline import helper_calls, top_mapped
from .matching import Matching
from .results import Refusal
from .scopes import binding, statement_names
from .syntax import dfs, is_self
from .trees import Node


class Votes:
    """Variable correspondences between today's script and one old version: names at the same
    place in statements mapped to each other that have the same shape, by pair of scopes and over
    the whole file, and through the arguments of a helper function called in one version and
    inline in the other."""

    def __init__(self, matching: Matching):
        self.m = matching
        self.votes, self.global_votes = self._collect_votes()

    def _collect_votes(self):
        """Variable correspondences: names at the same place in statements mapped to each other
        that have the same shape. Keyed by (today scope, old scope), and over the whole file."""
        votes: dict = defaultdict(lambda: defaultdict(Counter))
        global_votes: dict = defaultdict(Counter)
        for t, o in self.m.t2o.items():
            if t.parent is None or t.head_anon != o.head_anon or len(t.names) != len(o.names):
                continue
            for (a, where), (b, _) in zip(t.names, o.names):
                if where == "skip":
                    continue
                key = (t, o) if where == "inner" else (t.scope, o.scope)
                votes[key][a][b] += 1
                global_votes[a][b] += 1
        self._bind_votes(votes)
        return votes, global_votes

    def _bind_votes(self, votes) -> None:
        """Votes through a call of a helper function that the other version has inline: a
        parameter's counterpart is also the counterpart of the variable passed for it. Today's
        ``train_epoch(net)``, whose ``net.w`` maps to the old inline ``model.w``, votes net -> model
        in the calling scope; and the same for an old helper against today's inline code."""
        for g, call in helper_calls(self.m.today, self.m.t2o):
            scopes = {self.m.t2o[d].scope for d in top_mapped(g, self.m.t2o)}
            if len(scopes) != 1:
                continue
            (old_scope,) = scopes
            inside = votes.get((g, old_scope), {})
            for param, arg in binding(g.node, call.node.value):
                for b, count in inside.get(param, {}).items():
                    votes[(call.scope, old_scope)][arg][b] += count
        for f, call in helper_calls(self.m.old, self.m.o2t):
            scopes = {self.m.o2t[d].scope for d in top_mapped(f, self.m.o2t)}
            if len(scopes) != 1:
                continue
            (today_scope,) = scopes
            inside = votes.get((today_scope, f), {})
            for param, arg in binding(f.node, call.node.value):
                for a, counter in list(inside.items()):
                    if counter.get(param):
                        votes[(today_scope, call.scope)][a][arg] += counter[param]

    def rename(
        self, name: str, today_scope: Node, old_scope: Node, old_names: set[str],
    ) -> tuple[str, float, str]:
        """(old name, confidence, why) for a variable of today's statement. Votes from the same pair
        of scopes decide; votes from elsewhere in the file only for a name this scope lacks."""
        counter = self.votes.get((today_scope, old_scope), {}).get(name)
        if not counter:
            if name in old_names:
                return name, 1.0, ""
            counter = self.global_votes.get(name)
        if not counter:
            return name, 1.0, ""
        ranked = counter.most_common()
        total = sum(counter.values())
        top, count = ranked[0]
        if len(ranked) > 1 and ranked[1][1] == count:
            options = " or ".join(f"`{n}`" for n, c in ranked if c == count)
            return top, 0.5, f"`{name}` corresponds to {options} in this version (ambiguous)"
        if count == total:
            return top, 1.0, ""
        return top, count / total, f"`{name}` corresponds to `{top}` in only {count} of {total} places"


def rename_text(source: str, stmt: ast.stmt, renames: dict[str, str]) -> str:
    """``source`` with the variables in ``renames`` replaced, by their positions in the syntax
    tree, so that strings, comments, attributes and keyword names stay as they are."""
    if not renames:
        return source
    free, _ = statement_names(stmt)
    lines = source.split("\n")
    edits: list[tuple[int, int, int, str, str]] = []
    for node in dfs(stmt):
        if isinstance(node, ast.Name) and node.id in renames and node.id in free and isinstance(node.ctx, ast.Load):
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, node.id, renames[node.id]))
        elif isinstance(node, ast.Attribute) and is_self(node.value) and f"self.{node.attr}" in renames:
            new = renames[f"self.{node.attr}"]
            if new.startswith("self."):
                end = node.end_col_offset
                edits.append((node.end_lineno - 1, end - len(node.attr.encode()), end, node.attr, new[5:]))
    for row, start, end, was, new in sorted(edits, reverse=True):
        raw = lines[row].encode()
        if raw[start:end].decode() != was:  # positions of this Python do not point at the name
            raise Refusal(f"cannot rename `{was}` safely in its text")
        lines[row] = (raw[:start] + new.encode() + raw[end:]).decode()
    return "\n".join(lines)

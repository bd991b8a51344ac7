"""A helper function that one version calls and the other has inline.

Today's ``train_epoch(net)`` may stand for the old inline step loop (:func:`via_call`), and a
statement of today's training loop may sit, in the old version, inside a helper function that the
old loop calls once (:func:`via_inline`). Either way, the statements around a new statement are
found in the other version through that function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .matching import Matching
from .syntax import is_docstring
from .trees import Node, Tree


@dataclass
class Via:
    """Old statements ``lo..hi`` of a block that stand for a statement of today's block through a
    helper function: one side calls it, the other has its code inline."""

    lo: int
    hi: int
    score: float
    note: str
    lead: bool  # the function has code without a counterpart before its mapped code
    trail: bool  # ... or after it
    function: str
    group: tuple[int, int] | None  # today's statements whose code is in the old function


def helper_calls(tree: Tree, mapping: dict) -> list[tuple[Node, Node]]:
    """(function, the one statement that calls it) for the helper functions of ``tree`` that
    are defined once and called once, from a statement of their own, neither of which has a
    counterpart in the other version."""
    out = []
    for node in tree.nodes[1:]:
        fn = tree.called_function(node)
        if fn is not None and fn not in node.ancestors() and fn not in mapping and node not in mapping:
            out.append((fn, node))
    return out


def top_mapped(node: Node, mapping: dict) -> list[Node]:
    """The outermost statements inside ``node`` that have a counterpart, in order."""
    out: list[Node] = []
    for kids in node.blocks.values():
        for kid in kids:
            if kid in mapping:
                out.append(kid)
            else:
                out.extend(top_mapped(kid, mapping))
    return out


def edges(fn: Node, mapping: dict) -> tuple[bool, bool]:
    """Whether the body of function ``fn`` has statements without any counterpart before the
    first (leading) or after the last (trailing) statement that has one. Docstrings, ``pass``
    and ``return`` of nothing or of a variable do not count."""
    body = fn.blocks.get("body", [])
    has = [b in mapping or any(d in mapping for d in b.descendants()) for b in body]
    if True not in has:
        return False, False
    first, last = has.index(True), len(has) - 1 - has[::-1].index(True)

    def inert(b: Node) -> bool:
        node = b.node
        if isinstance(node, ast.Return):
            return node.value is None or isinstance(node.value, ast.Name)
        return isinstance(node, ast.Pass) or is_docstring(node)

    return any(not inert(b) for b in body[:first]), any(not inert(b) for b in body[last + 1 :])


def via_call(m: Matching, u: Node, owner: Node, fld: str) -> Via | str | None:
    """Where the old block ``owner.fld`` has inline the code of the helper function that today's
    statement ``u`` calls (the old inline step loop for today's ``train_epoch(net)``); a string
    (why) when that code is there only in part, deeper inside one of its blocks, or mixed with
    other code of today's block (ambiguous); None when it is not there."""
    if u in m.t2o or u.blocks:
        return None
    g = m.today.called_function(u)
    if g is None or g in m.t2o or g in u.ancestors():
        return None
    inner = top_mapped(g, m.t2o)
    found, outside, nested = set(), 0, None
    for d in inner:
        x = y = m.t2o[d]
        while y.parent is not None and not (y.parent is owner and y.field == fld):
            y = y.parent
        if y.parent is None:
            outside += 1
        elif y is x or _same_unmapped_block(m, g, d, y):
            found.add(y.index)
        else:
            nested = nested or y
    name = g.node.name
    if nested is not None:
        return f"this version has the code of `{name}` inside `{nested.header_text(m.old.lines)}`"
    if not found:
        return None
    if outside:
        return f"this version has only part of the code of `{name}` here"
    lo, hi = min(found), max(found)
    O = owner.blocks[fld]
    for o in O[lo : hi + 1]:
        t = m.o2t.get(o)
        if t is not None and g not in t.ancestors():
            return f"this version has the code of `{name}` mixed with other statements"
    lead, trail = edges(g, m.t2o)
    # Code of the helper without a counterpart may be the old statements right next to its code.
    lead = lead and lo > 0 and O[lo - 1] not in m.o2t
    trail = trail and hi + 1 < len(O) and O[hi + 1] not in m.o2t
    note = f"`{u.header_text(m.today.lines)}` runs code that this version has inline"
    score = min(m.score.get(d, 1.0) for d in inner)
    return Via(lo, hi, score, note, lead, trail, name, None)


def _same_unmapped_block(m: Matching, g: Node, d: Node, y: Node) -> bool:
    """Whether ``d``, inside function ``g``, lies in a statement of ``g``'s body that, like the
    old statement ``y`` around its counterpart, has no counterpart and is of the same kind (a
    loop whose body changed too much to be matched as a whole)."""
    top = next((a for a in [d, *d.ancestors()] if a.parent is g), None)
    return top is not None and top is not d and top not in m.t2o and y not in m.o2t and top.kind == y.kind


def via_inline(m: Matching, u: Node, owner: Node, fld: str) -> Via | str | None:
    """The reverse of :func:`via_call`: today's statement ``u`` has its counterpart inside an
    old helper function that the old block ``owner.fld`` calls, once. The span is that call;
    ``group`` gives the first and last of today's statements (in ``u``'s block) whose code is in
    that function. A string (why) when that code is also elsewhere today (ambiguous)."""
    x = m.t2o.get(u)
    if x is None:
        return None
    f = next((a for a in x.ancestors() if a.kind == "FunctionDef"), None)
    if f is None or f in m.o2t or f is owner or f in owner.ancestors():
        return None
    calls = [c for c in owner.blocks[fld] if c not in m.o2t and m.old.called_function(c) is f]
    if len(calls) != 1:
        return None
    name, block = f.node.name, (u.parent, u.field)
    indices = set()
    for d in top_mapped(f, m.o2t):
        z = w = m.o2t[d]
        while w.parent is not None and (w.parent, w.field) != block:
            w = w.parent
        if w.parent is None or w is not z:
            return f"this version has its code inside `{name}`, together with code from elsewhere"
        indices.add(w.index)
    lead, trail = edges(f, m.o2t)
    note = f"`{u.header_text(m.today.lines)}` is inside `{name}` in this version"
    j = calls[0].index
    return Via(j, j, m.score.get(u, 1.0), note, lead, trail, name, (min(indices), max(indices)))

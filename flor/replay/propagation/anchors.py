"""Anchors: the old block that a new statement goes into, and the statements around it today
(its anchors), each with the old statements it stands for in that block.

A statement is placed by its neighbours; when one of them has an ambiguous counterpart, or its
counterpart moved to another block, the place is a guess, and the statement is refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .inline import via_call, via_inline
from .matching import Matching
from .results import Refusal
from .trees import Node

# Confidences that a refusal or a placement decided here carries (see placement for the others).
CONF_AMBIGUOUS = 0.4  # two places fit: a refusal, however good each place looks
CONF_MOVED_BLOCK = 0.8  # its block, or a neighbour, has a counterpart only elsewhere


@dataclass
class Site:
    """One statement on its way into the old tree: its block today (``T``, the ``s.field`` block of
    ``parent``), the old block it goes into (``O``, the ``ofld`` block of ``owner``), the statements
    around it (anchors), and, so far, the cap on its confidence and why it is below 1 (``notes``)."""

    s: Node
    parent: Node
    T: list[Node]
    owner: Node
    ofld: str
    cap: float = 1.0
    moved: bool = False  # its own block has no counterpart: placed by where its neighbours went
    notes: list[str] = field(default_factory=list)
    pred: Node | None = None  # the nearest statement before it today that is not new
    succ: Node | None = None  # ... and after it
    spans: dict[Node, tuple[int, int, float, str]] = field(default_factory=dict)  # see Anchoring._spans
    pred_real: bool = False  # ``pred`` has a counterpart that places the statement (not a loose one)
    succ_real: bool = False

    def __post_init__(self):
        self.O = self.owner.blocks[self.ofld]
        self.pos = {o: j for j, o in enumerate(self.O)}


class Anchoring:
    """Finds, for the new statements of one placement (``pending``), their old block and anchors."""

    def __init__(self, matching: Matching, pending: set[Node]):
        self.m, self.pending = matching, pending
        self.today, self.old = matching.today, matching.old

    def old_block(self, s: Node) -> Site:
        """The old block that the statement goes into: the counterpart of its block, or else the
        one old block where the statements around it went."""
        self._refuse_ambiguous_enclosing(s)
        parent, T = s.parent, s.parent.blocks[s.field]
        owner = self.m.t2o.get(parent)
        if owner is not None:
            if s.field not in owner.blocks:
                clause = {"orelse": "else", "finalbody": "finally"}.get(s.field, s.field)
                header = parent.header_text(self.today.lines)
                raise Refusal(f"the `{clause}` of `{header}` has no counterpart in this version")
            return Site(s, parent, T, owner, s.field)
        # The block itself changed beyond recognition (e.g. the loop moved into a function):
        # follow its statements that did keep a counterpart, if they all lie in one old block.
        groups = Counter(
            (self.m.t2o[u].parent, self.m.t2o[u].field)
            for u in T
            if u not in self.pending and u in self.m.t2o and u not in self.m.ambiguous
        )
        if not groups:
            raise Refusal(*self._missing_block(parent))
        ranked = groups.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            why = "the statements around it are split over several blocks of this version (ambiguous)"
            raise Refusal(why, CONF_AMBIGUOUS)
        (owner, ofld), _ = ranked[0]
        site = Site(s, parent, T, owner, ofld, cap=CONF_MOVED_BLOCK, moved=True)
        site.notes.append("its block changed, placed by the statements around it")
        return site

    def _refuse_ambiguous_enclosing(self, s: Node) -> None:
        for a in s.ancestors():
            if a in self.m.ambiguous:
                header = a.header_text(self.today.lines)
                why = f"its enclosing `{header}` fits more than one block of this version (ambiguous)"
                raise Refusal(why, CONF_AMBIGUOUS)

    def find_anchors(self, site: Site) -> None:
        """The statement's neighbours today (``pred``, ``succ``: the nearest ones that are not new)
        and the old statements that its block's statements stand for (``spans``); a refusal when
        a neighbour's counterpart is ambiguous, missing where the block moved, or elsewhere."""
        s, T, lines_t = site.s, site.T, self.today.lines
        pred = next((T[i] for i in range(s.index - 1, -1, -1) if T[i] not in self.pending), None)
        succ = next((T[i] for i in range(s.index + 1, len(T)) if T[i] not in self.pending), None)
        for neighbour in (pred, succ):
            if neighbour is not None and neighbour in self.m.ambiguous:
                anchor = neighbour.header_text(lines_t)
                why = f"its anchor `{anchor}` fits more than one statement of this version (ambiguous)"
                raise Refusal(why, CONF_AMBIGUOUS)
        spans, problems, loose = self._spans(s, T, site.owner, site.ofld, site.pos)
        for neighbour in (pred, succ):
            if neighbour in problems:
                why = f"its anchor `{neighbour.header_text(lines_t)}`: {problems[neighbour]} (ambiguous)"
                raise Refusal(why, CONF_AMBIGUOUS)
        site.pred, site.succ, site.spans = pred, succ, spans
        site.pred_real = pred is not None and pred in spans and pred not in loose
        site.succ_real = succ is not None and succ in spans and succ not in loose
        if site.moved and not (site.pred_real or site.succ_real):
            raise Refusal(self.missing_anchor(pred, succ, site.parent))
        self._follow_moved_neighbours(site)

    def _follow_moved_neighbours(self, site: Site) -> None:
        """Refuse, or lower the cap, when a neighbour's counterpart is in another old block."""
        # A neighbour that has a counterpart, but in another block (say, inside an `if` added
        # around it): the statement's meaning may have moved with it.
        # When that block lies inside this one (an `if` around the anchor), both there and here are
        # plausible: refuse. When it lies outside (a helper function), follow the other neighbour.
        lines_t = self.today.lines
        elsewhere = [u for u in (site.pred, site.succ) if u is not None and u in self.m.t2o and u not in site.spans]
        for u in elsewhere:
            there = self.m.t2o[u]
            nested = any(a in site.pos for a in there.ancestors())
            if nested or not (site.pred_real or site.succ_real):
                where = "at module level" if there.parent.parent is None else "inside "
                if there.parent.parent is not None:
                    where += f"`{there.parent.header_text(self.old.lines)}`"
                raise Refusal(
                    f"its anchor `{u.header_text(lines_t)}` is elsewhere in this version ({where}, line "
                    f"{there.first_line}): placing it would be ambiguous", CONF_AMBIGUOUS
                )
        if elsewhere:
            site.cap = min(site.cap, CONF_MOVED_BLOCK)
            site.notes.append(f"`{elsewhere[0].header_text(lines_t)}` is elsewhere in this version")

    def _spans(self, s, T, owner, ofld, pos):
        """For each statement of today's block (other than ``s``, new or ambiguous ones): the old
        statements that are its counterpart, as (first index, last index, match score, note), and,
        apart, why a statement's counterpart is ambiguous. A statement mapped into this block is
        one old statement; a call of a helper function that this version has inline is the old
        statements of its code; a statement that this version has inside a helper function is the
        old call of that function. A *loose* counterpart only orders: the statement is placed by
        its other neighbour, since the old statements next to it may belong to it."""
        spans: dict[Node, tuple[int, int, float, str]] = {}
        problems: dict[Node, str] = {}
        loose: set[Node] = set()
        for u in T:
            if u is s or u in self.pending or u in self.m.ambiguous:
                continue
            o = self.m.t2o.get(u)
            if o in pos:
                spans[u] = (pos[o], pos[o], self.m.score.get(u, 1.0), "")
                continue
            via = via_call(self.m, u, owner, ofld)
            if via is None:
                via = via_inline(self.m, u, owner, ofld)
            if via is None:
                continue
            if isinstance(via, str):
                problems[u] = via
                continue
            lo, hi = via.group or (u.index, u.index)
            if lo < s.index < hi:
                # Today's statement sits between statements that this version has inside one helper
                # function: its place is inside that function.
                problems[u] = f"the code around it is inside `{via.function}` in this version"
            elif (s.index > hi and via.trail) or (s.index < lo and via.lead):
                # The helper has code without a counterpart on the statement's side.
                if via.group is not None:
                    # Inside the old function, out of reach: it may run before or after the statement.
                    problems[u] = f"`{via.function}` in this version has more code than today's script has here"
                else:
                    # The old statements next to the inline code may be that code: the statement
                    # must not go between, so it is placed by its other neighbour.
                    spans[u] = (via.lo, via.hi, via.score, via.note)
                    loose.add(u)
            else:
                spans[u] = (via.lo, via.hi, via.score, via.note)
        return spans, problems, loose

    def _missing_block(self, parent: Node) -> tuple[str, float]:
        """Why a statement's unmapped block cannot be followed: no counterpart, or too many."""
        header = parent.header_text(self.today.lines)
        alike = [
            o for o in self.old.nodes[1:] if o.kind == parent.kind and self.m.header_similarity(parent, o) >= 0.9
        ]
        if len(alike) > 1:
            return f"its enclosing `{header}` fits {len(alike)} blocks of this version (ambiguous)", CONF_AMBIGUOUS
        return f"its enclosing `{header}` has no counterpart in this version", 0.0

    def missing_anchor(self, pred, succ, parent) -> str:
        """Why no neighbour can place the statement: the first of them, or its block, has no counterpart."""
        anchor = pred if pred is not None else succ
        if anchor is None:
            return f"its enclosing `{parent.header_text(self.today.lines)}` has no counterpart in this version"
        return f"its anchor `{anchor.header_text(self.today.lines)}` has no counterpart in this version"

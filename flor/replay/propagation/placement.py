"""Placement: for each new statement, the block and position of the old tree where it goes.

Every statement of its block that has a counterpart constrains the position (before it or after
it; the adjacent ones weigh most), positions where a name that the statement reads is not yet
assigned are ruled out, and the best position must be unique, or else follow the nearest anchor
that sits right next to the statement today. Every doubt is a :class:`Refusal`.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter

from .inline import via_call, via_inline
from .matching import Matching
from .renaming import Votes, rename_text
from .results import NewStatement, Placement, Refusal
from .scopes import BUILTINS, bind_all, params, statement_names
from .splice import Decision, Splice
from .syntax import SCOPE_TYPES, full_ser, is_docstring
from .text import char_col, indentation, parse_statement, reindent, shorten
from .trees import Node, Tree

# Position confidences (see Placer._choose).
_CONF_UNIQUE = 1.0
_CONF_UNIQUE_FAR = 0.85
_CONF_AFTER_ANCHOR = 0.85
_CONF_BEFORE_ANCHOR = 0.8
_CONF_BLOCK_EDGE = 0.75
_CONF_REORDERED = 0.85
_CONF_REORDERED_ANCHOR = 0.75
_CONF_MOVED_BLOCK = 0.8
_CONF_VIA_CALL = 0.9
_CONF_AMBIGUOUS = 0.4
_ADJACENT_WEIGHT = 10


class Placer:
    """Decides, for each new statement, its block and position in the old tree; the output is
    then spliced (:class:`~flor.replay.propagation.splice.Splice`)."""

    def __init__(
        self, matching: Matching, votes: Votes, pairs: list[tuple[NewStatement, Node | None]], threshold: float
    ):
        self.today, self.old, self.m, self.votes = matching.today, matching.old, matching, votes
        self.threshold = threshold
        ordered = sorted(enumerate(pairs), key=lambda x: (x[1][1].order if x[1][1] is not None else -1, x[0]))
        self.decisions = [Decision(st, node, i, _label(st)) for i, (_, (st, node)) in enumerate(ordered)]
        self.pending = {d.node for d in self.decisions if d.node is not None}

    def run(self) -> Placement:
        """Decide every statement, in today's order; splice them in when all are placed confidently."""
        old_src = self.old.source
        if not self.decisions:
            return Placement(True, old_src, [], 1.0, "no new statements to place", old_src)
        splice = Splice(self.old, self.decisions)
        done: list[Decision] = []
        for d in self.decisions:
            try:
                self._decide(d, done)
            except Refusal as refusal:
                d.placed, d.confidence = False, refusal.confidence
                d.reason = f"could not place {d.label} (line {d.statement.lineno}): {refusal.why}"
            done.append(d)
        failed = [d for d in self.decisions if not d.placed or d.confidence < self.threshold]
        if failed:
            worst = min(failed, key=lambda d: (d.placed, d.confidence))
            reason = worst.reason
            if worst.placed:  # placed, but not confidently enough
                reason = (
                    f"could not place {worst.label} (line {worst.statement.lineno}) confidently (confidence "
                    f"{worst.confidence:.2f} < {self.threshold:.2f}): the best place is {worst.detail}"
                )
            confidence = min(d.confidence for d in self.decisions)
            return Placement(False, old_src, splice.results(None), confidence, reason, old_src)
        source, spans = splice.assemble()
        problem = splice.verify(source, spans)
        if problem:
            for d in self.decisions:
                d.placed, d.confidence = False, 0.0
                d.reason = f"could not place {d.label} (line {d.statement.lineno}): {problem}"
            return Placement(False, old_src, splice.results(None), 0.0, self.decisions[0].reason, old_src)
        reason = "; ".join(d.reason for d in self.decisions)
        confidence = min(d.confidence for d in self.decisions)
        return Placement(True, source, splice.results(spans), confidence, reason, old_src)


    # -- one statement ------------------------------------------------------------------------------

    def _decide(self, d: Decision, done: list[Decision]) -> None:
        s = d.node
        if s is None:
            raise Refusal("no such statement in today's script")
        lines_t, lines_o = self.today.lines, self.old.lines
        if s in self.m.t2o:
            d.present, d.placed, d.confidence = self.m.t2o[s], True, 1.0
            d.text = d.statement.source
            d.reason = f"{d.label} (line {d.statement.lineno}) is already in this version"
            return
        for a in s.ancestors():
            if a in self.m.ambiguous:
                why = f"its enclosing `{a.header_text(lines_t)}` fits more than one block of this version (ambiguous)"
                raise Refusal(why, _CONF_AMBIGUOUS)
        parent, T = s.parent, s.parent.blocks[s.field]
        owner = self.m.t2o.get(parent)
        cap, moved = 1.0, False
        notes: list[str] = []  # why the confidence is below 1, for the reason
        if owner is not None and s.field not in owner.blocks:
            clause = {"orelse": "else", "finalbody": "finally"}.get(s.field, s.field)
            header = parent.header_text(lines_t)
            raise Refusal(f"the `{clause}` of `{header}` has no counterpart in this version")
        ofld = s.field
        if owner is None:
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
                raise Refusal(why, _CONF_AMBIGUOUS)
            (owner, ofld), _ = ranked[0]
            cap, moved = _CONF_MOVED_BLOCK, True
            notes.append("its block changed, placed by the statements around it")
        O = owner.blocks[ofld]
        pos = {o: j for j, o in enumerate(O)}

        pred = next((T[i] for i in range(s.index - 1, -1, -1) if T[i] not in self.pending), None)
        succ = next((T[i] for i in range(s.index + 1, len(T)) if T[i] not in self.pending), None)
        for neighbour in (pred, succ):
            if neighbour is not None and neighbour in self.m.ambiguous:
                anchor = neighbour.header_text(lines_t)
                why = f"its anchor `{anchor}` fits more than one statement of this version (ambiguous)"
                raise Refusal(why, _CONF_AMBIGUOUS)
        spans, problems, loose = self._spans(s, T, owner, ofld, pos)
        for neighbour in (pred, succ):
            if neighbour in problems:
                why = f"its anchor `{neighbour.header_text(lines_t)}`: {problems[neighbour]} (ambiguous)"
                raise Refusal(why, _CONF_AMBIGUOUS)
        pred_real = pred is not None and pred in spans and pred not in loose
        succ_real = succ is not None and succ in spans and succ not in loose
        if moved and not (pred_real or succ_real):
            raise Refusal(self._missing_anchor(pred, succ, parent))
        # A neighbour that has a counterpart, but in another block (say, inside an `if` added
        # around it): the statement's meaning may have moved with it.
        # When that block lies inside this one (an `if` around the anchor), both there and here are
        # plausible: refuse. When it lies outside (a helper function), follow the other neighbour.
        elsewhere = [u for u in (pred, succ) if u is not None and u in self.m.t2o and u not in spans]
        for u in elsewhere:
            there = self.m.t2o[u]
            nested = any(a in pos for a in there.ancestors())
            if nested or not (pred_real or succ_real):
                where = "at module level" if there.parent.parent is None else "inside "
                if there.parent.parent is not None:
                    where += f"`{there.parent.header_text(lines_o)}`"
                raise Refusal(
                    f"its anchor `{u.header_text(lines_t)}` is elsewhere in this version ({where}, line "
                    f"{there.first_line}): placing it would be ambiguous", _CONF_AMBIGUOUS
                )
        if elsewhere:
            cap = min(cap, _CONF_MOVED_BLOCK)
            notes.append(f"`{elsewhere[0].header_text(lines_t)}` is elsewhere in this version")

        constraints = []
        for u, (lo, hi, _, _) in spans.items():
            weight = _ADJACENT_WEIGHT if u is pred or u is succ else 1
            # Before the statement: it goes after the last old statement of u; after: before the first.
            constraints.append((hi, True, weight) if u.index < s.index else (lo, False, weight))

        # Names: rename to this version's names, then require them to be bound where it goes.
        stmt = parse_statement(d.statement.source)
        free, binds = statement_names(stmt)
        old_scope_node = owner if owner.parent is None or isinstance(owner.node, SCOPE_TYPES) else owner.scope
        t_before, t_any, t_scope = self.today.available(parent, s.field, s.index)
        base_before, o_any, _ = self.old.available(owner, ofld, 0)
        old_names = o_any | base_before | self.old.self_attrs
        t_uses = self.today.scope_uses(t_scope) | params(t_scope.node)
        renames, rconf, rwhy = {}, 1.0, ""
        for name in free:
            target, conf, why = self.votes.rename(name, t_scope, old_scope_node, old_names)
            if target != name:
                # Renaming onto a name that this scope of today's script uses for something else.
                if target in t_uses and self.votes.rename(target, t_scope, old_scope_node, old_names)[0] == target:
                    conf = min(conf, 0.5)
                    why = f"`{name}` would become `{target}`, which today's script also uses (ambiguous)"
                renames[name] = target
            if conf < rconf:
                rconf, rwhy = conf, why
        if rconf < self.threshold:
            raise Refusal(rwhy, rconf)
        if rconf < 1.0:
            notes.append(rwhy)
        earlier = set().union(*(e.binds for e in done if e.placed and e.owner is not None))
        base_before |= earlier
        o_any |= earlier
        needs = []
        for name in free:
            target = renames.get(name, name)
            if name.startswith("self."):
                needs.append((name, target, "attr"))
            elif name in t_before:
                needs.append((name, target, "before"))
            elif name in t_any:
                needs.append((name, target, "any"))
            elif name in BUILTINS:
                needs.append((name, target, "builtin"))
            else:
                needs.append((name, target, "unknown"))
        wrapped = self._wrapped(stmt, O)
        if wrapped:
            raise Refusal(f"it wraps `{wrapped}`, a statement of this version; only new statements are inserted")
        for name, target, need in needs:
            if need == "attr" and target not in self.old.self_attrs:
                raise Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "any" and target not in o_any and target not in base_before:
                raise Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "unknown" and target not in o_any and not self.old.star_import:
                raise Refusal(f"{_named(name, target)} is not defined in this version")
        uses = self.old.scope_uses(old_scope_node) | o_any
        for name in sorted(binds):
            if name in uses:
                raise Refusal(f"it assigns `{name}`, which this version already uses")

        # Positions 0..len(O): valid ones, then the fewest broken order constraints.
        before_names = [set(base_before)]
        for o in O:
            nxt = set(before_names[-1])
            bind_all([o.node], nxt)
            before_names.append(nxt)
        line_problem = self._line_problems(owner, ofld)
        # Statements placed earlier from the same block keep their order.
        siblings = [e.k for e in done if e.placed and (e.owner, e.block, e.node.parent) == (owner, ofld, parent)]
        kmin = max(siblings, default=0)
        allowed = [
            k for k in range(kmin, len(O) + 1)
            if all(t in before_names[k] for _, t, need in needs if need == "before")
        ]
        if not allowed:
            lacking = [(n, t) for n, t, need in needs if need == "before" and t not in before_names[len(O)]]
            if not lacking:
                raise Refusal("no position keeps the order of the new statements")
            name, target = lacking[0]
            if target in o_any:
                raise Refusal(f"{_named(name, target)} is assigned only after this point in this version")
            raise Refusal(f"{_named(name, target)} is not defined in this version")
        score = {k: sum(w for j, before, w in constraints if (j >= k if before else j < k)) for k in allowed}
        low = min(score.values())
        cands = [k for k in allowed if score[k] == low and not line_problem[k]]
        if not cands:
            # The right place is, say, in the middle of a line (`a(); b()`): inserting lines cannot
            # reach it, and a worse place would be a guess.
            raise Refusal(line_problem[next(k for k in allowed if score[k] == low)])
        k, conf, why = self._choose(cands, pred, succ, pred_real, succ_real, O, parent)
        if why:
            notes.append(why)
        if low > 0:
            conf = min(conf, _CONF_REORDERED_ANCHOR if low >= _ADJACENT_WEIGHT else _CONF_REORDERED)
            notes.append("statements around it are in another order in this version")
        parent_conf = 1.0 if (pred_real or succ_real) else self.m.score.get(parent, 1.0)
        # An anchor matched only by similarity (not identical up to renaming) is weaker evidence.
        anchor = pred if (pred_real and k > 0 and spans[pred][1] == k - 1) else (
            succ if (succ_real and k < len(O) and spans[succ][0] == k) else None
        )
        score = 1.0 if anchor is None else spans[anchor][2]
        anchor_conf = 1.0 if score >= 0.95 else 0.5 + 0.5 * score
        if anchor_conf < 1.0:
            notes.append(f"its anchor matches `{anchor.header_text(lines_t)}` only by similarity")
        if anchor is not None and spans[anchor][3]:
            anchor_conf = min(anchor_conf, _CONF_VIA_CALL)
            notes.append(spans[anchor][3])
        if parent_conf < 1.0:
            notes.append("its block matches only by similarity")
        conf = min(conf, rconf, parent_conf, anchor_conf, cap)

        d.owner, d.block, d.k = owner, ofld, k
        d.mode = self._mode(s, pred, succ, spans, k)
        d.renames = {a: b for a, b in renames.items() if a != b}
        d.binds = binds
        d.text = rename_text(d.statement.source, stmt, d.renames)
        indent = indentation(lines_o[O[0].first_line - 1])
        d.lines = reindent(d.text, indent)
        d.confidence = conf
        d.placed = True
        where = self._where(owner, O, k, d.mode)
        renamed = "" if not d.renames else ", renaming " + ", ".join(f"{a}->{b}" for a, b in d.renames.items())
        d.detail = f"{where}{renamed}" + (f" ({'; '.join(notes)})" if notes else "")
        d.reason = f"placed {d.label} (line {d.statement.lineno}) {d.detail}"

    def _choose(self, cands, pred, succ, pred_real, succ_real, O, parent) -> tuple[int, float, str]:
        """One position among the best-scoring ones, or a refusal when that would be a guess."""
        adjacent = pred_real or succ_real or pred is None or succ is None
        if len(cands) == 1:
            if adjacent:
                return cands[0], _CONF_UNIQUE, ""
            return cands[0], _CONF_UNIQUE_FAR, "neither of its neighbours today has a counterpart"
        if cands != list(range(cands[0], cands[-1] + 1)):
            raise Refusal("it fits in several separate places of this version (ambiguous)", _CONF_AMBIGUOUS)
        # Several neighbouring positions, with statements of this version between them that today's
        # script does not have: follow the anchor that is right next to the statement today.
        between = "this version has other statements where it goes"
        if pred_real:
            return cands[0], _CONF_AFTER_ANCHOR, f"{between}; it follows the statement before it"
        if succ_real:
            return cands[-1], _CONF_BEFORE_ANCHOR, f"{between}; it follows the statement after it"
        if pred is None:
            return cands[0], _CONF_BLOCK_EDGE, f"{between}; it stays first in its block"
        if succ is None:
            return cands[-1], _CONF_BLOCK_EDGE, f"{between}; it stays last in its block"
        raise Refusal(self._missing_anchor(pred, succ, parent), _CONF_AMBIGUOUS)

    def _mode(self, s, pred, succ, spans, k) -> str:
        """Insert right after the previous statement, or right before the next one (above its
        comments), following where today's script leaves blank lines and comments."""
        if k > 0 and pred in spans and spans[pred][1] == k - 1:
            if not self._gap(pred.node.end_lineno, s.first_line):
                return "after"
        if succ in spans and spans[succ][0] == k:
            if not self._gap(s.node.end_lineno, succ.first_line):
                return "before"
        return "after" if k > 0 else "before"

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

    def _gap(self, end: int, start: int) -> bool:
        """Whether today's script has blank or comment lines between these lines, not counting the
        lines of other new statements."""
        taken = set()
        for node in self.pending:
            taken.update(range(node.first_line, node.node.end_lineno + 1))
        return any(row not in taken for row in range(end + 1, start))

    def _line_problems(self, owner: Node, fld: str) -> list[str]:
        """For each position 0..len(O) of the old block, why a statement cannot go there ('' if it can)."""
        O, lines = owner.blocks[fld], self.old.lines
        problems = [""] * (len(O) + 1)
        first = O[0]
        line = lines[first.first_line - 1]
        if char_col(line, first.node.col_offset) != len(indentation(line)):  # block on its header's line
            shared = f"its place in this version shares a line with other statements (`{shorten(line.strip())}`)"
            return [shared] * (len(O) + 1)
        for k in range(1, len(O)):
            if O[k - 1].node.end_lineno >= O[k].first_line:
                shared = lines[O[k].first_line - 1].strip()
                problems[k] = f"its place in this version shares a line with other statements (`{shorten(shared)}`)"
        for j, o in enumerate(O):
            if isinstance(o.node, ast.ImportFrom) and o.node.module == "__future__":
                for k in range(j + 1):
                    problems[k] = "its place in this version is before a `from __future__` import"
        if is_docstring(first.node) and (owner.parent is None or isinstance(owner.node, SCOPE_TYPES)):
            problems[0] = "its place in this version is before the docstring"
        return problems

    def _wrapped(self, stmt: ast.stmt, O: list[Node]) -> str:
        """The old statement that ``stmt`` is, once its flor.log calls are unwrapped, if any."""
        if not isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)):
            return ""
        bare = _Unwrap(self.today).visit(copy.deepcopy(stmt))
        shape = full_ser(bare, anon=True)
        for o in O:
            if not o.blocks and full_ser(o.node, anon=True) == shape:
                return shorten(self.old.lines[o.node.lineno - 1].strip())
        return ""

    def _missing_block(self, parent: Node) -> tuple[str, float]:
        """Why a statement's unmapped block cannot be followed: no counterpart, or too many."""
        header = parent.header_text(self.today.lines)
        alike = [
            o for o in self.old.nodes[1:] if o.kind == parent.kind and self.m.header_similarity(parent, o) >= 0.9
        ]
        if len(alike) > 1:
            return f"its enclosing `{header}` fits {len(alike)} blocks of this version (ambiguous)", _CONF_AMBIGUOUS
        return f"its enclosing `{header}` has no counterpart in this version", 0.0

    def _missing_anchor(self, pred, succ, parent) -> str:
        anchor = pred if pred is not None else succ
        if anchor is None:
            return f"its enclosing `{parent.header_text(self.today.lines)}` has no counterpart in this version"
        return f"its anchor `{anchor.header_text(self.today.lines)}` has no counterpart in this version"

    def _where(self, owner: Node, O: list[Node], k: int, mode: str) -> str:
        lines = self.old.lines
        if k > 0:
            prev = O[k - 1]
            return f"after `{prev.header_text(lines)}` (line {prev.first_line} of this version)"
        if owner.parent is None:
            return "at the top of the file"
        return f"at the start of `{owner.header_text(lines)}` (line {owner.first_line} of this version)"


class _Unwrap(ast.NodeTransformer):
    """Replaces ``flor.log(name, value)`` by ``value``."""

    def __init__(self, tree: Tree):
        self.tree = tree

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if self.tree.is_log_call(node):
            if len(node.args) >= 2:
                return node.args[1]
            value = next((k.value for k in node.keywords if k.arg == "value"), None)
            if value is not None:
                return value
        return node


def _label(st: NewStatement) -> str:
    if st.names:
        return ", ".join(f"flor.log({n!r})" for n in st.names)
    return f"`{shorten(st.source.splitlines()[0] if st.source else '')}`"


def _named(name: str, target: str) -> str:
    return f"`{name}`" if name == target else f"`{name}` (here `{target}`)"

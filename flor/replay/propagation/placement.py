"""Placement: for each new statement, the block and position of the old tree where it goes.

Every statement of its block that has a counterpart constrains the position (before it or after
it; the adjacent ones weigh most), positions where a name that the statement reads is not yet
assigned are ruled out, and the best position must be unique, or else follow the nearest anchor
that sits right next to the statement today. Every doubt is a :class:`Refusal`.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

from .anchors import CONF_AMBIGUOUS, Anchoring, Site
from .matching import Matching
from .renaming import Votes, rename_text
from .results import NewStatement, Placement, Refusal
from .scopes import BUILTINS, bind_all, params, statement_names
from .splice import Decision, Splice
from .syntax import is_self
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
_CONF_VIA_CALL = 0.9
_ADJACENT_WEIGHT = 10


@dataclass
class _Names:
    """The statement's variables in this version. ``needs``: (today's name, old name, what it needs:
    'attr', 'before' (bound before the statement today), 'any' (bound somewhere in its scope),
    'builtin' or 'unknown'); ``before``/``anywhere``: old names bound before the old block and
    anywhere in its scope (with those that statements placed earlier assign)."""

    stmt: ast.stmt
    binds: set[str]
    renames: dict[str, str]
    confidence: float
    needs: list[tuple[str, str, str]]
    before: set[str]
    anywhere: set[str]
    old_scope: Node
    shared: set[str]  # names that earlier lines of its hindsight block assign


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
        self.anchoring = Anchoring(matching, self.pending)

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
        """Fill in where statement ``d`` goes, or raise :class:`Refusal`. ``done``: the statements
        decided before it (in today's order), whose places and names it must respect."""
        s = d.node
        if s is None:
            raise Refusal("no such statement in today's script")
        if s in self.m.t2o:
            self._already_present(d)
            return
        site = self.anchoring.old_block(s)
        self.anchoring.find_anchors(site)
        names = self._names(d, site, done)
        self._refuse_wrapping(names.stmt, site.O)
        self._check_defined(names, site)
        k, conf = self._position(site, names, done)
        conf = min(conf, names.confidence, self._anchor_confidence(site, k), site.cap)
        self._fill(d, site, names, k, conf)

    def _already_present(self, d: Decision) -> None:
        d.present, d.placed, d.confidence = self.m.t2o[d.node], True, 1.0
        d.text = d.statement.source
        d.reason = f"{d.label} (line {d.statement.lineno}) is already in this version"

    # -- names --------------------------------------------------------------------------------------

    def _names(self, d: Decision, site: Site, done: list[Decision]) -> _Names:
        """The statement's variables: renamed to this version's names (a refusal when a rename is
        too uncertain), and what each one needs to be bound where the statement goes."""
        stmt = parse_statement(d.statement.source)
        free, binds = statement_names(stmt)
        owner = site.owner
        old_scope = owner if owner.parent is None or isinstance(owner.node, SCOPE_TYPES) else owner.scope
        t_before, t_any, t_scope = self.today.available(site.parent, site.s.field, site.s.index)
        before, anywhere, _ = self.old.available(owner, site.ofld, 0)
        renames, rconf, rwhy = self._renames(free, t_scope, old_scope, anywhere | before | self.old.self_attrs)
        if rconf < self.threshold:
            raise Refusal(rwhy, rconf)
        if rconf < 1.0:
            site.notes.append(rwhy)
        # Names that the statements placed before this one assign count as bound.
        earlier = set().union(*(e.binds for e in done if e.placed and e.owner is not None))
        before |= earlier
        anywhere |= earlier
        block = d.statement.block
        shared = set() if block is None else set().union(
            *(e.binds for e in done if e.placed and e.owner is not None and e.statement.block == block))
        needs = [(name, renames.get(name, name), _need(name, t_before, t_any)) for name in free]
        return _Names(stmt, binds, renames, rconf, needs, before, anywhere, old_scope, shared)

    def _renames(self, free, t_scope, old_scope, old_names) -> tuple[dict[str, str], float, str]:
        """(today's name -> old name, the lowest confidence of those renames, why it is low)."""
        t_uses = self.today.scope_uses(t_scope) | params(t_scope.node)
        renames, rconf, rwhy = {}, 1.0, ""
        for name in free:
            target, conf, why = self.votes.rename(name, t_scope, old_scope, old_names)
            if target != name:
                # Renaming onto a name that this scope of today's script uses for something else.
                if target in t_uses and self.votes.rename(target, t_scope, old_scope, old_names)[0] == target:
                    conf = min(conf, 0.5)
                    why = f"`{name}` would become `{target}`, which today's script also uses (ambiguous)"
                renames[name] = target
            if conf < rconf:
                rconf, rwhy = conf, why
        return renames, rconf, rwhy

    def _refuse_wrapping(self, stmt: ast.stmt, O: list[Node]) -> None:
        wrapped = self._wrapped(stmt, O)
        if wrapped:
            raise Refusal(f"it wraps `{wrapped}`, a statement of this version; only new statements are inserted")

    def _check_defined(self, names: _Names, site: Site) -> None:
        """Refuse a statement that reads a name this version does not define, or assigns one that
        this version uses (it would change what the old code computes)."""
        for name, target, need in names.needs:
            if need == "attr" and target not in self.old.self_attrs and not self._inherited(target, site):
                raise Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "any" and target not in names.anywhere and target not in names.before:
                raise Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "unknown" and target not in names.anywhere and not self.old.star_import:
                raise Refusal(f"{_named(name, target)} is not defined in this version")
        uses = self.old.scope_uses(names.old_scope) | (names.anywhere - names.shared)
        for name in sorted(names.binds):
            if name in uses:
                raise Refusal(f"it assigns `{name}`, which this version already uses")

    def _inherited(self, attr: str, site: Site) -> bool:
        """Whether ``self.<attr>`` comes from a base class outside the script (a LightningModule's
        ``self.trainer``, ``self.optimizers()``): the old statement's class derives from a class the
        script does not define, and today's script mentions the attribute only in new statements
        (so neither version's own code defines it)."""
        node = site.owner
        while node is not None and node.kind != "ClassDef":
            node = node.parent
        if node is None:
            return False
        defined = {n.name for n in ast.walk(self.old.module) if isinstance(n, ast.ClassDef)}

        def root(base):
            while isinstance(base, (ast.Attribute, ast.Call, ast.Subscript)):
                base = base.value if not isinstance(base, ast.Call) else base.func
            return base.id if isinstance(base, ast.Name) else None

        if not any(root(b) not in defined for b in node.node.bases):
            return False
        new_lines = set().union(*(range(e.statement.lineno, e.statement.end_lineno + 1) for e in self.decisions))
        for n in ast.walk(self.today.module):
            if isinstance(n, ast.Attribute) and is_self(n.value) and f"self.{n.attr}" == attr \
                    and n.lineno not in new_lines:
                return False
        return True

    # -- position -----------------------------------------------------------------------------------

    def _position(self, site: Site, names: _Names, done: list[Decision]) -> tuple[int, float]:
        """(index in the old block, confidence): among the positions where the names it reads are
        bound, the one that breaks the fewest order constraints."""
        allowed = self._allowed_positions(site, names, done)
        constraints = self._order_constraints(site)
        score = {k: sum(w for j, before, w in constraints if (j >= k if before else j < k)) for k in allowed}
        low = min(score.values())
        line_problem = self._line_problems(site.owner, site.ofld)
        cands = [k for k in allowed if score[k] == low and not line_problem[k]]
        if not cands:
            # The right place is, say, in the middle of a line (`a(); b()`): inserting lines cannot
            # reach it, and a worse place would be a guess.
            raise Refusal(line_problem[next(k for k in allowed if score[k] == low)])
        k, conf, why = self._choose(cands, site.pred, site.succ, site.pred_real, site.succ_real, site.O, site.parent)
        if why:
            site.notes.append(why)
        if low > 0:
            conf = min(conf, _CONF_REORDERED_ANCHOR if low >= _ADJACENT_WEIGHT else _CONF_REORDERED)
            site.notes.append("statements around it are in another order in this version")
        return k, conf

    def _allowed_positions(self, site: Site, names: _Names, done: list[Decision]) -> list[int]:
        """Positions 0..len(O) where every name the statement reads before its place today is
        bound, at or after the statements placed earlier from the same block (they keep their
        order); a refusal when there is none."""
        O = site.O
        before_names = [set(names.before)]
        for o in O:
            nxt = set(before_names[-1])
            bind_all([o.node], nxt)
            before_names.append(nxt)
        same_block = (site.owner, site.ofld, site.parent)
        siblings = [e.k for e in done if e.placed and (e.owner, e.block, e.node.parent) == same_block]
        kmin = max(siblings, default=0)
        allowed = [
            k for k in range(kmin, len(O) + 1)
            if all(t in before_names[k] for _, t, need in names.needs if need == "before")
        ]
        if not allowed:
            lacking = [(n, t) for n, t, need in names.needs if need == "before" and t not in before_names[len(O)]]
            if not lacking:
                raise Refusal("no position keeps the order of the new statements")
            name, target = lacking[0]
            if target in names.anywhere:
                raise Refusal(f"{_named(name, target)} is assigned only after this point in this version")
            raise Refusal(f"{_named(name, target)} is not defined in this version{self._feeding_hint(site, name)}")
        return allowed

    def _feeding_hint(self, site: Site, name: str) -> str:
        """Where today's script computes ``name``, and how to make those lines travel with the
        statement (a hindsight block)."""
        where = ""
        for node in reversed(site.T[: site.s.index]):
            if name in statement_names(node.node)[1]:
                where = f" (today `{shorten(node.header_text(self.today.lines))}`, line {node.first_line}, computes it)"
                break
        return (f"{where}; write the new lines that compute it right before the flor.log, with nothing between, "
                "and they travel with it as one block")

    def _order_constraints(self, site: Site) -> list[tuple[int, bool, int]]:
        """(old index, whether the statement goes after it, weight) for each statement with a
        counterpart in the block: its two neighbours today weigh most."""
        constraints = []
        for u, (lo, hi, _, _) in site.spans.items():
            weight = _ADJACENT_WEIGHT if u is site.pred or u is site.succ else 1
            # Before the statement: it goes after the last old statement of u; after: before the first.
            constraints.append((hi, True, weight) if u.index < site.s.index else (lo, False, weight))
        return constraints

    def _anchor_confidence(self, site: Site, k: int) -> float:
        """How much the evidence for position ``k`` is worth: its block, and the anchor right next
        to it, may be matched only by similarity or through a helper call."""
        parent_conf = 1.0 if (site.pred_real or site.succ_real) else self.m.score.get(site.parent, 1.0)
        pred, succ, spans = site.pred, site.succ, site.spans
        # An anchor matched only by similarity (not identical up to renaming) is weaker evidence.
        anchor = pred if (site.pred_real and k > 0 and spans[pred][1] == k - 1) else (
            succ if (site.succ_real and k < len(site.O) and spans[succ][0] == k) else None
        )
        score = 1.0 if anchor is None else spans[anchor][2]
        anchor_conf = 1.0 if score >= 0.95 else 0.5 + 0.5 * score
        if anchor_conf < 1.0:
            site.notes.append(f"its anchor matches `{anchor.header_text(self.today.lines)}` only by similarity")
        if anchor is not None and spans[anchor][3]:
            anchor_conf = min(anchor_conf, _CONF_VIA_CALL)
            site.notes.append(spans[anchor][3])
        if parent_conf < 1.0:
            site.notes.append("its block matches only by similarity")
        return min(parent_conf, anchor_conf)

    def _fill(self, d: Decision, site: Site, names: _Names, k: int, conf: float) -> None:
        """Record the decision: place, renamed and re-indented text, confidence and reason."""
        d.owner, d.block, d.k = site.owner, site.ofld, k
        d.mode = self._mode(site.s, site.pred, site.succ, site.spans, k)
        d.renames = {a: b for a, b in names.renames.items() if a != b}
        d.binds = names.binds
        d.text = rename_text(d.statement.source, names.stmt, d.renames)
        d.lines = reindent(d.text, indentation(self.old.lines[site.O[0].first_line - 1]))
        d.confidence = conf
        d.placed = True
        where = self._where(site.owner, site.O, k, d.mode)
        renamed = "" if not d.renames else ", renaming " + ", ".join(f"{a}->{b}" for a, b in d.renames.items())
        d.detail = f"{where}{renamed}" + (f" ({'; '.join(site.notes)})" if site.notes else "")
        d.reason = f"placed {d.label} (line {d.statement.lineno}) {d.detail}"

    # -- helpers of the steps ---------------------------------------------------------------------

    def _choose(self, cands, pred, succ, pred_real, succ_real, O, parent) -> tuple[int, float, str]:
        """One position among the best-scoring ones, or a refusal when that would be a guess."""
        adjacent = pred_real or succ_real or pred is None or succ is None
        if len(cands) == 1:
            if adjacent:
                return cands[0], _CONF_UNIQUE, ""
            return cands[0], _CONF_UNIQUE_FAR, "neither of its neighbours today has a counterpart"
        if cands != list(range(cands[0], cands[-1] + 1)):
            raise Refusal("it fits in several separate places of this version (ambiguous)", CONF_AMBIGUOUS)
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
        raise Refusal(self.anchoring.missing_anchor(pred, succ, parent), CONF_AMBIGUOUS)

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
    line = f"`{shorten(st.source.splitlines()[0] if st.source else '')}`"
    if st.feeds:
        return f"{line}, a line feeding " + ", ".join(f"flor.log({n!r})" for n in st.feeds)
    return line


def _need(name: str, t_before: set[str], t_any: set[str]) -> str:
    """What a variable of the statement needs in this version (see :class:`_Names`), by where
    today's script binds it."""
    if name.startswith("self."):
        return "attr"
    if name in t_before:
        return "before"
    if name in t_any:
        return "any"
    if name in BUILTINS:
        return "builtin"
    return "unknown"


def _named(name: str, target: str) -> str:
    return f"`{name}`" if name == target else f"`{name}` (here `{target}`)"

"""GumTree-style matching of the statements of today's tree against an old tree.

Top-down: statements whose whole subtree is identical and unique in both files are mapped, with
their subtrees; then the same up to renaming, for larger statements. Bottom-up: a container is
mapped to the old container that holds most of its mapped descendants, or a function to the old
function of the same name, or a ``flor.loop`` loop to the old loop of the same name and iterable.
Recovery: inside each pair of mapped blocks, the remaining statements are aligned in order.
"""

from __future__ import annotations

from collections import Counter, deque
from difflib import SequenceMatcher

from .trees import Node, Tree

# Identical statements smaller than this (``pass``, ``break``, ``x = y``) say too little about where
# they are to be matched across the whole file; they are matched inside mapped blocks only.
_MIN_EXACT_SIZE = 4
# Statements equal up to renaming are matched across the whole file only when large enough that the
# shape alone is unlikely to repeat by chance (``_ = _(_)`` is everywhere). Sizes count the
# statement and its expression nodes, not their load/store contexts.
_MIN_ANON_SIZE = 7
_LEAF_SIMILARITY = 0.6
_BLOCK_SIMILARITY = 0.5


class Matching:
    """A one-to-one mapping between the statements of today's tree and the old tree."""

    def __init__(self, today: Tree, old: Tree):
        self.today, self.old = today, old
        self.t2o: dict[Node, Node] = {}
        self.o2t: dict[Node, Node] = {}
        self.score: dict[Node, float] = {}
        self.ambiguous: set[Node] = set()
        self._link(today.root, old.root, 1.0)
        self._top_down()
        for _ in range(2):
            self._bottom_up()
            self._recover()

    def _link(self, t: Node, o: Node, score: float) -> None:
        self.t2o[t], self.o2t[o], self.score[t] = o, t, score

    def _link_subtree(self, t: Node, o: Node, score: float) -> None:
        if t in self.t2o or o in self.o2t:
            return
        self._link(t, o, score)
        for fld, kids in t.blocks.items():
            for a, b in zip(kids, o.blocks.get(fld, [])):
                self._link_subtree(a, b, score)

    def _top_down(self) -> None:
        for attr, min_size, score in (("exact", _MIN_EXACT_SIZE, 1.0), ("anon", _MIN_ANON_SIZE, 0.95)):
            count_t = Counter(getattr(n, attr) for n in self.today.nodes[1:])
            count_o = Counter(getattr(n, attr) for n in self.old.nodes[1:])
            unique_old = {getattr(n, attr): n for n in self.old.nodes[1:] if count_o[getattr(n, attr)] == 1}
            for t in sorted(self.today.nodes[1:], key=lambda n: (-n.size, n.order)):
                key = getattr(t, attr)
                if t in self.t2o or t.size < min_size or count_t[key] != 1:
                    continue
                o = unique_old.get(key)
                if o is not None and o not in self.o2t:
                    self._link_subtree(t, o, score)

    def _bottom_up(self) -> None:
        for t in reversed(self.today.nodes[1:]):
            if t in self.t2o or not t.blocks:
                continue
            if t.kind in ("FunctionDef", "ClassDef"):
                same = [
                    o for o in self.old.nodes if o.kind == t.kind and o not in self.o2t and o.node.name == t.node.name
                ]
                if len(same) == 1:
                    self._link(t, same[0], 1.0)
                    continue
            desc = t.descendants()
            common: Counter[Node] = Counter()
            for d in desc:
                od = self.t2o.get(d)
                if od is None:
                    continue
                for a in od.ancestors():
                    if a.parent is not None and a.kind == t.kind and a not in self.o2t:
                        common[a] += 1
            scored = []
            for o, c in common.items():
                dice = 2 * c / (len(desc) + len(o.descendants()))
                hs = self.header_similarity(t, o)
                if sorted(t.own_logs) != sorted(o.own_logs):
                    continue
                if dice >= 0.5 or (hs >= 0.9 and dice >= 0.1):
                    scored.append((dice + 0.5 * hs, dice, hs, o))
            if not scored:
                o = self._same_flor_loop(t)
                if o is not None:  # the body changed (code extracted, loops added), the loop did not
                    self._link(t, o, 1.0)
                continue
            scored.sort(key=lambda x: -x[0])
            if len(scored) > 1 and scored[0][0] - scored[1][0] < 1e-9:
                continue  # two equally good containers: leave it to the recovery inside mapped blocks
            _, dice, hs, o = scored[0]
            self._link(t, o, 1.0 if hs >= 0.9 else min(1.0, 0.5 + dice))

    def _same_flor_loop(self, t: Node) -> Node | None:
        """The old loop that is today's ``flor.loop`` loop ``t`` by its name and iterable, whatever its
        body: a flor.loop name identifies a loop of the script. Only when the name is used once in
        each file and the old loop is not mapped yet."""
        if t.loop is None or self.today.loop_keys[t.loop[0]] != 1 or self.old.loop_keys[t.loop[0]] != 1:
            return None
        o = next(o for o in self.old.nodes if o.loop is not None and o.loop[0] == t.loop[0])
        if o in self.o2t or o.loop != t.loop or sorted(t.own_logs) != sorted(o.own_logs):
            return None
        return o

    def _recover(self) -> None:
        queue = deque(sorted(((t, o) for t, o in self.t2o.items() if t.blocks), key=lambda p: p[0].order))
        seen: set[Node] = set()
        while queue:
            t, o = queue.popleft()
            if t in seen:
                continue
            seen.add(t)
            for fld, kids in t.blocks.items():
                okids = o.blocks.get(fld)
                if okids:
                    queue.extend((a, b) for a, b in self._align_block(kids, okids) if a.blocks)

    def _align_block(self, T: list[Node], O: list[Node]) -> list[tuple[Node, Node]]:
        pos = {o: j for j, o in enumerate(O)}
        pairs = [(i, pos[self.t2o[t]]) for i, t in enumerate(T) if self.t2o.get(t) in pos]
        bounds = [(-1, -1), *_increasing(pairs), (len(T), len(O))]
        linked = []
        for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
            ts = [T[i] for i in range(i0 + 1, i1) if T[i] not in self.t2o]
            os_ = [O[j] for j in range(j0 + 1, j1) if O[j] not in self.o2t]
            if ts and os_:
                linked += self._align_gap(ts, os_)
        return linked

    def _align_gap(self, ts: list[Node], os_: list[Node]) -> list[tuple[Node, Node]]:
        """Order-preserving alignment maximizing the total pair score (a weighted LCS)."""
        n, m = len(ts), len(os_)
        sc = [[self.pair_score(a, b) for b in os_] for a in ts]
        best = [[0.0] * (m + 1) for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            for j in range(m - 1, -1, -1):
                value = max(best[i + 1][j], best[i][j + 1])
                if sc[i][j] > 0:
                    value = max(value, sc[i][j] + best[i + 1][j + 1])
                best[i][j] = value
        matched = []
        i = j = 0
        while i < n and j < m:
            if sc[i][j] > 0 and abs(best[i][j] - sc[i][j] - best[i + 1][j + 1]) < 1e-9:
                matched.append((i, j))
                i, j = i + 1, j + 1
            elif abs(best[i][j] - best[i + 1][j]) < 1e-9:
                i += 1
            else:
                j += 1
        linked = []
        for idx, (i, j) in enumerate(matched):
            lo_i, lo_j = matched[idx - 1] if idx else (-1, -1)
            hi_i, hi_j = matched[idx + 1] if idx + 1 < len(matched) else (n, m)
            # Another statement in the same open interval that fits as well: the choice is a guess.
            rival = any(sc[i][jj] >= sc[i][j] - 1e-9 for jj in range(lo_j + 1, hi_j) if jj != j) or any(
                sc[ii][j] >= sc[i][j] - 1e-9 for ii in range(lo_i + 1, hi_i) if ii != i
            )
            a, b = ts[i], os_[j]
            if sc[i][j] >= 2.0:
                self._link_subtree(a, b, 1.0 if sc[i][j] >= 3.0 else 0.95)
            else:
                self._link(a, b, sc[i][j])
            if rival:
                self.ambiguous.add(a)
            linked.append((a, b))
        return linked

    def pair_score(self, a: Node, b: Node) -> float:
        """3 identical, 2 identical up to renaming, else a similarity in [0.5, 1) or 0."""
        if a.exact == b.exact:
            return 3.0
        if a.kind != b.kind or sorted(a.own_logs) != sorted(b.own_logs):
            return 0.0
        if a.anon == b.anon:
            return 2.0
        if not a.blocks and not b.blocks:
            if (self.today.helper_call(a) is None) != (self.old.helper_call(b) is None):
                return 0.0  # a call of a helper function of the file is that code, not a similar line
            s = _ratio(a.tokens, b.tokens)
            return s if s >= _LEAF_SIMILARITY else 0.0
        content = max(self._mapped_dice(a, b), _multiset_dice(_leaf_shapes(a), _leaf_shapes(b)))
        hs = self.header_similarity(a, b)
        s = 0.4 * hs + 0.6 * content
        if hs >= 0.9 and a.kind not in ("FunctionDef", "ClassDef"):
            # The same header (up to renaming) at the same place: the same block, whatever its body
            # became. Only a weak match: a statement placed by it alone stays below the threshold.
            s = max(s, _BLOCK_SIMILARITY)
        return s if s >= _BLOCK_SIMILARITY else 0.0

    @staticmethod
    def header_similarity(a: Node, b: Node) -> float:
        """1 for the same header, 0.9 up to renaming, else token similarity scaled below that."""
        if a.head_exact == b.head_exact:
            return 1.0
        if a.head_anon == b.head_anon:
            return 0.9
        return 0.85 * _ratio(a.tokens, b.tokens)

    def _mapped_dice(self, a: Node, b: Node) -> float:
        da, db = a.descendants(), b.descendants()
        if not da or not db:
            return 0.0
        inside = set(db)
        common = sum(1 for d in da if self.t2o.get(d) in inside)
        return 2 * common / (len(da) + len(db))


def _ratio(a: list[str], b: list[str]) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _leaf_shapes(node: Node) -> Counter:
    return Counter(d.anon for d in node.descendants() if not d.blocks)


def _multiset_dice(a: Counter, b: Counter) -> float:
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 0.0


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of ``pairs`` (sorted by the first item) increasing in the second."""
    if not pairs:
        return []
    length, back = [1] * len(pairs), [-1] * len(pairs)
    for i in range(len(pairs)):
        for j in range(i):
            if pairs[j][1] < pairs[i][1] and length[j] + 1 > length[i]:
                length[i], back[i] = length[j] + 1, j
    i = max(range(len(pairs)), key=lambda x: (length[x], -x))
    out = []
    while i >= 0:
        out.append(pairs[i])
        i = back[i]
    return out[::-1]

"""The entry points of propagation: :class:`Propagator` matches today's script against one old
version once, then finds the new statements and places them; :func:`find_new_statements` and
:func:`propagate` are its one-call forms.
"""

from __future__ import annotations

import ast

from ...errors import PropagationError
from ..florcalls import is_flor_call
from .matching import Matching
from .placement import Placer
from .renaming import Votes
from .results import NewStatement, Placement
from .scopes import statement_names
from .syntax import SCOPE_TYPES, header_nodes, training_call
from .trees import Node, Tree

DEFAULT_THRESHOLD = 0.7


def find_new_statements(today_src: str, old_src: str) -> list[NewStatement]:
    r"""The hindsight statements of today's script: statements with a ``flor.log`` call that have no
    counterpart in the old version and log a name that the old version does not log.

    A new statement is the smallest statement holding the call, widened to an enclosing block that
    is new as a whole (``if step % 100 == 0: flor.log(...)``). Raises :class:`PropagationError` when
    either source does not parse.

    >>> today = "import flor\nflor.log('a', 1)\nflor.log('b', 2)\nflor.log('c', 3)\n"
    >>> [s.names for s in find_new_statements(today, "import flor\nflor.log('b', 2)\n")]
    [['a'], ['c']]
    """
    return Propagator(today_src, old_src).new_statements()


def propagate(
    today_src: str,
    old_src: str,
    statements: list[NewStatement] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> Placement:
    r"""Insert today's new statements (by default :func:`find_new_statements`) into ``old_src``.

    ``ok`` is True when every statement was placed with confidence >= ``threshold``; otherwise the
    source is ``old_src`` unchanged and ``reason`` says which statement could not be placed and why.
    Never raises for bad input: a source that does not parse gives ``ok=False``.

    >>> today = "import flor\nfor e in flor.loop('e', range(3)):\n    step()\n    flor.log('x', e)\n"
    >>> p = propagate(today, "import flor\nfor e in flor.loop('e', range(3)):\n    step()\n    save()\n")
    >>> p.ok, [(s.lineno, s.names, s.text) for s in p.inserted]
    (True, [(4, ['x'], "    flor.log('x', e)")])
    """
    try:
        propagator = Propagator(today_src, old_src)
    except PropagationError as exc:
        return Placement(False, old_src, [], 0.0, str(exc), old_src)
    return propagator.place(statements, threshold=threshold)


class Propagator:
    r"""The matching of today's script against one old version, made once: it finds the new
    statements and places them (replay builds one per run version).

    >>> p = Propagator("import flor\nnet = Net()\nflor.log('n', len(net))\n", "import flor\nnet = Net()\n")
    >>> p.place(p.new_statements()).ok
    True
    """

    def __init__(self, today_src: str, old_src: str):
        interned: dict[str, int] = {}
        self.today = Tree(today_src, "today's script", interned)
        self.old = Tree(old_src, "this version", interned)
        self.matching = Matching(self.today, self.old)
        self.votes = Votes(self.matching)
        self._blocks: dict[Node, tuple[int, list[str]]] = {}  # hindsight block lines -> (block, names fed)

    def new_statements(self) -> list[NewStatement]:
        """See :func:`find_new_statements`."""
        return [self._statement(node) for node in self._new_nodes()]

    def _statement(self, node: Node) -> NewStatement:
        st = self.today.new_statement(node)
        block = self._blocks.get(node)
        if block is not None:
            st.block, st.feeds = block
            if st.names:
                st.feeds = []
        return st

    def place(
        self, statements: list[NewStatement] | None = None, *, threshold: float = DEFAULT_THRESHOLD
    ) -> Placement:
        """See :func:`propagate`."""
        if statements is None:
            pairs = [(self._statement(n), n) for n in self._new_nodes()]
        else:
            pairs = [(st, self.today.find(st)) for st in statements]
        return Placer(self.matching, self.votes, pairs, threshold).run()

    def _new_nodes(self) -> list[Node]:
        today, old, t2o = self.today, self.old, self.matching.t2o
        found: list[Node] = []
        for node in today.nodes[1:]:
            if node in t2o or not any(name not in old.log_names for name in node.own_logs):
                continue
            top = node
            while top.parent.parent is not None and self._is_new_block(top.parent):
                top = top.parent
            if top not in found:
                found.append(top)
        # A statement inside another new statement travels with it.
        chosen = [n for n in found if not any(a in found for a in n.ancestors())]
        helpers = []
        for node in chosen:
            lines = self._feeding(node, chosen)
            if lines:
                names = self.today.new_statement(node).names
                for n in (*lines, node):
                    self._blocks[n] = (node.order, names)
                helpers += lines
        return sorted(chosen + helpers, key=lambda n: n.order)

    def _feeding(self, log: Node, chosen: list[Node]) -> list[Node]:
        """The new lines right before ``log`` that feed it (its hindsight block, in order): going
        back from it, each statement that is new as a whole and assigns a name that the lines after
        it read, or prepares an object they read (``model.eval()``), until one that does not."""
        siblings = log.parent.blocks[log.field]
        needed = set(statement_names(log.node)[0])
        out: list[Node] = []
        for index in range(log.index - 1, -1, -1):
            node = siblings[index]
            if node in chosen or not self._is_new_line(node):
                break
            free, binds = statement_names(node.node)
            if not (binds & needed or _prepares(node.node, needed)):
                break
            needed |= set(free)
            out.append(node)
        return out[::-1]

    def _is_new_line(self, node: Node) -> bool:
        """A statement with no counterpart in the old version, nothing of it mapped, that is not a
        function or class and holds no flor.log or flor.loop: a line a user added to compute a value."""
        if node in self.matching.t2o or not isinstance(node.node, ast.stmt) or isinstance(node.node, SCOPE_TYPES):
            return False
        if node.logs or any(d in self.matching.t2o for d in node.descendants()) or training_call(node.node):
            return False  # a line that trains (clips gradients, steps) is training code, not observation
        return not any(isinstance(x, ast.Call) and is_flor_call(x, "loop", self.today.flor) for x in ast.walk(node.node))

    def _is_new_block(self, node: Node) -> bool:
        # Widen to the enclosing block only when nothing in it exists in the old version: an `if`
        # written around the new log is part of it, a changed training loop is not.
        if node in self.matching.t2o or not isinstance(node.node, ast.stmt) or isinstance(node.node, SCOPE_TYPES):
            return False
        header = list(header_nodes(node.node))
        if any(is_flor_call(x, "loop", self.today.flor) for x in header):
            return False  # a flor.loop is the training's structure, never part of a hindsight statement
        if any(d in self.matching.t2o or d.exact in self.old.exact_ids for d in node.descendants()):
            return False
        # A block whose very header the old version has too (`for epoch in ...`) was rewritten,
        # not added: only a block that holds nothing but flor.log statements is then part of it.
        if node.head_exact in self.old.head_exact_ids:
            return all(d.own_logs or d.blocks for d in node.descendants())
        return True


def _prepares(stmt: ast.stmt, needed: set[str]) -> bool:
    """Whether ``stmt`` is a bare call on an object the lines after it read (``model.eval()``,
    ``metric.reset()``)."""
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        return False
    target = stmt.value.func
    while isinstance(target, (ast.Attribute, ast.Call, ast.Subscript)):
        target = target.value if not isinstance(target, ast.Call) else target.func
    return isinstance(target, ast.Name) and target.id in needed and isinstance(stmt.value.func, ast.Attribute)

r"""Place hindsight statements into an old version of a training script (DESIGN §5).

A user adds ``flor.log(...)`` statements to today's script; replay must run them inside each past
run's own code. This module finds the new statements (:func:`find_new_statements`) and inserts them
into an old version (:func:`propagate`), or refuses with a one-line reason. Placing a statement in
the wrong place would silently log a wrong value, so every doubt is a refusal.

How it works, in three steps:

1. **Match** the statements of the two syntax trees, GumTree-style. Top-down: statements whose whole
   subtree is identical (``ast.dump`` without positions) and unique in both files are mapped, with
   their subtrees; then the same with variable names blanked out (renames), for larger statements.
   Bottom-up: a container (loop, ``with``, ``if``, function) is mapped to the old container that holds
   most of its mapped descendants, or a function to the old function of the same name, or a
   ``flor.loop`` loop to the old loop of the same name and iterable, whatever their bodies became.
   Recovery: inside each pair of mapped blocks, the remaining statements are aligned in order, by
   identity, by identity up to renaming, then by similarity; a block with the same header counts as
   similar however its body changed.
2. **Place** each new statement into the old counterpart of its enclosing block: every mapped sibling
   constrains the position (before it or after it; the adjacent ones weigh most), positions where a
   name that the statement reads is not yet assigned are ruled out, and the best position must be
   unique, or else follow the nearest anchor that sits right next to the statement today. A call of
   a helper function that one version has and the other has inline stands for that inline code
   (today's ``train_epoch(net)`` for the old inline step loop, and the reverse).
3. **Rename and insert**: variables are renamed to their old names by majority vote over the mapped
   statements of the same scopes (through the arguments of such a helper call, too); the
   statement's text lines are inserted, re-indented, and nothing else in the old file changes. The
   result is compiled and checked: removing the inserted statements must give back exactly the old
   syntax tree.

>>> old = "import flor\nmodel = Net()\nfor e in flor.loop('epoch', range(5)):\n    train(model)\n"
>>> today = old.replace("model", "net") + "    flor.log('norm', net.norm())\n"
>>> placement = propagate(today, old)
>>> placement.ok, placement.confidence
(True, 1.0)
>>> print(placement.source, end="")
import flor
model = Net()
for e in flor.loop('epoch', range(5)):
    train(model)
    flor.log('norm', model.norm())
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import io
import tokenize
import warnings
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from ..errors import PropagationError

__all__ = [
    "InsertedStatement",
    "NewStatement",
    "Placement",
    "Propagator",
    "find_new_statements",
    "propagate",
]

DEFAULT_THRESHOLD = 0.7

_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")
_SKIPPED_FIELDS = ("ctx", "type_comment", "type_ignores")
_STMT_TYPES = (ast.stmt, ast.excepthandler, ast.match_case)
_DEF_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPE_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_OWN_SCOPE_EXPRS = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_TRY_TYPES = tuple(t for t in (ast.Try, getattr(ast, "TryStar", None)) if t is not None)
_RUNS_BODY_FIRST = (*_TRY_TYPES, ast.For, ast.AsyncFor, ast.While)  # their else/finally/handlers
_KIND = {"AsyncFor": "For", "AsyncWith": "With", "AsyncFunctionDef": "FunctionDef", "TryStar": "Try"}
_BUILTINS = frozenset(dir(builtins))
_FSTRING_MIDDLE = getattr(tokenize, "FSTRING_MIDDLE", None)

# Identical statements smaller than this (``pass``, ``break``, ``x = y``) say too little about where
# they are to be matched across the whole file; they are matched inside mapped blocks only.
_MIN_EXACT_SIZE = 4
# Statements equal up to renaming are matched across the whole file only when large enough that the
# shape alone is unlikely to repeat by chance (``_ = _(_)`` is everywhere). Sizes count the
# statement and its expression nodes, not their load/store contexts.
_MIN_ANON_SIZE = 7
_LEAF_SIMILARITY = 0.6
_BLOCK_SIMILARITY = 0.5

# Position confidences (see _Placer._choose).
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


# --------------------------------------------------------------------------------------------------
# Public results


@dataclass
class NewStatement:
    r"""A statement of today's script that an old version lacks.

    ``lineno``/``end_lineno`` are lines of today's file, ``source`` its exact text with the
    indentation of its first line removed, ``names`` the names it logs with ``flor.log``.

    >>> [new] = find_new_statements("import flor\nfor i in range(3):\n    flor.log('i', i)\n", "import flor\n")
    >>> new.lineno, new.end_lineno, new.source, new.names
    (2, 3, "for i in range(3):\n    flor.log('i', i)", ['i'])
    """

    lineno: int
    end_lineno: int
    source: str
    names: list[str]
    col_offset: int = 0


@dataclass
class InsertedStatement:
    """One statement's outcome: where it went in the output (``lineno``/``end_lineno``, None when it
    was not placed), the text as inserted, its confidence and the reason for the decision."""

    lineno: int | None
    end_lineno: int | None
    text: str
    confidence: float
    reason: str
    names: list[str]
    placed: bool = True
    renames: dict[str, str] = field(default_factory=dict)
    statement: NewStatement | None = None


@dataclass
class Placement:
    r"""The old source with the new statements inserted, or, when ``ok`` is False, the old source
    unchanged and the reason in one line.

    >>> p = propagate("import flor\nnet = Net()\nflor.log('n', len(net))\n", "import flor\nnet = Net()\n")
    >>> p.ok, p.reason
    (True, "placed flor.log('n') (line 3) after `net = Net()` (line 2 of this version)")
    >>> propagate("import flor\nflor.log('lr', sched.lr)\n", "import flor\n").reason
    "could not place flor.log('lr') (line 2): `sched` is not defined in this version"
    """

    ok: bool
    source: str
    inserted: list[InsertedStatement]
    confidence: float
    reason: str
    old_source: str = field(default="", repr=False)

    def diff(self, old_src: str | None = None, filename: str = "train.py") -> str:
        r"""Unified diff from the old source to :attr:`source`.

        >>> old = "import flor\nnet = Net()\n"
        >>> print(propagate("import flor\nnet = Net()\nflor.log('n', len(net))\n", old).diff(old), end="")
        --- a/train.py
        +++ b/train.py
        @@ -1,2 +1,3 @@
         import flor
         net = Net()
        +flor.log('n', len(net))
        """
        before = self.old_source if old_src is None else old_src
        return "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                self.source.splitlines(keepends=True),
                fromfile=f"a/{filename}",
                tofile=f"b/{filename}",
            )
        )


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
    r"""The matching of today's script against one old version; places statements into it.

    >>> p = Propagator("import flor\nnet = Net()\nflor.log('n', len(net))\n", "import flor\nnet = Net()\n")
    >>> p.place(p.new_statements()).ok
    True
    """

    def __init__(self, today_src: str, old_src: str):
        interned: dict[str, int] = {}
        self.today = _Tree(today_src, "today's script", interned)
        self.old = _Tree(old_src, "this version", interned)
        self.matching = _Matching(self.today, self.old)

    def new_statements(self) -> list[NewStatement]:
        """See :func:`find_new_statements`."""
        return [self.today.new_statement(node) for node in self._new_nodes()]

    def place(
        self, statements: list[NewStatement] | None = None, *, threshold: float = DEFAULT_THRESHOLD
    ) -> Placement:
        """See :func:`propagate`."""
        if statements is None:
            pairs = [(self.today.new_statement(n), n) for n in self._new_nodes()]
        else:
            pairs = [(st, self.today.find(st)) for st in statements]
        return _Placer(self, pairs, threshold).run()

    def _new_nodes(self) -> list[_Node]:
        today, old, t2o = self.today, self.old, self.matching.t2o
        found: list[_Node] = []
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
        return sorted(chosen, key=lambda n: n.order)

    def _is_new_block(self, node: _Node) -> bool:
        # Widen to the enclosing block only when nothing in it exists in the old version: an `if`
        # written around the new log is part of it, a changed training loop is not.
        if node in self.matching.t2o or not isinstance(node.node, ast.stmt) or isinstance(node.node, _SCOPE_TYPES):
            return False
        header = list(_header_nodes(node.node))
        if any(isinstance(x, ast.Call) and _is_flor_call(x, self.today, "loop") for x in header):
            return False  # a flor.loop is the training's structure, never part of a hindsight statement
        if any(d in self.matching.t2o or d.exact in self.old.exact_ids for d in node.descendants()):
            return False
        # A block whose very header the old version has too (`for epoch in ...`) was rewritten,
        # not added: only a block that holds nothing but flor.log statements is then part of it.
        if node.head_exact in self.old.head_exact_ids:
            return all(d.own_logs or d.blocks for d in node.descendants())
        return True


# --------------------------------------------------------------------------------------------------
# Syntax trees with hashes


class _Node:
    """One statement (or except-handler, match-case, or the module) with what matching needs."""

    __slots__ = (
        "node", "parent", "field", "index", "order", "kind", "scope", "blocks", "head_exact", "head_anon",
        "exact", "anon", "tokens", "names", "own_logs", "logs", "size", "first_line", "loop", "_desc",
    )  # fmt: skip

    def descendants(self) -> list[_Node]:
        if self._desc is None:
            out: list[_Node] = []
            for kids in self.blocks.values():
                for kid in kids:
                    out.append(kid)
                    out.extend(kid.descendants())
            self._desc = out
        return self._desc

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def header_text(self, lines: list[str]) -> str:
        if self.parent is None:
            return "the module"
        if isinstance(self.node, ast.match_case):
            return "case ..."
        return _shorten(lines[self.node.lineno - 1].strip())

    def __repr__(self) -> str:  # for debugging only
        return f"<{self.kind} line {self.first_line}>"


class _Tree:
    """A parsed source: its statements in pre-order, with hashes, log calls and line texts."""

    def __init__(self, source: str, label: str, interned: dict[str, int]):
        self.source = source
        self.label = label
        self.lines = source.splitlines(keepends=True)
        try:
            self.module = ast.parse(source)
        except SyntaxError as exc:
            raise PropagationError(f"{label} does not parse: line {exc.lineno}: {exc.msg}") from exc
        self._interned = interned
        self.flor_modules, self.log_functions = _flor_aliases(self.module)
        self.nodes: list[_Node] = []
        self.root = self._build(self.module, None, None, 0)
        self.exact_ids = {n.exact for n in self.nodes}
        self.head_exact_ids = {n.head_exact for n in self.nodes}
        self.log_names = set().union(*(n.own_logs for n in self.nodes))
        self.self_attrs: set[str] = set()
        self.star_import = False
        for n in ast.walk(self.module):
            if isinstance(n, ast.Attribute) and _is_self(n.value):
                self.self_attrs.add(f"self.{n.attr}")
            elif isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names):
                self.star_import = True
        self._string_rows: set[int] | None = None
        self._scope_cache: dict[tuple[str, int], set[str]] = {}
        # Functions by name, and how often each name is read anywhere (calls included): a helper
        # function is only followed through a call when it is defined once and called once.
        self.functions: dict[str, list[_Node]] = defaultdict(list)
        for n in self.nodes:
            if n.kind == "FunctionDef":
                self.functions[n.node.name].append(n)
        self.name_reads = Counter(
            n.id for n in ast.walk(self.module) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        )
        self.loop_keys = Counter(n.loop[0] for n in self.nodes if n.loop is not None)

    def helper_call(self, node: _Node) -> str | None:
        """``f`` when the statement is ``f(...)`` or ``x = f(...)`` and ``f`` is a function of this file."""
        stmt = node.node
        if not isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign)) or not isinstance(stmt.value, ast.Call):
            return None
        func = stmt.value.func
        return func.id if isinstance(func, ast.Name) and func.id in self.functions else None

    def called_function(self, node: _Node) -> _Node | None:
        """The function of this file that the statement ``f(...)`` or ``x = f(...)`` calls, when
        ``f`` is defined exactly once and read nowhere else."""
        name = self.helper_call(node)
        if name is None or self.name_reads[name] != 1 or len(self.functions[name]) != 1:
            return None
        return self.functions[name][0]

    def _intern(self, text: str) -> int:
        return self._interned.setdefault(text, len(self._interned))

    def _build(self, node: ast.AST, parent: _Node | None, fld: str | None, index: int) -> _Node:
        n = _Node()
        n.node, n.parent, n.field, n.index, n._desc = node, parent, fld, index, None
        n.order = len(self.nodes)
        self.nodes.append(n)
        n.kind = "Module" if parent is None else _KIND.get(type(node).__name__, type(node).__name__)
        if parent is None:
            n.scope = None
        elif parent.parent is None or isinstance(parent.node, _SCOPE_TYPES):
            n.scope = parent
        else:
            n.scope = parent.scope
        n.blocks = {}
        for name in _BLOCK_FIELDS:
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], _STMT_TYPES):
                n.blocks[name] = [self._build(child, n, name, i) for i, child in enumerate(value)]
        header: list[ast.AST] = []
        exact_parts: list[str] = []
        anon_parts: list[str] = []
        _describe(node, exact_parts, anon_parts, header, top=True)
        if parent is None:
            header = []
        n.head_exact = self._intern("".join(exact_parts))
        n.head_anon = self._intern("".join(anon_parts))
        n.exact = self._intern(_block_key(n.head_exact, n.blocks, "exact"))
        n.anon = self._intern(_block_key(n.head_anon, n.blocks, "anon"))
        n.tokens = [n.kind, *(_token(x) for x in header)]
        n.names = _header_names(node, header)
        n.own_logs = [self.log_name(x) for x in header if isinstance(x, ast.Call) and self.is_log_call(x)]
        n.logs = set(n.own_logs).union(*(k.logs for kids in n.blocks.values() for k in kids))
        n.size = 1 + len(header) + sum(k.size for kids in n.blocks.values() for k in kids)
        n.first_line = _first_line(node) if parent is not None else 1
        n.loop = self._loop_key(node)
        return n

    def _loop_key(self, node: ast.AST) -> tuple[str, str] | None:
        """(name, iterable up to renaming) of a ``for ... in flor.loop(name, iterable)``, else None."""
        if not isinstance(node, (ast.For, ast.AsyncFor)) or not isinstance(node.iter, ast.Call):
            return None
        call = node.iter
        if not _is_flor_call(call, self, "loop") or not call.args:
            return None
        name = call.args[0]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return None
        rest = ast.Call(func=ast.Name(id="_", ctx=ast.Load()), args=call.args[1:], keywords=call.keywords)
        return name.value, _full_ser(rest, anon=True)

    def is_log_call(self, call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute):
            return _is_flor_call(call, self, "log")
        return isinstance(func, ast.Name) and func.id in self.log_functions

    @staticmethod
    def log_name(call: ast.Call) -> str:
        arg = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return ast.unparse(arg) if arg is not None else "?"

    @property
    def string_rows(self) -> set[int]:
        """0-based line indices that begin inside a multi-line string (never re-indented)."""
        if self._string_rows is None:
            self._string_rows = _string_rows(self.source)
        return self._string_rows

    def find(self, st: NewStatement) -> _Node | None:
        for node in self.nodes[1:]:
            stmt = node.node
            if isinstance(stmt, ast.stmt) and (stmt.lineno, stmt.end_lineno) == (st.lineno, st.end_lineno):
                if stmt.col_offset == st.col_offset or st.col_offset == 0:
                    return node
        return None

    def new_statement(self, node: _Node) -> NewStatement:
        stmt = node.node
        names = [self.log_name(x) for x in _dfs(stmt) if isinstance(x, ast.Call) and self.is_log_call(x)]
        return NewStatement(stmt.lineno, stmt.end_lineno, self.statement_text(node), names, stmt.col_offset)

    def statement_text(self, node: _Node) -> str:
        """The statement's lines, dedented by the indentation of its first line; a comment that
        follows it on its last line is kept, text of other statements on its lines is not."""
        stmt = node.node
        first, last = node.first_line, stmt.end_lineno
        base = _indent(self.lines[first - 1])
        out = []
        comment = ""
        for row in range(first, last + 1):
            line = self.lines[row - 1].rstrip("\r\n")
            if row == last:
                end = _char_col(line, stmt.end_col_offset)
                rest = line[end:]
                if rest.strip().startswith("#"):
                    comment = rest.rstrip()
                line = line[:end]
            if row == first:
                start = _char_col(line, stmt.col_offset) if first == stmt.lineno else len(base)
                out.append(line[start:])
            elif row - 1 in self.string_rows:
                out.append(line)
            elif line.startswith(base):
                out.append(line[len(base):])
            else:
                out.append(line.strip())
        out[-1] += comment
        return "\n".join(out)

    def available(self, owner: _Node, fld: str, index: int) -> tuple[set[str], set[str], _Node]:
        """(names bound before position ``index`` of block ``owner.fld``, names bound anywhere in
        that scope or an enclosing one, the scope node). Builtins are not included."""
        before: set[str] = set()
        node, f, i = owner, fld, index
        while True:
            block = [k.node for k in node.blocks.get(f, [])]
            _bind_all(block[:i], before)
            if f in ("orelse", "finalbody", "handlers") and isinstance(node.node, _RUNS_BODY_FIRST):
                # `else`/`finally`/handlers run after (some of) the body.
                _bind_all(node.node.body, before)
                if f == "finalbody":
                    _bind_all(getattr(node.node, "handlers", []), before)
                    _bind_all(node.node.orelse, before)
            if node.parent is None or isinstance(node.node, _SCOPE_TYPES):
                scope = node
                break
            _bind_header(node.node, before)
            f, i, node = node.field, node.index, node.parent
        anywhere = set(self.scope_bindings(scope))
        before |= _params(scope.node)
        enclosing = scope.scope
        while enclosing is not None:
            if not isinstance(enclosing.node, ast.ClassDef):
                outer = self.scope_bindings(enclosing)
                before |= outer
                anywhere |= outer
            enclosing = enclosing.scope
        return before, anywhere, scope

    def scope_bindings(self, scope: _Node) -> set[str]:
        """Names bound anywhere in ``scope`` (its parameters included), not in nested scopes."""
        key = ("bindings", scope.order)
        if key not in self._scope_cache:
            self._scope_cache[key] = _scope_bindings(scope)
        return self._scope_cache[key]

    def scope_uses(self, scope: _Node) -> set[str]:
        """Every name that the statements of ``scope`` (not nested functions) mention."""
        key = ("uses", scope.order)
        if key not in self._scope_cache:
            self._scope_cache[key] = self._scope_uses(scope)
        return self._scope_cache[key]

    def _scope_uses(self, scope: _Node) -> set[str]:
        out: set[str] = set()
        stack: list[ast.AST] = [k.node for kids in scope.blocks.values() for k in kids]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                out.add(node.id)
            elif isinstance(node, ast.Attribute) and _is_self(node.value):
                out.add(f"self.{node.attr}")
            if isinstance(node, _SCOPE_TYPES):
                out.add(node.name)
                continue
            stack.extend(ast.iter_child_nodes(node))
        return out


# --------------------------------------------------------------------------------------------------
# Matching


@dataclass
class _Via:
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


class _Matching:
    """A one-to-one mapping between the statements of today's tree and the old tree."""

    def __init__(self, today: _Tree, old: _Tree):
        self.today, self.old = today, old
        self.t2o: dict[_Node, _Node] = {}
        self.o2t: dict[_Node, _Node] = {}
        self.score: dict[_Node, float] = {}
        self.ambiguous: set[_Node] = set()
        self._link(today.root, old.root, 1.0)
        self._top_down()
        for _ in range(2):
            self._bottom_up()
            self._recover()
        self.votes, self.global_votes = self._collect_votes()

    def _link(self, t: _Node, o: _Node, score: float) -> None:
        self.t2o[t], self.o2t[o], self.score[t] = o, t, score

    def _link_subtree(self, t: _Node, o: _Node, score: float) -> None:
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
            common: Counter[_Node] = Counter()
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

    def _same_flor_loop(self, t: _Node) -> _Node | None:
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
        seen: set[_Node] = set()
        while queue:
            t, o = queue.popleft()
            if t in seen:
                continue
            seen.add(t)
            for fld, kids in t.blocks.items():
                okids = o.blocks.get(fld)
                if okids:
                    queue.extend((a, b) for a, b in self._align_block(kids, okids) if a.blocks)

    def _align_block(self, T: list[_Node], O: list[_Node]) -> list[tuple[_Node, _Node]]:
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

    def _align_gap(self, ts: list[_Node], os_: list[_Node]) -> list[tuple[_Node, _Node]]:
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

    def pair_score(self, a: _Node, b: _Node) -> float:
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
    def header_similarity(a: _Node, b: _Node) -> float:
        if a.head_exact == b.head_exact:
            return 1.0
        if a.head_anon == b.head_anon:
            return 0.9
        return 0.85 * _ratio(a.tokens, b.tokens)

    def _mapped_dice(self, a: _Node, b: _Node) -> float:
        da, db = a.descendants(), b.descendants()
        if not da or not db:
            return 0.0
        inside = set(db)
        common = sum(1 for d in da if self.t2o.get(d) in inside)
        return 2 * common / (len(da) + len(db))

    def _collect_votes(self):
        """Variable correspondences: names at the same place in statements mapped to each other
        that have the same shape. Keyed by (today scope, old scope), and over the whole file."""
        votes: dict = defaultdict(lambda: defaultdict(Counter))
        global_votes: dict = defaultdict(Counter)
        for t, o in self.t2o.items():
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
        for g, call in self._calls(self.today, self.t2o):
            scopes = {self.t2o[d].scope for d in self._top_mapped(g, self.t2o)}
            if len(scopes) != 1:
                continue
            (old_scope,) = scopes
            inside = votes.get((g, old_scope), {})
            for param, arg in _binding(g.node, call.node.value):
                for b, count in inside.get(param, {}).items():
                    votes[(call.scope, old_scope)][arg][b] += count
        for f, call in self._calls(self.old, self.o2t):
            scopes = {self.o2t[d].scope for d in self._top_mapped(f, self.o2t)}
            if len(scopes) != 1:
                continue
            (today_scope,) = scopes
            inside = votes.get((today_scope, f), {})
            for param, arg in _binding(f.node, call.node.value):
                for a, counter in list(inside.items()):
                    if counter.get(param):
                        votes[(today_scope, call.scope)][a][arg] += counter[param]

    @staticmethod
    def _calls(tree: _Tree, mapping: dict) -> list[tuple[_Node, _Node]]:
        """(function, the one statement that calls it) for the helper functions of ``tree`` that
        are defined once and called once, from a statement of their own, neither of which has a
        counterpart in the other version."""
        out = []
        for node in tree.nodes[1:]:
            fn = tree.called_function(node)
            if fn is not None and fn not in node.ancestors() and fn not in mapping and node not in mapping:
                out.append((fn, node))
        return out

    @staticmethod
    def _top_mapped(node: _Node, mapping: dict) -> list[_Node]:
        """The outermost statements inside ``node`` that have a counterpart, in order."""
        out: list[_Node] = []
        for kids in node.blocks.values():
            for kid in kids:
                if kid in mapping:
                    out.append(kid)
                else:
                    out.extend(_Matching._top_mapped(kid, mapping))
        return out

    @staticmethod
    def _edges(fn: _Node, mapping: dict) -> tuple[bool, bool]:
        """Whether the body of function ``fn`` has statements without any counterpart before the
        first (leading) or after the last (trailing) statement that has one. Docstrings, ``pass``
        and ``return`` of nothing or of a variable do not count."""
        body = fn.blocks.get("body", [])
        has = [b in mapping or any(d in mapping for d in b.descendants()) for b in body]
        if True not in has:
            return False, False
        first, last = has.index(True), len(has) - 1 - has[::-1].index(True)

        def inert(b: _Node) -> bool:
            node = b.node
            if isinstance(node, ast.Return):
                return node.value is None or isinstance(node.value, ast.Name)
            return isinstance(node, ast.Pass) or _is_docstring(node)

        return any(not inert(b) for b in body[:first]), any(not inert(b) for b in body[last + 1 :])

    def via_call(self, u: _Node, owner: _Node, fld: str) -> _Via | str | None:
        """Where the old block ``owner.fld`` has inline the code of the helper function that today's
        statement ``u`` calls (the old inline step loop for today's ``train_epoch(net)``); a string
        (why) when that code is there only in part, deeper inside one of its blocks, or mixed with
        other code of today's block (ambiguous); None when it is not there."""
        if u in self.t2o or u.blocks:
            return None
        g = self.today.called_function(u)
        if g is None or g in self.t2o or g in u.ancestors():
            return None
        inner = self._top_mapped(g, self.t2o)
        found, outside, nested = set(), 0, None
        for d in inner:
            x = y = self.t2o[d]
            while y.parent is not None and not (y.parent is owner and y.field == fld):
                y = y.parent
            if y.parent is None:
                outside += 1
            elif y is x or self._same_unmapped_block(g, d, y):
                found.add(y.index)
            else:
                nested = nested or y
        name = g.node.name
        if nested is not None:
            return f"this version has the code of `{name}` inside `{nested.header_text(self.old.lines)}`"
        if not found:
            return None
        if outside:
            return f"this version has only part of the code of `{name}` here"
        lo, hi = min(found), max(found)
        O = owner.blocks[fld]
        for o in O[lo : hi + 1]:
            t = self.o2t.get(o)
            if t is not None and g not in t.ancestors():
                return f"this version has the code of `{name}` mixed with other statements"
        lead, trail = self._edges(g, self.t2o)
        # Code of the helper without a counterpart may be the old statements right next to its code.
        lead = lead and lo > 0 and O[lo - 1] not in self.o2t
        trail = trail and hi + 1 < len(O) and O[hi + 1] not in self.o2t
        note = f"`{u.header_text(self.today.lines)}` runs code that this version has inline"
        score = min(self.score.get(d, 1.0) for d in inner)
        return _Via(lo, hi, score, note, lead, trail, name, None)

    def _same_unmapped_block(self, g: _Node, d: _Node, y: _Node) -> bool:
        """Whether ``d``, inside function ``g``, lies in a statement of ``g``'s body that, like the
        old statement ``y`` around its counterpart, has no counterpart and is of the same kind (a
        loop whose body changed too much to be matched as a whole)."""
        top = next((a for a in [d, *d.ancestors()] if a.parent is g), None)
        return top is not None and top is not d and top not in self.t2o and y not in self.o2t and top.kind == y.kind

    def via_inline(self, u: _Node, owner: _Node, fld: str) -> _Via | str | None:
        """The reverse of :meth:`via_call`: today's statement ``u`` has its counterpart inside an
        old helper function that the old block ``owner.fld`` calls, once. The span is that call;
        ``group`` gives the first and last of today's statements (in ``u``'s block) whose code is in
        that function. A string (why) when that code is also elsewhere today (ambiguous)."""
        x = self.t2o.get(u)
        if x is None:
            return None
        f = next((a for a in x.ancestors() if a.kind == "FunctionDef"), None)
        if f is None or f in self.o2t or f is owner or f in owner.ancestors():
            return None
        calls = [c for c in owner.blocks[fld] if c not in self.o2t and self.old.called_function(c) is f]
        if len(calls) != 1:
            return None
        name, block = f.node.name, (u.parent, u.field)
        indices = set()
        for d in self._top_mapped(f, self.o2t):
            z = w = self.o2t[d]
            while w.parent is not None and (w.parent, w.field) != block:
                w = w.parent
            if w.parent is None or w is not z:
                return f"this version has its code inside `{name}`, together with code from elsewhere"
            indices.add(w.index)
        lead, trail = self._edges(f, self.o2t)
        note = f"`{u.header_text(self.today.lines)}` is inside `{name}` in this version"
        j = calls[0].index
        return _Via(j, j, self.score.get(u, 1.0), note, lead, trail, name, (min(indices), max(indices)))

    def rename(
        self, name: str, today_scope: _Node, old_scope: _Node, old_names: set[str],
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


# --------------------------------------------------------------------------------------------------
# Placement


@dataclass
class _Decision:
    statement: NewStatement
    node: _Node | None
    order: int
    label: str
    confidence: float = 0.0
    reason: str = ""
    placed: bool = False
    present: _Node | None = None  # already in this version (mapped)
    owner: _Node | None = None
    block: str = ""
    k: int = 0
    mode: str = "after"
    detail: str = ""
    text: str = ""
    lines: list[str] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    binds: set[str] = field(default_factory=set)
    line_index: int = 0


class _Refusal(Exception):
    def __init__(self, why: str, confidence: float = 0.0):
        super().__init__(why)
        self.why, self.confidence = why, confidence


class _Placer:
    """Decides, for each new statement, its block and position in the old tree; builds the output."""

    def __init__(
        self, propagator: Propagator, pairs: list[tuple[NewStatement, _Node | None]], threshold: float
    ):
        self.p = propagator
        self.today, self.old, self.m = propagator.today, propagator.old, propagator.matching
        self.threshold = threshold
        ordered = sorted(enumerate(pairs), key=lambda x: (x[1][1].order if x[1][1] is not None else -1, x[0]))
        self.decisions = [_Decision(st, node, i, _label(st)) for i, (_, (st, node)) in enumerate(ordered)]
        self.pending = {d.node for d in self.decisions if d.node is not None}
        self.newline = "\r\n" if "\r\n" in self.old.source[: self.old.source.find("\n") + 1 or None] else "\n"

    def run(self) -> Placement:
        old_src = self.old.source
        if not self.decisions:
            return Placement(True, old_src, [], 1.0, "no new statements to place", old_src)
        done: list[_Decision] = []
        for d in self.decisions:
            try:
                self._decide(d, done)
            except _Refusal as refusal:
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
            return Placement(False, old_src, self._results(None), confidence, reason, old_src)
        source, spans = self._assemble()
        problem = self._verify(source, spans)
        if problem:
            for d in self.decisions:
                d.placed, d.confidence = False, 0.0
                d.reason = f"could not place {d.label} (line {d.statement.lineno}): {problem}"
            return Placement(False, old_src, self._results(None), 0.0, self.decisions[0].reason, old_src)
        reason = "; ".join(d.reason for d in self.decisions)
        confidence = min(d.confidence for d in self.decisions)
        return Placement(True, source, self._results(spans), confidence, reason, old_src)

    # -- one statement ------------------------------------------------------------------------------

    def _decide(self, d: _Decision, done: list[_Decision]) -> None:
        s = d.node
        if s is None:
            raise _Refusal("no such statement in today's script")
        lines_t, lines_o = self.today.lines, self.old.lines
        if s in self.m.t2o:
            d.present, d.placed, d.confidence = self.m.t2o[s], True, 1.0
            d.text = d.statement.source
            d.reason = f"{d.label} (line {d.statement.lineno}) is already in this version"
            return
        for a in s.ancestors():
            if a in self.m.ambiguous:
                why = f"its enclosing `{a.header_text(lines_t)}` fits more than one block of this version (ambiguous)"
                raise _Refusal(why, _CONF_AMBIGUOUS)
        parent, T = s.parent, s.parent.blocks[s.field]
        owner = self.m.t2o.get(parent)
        cap, moved = 1.0, False
        notes: list[str] = []  # why the confidence is below 1, for the reason
        if owner is not None and s.field not in owner.blocks:
            clause = {"orelse": "else", "finalbody": "finally"}.get(s.field, s.field)
            header = parent.header_text(lines_t)
            raise _Refusal(f"the `{clause}` of `{header}` has no counterpart in this version")
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
                raise _Refusal(*self._missing_block(parent))
            ranked = groups.most_common()
            if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
                why = "the statements around it are split over several blocks of this version (ambiguous)"
                raise _Refusal(why, _CONF_AMBIGUOUS)
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
                raise _Refusal(why, _CONF_AMBIGUOUS)
        spans, problems, loose = self._spans(s, T, owner, ofld, pos)
        for neighbour in (pred, succ):
            if neighbour in problems:
                why = f"its anchor `{neighbour.header_text(lines_t)}`: {problems[neighbour]} (ambiguous)"
                raise _Refusal(why, _CONF_AMBIGUOUS)
        pred_real = pred is not None and pred in spans and pred not in loose
        succ_real = succ is not None and succ in spans and succ not in loose
        if moved and not (pred_real or succ_real):
            raise _Refusal(self._missing_anchor(pred, succ, parent))
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
                raise _Refusal(
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
        stmt = _parse_statement(d.statement.source)
        free, binds = _statement_names(stmt)
        old_scope_node = owner if owner.parent is None or isinstance(owner.node, _SCOPE_TYPES) else owner.scope
        t_before, t_any, t_scope = self.today.available(parent, s.field, s.index)
        base_before, o_any, _ = self.old.available(owner, ofld, 0)
        old_names = o_any | base_before | self.old.self_attrs
        t_uses = self.today.scope_uses(t_scope) | _params(t_scope.node)
        renames, rconf, rwhy = {}, 1.0, ""
        for name in free:
            target, conf, why = self.m.rename(name, t_scope, old_scope_node, old_names)
            if target != name:
                # Renaming onto a name that this scope of today's script uses for something else.
                if target in t_uses and self.m.rename(target, t_scope, old_scope_node, old_names)[0] == target:
                    conf = min(conf, 0.5)
                    why = f"`{name}` would become `{target}`, which today's script also uses (ambiguous)"
                renames[name] = target
            if conf < rconf:
                rconf, rwhy = conf, why
        if rconf < self.threshold:
            raise _Refusal(rwhy, rconf)
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
            elif name in _BUILTINS:
                needs.append((name, target, "builtin"))
            else:
                needs.append((name, target, "unknown"))
        wrapped = self._wrapped(stmt, O)
        if wrapped:
            raise _Refusal(f"it wraps `{wrapped}`, a statement of this version; only new statements are inserted")
        for name, target, need in needs:
            if need == "attr" and target not in self.old.self_attrs:
                raise _Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "any" and target not in o_any and target not in base_before:
                raise _Refusal(f"{_named(name, target)} is not defined in this version")
            if need == "unknown" and target not in o_any and not self.old.star_import:
                raise _Refusal(f"{_named(name, target)} is not defined in this version")
        uses = self.old.scope_uses(old_scope_node) | o_any
        for name in sorted(binds):
            if name in uses:
                raise _Refusal(f"it assigns `{name}`, which this version already uses")

        # Positions 0..len(O): valid ones, then the fewest broken order constraints.
        before_names = [set(base_before)]
        for o in O:
            nxt = set(before_names[-1])
            _bind_all([o.node], nxt)
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
                raise _Refusal("no position keeps the order of the new statements")
            name, target = lacking[0]
            if target in o_any:
                raise _Refusal(f"{_named(name, target)} is assigned only after this point in this version")
            raise _Refusal(f"{_named(name, target)} is not defined in this version")
        score = {k: sum(w for j, before, w in constraints if (j >= k if before else j < k)) for k in allowed}
        low = min(score.values())
        cands = [k for k in allowed if score[k] == low and not line_problem[k]]
        if not cands:
            # The right place is, say, in the middle of a line (`a(); b()`): inserting lines cannot
            # reach it, and a worse place would be a guess.
            raise _Refusal(line_problem[next(k for k in allowed if score[k] == low)])
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
        d.text = _rename_text(d.statement.source, stmt, d.renames)
        indent = _indent(lines_o[O[0].first_line - 1])
        d.lines = _reindent(d.text, indent)
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
            raise _Refusal("it fits in several separate places of this version (ambiguous)", _CONF_AMBIGUOUS)
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
        raise _Refusal(self._missing_anchor(pred, succ, parent), _CONF_AMBIGUOUS)

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
        spans: dict[_Node, tuple[int, int, float, str]] = {}
        problems: dict[_Node, str] = {}
        loose: set[_Node] = set()
        for u in T:
            if u is s or u in self.pending or u in self.m.ambiguous:
                continue
            o = self.m.t2o.get(u)
            if o in pos:
                spans[u] = (pos[o], pos[o], self.m.score.get(u, 1.0), "")
                continue
            via = self.m.via_call(u, owner, ofld)
            if via is None:
                via = self.m.via_inline(u, owner, ofld)
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

    def _line_problems(self, owner: _Node, fld: str) -> list[str]:
        """For each position 0..len(O) of the old block, why a statement cannot go there ('' if it can)."""
        O, lines = owner.blocks[fld], self.old.lines
        problems = [""] * (len(O) + 1)
        first = O[0]
        line = lines[first.first_line - 1]
        if _char_col(line, first.node.col_offset) != len(_indent(line)):  # block on its header's line
            shared = f"its place in this version shares a line with other statements (`{_shorten(line.strip())}`)"
            return [shared] * (len(O) + 1)
        for k in range(1, len(O)):
            if O[k - 1].node.end_lineno >= O[k].first_line:
                shared = lines[O[k].first_line - 1].strip()
                problems[k] = f"its place in this version shares a line with other statements (`{_shorten(shared)}`)"
        for j, o in enumerate(O):
            if isinstance(o.node, ast.ImportFrom) and o.node.module == "__future__":
                for k in range(j + 1):
                    problems[k] = "its place in this version is before a `from __future__` import"
        if _is_docstring(first.node) and (owner.parent is None or isinstance(owner.node, _SCOPE_TYPES)):
            problems[0] = "its place in this version is before the docstring"
        return problems

    def _wrapped(self, stmt: ast.stmt, O: list[_Node]) -> str:
        """The old statement that ``stmt`` is, once its flor.log calls are unwrapped, if any."""
        if not isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)):
            return ""
        bare = _Unwrap(self.today).visit(copy.deepcopy(stmt))
        shape = _full_ser(bare, anon=True)
        for o in O:
            if not o.blocks and _full_ser(o.node, anon=True) == shape:
                return _shorten(self.old.lines[o.node.lineno - 1].strip())
        return ""

    def _missing_block(self, parent: _Node) -> tuple[str, float]:
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

    def _where(self, owner: _Node, O: list[_Node], k: int, mode: str) -> str:
        lines = self.old.lines
        if k > 0:
            prev = O[k - 1]
            return f"after `{prev.header_text(lines)}` (line {prev.first_line} of this version)"
        if owner.parent is None:
            return "at the top of the file"
        return f"at the start of `{owner.header_text(lines)}` (line {owner.first_line} of this version)"

    # -- output -------------------------------------------------------------------------------------

    def _insertion_index(self, d: _Decision) -> int:
        lines = self.old.lines
        O = d.owner.blocks[d.block]
        indent = len(_indent(lines[O[0].first_line - 1]))
        if d.mode == "after":
            idx = O[d.k - 1].node.end_lineno
            # Comments indented deeper than the block belong to the block that just ended.
            j = idx
            while j < len(lines):
                text = lines[j].strip()
                if not text:
                    j += 1
                    continue
                if text.startswith("#") and len(_indent(lines[j])) > indent:
                    idx = j = j + 1
                    continue
                break
            return idx
        idx = O[d.k].first_line - 1
        while idx > 0 and lines[idx - 1].strip().startswith("#") and len(_indent(lines[idx - 1])) == indent:
            idx -= 1
        return idx

    def _assemble(self) -> tuple[str, dict[int, tuple[int, int]]]:
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

    def _shift(self, line: int) -> int:
        """Where old line ``line`` ends up in the output."""
        return line + sum(len(d.lines) for d in self.decisions if d.present is None and d.line_index < line)

    def _verify(self, source: str, spans: dict[int, tuple[int, int]]) -> str:
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
            for fld in _BLOCK_FIELDS:
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
            elif _first_line(parent) != self._shift(d.owner.first_line):
                return "internal check failed: an inserted statement landed in another block"
            if ast.dump(child) != ast.dump(_parse_statement(d.text)):
                return "internal check failed: an inserted statement changed on the way"
        return ""

    def _results(self, spans: dict[int, tuple[int, int]] | None) -> list[InsertedStatement]:
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


# --------------------------------------------------------------------------------------------------
# Helpers: serialization, names, text


def _flor_aliases(module: ast.Module) -> tuple[set[str], set[str]]:
    """Names under which the script reaches the flor module, and `flor.log` itself."""
    modules, functions = {"flor"}, set()
    stack: list[ast.AST] = list(module.body)
    while stack:  # imports are statements: no need to visit expressions
        node = stack.pop()
        for name in _BLOCK_FIELDS:
            stack.extend(getattr(node, name, ()))
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "flor")
        elif isinstance(node, ast.ImportFrom) and node.module == "flor" and not node.level:
            functions.update(a.asname or a.name for a in node.names if a.name == "log")
    return modules, functions


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _anon_field(node: ast.AST, name: str) -> bool:
    return (
        (isinstance(node, ast.Name) and name == "id")
        or (isinstance(node, ast.arg) and name == "arg")
        or (isinstance(node, ast.Attribute) and name == "attr" and _is_self(node.value))
        or (isinstance(node, ast.ExceptHandler) and name == "name")
    )


def _ser(value, anon: bool, out: list[str]) -> None:
    if isinstance(value, ast.AST):
        out.append(type(value).__name__ + "(")
        for name, child in ast.iter_fields(value):
            if name in _SKIPPED_FIELDS:
                continue
            out.append(name + "=")
            if anon and _anon_field(value, name):
                out.append("_")
            else:
                _ser(child, anon, out)
            out.append(",")
        out.append(")")
    elif isinstance(value, list):
        out.append("[")
        for item in value:
            _ser(item, anon, out)
            out.append(",")
        out.append("]")
    else:
        out.append(repr(value))


_ANON_FIELDS = {ast.Name: "id", ast.arg: "arg", ast.Attribute: "attr", ast.ExceptHandler: "name"}


def _describe(value, exact: list[str], anon: list[str], nodes: list[ast.AST], top: bool = False) -> None:
    """Serialize a statement's header (``top``) or any value twice in one pass: exactly, and with
    variable names blanked; collect the visited nodes in order."""
    if isinstance(value, ast.AST):
        if not top:
            nodes.append(value)
        head = type(value).__name__ + "("
        exact.append(head)
        anon.append(head)
        blank = _ANON_FIELDS.get(type(value))
        if blank == "attr" and not _is_self(value.value):
            blank = None
        for name in value._fields:
            if name in _SKIPPED_FIELDS or (top and name in _BLOCK_FIELDS):
                continue
            child = getattr(value, name, None)
            exact.append(name + "=")
            anon.append(name + "=")
            if name == blank:
                exact.append(repr(child))
                anon.append("_")
            else:
                _describe(child, exact, anon, nodes)
            exact.append(",")
            anon.append(",")
        exact.append(")")
        anon.append(")")
    elif isinstance(value, list):
        exact.append("[")
        anon.append("[")
        for item in value:
            _describe(item, exact, anon, nodes)
            exact.append(",")
            anon.append(",")
        exact.append("]")
        anon.append("]")
    else:
        text = repr(value)
        exact.append(text)
        anon.append(text)


def _full_ser(node: ast.AST, anon: bool) -> str:
    out: list[str] = []
    _ser(node, anon, out)
    return "".join(out)


def _block_key(head: int, blocks: dict[str, list[_Node]], attr: str) -> str:
    parts = [f"{fld}:" + ",".join(str(getattr(k, attr)) for k in kids) for fld, kids in blocks.items()]
    return f"{head}|" + ";".join(parts)


def _dfs(value):
    if isinstance(value, ast.AST):
        yield value
        for _, child in ast.iter_fields(value):
            yield from _dfs(child)
    elif isinstance(value, list):
        for item in value:
            yield from _dfs(item)


def _header_nodes(node: ast.AST):
    """The expression nodes of a statement outside its nested blocks, in a fixed order."""
    for name, child in ast.iter_fields(node):
        if name not in _BLOCK_FIELDS:
            yield from _dfs(child)


def _token(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return "N:" + node.id
    if isinstance(node, ast.Attribute):
        return "A:" + node.attr
    if isinstance(node, ast.Constant):
        return "C:" + repr(node.value)[:40]
    if isinstance(node, ast.arg):
        return "G:" + node.arg
    return type(node).__name__


def _header_names(node: ast.AST, header: list[ast.AST]) -> list[tuple[str, str]]:
    """Variable names in the header, in order, each marked 'outer' (the statement's scope), 'inner'
    (a function's parameter) or 'skip' (a lambda's parameter)."""
    out = []
    lambda_args = {id(a) for x in header if isinstance(x, ast.Lambda) for a in _all_args(x.args)}
    for x in header:
        if isinstance(x, ast.Name):
            out.append((x.id, "outer"))
        elif isinstance(x, ast.Attribute) and _is_self(x.value):
            out.append((f"self.{x.attr}", "outer"))
        elif isinstance(x, ast.arg):
            out.append((x.arg, "skip" if id(x) in lambda_args or not isinstance(node, _DEF_TYPES) else "inner"))
    if isinstance(node, ast.ExceptHandler) and node.name:
        out.append((node.name, "outer"))
    return out


def _binding(fn: ast.AST, call: ast.Call) -> list[tuple[str, str]]:
    """(parameter, variable passed for it) of a call, for the arguments that are plain names."""
    if not isinstance(fn, _DEF_TYPES):
        return []
    positional = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    out = []
    for param, arg in zip(positional, call.args):
        if isinstance(arg, ast.Starred):
            break
        if isinstance(arg, ast.Name):
            out.append((param, arg.id))
    by_name = {a.arg for a in (*fn.args.args, *fn.args.kwonlyargs)}
    for kw in call.keywords:
        if kw.arg in by_name and isinstance(kw.value, ast.Name):
            out.append((kw.arg, kw.value.id))
    return out


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    out += [a for a in (args.vararg, args.kwarg) if a is not None]
    return out


def _first_line(node: ast.AST) -> int:
    if isinstance(node, ast.match_case):
        return node.pattern.lineno
    if isinstance(node, ast.Module):
        return 1
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def _bind_walk(node: ast.AST, out: set[str]) -> None:
    if isinstance(node, _SCOPE_TYPES):
        out.add(node.name)
        return
    if isinstance(node, _OWN_SCOPE_EXPRS):
        return
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Store):
            out.add(node.id)
        return
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
        out.add(f"self.{node.attr}")
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        out.update(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
    elif isinstance(node, ast.ExceptHandler) and node.name:
        out.add(node.name)
    elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        out.add(node.name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
        out.add(node.rest)
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        out.update(node.names)
    for child in ast.iter_child_nodes(node):
        _bind_walk(child, out)


def _bind_all(stmts, out: set[str]) -> None:
    for st in stmts:
        _bind_walk(st, out)


def _bind_header(node: ast.AST, out: set[str]) -> None:
    """Names bound by a compound statement's header: loop targets, `as` names, walrus in tests."""
    for name, child in ast.iter_fields(node):
        if name in _BLOCK_FIELDS:
            continue
        if isinstance(child, str) and name == "name" and isinstance(node, ast.ExceptHandler):
            out.add(child)
        for x in child if isinstance(child, list) else [child]:
            if isinstance(x, ast.AST):
                _bind_walk(x, out)


def _params(node: ast.AST) -> set[str]:
    if isinstance(node, _DEF_TYPES):
        return {a.arg for a in _all_args(node.args)}
    return set()


def _scope_bindings(scope: _Node) -> set[str]:
    out = _params(scope.node)
    for kids in scope.blocks.values():
        _bind_all([k.node for k in kids], out)
    return out


def _statement_names(stmt: ast.stmt) -> tuple[list[str], set[str]]:
    """(free variables the statement reads, in order; variables it assigns). Names bound by its own
    comprehensions and lambdas are neither."""
    local = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.comprehension):
            local.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Lambda):
            local.update(a.arg for a in _all_args(node.args))
    loads, binds = [], set()
    for node in _dfs(stmt):
        if isinstance(node, ast.Name) and node.id not in local:
            (loads.append(node.id) if isinstance(node.ctx, ast.Load) else binds.add(node.id))
        elif isinstance(node, ast.Attribute) and _is_self(node.value) and "self" not in local:
            key = f"self.{node.attr}"
            (loads.append(key) if isinstance(node.ctx, ast.Load) else binds.add(key))
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            _bind_walk(node, binds)
    free = []
    for name in loads:
        if name not in binds and name not in free:
            free.append(name)
    return free, binds


class _Unwrap(ast.NodeTransformer):
    """Replaces ``flor.log(name, value)`` by ``value``."""

    def __init__(self, tree: _Tree):
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


def _parse_statement(source: str) -> ast.stmt:
    try:
        body = ast.parse(source).body
    except SyntaxError as exc:
        raise _Refusal(f"its text does not parse on its own ({exc.msg})") from exc
    if len(body) != 1:
        raise _Refusal("its text is not a single statement")
    return body[0]


def _rename_text(source: str, stmt: ast.stmt, renames: dict[str, str]) -> str:
    """``source`` with the variables in ``renames`` replaced, by their positions in the syntax
    tree, so that strings, comments, attributes and keyword names stay as they are."""
    if not renames:
        return source
    free, _ = _statement_names(stmt)
    lines = source.split("\n")
    edits: list[tuple[int, int, int, str, str]] = []
    for node in _dfs(stmt):
        if isinstance(node, ast.Name) and node.id in renames and node.id in free and isinstance(node.ctx, ast.Load):
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, node.id, renames[node.id]))
        elif isinstance(node, ast.Attribute) and _is_self(node.value) and f"self.{node.attr}" in renames:
            new = renames[f"self.{node.attr}"]
            if new.startswith("self."):
                end = node.end_col_offset
                edits.append((node.end_lineno - 1, end - len(node.attr.encode()), end, node.attr, new[5:]))
    for row, start, end, was, new in sorted(edits, reverse=True):
        raw = lines[row].encode()
        if raw[start:end].decode() != was:  # positions of this Python do not point at the name
            raise _Refusal(f"cannot rename `{was}` safely in its text")
        lines[row] = (raw[:start] + new.encode() + raw[end:]).decode()
    return "\n".join(lines)


def _string_rows(source: str) -> set[int]:
    rows: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.STRING or (_FSTRING_MIDDLE is not None and tok.type == _FSTRING_MIDDLE):
                rows.update(range(tok.start[0], tok.end[0]))  # 0-based rows after the first
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return rows


def _reindent(text: str, indent: str) -> list[str]:
    rows = _string_rows(text)
    out = []
    for i, line in enumerate(text.split("\n")):
        if i in rows:
            out.append(line)
        elif not line.strip():
            out.append("")
        else:
            out.append(indent + line)
    return out


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t\f"))]


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode()[:byte_col].decode(errors="ignore"))


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _ratio(a: list[str], b: list[str]) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _leaf_shapes(node: _Node) -> Counter:
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


def _label(st: NewStatement) -> str:
    if st.names:
        return ", ".join(f"flor.log({n!r})" for n in st.names)
    return f"`{_shorten(st.source.splitlines()[0] if st.source else '')}`"


def _named(name: str, target: str) -> str:
    return f"`{name}`" if name == target else f"`{name}` (here `{target}`)"


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_flor_call(call: ast.Call, tree: _Tree, attr: str) -> bool:
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != attr:
        return False
    return isinstance(func.value, ast.Name) and func.value.id in tree.flor_modules

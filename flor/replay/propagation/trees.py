"""The syntax trees that propagation matches: each statement as a :class:`Node`, with hashes of
its subtree (exact, and up to renaming), its header's tokens and variable names, and its flor.log
calls; a :class:`Tree` holds them for one source, with its lines and scope lookups.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict

from ...errors import PropagationError
from ..florcalls import flor_names, is_flor_call
from .results import NewStatement
from .scopes import RUNS_BODY_FIRST, bind_all, bind_header, header_names, params
from .syntax import BLOCK_FIELDS, KIND, SCOPE_TYPES, STMT_TYPES, describe, dfs, first_line, full_ser, is_self, token
from .text import char_col, indentation, shorten, string_rows


class Node:
    """One statement (or except-handler, match-case, or the module) with what matching needs."""

    __slots__ = (
        "node", "parent", "field", "index", "order", "kind", "scope", "blocks", "head_exact", "head_anon",
        "exact", "anon", "tokens", "names", "own_logs", "logs", "size", "first_line", "loop", "_desc",
    )  # fmt: skip

    def descendants(self) -> list[Node]:
        """Every statement inside this one, in pre-order (computed once)."""
        if self._desc is None:
            out: list[Node] = []
            for kids in self.blocks.values():
                for kid in kids:
                    out.append(kid)
                    out.extend(kid.descendants())
            self._desc = out
        return self._desc

    def ancestors(self):
        """The enclosing statements, innermost first, up to the module."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def header_text(self, lines: list[str]) -> str:
        """The statement's first line, shortened, to name it in a reason."""
        if self.parent is None:
            return "the module"
        if isinstance(self.node, ast.match_case):
            return "case ..."
        return shorten(lines[self.node.lineno - 1].strip())

    def __repr__(self) -> str:  # for debugging only
        return f"<{self.kind} line {self.first_line}>"


class Tree:
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
        self.flor = flor_names(self.module)  # the names its imports give flor
        self.nodes: list[Node] = []
        self.root = self._build(self.module, None, None, 0)
        self.exact_ids = {n.exact for n in self.nodes}
        self.head_exact_ids = {n.head_exact for n in self.nodes}
        self.log_names = set().union(*(n.own_logs for n in self.nodes))
        self.self_attrs: set[str] = set()
        self.star_import = False
        for n in ast.walk(self.module):
            if isinstance(n, ast.Attribute) and is_self(n.value):
                self.self_attrs.add(f"self.{n.attr}")
            elif isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names):
                self.star_import = True
        self._string_rows: set[int] | None = None
        self._scope_cache: dict[tuple[str, int], set[str]] = {}
        # Functions by name, and how often each name is read anywhere (calls included): a helper
        # function is only followed through a call when it is defined once and called once.
        self.functions: dict[str, list[Node]] = defaultdict(list)
        for n in self.nodes:
            if n.kind == "FunctionDef":
                self.functions[n.node.name].append(n)
        self.name_reads = Counter(
            n.id for n in ast.walk(self.module) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        )
        self.loop_keys = Counter(n.loop[0] for n in self.nodes if n.loop is not None)

    def helper_call(self, node: Node) -> str | None:
        """``f`` when the statement is ``f(...)`` or ``x = f(...)`` and ``f`` is a function of this file."""
        stmt = node.node
        if not isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign)) or not isinstance(stmt.value, ast.Call):
            return None
        func = stmt.value.func
        return func.id if isinstance(func, ast.Name) and func.id in self.functions else None

    def called_function(self, node: Node) -> Node | None:
        """The function of this file that the statement ``f(...)`` or ``x = f(...)`` calls, when
        ``f`` is defined exactly once and read nowhere else."""
        name = self.helper_call(node)
        if name is None or self.name_reads[name] != 1 or len(self.functions[name]) != 1:
            return None
        return self.functions[name][0]

    def _intern(self, text: str) -> int:
        return self._interned.setdefault(text, len(self._interned))

    def _build(self, node: ast.AST, parent: Node | None, fld: str | None, index: int) -> Node:
        n = Node()
        n.node, n.parent, n.field, n.index, n._desc = node, parent, fld, index, None
        n.order = len(self.nodes)
        self.nodes.append(n)
        n.kind = "Module" if parent is None else KIND.get(type(node).__name__, type(node).__name__)
        if parent is None:
            n.scope = None
        elif parent.parent is None or isinstance(parent.node, SCOPE_TYPES):
            n.scope = parent
        else:
            n.scope = parent.scope
        n.blocks = {}
        for name in BLOCK_FIELDS:
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], STMT_TYPES):
                n.blocks[name] = [self._build(child, n, name, i) for i, child in enumerate(value)]
        header: list[ast.AST] = []
        exact_parts: list[str] = []
        anon_parts: list[str] = []
        describe(node, exact_parts, anon_parts, header, top=True)
        if parent is None:
            header = []
        n.head_exact = self._intern("".join(exact_parts))
        n.head_anon = self._intern("".join(anon_parts))
        n.exact = self._intern(_block_key(n.head_exact, n.blocks, "exact"))
        n.anon = self._intern(_block_key(n.head_anon, n.blocks, "anon"))
        n.tokens = [n.kind, *(token(x) for x in header)]
        n.names = header_names(node, header)
        n.own_logs = [self.log_name(x) for x in header if isinstance(x, ast.Call) and self.is_log_call(x)]
        n.logs = set(n.own_logs).union(*(k.logs for kids in n.blocks.values() for k in kids))
        n.size = 1 + len(header) + sum(k.size for kids in n.blocks.values() for k in kids)
        n.first_line = first_line(node) if parent is not None else 1
        n.loop = self._loop_key(node)
        return n

    def _loop_key(self, node: ast.AST) -> tuple[str, str] | None:
        """(name, iterable up to renaming) of a ``for ... in flor.loop(name, iterable)``, else None."""
        if not isinstance(node, (ast.For, ast.AsyncFor)) or not isinstance(node.iter, ast.Call):
            return None
        call = node.iter
        if not is_flor_call(call, "loop", self.flor) or not call.args:
            return None
        name = call.args[0]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return None
        rest = ast.Call(func=ast.Name(id="_", ctx=ast.Load()), args=call.args[1:], keywords=call.keywords)
        return name.value, full_ser(rest, anon=True)

    def is_log_call(self, call: ast.Call) -> bool:
        """Whether ``call`` is a ``flor.log`` call, under the names this script gives flor."""
        return is_flor_call(call, "log", self.flor)

    @staticmethod
    def log_name(call: ast.Call) -> str:
        """The name that a ``flor.log`` call logs (its source text when not a string constant)."""
        arg = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return ast.unparse(arg) if arg is not None else "?"

    @property
    def string_rows(self) -> set[int]:
        """0-based line indices that begin inside a multi-line string (never re-indented)."""
        if self._string_rows is None:
            self._string_rows = string_rows(self.source)
        return self._string_rows

    def find(self, st: NewStatement) -> Node | None:
        """The statement of this tree at the lines (and column) of ``st``."""
        for node in self.nodes[1:]:
            stmt = node.node
            if isinstance(stmt, ast.stmt) and (stmt.lineno, stmt.end_lineno) == (st.lineno, st.end_lineno):
                if stmt.col_offset == st.col_offset or st.col_offset == 0:
                    return node
        return None

    def new_statement(self, node: Node) -> NewStatement:
        """``node`` as a :class:`NewStatement`: its lines, text and logged names."""
        stmt = node.node
        names = [self.log_name(x) for x in dfs(stmt) if isinstance(x, ast.Call) and self.is_log_call(x)]
        return NewStatement(stmt.lineno, stmt.end_lineno, self.statement_text(node), names, stmt.col_offset)

    def statement_text(self, node: Node) -> str:
        """The statement's lines, dedented by the indentation of its first line; a comment that
        follows it on its last line is kept, text of other statements on its lines is not."""
        stmt = node.node
        first, last = node.first_line, stmt.end_lineno
        base = indentation(self.lines[first - 1])
        out = []
        comment = ""
        for row in range(first, last + 1):
            line = self.lines[row - 1].rstrip("\r\n")
            if row == last:
                end = char_col(line, stmt.end_col_offset)
                rest = line[end:]
                if rest.strip().startswith("#"):
                    comment = rest.rstrip()
                line = line[:end]
            if row == first:
                start = char_col(line, stmt.col_offset) if first == stmt.lineno else len(base)
                out.append(line[start:])
            elif row - 1 in self.string_rows:
                out.append(line)
            elif line.startswith(base):
                out.append(line[len(base):])
            else:
                out.append(line.strip())
        out[-1] += comment
        return "\n".join(out)

    def available(self, owner: Node, fld: str, index: int) -> tuple[set[str], set[str], Node]:
        """(names bound before position ``index`` of block ``owner.fld``, names bound anywhere in
        that scope or an enclosing one, the scope node). Builtins are not included."""
        before: set[str] = set()
        node, f, i = owner, fld, index
        while True:
            block = [k.node for k in node.blocks.get(f, [])]
            bind_all(block[:i], before)
            if f in ("orelse", "finalbody", "handlers") and isinstance(node.node, RUNS_BODY_FIRST):
                # `else`/`finally`/handlers run after (some of) the body.
                bind_all(node.node.body, before)
                if f == "finalbody":
                    bind_all(getattr(node.node, "handlers", []), before)
                    bind_all(node.node.orelse, before)
            if node.parent is None or isinstance(node.node, SCOPE_TYPES):
                scope = node
                break
            bind_header(node.node, before)
            f, i, node = node.field, node.index, node.parent
        anywhere = set(self.scope_bindings(scope))
        before |= params(scope.node)
        enclosing = scope.scope
        while enclosing is not None:
            if not isinstance(enclosing.node, ast.ClassDef):
                outer = self.scope_bindings(enclosing)
                before |= outer
                anywhere |= outer
            enclosing = enclosing.scope
        return before, anywhere, scope

    def scope_bindings(self, scope: Node) -> set[str]:
        """Names bound anywhere in ``scope`` (its parameters included), not in nested scopes."""
        key = ("bindings", scope.order)
        if key not in self._scope_cache:
            self._scope_cache[key] = _scope_bindings(scope)
        return self._scope_cache[key]

    def scope_uses(self, scope: Node) -> set[str]:
        """Every name that the statements of ``scope`` (not nested functions) mention."""
        key = ("uses", scope.order)
        if key not in self._scope_cache:
            self._scope_cache[key] = self._scope_uses(scope)
        return self._scope_cache[key]

    def _scope_uses(self, scope: Node) -> set[str]:
        out: set[str] = set()
        stack: list[ast.AST] = [k.node for kids in scope.blocks.values() for k in kids]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                out.add(node.id)
            elif isinstance(node, ast.Attribute) and is_self(node.value):
                out.add(f"self.{node.attr}")
            if isinstance(node, SCOPE_TYPES):
                out.add(node.name)
                continue
            stack.extend(ast.iter_child_nodes(node))
        return out


def _block_key(head: int, blocks: dict[str, list[Node]], attr: str) -> str:
    parts = [f"{fld}:" + ",".join(str(getattr(k, attr)) for k in kids) for fld, kids in blocks.items()]
    return f"{head}|" + ";".join(parts)


def _scope_bindings(scope: Node) -> set[str]:
    out = params(scope.node)
    for kids in scope.blocks.values():
        bind_all([k.node for k in kids], out)
    return out


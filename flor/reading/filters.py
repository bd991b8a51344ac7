"""Safe filter expressions over runs, such as ``accuracy > 0.9 and lr < 0.01``: the one filter
language of flor, used by ``flor ui``'s runs table and by ``flor replay --where``.

The text is parsed with :mod:`ast` and compiled into a tree of small closures; nothing is ever
passed to ``eval``. Only these forms are accepted:

- column names (``lr``), dotted names (``opt.lr``) and back-quoted names (```loss/train```);
- constants: numbers, strings, ``True``, ``False``, ``None``, and tuples/lists of them (for ``in``);
- comparisons ``== != < <= > >= in not in``, also chained (``0.1 < lr <= 1``);
- ``and``, ``or``, ``not``, unary minus and parentheses, nested at most ``MAX_DEPTH`` deep.

Anything else (calls, attributes of values, subscripts, arithmetic, lambdas, pandas' ``@name``)
is a :class:`~flor.errors.FilterError`, one line that says what is not allowed. ``&&``, ``||``,
``&``, ``|`` and ``~`` are not aliases: each operator has one spelling, so a filter reads the same
in the UI and on the command line; the error names the word to write instead. A comparison that
cannot be made (``None < 3``, ``"a" < 1``) is false for that row instead of an error, so one odd
run does not break the whole table.

>>> keep = compile_filter("accuracy > 0.9 and lr < 0.01", ["accuracy", "lr"])
>>> keep({"accuracy": 0.95, "lr": 0.001}), keep({"accuracy": 0.5, "lr": 0.001})
(True, False)
"""

from __future__ import annotations

import ast
import io
import operator
import re
import tokenize
from typing import Callable, Iterable, Mapping

from ..errors import FilterError
from ..values import is_plain

__all__ = ["FilterError", "MAX_DEPTH", "MAX_LENGTH", "compile_filter", "order_rows"]

MAX_LENGTH = 2000
# Far beyond any real filter, and shallow enough that compiling and evaluating the closures
# never meets Python's recursion limit (whose error would depend on the caller's stack).
MAX_DEPTH = 100

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_BACKQUOTED = re.compile(r"`([^`]*)`")

Row = Mapping[str, object]


def compile_filter(text: str, columns: Iterable[str]) -> Callable[[Row], bool]:
    """Compile ``text`` into a predicate over rows (mappings from column name to value).

    An empty text keeps every row. Unknown column names are an error that lists the columns.

    >>> compile_filter("status == 'failed' or not lr", ["status", "lr"])({"status": "ok", "lr": 0})
    True
    """
    if type(text) is not str:
        raise FilterError("a filter must be text, e.g. accuracy > 0.9 and lr < 0.01")
    text = text.strip()
    if not text:
        return lambda row: True
    if len(text) > MAX_LENGTH:
        raise FilterError(f"the filter is longer than {MAX_LENGTH} characters")
    known = set(columns)
    quoted: dict[str, str] = {}

    def unquote(match: re.Match) -> str:
        # Names like loss/train are not Python identifiers; stand them in with a placeholder.
        placeholder = f"__flor_col_{len(quoted)}"
        quoted[placeholder] = match.group(1)
        return placeholder

    source = _BACKQUOTED.sub(unquote, text)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        hint = _syntax_hint(source)
        for placeholder, name in quoted.items():
            hint = hint.replace(placeholder, f"`{name}`")
        raise FilterError(f"cannot parse the filter {text!r}: {exc.msg}{hint}") from exc
    except (ValueError, MemoryError, RecursionError) as exc:
        raise FilterError(f"cannot parse the filter {text!r}") from exc
    try:
        predicate = _Compiler(known, quoted).node(tree.body)
    except RecursionError as exc:
        raise FilterError(f"the filter nests more than {MAX_DEPTH} levels deep") from exc

    def keep(row: Row) -> bool:
        try:
            return bool(predicate(row))
        except (TypeError, ValueError, ArithmeticError, RecursionError):
            return False

    return keep


class _Compiler:
    """Turns an allowed syntax tree into nested closures; refuses every other node."""

    def __init__(self, columns: set[str], quoted: dict[str, str]) -> None:
        self.columns = columns
        self.quoted = quoted
        self.depth = 0

    def node(self, node: ast.AST) -> Callable[[Row], object]:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise FilterError(f"{_describe(node)} is not allowed in a filter; use names, constants, comparisons, and/or/not")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"the filter nests more than {MAX_DEPTH} levels deep")
        try:
            return method(node)
        finally:
            self.depth -= 1

    def _BinOp(self, node: ast.BinOp) -> Callable[[Row], object]:
        instead = _INSTEAD.get(type(node.op))
        if instead:
            raise FilterError(f"{instead[0]!r} is not allowed in a filter; write {instead[1]!r}, e.g. lr < 0.01 and epochs > 5")
        raise FilterError(f"{_describe(node)} is not allowed in a filter; use names, constants, comparisons, and/or/not")

    def _column(self, name: str) -> Callable[[Row], object]:
        if name not in self.columns:
            shown = ", ".join(sorted(self.columns)[:30])
            raise FilterError(f"unknown column {name!r} in the filter; columns are: {shown}")
        return lambda row: row.get(name)

    def _Name(self, node: ast.Name) -> Callable[[Row], object]:
        return self._column(self.quoted.get(node.id, node.id))

    def _Attribute(self, node: ast.Attribute) -> Callable[[Row], object]:
        # Only a dotted column name (opt.lr); attributes of values are never looked up.
        parts, current = [node.attr], node.value
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise FilterError("only dotted column names may contain '.', e.g. opt.lr > 0.1")
        parts.append(current.id)
        return self._column(".".join(reversed(parts)))

    def _Constant(self, node: ast.Constant) -> Callable[[Row], object]:
        value = node.value
        if not is_plain(value):  # a syntax tree's constants are of exact types
            raise FilterError(f"the constant {value!r} is not allowed in a filter")
        return lambda row: value

    def _sequence(self, node) -> Callable[[Row], object]:
        items = []
        for element in node.elts:
            if not isinstance(element, (ast.Constant, ast.UnaryOp)):
                raise FilterError("lists in a filter may hold only constants, e.g. status in ('failed', 'killed')")
            items.append(self.node(element)({}))
        frozen = tuple(items)
        return lambda row: frozen

    _Tuple = _sequence
    _List = _sequence

    def _UnaryOp(self, node: ast.UnaryOp) -> Callable[[Row], object]:
        operand = self.node(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda row: not operand(row)
        if isinstance(node.op, ast.USub):
            return lambda row: -operand(row)
        if isinstance(node.op, ast.UAdd):
            return lambda row: +operand(row)
        if isinstance(node.op, ast.Invert):
            raise FilterError("'~' is not allowed in a filter; write 'not'")
        raise FilterError(f"{_describe(node.op)} is not allowed in a filter")

    def _BoolOp(self, node: ast.BoolOp) -> Callable[[Row], object]:
        parts = [self.node(value) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda row: all(part(row) for part in parts)
        return lambda row: any(part(row) for part in parts)

    def _Compare(self, node: ast.Compare) -> Callable[[Row], object]:
        first = self.node(node.left)
        steps = []
        for op, right in zip(node.ops, node.comparators):
            function = _COMPARE.get(type(op))
            if function is None:
                raise FilterError(f"{_describe(op)} is not allowed in a filter")
            steps.append((function, self.node(right)))

        def compare(row: Row) -> bool:
            left = first(row)
            for function, right in steps:
                value = right(row)
                if not _comparable(left, value, function) or not function(left, value):
                    return False
                left = value
            return True

        return compare


def _comparable(left: object, right: object, function) -> bool:
    """Ordering needs two numbers or two strings; equality and membership work on anything."""
    if function in (operator.eq, operator.ne):
        return True
    if function in (operator.lt, operator.le, operator.gt, operator.ge):
        numbers = (int, float)
        return (isinstance(left, numbers) and isinstance(right, numbers)) or (
            isinstance(left, str) and isinstance(right, str)
        )
    return isinstance(right, (tuple, str))


_INSTEAD = {ast.BitAnd: ("&", "and"), ast.BitOr: ("|", "or")}


def _syntax_hint(source: str) -> str:
    """A hint for the spellings of other filter languages (pandas, SQL, C) that people try:
    ``&&``, ``||`` and pandas' ``@variable``. Found by tokens, so never inside a string."""
    try:
        tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type in (tokenize.OP, tokenize.ERRORTOKEN)]
    except (tokenize.TokenError, SyntaxError, ValueError):
        return ""
    for first, second in zip(tokens, tokens[1:]):
        if (first, second) == ("&", "&"):
            return "; write 'and' instead of '&&'"
        if (first, second) == ("|", "|"):
            return "; write 'or' instead of '||'"
    if "@" in tokens:
        return "; '@' variables are not part of a filter, only columns and constants"
    return _equals_hint(source)


# A lone '=' (assignment) where a comparison was meant, and '=>' / '=<' written backwards.
_MISSPELT = {"=": "==", "=>": ">=", "=<": "<="}


def _equals_hint(source: str) -> str:
    """'; did you mean `lr == 0.01`?' when writing ``==`` for ``=`` (or ``>=`` for ``=>``)
    makes the filter parse. Found by tokens, so never inside a string.

    >>> _equals_hint("lr=0.01")
    '; did you mean `lr == 0.01`?'
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return ""
    pieces, changed, skip = [], False, False
    for index, token in enumerate(tokens):
        if skip:
            skip = False
            continue
        text = token.string
        if token.type == tokenize.OP and text == "=":
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            pair = "=" + following.string if following is not None and following.start == token.end else ""
            if pair in _MISSPELT:
                text, skip = _MISSPELT[pair], True
            else:
                text = "=="
            changed = True
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        pieces.append(text)
    if not changed:
        return ""
    fixed = " ".join(pieces)
    fixed = re.sub(r"\( ", "(", re.sub(r" \)", ")", re.sub(r" ,", ",", fixed)))
    try:
        ast.parse(fixed, mode="eval")
    except (SyntaxError, ValueError):
        return ""
    return f"; did you mean `{fixed}`?"


def _describe(node: object) -> str:
    names = {
        "Call": "a function call", "Subscript": "indexing", "BinOp": "arithmetic", "Lambda": "lambda",
        "Attribute": "an attribute", "NamedExpr": "assignment", "IfExp": "if-else",
    }
    kind = type(node).__name__
    return names.get(kind, f"'{kind}'")


_ORDER_TERM = re.compile(r"^\s*(?:`([^`]+)`|([A-Za-z_][\w.]*))\s*(?:\s(asc|desc))?\s*$", re.IGNORECASE)


def order_rows(rows: list, text: str | None, columns: Iterable[str], get=lambda row, name: row.get(name)) -> list:
    """``rows`` sorted by ``text``: comma-separated column names, each optionally followed by
    ``asc`` (the default) or ``desc``, e.g. ``val_loss, lr desc`` (back-quote names such as
    ```loss/train```). Rows missing a value (or holding one that does not compare) come last
    either way, so a run that never logged the metric never heads the list. The sort is stable.

    >>> [r["a"] for r in order_rows([{"a": 1}, {"a": None}, {"a": 3}], "a desc", ["a"])]
    [3, 1, None]
    """
    if text is None or not text.strip():
        return list(rows)
    known = set(columns)
    terms = []
    for part in text.split(","):
        match = _ORDER_TERM.match(part)
        if match is None:
            raise FilterError(f"cannot read the order {part.strip()!r}; write NAME or NAME desc, separated by commas")
        name = match.group(1) or match.group(2)
        if name not in known:
            shown = ", ".join(sorted(known)[:30])
            raise FilterError(f"unknown column {name!r} in the order; columns are: {shown}")
        terms.append((name, (match.group(3) or "asc").lower() == "desc"))
    ordered = list(rows)
    for name, descending in reversed(terms):  # stable sorts, last key first
        def rank(row, name=name):
            value = get(row, name)
            if isinstance(value, bool) or value is None or (isinstance(value, float) and value != value):
                value = None if not isinstance(value, bool) else int(value)
            if isinstance(value, (int, float)):
                return (0, value, "")
            if isinstance(value, str):
                return (1, 0, value)
            return (2, 0, "")
        present = [row for row in ordered if rank(row)[0] < 2]
        missing = [row for row in ordered if rank(row)[0] == 2]
        ordered = sorted(present, key=rank, reverse=descending) + missing
    return ordered

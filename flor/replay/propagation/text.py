"""Source text: indentation, byte and character columns, lines inside multi-line strings.

Statements are moved between files as text, so that their comments and formatting travel with
them; these helpers keep that text intact (a line inside a string is never re-indented).
"""

from __future__ import annotations

import ast
import io
import tokenize

from .results import Refusal

_FSTRING_MIDDLE = getattr(tokenize, "FSTRING_MIDDLE", None)


def string_rows(source: str) -> set[int]:
    """0-based line indices that begin inside a multi-line string."""
    rows: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.STRING or (_FSTRING_MIDDLE is not None and tok.type == _FSTRING_MIDDLE):
                rows.update(range(tok.start[0], tok.end[0]))  # 0-based rows after the first
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return rows


def reindent(text: str, indent: str) -> list[str]:
    """The lines of ``text`` with ``indent`` in front, except blank lines and lines inside strings."""
    rows = string_rows(text)
    out = []
    for i, line in enumerate(text.split("\n")):
        if i in rows:
            out.append(line)
        elif not line.strip():
            out.append("")
        else:
            out.append(indent + line)
    return out


def indentation(line: str) -> str:
    """The leading whitespace of ``line``."""
    return line[: len(line) - len(line.lstrip(" \t\f"))]


def char_col(line: str, byte_col: int) -> int:
    """The character column of a byte column (``ast`` counts UTF-8 bytes)."""
    return len(line.encode()[:byte_col].decode(errors="ignore"))


def shorten(text: str, width: int = 60) -> str:
    """``text``, cut to ``width`` characters with ``...`` for reasons."""
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_statement(source: str) -> ast.stmt:
    """The one statement of ``source``; a :class:`Refusal` when it is not exactly one."""
    try:
        body = ast.parse(source).body
    except SyntaxError as exc:
        raise Refusal(f"its text does not parse on its own ({exc.msg})") from exc
    if len(body) != 1:
        raise Refusal("its text is not a single statement")
    return body[0]

r"""What propagation gives back: the new statements it found, and where each one went.

:class:`Placement` is the answer of :func:`~flor.replay.propagation.propagate`; :class:`Refusal`
is how each step of placing a statement says that it cannot be placed, and why.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass
class NewStatement:
    r"""A statement of today's script that an old version lacks.

    ``lineno``/``end_lineno`` are lines of today's file, ``source`` its exact text with the
    indentation of its first line removed, ``names`` the names it logs with ``flor.log``.
    A *hindsight block* is a ``flor.log`` statement with the new lines right before it that feed
    it: each line is its own statement, with ``block`` (the same for the whole block) and, on the
    lines that log nothing, ``feeds`` (the names their ``flor.log`` logs).

    >>> from flor.replay.propagation import find_new_statements
    >>> [new] = find_new_statements("import flor\nfor i in range(3):\n    flor.log('i', i)\n", "import flor\n")
    >>> new.lineno, new.end_lineno, new.source, new.names
    (2, 3, "for i in range(3):\n    flor.log('i', i)", ['i'])
    """

    lineno: int
    end_lineno: int
    source: str
    names: list[str]
    col_offset: int = 0
    block: int | None = None
    feeds: list[str] = field(default_factory=list)


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

    >>> from flor.replay.propagation import propagate
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

        >>> from flor.replay.propagation import propagate
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


class Refusal(Exception):
    """A statement cannot be placed: ``why`` in words, for the reason line, and the confidence
    that the refused place had (0 when there was none)."""

    def __init__(self, why: str, confidence: float = 0.0):
        super().__init__(why)
        self.why, self.confidence = why, confidence

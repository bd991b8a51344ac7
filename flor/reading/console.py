"""Console: reading back what runs printed (captured by ``flor.recording.capture``), line by line, with
each line's stream, time and loop context.

>>> for line in lines(store, run_id, grep="Average loss"):      # doctest: +SKIP
...     print(line.context, line.text)
{'epoch': 3} Test set: Average loss: 0.0331, Accuracy: 9893/10000
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..recording.capture import CODES, STREAMS
from ..errors import UsageError
from ..logged import LoopInstance
from ..store import Store
from ..store.output import decode_meta, decode_text


@dataclass(frozen=True)
class Line:
    """One captured line: ``number`` counts from 0 in the run, ``t`` is seconds since it began."""

    number: int
    stream: str
    t: float
    context: dict
    text: str

    def to_json(self) -> dict:
        return {"line": self.number, "stream": self.stream, "t": self.t, "context": self.context, "text": self.text}

    def row(self) -> tuple:
        """The values of :data:`LINE_COLUMNS` (the text last)."""
        return (self.number, self.stream, self.t, self.context, self.text)


def stream_codes(streams: Sequence[str] | None) -> str | None:
    """The one-letter codes of stream names (None: every stream); an unknown name is an error."""
    if not streams:
        return None
    unknown = [s for s in streams if s not in CODES]
    if unknown:
        raise UsageError(f"unknown stream {', '.join(map(repr, unknown))}: choose from stdout, stderr, logging")
    return "".join(CODES[s] for s in streams) + "f"


def context_reader(contexts: Sequence[LoopInstance]) -> Callable[[int | None, int | None], dict]:
    """A function from a line's (ctx_id, iteration) to its loop context, outermost loop first
    (``{'epoch': 3, 'step': 120}``); ``contexts`` as :meth:`Store.contexts` returns them."""
    parents = {c.ctx_id: (c.parent_id, c.parent_iteration, c.loop_name) for c in contexts}
    cache: dict = {}

    def read(ctx: int | None, iteration: int | None) -> dict:
        key = (ctx, iteration)
        found = cache.get(key)
        if found is None:
            chain = []
            while ctx is not None and ctx in parents:
                parent, parent_iteration, name = parents[ctx]
                chain.append((name, iteration))
                ctx, iteration = parent, parent_iteration
            found = cache[key] = dict(reversed(chain))
        return dict(found)

    return read


def compile_grep(pattern: str | None, what: str = "--grep") -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"{what} {pattern!r} is not a regular expression: {exc}") from None


def lines(store: Store, run_id: int, *, streams: Sequence[str] | None = None, grep: str | None = None) -> Iterator[Line]:
    """A run's captured lines in order, only those of ``streams`` and those ``grep`` finds;
    ``store`` is a :class:`Store` or anything with its ``contexts`` and ``output_blocks`` reads
    (the UI's read pool)."""
    codes = stream_codes(streams)
    regex = compile_grep(grep)
    context = context_reader(store.contexts(run_id))
    for first, kinds, meta_blob, text_blob in store.output_blocks(run_id):
        texts = decode_text(text_blob).split("\n")
        meta = decode_meta(meta_blob)
        for index, (code, (t, ctx, iteration), text) in enumerate(zip(kinds, meta, texts)):
            if codes is not None and code not in codes:
                continue
            if regex is not None and regex.search(text) is None:
                continue
            yield Line(first + index, STREAMS.get(code, code), t, context(ctx, iteration), text)


# The stable keys of `flor logs --json/--csv` (Line.to_json's).
LINE_COLUMNS = ("line", "stream", "t", "context", "text")


def run_lines(run: str, *, streams: Sequence[str] | None = None, grep: str | None = None,
              start=None) -> Iterator[Line]:
    """The captured lines of the run whose tstamp starts with ``run`` (what ``flor logs`` prints);
    the store is open while the lines are read and closed when they end or the reader stops."""
    from .query import open_for_reading

    store = open_for_reading(start)
    try:
        found = store.find_run(run)
        yield from lines(store, found.run_id, streams=streams, grep=grep)
    finally:
        store.close()

"""Capture: what a recording run prints, kept line by line with its time and loop context.

While a run records, ``sys.stdout`` and ``sys.stderr`` are wrapped by :class:`Tee`, which writes
every chunk to the real stream first (same bytes, same order; ``isatty``, ``fileno``,
``encoding`` and the rest are the real stream's) and then appends the chunk, the time and the
loop context to a queue: a few hundred nanoseconds in the writing thread. The flush thread
turns the chunks into lines (:class:`Lines`) and writes them with the logs, so a killed run keeps
what it printed up to the last flush.

``logging`` records are kept too, as stream ``logging``: a record that a handler prints to a
captured stream is kept once, as that printed line; one that goes elsewhere (a file, a stream
a handler held before the run began) is kept as the handler that printed it to the terminal
formatted it: ``logging.basicConfig(format=...)`` called after ``import flor`` (the usual order)
holds the real stderr, and its lines are kept as the user saw them; a record that no handler
printed to stdout or stderr (a file) is kept in ``logging``'s basic format. Telling these apart
takes one hook, around :meth:`logging.Logger.callHandlers`, installed while the run records.

A carriage return redraws a line (progress bars): a line keeps its final state, as a terminal
would show it. ``FLOR_CAPTURE=0`` turns capture off; ``FLOR_CAPTURE_MAX_BYTES`` caps what one run
keeps (default 32 MiB), with a note in the run when reached. Writes made below Python (C
extensions writing to file descriptor 1 or 2, subprocesses, ``sys.stdout.buffer``) are not seen.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from itertools import chain, groupby, islice
from operator import itemgetter

STREAMS = {"o": "stdout", "e": "stderr", "l": "logging", "f": "flor"}
CODES = {name: code for code, name in STREAMS.items()}
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"  # logging's BASIC_FORMAT
_LONGEST_PARTIAL = 1 << 20  # an unterminated line longer than this is kept as a line
_NEVER = object()
_KEY = itemgetter(0, 3, 4)  # a chunk's stream and loop context
_text = itemgetter(1)
_texts = itemgetter(4)  # a run's lines
_local = threading.local()  # .record: the logging record whose handlers run in this thread
_logging_threads: set[int] = set()  # threads inside logging's handlers now (a cheap first test)


def final_state(text: str) -> str:
    """What a terminal shows of ``text`` once its carriage returns have redrawn it."""
    if "\r" not in text:
        return text
    screen = ""
    for segment in text.rstrip("\r").split("\r"):
        screen = segment + screen[len(segment):]
    return screen


class Tee:
    """A text stream that writes through to ``stream`` and tells ``capture`` what it wrote."""

    def __init__(self, stream, code: str, capture: "Capture") -> None:
        self._flor_stream = stream
        self._flor_code = code
        self._flor_capture = capture
        # The hot path is a closure over what it needs (no attribute lookups on self): printing
        # a line costs the real write and about half a microsecond more.
        self.write = _writer(stream.write, code, capture)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        # Everything else is the real stream's: isatty (tqdm draws its bar), fileno, encoding,
        # buffer, flush, errors, ...
        return getattr(self._flor_stream, name)

    def __repr__(self) -> str:
        return f"<flor capture of {self._flor_stream!r}>"


def _writer(real_write, code: str, capture: "Capture"):
    push, run, clock, logging_threads, ident = (
        capture.push, capture.run, time.perf_counter, _logging_threads, threading.get_ident)

    def write(text):
        written = real_write(text)
        if capture.on:
            if logging_threads and ident() in logging_threads:
                _local.printed = True  # a logging handler printed it: kept as logging, once
                push(("l", text, clock(), run.loops.ctx_id, run.loops.iteration))
            else:
                push((code, text, clock(), run.loops.ctx_id, run.loops.iteration))
        return written

    return write


class Lines:
    """Chunks to lines, per stream: a line is complete at its newline and keeps the context of
    that moment; carriage returns leave its final state.

    Lines come out in *runs* ``(code, t, ctx_id, iteration, texts)``: consecutive lines of one
    stream in one loop context, completed together. Consecutive chunks of a stream in one context
    are joined first (``print`` writes a line in two), so the work per line is a few C calls; a
    line gets the time of the last chunk of its run of chunks."""

    def __init__(self) -> None:
        self._partial: dict[str, list] = {}  # code -> [text, t, ctx_id, iteration]

    def feed(self, chunks, t0: float) -> list[tuple]:
        """The runs of lines that ``chunks`` complete."""
        runs = []
        partial = self._partial
        for (code, ctx, iteration), group in groupby(chunks, _KEY):
            group = list(group)
            t = group[-1][2] - t0
            text = group[0][1] if len(group) == 1 else "".join(map(_text, group))
            if type(text) is not str:
                text = str(text)
            pending = partial.get(code)
            if "\n" not in text:
                if pending is None:
                    partial[code] = [text, t, ctx, iteration]
                else:
                    pending[0] += text
                    pending[1:] = t, ctx, iteration
                    if len(pending[0]) > _LONGEST_PARTIAL:
                        pending[0] = final_state(pending[0])  # a bar redrawn without end
                        if len(pending[0]) > _LONGEST_PARTIAL:
                            runs.append((code, t, ctx, iteration, [pending[0]]))
                            del partial[code]
                continue
            parts = text.split("\n")
            if pending is not None:
                parts[0] = pending[0] + parts[0]
            tail = parts.pop()
            if "\r" in text or "\r" in parts[0]:
                parts = [final_state(part) if "\r" in part else part for part in parts]
            runs.append((code, t, ctx, iteration, parts))
            if tail:
                partial[code] = [tail, t, ctx, iteration]
            else:
                partial.pop(code, None)
        return runs

    def rest(self) -> list[tuple]:
        """The unterminated lines (at the end of the run), one run each."""
        runs = [(code, t, ctx, it, [final_state(text)]) for code, (text, t, ctx, it) in self._partial.items() if text]
        self._partial.clear()
        return runs


def line_count(runs) -> int:
    """How many lines ``runs`` hold."""
    return sum(map(len, map(_texts, runs)))


class Capture:
    """The capture of one recording run's output; :meth:`start` and :meth:`stop` around it."""

    def __init__(self, run, max_bytes: int) -> None:
        self.run = run
        self.max_bytes = max_bytes
        self.on = False
        self._queue: deque = deque()
        self.push = self._queue.append
        self._lines = Lines()
        self._retry: list[tuple] = []
        self.lines = 0
        self.bytes = 0
        self.truncated = False
        self.counts = dict.fromkeys(STREAMS.values(), 0)
        self._tees: list[tuple[str, Tee]] = []
        self._original_call_handlers = None
        self._hook = None

    def start(self) -> None:
        for name, code in (("stdout", "o"), ("stderr", "e")):
            stream = getattr(sys, name)
            if stream is None or isinstance(stream, Tee):
                continue
            tee = Tee(stream, code, self)
            setattr(sys, name, tee)
            self._tees.append((name, tee))
        self._hook_logging()
        self.on = True

    def stop(self) -> None:
        """Put the real streams back (where nothing replaced ours since) and unhook logging."""
        self.on = False
        for name, tee in self._tees:
            if getattr(sys, name) is tee:
                setattr(sys, name, tee._flor_stream)
        self._tees.clear()
        if self._original_call_handlers is not None:
            import logging

            if logging.Logger.callHandlers is self._hook:  # not if someone hooked it after us
                logging.Logger.callHandlers = self._original_call_handlers
            self._original_call_handlers = self._hook = None

    def _hook_logging(self) -> None:
        import logging

        original = logging.Logger.callHandlers
        capture = self
        formatter = logging.Formatter(LOG_FORMAT)

        def callHandlers(logger, record):  # noqa: N802 (logging's name)
            outer, outer_printed = getattr(_local, "record", None), getattr(_local, "printed", False)
            _local.record, _local.printed = record, False
            me = threading.get_ident()
            _logging_threads.add(me)
            try:
                original(logger, record)
            finally:
                printed = _local.printed
                _local.record, _local.printed = outer, outer_printed
                if outer is None:
                    _logging_threads.discard(me)
            if not printed and capture.on:
                try:
                    text = _as_printed(logger, record) or formatter.format(record)
                except Exception:  # a record whose message does not format: logging's own problem
                    text = str(record.msg)
                run = capture.run
                capture.push(("l", text + "\n", time.perf_counter(), run.loops.ctx_id, run.loops.iteration))

        self._original_call_handlers, self._hook = original, callHandlers
        logging.Logger.callHandlers = callHandlers

    def drain(self, final: bool = False) -> list[tuple]:
        """The runs of lines completed since the last drain (all of them when ``final``), within
        the cap; see :class:`Lines`."""
        queue = self._queue
        chunks = list(islice(iter(queue.popleft, _NEVER), len(queue)))
        runs = self._retry + self._lines.feed(chunks, self.run.t0)
        self._retry = []
        if final:
            runs += self._lines.rest()
        if not runs:
            return runs
        count = line_count(runs)
        size = sum(map(len, chain.from_iterable(map(_texts, runs)))) + count
        if not self.truncated and self.bytes + size <= self.max_bytes:  # the common case, in C calls
            self._account(runs, count, size)
            return runs
        kept = []
        for code, t, ctx, it, texts in runs:
            if self.truncated:
                break
            room = []
            for text in texts:
                if self.bytes + len(text) + 1 > self.max_bytes:
                    self.truncated = True
                    self.on = False  # the rest is shown on the terminal but not kept
                    break
                self.bytes += len(text) + 1
                room.append(text)
            if room:
                kept.append((code, t, ctx, it, room))
            if self.truncated:
                note = (f"[flor: output capture stopped at {self.max_bytes / (1 << 20):g} MiB (FLOR_CAPTURE_MAX_BYTES); "
                        "the rest was shown but not kept]")
                kept.append(("f", t, ctx, it, [note]))
        self._account(kept, line_count(kept), 0)
        return kept

    def _account(self, runs, count: int, size: int, sign: int = 1) -> None:
        self.bytes += sign * size
        self.lines += sign * count
        for code, _t, _ctx, _it, texts in runs:
            self.counts[STREAMS[code]] += sign * len(texts)

    def give_back(self, runs: list[tuple]) -> None:
        """Runs a failed write did not keep: the next drain returns them first."""
        size = sum(map(len, chain.from_iterable(map(_texts, runs)))) + line_count(runs)
        self._account(runs, line_count(runs), size, -1)
        self._retry = list(runs) + self._retry

    def summary(self) -> dict:
        """What was captured, for ``flor show`` (kept in the run's environment)."""
        return {"lines": self.lines, "bytes": self.bytes, "streams": {k: v for k, v in self.counts.items() if v},
                "truncated": self.truncated, "max_bytes": self.max_bytes}


def _as_printed(logger, record) -> str | None:
    """The text of ``record`` as the first handler that wrote it to the real stdout or stderr
    (one that held the stream before capture began) formatted it; None when none did."""
    import logging

    real = {id(getattr(stream, "_flor_stream", stream)) for stream in (sys.stdout, sys.stderr)}
    real |= {id(sys.__stdout__), id(sys.__stderr__)}
    current = logger
    while current is not None:
        for handler in current.handlers:
            stream = getattr(handler, "stream", None)
            if (isinstance(handler, logging.StreamHandler) and stream is not None and id(stream) in real
                    and record.levelno >= handler.level and handler.filter(record)):
                return handler.format(record)
        current = current.parent if current.propagate else None
    return None

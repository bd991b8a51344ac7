"""Capture: what a recording run prints, kept line by line with its time and loop context.

While a run records, ``sys.stdout`` and ``sys.stderr`` are wrapped by :class:`Tee`, which writes
every chunk to the real stream first (same bytes, same order; ``isatty``, ``fileno``,
``encoding`` and the rest are the real stream's) and then appends the chunk, the time and the
loop context to a queue: a few hundred nanoseconds in the writing thread. The flush thread
turns the chunks into lines (:class:`Lines`) and writes them with the logs, so a killed run keeps
what it printed up to the last flush.

``logging`` records are kept too, as stream ``logging``: a record that a handler prints to a
captured stream is kept once, as that printed line; one that goes elsewhere (a file, a stream
a handler held before the run began) is kept in ``logging``'s basic format. Telling the two
apart takes one hook, around :meth:`logging.Logger.callHandlers`, installed while the run
records.

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
from itertools import islice

STREAMS = {"o": "stdout", "e": "stderr", "l": "logging", "f": "flor"}
CODES = {name: code for code, name in STREAMS.items()}
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"  # logging's BASIC_FORMAT
_LONGEST_PARTIAL = 1 << 20  # an unterminated line longer than this is kept as a line
_NEVER = object()
_local = threading.local()  # .record: the logging record whose handlers run in this thread


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

    def write(self, text):
        written = self._flor_stream.write(text)
        capture = self._flor_capture
        if capture.on:
            code = self._flor_code
            if getattr(_local, "record", None) is not None:
                _local.printed = True  # a logging handler printed it: kept as logging, once
                code = "l"
            run = capture.run
            capture.push((code, text, time.perf_counter(), run.ctx_id, run.iteration))
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        # Everything else is the real stream's: isatty (tqdm draws its bar), fileno, encoding,
        # buffer, flush, errors, ...
        return getattr(self._flor_stream, name)

    def __repr__(self) -> str:
        return f"<flor capture of {self._flor_stream!r}>"


class Lines:
    """Chunks to lines, per stream: a line is complete at its newline and keeps the context of
    that moment; carriage returns leave its final state."""

    def __init__(self) -> None:
        self._partial: dict[str, list] = {}  # code -> [text, t, ctx_id, iteration]

    def feed(self, chunks, t0: float) -> list[tuple]:
        """Complete lines ``(code, t, ctx_id, iteration, text)`` from ``chunks``."""
        lines = []
        partial = self._partial
        for code, text, t, ctx, iteration in chunks:
            if type(text) is not str:
                text = str(text)
            t -= t0
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
                            lines.append((code, t, ctx, iteration, pending[0]))
                            del partial[code]
                continue
            parts = text.split("\n")
            head = parts[0] if pending is None else pending[0] + parts[0]
            lines.append((code, t, ctx, iteration, final_state(head)))
            for middle in parts[1:-1]:
                lines.append((code, t, ctx, iteration, final_state(middle)))
            if parts[-1]:
                partial[code] = [parts[-1], t, ctx, iteration]
            else:
                partial.pop(code, None)
        return lines

    def rest(self) -> list[tuple]:
        """The unterminated lines (at the end of the run)."""
        lines = [(code, t, ctx, it, final_state(text)) for code, (text, t, ctx, it) in self._partial.items() if text]
        self._partial.clear()
        return lines


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

            logging.Logger.callHandlers = self._original_call_handlers
            self._original_call_handlers = None

    def _hook_logging(self) -> None:
        import logging

        original = logging.Logger.callHandlers
        capture = self
        formatter = logging.Formatter(LOG_FORMAT)

        def callHandlers(logger, record):  # noqa: N802 (logging's name)
            outer, outer_printed = getattr(_local, "record", None), getattr(_local, "printed", False)
            _local.record, _local.printed = record, False
            try:
                original(logger, record)
            finally:
                printed = _local.printed
                _local.record, _local.printed = outer, outer_printed
            if not printed and capture.on:
                try:
                    text = formatter.format(record)
                except Exception:  # a record whose message does not format: logging's own problem
                    text = str(record.msg)
                run = capture.run
                capture.push(("l", text + "\n", time.perf_counter(), run.ctx_id, run.iteration))

        self._original_call_handlers = original
        logging.Logger.callHandlers = callHandlers

    def drain(self, final: bool = False) -> list[tuple]:
        """The lines completed since the last drain (all of them when ``final``), within the cap."""
        queue = self._queue
        chunks = list(islice(iter(queue.popleft, _NEVER), len(queue)))
        lines = self._retry + self._lines.feed(chunks, self.run.t0)
        self._retry = []
        if final:
            lines += self._lines.rest()
        kept = []
        for line in lines:
            if self.truncated:
                break
            size = len(line[4]) + 1
            if self.bytes + size > self.max_bytes:
                self.truncated = True
                self.on = False  # the rest is shown on the terminal but not kept
                note = (f"[flor: output capture stopped at {self.max_bytes / (1 << 20):g} MiB (FLOR_CAPTURE_MAX_BYTES); "
                        "the rest was shown but not kept]")
                kept.append(("f", line[1], line[2], line[3], note))
                break
            self.bytes += size
            kept.append(line)
        for line in kept:
            self.counts[STREAMS[line[0]]] += 1
        self.lines += len(kept)
        return kept

    def give_back(self, lines: list[tuple]) -> None:
        """Lines a failed write did not keep: the next drain returns them first."""
        for line in lines:
            self.counts[STREAMS[line[0]]] -= 1
        self.lines -= len(lines)
        self.bytes -= sum(len(line[4]) + 1 for line in lines)
        self._retry = list(lines) + self._retry

    def summary(self) -> dict:
        """What was captured, for ``flor show`` (kept in the run's environment)."""
        return {"lines": self.lines, "bytes": self.bytes, "streams": {k: v for k, v in self.counts.items() if v},
                "truncated": self.truncated, "max_bytes": self.max_bytes}

"""Extract: values read out of what runs printed, stored beside recorded and replayed ones.

``flor extract NAME PATTERN`` (and :func:`extract`) runs a regular expression with one capture
group over the captured output of the selected runs (see ``flor.recording.capture``); every match becomes
a value of NAME in the loop context of its line, typed (int, float, else str), stored with
``source = 'extract'``. Running it again replaces NAME's extracted values, never adds to them.

A pattern is matched within each line. It runs over a whole block of lines at a time (a flush's
worth, thousands of lines), so a pattern with a literal part costs about one pass of the
regular-expression engine over the text; only the blocks it matches in are decoded further.

>>> extract("test_loss", r"Average loss: ([0-9.]+)")         # doctest: +SKIP
Extraction(name='test_loss', ...)
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .. import values
from .console import compile_grep, context_reader, stream_codes
from ..errors import UsageError
from ..store import RunRow
from ..store.output import Meta, decode_text

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
SAMPLES = 3


@dataclass
class RunExtraction:
    """What one run's output gave."""

    tstamp: str
    lines: int  # captured lines searched
    count: int = 0
    samples: list = field(default_factory=list)  # (context, value, line text) of the first matches


@dataclass
class Extraction:
    """What :func:`extract` found (and, unless ``dry_run``, stored)."""

    name: str
    pattern: str
    runs: list[RunExtraction]
    stored: int = 0
    dry_run: bool = False

    @property
    def count(self) -> int:
        return sum(run.count for run in self.runs)


def typed(text: str):
    """A matched group as a value: an int, else a float, else the text itself."""
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


def matches(regex: re.Pattern, text: str) -> Iterator[tuple[int, str]]:
    """``(line index, group text)`` of every match of ``regex`` within a line of ``text`` (lines
    joined by newlines), as matching each line alone would give them."""
    starts: list[int] | None = None
    position, end = 0, len(text)
    while position <= end:
        found = regex.search(text, position)
        if found is None:
            return
        start = found.start()
        if starts is None:
            starts = [0] + [m.end() for m in re.finditer("\n", text)]
        index = bisect_right(starts, start) - 1
        line_end = starts[index + 1] - 1 if index + 1 < len(starts) else end
        if found.end() <= line_end:
            if found.group(1) is not None:
                yield index, found.group(1)
            position = found.end() if found.end() > start else start + 1
            continue
        # The match ran past its line: match that line alone, from where this one began.
        line = text[starts[index]:line_end]
        for alone in regex.finditer(line, start - starts[index]):
            if alone.group(1) is not None:
                yield index, alone.group(1)
        position = line_end + 1


def mention(store, run_ids: Sequence[int], name: str, runs_scanned: int = 3) -> str | None:
    """A captured line of one of the first ``runs_scanned`` runs that holds every word of
    ``name`` (any case: ``test_loss`` finds ``Test set: Average loss: 0.0331``) and a number, or
    None: the cheap hint ``flor replay`` gives that extracting may answer without re-executing."""
    words = [w for w in re.split(r"[_\W\d]+", name) if w]
    if not words:
        return None
    ahead = "".join(rf"(?=[^\n]*\b{re.escape(word)})" for word in words)
    regex = re.compile(rf"^{ahead}[^\n]*\d", re.IGNORECASE | re.MULTILINE)
    for run_id in list(run_ids)[:runs_scanned]:
        for _first, _kinds, _meta, blob in store.output_blocks(run_id):
            text = decode_text(blob)
            found = regex.search(text)
            if found is not None:
                start = text.rfind("\n", 0, found.start()) + 1
                end = text.find("\n", found.start())
                return text[start:end if end >= 0 else len(text)].strip()
    return None


def compile_pattern(pattern: str) -> re.Pattern:
    regex = compile_grep(pattern, "PATTERN")
    if regex.groups != 1:
        raise UsageError(
            f"PATTERN {pattern!r} has {regex.groups or 'no'} capture group{'s' if regex.groups != 1 else ''}: "
            "it needs exactly one, around the value, e.g. \"Average loss: ([0-9.]+)\""
        )
    return regex


def extract(name: str, pattern: str, *, runs: Sequence[str] | None = None, where: str | None = None,
            streams: Sequence[str] | None = None, dry_run: bool = False, force: bool = False,
            start: Path | None = None) -> Extraction:
    """Values of ``name`` read by ``pattern`` (one capture group) out of the captured output of
    the runs ``runs`` / ``where`` select (default: all finished ones), stored with
    ``source='extract'`` unless ``dry_run``. Errors, in one line: a pattern without exactly one
    group, no captured output, a pattern that matches nothing, a ``name`` that flor.log already
    logs in these runs (unless ``force``)."""
    from ..store.project import project_store
    from .selection import select_runs

    if type(name) is not str or not name.strip():
        raise UsageError("NAME must be a non-empty string")
    regex = compile_pattern(pattern)
    codes = stream_codes(streams)
    store = project_store(start, readonly=dry_run)
    try:
        chosen: list[RunRow] = select_runs(store, runs, where)
        counts = store.output_counts([run.run_id for run in chosen])
        captured = [run for run in chosen if counts.get(run.run_id)]
        if not captured:
            raise UsageError(
                f"none of the {len(chosen)} selected run(s) has captured output (recorded before flor kept "
                "output, or with FLOR_CAPTURE=0); `flor show RUN` says what a run kept")
        logging_it = store.runs_logging([run.run_id for run in captured], name)
        if logging_it and not force:
            raise UsageError(
                f"{name!r} is logged by flor.log in {len(logging_it)} of these runs; choose another NAME, "
                "or pass --force to store the extracted values beside the logged ones")
        found: dict[int, list[tuple]] = {}
        report = Extraction(name, pattern, [], dry_run=dry_run)
        for run in captured:
            result = RunExtraction(run.tstamp, counts[run.run_id])
            rows = found[run.run_id] = []
            context = None
            for first, kinds, meta_blob, text_blob in store.output_blocks(run.run_id):
                text = decode_text(text_blob)
                meta = None
                for index, group in matches(regex, text):
                    if codes is not None and kinds[index] not in codes:
                        continue
                    if meta is None:
                        meta = Meta(meta_blob)
                    _t, ctx, iteration = meta[index]
                    value = typed(group)
                    rows.append((ctx, iteration, *values.encode(value)))
                    if len(result.samples) < SAMPLES:
                        if context is None:
                            context = context_reader(store.contexts(run.run_id))
                        result.samples.append((context(ctx, iteration), value, text.split("\n")[index]))
            result.count = len(rows)
            report.runs.append(result)
        if report.count == 0:
            lines = sum(r.lines for r in report.runs)
            raise UsageError(f"PATTERN {pattern!r} matched nothing in {lines} captured line(s) of "
                             f"{len(report.runs)} run(s); `flor logs RUN --grep TEXT` shows what they printed")
        if not dry_run:
            report.stored = store.write_extracted(name, found)  # a run without matches loses its old ones
        return report
    finally:
        store.close()


def text_lines(report, name: str, *, dry_run: bool = False) -> list[str]:
    """What ``flor extract`` prints of ``report``: a line per run (with its first matches on a dry
    run), then the total."""
    out = []
    for run in report.runs:
        out.append(f"{run.tstamp}  {run.count} match(es) in {run.lines} line(s)")
        if dry_run:
            for context, value, text in run.samples:
                where = ", ".join(f"{k}={v}" for k, v in context.items()) or "run"
                out.append(f"    {where:<24} {value!r:<14} {text.strip()[:100]}")
    if dry_run:
        out.append(f"dry run: {report.count} value(s) of {name} would be stored; nothing was")
    else:
        out.append(f"done: {name}: {report.stored} value(s) stored from captured output")
    return out

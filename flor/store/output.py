"""What runs printed: blocks of captured lines, and the values extracted from them.

A recording run's flush writes the lines it completed since the last one as one row of
``output_blocks``: ``streams`` holds one letter per line (``o`` stdout, ``e`` stderr, ``l``
logging, ``f`` a note of flor's), ``meta`` the zlib-compressed JSON list of ``[t, ctx_id,
iteration]`` per line, ``text`` the zlib-compressed lines joined by newlines (a captured line
holds none). Blocks keep the store small and let ``flor extract`` run one regular expression over
thousands of lines at a time. Extracted values are rows of ``logs`` with ``source = 'extract'``.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_right
from itertools import accumulate, chain
from operator import itemgetter
from typing import Iterator, Sequence

from .logs import ADD_LOOSE_SQL, count_names


def encode_block(runs: Sequence[tuple]) -> tuple[str, bytes, bytes]:
    """``(streams, meta, text)`` of runs of lines ``(code, t, ctx_id, iteration, texts)`` (see
    flor/recording/capture.py). ``meta`` holds, for each run of lines that share them, the count, the time,
    the loop instance and the iteration, as four little-endian arrays (int32, float64, int64,
    int64; -1 for none) after an int32 count of runs: it decodes in C, however many lines."""
    streams = "".join(code * len(texts) for code, _t, _ctx, _it, texts in runs)
    counts, times, contexts, iterations = array("i"), array("d"), array("q"), array("q")
    for _code, t, ctx, it, texts in runs:
        ctx, it = -1 if ctx is None else ctx, -1 if it is None else it
        if counts and times[-1] == t and contexts[-1] == ctx and iterations[-1] == it:
            counts[-1] += len(texts)
            continue
        counts.append(len(texts))
        times.append(t)
        contexts.append(ctx)
        iterations.append(it)
    parts = [array("i", [len(counts)]), counts, times, contexts, iterations]
    if sys.byteorder != "little":
        for part in parts:
            part.byteswap()
    meta = b"".join(part.tobytes() for part in parts)
    text = "\n".join(chain.from_iterable(map(itemgetter(4), runs))).encode("utf-8", "backslashreplace")
    return streams, zlib.compress(meta, 1), zlib.compress(text, 1)


def decode_text(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8", "replace")


class Meta:
    """The time and loop context of each line of a block, looked up by line index."""

    def __init__(self, blob: bytes) -> None:
        raw = zlib.decompress(blob)
        (runs,) = array("i", raw[:4]) if sys.byteorder == "little" else _swapped("i", raw[:4])
        arrays, offset = [], 4
        for code, size in (("i", 4), ("d", 8), ("q", 8), ("q", 8)):
            chunk = raw[offset:offset + runs * size]
            arrays.append(array(code, chunk) if sys.byteorder == "little" else _swapped(code, chunk))
            offset += runs * size
        counts, self.times, self.contexts, self.iterations = arrays
        self.ends = list(accumulate(counts))

    def __getitem__(self, index: int) -> tuple[float, int | None, int | None]:
        run = bisect_right(self.ends, index)
        ctx, it = self.contexts[run], self.iterations[run]
        return self.times[run], None if ctx < 0 else ctx, None if it < 0 else it

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0


def _swapped(code: str, data: bytes) -> array:
    values = array(code, data)
    values.byteswap()
    return values


def decode_meta(blob: bytes) -> list[tuple]:
    """``(t, ctx_id, iteration)`` of every line of a block, in order."""
    meta = Meta(blob)
    return [meta[i] for i in range(len(meta))]


class OutputMixin:
    """What :class:`~flor.store.Store` writes and reads of captured output."""

    @staticmethod
    def _insert_output(cursor, run_id: int, first_line: int, runs: Sequence[tuple]) -> None:
        streams, meta, text = encode_block(runs)
        cursor.execute(
            "INSERT INTO output_blocks(run_id, first_line, n, streams, meta, text) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, first_line, len(streams), streams, meta, text),  # one stream letter per line
        )

    def output_blocks(self, run_id: int) -> Iterator[tuple[int, str, bytes, bytes]]:
        """``(first_line, streams, meta, text)`` of a run's blocks, in order (compressed)."""
        rows = self._read(
            "SELECT first_line, streams, meta, text FROM output_blocks WHERE run_id = ? ORDER BY first_line", (run_id,)
        )
        yield from rows

    def output_counts(self, run_ids: Sequence[int]) -> dict[int, int]:
        """Captured lines per run (runs without any are left out)."""
        ids = ",".join(str(int(r)) for r in run_ids)
        if not ids:
            return {}
        return dict(self._read(f"SELECT run_id, SUM(n) FROM output_blocks WHERE run_id IN ({ids}) GROUP BY run_id"))

    def runs_logging(self, run_ids: Sequence[int], name: str) -> list[int]:
        """Which of the runs hold values of ``name`` that flor.log or a replay stored."""
        ids = ",".join(str(int(r)) for r in run_ids)
        if not ids:
            return []
        return [r[0] for r in self._read(
            f"SELECT DISTINCT run_id FROM logs WHERE name = ? AND source != 'extract' AND run_id IN ({ids})", (name,))]

    def write_extracted(self, name: str, values: dict[int, Sequence[tuple]]) -> int:
        """Replace the extracted values of ``name`` in each run of ``values`` (run_id ->
        ``(ctx_id, iteration, stored, vtype)`` rows) in one transaction; the rows written."""
        def body(cursor):
            removed = 0
            ids = [int(r) for r in values]
            # Insert before deleting what they replace: new rows then take rowids above every
            # existing one (SQLite reuses the rowids of deleted rows at the end of the table), so
            # readers that follow the rowid, such as flor ui, see them.
            before = int(cursor.execute("SELECT IFNULL(MAX(rowid), 0) FROM logs").fetchone()[0])
            for run_id, rows in values.items():
                cursor.executemany(
                    f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype, source) "
                    f"VALUES ({int(run_id)}, ?, ?, ?, ?, ?, 'extract')",
                    [(ctx, it, name, stored, vtype) for ctx, it, stored, vtype in rows],
                )
            for start in range(0, len(ids), 500):  # one scan of logs per 500 runs (it has no index by run)
                chunk = ",".join(map(str, ids[start:start + 500]))
                removed += cursor.execute(
                    f"DELETE FROM logs WHERE name = ? AND source = 'extract' AND run_id IN ({chunk}) "
                    f"AND rowid <= {before}", (name,)).rowcount
            added = sum(len(rows) for rows in values.values())
            # log_names.loose counts the rows of a name that are not in columnar blocks: the
            # dataframe reads the rows of a name with any.
            if added:
                cursor.executemany(ADD_LOOSE_SQL, count_names([name] * added).items())
            if removed:
                cursor.execute("UPDATE log_names SET loose = MAX(0, loose - ?) WHERE name = ?", (removed, name))
            return added

        return self._write(body)

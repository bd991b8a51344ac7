"""What runs printed: blocks of captured lines, and the values extracted from them.

A recording run's flush writes the lines it completed since the last one as one row of
``output_blocks``: ``streams`` holds one letter per line (``o`` stdout, ``e`` stderr, ``l``
logging, ``f`` a note of flor's), ``meta`` the zlib-compressed JSON list of ``[t, ctx_id,
iteration]`` per line, ``text`` the zlib-compressed lines joined by newlines (a captured line
holds none). Blocks keep the store small and let ``flor extract`` run one regular expression over
thousands of lines at a time. Extracted values are rows of ``logs`` with ``source = 'extract'``.
"""

from __future__ import annotations

import json
import zlib
from itertools import chain
from operator import itemgetter
from typing import Iterator, Sequence

from .logs import ADD_LOOSE_SQL, count_names


def encode_block(runs: Sequence[tuple]) -> tuple[str, bytes, bytes]:
    """``(streams, meta, text)`` of runs of lines ``(code, t, ctx_id, iteration, texts)`` (see
    flor/capture.py); ``meta`` holds ``[count, t, ctx_id, iteration]`` for each run of lines that
    share them."""
    streams = "".join(code * len(texts) for code, _t, _ctx, _it, texts in runs)
    meta: list[list] = []
    for code, t, ctx, it, texts in runs:
        t = round(t, 4)
        if meta and meta[-1][1:] == [t, ctx, it]:
            meta[-1][0] += len(texts)
        else:
            meta.append([len(texts), t, ctx, it])
    text = "\n".join(chain.from_iterable(map(itemgetter(4), runs))).encode("utf-8", "backslashreplace")
    return streams, zlib.compress(json.dumps(meta, separators=(",", ":")).encode(), 1), zlib.compress(text, 1)


def decode_text(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8", "replace")


def decode_meta(blob: bytes) -> list[list]:
    """``[t, ctx_id, iteration]`` per line."""
    meta = []
    for count, t, ctx, it in json.loads(zlib.decompress(blob)):
        meta += [[t, ctx, it]] * count
    return meta


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
            for run_id, rows in values.items():
                removed += cursor.execute(
                    "DELETE FROM logs WHERE run_id = ? AND name = ? AND source = 'extract'", (run_id, name)).rowcount
                cursor.executemany(
                    f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype, source) "
                    f"VALUES ({int(run_id)}, ?, ?, ?, ?, ?, 'extract')",
                    [(ctx, it, name, stored, vtype) for ctx, it, stored, vtype in rows],
                )
            added = sum(len(rows) for rows in values.values())
            # log_names.loose counts the rows of a name that are not in columnar blocks: the
            # dataframe reads the rows of a name with any.
            if added:
                cursor.executemany(ADD_LOOSE_SQL, count_names([name] * added).items())
            if removed:
                cursor.execute("UPDATE log_names SET loose = MAX(0, loose - ?) WHERE name = ?", (removed, name))
            return added

        return self._write(body)

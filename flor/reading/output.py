"""Exact, typed, stable ``--json`` and ``--csv`` output for ``flor query`` and ``flor dataframe``.

JSON is one object per line, keys in column order, compact and ASCII-only (so any string, even
one with a lone surrogate, prints on any terminal). Each value keeps its type:

- ints stay ints (exact at any size; JSON numbers have no width), floats are written with
  ``repr`` and read back to the same double;
- NULL, and NaN (pandas' and the dataframe's mark for a missing value; SQLite cannot even store
  NaN) are ``null``;
- infinities, which JSON has no number for, are the strings ``"Infinity"`` and ``"-Infinity"``
  (what ``float()`` in Python and ``Number()`` in JavaScript parse back), so a diverged loss
  does not turn into a missing one;
- bytes (BLOB columns such as ``runs.rng_state``) are ``{"$base64": true, "encoded": "..."}``,
  the form sqlite-utils and Datasette use;
- lists and dicts (JSON-typed logs) are written as JSON, with the same rules inside.

An empty result writes nothing at all. CSV writes NULL as an empty field, floats with ``repr``
and bytes as base64 text (CSV has no type for them).

>>> import io; out = io.StringIO()
>>> write_json_lines(["a", "b"], [(1, 0.1 + 0.2), (None, b"\\x00")], out); print(out.getvalue(), end="")
{"a":1,"b":0.30000000000000004}
{"a":null,"b":{"$base64":true,"encoded":"AA=="}}
"""

from __future__ import annotations

import base64
import csv
import json
import math
from typing import IO, Iterable, Sequence

from ..errors import UsageError


def json_value(value: object) -> object:
    """``value`` as plain JSON-able Python (see the module docstring for the rules)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": True, "encoded": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return json_value(item())  # a numpy scalar: its Python number or bool
    if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas here
        return None
    return str(value)


def _unique(columns: Sequence[str]) -> None:
    seen = set()
    for name in columns:
        if name in seen:
            # A JSON object cannot hold two values under one key without losing one of them.
            raise UsageError(f"--json: the column name {name!r} appears twice; name the columns apart with AS")
        seen.add(name)


def write_json_lines(columns: Sequence[str], rows: Iterable[Sequence], out: IO[str]) -> None:
    """One JSON object per row, keys in column order; nothing for no rows."""
    columns = [str(c) for c in columns]
    _unique(columns)
    for row in rows:
        record = {name: json_value(value) for name, value in zip(columns, row)}
        # allow_nan=False: a non-finite float that slipped through fails loudly, never prints NaN.
        out.write(json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False))
        out.write("\n")


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(json_value(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return value


def write_csv(columns: Sequence[str], rows: Iterable[Sequence], out: IO[str]) -> None:
    """A header line and one line per row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(v) for v in row])


def frame_rows(df) -> list[tuple]:
    """The rows of a DataFrame as tuples of Python values; missing values of nullable columns
    (``Int64``) become None instead of ``pd.NA``."""
    import pandas as pd

    columns = []
    for name in df.columns:
        column = df[name]
        values = column.tolist()
        if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
            missing = column.isna().to_numpy()
            values = [None if gone else v for v, gone in zip(values, missing)]
        columns.append(values)
    return list(zip(*columns)) if columns else []


# Columns whose numbers are moments (seconds since the epoch) in flor's tables: the text view
# prints them as local ISO times, not as 1.796603e+09. --json and --csv keep the exact number.
TIME_COLUMNS = frozenset({"started", "ended", "heartbeat", "t", "t_start", "t_end", "created", "replayed_at", "time"})


def iso_time(seconds: float | None) -> str | None:
    """``seconds`` since the epoch as a local ISO-8601 time with its UTC offset, to the second."""
    if seconds is None:
        return None
    from datetime import datetime

    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def text_value(value: object, column: str = "") -> str:
    """One cell of a text table: empty for a missing value, ints as ints, moments as times, floats
    short (the exact value is in --json/--csv)."""
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and column in TIME_COLUMNS and value > 1e8:
        return iso_time(float(value)) or ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return repr(value)  # 3.0: a float column, said so, never an int in disguise
        text = repr(value)
        return text if len(text) <= 12 else f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def write_text_table(columns: Sequence[str], rows: Iterable[Sequence], out: IO[str], *, empty: str = "(no rows)") -> None:
    """Aligned columns for people: a header, then one line per row; the last column is not padded."""
    cells = [[text_value(v, str(c)) for v, c in zip(row, columns)] for row in rows]
    if not cells:
        out.write(empty + "\n")
        return
    table = [[str(c) for c in columns]] + cells
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths)] + line[-1:]
        out.write("  ".join(padded).rstrip() + "\n")


def write_rows(fmt: str, columns: Sequence[str], rows: Iterable[Sequence], out: IO[str], *, empty: str = "(no rows)") -> None:
    """The rows as ``fmt``: ``json`` (one object per line), ``csv`` or ``text`` (aligned)."""
    if fmt == "json":
        write_json_lines(columns, rows, out)
    elif fmt == "csv":
        write_csv(columns, rows, out)
    else:
        write_text_table(columns, rows, out, empty=empty)

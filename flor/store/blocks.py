"""Columnar copies of plain logged numbers, so the dataframe reads a million values in milliseconds.

Every logged value is a row of ``logs`` (the table people query with SQL). Reading that table back
through Python's ``sqlite3`` costs about a microsecond per row for building row objects, which
made ``flor.dataframe("loss")`` over a million rows take seconds. So the flush thread also writes,
in the same transaction, each batch's plain ``int``/``float`` values of one name as one
``log_blocks`` row of three little-endian int64/float64 arrays (loop context, iteration, value).

``log_names.loose`` counts, per name, the rows that are *not* in a block (strings, tensors, None,
replayed values, ints beyond 64 bits, rows from before blocks existed). A name whose count is zero
is read from its blocks alone; any other name is read row by row from ``logs``, so the blocks are
never the only copy of anything and a wrong count can only make a read slower, not wrong.

>>> blocks, loose = build([("loss", 0.5, 1, 0), ("loss", 0.25, 1, 1), ("note", "hi", None, None)])
>>> [(name, vtype, n) for name, vtype, n, *_ in blocks], loose
([('loss', 'float', 2)], {'loss': 0, 'note': 1})
"""

from __future__ import annotations

from operator import itemgetter

INT, FLOAT = "int", "float"
_NONE = -1  # stands for a missing loop context or iteration in the int64 arrays
_name_of, _value_of, _ctx_of, _iteration_of = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)


def build(logs) -> tuple[list[tuple], dict[str, int]]:
    """Blocks ``(name, vtype, n, ctx_ids, iterations, values)`` (bytes) of the plain rows
    ``(name, value, ctx_id, iteration)`` of one batch, and per name the count of rows left loose
    (0 for a name whose rows all went into its block, so that ``log_names`` lists it)."""
    # The flush thread shares the cores with training: for the usual batch of one name,
    # everything per row runs in C (map, itemgetter, numpy's conversions).
    distinct = dict.fromkeys(map(_name_of, logs))
    if len(distinct) == 1:
        groups = {name: logs for name in distinct}
    else:
        groups = {}
        for row in logs:
            rows = groups.get(row[0])
            if rows is None:
                groups[row[0]] = rows = []
            rows.append(row)
    blocks, loose = [], {}
    for name, rows in groups.items():
        block = _block(rows)
        if block is None:
            loose[name] = loose.get(name, 0) + len(rows)
            continue
        loose.setdefault(name, 0)
        blocks.append((name, *block))
    return blocks, loose


def _block(rows) -> tuple | None:
    import numpy as np

    raw = list(map(_value_of, rows))
    kinds = set(map(type, raw))
    try:
        if kinds == {int}:
            vtype, values = INT, np.array(raw, dtype="<i8")
        elif kinds <= {int, float}:
            vtype, values = FLOAT, np.array(raw, dtype="<f8")
        else:
            return None
    except (TypeError, OverflowError, ValueError):
        return None
    return vtype, len(rows), _int_array(map(_ctx_of, rows)), _int_array(map(_iteration_of, rows)), values.tobytes()


def _int_array(items) -> bytes:
    import numpy as np

    items = list(items)
    try:
        return np.fromiter(items, dtype="<i8", count=len(items)).tobytes()
    except TypeError:  # None (a value logged outside that loop): the -1 that stands for it
        return np.fromiter((_NONE if v is None else v for v in items), dtype="<i8", count=len(items)).tobytes()


def read(rows) -> dict:
    """The column arrays of blocks ``(run_id, vtype, n, ctx_ids, iterations, values)``: ``run_id``
    (int64), ``ctx_id`` and ``iteration`` (float, NaN where missing) and ``value`` (int64 when every
    block holds ints, else float64), in block order."""
    import numpy as np

    if not rows:
        empty = np.empty(0)
        return {"run_id": np.empty(0, dtype=np.int64), "ctx_id": empty, "iteration": empty, "value": empty}
    counts = np.array([r[2] for r in rows], dtype=np.int64)
    run_id = np.repeat(np.array([r[0] for r in rows], dtype=np.int64), counts)
    all_ints = all(r[1] == INT for r in rows)
    ctx = _floats_with_nan(np.concatenate([np.frombuffer(r[3], dtype="<i8") for r in rows]))
    iteration = _floats_with_nan(np.concatenate([np.frombuffer(r[4], dtype="<i8") for r in rows]))
    if all_ints:
        value = np.concatenate([np.frombuffer(r[5], dtype="<i8") for r in rows]).astype(np.int64)
    else:
        value = np.concatenate([np.frombuffer(r[5], dtype="<i8" if r[1] == INT else "<f8").astype(np.float64)
                                for r in rows])
    return {"run_id": run_id, "ctx_id": ctx, "iteration": iteration, "value": value}


def _floats_with_nan(array):
    import numpy as np

    result = array.astype(np.float64)
    result[array == _NONE] = np.nan
    return result

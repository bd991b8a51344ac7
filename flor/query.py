"""The dataframe view of all runs, and read-only SQL.

``dataframe(*names)`` pivots args and logs into one pandas table: ``projid, tstamp, filename``,
one column per loop level that the values carry (``epoch``, ``step``), then one column per name.
A value logged at a loop context applies to every row whose context extends it: args and
run-level logs repeat on each row of their run, an epoch-level value on each step row of that
epoch. Forward and replayed values of the same run and iteration share a row.

>>> flor.dataframe("hidden", "loss")            # doctest: +SKIP
   projid               tstamp  filename  epoch  step  hidden      loss
0  tutorial  2026-11-26T15:04:07  train.py      0     0     500  2.301...
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import values
from .errors import StoreError, UsageError
from .store import Store
from .vcs import find_root

BASE_COLUMNS = ["projid", "tstamp", "filename"]
_SHIFT = 1 << 32  # run_id and ctx_id packed into one int64 key


def project_store(start: Path | None = None, *, readonly: bool = True) -> Store:
    """The store of the project that contains ``start`` (default: the working directory)."""
    root, _ = find_root(Path.cwd() if start is None else start)
    path = root / ".flor" / "flor.db"
    if not path.exists():
        raise StoreError(f"no flor runs recorded under {root} yet; run a script that imports flor first")
    store = Store.open(path, readonly=False, create=False) if not readonly else Store.open(path, readonly=True)
    return store


def _refresh_statuses(start: Path | None) -> None:
    """Mark runs whose process died as killed before showing them."""
    try:
        store = project_store(start, readonly=False)
    except StoreError:
        return
    try:
        store.reap_killed()
    except StoreError:
        pass
    finally:
        store.close()


def dataframe(*names: str, start: Path | None = None):
    """One pandas DataFrame of every run with the named args and logs (all names if none).

    >>> flor.dataframe("hidden", "accuracy")      # doctest: +SKIP
    """
    for name in names:
        if type(name) is not str:
            raise UsageError(f"flor.dataframe names must be strings, got {name!r}")
    _refresh_statuses(start)
    store = project_store(start)
    try:
        return _build(store, list(names))
    finally:
        store.close()


def _column(store: Store, name: str):
    """(run_id, ctx_id, iteration, typed value) of every log under ``name``; record wins over replay."""
    import numpy as np
    import pandas as pd

    kinds = store._read("SELECT DISTINCT vtype, source FROM logs WHERE name = ?", (name,))
    vtypes = {k for k, _ in kinds}
    sources = {s for _, s in kinds}
    if not kinds:
        return None
    order = " ORDER BY source DESC, rowid" if len(sources) > 1 else " ORDER BY rowid"
    if len(vtypes) == 1:
        rows = store._read(f"SELECT run_id, ctx_id, iteration, value FROM logs WHERE name = ?{order}", (name,))
        frame = pd.DataFrame.from_records(rows, columns=["run_id", "ctx_id", "iteration", "value"], coerce_float=False)
        vtype = next(iter(vtypes))
        frame["value"] = _typed(frame["value"], vtype)
    else:
        rows = store._read(f"SELECT run_id, ctx_id, iteration, value, vtype FROM logs WHERE name = ?{order}", (name,))
        frame = pd.DataFrame.from_records(rows, columns=["run_id", "ctx_id", "iteration", "value", "vtype"])
        decoded = [values.decode(v, t) for v, t in zip(frame["value"], frame["vtype"])]
        if vtypes <= {values.INT, values.FLOAT}:
            frame["value"] = np.asarray(decoded, dtype=float)
        else:
            frame["value"] = pd.Series(decoded, dtype=object, index=frame.index)
        frame = frame.drop(columns="vtype")
    return frame


def _typed(series, vtype: str):
    import pandas as pd

    if vtype == values.FLOAT:
        return pd.to_numeric(series, errors="coerce").astype(float) if series.dtype == object else series.astype(float)
    if vtype == values.INT:
        try:
            return series.astype("int64")
        except (OverflowError, ValueError, TypeError):
            return series.map(int)
    if vtype == values.BOOL:
        return series.astype(bool)
    if vtype == values.NONE:
        return pd.Series([None] * len(series), dtype=object, index=series.index)
    if vtype == values.JSON:
        return series.map(lambda text: values.decode(text, values.JSON))
    return series.astype(object)


def _loop_columns(frame, contexts):
    """Add one column per loop name to ``frame`` (run_id, ctx_id, iteration, ...): a value's own
    loop gives its index, and the parent links give the enclosing loops' indices."""
    import numpy as np
    import pandas as pd

    if contexts is None or frame["ctx_id"].isna().all():
        return frame.drop(columns="iteration"), []
    run_ids = contexts["run_id"].to_numpy(np.int64)
    index = pd.Index(run_ids * _SHIFT + contexts["ctx_id"].to_numpy(np.int64))
    parents = pd.to_numeric(contexts["parent_id"], errors="coerce").to_numpy(float)
    parent_keys = np.where(np.isnan(parents), -1, run_ids * _SHIFT + np.nan_to_num(parents, nan=0).astype(np.int64))
    parent_iterations = pd.to_numeric(contexts["parent_iteration"], errors="coerce").to_numpy(float)
    loop_codes, loop_names = pd.factorize(contexts["loop_name"])

    ctx = pd.to_numeric(frame["ctx_id"], errors="coerce").to_numpy(float)
    has_ctx = ~np.isnan(ctx)
    keys = np.full(len(frame), -1, dtype=np.int64)
    keys[has_ctx] = frame["run_id"].to_numpy(np.int64)[has_ctx] * _SHIFT + ctx[has_ctx].astype(np.int64)
    current = pd.to_numeric(frame["iteration"], errors="coerce").to_numpy(float)
    columns: dict[str, np.ndarray] = {}
    depth_of: dict[str, int] = {}
    level = 0
    while (keys >= 0).any():
        live = np.flatnonzero(keys >= 0)
        positions = index.get_indexer(keys[live])
        found = positions >= 0
        rows, positions = live[found], positions[found]
        codes = loop_codes[positions]
        for code in np.unique(codes):
            name = str(loop_names[code])
            column = columns.setdefault(name, np.full(len(frame), np.nan))
            pick = codes == code
            column[rows[pick]] = current[rows[pick]]
            depth_of[name] = max(depth_of.get(name, 0), level)
        next_keys = np.full(len(frame), -1, dtype=np.int64)
        next_keys[rows] = parent_keys[positions]
        next_current = np.full(len(frame), np.nan)
        next_current[rows] = parent_iterations[positions]
        keys, current = next_keys, next_current
        level += 1
    # Depth counted from the innermost; the outermost loop has the greatest count.
    ordered = sorted(columns, key=lambda n: -depth_of[n])
    for name in ordered:
        column = columns[name]
        if np.isnan(column).any():
            frame[name] = pd.array(np.where(np.isnan(column), pd.NA, column), dtype="Int64")
        else:
            frame[name] = column.astype(np.int64)
    return frame.drop(columns="iteration"), ordered


def _build(store: Store, names: list[str]):
    import pandas as pd

    runs = pd.DataFrame.from_records(
        store._read("SELECT run_id, projid, tstamp, filename FROM runs ORDER BY tstamp"),
        columns=["run_id", *BASE_COLUMNS],
    )
    arg_names = [r[0] for r in store._read("SELECT DISTINCT name FROM args ORDER BY rowid")]
    log_names = [r[0] for r in store._read("SELECT name FROM logs GROUP BY name ORDER BY MIN(rowid)")] if not names else []
    if not names:
        names = list(dict.fromkeys(arg_names + log_names))
    arg_set = set(arg_names)

    frames = []  # (loop columns, frame with run_id + loop columns + one value column)
    contexts = None
    log_columns = {}
    for name in names:
        if name in arg_set:
            continue
        column = _column(store, name)
        if column is not None:
            log_columns[name] = column
    if any(frame["ctx_id"].notna().any() for frame in log_columns.values()):
        run_ids = sorted({int(r) for f in log_columns.values() for r in f["run_id"].unique()})
        rows = store._read(
            f"SELECT run_id, ctx_id, parent_id, parent_iteration, loop_name FROM contexts "
            f"WHERE run_id IN ({','.join(map(str, run_ids))})"
        )
        contexts = pd.DataFrame.from_records(rows, columns=["run_id", "ctx_id", "parent_id", "parent_iteration", "loop_name"])
    loop_order: list[str] = []
    for name, column in log_columns.items():
        column, loops = _loop_columns(column, contexts)
        for loop_name in loops:
            if loop_name not in loop_order:
                loop_order.append(loop_name)
        keys = ["run_id", *loops]
        column = column.drop(columns="ctx_id").drop_duplicates(subset=keys, keep="first")
        frames.append((loops, column.rename(columns={"value": name})))

    table = None
    for loops, frame in sorted(frames, key=lambda item: -len(item[0])):
        if table is None:
            table, table_loops = frame, list(loops)
            continue
        if set(loops) <= set(table_loops):
            table = table.merge(frame, on=["run_id", *loops], how="outer")
        else:
            for loop_name in loops:
                if loop_name not in table_loops:
                    table[loop_name] = pd.array([pd.NA] * len(table), dtype="Int64")
                    table_loops.append(loop_name)
            for loop_name in table_loops:
                if loop_name not in frame:
                    frame[loop_name] = pd.array([pd.NA] * len(frame), dtype="Int64")
            table = table.merge(frame, on=["run_id", *table_loops], how="outer")
    if table is None:
        table = runs[["run_id"]].copy()
    else:
        table = runs[["run_id"]].merge(table, on="run_id", how="left")

    wanted_args = [n for n in names if n in arg_set]
    if wanted_args:
        placeholders = ",".join("?" * len(wanted_args))
        arg_rows = store._read(
            f"SELECT run_id, name, value, vtype FROM args WHERE name IN ({placeholders})", wanted_args
        )
        by_name: dict[str, dict[int, object]] = {n: {} for n in wanted_args}
        for run_id, name, value, vtype in arg_rows:
            by_name[name][run_id] = values.decode(value, vtype)
        for name in wanted_args:
            table[name] = table["run_id"].map(by_name[name])
            table[name] = table[name].infer_objects() if table[name].dtype == object else table[name]

    table = runs.merge(table, on="run_id", how="inner")
    loop_order = [c for c in loop_order if c in table.columns]
    sort_keys = ["tstamp", *loop_order]
    table = table.sort_values(sort_keys, kind="stable", na_position="first").reset_index(drop=True)
    ordered = [*BASE_COLUMNS, *loop_order, *[n for n in names if n in table.columns]]
    return table[ordered]


def query(sql: str, start: Path | None = None):
    """Run one read-only SQL statement over the store and return a DataFrame.

    >>> flor.query("SELECT tstamp, status FROM runs")      # doctest: +SKIP
    """
    import pandas as pd

    if type(sql) is not str or not sql.strip():
        raise UsageError("flor.query needs an SQL string, e.g. \"SELECT * FROM runs\"")
    _refresh_statuses(start)
    store = project_store(start)
    try:
        columns, rows = store.execute_readonly(sql)
    finally:
        store.close()
    return pd.DataFrame.from_records(rows, columns=columns)

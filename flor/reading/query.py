"""The dataframe view of all runs, and read-only SQL.

``dataframe(*names)`` pivots args and logs into one pandas table: the run columns ``projid,
tstamp, filename, git_head, git_dirty`` (the user's HEAD commit when the run started, and whether
the versioned code differed from it), one column per loop level that the values carry (``epoch``, ``step``), then one column per name.
A value logged at a loop context applies to every row whose context extends it: args and
run-level logs repeat on each row of their run, an epoch-level value on each step row of that
epoch. Forward and replayed values of the same run and iteration share a row. An int-valued
name (or loop) that some rows lack is a nullable ``Int64`` column, so its values stay exact ints.
A name logged several times in one loop context (an LBFGS closure, evaluated several times per
step) keeps every value: the table gets a ``seq`` column after the loop columns, the ordinal of
a value within its context (0, 1, ...), and a name logged once there fills each of its rows.

>>> flor.dataframe("hidden", "loss")            # doctest: +SKIP
   projid               tstamp  filename  git_head  git_dirty  epoch  step  hidden      loss
0  tutorial  2026-11-26T15:04:07  train.py  3f2a9c1...     False      0     0     500  2.301...
"""

from __future__ import annotations

from pathlib import Path

from ..store import blocks
from ..environment import settings
from .. import values
from ..errors import FlorWarning, UsageError
from ..store import Store
from ..store.project import project_store, refresh_statuses
from ..store.project import open_for_reading

BASE_COLUMNS = ["projid", "tstamp", "filename", "git_head", "git_dirty"]
SEQ = "seq"  # the column numbering the values of a name logged several times in one loop context
_SHIFT = 1 << 32  # run_id and ctx_id packed into one int64 key


def dataframe(*names: str, start: Path | None = None, latest: bool = False, last: bool = False,
              read_by: str | None = None, readers_of: str | None = None, keys: bool = True,
              rank: int | None = None, where: str | None = None, order_by: str | None = None,
              limit: int | None = None, per_run: bool = False):
    """One pandas DataFrame of every run with the named args and logs (all names if none).

    A name that is neither an arg nor a logged name is a :class:`UsageError` when no name
    given is known, and a :class:`FlorWarning` (the table has the known ones) otherwise.

    ``last=True`` is one row per run: its args and the last value of each logged name (its value
    at the run's last logged iteration, recorded, replayed or extracted alike: the definition
    ``flor ui`` and ``--where`` use, in store/lastvalue.py).

    ``latest=True`` is the feature-store view: one row per item (the keys of its keyed loops)
    with the most recent value of each name across runs, and the run that gave it (``tstamp``;
    with several names, also ``tstamp_<name>`` per name). ``read_by=RUN`` keeps the runs that RUN
    read values of, ``readers_of=RUN`` the runs that read RUN's (lineage). ``keys=False`` keeps
    keyed loops' positions in their columns (what checkpoints count in). A distributed job
    (flor/recording/job.py) is one tstamp with a ``rank`` column; ``rank=N`` keeps rank N's rows.

    A script that records a run and reads the table here records which runs it read.

    ``where``, ``order_by`` and ``limit`` choose runs as ``flor runs`` does (runlist.py): ``where``
    in flor's filter grammar over each run's args, last logged values and run columns
    (``tstamp``, ``status``, ``duration_s``, ...), ``order_by`` as ``"val_loss, lr desc"`` (runs
    missing the value last), ``limit`` the first that many runs; the table keeps their rows, runs
    in that order. ``per_run=True`` is ``last=True``, one row per run (``mlflow.search_runs``'s shape).

    >>> flor.dataframe("lr", "val_loss", per_run=True, where="lr < 0.01", order_by="val_loss", limit=5)  # doctest: +SKIP
    >>> flor.dataframe("hidden", "accuracy")      # doctest: +SKIP
    >>> flor.dataframe("n_words", latest=True)    # doctest: +SKIP
    >>> flor.dataframe("lr", "val_loss", last=True)  # doctest: +SKIP
    """
    for name in names:
        if type(name) is not str:
            raise UsageError(f"flor.dataframe names must be strings, got {name!r}")
    last = last or per_run
    if latest and last:
        raise UsageError("choose one of latest (one row per item) and last/per_run (one row per run)")
    if rank is not None and (type(rank) is not int or rank < 0):
        raise UsageError(f"flor.dataframe rank must be a rank number (0, 1, ...), got {rank!r}")
    if rank is not None and latest:
        raise UsageError("rank selects a job's rows; latest=True merges runs, so it takes no rank")
    refresh_statuses(start)
    store = project_store(start)
    try:
        # One read transaction: runs that start meanwhile are either wholly in the table or not.
        store.begin_read()
        only = _lineage_filter(store, read_by, readers_of)
        chosen = None
        if where or order_by or limit is not None:
            from .runlist import summaries

            if limit is not None and (type(limit) is not int or limit < 0):
                raise UsageError(f"limit must be a whole number of runs, 0 or more; got {limit!r}")

            picked = [s.run for s in summaries(store, where=where, order=order_by)]
            picked = [run for run in picked if only is None or run.run_id in only]
            chosen = [run.tstamp for run in (picked if limit is None else picked[:limit])]
            only = {run.run_id for run in picked if run.tstamp in set(chosen)}
        if last:
            table, used = _last_per_run(store, list(names), only)
        else:
            table, used = _build(store, list(names), only=only, keys=keys)
        if not latest:
            from ..recording.job import with_ranks

            table = with_ranks(table, rank)
        if latest:
            loops = _loop_names(table)
            wanted = [n for n in dict.fromkeys(names or table.columns) if n in table.columns
                      and n not in BASE_COLUMNS and n not in loops]
            table = _latest(table, wanted, loops)
            stamps = set()
            for column in ["tstamp"] + [f"tstamp_{n}" for n in wanted]:
                if column in table:
                    stamps |= {t for t in table[column] if isinstance(t, str)}
            by_tstamp = {r[2]: r[0] for r in store.runs_brief()}
            used = sorted(by_tstamp[t] for t in stamps if t in by_tstamp)
    finally:
        store.close()
    if chosen is not None and "tstamp" in table.columns and not latest:
        # The runs in the order asked for; each run's rows keep theirs (a stable sort).
        rank = {tstamp: i for i, tstamp in enumerate(chosen)}
        table = table.iloc[table["tstamp"].map(rank).argsort(kind="stable")].reset_index(drop=True)
    _note_read(used, "feature store" if latest else "dataframe")
    return table


def _last_per_run(store: Store, names: list[str], only: set[int] | None):
    """One row per run (by tstamp): the run columns, then each name's arg value or last value."""
    import pandas as pd

    from ..recording import lineage

    runs = [r for r in store.runs_brief() if lineage.visible(r[2]) and (only is None or r[0] in only)]
    arg_names = store.arg_names()
    logged = store.logged_names()
    if not names:
        names = list(dict.fromkeys(arg_names + logged))
    known_logs = set(logged)
    unknown = [n for n in dict.fromkeys(names) if n not in arg_names and n not in known_logs]
    if unknown:
        _report_unknown(store, unknown, all_unknown=len(unknown) == len(set(names)), arg_names=arg_names)
    names = [n for n in dict.fromkeys(names) if n not in unknown]
    wanted_args = [n for n in names if n in arg_names]
    args: dict[tuple[int, str], object] = {}
    for run_id, name, value, vtype in (store.args_named(wanted_args) if wanted_args else []):
        args[(run_id, name)] = values.decode(value, vtype)
    lasts = store.last_values_of_runs([r[0] for r in runs], [n for n in names if n not in arg_names])
    result: dict = {
        "projid": [r[1] for r in runs], "tstamp": [r[2] for r in runs], "filename": [r[3] for r in runs],
        "git_head": [r[4] for r in runs],
        "git_dirty": pd.array([None if r[5] is None else bool(r[5]) for r in runs], dtype="boolean"),
    }
    for name in names:
        if name in arg_names:
            result[name] = _arg_column([args.get((r[0], name)) for r in runs])
        else:
            last = [lasts.get(r[0], {}).get(name, (None, None))[0] for r in runs]
            result[name] = _arg_column(last)
    frame = pd.DataFrame(result)
    frame.attrs["flor_loops"] = []
    used = sorted(r[0] for r in runs if lasts.get(r[0]))
    return frame, used


def _note_read(run_ids, how: str) -> None:
    from ..recording import lineage

    lineage.note_read(run_ids, how)


def _lineage_filter(store: Store, read_by: str | None, readers_of: str | None) -> set[int] | None:
    """The run ids the lineage options keep (None: every run)."""
    only = None
    if read_by is not None:
        reader = store.find_run(read_by)
        only = {r[0] for r in store.read_from(reader.run_id)}
    if readers_of is not None:
        source = store.find_run(readers_of)
        readers = {r[0] for r in store.read_by(source.run_id)}
        only = readers if only is None else only & readers
    return only


def _loop_names(table) -> list[str]:
    return list(table.attrs.get("flor_loops", []))


def _latest(table, names: list[str], loops: list[str]):
    """One row per item key: the last non-missing value of each name in run order (the table is
    sorted by run tstamp), and the tstamp of the run that gave it."""
    import pandas as pd

    if not loops:
        # No loops: the items are the runs' run-level values; one row holds the latest of each.
        loops = []
    # Rows without any of the names (a run that logged none of them) are not items.
    table = table[table[names].notna().any(axis=1).to_numpy()] if names else table.iloc[0:0]
    frame = table[loops + names].copy()
    for loop_name in loops:
        if frame[loop_name].dtype == object:
            frame[loop_name] = frame[loop_name].infer_objects()
    provenance = {}
    for name in names:
        provenance[f"tstamp_{name}"] = table["tstamp"].where(table[name].notna())
    frame = pd.concat([frame, pd.DataFrame(provenance)], axis=1)
    if loops:
        grouped = frame.groupby(loops, sort=False, dropna=False).last().reset_index()
    else:
        grouped = frame.tail(0) if frame.empty else frame.ffill().tail(1).reset_index(drop=True)
    grouped = grouped.dropna(subset=[f"tstamp_{n}" for n in names], how="all").reset_index(drop=True)
    stamps = grouped[[f"tstamp_{n}" for n in names]]
    result = grouped[loops + names].copy()
    # The newest of the row's runs (tstamps sort as text); NaN where a name has no value.
    result["tstamp"] = [max((t for t in row if isinstance(t, str)), default=None)
                        for row in stamps.itertuples(index=False)]
    if len(names) > 1:
        for name in names:
            result[f"tstamp_{name}"] = stamps[f"tstamp_{name}"]
    result.attrs["flor_loops"] = loops
    return result


_NUMERIC = {values.INT, values.FLOAT, values.BOOL}


def _column(store: Store, name: str) -> dict | None:
    """Every log under ``name``: numpy arrays ``run_id``, ``ctx_id`` and ``iteration`` (float,
    NaN at run level), ``value`` (typed) and ``replayed`` (bool: not recorded), in the order they
    were logged, record rows before replayed ones."""
    import numpy as np

    stored_blocks = store.log_blocks(name)
    if stored_blocks:
        column = blocks.read(stored_blocks)  # blocks hold recorded values only
        column["replayed"] = np.zeros(len(column["run_id"]), dtype=bool)
        return column
    kinds = store.log_kinds(name)
    if not kinds:
        return None
    vtypes = {k for k, _ in kinds}
    ordered = len({s for _, s in kinds}) > 1
    if vtypes <= _NUMERIC:
        # Rows stream from the cursor straight into a numpy record array (no list of tuples);
        # a NULL value (a NaN float) comes with a flag and becomes NaN. Ints
        # stay exact in int64; one beyond 64 bits (stored as text) sends the column to the
        # object path below.
        exact_ints = vtypes == {values.INT}
        rows = store.numeric_log_rows(name, ordered)
        try:
            table = np.fromiter(rows, dtype=[("r", "i8"), ("c", "f8"), ("i", "f8"), ("v", "i8" if exact_ints else "f8"),
                                             ("null", "?"), ("replayed", "?")])
        except (OverflowError, ValueError, TypeError):
            table = None
        if table is not None:
            ctx, iteration, value = table["c"], table["i"], table["v"]
            ctx[ctx < 0] = np.nan
            iteration[iteration < 0] = np.nan
            if not exact_ints:
                value[table["null"]] = np.nan  # NaN floats are stored as NULL
            if vtypes == {values.BOOL}:
                value = value.astype(bool)
            return {"run_id": table["r"].copy(), "ctx_id": ctx.copy(), "iteration": iteration.copy(), "value": value.copy(),
                    "replayed": table["replayed"].copy()}
    rows = store.log_rows_named(name, ordered)
    keys = np.array([r[:3] for r in rows], dtype=float).reshape(-1, 3)
    decoded = np.empty(len(rows), dtype=object)
    decoded[:] = [values.decode(r[3], r[4]) for r in rows]
    return {"run_id": keys[:, 0].astype(np.int64), "ctx_id": keys[:, 1], "iteration": keys[:, 2], "value": decoded,
            "replayed": np.array([bool(r[5]) for r in rows], dtype=bool)}


def _loop_columns(column: dict, contexts) -> tuple[dict, list[str]]:
    """Loop name -> float array of indices for each value: a value's own loop gives its index,
    and the parent links give the enclosing loops' indices. Also returns the names, outermost first."""
    import numpy as np
    import pandas as pd

    n = len(column["run_id"])
    ctx = column["ctx_id"]
    has_ctx = ~np.isnan(ctx)
    if contexts is None or not has_ctx.any():
        return {}, []
    c_run, c_ctx, c_parent, c_parent_it, c_names = contexts
    index = pd.Index(c_run * _SHIFT + c_ctx)
    parent_keys = np.where(np.isnan(c_parent), -1, c_run * _SHIFT + np.nan_to_num(c_parent, nan=0).astype(np.int64))
    loop_codes, loop_names = pd.factorize(np.asarray(c_names, dtype=object))

    keys = np.full(n, -1, dtype=np.int64)
    keys[has_ctx] = column["run_id"][has_ctx] * _SHIFT + ctx[has_ctx].astype(np.int64)
    current = column["iteration"]
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
            target = columns.setdefault(name, np.full(n, np.nan))
            pick = codes == code
            target[rows[pick]] = current[rows[pick]]
            depth_of[name] = max(depth_of.get(name, 0), level)
        next_keys = np.full(n, -1, dtype=np.int64)
        next_keys[rows] = parent_keys[positions]
        next_current = np.full(n, np.nan)
        next_current[rows] = c_parent_it[positions]
        keys, current = next_keys, next_current
        level += 1
    # Depth counted from the innermost; the outermost loop has the greatest count.
    return columns, sorted(columns, key=lambda name: -depth_of[name])


def _index_column(array):
    """A loop column: int64 when complete, nullable Int64 where some rows have no index."""
    import numpy as np
    import pandas as pd

    if np.isnan(array).any():
        return pd.array(array, dtype="Int64")
    return array.astype(np.int64)


def _nullable_ints(array):
    """An int64 value array as nullable Int64, so that the outer merges and the rows of runs
    without the name add <NA> instead of turning every value into a float (inexact beyond 2**53)."""
    import numpy as np
    import pandas as pd

    return pd.array(array, dtype="Int64") if array.dtype == np.int64 else array


def _merged_ints(array):
    """A merged Int64 value column: plain int64 again when nothing is missing."""
    import numpy as np

    return array if array.isna().any() else array.to_numpy(np.int64)


def _arg_column(per_row):
    """One arg's values per row: int64 when every row has an int, nullable Int64 when some run
    lacks the arg (not float64, which rounds ints beyond 2**53 and prints 500 as 500.0)."""
    import pandas as pd

    present = [v for v in per_row if v is not None]
    if len(present) < len(per_row) and present and all(
            type(v) is int and -2**63 <= v < 2**63 for v in present):
        return pd.array(list(per_row), dtype="Int64")
    return pd.Series(per_row).infer_objects()


def _same_as_previous(rank, loops: list, order):
    """For each row in ``order``, whether it has the (run, loop indices) key of the row before."""
    import numpy as np

    same = np.zeros(len(order), dtype=bool)
    if len(order) > 1:
        same[1:] = rank[order][1:] == rank[order][:-1]
        for column in loops:
            a, b = column[order][1:], column[order][:-1]
            same[1:] &= (a == b) | (np.isnan(a) & np.isnan(b))
    return same


def _dedupe_sorted(rank, loops: list, order):
    """Positions (in ``order``) of the first row of each distinct (run, loop indices) key."""
    return order[~_same_as_previous(rank, loops, order)]


def _ordinals(rank, loops: list, replayed, order):
    """For each row in ``order`` (sorted by key, stably: in logged order within a key), its
    ordinal among the values of its (run, loop indices) key from the same source: repeated values
    of a context are 0, 1, ...; a replayed value counts apart from the recorded ones it matches."""
    import numpy as np

    same = _same_as_previous(rank, loops, order)
    same[1:] &= replayed[order][1:] == replayed[order][:-1]
    positions = np.arange(len(order))
    starts = np.maximum.accumulate(np.where(same, 0, positions)) if len(order) else positions
    return (positions - starts).astype(float)


def _report_unknown(store: Store, unknown: list[str], *, all_unknown: bool, arg_names: list[str]) -> None:
    """Names that are neither an arg nor a logged name: an error when no name is known (the
    table would hold nothing asked for), else a warning, and the table has the known ones."""
    import warnings

    logged = sorted(store.logged_names())
    known = list(dict.fromkeys(arg_names + logged))
    shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
    message = f"no arg or log named {' or '.join(map(repr, unknown))} (known: {shown or 'none yet'})"
    if all_unknown:
        raise UsageError(message)
    # stacklevel 5: the caller of flor.dataframe (flor.dataframe -> query.dataframe -> _build -> here).
    warnings.warn(f"{message}; left out of the table", FlorWarning, stacklevel=5)


def _build(store: Store, names: list[str], only: set[int] | None = None, keys: bool = True):
    """The table, and the ids of the runs whose values it holds."""
    import numpy as np
    import pandas as pd

    from ..recording import lineage

    runs = [r for r in store.runs_brief() if lineage.visible(r[2])]
    if only is not None:
        runs = [r for r in runs if r[0] in only]
    run_ids = np.array([r[0] for r in runs], dtype=np.int64)
    by_run = pd.Index(run_ids)
    arg_names = store.arg_names()
    if not names:
        log_names = store.logged_names()
        names = list(dict.fromkeys(arg_names + log_names))
    arg_set = set(arg_names)

    log_columns = {}
    for name in names:
        if name not in arg_set:
            column = _column(store, name)
            if column is not None:
                log_columns[name] = column
    unknown = [n for n in dict.fromkeys(names) if n not in arg_set and n not in log_columns]
    if unknown:
        _report_unknown(store, unknown, all_unknown=len(unknown) == len(set(names)), arg_names=arg_names)
    contexts = None
    if any((~np.isnan(c["ctx_id"])).any() for c in log_columns.values()):
        wanted = sorted({int(r) for c in log_columns.values() for r in np.unique(c["run_id"])})
        contexts = _context_arrays(store, wanted)

    # One frame per name, keyed by run rank and its loop indices.
    frames, loop_order = [], []
    for name, column in log_columns.items():
        loops, outermost_first = _loop_columns(column, contexts)
        for loop_name in outermost_first:
            if loop_name not in loop_order:
                loop_order.append(loop_name)
        rank = by_run.get_indexer(column["run_id"])
        present = rank >= 0
        key_arrays = [loops[n] for n in outermost_first]
        sort_keys = [np.where(np.isnan(k), -1.0, k) for k in reversed(key_arrays)] + [rank]
        order = np.lexsort(sort_keys) if len(rank) else np.arange(0)  # stable: logged order within a key
        order = order[present[order]]
        seq = _ordinals(rank, key_arrays, column["replayed"], order)
        if len(seq) and seq.max() > 0:
            # Several values in one context: every one is a row, numbered by `seq`.
            regroup = np.lexsort([seq] + [k[order] for k in sort_keys])
            order, seq = order[regroup], seq[regroup]
            keep = ~(_same_as_previous(rank, key_arrays, order) & np.r_[False, seq[1:] == seq[:-1]])
            order, seq = order[keep], seq[keep]
            frame = {"_rank": rank[order], **{n: loops[n][order] for n in outermost_first}, SEQ: seq,
                     name: _nullable_ints(column["value"][order])}
            frames.append(([*outermost_first, SEQ], frame))
            continue
        order = _dedupe_sorted(rank, key_arrays, order)
        frame = {"_rank": rank[order], **{n: loops[n][order] for n in outermost_first},
                 name: _nullable_ints(column["value"][order])}
        frames.append((outermost_first, frame))

    if any(SEQ in loops for loops, _frame in frames):
        loop_order.append(SEQ)  # innermost: the values within one context
    if len(frames) == 1:
        loops, frame = frames[0]
        table = pd.DataFrame({k: v for k, v in frame.items()})
        table_loops = list(loops)
    else:
        table, table_loops = None, []
        for loops, frame in sorted(frames, key=lambda item: -len(item[0])):
            frame = pd.DataFrame(frame)
            if table is None:
                table, table_loops = frame, list(loops)
                continue
            if not set(loops) <= set(table_loops):
                for loop_name in loops:
                    if loop_name not in table_loops:
                        table[loop_name] = np.nan
                        table_loops.append(loop_name)
                for loop_name in table_loops:
                    if loop_name not in frame:
                        frame[loop_name] = np.nan
                loops = table_loops
            table = table.merge(frame, on=["_rank", *loops], how="outer")
    # Every run appears, with NaN where it logged none of the names.
    if table is None:
        table = pd.DataFrame({"_rank": np.arange(len(runs))})
    else:
        missing = np.setdiff1d(np.arange(len(runs)), table["_rank"].to_numpy())
        if len(missing):
            table = pd.concat([table, pd.DataFrame({"_rank": missing})], ignore_index=True)
    loop_order = [n for n in loop_order if n in table.columns]
    rank = table["_rank"].to_numpy()
    sort_keys = [np.where(np.isnan(k), -1.0, k) for k in (table[n].to_numpy(float) for n in reversed(loop_order))]
    order = np.lexsort([*sort_keys, rank]) if len(rank) else np.arange(0)
    if not (order == np.arange(len(order))).all():
        table = table.iloc[order].reset_index(drop=True)
        rank = rank[order]

    keyed = _keys_by_loop(store, table, loop_order, run_ids, contexts,
                          _has_values(table, [n for n in names if n in table.columns])) if keys else {}
    result = {
        "projid": np.array([r[1] for r in runs], dtype=object)[rank],
        "tstamp": np.array([r[2] for r in runs], dtype=object)[rank],
        "filename": np.array([r[3] for r in runs], dtype=object)[rank],
        # The user's own HEAD when the run started, and whether the code differed from it.
        "git_head": np.array([r[4] for r in runs], dtype=object)[rank],
        "git_dirty": pd.array([None if r[5] is None else bool(r[5]) for r in runs], dtype="boolean")[rank],
    }
    for loop_name in loop_order:
        result[loop_name] = keyed[loop_name] if loop_name in keyed else _index_column(table[loop_name].to_numpy(float))
    wanted_args = [n for n in names if n in arg_set]
    if wanted_args:
        arg_rows = store.args_named(wanted_args)
        per_run = {n: np.full(len(runs), None, dtype=object) for n in wanted_args}
        positions = {run_id: i for i, run_id in enumerate(run_ids.tolist())}
        for run_id, name, value, vtype in arg_rows:
            if run_id in positions:
                per_run[name][positions[run_id]] = values.decode(value, vtype)
    for name in names:
        if name in arg_set:
            result[name] = _arg_column(per_run[name][rank])
        elif name in table.columns:
            if isinstance(table[name].dtype, pd.Int64Dtype):
                result[name] = _merged_ints(table[name].array)
            else:
                result[name] = table[name].to_numpy() if table[name].dtype != object else table[name].to_numpy(object)
    frame = pd.DataFrame(result)
    frame.attrs["flor_loops"] = loop_order
    used = sorted({int(run_ids[r]) for r in np.unique(rank[_has_values(table, [n for n in names if n in table.columns])])}) \
        if len(rank) else []
    return frame, used


def _context_arrays(store: Store, run_ids: list[int]) -> tuple:
    """The runs' loop instances as arrays (run, ctx, parent, parent iteration) and loop names."""
    import numpy as np

    rows = store.contexts_of_runs(run_ids)
    numbers = np.array([r[:4] for r in rows], dtype=float).reshape(-1, 4)
    return (numbers[:, 0].astype(np.int64), numbers[:, 1].astype(np.int64), numbers[:, 2], numbers[:, 3],
            [r[4] for r in rows])


def _has_values(table, names: list[str]):
    """Rows of the merged table that hold a value of some name."""
    import numpy as np

    if not names:
        return np.zeros(len(table), dtype=bool)
    return table[names].notna().any(axis=1).to_numpy()


def _keys_by_loop(store: Store, table, loop_order: list[str], run_ids, contexts, with_values) -> dict:
    """Loop name -> the column of keys that replaces its positions, for the keyed loops."""
    import numpy as np
    import pandas as pd

    from ..recording import keys

    keyed_names = [n for n in loop_order if n in store.keyed_loop_names()]
    if not keyed_names or not len(table):
        return {}
    present = run_ids[np.unique(table["_rank"].to_numpy()[with_values])]
    rows = store.item_keys_of_runs([int(r) for r in present])
    if not rows:
        return {}
    if contexts is None or not set(int(r) for r in present) <= set(np.unique(contexts[0]).tolist()):
        contexts = _context_arrays(store, [int(r) for r in present])
    column = {"run_id": np.array([r[0] for r in rows], dtype=np.int64),
              "ctx_id": np.array([r[1] for r in rows], dtype=float),
              "iteration": np.array([r[2] for r in rows], dtype=float)}
    loops, _order = _loop_columns(column, contexts)
    by_run = pd.Index(run_ids)
    ranks = by_run.get_indexer(column["run_id"])
    names_of = {(int(r), int(c)): n for r, c, n in zip(contexts[0], contexts[1], contexts[4])}
    own = np.array([names_of.get((int(r[0]), int(r[1]))) for r in rows], dtype=object)
    decoded = np.empty(len(rows), dtype=object)
    decoded[:] = [keys.decode(r[3], r[4]) for r in rows]
    out = {}
    for name in keyed_names:
        pick = (own == name) & (ranks >= 0)
        if not pick.any() or name not in loops:
            continue
        on = [n for n in loop_order if n in loops and not np.isnan(loops[n][pick]).any()]
        keys_frame = pd.DataFrame({"_rank": ranks[pick], **{n: loops[n][pick] for n in on}, "__key": decoded[pick]})
        keys_frame = keys_frame.drop_duplicates(subset=["_rank", *on], keep="last")
        left = pd.DataFrame({"_rank": table["_rank"].to_numpy(), **{n: table[n].to_numpy(float) for n in on}})
        merged = left.merge(keys_frame, on=["_rank", *on], how="left")["__key"].to_numpy(object)
        positions = table[name].to_numpy(float)
        values = np.empty(len(table), dtype=object)
        for i, (key, position) in enumerate(zip(merged, positions)):
            values[i] = key if key is not None and not (type(key) is float and key != key) else (
                None if np.isnan(position) else int(position))
        out[name] = pd.Series(values).infer_objects().to_numpy() if all(
            type(v) is int for v in values) else values
    return out


def query(sql: str, start: Path | None = None):
    """Run one read-only SQL statement over the store and return a DataFrame.

    >>> flor.query("SELECT tstamp, status FROM runs")      # doctest: +SKIP
    """
    import pandas as pd

    columns, rows = query_rows(sql, start)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    _note_query_lineage(frame, start)
    return frame


def _note_query_lineage(frame, start: Path | None) -> None:
    """Lineage of a query: the runs its result names (by a run_id or tstamp column)."""
    from ..recording import lineage

    if "run_id" not in frame and "tstamp" not in frame:
        return
    ids: set[int] = set()
    if "run_id" in frame:
        ids |= {int(v) for v in frame["run_id"].dropna().unique() if isinstance(v, (int,)) or str(v).isdigit()}
    if "tstamp" in frame:
        stamps = {str(v) for v in frame["tstamp"].dropna().unique()}
        if stamps:
            store = project_store(start)
            try:
                ids |= {r[0] for r in store.runs_brief() if r[2] in stamps}
            finally:
                store.close()
    if ids:
        lineage.note_read(sorted(ids), "query")


def query_rows(sql: str, start: Path | None = None) -> tuple[list[str], list[tuple]]:
    """(column names, rows as sqlite3 returns them) of one read-only SQL statement; what
    ``flor query --json/--csv`` prints, with every value's SQLite type intact."""
    if type(sql) is not str or not sql.strip():
        raise UsageError("flor.query needs an SQL string, e.g. \"SELECT * FROM runs\"")
    refresh_statuses(start)
    store = project_store(start)
    try:
        return store.execute_readonly(sql, max_seconds=settings.query_max_s(), max_bytes=settings.query_max_bytes())
    finally:
        store.close()


def list_runs(*, where: str | None = None, status=None, order: str | None = None, limit: int | None = None,
              start: Path | None = None) -> list:
    """The project's runs for ``flor runs`` (:class:`runlist.RunSummary` each; a killed run's status
    said as such first), filtered by status and ``where``, ordered, limited.

    >>> list_runs(where="lr < 0.01", status="finished", order="val_loss", limit=3)  # doctest: +SKIP
    """
    from .runlist import summaries

    store = open_for_reading(start)
    try:
        store.begin_read()
        return summaries(store, where=where, status=status, order=order, limit=limit)
    finally:
        store.close()

"""Selection: which runs a command works on (``--runs`` prefixes and a ``--where`` filter).

Shared by ``flor replay`` and ``flor extract``.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import UsageError
from ..store import RunRow, Store


def select_runs(store: Store, runs: Sequence[str] | None, where: str | None) -> list[RunRow]:
    """The finished runs (not running) whose tstamp starts with one of ``runs`` (a full tstamp
    names exactly its run) and for which ``where`` holds over args and last logged values."""
    chosen = [r for r in store.runs() if r.status != "running"]
    if runs:
        prefixes = [p.strip() for p in runs if p.strip()]
        exact = {r.tstamp for r in chosen} & set(prefixes)
        # A full tstamp names one run even when a later run's tstamp extends it (same second).
        chosen = [r for r in chosen if r.tstamp in exact or any(
            r.tstamp.startswith(p) for p in prefixes if p not in exact)]
        if not chosen:
            raise UsageError(f"no finished run matches --runs {' '.join(prefixes)}; `flor runs` lists them")
    if where:
        # flor's own filter language (as in flor ui), never DataFrame.query: that evaluates
        # Python (`@pd.io.common.os.system(...)`, attribute chains, method calls).
        from .filters import compile_filter

        # Last values as every surface reads them (store/lastvalue.py), in one pass over the logs.
        last = store.last_values_of_runs([run.run_id for run in chosen])
        records = []
        for run in chosen:
            logged = {name: value for name, (value, _source) in last.get(run.run_id, {}).items()}
            records.append({"tstamp": run.tstamp, **logged, **store.args(run.run_id)})
        if records:
            keep = compile_filter(where, dict.fromkeys(name for row in records for name in row))
            chosen = [run for run, row in zip(chosen, records) if keep(row)]
    return chosen

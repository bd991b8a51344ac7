"""The model registry: the run and iteration with the best value of a logged metric.

>>> best = flor.best("val_acc", mode="max", where="lr < 0.1")     # doctest: +SKIP
>>> best.load(model=net)                                           # doctest: +SKIP

The candidates are the finished runs that ``where`` keeps (the one filter grammar, over args and
last logged values, as ``flor replay --where``; a last value is the one at the run's last logged
iteration, see flor/store/lastvalue.py). Each value of the metric counts at its outer
loop iteration (the iteration a checkpoint of that loop names); ``checkpointed=True`` considers
only the iterations that have a checkpoint, so that the best one can always be loaded. Ties go to
the earlier run and iteration, so the answer is stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import CheckpointError, UsageError


@dataclass(frozen=True)
class Best:
    """Where the best value of ``name`` was logged."""

    name: str
    value: object
    tstamp: str
    run_id: int
    iteration: int | None  # the outer loop's iteration (None: logged outside any loop)
    loops: dict = field(default_factory=dict)  # every loop column of the row: {"epoch": 7, "step": 12}
    checkpointed: bool = False  # a checkpoint exists at that iteration

    def load(self, *objs, trusted: bool = False, **named):
        """Load the checkpoint of this run at this iteration into the objects given (and return it)."""
        from ..checkpoints.restore import load_checkpoint

        if not self.checkpointed:
            where = f"iteration {self.iteration}" if self.iteration is not None else "run level"
            raise CheckpointError(
                f"the best {self.name} ({where} of run {self.tstamp}) has no checkpoint there; "
                f"use flor.best(..., checkpointed=True) for the best among checkpointed iterations"
            )
        return load_checkpoint(self.tstamp, self.iteration, *objs, trusted=trusted, **named)


def best(name: str, mode: str = "max", where: str | None = None, *, checkpointed: bool = False) -> Best:
    """The run and iteration with the best value of ``name`` (``mode`` "max" or "min")."""
    import numpy as np

    from .query import dataframe
    from ..store.project import project_store
    from .selection import select_runs

    if type(name) is not str or not name:
        raise UsageError(f"flor.best needs a logged name, got {name!r}")
    if mode not in ("max", "min"):
        raise UsageError(f"flor.best(mode=...) is 'max' or 'min', got {mode!r}")
    from ..recording import lineage

    store = project_store()
    try:
        runs = [r for r in select_runs(store, None, where) if lineage.visible(r.tstamp)]
        with_checkpoints = {r.run_id: {c.iteration for c in store.checkpoints(r.run_id)} for r in runs}
    finally:
        store.close()
    if not runs:
        raise UsageError(f"no finished run matches --where {where!r}" if where else "no finished runs yet")
    table = dataframe(name, keys=False)  # positions, not keys: checkpoints count in positions
    loops = list(table.attrs.get("flor_loops", []))
    by_tstamp = {r.tstamp: r for r in runs}
    table = table[table["tstamp"].isin(list(by_tstamp))]
    values = table[name]
    numeric = values.map(lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                         and not (isinstance(v, float) and math.isnan(v)))
    table = table[numeric.to_numpy(bool)]
    # Each row's outer loop is its outermost loop column with a value (runs may name theirs apart).
    outer_of = [next((int(row[n]) for n in loops if not _missing(row[n])), None) for _, row in table.iterrows()]
    if checkpointed:
        keep = [it is not None and it in with_checkpoints[by_tstamp[t].run_id] for it, t in zip(outer_of, table["tstamp"])]
        outer_of = [it for it, k in zip(outer_of, keep) if k]
        table = table[np.array(keep, dtype=bool)] if len(table) else table
    if not len(table):
        extra = " at a checkpointed iteration" if checkpointed else ""
        raise UsageError(f"no finished run logged a number under {name!r}{extra}; `flor dataframe {name}` shows its values")
    column = table[name].astype(float).to_numpy()
    index = int(np.argmax(column) if mode == "max" else np.argmin(column))  # the first of ties
    row = table.iloc[index]
    run = by_tstamp[row["tstamp"]]
    iteration = outer_of[index]
    found = Best(
        name=name, value=row[name].item() if hasattr(row[name], "item") else row[name], tstamp=run.tstamp,
        run_id=run.run_id, iteration=iteration,
        loops={n: (None if _missing(row[n]) else row[n]) for n in loops},
        checkpointed=iteration is not None and iteration in with_checkpoints[run.run_id],
    )
    if found.checkpointed:
        _pin(found, mode)
    return found


def _pin(found: Best, mode: str) -> None:
    """The registry keeps the checkpoint it names: `flor gc` leaves it unless asked."""
    from .query import project_store

    store = project_store(readonly=False)
    try:
        store.pin_checkpoint(found.run_id, found.iteration, f"flor.best {found.name} {mode}")
    finally:
        store.close()


def _missing(value) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False

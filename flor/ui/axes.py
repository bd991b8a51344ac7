"""The x axis of a chart: a curve's values placed by iteration, by step or by wall time.

A curve (``curves.py``) comes with x as the position of each value's loop iteration among all
iterations of that loop in the run ("iteration"). The chart can also place values

- by **step**: the count of the run's innermost loop. A name logged once per epoch is placed at
  the step that ended its epoch, so epoch metrics line up with step losses on one axis (a name
  logged in the nested loop already counts steps, and is unchanged);
- by **wall time**: seconds since the run started. Top-level iterations have their start times in
  the store (an iteration ends when the next begins, or when its loop ends); a nested loop
  instance knows only its start and end, so its iterations are spread evenly between them.

Gaps are found here too: a stretch of a curve where iterations are missing (epochs whose replayed
values were withheld for drift, a crash and resume) is not bridged by a line.

>>> axis = XAxis.build("step", loop, db.loop_clock(1), db.iteration_starts(1), "epoch")   # doctest: +SKIP
>>> axis.place(np.array([0.0, 1.0]))                                                      # doctest: +SKIP
array([19., 39.])
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UsageError

X_MODES = ("iteration", "step", "time")
TIME_LABEL = "wall time (s since the run started)"


@dataclass
class LoopShape:
    """The instances of the loop a curve was logged in (from curves._Loop): ctx ids ascending,
    iterations per instance, the x of each instance's first iteration, and its parent."""

    name: str
    ids: np.ndarray
    counts: list
    offsets: np.ndarray
    nested: bool


@dataclass
class XAxis:
    """How one run's loop positions become x for the chosen mode, and the axis label."""

    mode: str
    label: str
    place: Callable[[np.ndarray], np.ndarray]
    integer: bool

    @classmethod
    def build(cls, mode: str, loop: LoopShape | None, clock: list[tuple], starts: list[tuple],
              iteration_label: str, ended: float | None = None) -> "XAxis":
        """The axis for ``mode``; ``clock`` and ``starts`` are the store's loop_clock and
        iteration_starts rows of the run (their times are seconds since the run started);
        ``ended``: when the run ended, in the same seconds (None while it runs)."""
        if mode not in X_MODES:
            raise UsageError(f"x must be one of {', '.join(X_MODES)}, got {mode!r}")
        same = cls(mode, iteration_label, lambda x: x, True)
        if loop is None or not len(loop.ids) or mode == "iteration":
            return same
        if mode == "step":
            return _by_step(loop, clock) or same
        return _by_time(loop, clock, starts, ended)


def _by_step(loop: LoopShape, clock: list[tuple]) -> XAxis | None:
    """Top-level values placed at the last step of their iteration, counted in the child loop
    with the most iterations; None when the loop is nested already or has no child loop."""
    if loop.nested:
        return None
    own = {int(ctx) for ctx in loop.ids}
    per_name: dict[str, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    for ctx_id, parent_id, parent_iteration, name, iterations, _, _ in clock:
        if parent_id in own and parent_iteration is not None and iterations:
            per_name[name][(parent_id, parent_iteration)] += iterations
    if not per_name:
        return None
    child = max(per_name, key=lambda n: sum(per_name[n].values()))
    steps = per_name[child]
    counts = [c or 0 for c in loop.counts]
    # A loop that a crash cut short did not count its last iteration; its children did run.
    last = int(loop.ids[-1])
    counts[-1] = max([counts[-1]] + [j + 1 for (ctx, j) in steps if ctx == last])
    per_position = np.zeros(int(sum(counts)), dtype=float)
    for i, (ctx, count) in enumerate(zip(loop.ids, counts)):
        for j in range(count):
            per_position[int(loop.offsets[i]) + j] = steps.get((int(ctx), j), 0)
    ends = np.cumsum(per_position) - 1  # the last step of each iteration

    def place(x: np.ndarray) -> np.ndarray:
        at = x.astype(np.int64)
        inside = (at >= 0) & (at < len(ends))
        out = np.full(len(x), np.nan)
        out[inside] = ends[at[inside]]
        return out

    return XAxis("step", f"step ({child} counted across {loop.name})", place, True)


def _by_time(loop: LoopShape, clock: list[tuple], starts: list[tuple], ended: float | None) -> XAxis:
    """Seconds since the run started at the end of each value's iteration (estimated evenly
    within a nested loop instance, which records only its start and end)."""
    spans = {ctx_id: (t_start, t_end) for ctx_id, _, _, _, _, t_start, t_end in clock}
    begun: dict[int, dict[int, float]] = defaultdict(dict)
    for ctx_id, iteration, t in starts:
        if t is not None:
            begun[ctx_id][iteration] = t

    total = int(sum(c or 0 for c in loop.counts))
    ends = np.full(total, np.nan)
    for i, (ctx, count) in enumerate(zip(loop.ids, loop.counts)):
        if not count:
            continue
        t_start, t_end = spans.get(int(ctx), (None, None))
        here = slice(int(loop.offsets[i]), int(loop.offsets[i]) + count)
        if t_start is not None and t_end is not None:
            ends[here] = t_start + np.arange(1, count + 1) / count * (t_end - t_start)
        mine = begun.get(int(ctx))
        if mine:  # an iteration ends when the next one begins
            known = np.array([mine.get(j + 1, np.nan) for j in range(count)], dtype=float)
            ends[here] = np.where(np.isnan(known), ends[here], known)

    # A loop that a crash cut short has no end, nor a count of its last iteration: that
    # iteration ended with the run. (While the run goes on, such values are left out.)
    missing = np.nan if ended is None else ended
    ends[np.isnan(ends)] = missing

    def place(x: np.ndarray) -> np.ndarray:
        at = x.astype(np.int64)
        inside = (at >= 0) & (at < len(ends))
        out = np.full(len(x), missing)
        out[inside] = ends[at[inside]]
        return out

    return XAxis("time", TIME_LABEL, place, False)


def breaks(x: np.ndarray) -> np.ndarray:
    """Indices i where a line from x[i - 1] to x[i] would bridge missing iterations: the step
    between them is more than 1.5 times the usual (most common) step. A curve logged every 10
    iterations has no breaks; one missing an epoch has one.

    >>> breaks(np.array([0.0, 1, 2, 4, 5])).tolist()
    [3]
    >>> breaks(np.array([0.0, 10, 20, 30])).tolist()
    []
    """
    if len(x) < 3:
        return np.zeros(0, dtype=np.int64)
    steps = np.diff(x)
    values, counts = np.unique(steps, return_counts=True)
    usual = float(values[np.argmax(counts)])  # the most common step (the smallest of a tie)
    if usual <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.nonzero(steps > 1.5 * usual)[0] + 1

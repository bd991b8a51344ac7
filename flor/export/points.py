"""What ``flor export`` writes: each chosen run's numeric values (recorded, replayed and
extracted alike) as :class:`Point` s with the step a tracker plots them at.

The step of a value is the step the script gave its tracker there, when flor saw it (the
``tracker_step`` that ``trackers.hooks`` records): for a value at an outer loop's iteration (an
epoch), the last tracker step inside that iteration, so an epoch's hindsight value lands where
that epoch ended on the tracker's axis. A run without tracker steps counts its own positions:
a value at loop depth d gets the ordinal of its position among the run's positions at that
depth (epoch 3 -> 3; the 10th step overall -> 9); a value outside any loop gets step 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..store import RunRow

TRACKER_STEP = "tracker_step"  # as api.TRACKER_STEP (kept in one spelling; api imports nothing from here)


@dataclass(frozen=True)
class Point:
    name: str
    value: float
    step: int


@dataclass
class RunPoints:
    """One run's values to export."""

    run: RunRow
    args: dict
    points: list[Point] = field(default_factory=list)
    skipped: int = 0  # values that are not numbers (strings, tensors as JSON): trackers plot numbers

    @property
    def trackers(self) -> dict:
        return dict(self.run.environment.get("trackers") or {})


def collect(names, runs=None, where: str | None = None, start: Path | None = None) -> list[RunPoints]:
    """The chosen runs (``--runs`` prefixes, ``--where``; finished ones) with their values of
    ``names`` (default: every logged name), in one read transaction."""
    from ..reading.console import context_reader
    from ..reading.query import open_for_reading
    from ..reading.selection import select_runs
    from ..values import decode

    store = open_for_reading(start)
    try:
        store.begin_read()
        logged = [n for n in store.logged_names() if n != TRACKER_STEP]
        names = list(dict.fromkeys(names)) if names else logged
        unknown = [n for n in names if n not in logged]
        if unknown:
            raise UsageError(f"no logged values named {', '.join(map(repr, unknown))}; "
                             f"logged names are: {', '.join(logged[:30]) or '(none)'}")
        found = []
        for run in select_runs(store, runs, where):
            context = context_reader(store.contexts(run.run_id))
            rows = [(tuple(context(v.ctx_id, v.iteration).values()), v.name, decode(v.value, v.vtype))
                    for v in store.logs(run.run_id, names + [TRACKER_STEP])]
            found.append(_points(run, store.args(run.run_id), rows, names))
        return found
    finally:
        store.close()


def _points(run: RunRow, args: dict, rows: list[tuple], names: list[str]) -> RunPoints:
    """``rows``: (position, name, value), position the iterations from the outermost loop in."""
    found = RunPoints(run, args)
    # The tracker's step at each position and, for each shorter prefix, the last step inside it.
    tracker: dict[tuple, int] = {}
    ordinals: dict[tuple, int] = {}
    per_depth: dict[int, int] = {}
    for position, name, value in rows:
        for depth in range(1, len(position) + 1):
            prefix = position[:depth]
            if prefix not in ordinals:
                ordinals[prefix] = per_depth.get(depth, 0)
                per_depth[depth] = ordinals[prefix] + 1
        if name == TRACKER_STEP and isinstance(value, int) and not isinstance(value, bool):
            for depth in range(len(position) + 1):
                prefix = position[:depth]
                tracker[prefix] = max(tracker.get(prefix, value), value)
    wanted = set(names)
    for position, name, value in rows:
        if name not in wanted or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            found.skipped += 1  # trackers plot numbers
            continue
        step = tracker.get(position, ordinals.get(position, 0) if position else 0)
        found.points.append(Point(name, float(value), int(step)))
    return found

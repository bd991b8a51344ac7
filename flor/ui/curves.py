"""Curves: one run's values of one logged name against its loop iteration, downsampled.

The x axis is the value's position among all iterations of its loop in the run. For a name
logged in a top-level loop that is the iteration index (epoch 0, 1, 2, ...); for a name logged in
a nested loop it is a step count that runs on across the outer loop (each instance of the inner
loop starts where the previous one ended, so epochs follow each other instead of overlapping).
The store keeps one ``contexts`` row per loop instance with its number of iterations, so that
offset is a running sum over a few rows.

Only reads, through :class:`~flor.store.ReadPool`. The logs table has no index by run or
name, so a run's rows are found by scanning backwards from the newest one that the runs table
saw, and stopping after as many rows as it counted.

>>> reader = SeriesReader(db, table)                                     # doctest: +SKIP
>>> reader.series(1, "loss", points=1000)["x_label"]                     # doctest: +SKIP
'step (counted across epoch)'
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..store import ReadPool
from .axes import LoopShape, XAxis, breaks
from .data import SOURCES, RunsTable, _plain
from .downsample import min_max

_CACHED_CURVES = 64
_CACHED_POINTS = 8_000_000  # about 140 MB of x, y and flags


@dataclass
class Curve:
    """One run's full curve of one name, before downsampling; x sorted ascending."""

    x: np.ndarray
    y: np.ndarray
    source: np.ndarray  # per point, its index in SOURCES: record, replay or extract
    x_label: str
    run_level: object = None
    loop: "_Loop | None" = None  # the loop the values were logged in (for x by step or time)


@dataclass
class _Loop:
    """The instances of one loop in a run: ctx ids ascending, iterations, and where each starts."""

    name: str
    label: str
    ids: np.ndarray
    counts: list          # iterations per instance; None while an instance is still running
    offsets: np.ndarray   # x of the first iteration of each instance
    nested: bool = False

    def x(self, ctx: np.ndarray, iteration: np.ndarray) -> np.ndarray:
        """x of values logged at (ctx, iteration)."""
        if not len(self.ids):
            return iteration.astype(float)
        position = np.clip(np.searchsorted(self.ids, ctx), 0, len(self.ids) - 1)
        return self.offsets[position] + iteration


def _parse_floats(text: str, count: int) -> np.ndarray:
    """Numbers from the store's comma-separated value text (a NaN is stored as NULL and comes as 'nan')."""
    numbers = np.fromstring(text, sep=",")
    if len(numbers) != count:  # a value that does not print as a number: parse one by one
        numbers = np.array([_as_float(v) for v in text.split(",")], dtype=float)
    return numbers


def _parse_ints(text: str | None) -> np.ndarray:
    return np.fromstring(text, sep=",", dtype=np.int64) if text else np.zeros(0, np.int64)


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class SeriesReader:
    """Reads and caches curves; a cached curve is reused while its rows are unchanged.

    >>> SeriesReader(db, table).series(1, "loss", points=1000)["parts"][0]["source"]   # doctest: +SKIP
    'record'
    """

    def __init__(self, db: ReadPool, table: RunsTable) -> None:
        self.db = db
        self.table = table
        self._cache: OrderedDict[tuple, Curve] = OrderedDict()
        self._lock = threading.Lock()

    def curve(self, run_id: int, name: str) -> Curve:
        """The whole curve of ``name`` in run ``run_id`` (cached while its rows do not change)."""
        pair = self.table.pair(run_id, name)
        key = self._key_of(run_id, name, pair)
        if key is not None:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        curve = self._read_curve(run_id, name, pair)
        self._remember(key, curve)
        return curve

    def curves(self, run_ids: list[int], name: str) -> dict[int, Curve]:
        """run_id -> the whole curve of ``name``, for many runs: the cached ones from the cache,
        the others in three reads for all of them (store/readpool.py; through the logs index by
        run and name, when the store has it) rather than several per run."""
        out: dict[int, Curve] = {}
        missing = []
        for run_id in run_ids:
            key = self._key(run_id, name)
            with self._lock:
                cached = self._cache.get(key) if key is not None else None
            if cached is not None:
                out[run_id] = cached
            else:
                missing.append((run_id, key))
        if not missing:
            return out
        ids = [run_id for run_id, _ in missing]
        looped: dict[int, dict] = {}
        for run_id, source, values_text, ctx_text, iteration_text, count in self.db.looped_values_of_runs(ids, name):
            looped.setdefault(run_id, {})[source] = (values_text, ctx_text, iteration_text, count)
        levels: dict[int, dict] = {}
        for run_id, source, value in self.db.level_values_of_runs(ids, name):
            levels.setdefault(run_id, {}).setdefault(source, []).append(value)
        instances: dict[int, list] = {}
        for run_id, *instance in self.db.loops_of_runs(ids):
            instances.setdefault(run_id, []).append(instance)
        for run_id, key in missing:
            curve = self._assemble(looped.get(run_id, {}), levels.get(run_id, {}), instances.get(run_id, []))
            out[run_id] = curve
            self._remember(key, curve)
        return out

    def _assemble(self, looped: dict, levels: dict, instances: list) -> Curve:
        """A curve from its run's numeric values read in bulk (see :meth:`curves`), placed as
        :meth:`_read_curve` places them: recorded values along the loop of the newest one; a
        run-level value recorded (the newest), else replayed (the first), else extracted (the
        newest) when no looped value precedes it."""
        known = {row[0]: row for row in instances}

        def loop_of(ctx_id: int) -> _Loop:
            own = known.get(ctx_id)
            shared = [row for row in instances if own is not None and row[2] == own[2]]
            outer = known.get(own[1]) if own is not None and own[1] is not None else None
            return self._make_loop([(row[0], row[1], row[2], row[3]) for row in shared],
                                   outer[2] if outer is not None else None)

        def parsed(source: str):
            values_text, ctx_text, iteration_text, count = looped.get(source, (None, None, None, 0))
            if not count:
                return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
            return None, _parse_floats(values_text, count), _parse_ints(ctx_text), _parse_ints(iteration_text)

        _, y, ctx, iteration = parsed("record")
        loop = loop_of(int(ctx[-1])) if len(y) else None
        x = loop.x(ctx, iteration) if loop is not None else np.zeros(0)
        run_level = levels.get("record", [None])[-1]
        _, ry, rctx, riteration = parsed("replay")
        rx = np.zeros(0)
        if len(ry):
            order = np.lexsort((riteration, rctx))  # by loop position, as the replay index gives them
            ry, rctx, riteration = ry[order], rctx[order], riteration[order]
            loop = loop or loop_of(int(rctx[0]))
            rx = loop.x(rctx, riteration)
        if run_level is None and not len(x):
            run_level = levels.get("replay", [None])[0]
        _, ey, ectx, eiteration = parsed("extract")
        ex = np.zeros(0)
        if len(ey):
            own = loop if loop is not None and int(ectx[0]) in loop.ids else loop_of(int(ectx[0]))
            ex, loop = own.x(ectx, eiteration), loop or own
        if run_level is None and not len(x) and not len(rx):
            run_level = levels.get("extract", [None])[-1]
        return self._combine([(x, y), (rx, ry), (ex, ey)], loop, run_level)

    def _key(self, run_id: int, name: str) -> tuple | None:
        return self._key_of(run_id, name, self.table.pair(run_id, name))

    @staticmethod
    def _key_of(run_id: int, name: str, pair) -> tuple | None:
        """The cache key of a curve: it changes whenever the curve's rows do."""
        if pair is None:
            return None
        return (run_id, name, pair.record_top, pair.record_count, pair.replay_top, pair.replay_count,
                pair.extract_top, pair.extract_count)

    def _remember(self, key: tuple | None, curve: Curve) -> None:
        if key is None:
            return
        with self._lock:
            self._cache[key] = curve
            # Bounded by points, not entries: one million-step curve weighs as much as 500 small ones.
            while len(self._cache) > 1 and (
                len(self._cache) > _CACHED_CURVES
                or sum(len(c.x) for c in self._cache.values()) > _CACHED_POINTS
            ):
                self._cache.popitem(last=False)

    def _loop(self, run_id: int, ctx_id: int) -> _Loop:
        """The loop that holds ``ctx_id``: all its instances in the run and their offsets."""
        instances = self.db.loop_instances(run_id, ctx_id)
        outer = None
        if instances and instances[0][1] is not None:
            outer = self.db.loop_name(run_id, instances[0][1])
        return self._make_loop(instances, outer)

    @staticmethod
    def _make_loop(instances: list, outer: str | None) -> _Loop:
        """A loop from its instances ``(ctx_id, parent_id, loop_name, iterations)`` by ctx_id and
        the name of the loop around it (None: top level, or its context row is missing)."""
        if not instances:
            return _Loop("iteration", "iteration", np.zeros(0, np.int64), [], np.zeros(0))
        name, parent = instances[0][2], instances[0][1]
        label = name
        if parent is not None:
            label = f"{name} (counted across {outer if outer is not None else 'the outer loop'})"
        counts = [row[3] for row in instances]
        offsets = np.concatenate([[0], np.cumsum([c or 0 for c in counts])[:-1]]).astype(float)
        return _Loop(name, label, np.array([row[0] for row in instances], dtype=np.int64), counts, offsets,
                     parent is not None)

    def _read_curve(self, run_id: int, name: str, pair) -> Curve:
        x, y, loop, run_level = self._recorded(run_id, name, pair)
        rx, ry, loop = self._replayed(run_id, name, loop)
        if run_level is None and not len(x):
            run_level = self.db.replayed_run_level_value(run_id, name)
        ex, ey, loop, extracted_level = self._extracted(run_id, name, loop, pair)
        if run_level is None and not len(x) and not len(rx):
            run_level = extracted_level
        return self._combine([(x, y), (rx, ry), (ex, ey)], loop, run_level)

    @staticmethod
    def _combine(parts: list, loop: "_Loop | None", run_level: object) -> Curve:
        """One curve of the recorded, replayed and extracted (x, y), sorted by x."""
        source = np.concatenate([np.full(len(px), i, np.int8) for i, (px, _) in enumerate(parts)])
        x = np.concatenate([px for px, _ in parts]).astype(float)
        y = np.concatenate([py for _, py in parts]).astype(float)
        if len(x) > 1 and np.any(np.diff(x) < 0):
            order = np.argsort(x, kind="stable")
            x, y, source = x[order], y[order], source[order]
        label = loop.label if loop is not None and len(x) else "run"
        return Curve(x, y, source, label, _plain(run_level), loop if len(x) else None)

    def _recorded(self, run_id: int, name: str, pair):
        """(x, y, loop, last run-level value) of the recorded values."""
        db = self.db
        if pair is not None and not pair.record_count:
            return np.zeros(0), np.zeros(0), None, None
        # With the pair known, each read scans back from its newest row and stops after its
        # count, so it covers only this run's rows whatever else the store holds; while the runs
        # table is still reading the store (no pair), each read is one scan of the logs.
        bounds: dict = {} if pair is None else {"top": pair.record_top, "count": pair.record_count}
        clean = pair is not None and pair.numeric_count == pair.looped_count == pair.record_count
        run_level = None
        if not clean:
            run_level = db.recorded_run_level_value(run_id, name, **bounds)
        newest = db.recorded_newest_loop_ctx(run_id, name, **bounds)
        if newest is None:
            return np.zeros(0), np.zeros(0), None, run_level
        loop = self._loop(run_id, newest)
        if clean and self._one_per_iteration(loop, pair):
            # The usual case: one value at every iteration of the loop, in order. Only the values
            # need reading; x is 0, 1, 2, ...
            text = db.recorded_values_text(run_id, name, **bounds)
            y = _parse_floats(text, pair.record_count)[::-1]
            return np.arange(len(y), dtype=float), y, loop, run_level
        text, ctx_text, iteration_text, count = db.recorded_loop_values_text(run_id, name, **bounds)
        if not count:
            return np.zeros(0), np.zeros(0), None, run_level
        y = _parse_floats(text, count)[::-1]
        x = loop.x(_parse_ints(ctx_text)[::-1], _parse_ints(iteration_text)[::-1])
        return x, y, loop, run_level

    @staticmethod
    def _one_per_iteration(loop: _Loop, pair) -> bool:
        """Whether the recorded values are exactly one per iteration of every instance of the
        loop: their count, sum of ctx ids and sum of iteration indexes say so, without reading
        a million of them."""
        if not len(loop.ids) or any(c is None for c in loop.counts):
            return False  # an instance still running: its length is not known yet
        counts = np.array(loop.counts, dtype=np.int64)
        return (
            int(counts.sum()) == pair.looped_count
            and int((loop.ids * counts).sum()) == pair.ctx_sum
            and int((counts * (counts - 1) // 2).sum()) == pair.iteration_sum
        )

    def _replayed(self, run_id: int, name: str, loop: _Loop | None):
        """(x, y, loop) of replayed values, from the partial index that holds only them."""
        values_text, ctx_text, iteration_text, count = self.db.replayed_loop_values_text(run_id, name)
        if not count:
            return np.zeros(0), np.zeros(0), loop
        ctx, iteration = _parse_ints(ctx_text), _parse_ints(iteration_text)
        loop = loop or self._loop(run_id, int(ctx[0]))
        return loop.x(ctx, iteration), _parse_floats(values_text, count), loop

    def _extracted(self, run_id: int, name: str, loop: _Loop | None, pair):
        """(x, y, loop, last run-level value) of the values ``flor extract`` read out of the
        run's output."""
        if pair is not None and not pair.extract_count:
            return np.zeros(0), np.zeros(0), loop, None
        bounds: dict = {} if pair is None else {"top": pair.extract_top, "count": pair.extract_count}
        values_text, ctx_text, iteration_text, count, run_level = self.db.extracted_values_text(
            run_id, name, **bounds)
        if not count:
            return np.zeros(0), np.zeros(0), loop, run_level
        ctx, iteration = _parse_ints(ctx_text), _parse_ints(iteration_text)
        # Lines printed in another loop than the logged values' (an epoch summary beside step
        # losses) count along their own loop.
        first = int(ctx[0])
        own = loop if loop is not None and first in loop.ids else self._loop(run_id, first)
        return own.x(ctx, iteration), _parse_floats(values_text, count), loop or own, run_level

    def axis(self, run_id: int, curve: Curve, mode: str) -> XAxis:
        """How this run's loop positions become x for ``mode`` (iteration, step or time)."""
        loop = curve.loop
        if mode == "iteration" or loop is None:
            return XAxis.build("iteration", None, [], [], curve.x_label)
        shape = LoopShape(loop.name, loop.ids, loop.counts, loop.offsets, loop.nested)
        clock = self.db.loop_clock(run_id)
        starts = self.db.iteration_starts(run_id) if mode == "time" else []
        return XAxis.build(mode, shape, clock, starts, curve.x_label, self.table.elapsed(run_id))

    def series(self, run_id: int, name: str, points: int = 2000,
               xmin: float | None = None, xmax: float | None = None, x_mode: str = "iteration",
               last: tuple | None = None, curve: Curve | None = None) -> dict:
        """The recorded, replayed and extracted parts of a curve placed by ``x_mode``, each cut to
        [xmin, xmax] and downsampled, a null y where iterations are missing (so no line bridges
        them); ``last``: the run's last value of the name and its source (store/lastvalue.py),
        from the runs table, or given (``last``: (value, source)) while the table is still reading;
        ``curve``: the run's curve when the caller read it already (:meth:`curves`).

        >>> SeriesReader(db, table).series(1, "loss", points=500, xmin=0, xmax=100)   # doctest: +SKIP
        """
        if points < 2 or points > 100_000:
            raise UsageError("points must be between 2 and 100000")
        curve = curve if curve is not None else self.curve(run_id, name)
        axis = self.axis(run_id, curve, x_mode)
        parts = []
        for index, source in enumerate(SOURCES):
            mask = curve.source == index
            position, y = curve.x[mask], curve.y[mask]
            if not len(position):
                continue
            cuts = breaks(position)
            x = axis.place(position)
            known = ~np.isnan(x)  # a value whose time is unknown (a loop still running) is left out
            if not known.all():
                keep = np.nonzero(known)[0]
                cuts = np.searchsorted(keep, cuts)
                x, y = x[known], y[known]
            if not len(x):
                continue
            lo = 0 if xmin is None else int(np.searchsorted(x, xmin, side="left"))
            hi = len(x) if xmax is None else int(np.searchsorted(x, xmax, side="right"))
            # One point beyond each edge keeps the line running to the border of a zoomed chart.
            lo, hi = max(lo - 1, 0), min(hi + 1, len(x))
            sx, sy = _downsample_between_breaks(x[lo:hi], y[lo:hi], cuts[(cuts > lo) & (cuts < hi)] - lo, points)
            parts.append({
                "source": source,
                "total": int(len(x)),
                "in_range": int(hi - lo),
                "shown": int(len(sx) - sum(1 for v in sy if v is None)),
                "gaps": int(len(cuts)),
                "x": sx,
                "y": sy,
            })
        pair = self.table.pair(run_id, name)
        value, source = last if pair is None and last is not None else (None, None) if pair is None else pair.last()
        return {"name": name, "x_label": axis.label if len(curve.x) else curve.x_label, "integer_x": axis.integer,
                "parts": parts, "run_level": curve.run_level, "last": {"value": _plain(value), "source": source}}


def _downsample_between_breaks(x: np.ndarray, y: np.ndarray, cuts: np.ndarray, points: int) -> tuple[list, list]:
    """(x, y) lists downsampled piece by piece between breaks, with a null y half way across
    each break: the chart draws a gap there instead of a line over the missing iterations."""
    xs: list = []
    ys: list = []
    bounds = [0, *[int(c) for c in cuts], len(x)]
    for start, stop in zip(bounds, bounds[1:]):
        if stop <= start:
            continue
        share = max(2, points * (stop - start) // max(len(x), 1))
        sx, sy = min_max(x[start:stop], y[start:stop], share)
        if xs:
            xs.append((xs[-1] + float(sx[0])) / 2)
            ys.append(None)
        xs.extend(sx.tolist())
        ys.extend(v if math.isfinite(v) else None for v in sy.tolist())
    return xs, ys

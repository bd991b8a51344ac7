"""ReplayRun: the Run that a replay worker installs before it executes a run's code.

It answers ``flor.arg`` with the run's recorded values, restores the recorded random state at the
same point recording captured it, and drives the outer loop by its segment: iterations without an
action are skipped, ``memo`` iterations skip their first nested loop and restore its effect from
the checkpoint, ``exec`` iterations run for real. Logged values are translated to the original
run's loop contexts: new names are stored with ``source='replay'``, names the run recorded are
compared with the recorded values (fidelity), anything else is dropped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from itertools import islice
from pathlib import Path

from .. import rng, values
from ..checkpoints.hooks import Hooks
from ..checkpoints.restore import restore_into
from ..errors import CheckpointError, UsageError
from ..paths import ProjectPaths
from ..run import Run
from ..store import Store
from .spec import WorkerSpec

MAX_DRIFT_ROWS = 10_000


class ReplayManager(Hooks):
    """Restores checkpoints of a replayed run into the registered objects."""

    def __init__(self, run: "ReplayRun", objects: dict[str, object]) -> None:
        self.run = run
        self.objects = objects

    def restore(self, index: int, point: str, frame) -> None:
        """Put the checkpoint of outer iteration ``index`` at ``point`` into the live objects."""
        location = self.run.checkpoints.get(index, {}).get(point)
        if location is None:
            raise CheckpointError(f"run {self.run.tstamp} has no {point} checkpoint of iteration {index}")
        restore_into(self.run.flor_dir, location, self.objects, frame, self.run.outer_frame)


class ReplayRun(Run):
    """A run being replayed in a worker process; see the module docstring."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__({}, list(spec.argv))
        self.spec = spec
        self.flor_dir = ProjectPaths.of_db(Path(spec.db)).flor_dir
        self.store = Store.open(Path(spec.db), create=False)
        self.run_id = spec.run_id
        self.tstamp = spec.tstamp
        self.root = Path(spec.root)
        self.recorded_args = self.store.args(self.run_id)
        self.segment = spec.segment
        self.store_iterations = set(self.segment.store)
        self.checkpoints = spec.checkpoints
        self.new_names = set(spec.names)
        self.compare_names = set(spec.recorded_names) - self.new_names
        self.outer_name = spec.outer_name
        self.begun = True
        self._finished_ok = False
        self._rng_restored = False
        self._outer_seen = False
        self.outer_index: int | None = None
        self.outer_frame = None  # the frame running the outer loop
        self.outer_action: str | None = None
        self._nested_done = False
        self.iterations_done = 0
        self._completed: list[int] = []  # outer iterations whose stored values are all pushed
        self._done_batch: list[tuple] = []
        # Loop instances: local id -> (parent local id, parent iteration, loop name); local ->
        # original id. An instance is identified by its parent instance and iteration, its loop
        # name, and its rank among such siblings (a body may run two loops of the same name).
        self._local: dict[int, tuple] = {}
        self._local_rank: dict[tuple, int] = {}
        self._rank_of: dict[int, int] = {}
        self._to_original: dict[int, int] = {}
        self._original: dict[tuple, int] = {}
        self._next_original = 0
        ranks: dict[tuple, int] = {}
        for ctx_id, parent_id, parent_iteration, loop_name, *_rest in self.store.contexts(self.run_id):
            sibling = (parent_id, parent_iteration, loop_name)
            ranks[sibling] = ranks.get(sibling, -1) + 1
            self._original[(*sibling, ranks[sibling])] = ctx_id
            self._next_original = max(self._next_original, ctx_id)
        self._recorded: dict[str, dict] = {}
        self.stored = self.matched = self.drifted = 0
        self.drift_by_name: dict[str, dict] = {}
        self._flusher = threading.Thread(target=self._flush_forever, name="flor-replay-flush", daemon=True)
        self._flusher.start()

    # -- what the script sees ------------------------------------------------------------

    def _ensure_rng(self) -> None:
        if not self._rng_restored:
            self._rng_restored = True
            rng.restore(rng.decode(self.store.rng_state(self.run_id)))

    def arg(self, name: str, default: object = None) -> object:
        """The recorded value of the arg (overrides are refused in replay)."""
        if type(name) is not str or not name:
            raise UsageError(f"flor.arg name must be a non-empty string, got {name!r}")
        value = self.recorded_args.get(name, default)
        self.args[name] = value
        self.defaults.setdefault(name, default)
        return value

    def checkpoint_manager(self, objects: dict):
        """Replay restores checkpoints instead of taking them."""
        manager = ReplayManager(self, objects)
        self.managers.append(manager)
        return manager

    def loop(self, name: str, iterable):
        """Route flor.loop: the outer loop by the segment, a memoized nested loop skipped."""
        self._ensure_rng()
        if self.depth == 0 and self.scope is not None and not self._outer_seen:
            self._outer_seen = True
            return self._outer_loop(name, iterable)
        if self.depth == 1 and self.outer_action == "memo" and not self._nested_done and self.scope is not None:
            self._nested_done = True
            return self._skipped_loop(name)
        return super().loop(name, iterable)

    def _skipped_loop(self, name: str):
        # Runs at the first next(): the caller's frame is the user's for statement.
        self.next_ctx += 1  # the instance still counts, so later sibling loops keep their rank
        self.push_ctx((self.next_ctx, self.ctx_id, self.iteration, name, None, None, None))
        self.scope.restore(self.outer_index, "nested", sys._getframe(1))
        return
        yield  # a generator that yields nothing

    def _outer_loop(self, name: str, iterable):
        segment = self.segment
        parent, parent_iteration, depth = self.ctx_id, self.iteration, self.depth
        self.next_ctx += 1
        ctx = self.next_ctx
        self.push_ctx((ctx, parent, parent_iteration, name, None, None, None))
        self.depth = depth + 1
        self.outer_frame = sys._getframe(1)
        try:
            for index, item in enumerate(islice(iterable, segment.stop)):
                action = segment.actions.get(index)
                if action is None:
                    continue
                if action == "restore_end":
                    self.scope.restore(index, "end", None)
                    continue
                self.ctx_id, self.iteration = ctx, index
                self.outer_index, self.outer_action, self._nested_done = index, action, False
                yield item
                self.ctx_id, self.iteration = ctx, index
                self.iterations_done += 1
                if index in self.store_iterations:
                    self._completed.append(index)
                self._wake.set()
            self.outer_index = self.outer_action = None
            if not segment.run_post:
                self.ctx_id, self.iteration, self.depth = parent, parent_iteration, depth
                self.finish(ok=True)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        finally:
            self.ctx_id, self.iteration, self.depth = parent, parent_iteration, depth

    # -- what reaches the store ------------------------------------------------------------

    def _original_ctx(self, local: int | None, new_contexts: list) -> int | None:
        if local is None:
            return None
        known = self._to_original.get(local)
        if known is not None:
            return known
        parent_local, parent_iteration, loop_name = self._local[local]
        parent = self._original_ctx(parent_local, new_contexts)
        key = (parent, parent_iteration, loop_name, self._rank_of[local])
        original = self._original.get(key)
        if original is None:
            self._next_original += 1
            original = self._next_original
            self._original[key] = original
            new_contexts.append((original, parent, parent_iteration, loop_name, None, None, None))
        self._to_original[local] = original
        return original

    def _outer_of(self, local: int | None, iteration: int | None) -> int | None:
        while local is not None:
            parent_local, parent_iteration, loop_name = self._local[local]
            if parent_local is None:
                return iteration if loop_name == self.outer_name or self.outer_name is None else None
            local, iteration = parent_local, parent_iteration
        return None

    def _recorded_values(self, name: str) -> dict:
        found = self._recorded.get(name)
        if found is None:
            found = {
                (ctx, it): (value, vtype)
                for ctx, it, _n, value, vtype, _s in self.store.logs(self.run_id, [name], "record")
            }
            self._recorded[name] = found
        return found

    def _drain(self) -> tuple[list, ...]:
        # Completion marks first: a mark taken here was pushed after its iteration's logs,
        # so those logs are in the batch drained next and land in the same transaction.
        completed, self._completed = self._completed, []
        self._done_batch = self._done_batch + [(name, index) for index in completed for name in self.new_names]
        return super()._drain()

    def write(self, contexts: list, iterations: list, logs: list, special: list, fields: dict) -> None:
        """Translate, filter, compare and store one batch of replayed logs."""
        done, self._done_batch = self._done_batch, []
        if self.ended and self._finished_ok:
            done += [(name, -1) for name in self.new_names if self.segment.store_after or self.segment.store_before]
        for ctx, parent, parent_iteration, loop_name, *_rest in contexts:
            if ctx not in self._local:
                self._local[ctx] = (parent, parent_iteration, loop_name)
                sibling = (parent, parent_iteration, loop_name)
                self._local_rank[sibling] = self._local_rank.get(sibling, -1) + 1
                self._rank_of[ctx] = self._local_rank[sibling]
        new_contexts: list = []
        stored, drift = [], []
        segment = self.segment
        rows = [(name, *values.encode(value), ctx, it) for name, value, ctx, it in logs]
        rows += [(name, stored_value, vtype, ctx, it) for ctx, it, name, stored_value, vtype in special]
        for name, stored_value, vtype, local, iteration in rows:
            if name in self.new_names:
                if local is None:
                    keep = segment.store_before or segment.store_after
                else:
                    outer = self._outer_of(local, iteration)
                    keep = outer is None or outer in self.store_iterations
                if keep:
                    stored.append((self._original_ctx(local, new_contexts), iteration, name, stored_value, vtype))
            elif name in self.compare_names:
                ctx = self._original_ctx(local, new_contexts)
                recorded = self._recorded_values(name).get((ctx, iteration))
                if recorded is None:
                    continue
                replayed = values.decode(stored_value, vtype)
                original = values.decode(*recorded)
                if _same(original, replayed):
                    self.matched += 1
                else:
                    self.drifted += 1
                    difference = _difference(original, replayed)
                    entry = self.drift_by_name.setdefault(name, {"count": 0, "max_difference": None})
                    entry["count"] += 1
                    if difference is not None:
                        entry["max_difference"] = max(entry["max_difference"] or 0.0, difference)
                    if self.drifted <= MAX_DRIFT_ROWS:
                        drift.append((ctx, iteration, name, recorded[0], stored_value, difference))
        if stored or drift or new_contexts or done:
            try:
                self.store.write_replayed(self.run_id, new_contexts, stored, drift, done)
            except BaseException:
                self._done_batch = done  # retried with the next flush
                raise
        self.stored += len(stored)
        try:
            Path(self.spec.progress_path).write_text(json.dumps({"done": self.iterations_done}))
        except OSError:
            pass

    def finish(self, ok: bool, error: str | None = None) -> None:
        """Flush everything and write the worker's result file."""
        if self.ended:
            return
        self.ended = True
        self._finished_ok = ok
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=60)
        self.flush(final=True)
        result = {
            "ok": ok, "error": error, "stored": self.stored, "matched": self.matched,
            "drifted": self.drifted, "drift": self.drift_by_name, "iterations": self.iterations_done,
        }
        Path(self.spec.result_path).write_text(json.dumps(result))
        self.store.close()

    def end(self) -> None:
        """At exit, as if the script finished."""
        self.finish(ok=True)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and isinstance(b, float) and math.isnan(b))
    return a == b


def _difference(a, b) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        try:
            return abs(float(a) - float(b))
        except (TypeError, ValueError):
            return None
    return None

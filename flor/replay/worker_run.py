"""ReplayRun: the Run that a replay worker installs before it executes a run's code.

It answers ``flor.arg`` with the run's recorded values, restores the recorded random state at the
same point recording captured it, and drives the outer loop by its segment: iterations without an
action are skipped, ``memo`` iterations skip their first nested loop and restore its effect from
the checkpoint, ``exec`` iterations run for real. Logged values are translated to the original
run's loop contexts: new names are replayed values, names the run recorded are compared with the
recorded values (fidelity), anything else is dropped.

**A value is sent only once it is verified.** The new values of an outer iteration are held until
the iteration ends, and sent (with its "done" mark) only when every recorded value it logged
again matched. An iteration where one drifted is *rejected*: nothing of it is sent, and the driver
re-executes it from an earlier state. After a drift the process's state is suspect, so a later
iteration is accepted only when it logged recorded values again and all of them matched.
Comparisons are made in the iterations this segment owns; a value logged several times in one
context is compared with the recorded ones in order.

Nothing here touches the store: values go back to the driver over the worker's channel.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
import threading
import time
from collections import deque
from itertools import islice
from pathlib import Path

from ..environment import rng
from .. import values
from ..checkpoints.hooks import Hooks
from ..checkpoints.restore import restore_into
from ..errors import CheckpointError, UsageError
from ..logged import Drift, ItemPath, LoggedValue, LoopInstance, ReplayDone
from ..environment.paths import ProjectPaths
from ..recording.loopcontext import LoopContext
from ..recording.run import drop_in_forked_children, flush_forever
from .channel import Channel, NewInstance
from .isolation import Effects
from .slice_run import SliceRun
from .spec import WorkerSpec

MAX_DRIFT_ROWS = 10_000
_NEVER = object()  # a sentinel no queue holds
_BEFORE, _AFTER = "before", "after"  # run-level values, by when they were logged
_OUTER_STARTED = object()  # pushed into the log queue where the outer loop starts


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
        started = time.perf_counter()
        # An iteration that runs the slice only restores what the slice reads or writes (slice_run.py).
        skipped = self.run.slice.not_restored(index) if point == "nested" else frozenset()
        objects = {name: obj for name, obj in self.objects.items() if name not in skipped}
        restore_into(self.run.flor_dir, location, objects, frame, self.run.outer_frame,
                     pickled=self.run.spec.pickled.get(location), sha256=self.run.spec.digests.get(location), keep=True)
        if skipped and not self.run.slice.checking:  # counted where the slice runs alone
            self.run.slice.partial.append(index)
        self.run.timings["restore_s"] += time.perf_counter() - started


    def nested_loop_ended(self, run, frame) -> None:
        """Where an exec iteration's checkpoint (point ``nested``) was taken: verify there."""
        self.run.at_nested_end()

    def fingerprint_matches(self, index: int, point: str) -> list[str] | None:
        """The registered objects whose state differs from the checkpoint of ``index`` at
        ``point`` ([] when none does); None when that checkpoint cannot be read."""
        from ..checkpoints import statehash

        location = self.run.checkpoints.get(index, {}).get(point)
        if location is None:
            return None
        try:
            manifest = json.loads(ProjectPaths.of_flor_dir(self.run.flor_dir).at(location).read_text())
        except (OSError, ValueError):
            return None
        return statehash.differing(statehash.of_manifest(manifest), statehash.of_objects(self.objects))


class ReplayRun:
    """A run being replayed in a worker process; see the module docstring.

    It answers what ``flor.api``, the checkpoint hooks, keyed loops and the integrations ask of
    the current run, as a recording ``Run`` does, and shares only its loop-context tracking
    (:class:`~flor.recording.loopcontext.LoopContext`, by composition): nothing of a recording's begin,
    store writes, lineage or resume exists here."""

    def __init__(self, spec: WorkerSpec, channel: Channel, written=None) -> None:
        from ..checkpoints import iterators

        iterators.install()  # the old script's loaders are rebuilt from the iterators they make
        self.spec = spec
        self.channel = channel
        self._written = written  # () -> what the old code wrote (the private view's scratch layers)
        self.flor_dir = ProjectPaths(Path(spec.root)).flor_dir
        self.run_id = spec.run_id
        self.tstamp = spec.tstamp
        from ..recording import lineage

        lineage.pinned = spec.tstamp
        self.root = Path(spec.root)
        records = json.loads(Path(spec.records_path).read_text())
        self.recorded_args = {name: values.decode(value, vtype) for name, value, vtype in records["args"]}
        self._recorded_rng = base64.b64decode(records["rng"]) if records.get("rng") else None
        self.segment = spec.segment
        self.store_iterations = set(self.segment.store)
        self.checkpoints = spec.checkpoints
        self.new_names = set(spec.names)
        self.compare_names = set(spec.recorded_names) - self.new_names
        self.outer_name = spec.outer_name
        self.begun = True  # by flor.api's measure: there is nothing more to begin
        self.ended = False
        self.store = None  # a worker never opens the store
        self.args: dict[str, object] = {}
        self.defaults: dict[str, object] = {}
        self.environment: dict = {}  # what the integrations note (not stored: the recording's stands)
        self.scope = None  # the ReplayManager of the active flor.checkpointing, if any
        self.managers: list[ReplayManager] = []
        self.key_stack: list = []  # keyed loops: the enclosing items' (loop, key)
        self.push_item = lambda row: None  # a replay's items are the recording's: nothing to keep
        self.flor_error = False
        self.failure: str | None = None
        self.t0 = time.perf_counter()
        # Appending to a deque is atomic: the flush thread drains while the script appends.
        self._log_queue: deque = deque()
        self._special_queue: deque = deque()
        self.push_log = self._log_queue.append
        self.push_special = self._special_queue.append
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.loops = LoopContext(self._wake.set)
        drop_in_forked_children(self)  # a forked child (a data loader's worker) never sends
        self._flush_lock = threading.Lock()
        # Where the worker's time goes (reported with the result, summed per run by the driver).
        self._t_start = time.perf_counter()
        self._t_after: float | None = None
        self.timings = {"setup_s": 0.0, "restore_s": 0.0, "memo_s": 0.0, "exec_s": 0.0, "after_s": 0.0}
        self._finished_ok = False
        self._rng_restored = False
        self._outer_seen = False
        self.outer_index: int | None = None
        self.outer_frame = None  # the frame running the outer loop
        self.outer_action: str | None = None
        self._nested_done = False
        self.iterations_done = 0
        self._completed: list[int] = []  # outer iterations whose values are all pushed
        self._closed: int | None = None  # the iteration the loop was closed in (a break, or an exception)
        # Loop instances: local id -> the instance as this process ran it; local -> original id. An instance is identified by its parent instance and iteration, its loop
        # name, and its rank among such siblings (a body may run two loops of the same name).
        # An instance the recording never had gets a provisional negative id; the driver gives
        # it a real one.
        self._local: dict[int, LoopInstance] = {}
        self._local_rank: dict[tuple, int] = {}
        self._rank_of: dict[int, int] = {}
        self._to_original: dict[int, int] = {}
        self._original: dict[tuple, int] = {}
        self._next_provisional = 0
        ranks: dict[tuple, int] = {}
        for instance in map(LoopInstance.from_json, records["contexts"]):
            sibling = instance.sibling_key
            ranks[sibling] = ranks.get(sibling, -1) + 1
            self._original[(*sibling, ranks[sibling])] = instance.ctx_id
        # name -> (ctx, iteration) -> recorded values in the order they were logged.
        self._recorded: dict[str, dict[tuple, list[LoggedValue]]] = {}
        for logged in map(LoggedValue.from_json, records["recorded"]):
            self._recorded.setdefault(logged.name, {}).setdefault((logged.ctx_id, logged.iteration), []).append(logged)
        self._seen: dict[tuple, int] = {}  # (name, ctx, iteration) -> occurrences compared so far
        self._counts: dict[str, dict[str, int]] = {}
        # Keyed loop -> key path -> position, of the items the recording yielded.
        self.recorded_paths: dict[str, dict[str, int]] = {name: {} for name in records.get("keyed", [])}
        for item in map(ItemPath._make, records.get("items", [])):
            self.recorded_paths.setdefault(item.loop_name, {})[item.path] = item.iteration
        # Verification state (see the module docstring).
        self._phase = _BEFORE
        self._held: dict[object, list] = {}  # outer iteration, _BEFORE or _AFTER -> rows held back
        self._drifted: set = set()  # outer iterations (or _BEFORE/_AFTER) where a value drifted
        self._checked: dict[object, int] = {}  # ... -> comparisons made
        self.rejected: list[int] = []
        # Slice-only iterations' values, held until the slice's next check (slice_run.py) agrees;
        # dropped and re-executed when it does not: the check found the slice wrong, and it may
        # have been wrong before (iteration -> (values, done marks)).
        self._slice_wait: dict[int, tuple[list, list]] = {}
        self.slice_rejected: list[int] = []
        self.rejected_run_level = False
        self.stored = self.matched = self.drifted = 0
        self.drift_by_name: dict[str, dict] = {}
        self.first_drift: dict | None = None  # the first recorded value that differed, where and how
        # How each iteration's values are verified (see the module docstring): an exec iteration
        # after a restore needs recorded values that match, in it or in a later exec iteration of
        # the same stretch, or the state's fingerprint at a checkpoint where the stretch ends.
        self._basis = _bases(self.segment.actions)
        self._check_at = _check_points(self.segment.actions, self._basis, self.checkpoints)
        self._prints: dict[int, list[str] | None] = {}  # iteration -> objects whose fingerprint differed ([]: same)
        self._pending: list[int] = []  # exec iterations waiting for a verified point
        self._drift_from: int | None = None  # the first iteration of this segment found wrong
        self._nested_seen = False
        self._state_end = records.get("state_end")  # the recording's fingerprint at its end
        self.verified = {"values": 0, "fingerprint": 0, "start": 0, "memo": 0}
        self.unverified: list[int] = []
        self.end_check: str = ""  # how the values after the loop were verified
        self.effects = Effects()  # what the new statements' observers put back (isolation.install)
        # Memoized iterations that run the slice only, verified (slice_run.py).
        self.slice = SliceRun(self, spec.slice_skip, spec.slice_iterations, spec.slice_names, spec.slice_objects,
                              spec.verify_slice, breaks=bool(spec.slice_breaks), last=spec.slice_last,
                              unrestored=spec.slice_unrestored)
        self._flusher = threading.Thread(target=self._flush_forever, name="flor-replay-flush", daemon=True)
        self._flusher.start()

    # -- what the script sees ------------------------------------------------------------

    def _ensure_rng(self) -> None:
        if not self._rng_restored:
            self._rng_restored = True
            rng.restore(rng.decode(self._recorded_rng))

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

    def note_environment(self, key: str, value) -> None:
        """Integrations note what drives the loops; a replay keeps it for this process only."""
        self.environment[key] = value

    def note_failure(self, exc: BaseException) -> None:
        """The uncaught error ending the script (its result says it: ``finish``)."""
        from ..errors import FlorError

        self.flor_error = isinstance(exc, FlorError)
        self.failure = f"{type(exc).__name__}: {exc}".strip()

    def _flush_forever(self) -> None:
        flush_forever(self._stop, self._wake, self.flush)

    def _drain(self) -> tuple[list, list, list]:
        instances, _starts = self.loops.drain()
        logs = list(islice(iter(self._log_queue.popleft, _NEVER), len(self._log_queue)))
        special = list(islice(iter(self._special_queue.popleft, _NEVER), len(self._special_queue)))
        return instances, logs, special

    def note_read(self, run_ids, how: str) -> None:
        """A replayed script's reads are not lineage: the recorded run's lineage stands (and
        they see only the runs that had started when it was recorded: ``lineage.pinned``)."""

    def keyed_loop(self, name: str, iterable, key, incremental: bool, frame):
        """The items the recorded run yielded, in its order (incremental skips included)."""
        from ..recording.keyed import KeyedLoop

        paths = self.recorded_paths.get(name)
        if paths is None:
            return None, iterable  # recorded before keys were kept: positions as they come
        keyed = KeyedLoop(self, name, key, False, None, replay_paths=paths)
        keyed.replay_counts = self._children_counts(name)
        return keyed, keyed.items(iterable)

    def _children_counts(self, name: str) -> dict[str, int]:
        """Enclosing key path -> how many items of loop ``name`` the recording had under it."""
        cached = self._counts.get(name)
        if cached is None:
            from ..recording import keys

            cached = {}
            for path in self.recorded_paths.get(name, {}):
                parent = keys.path_text(json.loads(path)[:-1])
                cached[parent] = cached.get(parent, 0) + 1
            self._counts[name] = cached
        return cached

    def loop(self, name: str, iterable, keyed=None):
        """Route flor.loop: the outer loop by the segment, a memoized nested loop skipped."""
        self._ensure_rng()
        # The outer loop: the first top-level loop inside flor.checkpointing, or, in a script
        # without checkpoints, the first top-level loop of the outer loop's name.
        loops = self.loops
        if loops.depth == 0 and not self._outer_seen and (self.scope is not None or name == self.outer_name):
            self._outer_seen = True
            self.push_log((_OUTER_STARTED, None, None, None))
            return self._outer_loop(name, iterable)
        if loops.depth == 1 and self.outer_action == "memo" and not self._nested_done and self.scope is not None:
            self._nested_done = True
            return self._skipped_loop(name)
        return loops.loop(self, name, iterable, keyed)

    def _skipped_loop(self, name: str):
        # Runs at the first next(): the caller's frame is the user's for statement.
        self.loops.new_instance(name)  # the instance still counts, so later sibling loops keep their rank
        self.scope.restore(self.outer_index, "nested", sys._getframe(1))
        return
        yield  # a generator that yields nothing

    def _outer_loop(self, name: str, iterable):
        segment = self.segment
        loops = self.loops
        parent, parent_iteration, depth = loops.ctx_id, loops.iteration, loops.depth
        ctx = loops.new_instance(name)
        loops.depth = depth + 1
        self.outer_frame = sys._getframe(1)
        timings = self.timings
        timings["setup_s"] = time.perf_counter() - self._t_start
        try:
            for index, item in enumerate(islice(iterable, segment.stop)):
                action = segment.actions.get(index)
                if action is None:
                    continue
                if action == "restore_end":
                    self.scope.restore(index, "end", None)
                    continue
                loops.ctx_id, loops.iteration = ctx, index
                self.outer_index, self.outer_action, self._nested_done = index, action, False
                began, restored = time.perf_counter(), timings["restore_s"]
                self._nested_seen = False
                try:
                    if action == "memo":
                        yield from self.slice.iteration(index, item)
                    else:
                        yield item
                except GeneratorExit:
                    # Either `break` in the body (a `while True` loop turned into flor.loop): this
                    # was the last iteration, as in the recording, and its values are complete; or
                    # an exception unwinding the body, and they are not. Which one is known when the
                    # script ends (finish): only a script that ends well completes it.
                    self._closed = index
                    self._verify_at(index, "end", last=True)
                    raise
                loops.ctx_id, loops.iteration = ctx, index
                self._verify_at(index, "end")
                # Time in the iteration, less what its restore took (counted apart).
                timings[f"{action}_s"] += time.perf_counter() - began - (timings["restore_s"] - restored)
                self.iterations_done += 1
                self._completed.append(index)
                self._wake.set()
            self.outer_index = self.outer_action = None
            self._t_after = time.perf_counter()
            if not segment.run_post:
                loops.ctx_id, loops.iteration, loops.depth = parent, parent_iteration, depth
                self.finish(ok=True)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        finally:
            loops.ctx_id, loops.iteration, loops.depth = parent, parent_iteration, depth
            # Logged after this, at run level: after the loop.
            self.push_log((_OUTER_STARTED, _AFTER, None, None))

    # -- translating contexts --------------------------------------------------------------

    def _original_ctx(self, local: int | None, new_contexts: list) -> int | None:
        if local is None:
            return None
        known = self._to_original.get(local)
        if known is not None:
            return known
        instance = self._local[local]
        parent = self._original_ctx(instance.parent_id, new_contexts)
        key = (parent, instance.parent_iteration, instance.loop_name, self._rank_of[local])
        original = self._original.get(key)
        if original is None:
            self._next_provisional -= 1
            original = self._next_provisional
            self._original[key] = original
            new_contexts.append(NewInstance(original, parent, instance.parent_iteration, instance.loop_name,
                                            self._rank_of[local]))
        self._to_original[local] = original
        return original

    def _outer_of(self, local: int | None, iteration: int | None) -> int | None:
        while local is not None:
            instance = self._local[local]
            if instance.parent_id is None:
                return iteration if instance.loop_name == self.outer_name or self.outer_name is None else None
            local, iteration = instance.parent_id, instance.parent_iteration
        return None

    # -- comparing, holding back and sending -------------------------------------------------

    def flush(self, final: bool = False) -> None:
        """Send what was logged since the last flush (replay has no store to retry against)."""
        with self._flush_lock:
            completed, self._completed = self._completed, []
            contexts, logs, special = self._drain()
            self._process(contexts, logs, special, completed, final)

    def _owner_key(self, local, iteration):
        """What a row belongs to: its outer iteration, or _BEFORE/_AFTER at run level; None when
        this segment does not own it."""
        outer = None if local is None else self._outer_of(local, iteration)
        if outer is None:  # at run level, or in a loop outside the outer loop
            key = _BEFORE if self._phase == _BEFORE else _AFTER
            owned = self.segment.store_before if key == _BEFORE else self.segment.store_after
            return key if owned else None
        return outer if outer in self.store_iterations else None

    def _process(self, contexts: list, logs: list, special: list, completed: list[int], final: bool) -> None:
        for instance in contexts:
            if instance.ctx_id not in self._local:
                self._local[instance.ctx_id] = instance
                sibling = instance.sibling_key
                self._local_rank[sibling] = self._local_rank.get(sibling, -1) + 1
                self._rank_of[instance.ctx_id] = self._local_rank[sibling]
        new_contexts: list[NewInstance] = []
        drift: list[Drift] = []
        # The plain values in order (with the outer loop's start and end marks among them), then
        # the encoded ones, as LoggedValue records in this process's loop instances.
        rows: list = []
        for name, value, ctx, it in logs:  # PlainLog's layout: the queue of flor.log's hot path
            if name is _OUTER_STARTED:
                rows.append(value)  # the outer loop started (None) or ended (_AFTER)
            else:
                rows.append(LoggedValue(name, *values.encode(value), ctx, it, "replay"))
        rows += special
        for logged in rows:
            if not isinstance(logged, LoggedValue):
                self._phase = _AFTER if logged == _AFTER else "loop"
                continue
            name = logged.name
            if name not in self.new_names and name not in self.compare_names:
                continue
            local, iteration = logged.ctx_id, logged.iteration
            key = self._owner_key(local, iteration)
            if key is None:
                continue
            ctx = self._original_ctx(local, new_contexts)
            if name in self.new_names:
                self._held.setdefault(key, []).append(logged._replace(ctx_id=ctx, source="replay"))
            else:
                self._compare(key, logged._replace(ctx_id=ctx), drift, local)
        done, accepted = [], []
        for index in completed:
            if index in self.store_iterations:
                self._settle(index, accepted, done)
        if final:
            self._judge_slice(None, accepted, done)
            if self._pending:  # a stretch that ended with nothing to verify it: its values are unverified
                self.unverified.extend(self._pending)
                self._reject(list(self._pending), accepted, done)
            if self._finished_ok and (self.segment.store_before or self.segment.store_after):
                self._settle_run_level(accepted, done)
            self._held.clear()
        if accepted or drift or new_contexts or done:
            self.channel.send("batch", contexts=[c.as_json() for c in new_contexts],
                              logs=[v.as_json() for v in accepted], drift=[d.as_json() for d in drift],
                              done=[[mark.name, mark.iteration] for mark in done])
        self.stored += len(accepted)
        self.channel.send("progress", done=self.iterations_done)

    def _compare(self, key, logged: LoggedValue, drift: list, local=None) -> None:
        """Compare ``logged`` (in the recording's loop instances) with the value recorded there."""
        name, ctx, iteration = logged.name, logged.ctx_id, logged.iteration
        occurrence = self._seen.get((name, ctx, iteration), 0)
        self._seen[(name, ctx, iteration)] = occurrence + 1
        recorded = self._recorded.get(name, {}).get((ctx, iteration), [])
        if occurrence >= len(recorded):
            return  # the recording logged it fewer times here: nothing to compare with
        original = values.decode(recorded[occurrence].value, recorded[occurrence].vtype)
        replayed = values.decode(logged.value, logged.vtype)
        self._checked[key] = self._checked.get(key, 0) + 1
        if _same(original, replayed):
            self.matched += 1
            return
        self.drifted += 1
        self._drifted.add(key)
        difference = _difference(original, replayed)
        entry = self.drift_by_name.setdefault(name, {"count": 0, "max_difference": None})
        entry["count"] += 1
        if difference is not None:
            entry["max_difference"] = max(entry["max_difference"] or 0.0, difference)
        if self.first_drift is None:
            self.first_drift = {"outer": key if isinstance(key, int) else None, "name": name,
                                "where": self._describe_context(local, iteration),
                                "recorded": _shown(original), "replayed": _shown(replayed)}
        if self.drifted <= MAX_DRIFT_ROWS:
            drift.append(Drift(ctx, iteration, name, recorded[occurrence].value, logged.value, difference))

    def _describe_context(self, local, iteration) -> str:
        """'epoch 1, step 3' for a loop context (outermost loop first); 'outside the loops' at run level."""
        parts = []
        while local is not None and local in self._local:
            instance = self._local[local]
            parts.append(f"{instance.loop_name} {iteration}")
            local, iteration = instance.parent_id, instance.parent_iteration
        return ", ".join(reversed(parts)) or "outside the loops"

    def at_nested_end(self) -> None:
        """The first nested loop of an exec iteration ended: verify the state there if its
        checkpoint was taken there."""
        if self._nested_seen or self.outer_index is None:
            return
        self._nested_seen = True
        self._verify_at(self.outer_index, "nested")

    def _verify_at(self, index: int, point: str, last: bool = False) -> None:
        """Compare the registered state with the recording's checkpoint of ``index`` at ``point``,
        where a re-executed stretch ends (see ``_check_points``)."""
        wanted = self._check_at.get(index)
        if wanted is None and last and self._basis.get(index) == "restored":
            wanted = point if point in self.checkpoints.get(index, {}) else None
        if wanted != point or index in self._prints or not self.managers:
            return
        self._prints[index] = self.managers[-1].fingerprint_matches(index, point)

    def _trusted(self, key) -> bool:
        """Run-level values: none of them drifted, and nothing this segment re-executed before
        them is wrong or unverified."""
        if key in self._drifted:
            return False
        if key == _BEFORE:
            return True
        # A slice-only iteration left unstored leaves no state behind: each one restores its own.
        return self._drift_from is None and not self._pending and not (set(self.rejected) - set(self.slice_rejected))

    def _judge_slice(self, index: int | None, accepted: list, done: list) -> None:
        """Release the slice-only iterations waiting for a check once iteration ``index`` passed it
        (None: the segment ended, and no check disagreed); drop them, to be re-executed, once one
        found the slice wrong."""
        if not self._slice_wait:
            return
        if self.slice.fell_back is not None:
            for waiting in sorted(self._slice_wait):
                del self._slice_wait[waiting]
                self.rejected.append(waiting)
                self.slice_rejected.append(waiting)
        elif index is None or index in self.slice.verified:
            for waiting in sorted(self._slice_wait):
                values, marks = self._slice_wait.pop(waiting)
                accepted.extend(values)
                done.extend(marks)

    def _settle(self, index: int, accepted: list, done: list) -> None:
        """Send the held values of outer iteration ``index`` once they are verified; hold them
        while a later point of the same stretch may still verify them; reject them when wrong."""
        self._judge_slice(index, accepted, done)
        basis = self._basis.get(index, "start")
        if index in self._drifted and (self._drift_from is None or index < self._drift_from):
            self._drift_from = index
        if self._drift_from is not None and index >= self._drift_from:
            self._reject([*self._pending, index], accepted, done)
            return
        if basis == "restored" and not self._pending and self.segment.actions.get(index) == "memo":
            # A memoized iteration right after a re-executed stretch that is already verified: its
            # body up to the skipped loop ran from verified state, and the loop's effect is the
            # recording's own checkpoint. Holding it for a later point would find none (a
            # memoized iteration logs no recorded value and takes no fingerprint), and re-execute
            # the whole stretch for nothing.
            self._send(index, accepted, done)
            self.verified["memo"] += 1
            return
        if basis == "restored":
            self._pending.append(index)
            prints = self._prints.get(index, "none")
            if self._checked.get(index, 0) > 0:
                self._release(accepted, done, "values")
            elif prints == []:
                self._release(accepted, done, "fingerprint")
            elif prints not in ("none", None):  # the state differs from the recording's: wrong
                self._note_state_drift(index, prints)
                self._reject(self._pending, accepted, done)
            return
        self._send(index, accepted, done)
        self.verified[basis] += 1

    def _release(self, accepted: list, done: list, how: str) -> None:
        for index in self._pending:
            self._send(index, accepted, done)
            self.verified[how] += 1
        self._pending = []

    def _send(self, index: int, accepted: list, done: list) -> None:
        values, marks = self._held.pop(index, []), [ReplayDone(name, index) for name in self.new_names]
        if self.slice.fell_back is None and self.slice.ran_slice_only(index):
            self._slice_wait[index] = (values, marks)  # until the slice's next check
            return
        accepted.extend(values)
        done.extend(marks)

    def _reject(self, indices: list[int], accepted: list, done: list) -> None:
        for index in list(indices):
            if self.spec.accept_drift:
                self._send(index, accepted, done)
            else:
                self._held.pop(index, None)
            self.rejected.append(index)
        if indices and (self._drift_from is None or min(indices) < self._drift_from):
            self._drift_from = min(indices)
        self._pending = [i for i in self._pending if i not in indices]

    def _note_state_drift(self, index: int, objects: list[str]) -> None:
        if self.first_drift is None:
            where = f"the end of {self.outer_name or 'iteration'} {index}" if index >= 0 else "the end of the run"
            self.first_drift = {"outer": index if index >= 0 else None, "name": "the registered state",
                                "where": where,
                                "recorded": "the checkpoint's", "replayed": f"other {', '.join(objects)}"}

    def _settle_run_level(self, accepted: list, done: list) -> None:
        """The values logged outside the outer loop, and their one "done" mark (-1), together."""
        trusted = self._trusted(_BEFORE) and self._trusted(_AFTER)
        if trusted and self.segment.store_after and self._state_end and self.managers:
            from ..checkpoints import statehash

            differ = statehash.differing(self._state_end, statehash.of_objects(self.managers[-1].objects))
            self.end_check = "fingerprint" if not differ else f"DIFFERS: {', '.join(differ)}"
            if differ:
                trusted = False
                self._note_state_drift(-1, differ)
        elif self.segment.store_after:
            self.end_check = "values" if self._checked.get(_AFTER) else "unchecked"
        if trusted or self.spec.accept_drift:
            accepted.extend(self._held.pop(_BEFORE, []) + self._held.pop(_AFTER, []))
            done.extend(ReplayDone(name, -1) for name in self.new_names)
        self.rejected_run_level = not trusted

    def finish(self, ok: bool, error: str | None = None) -> None:
        """Send everything and the worker's result."""
        if self.ended:
            return
        writes = self._written() if self._written is not None else []
        if self._t_after is not None:
            self.timings["after_s"] = time.perf_counter() - self._t_after
        self.ended = True
        self._finished_ok = ok
        if self._closed is not None:
            if ok:  # the loop was left by `break`: that iteration is complete
                self._completed.append(self._closed)
                self.iterations_done += 1
            self._closed = None
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=60)
        self.flush(final=True)
        if self.effects.error and ok:  # the script caught the observer's error: the run still failed
            ok, error = False, self.effects.error
        self.channel.send(
            "result", ok=ok, error=error, first_drift=self.first_drift, observer=self.effects.as_dict(),
            stored=self.stored, matched=self.matched, drifted=self.drifted,
            drift=self.drift_by_name, iterations=self.iterations_done, rejected=sorted(set(self.rejected)),
            rejected_run_level=self.rejected_run_level, writes=writes, timings=self.timings,
            verified=self.verified, unverified=sorted(set(self.unverified)), end_check=self.end_check,
            slice_rejected=sorted(set(self.slice_rejected)),
            slice=self.slice.result(),
        )

    def end(self) -> None:
        """At exit, as if the script finished."""
        self.finish(ok=True)


def _bases(actions: dict[int, str]) -> dict[int, str]:
    """How each iteration of a segment comes to its state: ``start`` (re-executed from the run's
    start, as the recording was), ``memo`` (restored from its own checkpoint), ``restored``
    (re-executed after a restore: its values need verifying)."""
    bases, restored, previous = {}, False, None
    for index in sorted(actions):
        action = actions[index]
        if action == "exec":
            bases[index] = "restored" if restored else "start"
        else:
            # A memoized iteration right after re-executed ones ran its body up to the skipped
            # loop from the state they left: it is verified like them.
            after_exec = previous is not None and previous[0] == index - 1 and bases[previous[0]] == "restored" \
                and previous[1] == "exec"
            bases[index] = "restored" if after_exec and action == "memo" else "memo"
            restored = True
        previous = (index, action)
    return bases


def _check_points(actions: dict[int, str], bases: dict[int, str], checkpoints: dict) -> dict[int, str]:
    """Iteration -> point where the state is compared with the recording's checkpoint: the last
    iteration of each re-executed stretch after a restore, where the recording has one."""
    found = {}
    indices = sorted(actions)
    for position, index in enumerate(indices):
        if bases[index] != "restored" or actions[index] != "exec":
            continue
        following = indices[position + 1] if position + 1 < len(indices) else None
        if following == index + 1 and actions[following] == "exec":
            continue  # the stretch goes on
        points = checkpoints.get(index, {})
        point = "end" if "end" in points else "nested" if "nested" in points else None
        if point is not None:
            found[index] = point
    return found


def _shown(value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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

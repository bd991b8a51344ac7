"""LoopContext: where a script is among its ``flor.loop``s, and the loop instances it made.

A recording ``Run`` and a replay worker's ``ReplayRun`` each hold one (composition: the worker's
run shares this with the recording's and nothing else of it). It knows the innermost loop
instance and its iteration (what ``flor.log`` files a value under), the nesting depth, and queues
each :class:`~flor.logged.LoopInstance` and top-level :class:`~flor.logged.IterationStart` for its
run's flush.

:meth:`LoopContext.loop` is the generator behind a plain ``flor.loop``: it moves the context
through the iterations, times them, and tells the checkpoint hooks of the run's
``flor.checkpointing`` block (``run.scope``) where the loops are. The hot path (a nested loop's
iterations) only assigns ``iteration``.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from itertools import islice
from typing import Callable

from ..logged import IterationStart, LoopInstance

_NEVER = object()  # a sentinel no queue holds


def _take(queue: deque) -> list:
    # Built in C (no bytecode per item), bounded to what is there now.
    return list(islice(iter(queue.popleft, _NEVER), len(queue)))


class LoopContext:
    """The loop context of one run; see the module docstring."""

    # Slots: flor.log reads ctx_id and iteration on every call, and a slot is the fastest read.
    __slots__ = ("ctx_id", "iteration", "depth", "next_ctx", "_wake", "_instances", "_starts", "push_instance",
                 "push_start")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.ctx_id: int | None = None  # the innermost loop instance (None outside every loop)
        self.iteration: int | None = None  # its current iteration
        self.depth = 0
        self.next_ctx = 0  # the last instance id given
        self._wake = wake  # asks the run's flush thread to flush soon (an outer iteration ended)
        self._instances: deque = deque()
        self._starts: deque = deque()
        # Appending to a deque is atomic: the flush thread drains while the script appends.
        self.push_instance = self._instances.append
        self.push_start = self._starts.append

    def new_instance(self, name: str, t_start: float | None = None) -> int:
        """Give the next instance id to a loop starting here (queued with its parent)."""
        self.next_ctx += 1
        self.push_instance(LoopInstance(self.next_ctx, self.ctx_id, self.iteration, name, t_start))
        return self.next_ctx

    def drain(self) -> tuple[list[LoopInstance], list[IterationStart]]:
        """What was queued since the last drain: instances first (a value drained later never
        refers to an instance drained after it)."""
        return _take(self._instances), _take(self._starts)

    def give_back(self, instances: list, starts: list) -> None:
        """Put a drained batch back in front (its write failed; the next flush retries it in order)."""
        self._instances.extendleft(reversed(instances))
        self._starts.extendleft(reversed(starts))

    def loop(self, run, name: str, iterable, keyed=None, first: int = 0):
        """Generator behind a plain flor.loop: ``run`` is what the checkpoint hooks are told
        about (``run.scope``, ``run.t0``); ``first`` the index of its first item (a resumed run)."""
        parent, parent_iteration, depth = self.ctx_id, self.iteration, self.depth
        outer = depth == 0
        scope = run.scope if outer else None
        if scope is not None:
            scope.outer_loop_started(run, _length(iterable), sys._getframe(1))
        clock, t0 = time.perf_counter, run.t0
        t_start = clock() - t0
        ctx = self.new_instance(name, t_start)
        if keyed is not None:
            keyed.started(ctx)
        push_start = self.push_start
        index = first
        self.depth = depth + 1
        try:
            if outer:
                for item in iterable:
                    self.ctx_id, self.iteration = ctx, index
                    push_start(IterationStart(ctx, index, clock() - t0))
                    if scope is not None:
                        scope.outer_iteration_started(run, index)
                    try:
                        yield item
                    except GeneratorExit:
                        if scope is not None:  # a `break` (a `while True` loop's end) or an exception
                            scope.outer_loop_closed(run, index)
                        raise
                    self.ctx_id, self.iteration = ctx, index
                    if scope is not None:
                        scope.outer_iteration_ended(run, index)
                    self._wake()
                    index += 1
            else:
                if depth == 1 and run.scope is not None:
                    run.scope.nested_loop_started(run)
                # The hot path: nested loops restore ctx_id to this loop when they end.
                self.ctx_id = ctx
                last = index - 1
                try:
                    for last, item in enumerate(iterable, index):
                        self.iteration = last
                        yield item
                finally:
                    index = last + 1
            if scope is not None:
                scope.outer_loop_ended(run, index - 1 if index else None, sys._getframe(1))
            elif depth == 1 and run.scope is not None:
                run.scope.nested_loop_ended(run, sys._getframe(1))
        finally:
            self.push_instance(LoopInstance(ctx, parent, parent_iteration, name, t_start, clock() - t0, index))
            self.ctx_id, self.iteration, self.depth = parent, parent_iteration, depth
            if outer:
                self._wake()


def _length(iterable) -> int | None:
    """len(iterable) when it has one (range, list, DataLoader), without consuming it."""
    try:
        return len(iterable)
    except (TypeError, AttributeError, NotImplementedError):
        return None

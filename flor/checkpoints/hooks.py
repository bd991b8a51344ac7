"""Hooks: what a run's loops tell the checkpoint manager of the active ``flor.checkpointing``.

The outer loop is the outermost flor.loop inside the ``with`` block. A checkpoint of outer
iteration k holds the registered state where the first loop nested in the outer body ends
(point ``nested``), or at the end of the iteration when the body has no nested loop (point
``end``). What happens at those points depends on the run: a recording run takes checkpoints
(:class:`~flor.checkpoints.manager.RecordManager`), a replaying run restores them
(:class:`~flor.replay.worker_run.ReplayManager`).
"""

from __future__ import annotations


class Hooks:
    """What Run.loop tells the active checkpoint manager; the base does nothing."""

    def outer_loop_started(self, run, total: int | None, frame) -> None:
        """The outer loop starts in ``frame``; ``total`` is its length when the iterable has one."""

    def outer_iteration_started(self, run, index: int) -> None:
        """Outer iteration ``index`` starts its body."""

    def nested_loop_started(self, run) -> None:
        """A loop directly inside the outer body starts."""

    def nested_loop_ended(self, run, frame) -> None:
        """A loop directly inside the outer body finished; ``frame`` runs the user's for loop."""

    def outer_iteration_ended(self, run, index: int) -> None:
        """Outer iteration ``index`` finished its body."""

    def outer_loop_ended(self, run, last_index: int | None, frame) -> None:
        """The outer loop ran out of items."""

    def outer_loop_closed(self, run, index: int) -> None:
        """The outer loop was left in iteration ``index`` (``break``, or an exception unwinding:
        which one, :meth:`leave` tells)."""

    def leave(self, run, failed: bool) -> None:
        """The ``with`` block is left."""

    def finish(self, run) -> None:
        """The run is ending."""

"""flor.checkpointing: the context manager that registers the objects whose state is checkpointed.

The outer loop is the outermost flor.loop inside the ``with`` block. A checkpoint of outer
iteration k holds the registered state where the first loop nested in the outer body ends
(point ``nested``), or at the end of the iteration when the body has no nested loop (point
``end``); see DESIGN.md section 4. What happens at those points depends on the run: a recording
run takes checkpoints (:class:`~flor.checkpoints.manager.RecordManager`), a replaying run
restores them (``flor.replay.driver``).
"""

from __future__ import annotations

from ..errors import UsageError


def _name_objects(objs: tuple, named: dict) -> dict[str, object]:
    registered: dict[str, object] = {}
    for position, obj in enumerate(objs):
        registered[f"{position}"] = obj
    for name, obj in named.items():
        if name in registered:
            raise UsageError(f"flor.checkpointing: the name {name!r} is used twice")
        registered[name] = obj
    if not registered:
        raise UsageError(
            "flor.checkpointing needs at least one object, e.g. flor.checkpointing(model=net, optimizer=opt)"
        )
    return registered


class Checkpointing:
    """``with flor.checkpointing(model=net, optimizer=opt): ...``

    Registers objects with ``state_dict``/``load_state_dict`` (modules, optimizers, schedulers,
    scalers), numpy arrays and picklable objects. Their state and the random state are
    checkpointed in each iteration of the outermost ``flor.loop`` inside the block, as often
    as the overhead budget allows (``FLOR_CKPT_BUDGET``, default 1 %).

    >>> with flor.checkpointing(model=net, optimizer=opt):           # doctest: +SKIP
    ...     for epoch in flor.loop("epoch", range(10)): ...
    """

    def __init__(self, *objs: object, **named: object) -> None:
        self.objects = _name_objects(objs, named)
        self.run = None
        self.manager = None

    def __enter__(self) -> "Checkpointing":
        from .. import api

        # Entering the block does not begin the run: args declared later (for example in the
        # outer loop's range) are still checked before anything is recorded.
        run = api.current_run() or api._collecting()
        if run.scope is not None:
            raise UsageError("flor.checkpointing blocks cannot be nested; register all objects in one")
        self.run = run
        self.manager = run.checkpoint_manager(self.objects)
        run.scope = self.manager
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        run = self.run
        if run is not None and run.scope is self.manager:
            self.manager.leave(run, failed=exc_type is not None)
            run.scope = None


class Hooks:
    """What Run.loop tells the active checkpoint manager; the base does nothing."""

    def outer_loop_started(self, run, total: int | None, frame) -> None:
        """The outer loop starts in ``frame``; ``total`` is its length when the iterable has one."""

    def outer_iteration_started(self, run, index: int) -> None:
        """Outer iteration ``index`` starts its body."""

    def nested_loop_ended(self, run, frame) -> None:
        """A loop directly inside the outer body finished; ``frame`` runs the user's for loop."""

    def outer_iteration_ended(self, run, index: int) -> None:  # noqa: D401
        """Outer iteration ``index`` finished its body."""

    def outer_loop_ended(self, run, last_index: int | None, frame) -> None:
        """The outer loop ran out of items."""

    def leave(self, run, failed: bool) -> None:
        """The ``with`` block is left."""

    def finish(self, run) -> None:
        """The run is ending."""

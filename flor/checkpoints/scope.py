"""flor.checkpointing: the context manager that registers the objects whose state is checkpointed.

The outer loop is the outermost flor.loop inside the ``with`` block. A checkpoint of outer
iteration k holds the registered state where the first loop nested in the outer body ends (or at
the end of the iteration when the body has no nested loop); see DESIGN.md section 4.
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
        raise UsageError("flor.checkpointing needs at least one object, e.g. flor.checkpointing(model=net, optimizer=opt)")
    return registered


class Checkpointing:
    """``with flor.checkpointing(model=net, optimizer=opt): ...`` — see flor.checkpointing."""

    def __init__(self, *objs: object, **named: object) -> None:
        self.objects = _name_objects(objs, named)
        self.run = None
        self.outer_index: int | None = None
        self.nested_done = False

    def __enter__(self) -> "Checkpointing":
        from .. import api

        run = api.current_run() or api._begin()
        if run.scope is not None:
            raise UsageError("flor.checkpointing blocks cannot be nested; register all objects in one")
        run.scope = self
        self.run = run
        self.enter(run)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        run = self.run
        if run is not None and run.scope is self:
            self.leave(run, failed=exc_type is not None)
            run.scope = None

    # Hooks called by Run.loop; persistence lives in subclasses / the manager.
    def enter(self, run) -> None:
        """Called when the block is entered."""

    def leave(self, run, failed: bool) -> None:
        """Called when the block is left."""

    def outer_loop_started(self, run) -> None:
        """The outer loop is about to yield its first item."""

    def nested_loop_ended(self, run) -> None:
        """A loop directly inside the outer body finished."""

    def outer_iteration_ended(self, run, index: int) -> None:
        """Outer iteration ``index`` finished its body."""

    def finish(self, run) -> None:
        """The run is ending (flush pending checkpoints)."""

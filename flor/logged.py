"""The typed records a logged value and a loop instance travel in, from ``flor.api`` to the store,
out of it, and across a replay worker's channel.

They are named tuples on purpose: immutable records read by field name everywhere outside
``flor/store/`` (``tests/test_architecture.py`` refuses positional reads of them there), and still
tuples, so that the store binds them into its SQL as they are, with no copy per row: a recording
flushes up to a million values a second.

One layout is not a record: the hot path of ``flor.log`` appends a plain ``(name, value, ctx_id,
iteration)`` tuple (:class:`PlainLog`'s layout; building a named tuple there would cost more than
the rest of the call). Only the run's flush thread and the store's writer handle those rows.

>>> v = LoggedValue("loss", 0.5, "float", ctx_id=1, iteration=3)
>>> v.name, v.iteration, v.source
('loss', 3, 'record')
"""

from __future__ import annotations

from typing import NamedTuple


class PlainLog(NamedTuple):
    """A value of type int, float or str as ``flor.log`` queues it (the store's writer types it
    with SQLite's typeof). Built as a plain tuple of this layout on the hot path."""

    name: str
    value: int | float | str
    ctx_id: int | None
    iteration: int | None


class LoggedValue(NamedTuple):
    """One logged value as the store keeps it: ``value`` encoded for the store (see ``values``),
    ``vtype`` its type tag, in the loop instance ``ctx_id`` at ``iteration`` (both None outside
    every loop); ``source`` is ``record`` or ``replay``."""

    name: str
    value: object
    vtype: str
    ctx_id: int | None
    iteration: int | None
    source: str = "record"

    def as_json(self) -> list:
        """The record as a JSON array (a worker's channel, a worker's records file)."""
        return [self.name, self.value, self.vtype, self.ctx_id, self.iteration, self.source]

    @classmethod
    def from_json(cls, data: list) -> "LoggedValue":
        return cls(*data)


class LoopInstance(NamedTuple):
    """One instance of a ``flor.loop``: its id in the run, the instance and iteration it runs in
    (None at top level), its name, start and end (seconds from the run's start, None when not
    measured) and how many iterations it ran (None until it ended)."""

    ctx_id: int
    parent_id: int | None
    parent_iteration: int | None
    loop_name: str
    t_start: float | None = None
    t_end: float | None = None
    iterations: int | None = None

    @property
    def sibling_key(self) -> tuple:
        """What identifies an instance across replays, with its rank among siblings: the
        instance and iteration it runs in, and its loop name."""
        return (self.parent_id, self.parent_iteration, self.loop_name)

    def as_json(self) -> list:
        return [self.ctx_id, self.parent_id, self.parent_iteration, self.loop_name, self.t_start, self.t_end,
                self.iterations]

    @classmethod
    def from_json(cls, data: list) -> "LoopInstance":
        return cls(*data)


class IterationStart(NamedTuple):
    """When iteration ``iteration`` of the top-level loop instance ``ctx_id`` started (seconds
    from the run's start)."""

    ctx_id: int
    iteration: int
    t: float | None


class Drift(NamedTuple):
    """A recorded value that came out different in a replay: where, both values as stored, and
    their absolute difference when both are numbers."""

    ctx_id: int | None
    iteration: int | None
    name: str
    recorded: object
    replayed: object
    difference: float | None

    def as_json(self) -> list:
        return [self.ctx_id, self.iteration, self.name, self.recorded, self.replayed, self.difference]

    @classmethod
    def from_json(cls, data: list) -> "Drift":
        return cls(*data)


class ItemPath(NamedTuple):
    """An item a keyed loop yielded: the loop's name, the item's key path (``keys.path_text``) and
    its position in the loop (None when it was skipped before it got one)."""

    loop_name: str
    path: str
    iteration: int | None


class ReplayDone(NamedTuple):
    """The replay of ``name`` finished outer iteration ``iteration`` (-1: outside the loop)."""

    name: str
    iteration: int

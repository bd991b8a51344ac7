"""Lineage: which runs' values the run recording in this process read.

The readers (``query``: flor.dataframe, its latest view, flor.query) say here what they read;
the recording side (``api``) installs the sink that hands it to the current run. Reads made
before any run began wait here, and the run that begins next takes them (a stage usually reads
its inputs before it declares its args). Kept apart so that readers need not import the
recording side.
"""

from __future__ import annotations

from typing import Callable, Iterable

_waiting: dict[int, str] = {}  # run id -> how it was read, before any run began here
sink: Callable[[list[int], str], bool] | None = None  # True when a run took the note


def note_read(run_ids: Iterable[int], how: str) -> None:
    """Runs ``run_ids`` were read (through ``how``) in this process."""
    ids = [int(r) for r in run_ids]
    if not ids:
        return
    if sink is not None and sink(ids, how):
        return
    for run_id in ids:
        _waiting.setdefault(run_id, how)


def take_waiting() -> dict[int, str]:
    """The reads made before a run began (for the run that begins now)."""
    taken = dict(_waiting)
    _waiting.clear()
    return taken


# In a replay worker: the recorded run's tstamp. What the dataframe and flor.best show the old code
# is limited to runs that had started by then, as when it was recorded (runs since could change
# what a replayed stage computes).
pinned: str | None = None


def visible(tstamp: str) -> bool:
    """Whether a run with ``tstamp`` is visible to reads in this process."""
    return pinned is None or tstamp <= pinned

"""Loops that a framework's hooks drive, instead of a ``for`` statement over ``flor.loop``.

A :class:`DrivenLoop` is an ordinary ``flor.loop`` whose items are pushed: ``begin()`` at the
hook where an iteration starts (it ends the previous one), ``end()`` where the loop ends. So a
Lightning or Hugging Face run has the same contexts, checkpoints and replay actions as a
hand-written script; the replay driver answers the same generator protocol. The frameworks'
integrations (``lightning``, ``transformers``) use it with the helpers below.

>>> epochs = DrivenLoop("epoch", total=3)      # doctest: +SKIP
>>> epochs.begin()                              # at on_train_epoch_start: 0, then 1, 2
>>> epochs.end()                                # at on_train_end
"""

from __future__ import annotations

import sys

from .. import api
from ..errors import UsageError

FRAMEWORK_KEY = "framework"  # run.environment[...]: which integration drove the loops


class _Feed:
    """The iterable behind a driven loop: one item each time the hook asks for one."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.more = False
        self.index = 0

    def __iter__(self):
        return self

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("a driven loop without a known length")
        return self.total

    def fast_forward(self, count: int) -> None:
        """A resumed run starts at item ``count`` (its trainer skipped the items before it)."""
        self.index += count

    def __next__(self) -> int:
        if not self.more:
            raise StopIteration
        self.more = False
        index, self.index = self.index, self.index + 1
        return index


class DrivenLoop:
    """One ``flor.loop`` driven by hooks; see the module docstring."""

    def __init__(self, name: str, total: int | None = None) -> None:
        self.name = name
        self.total = total
        self._feed: _Feed | None = None
        self._iterator = None
        self.index: int | None = None

    @property
    def active(self) -> bool:
        return self._iterator is not None

    def begin(self) -> int | None:
        """Start the next iteration (ending the one before): its index, or None when the replay
        driver has nothing more for this loop (it ended the loop)."""
        if self._iterator is None:
            self._feed = _Feed(self.total)
            self._iterator = iter(api.loop(self.name, self._feed))
        self._feed.more = True
        try:
            self.index = next(self._iterator)
        except StopIteration:
            self._iterator = None
            self.index = None
        return self.index

    def end(self) -> None:
        """End the loop after its current iteration (nothing when it is not running)."""
        iterator, self._iterator = self._iterator, None
        if iterator is None:
            return
        self._feed.more = False
        for _ in iterator:  # the feed is empty: this only runs the loop's end
            break
        self.index = None


def replaying() -> bool:
    """Whether this process is a replay worker (its current run is a ReplayRun)."""
    from ..replay.worker_run import ReplayRun

    return isinstance(api.current_run(), ReplayRun)


def current_action() -> str | None:
    """In a replay worker: what the driver does with the current outer iteration (``memo``,
    ``exec``); None when recording."""
    run = api.current_run()
    return getattr(run, "outer_action", None) if replaying() else None


def resuming() -> dict | None:
    """In a run started by ``flor resume``, before its outer loop starts: the checkpoint it
    continues from (``iteration``, ``point``); None otherwise."""
    run = api.current_run()
    if run is None or replaying():
        return None
    return getattr(run, "resume", None)


def mark_framework(name: str) -> None:
    """Note in the run which framework drives its loops (replay plans by the framework's hooks)."""
    run = api.current_run() or api.collecting_run()
    run.note_environment(FRAMEWORK_KEY, name)


def begin_run() -> None:
    """Begin the run now (args declared, random state taken), where the framework starts
    training; a replay worker restores the recorded random state at the same point."""
    run = api.current_run()
    if replaying():
        run._ensure_rng()
    elif run is None or not run.begun:
        api.begin_run()


def record_settings(settings: dict, prefix: str, overridable: bool) -> dict:
    """Record plain settings as args named ``prefix + name``; returns the values to use.

    ``overridable=False``: the setting is already in effect (a model built from it), so a
    ``--kwargs`` override of it would be silently ignored: it stops the script in one line.
    """
    fixed = None if overridable or replaying() else (
        "it is fixed before flor sees it; set it in the script (or make it a flor.arg)")
    return api.record_settings(dict(settings), prefix, fixed=fixed)


def frame_of(kind: type, *, function: str | None = None):
    """The nearest caller frame whose ``self`` is a ``kind`` (and, if given, runs ``function``):
    how a callback finds the trainer that called it."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, kind) and (function is None or frame.f_code.co_name == function):
            return frame
        frame = frame.f_back
    raise UsageError(f"this hook was not called by a {kind.__name__}")

"""Keyed and incremental loops: ``flor.loop(name, items, key=..., incremental=True)``.

A keyed loop's iterations are identified by their items' keys (``keys.py``) instead of only their
positions: the dataframe shows the key in the loop's column, and a key path (the keys of the
enclosing keyed loops, then the item's own) names the item across runs and stages.

An incremental loop does not yield an item that an earlier run finished with the same loop body
(``fingerprint.py``) and the same args: its values stay where that run left them (the dataframe's
``latest=True`` view shows them). Items the earlier run did not finish (it failed or was killed
in the body), new items, and every item after a change of the body run. A skipped item is
recorded with the run that did it.

In a replay, a keyed loop yields exactly the items the recorded run yielded, in its order, so
positions line up with the recording's.
"""

from __future__ import annotations

from . import keys as keymod
from ..errors import ReplayError, UsageError
from ..messages import say


class KeyedLoop:
    """The key bookkeeping of one loop instance, in the process that runs it."""

    def __init__(self, run, name: str, key, incremental: bool, fingerprint: str | None,
                 replay_paths: dict[str, int] | None = None) -> None:
        self.run = run
        self.name = name
        self.key = key
        self.incremental = incremental
        self.fingerprint = fingerprint
        self.replay_paths = replay_paths
        self.replay_counts: dict[str, int] = {}  # enclosing path -> items the recording had under it
        self.parent = tuple(run.key_stack)
        if incremental and run.loops.depth > len(run.key_stack):
            # An item's identity is its key path; under a loop that is not keyed (epochs) the same
            # key comes back in every iteration of it, and "done before" would skip them all.
            raise UsageError(
                f"flor.loop({name!r}, incremental=True) is inside a loop that is not keyed; "
                f"give the enclosing loops key=... too, or drop incremental=True"
            )
        self.ctx: int | None = None
        self.skipped = 0
        self.yielded = 0
        # What to skip is known before the first item (a resumed run fast-forwards through the
        # items before its checkpoint with the same skips as the killed run made).
        self.skip: dict[str, int] = (run.items_done_before(name, fingerprint)
                                     if incremental and fingerprint is not None and replay_paths is None else {})

    def started(self, ctx: int) -> None:
        """The loop instance exists (its id is ``ctx``): record it and learn what to skip."""
        self.ctx = ctx
        if self.replay_paths is not None:
            return
        self.run.push_item(("loop", (ctx, self.name, self.fingerprint, int(self.incremental))))

    def items(self, iterable):
        """The items to yield, in order; keys checked, pushed, and marked done as bodies finish."""
        run, name, key = self.run, self.name, self.key
        stack, push = run.key_stack, run.push_item
        seen: set = set()
        position = 0
        replaying = self.replay_paths is not None
        stack.append(None)
        try:
            for item in iterable:
                k = keymod.key_of(item, key, name)
                path = self.parent + ((name, k),)
                text = keymod.path_text(path)
                if replaying:
                    recorded = self.replay_paths.get(text)
                    if recorded is None:
                        continue  # not an item of the recording (new since, or skipped by it)
                    if recorded != position:
                        raise ReplayError(
                            f"flor.loop({name!r}): item {keymod.shown(k)} was item {recorded} when the run was "
                            f"recorded and is item {position} now (items missing or in another order); replay "
                            f"needs the items the run had, in its order (sort them, restore the missing ones)"
                        )
                else:
                    if k in seen:
                        raise UsageError(
                            f"flor.loop({name!r}): key {keymod.shown(k)} appears twice; keys must tell items apart "
                            f"(pass key=lambda item: ... that returns a distinct key per item)"
                        )
                    seen.add(k)
                stored, ktype = keymod.encode(k)
                by = self.skip.get(text)
                if by is not None:
                    self.skipped += 1
                    if self.ctx is not None:
                        push(("item", (self.ctx, None, stored, ktype, text, "skipped", by)))
                    continue
                stack[-1] = (name, k)
                # Before started() (a resumed run catching up to its checkpoint) an item is not
                # recorded again: the killed run recorded it.
                ctx = self.ctx
                row = (ctx, position, stored, ktype, text)
                if ctx is not None and not replaying:
                    push(("item", (*row, "started", None)))
                yield item
                # The body finished (the loop asked for the next item): the item is done.
                if ctx is not None and not replaying:
                    push(("item", (*row, "done", None)))
                position += 1
                self.yielded = position
            if replaying:
                expected = self.replay_counts.get(keymod.path_text(self.parent), 0)
                if position < expected:
                    raise ReplayError(
                        f"flor.loop({name!r}): {expected - position} item(s) of the recording are missing now; "
                        f"replay needs the items the run had (restore them)"
                    )
        finally:
            stack.pop()
            if self.skipped and not replaying:
                say(f"flor: {name}: {self.skipped} item(s) skipped, done before by a run with the same loop body "
                    f"and args (flor.dataframe(..., latest=True) has their values)")

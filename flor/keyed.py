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
from .errors import UsageError
from .messages import say


class KeyedLoop:
    """The key bookkeeping of one loop instance, in the process that runs it."""

    def __init__(self, run, name: str, key, incremental: bool, fingerprint: str | None,
                 replay_paths: set[str] | None = None) -> None:
        self.run = run
        self.name = name
        self.key = key
        self.incremental = incremental
        self.fingerprint = fingerprint
        self.replay_paths = replay_paths
        self.parent = tuple(run.key_stack)
        self.ctx: int | None = None
        self.skip: dict[str, int] = {}
        self.skipped = 0
        self.yielded = 0

    def started(self, ctx: int) -> None:
        """The loop instance exists (its id is ``ctx``): record it and learn what to skip."""
        self.ctx = ctx
        if self.replay_paths is not None:
            return
        self.run.push_item(("loop", (ctx, self.name, self.fingerprint, int(self.incremental))))
        if self.incremental and self.fingerprint is not None:
            self.skip = self.run.items_done_before(self.name, self.fingerprint)

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
                    if text not in self.replay_paths:
                        continue
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
                    push(("item", (self.ctx, None, stored, ktype, text, "skipped", by)))
                    continue
                stack[-1] = (name, k)
                row = (self.ctx, position, stored, ktype, text)
                if self.ctx is not None and not replaying:
                    push(("item", (*row, "started", None)))
                yield item
                # The body finished (the loop asked for the next item): the item is done.
                if self.ctx is not None and not replaying:
                    push(("item", (*row, "done", None)))
                position += 1
                self.yielded = position
        finally:
            stack.pop()
            if self.skipped and not replaying:
                say(f"flor: {name}: {self.skipped} item(s) skipped, done before by a run with the same loop body "
                    f"and args (flor.dataframe(..., latest=True) has their values)")

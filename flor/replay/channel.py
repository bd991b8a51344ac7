"""The channel from a replay worker to the process that started it: JSON lines on a pipe.

A worker never writes the project's store. What it replays (values, drift, finished iterations,
what the old code wrote, its result) goes back to the driver as messages, one JSON object per
line, and the driver stores them. So a worker needs no database at all: it can run in a private
view of the file system, on another machine, or be killed at any moment without holding a lock.

Messages: ``{"kind": "progress", "done": N}``, ``{"kind": "batch", "contexts": [...], "logs":
[...], "drift": [...], "done": [...]}`` and, last, ``{"kind": "result", ...}``. A batch's lists
hold records as JSON arrays: :class:`NewInstance`, :class:`~flor.logged.LoggedValue`,
:class:`~flor.logged.Drift` and :class:`~flor.logged.ReplayDone`, each written by its
``as_json`` (or in its field order) and read back by ``from_json``.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple


class NewInstance(NamedTuple):
    """A loop instance the recording never had, as a worker sends it: its provisional (negative)
    id, the instance and iteration it runs in (in the recording's ids, or another provisional one)
    and its rank among the instances of its loop there. The driver gives it a real id."""

    provisional_id: int
    parent_id: int | None
    parent_iteration: int | None
    loop_name: str
    rank: int

    def as_json(self) -> list:
        return [self.provisional_id, self.parent_id, self.parent_iteration, self.loop_name, self.rank]

    @classmethod
    def from_json(cls, data: list) -> "NewInstance":
        return cls(*data)


class Channel:
    """The worker's end: writes whole messages to a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: str, **payload) -> None:
        """Write one message (a whole line, retried until every byte is out)."""
        data = (json.dumps({"kind": kind, **payload}, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def decode(line: bytes) -> dict | None:
    """One message read by the driver, or None for a line that is not one."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "kind" in message else None

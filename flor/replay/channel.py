"""The channel from a replay worker to the process that started it: JSON lines on a pipe.

A worker never writes the project's store. What it replays (values, drift, finished iterations,
what the old code wrote, its result) goes back to the driver as messages, one JSON object per
line, and the driver stores them. So a worker needs no database at all: it can run in a private
view of the file system, on another machine, or be killed at any moment without holding a lock.

Messages: ``{"kind": "progress", "done": N}``, ``{"kind": "batch", "contexts": [...], "logs":
[...], "drift": [...], "done": [...]}`` and, last, ``{"kind": "result", ...}``.
"""

from __future__ import annotations

import json
import os


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

"""Whether the process behind a run is still there: the one rule for "running" versus "killed".

A run is recorded as ``running`` until its process ends it. When the process is gone without
ending it (SIGKILL, out of memory, a machine that rebooted), the run is ``killed``: on this
machine we can ask the kernel; for a run of another machine (a shared project folder) only the
heartbeat tells, and a heartbeat older than :data:`STALE_HEARTBEAT_S` means gone.

>>> process_gone(os.getpid(), socket.gethostname(), time.time(), time.time())
False
"""

from __future__ import annotations

import os
import socket

STALE_HEARTBEAT_S = 300.0


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_gone(pid: int | None, host: str | None, heartbeat: float | None, now: float) -> bool:
    """Whether the process of a ``running`` run is gone: dead on this machine, or silent too long."""
    if host == socket.gethostname() and pid is not None and not pid_alive(pid):
        return True
    return heartbeat is not None and now - heartbeat > STALE_HEARTBEAT_S

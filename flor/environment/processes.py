"""Whether the process behind a run is still there: the one rule for "running" versus "killed".

A run is recorded as ``running`` until its process ends it. When the process is gone without
ending it (SIGKILL, out of memory, a machine that rebooted), the run is ``killed``: on this
machine we can ask the kernel; for a run of another machine (a shared project folder) only the
heartbeat tells, and a heartbeat older than :data:`STALE_HEARTBEAT_S` means gone.

>>> process_gone(os.getpid(), this_machine(), time.time(), time.time())
False
"""

from __future__ import annotations

import os
import socket

STALE_HEARTBEAT_S = 300.0
_INIT_PID_NAMESPACE = 0xEFFFFFFC  # the kernel's PROC_PID_INIT_INO: the host's own PID namespace


def this_machine() -> str:
    """Where pids of this process mean what they say: the host name, and the PID namespace when
    it is not the host's. Two containers (or `unshare -p`) with one host name see different
    processes under the same pids; a reader elsewhere must not judge a run by its pid."""
    host = socket.gethostname()
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
        inode = int(link.rpartition("[")[2].rstrip("]"))
    except (OSError, ValueError):
        return host
    return host if inode == _INIT_PID_NAMESPACE else f"{host} (pid namespace {inode})"


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
    if host == this_machine() and pid is not None and not pid_alive(pid):
        return True
    return heartbeat is not None and now - heartbeat > STALE_HEARTBEAT_S

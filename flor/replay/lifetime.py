"""Lifetimes: every process a replay task starts ends with the task.

Old code starts processes: DataLoader workers, a TensorBoard, a tracker's service process, a
daemon that forks twice and leaves its session. Those that outlive the task would go on running
old code after ``flor replay`` returned, against the user's machine. So a task runs in a child
of a *supervisor* (:func:`supervise`): the supervisor is a child subreaper (every orphan among
the task's descendants is handed to it, however it detached), and once the task's process has
ended it kills what is left, until nothing is. With a private view (``confine.py``) the task's
process is also the first process of its own PID namespace, and the kernel ends every process
of that namespace with it; the supervisor's sweep is then a second line, for the copy fallback
it is the only one.

Each link of the chain dies with its parent (``PR_SET_PDEATHSIG``): a warm worker killed by the
executor takes its task, and the task's processes, with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def _prctl(option: int, value: int) -> int:
    global _libc
    if _libc is None:
        # The running program's own symbols (libc's among them): find_library would start a
        # subprocess, which must not happen between unshare(CLONE_NEWPID) and our fork.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when the parent process (pid ``parent``, as this process saw it before) ends."""
    if sys.platform != "linux":
        return
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # It ended before the request took hold. (A parent outside our PID namespace shows as 0.)
    if os.getppid() not in (parent, 0):
        os._exit(1)


def supervise() -> None:
    """Fork. Return in the child, which is to run the task. The calling process (the supervisor)
    never returns: it waits for the child, ends every process the child left behind, and exits
    as the child did (with its status, or by its signal)."""
    if sys.platform == "linux":
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # what is buffered must not be written twice
        except (OSError, ValueError, AttributeError):
            pass
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        die_with_parent(parent)
        return
    _pid, status = os.waitpid(pid, 0)
    end_descendants()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: be killed by it too, so the warm worker reports that
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _children() -> list[int]:
    """This process's children (orphans handed to it included)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as handle:  # one thread: its children are ours
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        pass
    found = []
    for name in os.listdir("/proc"):  # kernels without CONFIG_PROC_CHILDREN
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    text = handle.read()
            except OSError:
                continue
            if int(text.rpartition(")")[2].split()[1]) == me:
                found.append(int(name))
    return found


def end_descendants() -> None:
    """Kill every descendant of this process (a subreaper: a descendant whose parent died is one
    of its children) and reap it, until none is left."""
    while True:
        children = _children()
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    while True:  # zombies the listing did not show
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break

"""Lifetimes: every process a replay task starts ends with the task.

Old code starts processes: DataLoader workers, a TensorBoard, a tracker's service process, a
daemon that forks twice and leaves its session. Those that outlive the task would go on running
old code after ``flor replay`` returned, against the user's machine. So a task runs in a child
of a *supervisor* (:func:`supervise`): the supervisor is a child subreaper (every orphan among
the task's descendants is handed to it, however it detached), and once the task's process has
ended it kills what is left, until nothing is. With a private view (``confine.py``) the task
also runs in a PID namespace of its own, whose first process ends with it, and the kernel then
ends every process of that namespace: the supervisor's sweep is a second line there, and the only
one in the copy fallback.

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


_relay: int | None = None  # in the supervised child: where a first process reports its task's end


def supervise() -> None:
    """Fork. Return in the child, which is to run the task. The calling process (the supervisor)
    never returns: it waits for the child, ends every process the child left behind, and exits
    as the child did (with its status, or by its signal), or as the task did where the child
    was only the first process of a PID namespace (:func:`stand_as_init`)."""
    global _relay
    if sys.platform == "linux":
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # what is buffered must not be written twice
        except (OSError, ValueError, AttributeError):
            pass
    parent = os.getpid()
    # This process's own /proc, opened now: the child may mount its PID namespace's over it.
    try:
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        proc = None  # no /proc (macOS): nothing to sweep with
    relay_read, relay_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(relay_read)
        if proc is not None:
            os.close(proc)
        _relay = relay_write
        die_with_parent(parent)
        return
    os.close(relay_write)
    _pid, status = os.waitpid(pid, 0)
    os.set_blocking(relay_read, False)  # a forked descendant may hold the other end open
    try:
        relayed = os.read(relay_read, 64)
    except BlockingIOError:
        relayed = b""
    if proc is not None:
        end_descendants(proc)
    code = os.waitstatus_to_exitcode(int(relayed) if relayed.strip().isdigit() else status)
    if code < 0:  # killed by a signal: be killed by it too, so the warm worker reports that
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def stand_as_init() -> None:
    """In the first process of a new PID namespace (a child of :func:`supervise`): fork the
    task's process and return in it. This one stays process 1, reaping orphans, until the task's
    process ends; then it reports how that ended to the supervisor and exits, and the kernel
    ends every other process of the namespace.

    The task must not be process 1 itself: the kernel ignores any signal process 1 has no
    handler for, so ``os.kill(os.getpid(), signal.SIGKILL)`` or a default SIGTERM would do nothing."""
    relay = _relay
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    pid = os.fork()
    if pid == 0:
        if relay is not None:
            os.close(relay)
        die_with_parent(1)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the task's to handle
    status = 1 << 8
    while True:
        try:
            done, ended = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            status = ended
            break
    if relay is not None:
        os.write(relay, str(status).encode())
    os._exit(0)


def _read(proc: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY, dir_fd=proc)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def _children(proc: int) -> list[int]:
    """This process's children (orphans handed to it included), read from ``proc``, a handle on
    a /proc of this process's PID namespace."""
    me = os.getpid()
    try:
        return [int(pid) for pid in _read(proc, f"{me}/task/{me}/children").split()]  # one thread: its children are ours
    except OSError:
        pass
    found = []
    for name in os.listdir(proc):  # kernels without CONFIG_PROC_CHILDREN
        if name.isdigit():
            try:
                text = _read(proc, f"{name}/stat")
            except OSError:
                continue
            if int(text.rpartition(")")[2].split()[1]) == me:
                found.append(int(name))
    return found


def end_descendants(proc: int) -> None:
    """Kill every descendant of this process (a subreaper: a descendant whose parent died is one
    of its children) and reap it, until none is left. ``proc``: see :func:`_children`."""
    while True:
        children = _children(proc)
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

"""Confinement: a replay worker runs old code in a private view of the file system, where every
write it makes lands in a scratch layer that is thrown away.

Old code runs against the user's project, and old code writes: checkpoints of its own
(``torch.save`` through torch's C++ writer), logs, caches, files in ``/tmp``. Patching Python's
``open`` catches only some of those. So the worker enters a private mount namespace (a user
namespace too when it is not root) and, before it runs any of the old code:

1. remounts every file system it can see read-only (``/proc``, ``/sys`` and ``/dev`` aside), so a
   write anywhere else fails with "Read-only file system" instead of reaching a file;
2. mounts a private tmpfs for the scratch layers and for ``/dev/shm`` (DataLoader workers share
   memory through it);
3. lays an overlay over each place where programs expect to write — the project, ``/tmp`` (and
   ``$TMPDIR``) and the home folder: reads see what is there, writes go to the scratch layer. The
   project's overlay has the run's own code version on top, so the old script, its modules and
   ``python -m pkg.train`` all resolve to the code the run had, at the paths the run used;
4. deletes, in the project's view only, the code files that today's project has and the run's
   version did not;
5. lays an overlay of its own over each file system mounted inside those places (a data folder
   that is its own mount in the project): an overlay shows only its lower folder's own file
   system, so every place is opened before anything goes over it, and is the overlay's lower
   layer through that handle. A mount that takes no overlay (a file) is bound back read-only.

The kernel keeps the user's files out of reach: this is a property of the mount table, not of a
list of patched functions. What the old code wrote is listed from the scratch layers
(:func:`written`) and reported; it is discarded with the worker.

The old code must not be able to undo the view (``umount2`` of an overlay, then a remount of
``/`` read-write), nor to reach the user's files through another process's view
(``/proc/<pid>/root``). So the task runs in a PID namespace of its own, with its
own ``/proc`` (:func:`enter`): the processes outside are not there to look through, and every
process the old code starts ends with it (see ``lifetime.py``). And once the view is set up,
:func:`lock` takes away what could change it: a process without root enters a further user
namespace, which locks every mount it inherits (the kernel refuses to unmount or remount them
read-write there), and every process drops the capabilities that change mounts and sets
``no_new_privs`` before the old code runs. A new user namespace the old code makes gets
capabilities back, but only over copies of the mount table that are locked in turn.

Where the kernel refuses (no unprivileged user namespaces, a seccomp filter as Docker's, no
overlayfs), :func:`probe` says why, and replay falls back to a workspace of copies whose writes
Landlock guards (``workspace.py``, ``landlock.py``), or refuses where the kernel has no Landlock
either, until asked for ``--confinement none``.

>>> reason = probe()                      # None: confinement works here     # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ReplayError
from . import lifetime

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_OPTION_FLAGS = {
    "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME,
}
# Kernel file systems that stay as they are: writing to them is not writing a user's file, and
# programs need some of them writable (/dev/null, /proc/self/...).
_KEPT = ("/proc", "/sys", "/dev")


class ConfinementError(ReplayError):
    """The private view of the file system could not be set up."""


_libc = None


def _c():
    global _libc
    if _libc is None:
        # The running program's own symbols (libc's among them): find_library would start a
        # subprocess, which must not happen between unshare(CLONE_NEWPID) and our fork.
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(code)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else os.fsencode(text)
    _check(_c().mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {fstype or ''} {target}")


def _map_own_ids(uid: int, gid: int) -> None:
    """Map our own ids onto themselves in the user namespace just entered, so files keep their
    owner as seen from inside."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
        except OSError as exc:
            if name == "setgroups" and exc.errno == errno.EPERM:
                continue  # a nested namespace: already denied by its parent, as it must be
            raise ConfinementError(f"cannot write /proc/self/{name}: {exc.strerror}") from exc


def enter() -> None:
    """Move into a private mount namespace (and a user namespace when not root) and a PID
    namespace of our own, with its own ``/proc``.

    Returns in the second process of the new PID namespace, a grandchild; the first stands as
    its init, and the calling process waits and exits as the task did (``lifetime.supervise``),
    ending whatever it left behind. Called
    first thing in a worker's task, while it has a single thread: the kernel refuses a new user
    namespace to a process with several."""
    if sys.platform != "linux":
        raise ConfinementError("private mount namespaces exist on Linux only")
    libc = _c()
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(CLONE_NEWNS | CLONE_NEWPID)")
    else:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID), "unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID)")
        _map_own_ids(uid, gid)
    # Nothing mounted here may propagate back to the user's namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    lifetime.supervise()  # the child is process 1 of the new PID namespace
    # Our own /proc: the processes outside this namespace (the warm worker, the driver, the
    # user's shell) and their views of the file system (/proc/<pid>/root) are not in it.
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    lifetime.stand_as_init()  # the task runs in process 2, where signals work as usual


@dataclass
class View:
    """What one worker's private view holds."""

    project: Path  # the user's project root (the real path)
    run_tree: Path  # the run's code version, laid over the project
    scratch: Path  # an empty folder, outside the run tree, for the scratch layers
    writable: list[Path] = field(default_factory=list)  # other places that get a scratch layer
    hide: list[str] = field(default_factory=list)  # project files the run's version did not have
    hidden: set[str] = field(default_factory=set)  # the paths of those that setting up deleted
    layers: dict[str, int] = field(default_factory=dict)  # target -> fd of its scratch layer


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) of every mount, from /proc/self/mountinfo, parents first."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for a space, as the kernel writes it
            found.append((point, set(fields[5].split(","))))
    return found


def _kept(point: str) -> bool:
    return any(point == top or point.startswith(top + "/") for top in _KEPT)


def _escape(path: str) -> str:
    # overlayfs splits its options at ',' and its lower layers at ':'.
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _read_only_flags(options: set[str]) -> int:
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for option, flag in _OPTION_FLAGS.items():
        if option in options:
            flags |= flag  # a user namespace may not clear the flags it inherited
    return flags


def _read_only_everywhere() -> None:
    for point, options in _mounts():
        if _kept(point) or "ro" in options:
            continue
        try:
            _mount(None, point, None, _read_only_flags(options))
        except ConfinementError as exc:
            if os.path.exists(point):
                raise ConfinementError(f"cannot make {point} read-only for the replay ({exc})") from None


def _inside(point: str, folder: Path) -> bool:
    return point.startswith(str(folder).rstrip("/") + "/")


def _submounts(targets: list[Path]) -> dict[str, set[str]]:
    """The mounts inside the overlaid places (a data folder that is its own file system, and any
    mounted inside it in turn): point -> its per-mount options."""
    return {point: options for point, options in _mounts()
            if not _kept(point) and any(_inside(point, t) for t in targets)}


def _overlay(target: str, lowers: list[str], upper: int, work: int) -> None:
    options = (f"lowerdir={':'.join(_escape(p) for p in lowers)},upperdir=/proc/self/fd/{upper},"
               f"workdir=/proc/self/fd/{work}")
    try:
        _mount("flor-replay", target, "overlay", 0, options + ("" if os.geteuid() == 0 else ",userxattr"))
    except ConfinementError:
        if os.geteuid() != 0:
            raise
        _mount("flor-replay", target, "overlay", 0, options)


def confine(view: View) -> None:
    """Set up the private view (see the module docstring); the process must have called :func:`enter`."""
    targets = [Path(p) for p in dict.fromkeys(str(Path(t).resolve()) for t in [*view.writable, view.project])]
    targets = [t for t in targets if t.is_dir()]
    scratch = str(view.scratch)
    _read_only_everywhere()
    inner = _submounts(targets)
    # Each place is opened (O_PATH) before anything is laid over it: an overlay on a parent
    # shows only the parent's own file system, so a mount inside it is reached through this.
    places = {str(t): (os.open(t, os.O_PATH | os.O_DIRECTORY), None) for t in targets}
    for point, options in inner.items():
        if point not in places:
            try:
                places[point] = (os.open(point, os.O_PATH), options)
            except OSError:
                continue  # gone, or not ours to open: it stays hidden, as before
    _mount("flor-scratch", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
    order = sorted(places, key=lambda t: (len(Path(t).parts), t))  # outer first: an inner overlay goes on the outer view
    layers = {}
    for number, target in enumerate(order):
        if os.path.isdir(f"/proc/self/fd/{places[target][0]}"):
            upper, work = Path(scratch, str(number), "upper"), Path(scratch, str(number), "work")
            upper.mkdir(parents=True)
            work.mkdir()
            # Held open, and made before any overlay: once an outer overlay covers the scratch
            # folder's path, only these reach it.
            layers[target] = (os.open(upper, os.O_RDONLY | os.O_DIRECTORY), os.open(work, os.O_RDONLY | os.O_DIRECTORY))
    run_tree = os.open(view.run_tree, os.O_RDONLY | os.O_DIRECTORY)
    project = Path(view.project).resolve()
    for target in order:
        fd, options = places[target]
        if target in layers:
            upper_fd, work_fd = layers[target]
            lowers = [f"/proc/self/fd/{fd}"]
            if target == str(project) or _inside(target, project):
                code = os.path.join(f"/proc/self/fd/{run_tree}", os.path.relpath(target, project))
                if os.path.isdir(code):  # the run's code version on top
                    lowers.insert(0, os.path.normpath(code))
            try:
                _overlay(target, lowers, upper_fd, work_fd)
                view.layers[target] = upper_fd
                os.close(fd)
                continue
            except ConfinementError as exc:
                if options is None:  # one of the places programs write to: no view without it
                    held = [p for p in inner if _inside(p, Path(target))]
                    if held and os.geteuid() != 0:
                        raise ConfinementError(
                            f"cannot lay the replay's overlay over {target}: it holds {len(held)} mount(s) ({held[0]}) "
                            "that the kernel does not let a user namespace look under (replay as root, or with "
                            f"--confinement copy) ({exc})") from None
                    raise
                os.close(upper_fd)
                os.close(work_fd)
        # A mount inside a place that takes no overlay (a file, an unusual file system): bound
        # back as it is, read-only.
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        _mount(None, target, None, _read_only_flags(options or set()))
        os.close(fd)
    if os.path.isdir("/dev/shm"):
        _mount("flor-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for rel in view.hide:
        path = project / rel
        try:
            if path.is_file() or path.is_symlink():
                path.unlink()
                view.hidden.add(str(path))
        except OSError:
            pass
    os.close(run_tree)


# Capabilities root keeps while the old code runs: those over files and its own processes, which
# the recording had too. Those that change mounts, namespaces, devices or the kernel are dropped.
_KEPT_CAPABILITIES = {
    0: "chown", 1: "dac_override", 2: "dac_read_search", 3: "fowner", 4: "fsetid", 5: "kill", 6: "setgid",
    7: "setuid", 10: "net_bind_service", 13: "net_raw", 14: "ipc_lock", 15: "ipc_owner", 23: "sys_nice",
    24: "sys_resource", 28: "lease",
}
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 40


def _drop_capabilities(kept: dict[int, str]) -> None:
    """Keep only ``kept`` capabilities, for this process and everything it executes."""
    libc = _c()
    zero = ctypes.c_ulong(0)
    for cap in range(_last_capability() + 1):
        if cap not in kept:
            _check(libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), zero, zero, zero), f"prctl(PR_CAPBSET_DROP, {cap})")
    libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), zero, zero, zero)  # absent before 4.3
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), data), "capget")
    for index in range(2):
        keep = sum(1 << (cap - 32 * index) for cap in kept if cap // 32 == index)
        data[index].effective &= keep
        data[index].permitted &= keep
        data[index].inheritable &= keep
    _check(libc.capset(ctypes.byref(header), data), "capset")


def lock() -> None:
    """Make the view set up by :func:`confine` one the old code cannot change (see the module
    docstring). Call it last, before the old code runs, while the process has a single thread."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # capabilities and no_new_privs are a thread's: the others would keep theirs
        raise ConfinementError(f"cannot lock the replay's view: the worker has {threads} threads, not one")
    libc = _c()
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        # A further user namespace: the mounts it inherits are locked. (Root keeps its own user
        # namespace: mapped there one to one, it keeps its access to every user's files; without
        # the capabilities dropped below it cannot change a mount either.)
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER | CLONE_NEWNS)")
        _map_own_ids(uid, gid)
    # Without root, the recording had no capabilities at all: the namespace's are dropped too.
    _drop_capabilities(_KEPT_CAPABILITIES if uid == 0 else {})
    zero = ctypes.c_ulong(0)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero), "prctl(PR_SET_NO_NEW_PRIVS)")


def written(view: View) -> list[tuple[str, int | None]]:
    """(path, bytes; None for a deletion) of every file the old code wrote or deleted, from the
    scratch layers (Python's ``__pycache__`` left out). The deletions that hid today's files from
    the run's view are not the old code's (say ``out.txt`` that the user's shell made to hold
    replay's own output): they are left out too, unless the old code wrote the file again."""
    found = []
    for target, fd in view.layers.items():
        root = f"/proc/self/fd/{fd}"
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                rel = os.path.relpath(path, root)
                shown = os.path.join(target, rel)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    if shown not in view.hidden:
                        found.append((shown, None))  # a whiteout: the old code deleted it
                elif stat.S_ISREG(info.st_mode):
                    found.append((shown, info.st_size))
    return sorted(found)


_PROBE = """
import os, sys, tempfile
sys.path.insert(0, {package!r})
from flor.replay import confine
base = {base!r}
tree, scratch, project = (os.path.join(base, n) for n in ("tree", "scratch", "project"))
for folder in (tree, scratch, project):
    os.mkdir(folder)
open(os.path.join(project, "mine"), "w").write("user")
confine.enter()
view = confine.View(project=project, run_tree=tree, scratch=scratch, writable=[tempfile.gettempdir()])
confine.confine(view)
confine.lock()
open(os.path.join(project, "mine"), "w").write("replay")
assert confine.written(view) == [(os.path.join(os.path.realpath(project), "mine"), 6)], confine.written(view)
print("ok")
"""


def probe() -> str | None:
    """None when confinement works on this machine, else why not (one line)."""
    package = str(Path(__file__).resolve().parents[2])
    # The folder is made and removed here, outside the probe's namespace (issue 26: every replay
    # left a flor-probe-* folder behind in the temporary folder).
    with tempfile.TemporaryDirectory(prefix="flor-probe-", ignore_cleanup_errors=True) as base:
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE.format(package=package, base=base)],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the confinement check could not run ({exc})"
    if done.returncode == 0 and done.stdout.strip() == "ok":
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("flor: error: ") if lines else f"the confinement check exited with {done.returncode}"

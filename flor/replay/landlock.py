"""Landlock: the copy fallback's guard, where the kernel allows no private mount namespace.

Docker's default seccomp profile (and some hardened kernels) refuse ``unshare`` and ``mount``,
so ``confine.py`` cannot make a private view. Patching Python's ``open`` (``workspace.py``) then
catches only some writes: ``os.remove``, ``os.rename``, ``shutil.rmtree`` or a shell's ``>`` by
the project's absolute path went through. Linux's Landlock (5.13 and later) needs no namespace
and no privilege: a process restricts itself, and everything it starts, for good. A replay task
in the copy fallback allows writing (creating, removing, renaming, truncating) only under its
workspace, its own temporary folder and ``/dev/shm``; writes to files under ``/dev`` and
``/proc`` (``/dev/null``, a terminal) stay allowed. Reads are not restricted. Anything else
fails with "Permission denied", in the old code, before it reaches a user's file.

Renaming across folders is governed only from ABI 2 (before, Landlock refuses it everywhere),
``truncate`` by path only from ABI 3 (before, it is not guarded): :func:`restrict_writes`
handles what the kernel's ABI knows.

>>> unavailable()          # None: Landlock can guard writes here     # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from pathlib import Path

from ..errors import ReplayError

# Syscall numbers: the same on x86_64 and arm64 (asm-generic), where flor's workers run.
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446), "arm64": (444, 445, 446)}
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

WRITE_FILE = 1 << 1
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
_WRITES_V1 = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
              | MAKE_BLOCK | MAKE_SYM)


class LandlockError(ReplayError):
    """Landlock could not restrict the replay's writes."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct landlock_path_beneath_attr is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = None


def _c():
    global _libc
    if _libc is None:
        # The running program's own symbols (libc's among them): find_library would start a
        # subprocess, which must not happen between unshare(CLONE_NEWPID) and our fork.
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _numbers() -> tuple[int, int, int] | None:
    return _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None


def abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none."""
    numbers = _numbers()
    if numbers is None:
        return 0
    version = _c().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, int(version))


def unavailable() -> str | None:
    """None when Landlock can guard a replay's writes here, else why not (a few words)."""
    numbers = _numbers()
    if numbers is None:
        return f"Landlock is Linux's, on x86_64 or arm64 (this is {sys.platform} {platform.machine()})"
    version = _c().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if version > 0:
        return None
    code = ctypes.get_errno()
    if code == errno.EOPNOTSUPP:
        return "Landlock is built into this kernel but switched off (the lsm= boot parameter)"
    if code == errno.ENOSYS:
        return "this kernel has no Landlock (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK), or a seccomp filter refuses it"
    return f"Landlock is refused here ({os.strerror(code)})"


def handled(version: int) -> int:
    """The write rights that ABI ``version`` can restrict."""
    rights = _WRITES_V1
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    return rights


def restrict_writes(writable: list[Path], device_files: list[Path] = (Path("/dev"), Path("/proc"))) -> None:
    """From now on, this thread and every process it starts may write only under ``writable``
    (every write right) and to existing files under ``device_files``. Call it while the process
    has a single thread: Landlock restricts the calling thread and its future children only."""
    numbers = _numbers()
    version = abi()
    if numbers is None or version < 1:
        raise LandlockError(f"cannot guard the replay's writes: {unavailable()}")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # the other threads would write unrestricted
        raise LandlockError(f"cannot guard the replay's writes: the worker has {threads} threads, not one")
    create, add_rule, restrict = numbers
    libc = _c()
    rights = handled(version)
    attr = ctypes.c_uint64(rights)  # struct landlock_ruleset_attr, its first field (every ABI reads it)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise LandlockError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        rules = [(Path(p), rights) for p in writable] + [(Path(p), rights & (WRITE_FILE | TRUNCATE)) for p in device_files]
        for path, allowed in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not there: nothing to allow
            try:
                if not os.path.isdir(path):
                    allowed &= WRITE_FILE | TRUNCATE  # a file takes no rights on entries
                rule = _PathBeneath(allowed, fd)
                if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise LandlockError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        # Without privilege, Landlock requires no_new_privs: a setuid program could not be confined.
        if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise LandlockError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
        if libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise LandlockError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)

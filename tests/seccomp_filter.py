"""A seccomp filter that refuses namespaces as Docker's default profile does, for tests.

``refuse_namespaces()`` is meant for ``subprocess.run(..., preexec_fn=...)``: the child, and
everything it starts, gets EPERM from ``unshare``, ``mount``, ``umount2``, ``setns``,
``pivot_root`` and from ``clone`` with a namespace flag, and ENOSYS from ``clone3`` (so the C
library falls back to ``clone``, as it does under Docker). With ``landlock=False`` the Landlock
calls fail with ENOSYS too: a kernel, or an older container runtime, without them.
"""

from __future__ import annotations

import ctypes
import platform

SUPPORTED = platform.machine() == "x86_64"

_AUDIT_ARCH_X86_64 = 0xC000003E
_UNSHARE, _MOUNT, _UMOUNT2, _SETNS, _PIVOT_ROOT, _CLONE, _CLONE3 = 272, 165, 166, 308, 155, 56, 435
_LANDLOCK = (444, 445, 446)
_NAMESPACE_FLAGS = 0x00020000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x04000000 | 0x08000000 | 0x02000000
_LD_W_ABS, _JEQ_K, _AND_K, _RET_K = 0x20, 0x15, 0x54, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Instruction))]


def _program(landlock: bool) -> list[tuple[int, int, int, int]]:
    refused = [(_UNSHARE, _EPERM), (_MOUNT, _EPERM), (_UMOUNT2, _EPERM), (_SETNS, _EPERM), (_PIVOT_ROOT, _EPERM),
               (_CLONE3, _ENOSYS)]
    if not landlock:
        refused += [(number, _ENOSYS) for number in _LANDLOCK]
    code = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), (_RET_K, 0, 0, _ALLOW), (_LD_W_ABS, 0, 0, 0)]
    for number, errno in refused:
        code += [(_JEQ_K, 0, 1, number), (_RET_K, 0, 0, _ERRNO | errno)]
    code += [
        (_JEQ_K, 0, 5, _CLONE),
        (_LD_W_ABS, 0, 0, 16),  # clone's flags: the low half of args[0]
        (_AND_K, 0, 0, _NAMESPACE_FLAGS),
        (_JEQ_K, 0, 1, 0),
        (_RET_K, 0, 0, _ALLOW),
        (_RET_K, 0, 0, _ERRNO | _EPERM),
        (_RET_K, 0, 0, _ALLOW),
    ]
    return code


def refuse_namespaces(landlock: bool = True):
    """A ``preexec_fn`` that installs the filter (see the module docstring)."""

    def install() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        code = _program(landlock)
        instructions = (_Instruction * len(code))(*[_Instruction(*step) for step in code])
        program = _Program(len(code), instructions)
        zero = ctypes.c_ulong(0)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program), zero, zero) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")

    return install

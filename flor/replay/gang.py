"""A job's gang of warm workers forked from one import (replay/job.py).

Each rank of a replayed job needs a warm worker (``worker.py``), and a warm worker's start is
mostly importing torch and its compiler: about 7 s of one core per rank here, 25-30 s of wall
time at a load of 20, over half of an epoch-level replay of a short job when every rank pays it.
So a gang is started as one process, the *leader*, which imports once and then forks the other
``world_size - 1`` workers (``worker.serve``'s siblings) before it serves rank tasks itself.
Each worker, leader or sibling, is then the same warm server as any other: it forks a fresh
process per task, which takes its rank's identity and rendezvous from its spec
(``WorkerSpec.environ``) and sets its own working directory, confinement and recorded numeric
settings (``worker.main``). Nothing of a rank is decided at the fork.

Why the fork is safe: the leader forks right after its imports, where every warm worker already
forks its tasks, and before anything runs: importing torch (and its compiler) starts no thread;
its intra-op pool and gloo's state start on first use, in a task's process. The one other thread
a worker may have then is OpenBLAS's pool, started by importing numpy when the thread variables
allow more than one thread, and OpenBLAS stops it at a fork (its ``pthread_atfork`` handler). ``torch.multiprocessing``'s forkserver context was
the maintained alternative; it hands its children only pickled callables and fds over a socket,
not the three pipes per worker that the executor reads, and its server does not import torch
for its children unless told (``set_forkserver_preload``), so it would add a process and a
protocol for the same single fork.

The driver made every sibling's pipes (its stdin, its channel, its stderr, and a pipe on which it
writes its pid once) and passed them to the leader; a sibling is the driver's grandchild, so
:class:`Sibling` stands in for a ``Popen`` where the executor asks for one: liveness from
``/proc``, a kill by pid (or of the leader, whose death takes every sibling with it:
``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from ..environment import settings
from .executor import LocalProcessExecutor, _signature, _Worker

SIBLINGS_FLAG = "--siblings"  # worker.py's argument: "IN,OUT,ERR,PID;..." one group of fds per sibling
THEN_FLAG = "--then-preload"  # worker.py's argument: a leader reads one line, what else to import, before forking


class Sibling:
    """A worker forked by a gang's leader, as far as the executor asks a ``Popen``: ``stdin``,
    ``stdout``, ``stderr``, :meth:`poll`, :meth:`kill`, :meth:`wait`."""

    def __init__(self, leader: subprocess.Popen, stdin: int, stdout: int, stderr: int, pid_pipe: int) -> None:
        self.leader = leader
        self.stdin = os.fdopen(stdin, "wb")
        self.stdout = os.fdopen(stdout, "rb")
        self.stderr = os.fdopen(stderr, "rb")
        self._pid_pipe: int | None = pid_pipe
        self._pid_text = b""
        self.pid: int | None = None
        self.returncode: int | None = None

    def _learn_pid(self) -> None:
        """Read the pid the sibling wrote, if it has (never blocks)."""
        while self._pid_pipe is not None and select.select([self._pid_pipe], [], [], 0)[0]:
            chunk = os.read(self._pid_pipe, 64)
            if chunk:
                self._pid_text += chunk
                continue
            os.close(self._pid_pipe)  # written and closed, or the sibling never came to be
            self._pid_pipe = None
            text = self._pid_text.decode().strip()
            if text.isdigit():
                self.pid = int(text)
            else:
                self.returncode = -signal.SIGKILL

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.leader.poll() is not None:
            self.returncode = -signal.SIGKILL  # its death took the sibling (PR_SET_PDEATHSIG)
            return self.returncode
        self._learn_pid()
        if self.pid is not None and _gone(self.pid):
            # The leader does not reap its siblings: a zombie is a sibling that ended. It ends
            # only when killed or when its stdin closes; its code is not ours to read.
            self.returncode = -signal.SIGKILL
        return self.returncode

    def kill(self) -> None:
        if self.poll() is not None:
            return  # ended (with its leader, perhaps, and reaped): its old pid may be another process now
        if self.pid is not None and self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.pid is None and self.returncode is None:
            self.leader.kill()  # not forked yet, or its pid not yet written: the gang goes with the leader

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("flor.replay.worker (sibling)", timeout)
            time.sleep(0.02)
        # Its stdout and stderr are left to their readers (the executor's threads), as Popen does.
        if self._pid_pipe is not None:
            os.close(self._pid_pipe)
            self._pid_pipe = None
        return self.returncode


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return True
    return text[text.rindex(b")") + 2:][:1] in (b"Z", b"X")


class GangExecutor(LocalProcessExecutor):
    """The workers of one gang: ``world_size`` slots, started together as a leader and its
    forked siblings (the module docstring); otherwise the local executor, with the gang's rule
    that when one rank fails the others are stopped, and workers kept between segments."""

    def __init__(self, world_size: int, gpus: list | None, preload: list[str], confinement: str) -> None:
        super().__init__(world_size, gpus, preload, confinement)
        self.gang = True
        self.forked = sys.platform == "linux" and not self.gpus  # one device per slot: its own process
        self.leaders = 0  # leaders started (each one import of the gang's libraries)
        # What the leader imports besides once the replay is planned (Gangs.settle): None until
        # then. The compiler only when a segment re-executes optimizer steps, which import it.
        self.then: list[str] | None = None
        self._waiting = None  # the leader that still waits for that line

    def warm_up(self, count: int | None = None, env: dict | None = None) -> None:
        if not self.forked:
            return super().warm_up(count, env)
        if not self._complete(_signature(env or {}), 0):
            self._start_gang(env or {})

    def _complete(self, signature: tuple, first: int) -> bool:
        """Whether slots ``first``.. each have a live idle worker started with ``signature``."""
        return all(any(w.signature == signature and w.process.poll() is None for w in self._idle.get(slot, []))
                   for slot in range(first, self.workers))

    def settle(self, modules: list[str]) -> None:
        """Tell the (next) leader what to import besides before it forks its siblings."""
        self.then = list(modules)
        self._tell()

    def _tell(self) -> None:
        leader, self._waiting = self._waiting, None
        if leader is None or self.then is None:
            self._waiting = leader
            return
        try:
            leader.stdin.write((",".join(self.then) + "\n").encode())
            leader.stdin.flush()
        except OSError:
            pass  # it died while importing: the executor finds it gone and starts the gang again

    def _take(self, slot: int, task):
        if self.forked and self.then is None:
            self.settle([])  # a task before the plan said (an execution without Gangs.settle): nothing more
        # The executor fills slots 0, 1, ... in order: at slot 0, a gang missing a worker (one
        # was stopped with a failed segment, or started with another environment) is started
        # again, whole; a later slot that lacks one gets a worker of its own (the base rule).
        if self.forked and slot == 0 and not self._complete(_signature(task.env), 0):
            self._start_gang(task.env)
        return super()._take(slot, task)

    def _start_gang(self, overrides: dict) -> None:
        self.close()  # what is left of a gang: stopped, so that no slot keeps a worker of the old one
        groups, theirs, ours = [], [], []
        for _ in range(self.workers - 1):
            stdin, stdout, stderr, pid = os.pipe(), os.pipe(), os.pipe(), os.pipe()
            theirs.append((stdin[0], stdout[1], stderr[1], pid[1]))
            ours.append((stdin[1], stdout[0], stderr[0], pid[0]))
        for fds in theirs:
            groups.append(",".join(map(str, fds)))
        env = {**self._env(0, overrides), **settings.worker_launched_env(time.time())}
        command = [sys.executable, "-m", "flor.replay.worker", "--wait", THEN_FLAG]
        if groups:
            command += [SIBLINGS_FLAG, ";".join(groups)]
        try:
            leader = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, pass_fds=[fd for fds in theirs for fd in fds])
        finally:
            for fds in theirs:  # the leader holds them now; the driver keeps its own ends only
                for fd in fds:
                    os.close(fd)
        self.leaders += 1
        self._waiting = leader
        self._tell()  # at once when the plan has said already (a gang started again)
        signature = _signature(overrides)
        self._idle.setdefault(0, []).append(_Worker(leader, signature))
        for slot, fds in enumerate(ours, start=1):
            self._idle.setdefault(slot, []).append(_Worker(Sibling(leader, *fds), signature))

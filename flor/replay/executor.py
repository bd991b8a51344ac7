"""Executors: where replay segments run. The local one starts worker processes on this machine.

A local worker is a small server: it imports the script's libraries once, then forks a fresh
process for each task it is given (see ``worker.py``), so one worker serves every run of a replay
(any code version: nothing of the project is imported before the fork) without paying the
interpreter's start and ``import torch`` again. It reports ``{"kind": "exited", "code": N}`` when
a task's process has ended.

An executor takes :class:`Task` objects (a spec file each) and returns :class:`Outcome` objects;
a cluster engine can plug in behind the same interface. While tasks run, what their workers send
(values to store, progress) reaches the caller through ``on_message(key, message)``, in the
caller's thread: the driver, not the worker, writes the store.

The local executor starts workers with the interpreter flor runs under (``sys.executable``), with
each task's environment (the thread-pool variables the run was recorded with) and, with ``gpus``,
one device each (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..environment import settings
from .channel import decode

# How long to wait for the last messages of a worker that has exited (a child it forked may
# hold the pipe open a little longer).
DRAIN_S = 10.0


@dataclass
class Task:
    """One segment of one run, ready to execute."""

    key: str
    spec_path: Path
    iterations: int
    seconds: float
    log_path: Path | None = None
    env: dict[str, str | None] = field(default_factory=dict)  # variables to set (None: unset)


@dataclass
class Outcome:
    """What a task produced: its worker's result message."""

    task: Task
    ok: bool
    result: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


class Executor(Protocol):
    """Runs replay tasks; ``on_message(key, message)`` receives what their workers send."""

    def run(self, tasks: list[Task], on_message: Callable[[str, dict], None]) -> list[Outcome]: ...


class _Worker:
    """A worker process, the reader of its channel, and the copier of its output to its task's log.

    The worker writes no file itself: in a private, read-only view of the file system it could
    not, and a file it held open for writing would keep that view from being made read-only."""

    def __init__(self, process: subprocess.Popen, signature: tuple) -> None:
        self.process = process
        self.signature = signature
        self.task: Task | None = None
        self.started = 0.0
        self.exited_at: float | None = None
        self.eof = False
        self.result: dict | None = None
        self.finished: int | None = None  # the exit code of the task's process, once it ended
        self.reading = False
        self._log = None  # the task's log file, once it has a task; output before that is dropped
        self._log_lock = threading.Lock()
        threading.Thread(target=self._copy_output, daemon=True).start()

    def _copy_output(self) -> None:
        for chunk in iter(lambda: self.process.stderr.read1(65536), b""):
            with self._log_lock:
                if self._log is not None:
                    self._log.write(chunk)
                    self._log.flush()
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_to(self, path: Path | None) -> None:
        """Send the worker's output from now on to ``path`` (None: drop it)."""
        with self._log_lock:
            if self._log is not None:
                self._log.close()
            self._log = open(path, "ab") if path is not None else None


class LocalProcessExecutor:
    """Worker processes on this machine, at most ``workers`` at a time.

    Starting a worker is mostly importing what the script imports (torch alone takes over a
    second here). So workers are started *warm*: a process imports ``preload`` (the third-party
    modules at the top of the script) and then waits for its spec on stdin. :meth:`warm_up` starts
    them while the caller is still planning, and while every slot is busy one spare warms up on a
    free core for the next task. A warm worker serves a task only when it was started with that
    task's environment.
    """

    def __init__(self, workers: int = 1, gpus: list[str] | None = None, preload: list[str] | None = None,
                 confinement: str = "copy") -> None:
        self.workers = max(1, workers)
        self.gpus = list(gpus or [])
        if self.gpus:
            self.workers = min(self.workers, len(self.gpus)) if workers > 1 else len(self.gpus)
        self.preload = list(preload or [])
        self.confinement = confinement
        # The ranks of a distributed job (replay/job.py): when one fails, the others would wait in a
        # collective for it, so they are stopped at once; and its warm workers are kept between
        # runs (segments, attempts) until :meth:`close`, since importing torch is most of a start.
        self.gang = False
        self._idle: dict[int | None, list[_Worker]] = {}  # warm workers by slot (None: any)
        self._messages: queue.Queue = queue.Queue()

    def _env(self, slot: int | None, overrides: dict[str, str | None]) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        if self.gpus and slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(settings.worker_env(self.preload, self.confinement))
        return env

    def _start(self, slot: int | None, overrides: dict, idle: bool = True) -> _Worker:
        env = {**self._env(slot, overrides), **settings.worker_launched_env(time.time())}
        process = subprocess.Popen(
            [sys.executable, "-m", "flor.replay.worker", "--wait"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        worker = _Worker(process, _signature(overrides))
        if idle:
            self._idle.setdefault(slot, []).append(worker)
        return worker

    def warm_up(self, count: int | None = None, env: dict | None = None) -> None:
        """Start up to ``count`` (default: ``workers``) warm workers now, one per slot, with ``env``."""
        for slot in range(min(self.workers, self.workers if count is None else count)):
            if not self._idle.get(slot):
                self._start(slot, env or {})

    def _take(self, slot: int, task: Task) -> _Worker:
        """A live warm worker for ``slot`` started with the task's environment, or a new one."""
        wanted = _signature(task.env)
        for key in (slot, None):
            pool = self._idle.get(key, [])
            for worker in list(pool):
                if worker.process.poll() is not None:
                    pool.remove(worker)
                elif worker.signature == wanted:
                    pool.remove(worker)
                    return worker
        return self._start(slot, task.env, idle=False)

    def _give(self, worker: _Worker, task: Task) -> bool:
        worker.log_to(task.log_path)
        line = f"{task.spec_path}\n"
        try:
            worker.process.stdin.write(line.encode())
            worker.process.stdin.flush()
        except OSError:  # it died while warming up
            return False
        worker.task, worker.started = task, time.monotonic()
        worker.result = worker.finished = None
        if not worker.reading:
            worker.reading = True
            threading.Thread(target=self._read, args=(worker,), daemon=True).start()
        return True

    def _read(self, worker: _Worker) -> None:
        for line in worker.process.stdout:
            message = decode(line)
            if message is not None:
                self._messages.put((worker, message))
        self._messages.put((worker, None))

    def close(self) -> None:
        """Stop the warm workers that got no task. They have only imported modules, so they are
        killed rather than waited for (a replay with nothing to do must not wait for torch)."""
        for pool in self._idle.values():
            for worker in pool:
                try:
                    worker.process.stdin.close()
                except OSError:
                    pass
                if worker.process.poll() is None:
                    worker.process.kill()
                worker.process.wait()
        self._idle.clear()

    def run(self, tasks, on_message):
        pending = sorted(tasks, key=lambda t: -t.seconds)  # longest first keeps workers busy
        running: dict[int, _Worker] = {}
        free_slots = list(range(self.workers))
        outcomes: list[Outcome] = []
        # A spare may warm up on a core that the busy workers leave free (not with GPUs: its
        # device is not known until it gets a slot).
        spare_ok = not self.gpus and self.workers < (os.cpu_count() or 1)
        try:
            while pending or running:
                while pending and free_slots:
                    task = pending.pop(0)
                    slot = free_slots.pop(0)
                    worker = self._take(slot, task)
                    if not self._give(worker, task):
                        worker = self._start(slot, task.env, idle=False)
                        self._give(worker, task)
                    running[slot] = worker
                if pending and spare_ok and not any(w.process.poll() is None for w in self._idle.get(None, [])):
                    self._start(None, pending[0].env)
                self._pump(on_message, 0.1)
                now = time.monotonic()
                for slot, worker in list(running.items()):
                    if worker.finished is not None:  # the task's process ended; the worker serves on
                        del running[slot]
                        free_slots.append(slot)
                        outcomes.append(_outcome(worker, worker.finished, now - worker.started))
                        self._stop_gang(outcomes[-1], running)
                        worker.log_to(None)
                        worker.task = None
                        self._idle.setdefault(slot, []).append(worker)
                        continue
                    code = worker.process.poll()
                    if code is None:
                        continue
                    if worker.exited_at is None:
                        worker.exited_at = now
                    if not worker.eof and now - worker.exited_at < DRAIN_S:
                        continue  # its last messages may still be in the pipe
                    del running[slot]
                    free_slots.append(slot)
                    outcomes.append(_outcome(worker, code, now - worker.started))
                    self._stop_gang(outcomes[-1], running)
        finally:
            for worker in running.values():
                worker.process.kill()
            if not self.gang:
                self.close()
        return outcomes

    def _stop_gang(self, outcome: Outcome, running: dict) -> None:
        if self.gang and not outcome.ok:
            for worker in running.values():
                if worker.process.poll() is None:
                    worker.process.kill()  # its task's process dies with it (lifetime.py)

    def _pump(self, on_message, timeout: float) -> None:
        """Hand the messages that arrived to ``on_message``, waiting up to ``timeout`` for the first."""
        try:
            worker, message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if message is None:
                worker.eof = True
            elif message.get("kind") == "result":
                worker.result = message
            elif message.get("kind") == "exited":
                worker.finished = int(message.get("code", 1))
            elif worker.task is not None:
                on_message(worker.task.key, message)
            try:
                worker, message = self._messages.get_nowait()
            except queue.Empty:
                return


def _signature(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items()))


def _outcome(worker: _Worker, code: int, seconds: float) -> Outcome:
    task, result = worker.task, worker.result or {}
    if code == 0 and result.get("ok"):
        return Outcome(task, True, result, None, seconds)
    error = result.get("error")
    if not error:
        if code < 0:
            error = f"the worker was killed by signal {-code}"
        else:
            error = f"the worker exited with status {code}"
        tail = _log_tail(task.log_path)
        if tail:
            error += f": {tail}"
    return Outcome(task, False, result, error, seconds)


def _log_tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""

"""Executors: where replay segments run. The local one starts worker processes on this machine.

An executor takes :class:`Task` objects (a spec file each) and returns :class:`Outcome` objects;
a cluster engine can plug in behind the same interface. The local executor starts workers with
the interpreter flor runs under (``sys.executable``), gives each its share of the CPU threads
(``OMP_NUM_THREADS`` and friends) and, with ``gpus``, one device each (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class Task:
    """One segment of one run, ready to execute."""

    key: str
    spec_path: Path
    result_path: Path
    progress_path: Path
    iterations: int
    seconds: float
    log_path: Path | None = None


@dataclass
class Outcome:
    """What a task produced."""

    task: Task
    ok: bool
    result: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


class Executor(Protocol):
    """Runs replay tasks; ``on_progress(key, done)`` is called as iterations finish."""

    def run(self, tasks: list[Task], on_progress: Callable[[str, int], None]) -> list[Outcome]: ...


class LocalProcessExecutor:
    """Worker processes on this machine, at most ``workers`` at a time.

    Starting a worker is mostly importing what the script imports (torch alone takes over a
    second here). So workers are started *warm*: a process imports ``preload`` (the third-party
    modules at the top of the script) and then waits for its spec on stdin. :meth:`warm_up` starts
    them while the caller is still planning, and while every slot is busy one spare warms up on a
    free core for the next task.
    """

    def __init__(self, workers: int = 1, gpus: list[str] | None = None, preload: list[str] | None = None) -> None:
        self.workers = max(1, workers)
        self.gpus = list(gpus or [])
        if self.gpus:
            self.workers = min(self.workers, len(self.gpus)) if workers > 1 else len(self.gpus)
        self.preload = list(preload or [])
        self._idle: dict[int | None, list[subprocess.Popen]] = {}  # warm processes by slot (None: any)
        self._changed = threading.Event()

    def _env(self, slot: int | None) -> dict[str, str]:
        env = dict(os.environ)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        for name in _THREAD_VARIABLES:
            # Never more threads than the user allowed (the recording likely ran with as many).
            try:
                allowed = int(env.get(name, "") or threads)
            except ValueError:
                allowed = threads
            env[name] = str(max(1, min(threads, allowed)))
        if self.gpus and slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["FLOR_REPLAY_PRELOAD"] = ",".join(self.preload)
        return env

    def _start_warm(self, slot: int | None, idle: bool = True) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "flor.replay.worker", "--wait"],
            env=self._env(slot), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if idle:
            self._idle.setdefault(slot, []).append(process)
        return process

    def warm_up(self, count: int | None = None) -> None:
        """Start up to ``count`` (default: ``workers``) warm workers now, one per slot."""
        for slot in range(min(self.workers, self.workers if count is None else count)):
            if not self._idle.get(slot):
                self._start_warm(slot)

    def _take_warm(self, slot: int) -> subprocess.Popen:
        """A live warm worker for ``slot`` (its own, else the spare), or a new one."""
        for key in (slot, None):
            queue = self._idle.get(key, [])
            while queue:
                process = queue.pop(0)
                if process.poll() is None:
                    return process
        return self._start_warm(slot, idle=False)

    def _give(self, process: subprocess.Popen, task: Task) -> bool:
        line = f"{task.spec_path}\t{task.log_path or os.devnull}\n"
        try:
            process.stdin.write(line.encode())
            process.stdin.close()
        except OSError:  # it died while warming up
            return False

        def watch() -> None:
            process.wait()
            self._changed.set()

        threading.Thread(target=watch, daemon=True).start()
        return True

    def close(self) -> None:
        """Stop the warm workers that got no task. They have only imported modules, so they are
        killed rather than waited for (a replay with nothing to do must not wait for torch)."""
        for queue in self._idle.values():
            for process in queue:
                try:
                    process.stdin.close()
                except OSError:
                    pass
                if process.poll() is None:
                    process.kill()
                process.wait()
        self._idle.clear()

    def run(self, tasks, on_progress):
        pending = sorted(tasks, key=lambda t: -t.seconds)  # longest first keeps workers busy
        running: dict[int, tuple] = {}
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
                    process = self._take_warm(slot)
                    if not self._give(process, task):
                        process = self._take_warm(slot)
                        self._give(process, task)
                    running[slot] = (task, process, time.monotonic())
                if pending and spare_ok and not any(p.poll() is None for p in self._idle.get(None, [])):
                    self._start_warm(None)
                self._changed.wait(0.1)
                self._changed.clear()
                for slot, (task, process, started) in list(running.items()):
                    on_progress(task.key, _read_done(task.progress_path))
                    code = process.poll()
                    if code is None:
                        continue
                    del running[slot]
                    free_slots.append(slot)
                    outcomes.append(_outcome(task, code, time.monotonic() - started))
                    on_progress(task.key, _read_done(task.progress_path))
        finally:
            for _task, process, _started in running.values():
                process.kill()
            self.close()
        return outcomes


def _read_done(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _outcome(task: Task, code: int, seconds: float) -> Outcome:
    try:
        result = json.loads(task.result_path.read_text())
    except (OSError, ValueError):
        result = {}
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

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
    """Worker processes on this machine, at most ``workers`` at a time."""

    def __init__(self, workers: int = 1, gpus: list[str] | None = None) -> None:
        self.workers = max(1, workers)
        self.gpus = list(gpus or [])
        if self.gpus:
            self.workers = min(self.workers, len(self.gpus)) if workers > 1 else len(self.gpus)

    def _env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        for name in _THREAD_VARIABLES:
            # Never more threads than the user allowed (the recording likely ran with as many).
            try:
                allowed = int(env.get(name, "") or threads)
            except ValueError:
                allowed = threads
            env[name] = str(max(1, min(threads, allowed)))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def run(self, tasks, on_progress):
        pending = sorted(tasks, key=lambda t: -t.seconds)  # longest first keeps workers busy
        running: dict[int, tuple] = {}
        free_slots = list(range(self.workers))
        outcomes: list[Outcome] = []
        while pending or running:
            while pending and free_slots:
                task = pending.pop(0)
                slot = free_slots.pop(0)
                log = open(task.log_path, "wb") if task.log_path else subprocess.DEVNULL
                process = subprocess.Popen(
                    [sys.executable, "-m", "flor.replay.worker", str(task.spec_path)],
                    env=self._env(slot), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
                running[slot] = (task, process, time.monotonic(), log)
            time.sleep(0.1)
            for slot, (task, process, started, log) in list(running.items()):
                on_progress(task.key, _read_done(task.progress_path))
                code = process.poll()
                if code is None:
                    continue
                if log is not subprocess.DEVNULL:
                    log.close()
                del running[slot]
                free_slots.append(slot)
                outcomes.append(_outcome(task, code, time.monotonic() - started))
                on_progress(task.key, _read_done(task.progress_path))
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

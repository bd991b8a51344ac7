"""Resuming a killed (or failed) run from its last durable checkpoint, as a new run.

The run's script is started again from the working tree with the run's command line, in the
run's working directory; it restores the checkpoint at the outer loop and records a new run that
names the first as the one it continues (``resumed_from``). The script must be the version the run
recorded: flor refuses when it changed, since the checkpoint belongs to that code.

A distributed job (flor/recording/job.py) is relaunched whole: one process per rank on this machine, each
with torchrun's environment for its recorded rank and a fresh rendezvous on loopback, each
restoring its own checkpoint at the last outer iteration that *every* rank checkpointed (ranks
checkpoint in step, so that is where the slowest rank's last one is). The new processes form a new
job whose rank runs continue the old ones rank by rank; when one rank fails the others are stopped
(they would wait in a collective), as torchrun does.

>>> resume("2026-11-26T15:04")          # doctest: +SKIP
0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..environment import settings
from ..checkpoints.handoff import await_writers
from ..errors import UsageError
from ..integrations.driven import FRAMEWORK_KEY
from ..messages import say
from ..store.project import project_store
from ..environment.vcs import Repo

STOP_GRACE_S = 20.0  # how long the other ranks of a failed rank get to end after SIGTERM


def resume(run: str, *, start: Path | None = None) -> int:
    """Continue run ``run`` (a tstamp prefix; a job's tstamp resumes every rank) from its last
    checkpoint; returns the script's exit status (a job's: the first rank's that failed, else 0).

    >>> resume("2026-11-26T15:04")      # doctest: +SKIP
    """
    store = project_store(start, readonly=False)
    try:
        store.reap_killed()
        from .job import find_job, split_tstamp

        job = find_job(store, run)
        row = None if job is not None else store.find_run(run)
        if job is None and split_tstamp(row.tstamp)[1] is not None:
            name = split_tstamp(row.tstamp)[0]
            raise UsageError(f"run {row.tstamp} is one rank of the distributed job {name}: a job resumes whole; "
                             f"run `flor resume {name}`")
        if job is not None:
            ranks = _job_ranks(store, job)
        else:
            await_writers(store.paths.flor_dir, row.run_id, say=say)
            checkpoints = store.checkpoints(row.run_id)
    finally:
        store.close()
    root = store.paths.root
    if job is not None:
        return _resume_job(root, job, ranks)
    if row.status == "running":
        raise UsageError(f"run {row.tstamp} is still running")
    from .notebook import is_notebook

    if is_notebook(row.filename):  # no script to start: its kernel ran cells
        raise UsageError(f"run {row.tstamp} ran in the notebook {row.filename}, which `flor resume` cannot restart; "
                         "run its cells again in Jupyter")
    checkpoints = _resumable(row, checkpoints)
    if not checkpoints:
        raise UsageError(f"run {row.tstamp} has no checkpoint to resume from")
    last = max(checkpoints, key=lambda c: (c.iteration, c.point == "end"))
    script = _script(root, row)
    env = dict(os.environ)
    env.update(settings.resume_env(row.run_id, _described(last)))
    cwd = root / row.cwd if not os.path.isabs(row.cwd) else root
    say(f"resuming {row.tstamp} from iteration {last.iteration} ({last.point})")
    argv = list(row.argv) or [row.filename]
    return subprocess.run([sys.executable, str(script), *argv[1:]], cwd=cwd, env=env).returncode


def _resumable(row, checkpoints: list) -> list:
    """The checkpoints of ``row`` a resume may start from (all, but for a framework's run only where
    an epoch's batches ended); refuses a framework run that cannot resume at all."""
    framework = row.environment.get(FRAMEWORK_KEY)
    if not framework:
        return list(checkpoints)
    # A framework's Trainer restarts its epoch loop at the checkpoint's epoch, where the
    # epoch's training batches ended (its own progress restored), and nowhere else.
    unsupported = row.environment.get("framework_memo")
    if unsupported:
        raise UsageError(f"run {row.tstamp} cannot be resumed: {unsupported}; rerun the script instead")
    kept = [c for c in checkpoints if c.point != "end"]
    if not kept:
        raise UsageError(f"run {row.tstamp} has no checkpoint where a {framework} epoch's batches end; "
                         "rerun the script instead")
    return kept


def _described(checkpoint) -> dict:
    return {"iteration": checkpoint.iteration, "point": checkpoint.point, "location": checkpoint.location,
            "pickled": checkpoint.pickled, "sha256": checkpoint.sha256}


def _script(root: Path, row) -> Path:
    """The run's script in the working tree, refused when it is not the version the run recorded."""
    script = root / row.filename
    if row.code_commit:
        recorded = Repo(root).read_file(row.code_commit, row.filename)
        if not script.is_file() or script.read_text() != recorded:
            raise UsageError(
                f"{row.filename} changed since run {row.tstamp}; restore its version first "
                f"(git show {row.code_commit[:10]}:{row.filename} > {row.filename})"
            )
    return script


def _job_ranks(store, job) -> list[tuple]:
    """(rank, local rank, run row, checkpoints) of every rank of ``job``, rank order; refuses in
    one line a job that cannot be relaunched whole from this store."""
    if job.status == "running":
        raise UsageError(f"job {job.tstamp} is still running")
    held = sorted(r.rank for r in job.ranks)
    if held != list(range(job.world_size)):
        missing = sorted(set(range(job.world_size)) - set(held))
        raise UsageError(f"job {job.tstamp} has {job.world_size} ranks and this store holds {len(held)} (rank(s) "
                         f"{', '.join(map(str, missing))} recorded on another node or never reached the store): "
                         "flor resume relaunches a job on one machine with every rank; relaunch it with its launcher")
    ranks = []
    for member in sorted(job.ranks, key=lambda r: r.rank):
        await_writers(store.paths.flor_dir, member.run_id, say=say)
        ranks.append((member.rank, member.local_rank, store.run(member.run_id), store.checkpoints(member.run_id)))
    return ranks


def _resume_job(root: Path, job, ranks: list[tuple]) -> int:
    """Relaunch every rank of ``job`` from the last checkpoint all of them have (see the module
    docstring); the exit status of the first rank that failed, else 0."""
    from .job import loopback_port, rank_environment

    usable = [{(c.iteration, c.point): c for c in _resumable(row, checkpoints)} for _r, _l, row, checkpoints in ranks]
    shared = set(usable[0]).intersection(*usable[1:])
    if not shared:
        raise UsageError(f"job {job.tstamp} has no checkpoint that every rank has (each rank's last: "
                         + ", ".join(f"rank {rank} " + (f"{max(u)[0]}" if u else "none")
                                     for (rank, *_rest), u in zip(ranks, usable))
                         + "); rerun the script instead")
    point = max(shared, key=lambda p: (p[0], p[1] == "end"))
    first = ranks[0][2]
    script = _script(root, first)
    port = loopback_port()
    say(f"resuming job {job.tstamp} ({job.world_size} ranks) from iteration {point[0]} ({point[1]}), "
        "the last checkpoint every rank has")
    processes = []
    try:
        for rank, local, row, _checkpoints in ranks:
            env = dict(os.environ)
            env.update(rank_environment(rank, local, job.world_size, port, f"flor-resume-{job.tstamp}"))
            env.update(settings.resume_env(row.run_id, _described(usable[rank][point])))
            cwd = root / row.cwd if not os.path.isabs(row.cwd) else root
            argv = list(row.argv) or [row.filename]
            processes.append(subprocess.Popen([sys.executable, str(script), *argv[1:]], cwd=cwd, env=env))
        return _wait_all(processes)
    finally:
        _stop(processes)


def _wait_all(processes: list) -> int:
    """Wait for every rank; when one fails, stop the others (they would wait for it in a
    collective). The first failure's exit status, else 0."""
    failed = None
    while True:
        codes = [p.poll() for p in processes]
        if failed is None:
            failed = next((c for c in codes if c not in (None, 0)), None)
            if failed is not None:
                _stop(processes)
        if all(c is not None for c in codes):
            return failed if failed is not None else 0
        time.sleep(0.2)


def _stop(processes: list) -> None:
    """SIGTERM the ranks still running (flor marks their runs killed), then SIGKILL after a grace."""
    alive = [p for p in processes if p.poll() is None]
    for process in alive:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in alive:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

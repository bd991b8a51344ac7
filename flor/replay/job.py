"""Replaying a distributed job (flor/recording/job.py) as a unit.

A job's ranks are planned as runs of their own (each has its own values, checkpoints and random
state), then tied together here:

- **Planning.** Every rank of the job must be selected and planned (a job is replayed whole or
  not at all), and every rank follows one plan: the same segments, so that a segment starts on
  every rank at the same checkpoint (recording checkpoints every rank in step). A rank whose own
  plan found nothing to store (a statement in a rank-0-only branch) still runs, to take part in
  the collectives, with the plan of the others.
- **Execution.** Each segment runs as a gang: ``world_size`` worker processes at once, each with
  its recorded ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` and a fresh rendezvous on loopback
  (``MASTER_ADDR=127.0.0.1``, a free port, ``GLOO_SOCKET_IFNAME=lo``), restoring its own
  checkpoint; the collectives in the replayed code run for real. What the ranks send is held
  until every rank's worker succeeded: a segment where one rank fails stores nothing from any
  rank, its other ranks are stopped at once (they would wait in a collective), and the whole
  segment is tried again once with a fresh rendezvous.
- **Warm gangs.** A job's workers are started while the replay still plans (:class:`Gangs`),
  each importing the script's libraries (``torch.distributed`` with torch), and torch's compiler
  only when the plan re-executes iterations (:meth:`Gangs.settle`: an optimizer step imports it;
  DDP's constructor is answered without it, lazy_dynamo.defer_ddp_probe). The gang serves every segment and attempt of
  the job (the worker forks a fresh process per task); a rank's identity and its segment's
  rendezvous reach that process in its spec (``WorkerSpec.environ``), not the worker's start
  environment.
- Re-execution of drifted iterations (execution.py's retries) is not done for jobs: their drift
  is reported as it came out.

With ``--executor ray`` a segment's gang is a placement group of ``world_size`` rank tasks on one
node (``ray_executor.RayGang``), a new one for each segment and attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..messages import say
from .ray_executor import NODE_PORT, STOPPED, peer_gone  # (no import of Ray)

ATTEMPTS = 2  # a segment that fails on some rank is tried once more, whole
# Imported by a job's warm workers besides the script's libraries, when those include torch. Not
# the compiler: DDP's constructor reads one setting of it (torch._dynamo.utils), which the worker
# answers without importing it (lazy_dynamo.defer_ddp_probe: 1-2 s of one core per gang here).
JOB_PRELOAD = ("torch.distributed", "torch.nn.parallel")
COMPILER = "torch._dynamo"  # imported by a gang's leader only when a segment re-executes steps (Gangs.settle)


@dataclass
class JobReplay:
    """One job in a replay: its ranks' plans, rank by rank."""

    job_id: int
    tstamp: str
    world_size: int
    items: list = field(default_factory=list)  # RunReplay of rank 0, 1, ...
    local_ranks: list = field(default_factory=list)




def _symptom(error: str | None) -> int:
    """0 for a rank's own error; higher for one that follows from another rank's failure, so the
    report names the rank where the segment really failed, whichever outcome arrived first."""
    error = error or ""
    if STOPPED in error:
        return 3
    if "signal 9" in error:
        return 2
    return 1 if peer_gone(error) else 0


def plan_jobs(session, plans: list) -> dict[int, JobReplay]:
    """Tie the plans of each selected job's ranks together; run_id -> its JobReplay (for
    planned jobs only). Refuses, in one line on every rank, a job that cannot replay whole."""
    from .planner import refuse  # plans are the planner's to replace (not at import: workers import this module)

    of_run = session.store.job_of_runs()
    groups: dict[int, list] = {}
    for item in plans:
        member = of_run.get(item.run.run_id)
        if member is not None:
            groups.setdefault(member[0], []).append((member[2], item))
    planned: dict[int, JobReplay] = {}
    for job_id, members in groups.items():
        row = session.store.job(job_id)
        members.sort(key=lambda m: m[0])
        ranks, items = [m[0] for m in members], [m[1] for m in members]
        local = {r.rank: r.local_rank for r in row.ranks}
        job = JobReplay(job_id, row.tstamp, row.world_size, items, [local.get(r) for r in ranks])
        reason = _refusal(session, job, ranks)
        if reason is None and all(i.status == "skipped" for i in items):
            continue  # every rank holds the values already
        if reason is None:
            reason = _align(job)
        if reason is not None:
            for item in items:
                refuse(item, reason)
            continue
        for item in items:
            planned[item.run.run_id] = job
    return planned


def _refusal(session, job: JobReplay, ranks: list[int]) -> str | None:
    missing = [r for r in range(job.world_size) if r not in ranks]
    if missing:
        return (f"job {job.tstamp} replays as a whole, and rank(s) {', '.join(map(str, missing))} are not selected "
                f"or not recorded here: select the job with --runs {job.tstamp}")
    for rank, item in enumerate(job.items):
        if item.status in ("refused", "failed"):
            return f"rank {rank} of job {job.tstamp}: {item.reason}"
    return None


def _align(job: JobReplay) -> str | None:
    """Give every rank the plan of the first planned rank; None, or why the ranks cannot share one."""
    from .planner import follow

    leader = next(item for item in job.items if item.status == "planned")
    points = {i: sorted(points) for i, points in leader.checkpoints.items()}
    for rank, item in enumerate(job.items):
        if item is leader:
            continue
        theirs = {i: sorted(p) for i, p in item.checkpoints.items()}
        if theirs != points:
            return (f"job {job.tstamp}: rank {rank} checkpointed at other iterations than rank "
                    f"{job.items.index(leader)} (recorded before checkpoints were kept in step), so no segment "
                    "can start on every rank at once")
        if item.records is None or item.outer_name != leader.outer_name:
            return f"job {job.tstamp}: rank {rank} could not be planned like the others ({item.reason or 'no plan'})"
        # The leader's segments on every rank; a skipped rank (a rank-0-only branch) still runs, for the collectives.
        follow(item, leader)
    return None


def describe(jobs: dict[int, JobReplay], cores: int) -> list[str]:
    """--dry-run lines: each job's world size, processes per segment, and what the cores allow."""
    lines = []
    for job in {id(j): j for j in jobs.values()}.values():
        segments = len(job.items[0].segments)
        line = (f"job {job.tstamp}: {job.world_size} ranks replayed together, {segments} segment(s) of "
                f"{job.world_size} processes each (gloo on loopback, a fresh rendezvous per segment)")
        if cores < job.world_size:
            line += (f"; this machine has {cores} core(s) for {job.world_size} ranks: they share them, with the "
                     "recorded threads per rank kept, so values stay exact and only time grows")
        lines.append(line)
    return lines


def free_port() -> int:
    """A free TCP port on loopback for a segment's rendezvous."""
    from ..recording.job import loopback_port

    return loopback_port()


def rank_env(job: JobReplay, rank: int, port: int) -> dict[str, str]:
    """The launcher's environment of rank ``rank``, with a fresh rendezvous on loopback."""
    from ..recording.job import rank_environment

    return rank_environment(rank, job.local_ranks[rank], job.world_size, port, f"flor-replay-{job.tstamp}")


def job_preload(preload: list[str]) -> list[str]:
    """What a job's warm workers import: the script's libraries and, with torch, :data:`JOB_PRELOAD`."""
    if not any(name.split(".")[0] == "torch" for name in preload):
        return list(preload)
    return list(dict.fromkeys([*preload, *JOB_PRELOAD]))


class Gangs:
    """The warm workers of a replay's jobs: one gang of ``world_size`` workers per world size and
    thread environment, started early (:meth:`warm`), serving every segment and attempt of every
    job of that shape, stopped by :meth:`close`."""

    def __init__(self, gpus: list | None, preload: list[str], confinement: str) -> None:
        self.gpus, self.preload, self.confinement = gpus, job_preload(preload), confinement
        self._gangs: dict[tuple, object] = {}
        self.then: list[str] | None = None  # what the leaders import besides, once settled

    def get(self, world_size: int, env: dict[str, str]):
        """The gang for ``world_size`` ranks with thread environment ``env`` (made, not warmed, if new)."""
        from .executor import _signature
        from .gang import GangExecutor

        key = (world_size, _signature(env))
        gang = self._gangs.get(key)
        if gang is None:
            gang = GangExecutor(world_size, self.gpus, self.preload, self.confinement)
            if self.then is not None:
                gang.settle(self.then)
            self._gangs[key] = gang
        return gang

    def settle(self, jobs: dict[int, JobReplay]) -> None:
        """Once the jobs are planned: tell every gang's leader whether its ranks need torch's
        compiler, imported once by the leader before it forks. A re-executed optimizer step imports
        it (torch/optim/optimizer.py's ``_use_grad``); memoized epochs never do, and DDP's
        constructor is answered without it (lazy_dynamo.defer_ddp_probe)."""
        steps = any(action == "exec" for job in jobs.values() for item in job.items
                    for segment in item.segments for action in segment.actions.values())
        self.then = [COMPILER] if steps and any(n.split(".")[0] == "torch" for n in self.preload) else []
        for gang in self._gangs.values():
            gang.settle(self.then)

    def warm(self, world_size: int, env: dict[str, str]) -> None:
        """Start the gang's workers now, importing while the replay plans."""
        self.get(world_size, env).warm_up(world_size, env)

    def close(self) -> None:
        for gang in self._gangs.values():
            gang.close()
        self._gangs.clear()


def time_rendezvous(timings: dict) -> None:
    """In a rank's task process: count the time of ``torch.distributed.init_process_group`` (the
    segment's rendezvous, and the wait for the slowest rank) as ``rendezvous_s``."""
    import sys

    c10d = sys.modules.get("torch.distributed.distributed_c10d")
    dist = sys.modules.get("torch.distributed")
    if c10d is None or dist is None or getattr(dist.init_process_group, "_flor_timed", False):
        return
    original = dist.init_process_group

    def init_process_group(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings["rendezvous_s"] = timings.get("rendezvous_s", 0.0) + time.perf_counter() - began

    init_process_group._flor_timed = True
    init_process_group.__wrapped__ = original
    dist.init_process_group = c10d.init_process_group = init_process_group


def run_jobs(execution, states: list, jobs: dict[int, JobReplay], gangs: Gangs | None = None) -> None:
    """Run the segments of each job as gangs of its ranks (see the module docstring)."""
    settings = execution.settings
    own = gangs is None
    if own:
        gangs = Gangs(settings.gpus, settings.preload, settings.confinement)
    try:
        _run_jobs(execution, states, jobs, gangs)
    finally:
        if own:
            gangs.close()


def _run_jobs(execution, states: list, jobs: dict[int, JobReplay], gangs: Gangs) -> None:
    settings = execution.settings
    by_run = {state.item.run.run_id: state for state in states}
    done: set[int] = set()
    for job in jobs.values():
        if id(job) in done:
            continue
        done.add(id(job))
        ranked = [by_run.get(item.run.run_id) for item in job.items]
        if any(state is None for state in ranked):  # a rank's code version could not be laid out
            for item in job.items:
                item.outcome.fail(f"job {job.tstamp}: a rank's code version could not be laid out; nothing replayed")
            continue
        for number in range(len(ranked[0].segments)):
            for attempt in range(1, ATTEMPTS + 1):
                ray_gang = getattr(execution.executor, "gang_of", None)  # --executor ray: a placement group
                # The rendezvous is on the node that runs the ranks: here, or (Ray) chosen there by
                # rank 0's task and handed to the others (ray_executor.RayGang), not by this driver.
                port = NODE_PORT if ray_gang else free_port()
                tasks = []
                for rank, state in enumerate(ranked):
                    [task] = execution._tasks_for(state, [state.segments[number]], f"job{number}-{attempt}",
                                                  state.records_path, accept_drift=settings.inexact_threads is not None,
                                                  environ=rank_env(job, rank, port))
                    tasks.append(task)
                gang = ray_gang(job.world_size) if ray_gang else gangs.get(job.world_size, tasks[0].env)
                errors_before = [len(item.errors) for item in job.items]
                held: list = []
                store = execution._on_message

                def hold(key, message, held=held, store=store):
                    if message.get("kind") == "batch":
                        held.append((key, message))
                    else:
                        store(key, message)

                execution._on_message = hold
                try:
                    outcomes = execution._execute(tasks, ranked, executor=gang)
                finally:
                    del execution._on_message  # back to the method
                if outcomes and all(outcome.ok for outcome in outcomes):
                    for key, message in held:  # the driver writes the store, once every rank succeeded
                        began = time.perf_counter()
                        execution._on_message(key, message)
                        execution.tasks[key][0].item.outcome.add_time("store_s", time.perf_counter() - began)
                    break
                # By the task's rank: an executor gives outcomes in the order they ended, and the
                # rank that failed first usually ends before those the gang then stops.
                rank_of = {task.key: rank for rank, task in enumerate(tasks)}
                failed = [(rank_of[outcome.task.key], outcome.error) for outcome in outcomes if not outcome.ok]
                first = min(failed, key=lambda f: (_symptom(f[1]), f[0])) if failed else (0, "?")
                note = (f"job {job.tstamp}: segment {number + 1} failed on rank {first[0]} ({first[1]}); "
                        "nothing stored from any rank")
                if attempt < ATTEMPTS:
                    for item, before in zip(job.items, errors_before):
                        item.outcome.retract_errors(before)  # the whole segment is tried again
                    say(f"  {note}; trying the segment again, whole")
                else:
                    for item in job.items:
                        item.outcome.fail(note)
            if any(item.errors for item in job.items):
                break

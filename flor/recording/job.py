"""Jobs: the processes of one distributed launch (torchrun, ``torch.multiprocessing`` with the
``RANK``/``WORLD_SIZE`` environment, Slurm's ``srun``), recorded as one run.

A job has one tstamp and one code snapshot; each of its ranks is recorded as a rank run, a row of
``runs`` with the tstamp ``<job tstamp>+r<rank>``, so that everything kept per run (values,
loop contexts, checkpoints, output, status) is kept per rank without a rank column in every
table, and a tstamp prefix that selects the job selects all its ranks.

**How the ranks agree without talking.** A collective at ``import flor`` (or at the first
``flor.loop``) could deadlock a script, so ranks never call one. Each rank computes the same
*launch key* from what its launcher gave every process of the launch on this machine: the
launcher's ids (torchrun's run id, rendezvous endpoint and restart count; Slurm's job and step),
and the launching process itself: the parent's pid and its start time in clock ticks since boot,
with the boot id. torchrun's run id alone is not enough (a static launch says "none" every
time); the parent agent's (pid, start time, boot) is unique per launch on a machine, and the
same for every rank it started. The first rank to reach the store creates the job under that
key (one short transaction); the others find it in the same transaction and join it, so no rank
waits on another: only on the store's write lock, a few milliseconds.

Ranks on other machines (``--nnodes``) record into their own working copy's store, each holding
the ranks that ran there (docs/distributed.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field

RANK_SEPARATOR = "+r"  # between a job's tstamp and a rank: "2026-12-07T05:30:00+r1"


@dataclass(frozen=True)
class RankIdentity:
    """Who this process is in its launch: recorded with its rank run."""

    rank: int
    world_size: int
    local_rank: int | None
    group_rank: int | None  # the node's index among the launch's nodes (torchrun), else None
    local_world_size: int | None  # ranks this launcher started on this node (LOCAL_WORLD_SIZE), else None
    host: str
    launcher: str  # 'torchrun', 'slurm', 'lightning' (its own DDP launcher) or 'env' (RANK/WORLD_SIZE set by a script)
    key: str  # the launch key: the same for every rank of one launch on this machine, never for two
    ids: dict = field(default_factory=dict)  # what the key was made of

    def as_json(self) -> dict:
        return asdict(self)


def _int(environ, name: str) -> int | None:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        return None


def _parent_start(ppid: int) -> str | None:
    """Start time of process ``ppid`` in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{ppid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        return text[text.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def identify(environ=None, ppid: int | None = None) -> RankIdentity | None:
    """This process's identity in a distributed launch, or None when it is not one (no rank, or a
    world of one: then it is an ordinary run)."""
    environ = os.environ if environ is None else environ
    rank, world = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
    launcher = "env"
    lightning = (rank is None and world is not None and "NODE_RANK" in environ and "LOCAL_RANK" in environ
                 and "TORCHELASTIC_RUN_ID" not in environ)
    if lightning:
        # Lightning's own launcher (strategy="ddp" without torchrun) sets no RANK: the script it
        # starts is local rank 0 and starts the others, one node. Its pid names the launch.
        if _int(environ, "NODE_RANK") != 0:
            return None  # several nodes under Lightning's launcher: the rank is not in the environment
        rank, launcher = _int(environ, "LOCAL_RANK"), "lightning"
        if ppid is None and rank == 0:
            ppid = os.getpid()
    if rank is None or world is None:
        rank, world = _int(environ, "SLURM_PROCID"), _int(environ, "SLURM_NTASKS")
        launcher = "slurm"
    if rank is None or world is None or world <= 1 or not 0 <= rank < world:
        return None
    ppid = os.getppid() if ppid is None else ppid
    ids: dict[str, object] = {
        "parent_pid": ppid, "parent_start": _parent_start(ppid), "boot_id": _boot_id(),
        "world_size": world,
    }
    if "TORCHELASTIC_RUN_ID" in environ or "TORCHELASTIC_RESTART_COUNT" in environ:
        launcher = "torchrun"
        for name in ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
            ids[name] = environ.get(name)
    elif launcher == "slurm" or "SLURM_JOB_ID" in environ:
        for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_NODEID"):
            ids[name] = environ.get(name)
        if launcher != "slurm":  # RANK set by a script under Slurm: the rendezvous names the launch too
            ids.update(MASTER_ADDR=environ.get("MASTER_ADDR"), MASTER_PORT=environ.get("MASTER_PORT"))
    else:  # a script's own RANK/WORLD_SIZE, or Lightning's launcher
        ids.update(MASTER_ADDR=environ.get("MASTER_ADDR"), MASTER_PORT=environ.get("MASTER_PORT"))
    key = hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:32]
    local = _int(environ, "LOCAL_RANK")
    if local is None:
        local = _int(environ, "SLURM_LOCALID")
    group = _int(environ, "GROUP_RANK")
    if group is None:
        group = _int(environ, "SLURM_NODEID")
    local_world = _int(environ, "LOCAL_WORLD_SIZE")
    if local_world is None:
        local_world = _int(environ, "SLURM_NTASKS_PER_NODE")
    return RankIdentity(rank=rank, world_size=world, local_rank=local, group_rank=group,
                        local_world_size=local_world, host=socket.gethostname(), launcher=launcher, key=key, ids=ids)


def rank_tstamp(job_tstamp: str, rank: int) -> str:
    """The tstamp of rank ``rank``'s run in the job ``job_tstamp``."""
    return f"{job_tstamp}{RANK_SEPARATOR}{rank}"


def split_tstamp(tstamp: str) -> tuple[str, int | None]:
    """(job tstamp, rank) of a rank run's tstamp; (tstamp, None) for any other run."""
    head, sep, tail = tstamp.rpartition(RANK_SEPARATOR)
    if sep and tail.isdigit():
        return head, int(tail)
    return tstamp, None


def join(store, fields: dict):
    """This process's rank run in its job (a ``Membership``), or None when it is no rank of a
    distributed launch; ``fields`` are what an ordinary run is inserted with."""
    identity = identify()
    if identity is None:
        return None
    return store.join_job(
        key=identity.key, rank=identity.rank, world_size=identity.world_size, launcher=identity.launcher,
        identity=identity.as_json(), local_rank=identity.local_rank, group_rank=identity.group_rank,
        local_world_size=identity.local_world_size, host=identity.host, **fields,
    )


def share_snapshot(run, snap, vcs_note: str | None) -> None:
    """The job's one code snapshot (taken by the rank that created the job), named by every rank."""
    from ..errors import StoreError
    from ..messages import warn

    try:
        run.store.set_job_code(
            run.job.job_id, code_commit=None if snap is None else snap.commit, vcs_note=vcs_note,
            git_head=None if snap is None else snap.head, git_dirty=None if snap is None else snap.dirty,
        )
    except StoreError as exc:
        warn(f"the code version of job {run.job.job_tstamp} is kept with rank run {run.tstamp} only: {exc}")


def in_step(run, index: int, point: str, due: bool) -> bool:
    """Whether this rank checkpoints at outer iteration ``index``: the job's decision, which the
    first rank to reach that boundary makes from its own policy and every other rank follows, so
    all ranks checkpoint at the same iterations (a replay segment then starts on every rank at
    once) without a collective and without waiting: a rank reads the decision, or makes it in
    one short transaction. When the store cannot be reached the rank keeps its own decision."""
    from ..errors import StoreError

    try:
        with run.store.lock:  # the flush thread shares the connection
            decided = run.store.job_checkpoint_decision(run.job.job_id, index, point)
            if decided is None:
                decided = run.store.decide_job_checkpoint(run.job.job_id, index, point, due, run.run_id)
    except StoreError:
        return due
    return decided


def with_ranks(table, rank: int | None = None):
    """A dataframe's rank runs shown as their job: ``tstamp`` the job's, and a ``rank`` column
    after it (empty for runs that are no job's); added only when the table holds a job. ``rank``
    given: only that rank's rows (runs that are no job's have no rank, and are left out)."""
    if "tstamp" not in table.columns:
        return table
    split = [split_tstamp(t) if isinstance(t, str) else (t, None) for t in table["tstamp"]]
    if rank is None and all(r is None for _, r in split):
        return table
    import pandas as pd

    table = table.copy()
    table["tstamp"] = [t for t, _ in split]
    table.insert(table.columns.get_loc("tstamp") + 1, "rank", pd.array([r for _, r in split], dtype="Int64"))
    if rank is not None:
        table = table[table["rank"] == rank].reset_index(drop=True)
    return table


@dataclass(frozen=True)
class ListedRun:
    """A run as ``flor runs`` lists it; for a distributed job, one row in place of its ranks: the
    job's tstamp and status (finished only when every rank finished), its world size and how many
    ranks this store holds."""

    run: object  # the RunRow (store/runs.py): for a job, its tstamp, status and times
    world_size: int | None = None  # None: not a job
    ranks: int = 0


def listed_runs(store) -> list[ListedRun]:
    """Every run as ``flor runs`` lists it: a job as one row, in place of its ranks."""
    from dataclasses import replace

    runs = store.runs()
    jobs = {job.job_id: job for job in store.jobs()}
    of_run = store.job_of_runs()
    listed, shown = [], set()
    for run in runs:
        member = of_run.get(run.run_id)
        if member is None:
            listed.append(ListedRun(run))
            continue
        job_id = member[0]
        if job_id in shown:
            continue
        shown.add(job_id)
        job = jobs[job_id]
        ended = [r.ended for r in job.ranks]
        finished = job.status != "running" and all(e is not None for e in ended)
        listed.append(ListedRun(
            replace(run, tstamp=job.tstamp, status=job.status, started=job.started,
                    ended=max(ended) if finished and ended else None),
            job.world_size, len(job.ranks)))
    return listed


def find_job(store, prefix: str):
    """The job (a ``JobRow``) whose tstamp is ``prefix`` or starts with it, when that names one
    job and no other run; else None (the caller looks for a run)."""
    prefix = str(prefix).strip()
    if not prefix or RANK_SEPARATOR in prefix:
        return None
    matches = [job for job in store.jobs() if job.tstamp.startswith(prefix)]
    exact = [job for job in matches if job.tstamp == prefix]
    if exact:
        return exact[0]
    if len(matches) != 1:
        return None
    others = [r for r in store.runs() if r.tstamp.startswith(prefix) and split_tstamp(r.tstamp)[1] is None]
    return None if others else matches[0]


def job_notes(store) -> list[str]:
    """``flor doctor``'s lines about jobs that did not finish: which rank was killed or failed
    first, and which ranks never reached this store (each rank's flushed values are kept)."""
    notes = []
    for job in store.jobs():
        if job.status in ("finished", "running"):
            continue
        parts = []
        for rank in job.ranks:
            if rank.status in ("killed", "failed"):
                parts.append(f"rank {rank.rank} {rank.status}" + (f" ({rank.error})" if rank.error else ""))
        if job.missing:
            parts.append(f"rank(s) {', '.join(map(str, job.missing))} missing (never recorded here: killed before "
                         "their first flor.loop or flor.log, or on another node)")
        notes.append(f"job {job.tstamp} ({job.world_size} ranks) {job.status}: " + "; ".join(parts)
                     + "; the values every rank flushed are kept")
    return notes


def loopback_port() -> int:
    """A free TCP port on loopback, for the rendezvous of ranks that flor starts itself (a replay
    segment's gang, a resumed job)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_environment(rank: int, local_rank: int | None, world_size: int, port: int, run_id: str) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` of a one-node launch, with its rendezvous on
    loopback at ``port``: what flor sets for ranks it starts itself. torchrun's variables (not a
    script's own ``RANK``) so that frameworks (Lightning) take the rank as launched externally and
    start no processes of their own; ``run_id`` names the launch (``TORCHELASTIC_RUN_ID``)."""
    return {
        "RANK": str(rank), "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank if local_rank is None else local_rank), "LOCAL_WORLD_SIZE": str(world_size),
        "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo",
        "TORCHELASTIC_RUN_ID": run_id, "TORCHELASTIC_RESTART_COUNT": "0",
    }


def job_tstamp(tstamp: str) -> str:
    """The tstamp that names a run's code version (its hidden ref): its job's for a rank run."""
    return split_tstamp(tstamp)[0]

"""Distributed jobs (flor/recording/job.py): a job, the runs of its ranks, and its shared checkpoint decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from ..errors import StoreError
from ..recording.job import rank_tstamp
from .runs import _tstamp_candidates, insert_run_row, tstamp_taken


@dataclass(frozen=True)
class Membership:
    """What joining a job gave this rank."""

    run_id: int
    tstamp: str  # this rank's run: "<job tstamp>+r<rank>"
    job_id: int
    job_tstamp: str
    snapshots: bool  # this rank created the job, so it takes the job's one code snapshot


@dataclass(frozen=True)
class RankRow:
    """One rank of a job, as flor show lists it."""

    run_id: int
    rank: int
    local_rank: int | None
    group_rank: int | None
    local_world_size: int | None
    host: str | None
    status: str
    pid: int | None
    started: float
    ended: float | None
    error: str | None


@dataclass(frozen=True)
class JobRow:
    """One job: its tstamp, world size, and the ranks recorded (in this store)."""

    job_id: int
    tstamp: str
    world_size: int
    launcher: str
    started: float
    code_commit: str | None
    ranks: tuple[RankRow, ...]

    @property
    def expected_here(self) -> int:
        """How many ranks this store should hold: the world, or on one node of several
        (``--nnodes``, each recording into its own working copy) the ranks that node started."""
        local = {r.local_world_size for r in self.ranks if r.local_world_size}
        groups = {r.group_rank for r in self.ranks}
        if len(local) == 1 and len(groups) == 1 and next(iter(local)) < self.world_size:
            return next(iter(local))
        return self.world_size

    @property
    def status(self) -> str:
        """finished only when every rank finished; killed or failed when one was; else running."""
        states = [r.status for r in self.ranks]
        if len(states) >= self.expected_here and all(s == "finished" for s in states):
            return "finished"
        for worst in ("killed", "failed", "running"):
            if worst in states:
                return worst
        return "killed"  # every recorded rank finished, but some never reached the store

    @property
    def missing(self) -> list[int]:
        """Ranks of the world that this store has no run of."""
        have = {r.rank for r in self.ranks}
        return [rank for rank in range(self.world_size) if rank not in have]


class JobsMixin:
    """What :class:`~flor.store.Store` reads and writes of distributed jobs."""

    def join_job(self, *, key: str, rank: int, world_size: int, launcher: str, identity: dict,
                 local_rank: int | None, group_rank: int | None, host: str, tstamp: str,
                 local_world_size: int | None = None,
                 projid: str, filename: str, argv: list[str], cwd: str, started: float,
                 args: Iterable[tuple[str, object, str]], rng_state: bytes | None, resumed_from: int | None,
                 environment: dict | None) -> Membership:
        """Create the job of launch ``key`` (the first rank here) or find it, and insert this rank's
        run into it, in one transaction: no rank waits for another."""
        args = list(args)

        def body(cursor):
            row = cursor.execute("SELECT job_id, tstamp, code_commit, vcs_note, git_head, git_dirty FROM jobs "
                                 "WHERE launch_key = ?", (key,)).fetchone()
            creates = row is None
            if creates:
                for candidate in _tstamp_candidates(tstamp, started):
                    if not tstamp_taken(cursor, candidate):
                        break
                cursor.execute("INSERT INTO jobs(tstamp, launch_key, world_size, launcher, started) "
                               "VALUES (?, ?, ?, ?, ?)", (candidate, key, world_size, launcher, started))
                row = (cursor.lastrowid, candidate, None, None, None, None)
            job_id, job_tstamp, commit, note, head, dirty = row
            if cursor.execute("SELECT 1 FROM job_ranks WHERE job_id = ? AND rank = ?", (job_id, rank)).fetchone():
                raise StoreError(f"rank {rank} of job {job_tstamp} is already recorded: two processes of one "
                                 "launch say they are the same RANK; check the launcher's environment")
            mine = rank_tstamp(job_tstamp, rank)
            run_id = insert_run_row(cursor, mine, projid=projid, filename=filename, argv=argv, cwd=cwd,
                                    started=started, args=args, rng_state=rng_state, resumed_from=resumed_from,
                                    environment=environment)
            if creates:
                cursor.execute("UPDATE jobs SET snapshot_run = ? WHERE job_id = ?", (run_id, job_id))
            elif commit is not None or note is not None:
                # The job's snapshot is already taken: this rank's run names it too.
                cursor.execute("UPDATE runs SET code_commit = ?, vcs_note = ?, git_head = ?, git_dirty = ? "
                               "WHERE run_id = ?", (commit, note, head, dirty, run_id))
            cursor.execute(
                "INSERT INTO job_ranks(run_id, job_id, rank, local_rank, group_rank, world_size, local_world_size, "
                "host, identity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, job_id, rank, local_rank, group_rank, world_size, local_world_size, host,
                 json.dumps(identity)),
            )
            return Membership(run_id, mine, job_id, job_tstamp, creates)

        return self._write(body)

    def set_job_code(self, job_id: int, *, code_commit: str | None, vcs_note: str | None = None,
                     git_head: str | None = None, git_dirty: bool | None = None) -> None:
        """The job's one code snapshot, named by the job and by every rank's run (those that
        joined already; later ones copy it when they join)."""
        dirty = None if git_dirty is None else int(git_dirty)

        def body(cursor):
            cursor.execute("UPDATE jobs SET code_commit = ?, vcs_note = ?, git_head = ?, git_dirty = ? "
                           "WHERE job_id = ?", (code_commit, vcs_note, git_head, dirty, job_id))
            cursor.execute("UPDATE runs SET code_commit = ?, vcs_note = ?, git_head = ?, git_dirty = ? "
                           "WHERE run_id IN (SELECT run_id FROM job_ranks WHERE job_id = ?)",
                           (code_commit, vcs_note, git_head, dirty, job_id))

        self._write(body)

    def jobs(self) -> list[JobRow]:
        """Every job with its ranks, oldest first."""
        return self._jobs("")

    def job(self, job_id: int) -> JobRow:
        found = self._jobs("WHERE j.job_id = ?", (job_id,))
        if not found:
            from ..errors import RunNotFoundError

            raise RunNotFoundError(f"no job with id {job_id}")
        return found[0]

    def _jobs(self, where: str, params: tuple = ()) -> list[JobRow]:
        rows = self._read(
            "SELECT j.job_id, j.tstamp, j.world_size, j.launcher, j.started, j.code_commit, "
            "k.run_id, k.rank, k.local_rank, k.group_rank, k.local_world_size, k.host, r.status, r.pid, r.started, r.ended, r.error "
            f"FROM jobs j LEFT JOIN job_ranks k ON k.job_id = j.job_id LEFT JOIN runs r ON r.run_id = k.run_id "
            f"{where} ORDER BY j.tstamp, k.rank", params)
        jobs: dict[int, list] = {}
        for row in rows:
            entry = jobs.setdefault(row[0], [row[:6], []])
            if row[6] is not None:
                entry[1].append(RankRow(*row[6:]))
        return [JobRow(*head, ranks=tuple(ranks)) for head, ranks in jobs.values()]

    def job_of_runs(self) -> dict[int, tuple[int, str, int]]:
        """run_id -> (job_id, job tstamp, rank) of every rank run."""
        rows = self._read("SELECT k.run_id, k.job_id, j.tstamp, k.rank FROM job_ranks k JOIN jobs j ON j.job_id = k.job_id")
        return {run_id: (job_id, tstamp, rank) for run_id, job_id, tstamp, rank in rows}

    def job_checkpoint_decision(self, job_id: int, iteration: int, point: str) -> bool | None:
        """Whether the job checkpoints at (iteration, point), once one rank decided; else None."""
        rows = self._read("SELECT take FROM job_checkpoints WHERE job_id = ? AND iteration = ? AND point = ?",
                          (job_id, iteration, point))
        return bool(rows[0][0]) if rows else None

    def decide_job_checkpoint(self, job_id: int, iteration: int, point: str, take: bool, run_id: int) -> bool:
        """Record the job's decision at (iteration, point) unless one is there; the decision that stands."""

        def body(cursor):
            cursor.execute("INSERT OR IGNORE INTO job_checkpoints(job_id, iteration, point, take, decided_by) "
                           "VALUES (?, ?, ?, ?, ?)", (job_id, iteration, point, int(take), run_id))
            return bool(cursor.execute("SELECT take FROM job_checkpoints WHERE job_id = ? AND iteration = ? "
                                       "AND point = ?", (job_id, iteration, point)).fetchone()[0])

        return self._write(body)

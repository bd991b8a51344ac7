"""The store: the only package that speaks SQL (``flor doctor``'s reader of a damaged file is ``salvage``).

One SQLite database per project at ``.flor/flor.db``, in WAL mode with a busy timeout, so that
many runs can write to it at once while readers query it. Every write is one short
``BEGIN IMMEDIATE`` transaction, retried while another process holds the lock, so "database is
locked" never reaches the user.

Tables (``flor query`` reads them directly)::

    runs(run_id, tstamp, projid, filename, argv, cwd, code_commit, vcs_note, status, started,
         ended, heartbeat, pid, host, python, error, resumed_from, rng_state, git_head, git_dirty)
                                         code_commit: flor's snapshot of the code; git_head: the
                                         user's HEAD then, git_dirty: the work tree differed from it
    args(run_id, name, value, vtype)
    contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, iterations)
                                         one row per loop *instance* (each time a flor.loop starts)
    iterations(run_id, ctx_id, iteration, t)      start time of each iteration of a top-level loop
    logs(run_id, ctx_id, iteration, name, value, vtype, source)
                                         ctx_id/iteration: the innermost loop and its index (NULL at
                                         run level); source: 'record', 'replay' or
                                         'extract' (from captured output)
    checkpoints(run_id, iteration, point, location, bytes, bytes_written, snapshot_s, write_s, created)
    keyed_loops(run_id, ctx_id, loop_name, fingerprint, incremental)
                                         instances of keyed loops (flor.loop(..., key=...)) and the
                                         code version of their body
    item_keys(run_id, ctx_id, iteration, key, ktype, path, state, by_run)
                                         each item of a keyed loop: started, done, or skipped
                                         (incremental: done before by run by_run)
    lineage(reader, source, how)         runs whose values a run read (flor.dataframe, flor.query)
    drift(run_id, ctx_id, iteration, name, recorded, replayed, difference, replayed_at)
    replay_done(run_id, name, iteration)          outer iterations whose replay of a name finished
    jobs(job_id, tstamp, launch_key, world_size, launcher, started, snapshot_run, code_commit, ...)
    job_ranks(run_id, job_id, rank, local_rank, group_rank, world_size, host, identity)
                                         a distributed launch (flor/recording/job.py) and the run of each of
                                         its ranks (tstamp "<job tstamp>+r<rank>")
    job_checkpoints(job_id, iteration, point, take, decided_by)
                                         the job's checkpoint decisions, the same for every rank
    output_blocks(run_id, first_line, n, streams, meta, text)
                                         what a run printed, compressed blocks of lines (output.py)
    run_notes(run_id, name, tags, note, archived, updated)
                                         what people wrote about a run in `flor ui --allow-edit`
                                         (annotations.py); tags: a JSON list of text

Modules: ``schema`` (tables and ordered migrations), ``connection`` (opening, transactions),
``runs``, ``logs``, ``lastvalue`` (a run's last value of a name, by loop position), ``output``, ``items`` (keyed loops, lineage), ``replays``, ``annotations`` (run names, tags, notes), ``checkpoints`` (what is read and written of each), ``free_sql``
(``flor query``, read-only), ``readpool`` (pooled read-only connections for readers on several
threads, such as ``flor ui``, and the named reads they make), ``project`` (the store of the project
that contains a folder), ``salvage`` (``flor doctor``'s raw reader of a damaged file).

A value's full loop context is its (loop, iteration) and, up the parent links, those of the
enclosing loops: ``epoch=3, step=17``. Keeping one row per loop instance rather than per
iteration keeps the cost of an inner-loop iteration to a counter increment.

>>> store = Store.open(Path(".flor/flor.db"))          # doctest: +SKIP
>>> store.runs()                                        # doctest: +SKIP
"""

from __future__ import annotations

from .annotations import AnnotationsMixin, RunNote
from .checkpoints import CheckpointRow, CheckpointsMixin
from .connection import BUSY_TIMEOUT_S, Connection
from .free_sql import FreeSQLMixin
from .items import ItemsMixin
from .jobs import JobRow, JobsMixin, Membership, RankRow
from .logs import LogsMixin
from .output import OutputMixin
from .readpool import ReadPool
from .replays import ReplaysMixin
from .runs import RunRow, RunsMixin
from .schema import DERIVED_TABLES, SCHEMA, SCHEMA_VERSION, SEED_LOG_NAMES, TABLES, split_sql

__all__ = [
    "BUSY_TIMEOUT_S", "CheckpointRow", "DERIVED_TABLES", "JobRow", "Membership", "RankRow", "ReadPool", "RunNote",
    "RunRow", "SCHEMA", "SCHEMA_VERSION",
    "SEED_LOG_NAMES", "Store", "TABLES", "split_sql",
]


class Store(RunsMixin, JobsMixin, LogsMixin, OutputMixin, ItemsMixin, ReplaysMixin, CheckpointsMixin, AnnotationsMixin,
            FreeSQLMixin, Connection):
    """A connection to one project's database; open with :meth:`open`.

    >>> store = Store.open(Path(".flor/flor.db"))          # doctest: +SKIP
    """

"""The runs a listing shows: ``flor runs`` (``query.list_runs``) and ``flor.dataframe(where=,
order_by=, limit=)``.

Each run is one :class:`RunSummary`; a listing keeps the runs that ``--status`` and ``--where``
(flor's one filter grammar, over the run's columns, its args and the last value of each logged
name) keep, ordered by ``--order`` (``filters.order_rows``), at most ``--limit`` of them. The
keys of :data:`COLUMNS` are what ``flor runs --json/--csv`` prints; they are documented in
docs/cli.md and only ever grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ..errors import UsageError
from ..store import RunRow, Store

# The stable keys of `flor runs --json` (then `args`: an object of the run's args).
COLUMNS = ("tstamp", "status", "started", "ended", "duration_s", "filename", "code_commit", "git_head",
           "git_dirty", "args", "world_size", "ranks")
STATUSES = ("running", "finished", "failed", "killed")
# Run columns a --where or --order may name, beside args and logged names.
_RUN_FIELDS = ("tstamp", "status", "filename", "started", "ended", "duration_s", "code_commit")


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it."""

    run: RunRow
    args: dict = field(default_factory=dict)
    last: dict = field(default_factory=dict)  # name -> the run's last value of it
    world_size: int | None = None  # a distributed job (one row for its ranks): its world size
    ranks: int = 0  # and how many of its ranks this store holds

    def row(self) -> tuple:
        """The values of :data:`COLUMNS`."""
        run = self.run
        return (run.tstamp, run.status, run.started, run.ended, run.duration, run.filename, run.code_commit,
                run.git_head, run.git_dirty, self.args, self.world_size, self.ranks if self.world_size else None)

    def fields(self) -> dict:
        """What --where and --order read: the run's columns, then its last values, then its args
        (an arg and a logged name of one name: the arg, as everywhere else)."""
        run = self.run
        own = {"tstamp": run.tstamp, "status": run.status, "filename": run.filename, "started": run.started,
               "ended": run.ended, "duration_s": run.duration, "code_commit": run.code_commit}
        return {**own, **self.last, **self.args}


def summaries(store: Store, *, where: str | None = None, status=None, order: str | None = None,
              limit: int | None = None) -> list[RunSummary]:
    """The runs of ``store`` a listing keeps, in its order (default: oldest first)."""
    from .filters import compile_filter, order_rows

    if limit is not None and (type(limit) is not int or limit < 0):
        raise UsageError(f"limit must be a whole number of runs, 0 or more; got {limit!r}")
    from ..recording.job import listed_runs

    wanted = _statuses(status)
    runs = [entry for entry in listed_runs(store) if wanted is None or entry.run.status in wanted]
    last = store.last_values_of_runs([entry.run.run_id for entry in runs]) if (where or order) else {}
    listed = [RunSummary(entry.run, store.args(entry.run.run_id),
                         {name: value for name, (value, _source) in last.get(entry.run.run_id, {}).items()},
                         entry.world_size, entry.ranks)
              for entry in runs]
    if where or order:
        columns = set(_RUN_FIELDS).union(*(summary.fields() for summary in listed))
        if where:
            keep = compile_filter(where, columns)
            listed = [summary for summary in listed if keep(summary.fields())]
        listed = order_rows(listed, order, columns, get=lambda summary, name: summary.fields().get(name))
    return listed if limit is None else listed[:limit]


def _statuses(status) -> set[str] | None:
    if status is None or status == []:
        return None
    given = [status] if isinstance(status, str) else list(status)
    names = {part.strip() for text in given for part in str(text).split(",") if part.strip()}
    unknown = sorted(names - set(STATUSES))
    if unknown:
        raise UsageError(f"unknown status {', '.join(unknown)}; statuses are: {', '.join(STATUSES)}")
    return names


def text_rows(listed: list[RunSummary]) -> tuple[list[str], list[tuple]]:
    """The columns and rows of ``flor runs``' text table (short commits, args as k=v)."""
    columns = ["tstamp", "status", "duration", "filename", "commit", "git_head", "started", "args"]
    rows = []
    for summary in listed:
        run = summary.run
        shown = " ".join(f"{k}={v}" for k, v in summary.args.items())
        if not shown and len(run.argv) > 1:  # no args declared: what it was started with
            shown = "(command) " + " ".join(run.argv[1:])
        head = "" if run.git_head is None else run.git_head[:10] + ("+dirty" if run.git_dirty else "")
        status = run.status + (f" ({summary.ranks}/{summary.world_size} ranks)" if summary.world_size else "")
        rows.append((run.tstamp, status, duration_text(run.duration) or "-", run.filename,
                     run.code_commit[:10] if run.code_commit else "unversioned", head or "-", run.started, shown))
    return columns, rows


def duration_text(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``1h02m03s``; empty while running or when killed before the end."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"

"""One run, all that flor keeps of it (``flor show``): read once into a :class:`RunDetails`,
then written as text lines for people or as one JSON record (keys in :data:`JSON_KEYS`,
documented in docs/cli.md; they only ever grow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .output import iso_time
from .runlist import duration_text
from ..store import RunRow

# The stable top-level keys of `flor show --json`.
JSON_KEYS = ("tstamp", "projid", "filename", "cwd", "status", "error", "started", "ended", "duration_s", "argv",
             "code_commit", "vcs_note", "git_head", "git_dirty", "resumes", "args", "logs", "output", "checkpoints",
             "items", "read_from", "read_by", "trackers", "job")


@dataclass(frozen=True)
class LoggedName:
    """A name the run logged from one source: how many values, and the run's last one there."""

    name: str
    source: str
    count: int
    last: object = None
    has_last: bool = False


@dataclass(frozen=True)
class CheckpointInfo:
    iteration: int
    point: str
    bytes: int
    bytes_written: int
    snapshot_s: float | None
    write_s: float | None


@dataclass
class RunDetails:
    """What ``flor show`` says of one run."""

    run: RunRow
    args: dict
    logs: list[LoggedName]
    output_lines: int  # captured lines kept
    checkpoints: list[CheckpointInfo]
    writing: list[tuple[str, int]]  # checkpoints being written after the run: (name, pid)
    not_written: list[str]
    items: list[tuple]  # (loop, state, count, tstamp of the run that did a skipped one)
    read_from: list[tuple]  # (tstamp, filename, how)
    read_by: list[tuple]
    resumes: str | None = None
    trackers: dict = field(default_factory=dict)  # the tracker runs it belonged to (flor.export)
    job: object = None  # a distributed job's JobRow (store/jobs.py): flor show names it and its ranks first
    job_outputs: dict = field(default_factory=dict)  # run_id -> captured lines, for each rank

    def to_json(self) -> dict:
        run = self.run
        return {
            "tstamp": run.tstamp, "projid": run.projid, "filename": run.filename, "cwd": run.cwd,
            "status": run.status, "error": run.error, "started": run.started, "ended": run.ended,
            "duration_s": run.duration, "argv": run.argv, "code_commit": run.code_commit, "vcs_note": run.vcs_note,
            "git_head": run.git_head, "git_dirty": run.git_dirty, "resumes": self.resumes, "args": self.args,
            "logs": [{"name": n.name, "source": n.source, "count": n.count, "last": n.last if n.has_last else None}
                     for n in self.logs],
            "output": {"lines": self.output_lines, **(self.run.environment.get("capture") or {})},
            "checkpoints": [vars(c) for c in self.checkpoints],
            "items": [{"loop": loop, "state": state, "count": count, "done_by": by} for loop, state, count, by in self.items],
            "read_from": [{"tstamp": t, "filename": f, "how": h} for t, f, h in self.read_from],
            "read_by": [{"tstamp": t, "filename": f, "how": h} for t, f, h in self.read_by],
            "trackers": self.trackers,
            "job": None if self.job is None else job_json(self.job, self.job_outputs),
        }


def describe_run(run: str, start: Path | None = None) -> RunDetails:
    """Everything kept of the run whose tstamp starts with ``run``, read in one transaction."""
    from ..checkpoints import handoff
    from .query import open_for_reading

    store = open_for_reading(start)
    try:
        store.begin_read()
        from ..recording.job import find_job

        job = find_job(store, run)  # a distributed job: its ranks, then its lowest rank's run in full
        found = store.run(job.ranks[0].run_id) if job is not None and job.ranks else store.find_run(run)
        last = store.last_values_of_runs([found.run_id]).get(found.run_id, {})
        logs = []
        for name, source, count in store.log_names(found.run_id):
            # The run's last value (at its last iteration, any source) on the line of its source.
            here = name in last and last[name][1] == source
            logs.append(LoggedName(name, source, count, last[name][0] if here else None, here))
        checkpoints = [CheckpointInfo(c.iteration, c.point, c.bytes, c.bytes_written, c.snapshot_s, c.write_s)
                       for c in store.checkpoints(found.run_id)]
        items = [(loop, state, count, store.run(by).tstamp if state == "skipped" and by is not None else None)
                 for loop, state, count, by in store.item_counts(found.run_id)]
        return RunDetails(
            run=found, args=store.args(found.run_id), logs=logs,
            output_lines=int(store.output_counts([found.run_id]).get(found.run_id, 0)), checkpoints=checkpoints,
            writing=[(marker.name.removesuffix(handoff.MARKER), pid)
                     for marker, pid in handoff.pending(store.paths.flor_dir, found.run_id)],
            not_written=list(handoff.failures(store.paths.flor_dir, found.run_id)),
            items=items,
            read_from=[row[1:] for row in store.read_from(found.run_id)],
            read_by=[row[1:] for row in store.read_by(found.run_id)],
            resumes=store.run(found.resumed_from).tstamp if found.resumed_from else None,
            trackers=dict(found.environment.get("trackers") or {}),
            job=job,
            job_outputs=store.output_counts([r.run_id for r in job.ranks]) if job is not None else {},
        )
    finally:
        store.close()


def text_lines(details: RunDetails) -> list[str]:
    """``flor show``'s text."""
    run = details.run
    out = job_lines(details.job, details.job_outputs) if details.job is not None else []
    out += [
        f"run       {run.tstamp}",
        f"project   {run.projid}",
        f"file      {run.filename}  (cwd {run.cwd})",
        f"status    {run.status}" + (f": {run.error}" if run.error else ""),
        f"started   {iso_time(run.started)}  duration {duration_text(run.duration) or '-'}",
        f"command   {' '.join(run.argv)}",
        f"code      {run.code_commit or 'unversioned'}" + (f"  ({run.vcs_note})" if run.vcs_note else ""),
    ]
    if run.git_head is not None:
        state = "with uncommitted or untracked changes" if run.git_dirty else "clean"
        out.append(f"git head  {run.git_head}  ({state})")
    out += _left_out(run.environment)
    if details.resumes:
        out.append(f"resumes   {details.resumes}")
    out.append("args      " + (", ".join(f"{k}={v!r}" for k, v in details.args.items()) or "(none)"))
    out.append("logs")
    if not details.logs:
        out.append("  (none)")
    for logged in details.logs:
        tail = f"  last {logged.last!r}" if logged.has_last else ""
        out.append(f"  {logged.name:<20} {logged.count:>8} {logged.source}{tail}")
    out.append("output    " + _captured(run.environment.get("capture"), details.output_lines))
    for tracker, where in details.trackers.items():
        out.append(f"tracker   {tracker}: " + ", ".join(f"{k}={v}" for k, v in where.items()))
    out.append("checkpoints" + ("" if details.checkpoints or details.writing else "  (none)"))
    policy = (run.environment.get("checkpoints") or {}).get("explain")
    if policy:
        out.append(f"  policy: {policy}")
    for ckpt in details.checkpoints:
        out.append(
            f"  iteration {ckpt.iteration:>5} ({ckpt.point:<6})  {ckpt.bytes / 1e6:9.2f} MB  "
            f"written {ckpt.bytes_written / 1e6:9.2f} MB  snapshot {1000 * (ckpt.snapshot_s or 0):7.1f} ms  "
            f"write {1000 * (ckpt.write_s or 0):7.1f} ms"
        )
    for name, pid in details.writing:
        out.append(f"  {name}  being written by pid {pid}")
    for failure in details.not_written:
        out.append(f"  not written: {failure}")
    if details.items:
        out.append("items")
        for loop_name, state, count, by in details.items:
            if state == "skipped":
                out.append(f"  {loop_name:<20} {count:>8} skipped: done before by run {by} (same loop body and args)")
            else:
                out.append(f"  {loop_name:<20} {count:>8} {'done' if state == 'done' else 'not finished'}")
    for title, rows in (("read from", details.read_from), ("read by", details.read_by)):
        if rows:
            out.append(title)
            out += [f"  {tstamp}  {filename}  ({how})" for tstamp, filename, how in rows]
    return out


def job_lines(job, output_counts: dict) -> list[str]:
    """``flor show``'s lines of a job: the job, then one line per rank."""
    lines = [f"job       {job.tstamp}  ({job.launcher}, world size {job.world_size})",
             f"status    {job.status}" + (f": rank(s) {', '.join(map(str, job.missing))} never recorded here"
                                          if job.missing else ""),
             f"started   {iso_time(job.started)}",
             "ranks"]
    for r in job.ranks:
        duration = None if r.ended is None else r.ended - r.started
        count = output_counts.get(r.run_id)
        local = r.local_rank if r.local_rank is not None else "-"
        lines.append(f"  rank {r.rank:<3} local {local:<3} host {r.host or '-'}  pid {r.pid}  {r.status}"
                     + (f": {r.error}" if r.error else "") + f"  duration {duration_text(duration) or '-'}"
                     + (f"  output {count} lines" if count else ""))
    return lines


def job_json(job, output_counts: dict) -> dict:
    """``flor show --json``'s ``job`` record."""
    return {"tstamp": job.tstamp, "launcher": job.launcher, "world_size": job.world_size, "status": job.status,
            "missing": job.missing,
            "ranks": [{"rank": r.rank, "local_rank": r.local_rank, "host": r.host, "pid": r.pid, "status": r.status,
                       "error": r.error, "started": r.started, "ended": r.ended,
                       "output_lines": int(output_counts.get(r.run_id, 0))} for r in job.ranks]}


def _left_out(environment: dict) -> list[str]:
    """What the run's code version left out and why (replay reads today's copy of these)."""
    from ..environment.vcs import Excluded

    excluded = [Excluded.from_json(entry) for entry in environment.get("excluded") or []]
    capped = list(environment.get("left_out") or {})
    if not excluded and not capped:
        return []
    out = ["left out  of the code version (replay reads today's copy from the project)"]
    for entry in excluded:
        count = f"{entry.files} file(s)" if entry.path.endswith("/") else ""
        why = "default pattern" if entry.source == "default" else f"{entry.source} pattern"
        out.append(f"  {entry.path:<40} {count:>12}  {why} {entry.pattern}")
    more = environment.get("excluded_more")
    if more:
        out.append(f"  ... and {more} more")
    out += [f"  {rel:<40} {'':>12}  over the size cap (FLOR_SNAPSHOT_MAX_BYTES)" for rel in capped]
    return out


def _captured(summary: dict | None, lines: int) -> str:
    """What `flor show` says of a run's captured output."""
    if not summary and not lines:
        return "(none captured)"
    summary = summary or {}
    streams = ", ".join(f"{n} {name}" for name, n in (summary.get("streams") or {}).items())
    text = f"{lines} line(s)" + (f", {summary['bytes'] / 1024:.1f} KiB" if "bytes" in summary else "")
    text += f" ({streams})" if streams else ""
    if summary.get("truncated"):
        text += f"; stopped at the cap of {summary['max_bytes'] / (1 << 20):g} MiB (FLOR_CAPTURE_MAX_BYTES)"
    return text + "; `flor logs RUN` prints it"

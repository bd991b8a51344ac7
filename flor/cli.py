"""The ``flor`` command line. Every command is defined here and calls one library function;
flor errors become one line on stderr and a documented exit status.

    flor dataframe [NAME ...] [--latest | --last] [--csv | --json]
    flor query SQL [--csv | --json]
    flor runs
    flor show RUN
    flor logs RUN [--grep REGEX] [--stream stdout|stderr|logging] [--json]
    flor extract NAME PATTERN [--runs ...] [--where EXPR] [--stream ...] [--dry-run] [--force]
    flor replay [NAME ...] [--runs TSTAMP[,TSTAMP...]] [--where EXPR] [--workers N] ...
    flor resume RUN
    flor ui [--port N] [--host H] [--no-browser]
    flor doctor [--repair]

Results go to stdout; progress, timings, warnings and errors go to stderr, so that
``flor replay ... > out.txt`` holds only results.

Exit statuses (``EXIT_*`` below): 0 done; 1 something failed (a replay worker, a problem that
``flor doctor`` found and did not repair, a store that cannot be read); 2 a mistake on the command
line or in a setting; 3 ``flor replay`` refused a run (unversioned, the statement cannot be placed
safely); 4 ``flor replay`` ended with values that drifted from the recording; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime

from .errors import FlorError, UsageError
from .messages import error, warn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_DRIFT = 4
EXIT_INTERRUPTED = 130


def _version() -> str:
    from . import __version__

    return f"flor {__version__}"


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flor", description="Record, query and replay ML training runs.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    frame = commands.add_parser("dataframe", help="all runs as one table of args and logs")
    frame.add_argument("names", nargs="*", metavar="NAME", help="args and log names (default: all)")
    frame.add_argument("--latest", action="store_true",
                       help="the feature-store view: one row per item key, each name's most recent value and its run")
    frame.add_argument("--last", action="store_true",
                       help="one row per run: each name's last value (at the run's last logged iteration)")
    frame.add_argument("--read-by", metavar="RUN", help="only the runs whose values RUN read (lineage)")
    frame.add_argument("--readers-of", metavar="RUN", help="only the runs that read RUN's values (lineage)")
    fmt = frame.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    fmt.add_argument("--json", action="store_true", help="print JSON records, one per line")

    sql = commands.add_parser("query", help="read-only SQL over the store")
    sql.add_argument("sql", metavar="SQL")
    sqlfmt = sql.add_mutually_exclusive_group()
    sqlfmt.add_argument("--csv", action="store_true", help="print CSV")
    sqlfmt.add_argument("--json", action="store_true", help="print JSON records, one per line")

    commands.add_parser("runs", help="list runs with status, duration, args and commit")

    show = commands.add_parser("show", help="show one run")
    show.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")

    logs = commands.add_parser("logs", help="what a run printed (stdout, stderr, logging), line by line")
    logs.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")
    logs.add_argument("--grep", metavar="REGEX", help="only lines this regular expression finds")
    logs.add_argument("--stream", action="extend", type=_comma_list, metavar="STREAM",
                      help="only stdout, stderr or logging (repeat or separate with commas)")
    logs.add_argument("--json", action="store_true", help="one JSON object per line: stream, time, loop context, text")

    pull = commands.add_parser(
        "extract", help="store values read out of what past runs printed, with no re-execution",
        description="Read values of NAME out of the runs' captured output with PATTERN, a regular expression "
        "with one capture group; each match is stored in the loop context of its line (source 'extract').",
    )
    pull.add_argument("name", metavar="NAME")
    pull.add_argument("pattern", metavar="PATTERN", help='e.g. "Average loss: ([0-9.]+)"')
    pull.add_argument("--runs", action="extend", type=_comma_list, metavar="TSTAMP[,TSTAMP...]",
                      help="only runs whose tstamp starts with these (repeat --runs or separate with commas)")
    pull.add_argument("--where", metavar="EXPR", help="only runs where EXPR holds over args and last logged values")
    pull.add_argument("--stream", action="extend", type=_comma_list, metavar="STREAM",
                      help="only lines of stdout, stderr or logging")
    pull.add_argument("--dry-run", action="store_true", help="show the first matches per run and the count; store nothing")
    pull.add_argument("--force", action="store_true", help="store NAME even where flor.log logs it too")

    _replay_parser(commands)

    resume = commands.add_parser("resume", help="continue a killed run from its last checkpoint")
    resume.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")

    ui = commands.add_parser(
        "ui", help="browse, compare and chart runs in a local web page (read-only)",
        description="Serve a read-only web page of this project's runs on this machine.",
    )
    ui.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ui.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; widen it on purpose)",
    )
    ui.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")

    doctor = commands.add_parser(
        "doctor", help="check the database, checkpoints and code versions; --repair fixes what it can",
        description="Check the project's flor records; with --repair, fix what can be rebuilt "
        "(damaged files are moved aside, never overwritten).",
    )
    doctor.add_argument("--repair", action="store_true", help="repair what can be rebuilt")
    gc = commands.add_parser("gc", help="thin old runs' checkpoints to a spine (first, last, every K-th, before branches)")
    gc.add_argument("--runs", action="append", help="tstamp prefixes (comma-separated or repeated; default all runs)")
    gc.add_argument("--keep-last", type=int, default=0, metavar="N", help="leave the newest N runs alone")
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="only runs started more than DAYS ago")
    gc.add_argument("--budget", metavar="BYTES", help="thin, oldest runs first, until checkpoints fit (e.g. 2G)")
    gc.add_argument("--include-pinned", action="store_true", help="thin checkpoints flor.best pinned too")
    gc.add_argument("--dry-run", action="store_true", help="say what would be freed and what replay would cost")
    return parser


def _replay_parser(commands) -> None:
    parser = commands.add_parser(
        "replay", help="recover new flor.log statements for past runs",
        description="Recover values of flor.log statements added to today's script, for past runs.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="names to recover (default: every new flor.log)")
    # One value per --runs (comma-separated, or the option repeated): a list that swallowed
    # every word after it would take the names too (`--runs A NAME`).
    parser.add_argument("--runs", action="extend", type=_comma_list, metavar="TSTAMP[,TSTAMP...]",
                        help="only runs whose tstamp starts with these (repeat --runs or separate with commas)")
    parser.add_argument("--where", metavar="EXPR",
                        help="only runs where EXPR holds over args and last logged values, e.g. \"lr < 0.01\"")
    parser.add_argument("--iterations", metavar="LOOP=SEL", help="outer iterations: epoch=all|last|0,5,9 (default: all)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="parallel worker processes (default 1)")
    parser.add_argument("--gpus", metavar="IDS", help="comma-separated GPU ids; each worker gets one")
    parser.add_argument("--executor", choices=("local", "ray"), help="where segments run (default local; FLOR_EXECUTOR)")
    parser.add_argument("--address", metavar="ADDRESS", help="with --executor ray: the cluster (FLOR_RAY_ADDRESS)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan per run and its estimated time, run nothing")
    parser.add_argument("--diff", action="store_true", help="with --dry-run: show where each statement is inserted")
    parser.add_argument("--force", action="store_true", help="replay runs that already hold the values")
    parser.add_argument("--confirm", action="store_true", help="ask before running")
    parser.add_argument("--accept-drift", action="store_true",
                        help="store values of iterations whose recorded values still drift after re-executing them")
    parser.add_argument("--allow-inexact", action="store_true",
                        help="run --workers N even where N x the run's threads exceed the cores (other arithmetic: "
                        "values may differ from the recording and are stored anyway)")
    parser.add_argument("--confinement", choices=("auto", "namespace", "copy", "none"),
                        help="how the old code's writes are kept from your files (default auto: a private view where "
                        "the kernel allows it, else copies guarded by Landlock; none: unguarded; FLOR_REPLAY_CONFINE)")
    parser.add_argument("--kwargs", nargs="*", help=argparse.SUPPRESS)


# -- output -------------------------------------------------------------------------------------


def _print_table(df, args) -> None:
    import pandas as pd

    if getattr(args, "csv", False):
        df.to_csv(sys.stdout, index=False)
    elif getattr(args, "json", False):
        # Not DataFrame.to_json: it rounds floats to 10 digits and fails on bytes.
        from .output import frame_rows, write_json_lines

        write_json_lines(list(df.columns), frame_rows(df), sys.stdout)
    elif df.empty:
        print("(no rows)" if len(df.columns) else "(no runs)")
    else:
        if "git_head" in df.columns:  # the full hash is in --csv/--json and the library's table
            df = df.assign(git_head=df["git_head"].map(lambda c: c[:10] if isinstance(c, str) else c))
        with pd.option_context(
            "display.max_rows", None, "display.max_columns", None, "display.width", None,
            "display.max_colwidth", None,
        ):
            print(df.to_string(index=False))


def _head(run) -> str:
    """The user's HEAD when the run started, short, with ``+dirty`` when the code differed from it."""
    if run.git_head is None:
        return "-"
    return run.git_head[:10] + ("+dirty" if run.git_dirty else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- commands -----------------------------------------------------------------------------------


def _cmd_dataframe(args) -> int:
    from .query import dataframe

    with _warnings_as_lines():
        df = dataframe(*args.names, latest=args.latest, last=args.last, read_by=args.read_by,
                       readers_of=args.readers_of)
    _print_table(df, args)
    return EXIT_OK


@contextlib.contextmanager
def _warnings_as_lines():
    """Print the library's FlorWarnings as one line each (not Python's two-line file:line form)."""
    import warnings

    from .errors import FlorWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlorWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, FlorWarning):
            warn(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _cmd_query(args) -> int:
    from .query import query_rows

    columns, rows = query_rows(args.sql)
    if args.json or args.csv:
        # Straight from the sqlite rows: a DataFrame would turn an int column with a NULL into
        # floats.
        from .output import write_csv, write_json_lines

        (write_json_lines if args.json else write_csv)(columns, rows, sys.stdout)
        return EXIT_OK
    import pandas as pd

    _print_table(pd.DataFrame.from_records(rows, columns=columns), args)
    return EXIT_OK


def _cmd_runs(args) -> int:
    from .query import open_for_reading

    store = open_for_reading()
    try:
        runs = store.runs()
        if not runs:
            print("(no runs)")
            return EXIT_OK
        lines = [("tstamp", "status", "duration", "filename", "commit", "git_head", "args")]
        for run in runs:
            shown_args = " ".join(f"{k}={v}" for k, v in store.args(run.run_id).items())
            if not shown_args and len(run.argv) > 1:  # no args declared: what it was started with
                shown_args = "(command) " + " ".join(run.argv[1:])
            lines.append((
                run.tstamp, run.status, _duration(run.duration), run.filename,
                (run.code_commit or "unversioned")[:10], _head(run), shown_args,
            ))
    finally:
        store.close()
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]) - 1)]
    for row in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + str(row[-1]))
    return EXIT_OK


def _cmd_show(args) -> int:
    from .checkpoints import handoff
    from .query import open_for_reading

    store = open_for_reading()
    try:
        run = store.find_run(args.run)
        started = datetime.fromtimestamp(run.started).isoformat(timespec="seconds")
        print(f"run       {run.tstamp}")
        print(f"project   {run.projid}")
        print(f"file      {run.filename}  (cwd {run.cwd})")
        print(f"status    {run.status}" + (f": {run.error}" if run.error else ""))
        print(f"started   {started}  duration {_duration(run.duration)}")
        print(f"command   {' '.join(run.argv)}")
        print(f"code      {run.code_commit or 'unversioned'}" + (f"  ({run.vcs_note})" if run.vcs_note else ""))
        if run.git_head is not None:
            state = "with uncommitted or untracked changes" if run.git_dirty else "clean"
            print(f"git head  {run.git_head}  ({state})")
        _show_left_out(run.environment)
        if run.resumed_from:
            print(f"resumes   {store.run(run.resumed_from).tstamp}")
        arguments = store.args(run.run_id)
        print("args      " + (", ".join(f"{k}={v!r}" for k, v in arguments.items()) or "(none)"))
        names = store.log_names(run.run_id)
        last = store.last_values_of_runs([run.run_id]).get(run.run_id, {})
        print("logs")
        if not names:
            print("  (none)")
        for name, source, count in names:
            # The run's last value (at its last iteration, any source) on the line of its source.
            tail = f"  last {last[name][0]!r}" if name in last and last[name][1] == source else ""
            print(f"  {name:<20} {count:>8} {source}{tail}")
        print("output    " + _captured(run.environment.get("capture"), store.output_counts([run.run_id])))
        checkpoints = store.checkpoints(run.run_id)
        writing = handoff.pending(store.path.parent, run.run_id)
        print("checkpoints" + ("" if checkpoints or writing else "  (none)"))
        policy = (run.environment.get("checkpoints") or {}).get("explain")
        if policy:
            print(f"  policy: {policy}")
        for ckpt in checkpoints:
            print(
                f"  iteration {ckpt.iteration:>5} ({ckpt.point:<6})  {ckpt.bytes / 1e6:9.2f} MB  "
                f"written {ckpt.bytes_written / 1e6:9.2f} MB  snapshot {1000 * (ckpt.snapshot_s or 0):7.1f} ms  "
                f"write {1000 * (ckpt.write_s or 0):7.1f} ms"
            )
        for marker, pid in writing:
            print(f"  {marker.name.removesuffix(handoff.MARKER)}  being written by pid {pid}")
        for failure in handoff.failures(store.path.parent, run.run_id):
            print(f"  not written: {failure}")
        _show_items_and_lineage(store, run)
    finally:
        store.close()
    return EXIT_OK


def _show_left_out(environment: dict) -> None:
    """What the run's code version left out and why (replay reads today's copy of these)."""
    from .vcs import Excluded

    excluded = [Excluded.from_json(entry) for entry in environment.get("excluded") or []]
    capped = list(environment.get("left_out") or {})
    if not excluded and not capped:
        return
    print("left out  of the code version (replay reads today's copy from the project)")
    for entry in excluded:
        count = f"{entry.files} file(s)" if entry.path.endswith("/") else ""
        why = "default pattern" if entry.source == "default" else f"{entry.source} pattern"
        print(f"  {entry.path:<40} {count:>12}  {why} {entry.pattern}")
    more = environment.get("excluded_more")
    if more:
        print(f"  ... and {more} more")
    for rel in capped:
        print(f"  {rel:<40} {'':>12}  over the size cap (FLOR_SNAPSHOT_MAX_BYTES)")


def _show_items_and_lineage(store, run) -> None:
    """The keyed items of a run (skipped ones with the run that did them) and its lineage."""
    counts = store.item_counts(run.run_id)
    if counts:
        print("items")
        for loop_name, state, count, by_run in counts:
            if state == "skipped":
                print(f"  {loop_name:<20} {count:>8} skipped: done before by run {store.run(by_run).tstamp} "
                      f"(same loop body and args)")
            else:
                print(f"  {loop_name:<20} {count:>8} {'done' if state == 'done' else 'not finished'}")
    for title, rows in (("read from", store.read_from(run.run_id)), ("read by", store.read_by(run.run_id))):
        if rows:
            print(title)
            for _run_id, tstamp, filename, how in rows:
                print(f"  {tstamp}  {filename}  ({how})")


def _cmd_logs(args) -> int:
    import json

    from .console import lines
    from .query import open_for_reading

    store = open_for_reading()
    try:
        run = store.find_run(args.run)
        for line in lines(store, run.run_id, streams=args.stream, grep=args.grep):
            if args.json:
                print(json.dumps(line.to_json(), ensure_ascii=False))
            else:
                print(line.text)
    finally:
        store.close()
    return EXIT_OK


def _context_text(context: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in context.items()) or "run"


def _cmd_extract(args) -> int:
    from .extraction import extract

    report = extract(args.name, args.pattern, runs=args.runs, where=args.where, streams=args.stream,
                     dry_run=args.dry_run, force=args.force)
    for run in report.runs:
        print(f"{run.tstamp}  {run.count} match(es) in {run.lines} line(s)")
        if args.dry_run:
            for context, value, text in run.samples:
                print(f"    {_context_text(context):<24} {value!r:<14} {text.strip()[:100]}")
    if args.dry_run:
        print(f"dry run: {report.count} value(s) of {args.name} would be stored; nothing was")
    else:
        print(f"done: {args.name}: {report.stored} value(s) stored from captured output")
    return EXIT_OK


def _captured(summary: dict | None, counts: dict) -> str:
    """What `flor show` says of a run's captured output."""
    lines = sum(counts.values())
    if not summary and not lines:
        return "(none captured)"
    summary = summary or {}
    streams = ", ".join(f"{n} {name}" for name, n in (summary.get("streams") or {}).items())
    text = f"{lines} line(s)" + (f", {summary['bytes'] / 1024:.1f} KiB" if "bytes" in summary else "")
    text += f" ({streams})" if streams else ""
    if summary.get("truncated"):
        text += f"; stopped at the cap of {summary['max_bytes'] / (1 << 20):g} MiB (FLOR_CAPTURE_MAX_BYTES)"
    return text + "; `flor logs RUN` prints it"


def _cmd_replay(args) -> int:
    from .replay.session import replay

    if args.kwargs is not None:
        raise UsageError("replay runs each run with its recorded args; --kwargs overrides are refused")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    report = replay(
        *args.names, runs=args.runs, where=args.where, iterations=args.iterations, workers=args.workers,
        gpus=gpus, dry_run=args.dry_run, diff=args.diff, force=args.force, confirm=args.confirm,
        accept_drift=args.accept_drift, allow_inexact=args.allow_inexact, out=sys.stdout, progress=sys.stderr,
        executor=args.executor, address=args.address, confinement=args.confinement,
    )
    return {
        "ok": EXIT_OK, "failed": EXIT_FAILED, "refused": EXIT_REFUSED, "drifted": EXIT_DRIFT,
    }[report.outcome]


def _cmd_resume(args) -> int:
    from .resume import resume

    return resume(args.run)


def _cmd_ui(args) -> int:
    from .ui import serve_project

    return serve_project(host=args.host, port=args.port, open_browser=not args.no_browser)


def _cmd_doctor(args) -> int:
    from .doctor import check

    report = check(repair=args.repair)
    for problem in report.problems:
        print(f"flor doctor: {problem.line()}")
    for note in report.notes + report.space:
        print(f"flor doctor: {note}")
    remaining = sum(not p.repaired for p in report.problems)
    repaired = len(report.problems) - remaining
    if not report.problems:
        print("flor doctor: no problems found")
    elif remaining:
        print(f"flor doctor: {remaining} problem(s) remain" + (f", {repaired} repaired" if repaired else ""))
    else:
        print(f"flor doctor: {repaired} problem(s) repaired")
    sys.stdout.flush()
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_gc(args) -> int:
    from .checkpoints.gc import gc_project

    done = gc_project(args.runs, args.keep_last, args.older_than, args.budget, args.dry_run, args.include_pinned)
    print("\n".join(f"flor gc: {line}" for line in done.describe()))
    return EXIT_OK


_HANDLERS = {
    "dataframe": _cmd_dataframe, "query": _cmd_query, "runs": _cmd_runs, "show": _cmd_show,
    "logs": _cmd_logs, "extract": _cmd_extract,
    "replay": _cmd_replay, "resume": _cmd_resume, "ui": _cmd_ui, "doctor": _cmd_doctor, "gc": _cmd_gc,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flor`` and ``python -m flor``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _HANDLERS[args.command](args) or EXIT_OK
    except FlorError as exc:
        error(exc)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED  # its subclasses too (FilterError)
    except KeyboardInterrupt:
        print("flor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK

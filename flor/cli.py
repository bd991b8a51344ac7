"""The ``flor`` command line. Every command is defined here and calls one library function;
flor errors become one line on stderr and a documented exit status.

    flor dataframe [NAME ...] [--latest | --last] [--where EXPR] [--order KEYS] [--limit N] [--csv | --json]
    flor query SQL [--csv | --json]
    flor runs [--where EXPR] [--status S] [--order KEYS] [--limit N] [--csv | --json]
    flor show RUN [--csv | --json]
    flor logs RUN [--grep REGEX] [--stream stdout|stderr|logging] [--csv | --json]
    flor extract NAME PATTERN [--runs ...] [--where EXPR] [--stream ...] [--dry-run] [--force]
    flor replay [NAME ...] [--runs TSTAMP[,TSTAMP...]] [--where EXPR] [--workers N] ...
    flor export --to mlflow|tensorboard|wandb [NAME ...] [--runs ...] [--where EXPR] [--csv | --json]
    flor checkpoint export RUN [--iteration N] --to model.safetensors|model.pt [--object NAME]
    flor resume RUN
    flor ui [--port N] [--host H] [--no-browser]
    flor doctor [--repair] [--csv | --json]

Every command that reads takes ``--json`` (one object per line, stable keys: docs/cli.md) and
``--csv``; text tables print a missing value as nothing, ints as ints and moments as times.

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
import io
import sys

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
    frame.add_argument("--rank", type=int, metavar="N", help="only rank N of distributed jobs")
    frame.add_argument("--read-by", metavar="RUN", help="only the runs whose values RUN read (lineage)")
    frame.add_argument("--readers-of", metavar="RUN", help="only the runs that read RUN's values (lineage)")
    _selection_options(frame)
    _format_options(frame)

    sql = commands.add_parser("query", help="read-only SQL over the store")
    sql.add_argument("sql", metavar="SQL")
    _format_options(sql)

    runs = commands.add_parser("runs", help="list runs with status, duration, args and commit")
    runs.add_argument("--status", action="extend", type=_comma_list, metavar="STATUS",
                      help="only runs of these statuses: running, finished, failed, killed (repeat or separate with commas)")
    _selection_options(runs)
    _format_options(runs)

    show = commands.add_parser("show", help="show one run")
    show.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")
    _format_options(show)

    logs = commands.add_parser("logs", help="what a run printed (stdout, stderr, logging), line by line")
    logs.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")
    logs.add_argument("--grep", metavar="REGEX", help="only lines this regular expression finds")
    logs.add_argument("--stream", action="extend", type=_comma_list, metavar="STREAM",
                      help="only stdout, stderr or logging (repeat or separate with commas)")
    _format_options(logs)

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
    _export_parser(commands)

    checkpoint = commands.add_parser("checkpoint", help="checkpoints out of flor: export a run's model to a file")
    actions = checkpoint.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ckpt = actions.add_parser(
        "export", help="write the registered objects' state at an iteration to .safetensors or .pt",
        description="Write the state of RUN's registered objects (flor.checkpointing) at one iteration to a file "
        "that serving or a registry reads; the run, iteration and code commit go into its metadata.",
    )
    ckpt.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")
    ckpt.add_argument("--iteration", type=int, metavar="N", help="the checkpoint at this iteration (default: the last)")
    ckpt.add_argument("--to", required=True, metavar="FILE", help="model.safetensors or model.pt")
    ckpt.add_argument("--object", metavar="NAME",
                      help="only this registered object, with its own keys (load_state_dict-ready)")
    ckpt.add_argument("--trusted", action="store_true",
                      help="unpickle objects the run kept as pickles (runs code: only for a .flor you trust)")

    resume = commands.add_parser("resume", help="continue a killed run (or a whole distributed job) from its last checkpoint")
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
    ui.add_argument("--allow-edit", action="store_true", help="let the page name, tag, note and archive runs")
    ui.add_argument("--base-path", default="", help="URL prefix a proxy serves the page under, e.g. /proxy/8080")
    ui.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="Host name a proxy forwards")

    doctor = commands.add_parser(
        "doctor", help="check the database, checkpoints and code versions; --repair fixes what it can",
        description="Check the project's flor records; with --repair, fix what can be rebuilt "
        "(damaged files are moved aside, never overwritten).",
    )
    doctor.add_argument("--repair", action="store_true", help="repair what can be rebuilt")
    _format_options(doctor)
    gc = commands.add_parser("gc", help="thin old runs' checkpoints to a spine (first, last, every K-th, before branches)")
    gc.add_argument("--runs", action="append", help="tstamp prefixes (comma-separated or repeated; default all runs)")
    gc.add_argument("--keep-last", type=int, default=0, metavar="N", help="leave the newest N runs alone")
    gc.add_argument("--older-than", type=float, metavar="DAYS", help="only runs started more than DAYS ago")
    gc.add_argument("--budget", metavar="BYTES", help="thin, oldest runs first, until checkpoints fit (e.g. 2G)")
    gc.add_argument("--include-pinned", action="store_true", help="thin checkpoints flor.best pinned too")
    gc.add_argument("--dry-run", action="store_true", help="say what would be freed and what replay would cost")
    return parser


def _format_options(parser) -> None:
    """--csv and --json, the same on every command that reads (docs/cli.md lists their keys)."""
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV: a header, then one line per row")
    fmt.add_argument("--json", action="store_true", help="print JSON objects, one per line, with stable keys")


def _selection_options(parser) -> None:
    """--where, --order and --limit over runs: the filter grammar of flor/reading/filters.py."""
    parser.add_argument("--where", metavar="EXPR",
                        help="only runs where EXPR holds over args, last logged values and run columns, e.g. \"lr < 0.01\"")
    parser.add_argument("--order", metavar="KEYS", help="order runs by these columns, e.g. \"val_loss, lr desc\"")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N runs")


def _fmt(args) -> str:
    return "json" if getattr(args, "json", False) else "csv" if getattr(args, "csv", False) else "text"


def _export_parser(commands) -> None:
    out = commands.add_parser(
        "export", help="write runs' values (recorded, replayed, extracted) into MLflow, TensorBoard or W&B",
        description="Write the values of NAME (default: every logged name) of past runs into the tracker run "
        "each flor run logged to (noted when it was recorded), or a new one per run; values the tracker "
        "already holds at the same step are not written again.",
    )
    out.add_argument("names", nargs="*", metavar="NAME", help="logged names (default: all)")
    out.add_argument("--to", required=True, choices=("mlflow", "tensorboard", "wandb"),
                     help="the tracker (wandb: a new run linked to the script's; W&B history only moves forward)")
    out.add_argument("--runs", action="extend", type=_comma_list, metavar="TSTAMP[,TSTAMP...]",
                     help="only runs whose tstamp starts with these (repeat --runs or separate with commas)")
    out.add_argument("--where", metavar="EXPR", help="only runs where EXPR holds over args and last logged values")
    out.add_argument("--tracking-uri", metavar="URI",
                     help="with --to mlflow: this tracking server or store instead of the one the run logged to")
    out.add_argument("--experiment", metavar="NAME", help="with --to mlflow: the experiment of new runs (default flor)")
    out.add_argument("--log-dir", metavar="DIR", help="with --to tensorboard: write under DIR/<tstamp> instead")
    _format_options(out)


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
    _format_options(parser)
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
    parser.add_argument("--export", choices=("mlflow", "tensorboard", "wandb"),
                        help="also write the values stored into this tracker (as flor export does)")
    parser.add_argument("--no-slice", action="store_true", help="memoized iterations run their whole body (no slice)")
    parser.add_argument("--verify-slice", type=int, default=2, metavar="N",
                        help="memoized iterations per worker (the first and, spread to the last, the rest) that also "
                        "run the whole body to check the slice (default 2)")
    parser.add_argument("--kwargs", nargs="*", help=argparse.SUPPRESS)


# -- output -------------------------------------------------------------------------------------


def _print_frame(df, args) -> None:
    """A DataFrame as --json, --csv or a text table (missing values empty, ints as ints, times as times)."""
    from .reading.output import frame_rows, write_rows

    columns, rows = list(df.columns), frame_rows(df)
    if _fmt(args) == "text" and "git_head" in columns:  # the full hash is in --csv/--json and the library's table
        at = columns.index("git_head")
        rows = [row[:at] + ((row[at][:10] if isinstance(row[at], str) else row[at]),) + row[at + 1:] for row in rows]
    write_rows(_fmt(args), columns, rows, sys.stdout, empty="(no rows)" if columns else "(no runs)")


# -- commands -----------------------------------------------------------------------------------


def _cmd_dataframe(args) -> int:
    from .reading.query import dataframe

    with _warnings_as_lines():
        df = dataframe(*args.names, latest=args.latest, last=args.last, read_by=args.read_by,
                       readers_of=args.readers_of, rank=args.rank, where=args.where, order_by=args.order,
                       limit=args.limit)
    _print_frame(df, args)
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
    from .reading.output import write_rows
    from .reading.query import query_rows

    # Straight from the sqlite rows: a DataFrame would turn an int column with a NULL into floats.
    columns, rows = query_rows(args.sql)
    write_rows(_fmt(args), columns, rows, sys.stdout)
    return EXIT_OK


def _cmd_runs(args) -> int:
    from .reading.output import write_rows
    from .reading.query import list_runs
    from .reading.runlist import COLUMNS, text_rows

    listed = list_runs(where=args.where, status=args.status, order=args.order, limit=args.limit)
    if _fmt(args) == "text":
        write_rows("text", *text_rows(listed), sys.stdout, empty="(no runs)")
    else:
        write_rows(_fmt(args), COLUMNS, [summary.row() for summary in listed], sys.stdout)
    return EXIT_OK


def _cmd_show(args) -> int:
    from .reading.output import write_rows
    from .reading.runinfo import JSON_KEYS, describe_run, text_lines

    details = describe_run(args.run)
    if _fmt(args) == "text":
        print("\n".join(text_lines(details)))
    else:
        record = details.to_json()
        write_rows(_fmt(args), JSON_KEYS, [tuple(record[key] for key in JSON_KEYS)], sys.stdout)
    return EXIT_OK


def _cmd_logs(args) -> int:
    from .reading.console import LINE_COLUMNS, run_lines
    from .reading.output import write_rows

    found = 0

    def rows():
        nonlocal found
        for line in run_lines(args.run, streams=args.stream, grep=args.grep):
            found += 1
            yield line.row()

    if _fmt(args) == "text":
        for row in rows():
            print(row[-1])
    else:
        write_rows(_fmt(args), LINE_COLUMNS, rows(), sys.stdout)
    # As grep: a search that found nothing exits 1 (and says nothing on stdout).
    return EXIT_FAILED if args.grep and not found else EXIT_OK


def _cmd_extract(args) -> int:
    from .reading.extraction import extract, text_lines

    report = extract(args.name, args.pattern, runs=args.runs, where=args.where, streams=args.stream,
                     dry_run=args.dry_run, force=args.force)
    print("\n".join(text_lines(report, args.name, dry_run=args.dry_run)))
    return EXIT_OK


def _cmd_replay(args) -> int:
    from .replay.session import replay

    if args.kwargs is not None:
        raise UsageError("replay runs each run with its recorded args; --kwargs overrides are refused")
    fmt = _fmt(args)
    if fmt != "text" and not args.dry_run:
        raise UsageError(f"--{fmt} prints the plan: add --dry-run (a replay prints its outcome as text)")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    report = replay(
        *args.names, runs=args.runs, where=args.where, iterations=args.iterations, workers=args.workers,
        gpus=gpus, dry_run=args.dry_run, diff=args.diff, force=args.force, confirm=args.confirm,
        accept_drift=args.accept_drift, allow_inexact=args.allow_inexact,
        out=sys.stdout if fmt == "text" else io.StringIO(), progress=sys.stderr,
        executor=args.executor, address=args.address, confinement=args.confinement, export=args.export,
        slicing=not args.no_slice, verify_slice=args.verify_slice,
    )
    if fmt != "text":
        from .reading.output import write_rows
        from .replay.report import PLAN_COLUMNS, plan_row

        write_rows(fmt, PLAN_COLUMNS, [plan_row(item) for item in report.runs], sys.stdout)
    return {
        "ok": EXIT_OK, "failed": EXIT_FAILED, "refused": EXIT_REFUSED, "drifted": EXIT_DRIFT,
    }[report.outcome]


def _cmd_export(args) -> int:
    from .export import COLUMNS, export, text_lines
    from .reading.output import write_rows

    report = export(args.to, *args.names, runs=args.runs, where=args.where, tracking_uri=args.tracking_uri,
                    experiment=args.experiment, log_dir=args.log_dir)
    if _fmt(args) == "text":
        print("\n".join(text_lines(report)))
    else:
        write_rows(_fmt(args), COLUMNS, report.rows(), sys.stdout)
    return EXIT_OK


def _cmd_checkpoint(args) -> int:
    from .checkpoints.export import export_checkpoint

    done = export_checkpoint(args.run, args.to, iteration=args.iteration, obj=args.object, trusted=args.trusted)
    extras = f", {done.extras} non-tensor value(s) in its metadata" if done.extras else ""
    print(f"{done.path}: {', '.join(done.objects)} of run {done.tstamp} at iteration {done.iteration} "
          f"({done.tensors} tensor(s){extras})")
    return EXIT_OK


def _cmd_resume(args) -> int:
    from .recording.resume import resume

    return resume(args.run)


def _cmd_ui(args) -> int:
    from .ui import serve_project

    return serve_project(host=args.host, port=args.port, open_browser=not args.no_browser, allow_edit=args.allow_edit,
                         base_path=args.base_path, allowed_hosts=tuple(args.allow_host))


def _cmd_doctor(args) -> int:
    from .doctor import check

    report = check(repair=args.repair)
    if _fmt(args) != "text":
        from .doctor import ROW_COLUMNS
        from .reading.output import write_rows

        write_rows(_fmt(args), ROW_COLUMNS, report.rows(), sys.stdout)
        return EXIT_OK if report.ok else EXIT_FAILED
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
    "replay": _cmd_replay, "export": _cmd_export, "checkpoint": _cmd_checkpoint, "resume": _cmd_resume, "ui": _cmd_ui,
    "doctor": _cmd_doctor, "gc": _cmd_gc,
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

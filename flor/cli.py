"""The ``flor`` command line. It calls only the library, and turns flor errors into one line.

    flor dataframe [NAME ...] [--csv | --json]
    flor query SQL
    flor runs
    flor show RUN
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime

from .errors import FlorError, UsageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flor", description="Record, query and replay ML training runs.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    frame = commands.add_parser("dataframe", help="all runs as one table of args and logs")
    frame.add_argument("names", nargs="*", metavar="NAME", help="args and log names (default: all)")
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

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


# Commands defined by other modules (replay, resume, ui, doctor) add themselves here.
_EXTRA_COMMANDS: list = []
_HANDLERS: dict = {}


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
        with pd.option_context(
            "display.max_rows", None, "display.max_columns", None, "display.width", None,
            "display.max_colwidth", None,
        ):
            print(df.to_string(index=False))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _cmd_dataframe(args) -> int:
    from .query import dataframe

    with _warnings_as_lines():
        df = dataframe(*args.names)
    _print_table(df, args)
    return 0


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
            print(f"flor: warning: {warning.message}", file=sys.stderr)
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
        return 0
    import pandas as pd

    _print_table(pd.DataFrame.from_records(rows, columns=columns), args)
    return 0


def _open_for_reading():
    from .query import _refresh_statuses, project_store

    _refresh_statuses(None)
    return project_store()


def _cmd_runs(args) -> int:
    store = _open_for_reading()
    try:
        runs = store.runs()
        if not runs:
            print("(no runs)")
            return 0
        lines = [("tstamp", "status", "duration", "filename", "commit", "args")]
        for run in runs:
            shown_args = " ".join(f"{k}={v}" for k, v in store.args(run.run_id).items())
            lines.append((
                run.tstamp, run.status, _duration(run.duration), run.filename,
                (run.code_commit or "unversioned")[:10], shown_args,
            ))
    finally:
        store.close()
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]) - 1)]
    for row in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + str(row[-1]))
    return 0


def _cmd_show(args) -> int:
    store = _open_for_reading()
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
        if run.resumed_from:
            print(f"resumes   {store.run(run.resumed_from).tstamp}")
        arguments = store.args(run.run_id)
        print("args      " + (", ".join(f"{k}={v!r}" for k, v in arguments.items()) or "(none)"))
        names = store.log_names(run.run_id)
        last = store.last_values(run.run_id)
        print("logs")
        if not names:
            print("  (none)")
        for name, source, count in names:
            tail = f"  last {last[name]!r}" if source == "record" and name in last else ""
            print(f"  {name:<20} {count:>8} {source}{tail}")
        from .checkpoints import handoff

        checkpoints = store.checkpoints(run.run_id)
        writing = handoff.pending(store.path.parent, run.run_id)
        print("checkpoints" + ("" if checkpoints or writing else "  (none)"))
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
    finally:
        store.close()
    return 0


_HANDLERS.update(dataframe=_cmd_dataframe, query=_cmd_query, runs=_cmd_runs, show=_cmd_show)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flor`` and ``python -m flor``; returns the exit status."""
    _load_extra_commands()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _HANDLERS[args.command](args) or 0
    except FlorError as exc:
        print(f"flor: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1  # its subclasses too (FilterError)
    except KeyboardInterrupt:
        print("flor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _load_extra_commands() -> None:
    """Import the modules that add commands (kept lazy so `flor runs` stays fast)."""
    import importlib

    for module in ("flor.replay.commands", "flor.checkpoints.commands", "flor.doctor", "flor.ui.commands"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module and not module.startswith(str(exc.name)):
                raise


def command(name: str, register, handler) -> None:
    """Add a subcommand: ``register(subparsers)`` defines it, ``handler(args)`` runs it."""
    if name not in _HANDLERS:
        _EXTRA_COMMANDS.append(register)
        _HANDLERS[name] = handler

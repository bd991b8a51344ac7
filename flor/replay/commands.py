"""``flor replay``: the command line of hindsight replay."""

from __future__ import annotations

import sys

from ..cli import command
from ..errors import UsageError


def _register(commands) -> None:
    parser = commands.add_parser(
        "replay", help="recover new flor.log statements for past runs",
        description="Recover values of flor.log statements added to today's script, for past runs.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="names to recover (default: every new flor.log)")
    parser.add_argument("--runs", nargs="+", metavar="TSTAMP", help="only runs whose tstamp starts with these")
    parser.add_argument("--where", metavar="EXPR", help="only runs where EXPR holds over args and last logged values, e.g. \"lr < 0.01\"")
    parser.add_argument("--iterations", metavar="LOOP=SEL", help="outer iterations: epoch=all|last|0,5,9 (default: all)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="parallel worker processes (default 1)")
    parser.add_argument("--gpus", metavar="IDS", help="comma-separated GPU ids; each worker gets one")
    parser.add_argument("--dry-run", action="store_true", help="print the plan per run and its estimated time, run nothing")
    parser.add_argument("--diff", action="store_true", help="with --dry-run: show where each statement is inserted")
    parser.add_argument("--force", action="store_true", help="replay runs that already hold the values")
    parser.add_argument("--confirm", action="store_true", help="ask before running")
    parser.add_argument("--kwargs", nargs="*", help=argparse_suppress())


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _handle(args) -> int:
    from .session import replay

    if args.kwargs is not None:
        raise UsageError("replay runs each run with its recorded args; --kwargs overrides are refused")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    report = replay(
        *args.names, runs=args.runs, where=args.where, iterations=args.iterations, workers=args.workers,
        gpus=gpus, dry_run=args.dry_run, diff=args.diff, force=args.force, confirm=args.confirm, out=sys.stdout,
    )
    return 0 if report.ok else 1


command("replay", _register, _handle)

"""flor export: a run's values (recorded, replayed, extracted) written into the user's tracker.

MLflow gets metrics with ``step`` on the run the script logged to, or a new run per flor run
(``to_mlflow``); TensorBoard an event file in the run's log dir, or a new one
(``to_tensorboard``); W&B, whose history only moves forward, a new run linked to the script's
(``to_wandb``). Which values at which step: ``points``. Each tracker's package is imported
only here, when asked for.

>>> export("mlflow", "grad_norm", runs=["2026-12"])      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

TARGETS = ("mlflow", "tensorboard", "wandb")
# The stable keys of `flor export --json/--csv`, one row per run.
COLUMNS = ("tstamp", "to", "where", "written", "skipped")


@dataclass(frozen=True)
class ExportedRun:
    tstamp: str
    to: str
    where: str  # the tracker run or log dir written to
    written: int  # values written (those the tracker already held are not written again)
    skipped: int  # values that are not numbers


@dataclass
class ExportReport:
    to: str
    runs: list[ExportedRun] = field(default_factory=list)

    def rows(self) -> list[tuple]:
        return [(r.tstamp, r.to, r.where, r.written, r.skipped) for r in self.runs]


def export(to: str, *names: str, runs=None, where: str | None = None, tracking_uri: str | None = None,
           experiment: str | None = None, log_dir: str | None = None, start: Path | None = None) -> ExportReport:
    """Write the values of ``names`` (default: every logged name) of the chosen finished runs
    (``runs``: tstamp prefixes; ``where``: flor's filter) into tracker ``to``."""
    from ..environment.vcs import find_root
    from .points import collect

    if to not in TARGETS:
        raise UsageError(f"flor export --to {to!r}: choose one of {', '.join(TARGETS)}")
    if to != "mlflow" and (tracking_uri or experiment):
        raise UsageError("--tracking-uri and --experiment go with --to mlflow")
    if to != "tensorboard" and log_dir:
        raise UsageError("--log-dir goes with --to tensorboard")
    root, _ = find_root(Path.cwd() if start is None else start)
    report = ExportReport(to)
    for found in collect(list(names), runs=runs, where=where, start=start):
        if to == "mlflow":
            from . import to_mlflow

            where_to, written = to_mlflow.write(found, tracking_uri=tracking_uri, experiment=experiment)
        elif to == "tensorboard":
            from . import to_tensorboard

            where_to, written = to_tensorboard.write(found, log_dir=log_dir, root=root)
        else:
            from . import to_wandb

            where_to, written = to_wandb.write(found)
        report.runs.append(ExportedRun(found.run.tstamp, to, where_to, written, found.skipped))
    return report


def text_lines(report: ExportReport) -> list[str]:
    """What ``flor export`` prints."""
    if not report.runs:
        return ["no finished runs to export"]
    out = [f"{r.tstamp}  {r.written} value(s) -> {r.where}" + (f"  ({r.skipped} not numbers, left out)" if r.skipped else "")
           for r in report.runs]
    out.append(f"done: {sum(r.written for r in report.runs)} value(s) exported to {report.to}")
    return out


def export_replayed(plans, to: str, start: Path | None = None) -> ExportReport:
    """``flor replay --export TO``: the values a replay just stored (each replayed run's new
    names) written into tracker ``to``."""
    report = ExportReport(to)
    for item in plans:
        if item.status == "done" and item.names:
            report.runs += export(to, *item.names, runs=[item.run.tstamp], start=start).runs
    return report

"""A replay session: choose runs, place the new statements, plan, execute, report.

>>> report = flor.replay("weight_norm", workers=2)          # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FlorError, UsageError
from ..messages import warn
from ..store import RunRow, Store
from ..vcs import Repo
from .analysis import AFTER, Layout, strategy_for
from .executor import LocalProcessExecutor, Task
from .plan import Costs, Segment, plan_run
from .progress import Progress
from .records import RunRecords
from .spec import WorkerSpec


@dataclass
class RunReplay:
    """The plan and the outcome of replaying one run."""

    run: RunRow
    status: str = "planned"  # planned, skipped, refused, done, failed
    reason: str = ""
    names: list[str] = field(default_factory=list)
    strategy: str = ""
    segments: list[Segment] = field(default_factory=list)
    diff: str = ""
    source: str = ""
    total: int = 0
    stored: int = 0
    matched: int = 0
    drifted: int = 0
    drift: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    outer_name: str | None = None
    checkpoints: dict = field(default_factory=dict)
    records: RunRecords | None = None

    @property
    def seconds(self) -> float:
        """Estimated seconds of this run's replay (sum over its segments)."""
        return sum(s.seconds for s in self.segments)


@dataclass
class ReplayReport:
    """Every run considered, with what happened to it."""

    runs: list[RunReplay]
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """'failed' when a run failed, else 'refused' when one was refused, else 'drifted' when
        replayed values drifted from the recording, else 'ok' (the CLI's exit status follows)."""
        statuses = {r.status for r in self.runs}
        if "failed" in statuses:
            return "failed"
        if "refused" in statuses:
            return "refused"
        if any(r.status == "done" and r.drifted for r in self.runs):
            return "drifted"
        return "ok"

    @property
    def ok(self) -> bool:
        """True when nothing failed, was refused or drifted."""
        return self.outcome == "ok"


def parse_iterations(spec: str | None, outer_name: str | None, total: int) -> list[int] | None:
    """``epoch=all|last|0,5,9`` -> the selected outer iterations (None: all)."""
    if not spec:
        return None
    name, sep, value = spec.partition("=")
    if not sep:
        raise UsageError(f"--iterations {spec!r}: write it as LOOP=all|last|0,5,9 (e.g. epoch=last)")
    if outer_name is not None and name.strip() != outer_name:
        raise UsageError(f"--iterations names the loop {name.strip()!r}, but the outer loop is {outer_name!r}")
    value = value.strip()
    if value == "all":
        return None
    if value == "last":
        return [total - 1] if total else []
    try:
        return sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--iterations {spec!r}: expected all, last or numbers like 0,5,9") from None


def _select_runs(store: Store, runs: list[str] | None, where: str | None) -> list[RunRow]:
    chosen = [r for r in store.runs() if r.status != "running"]
    if runs:
        prefixes = [p.strip() for p in runs if p.strip()]
        exact = {r.tstamp for r in chosen} & set(prefixes)
        # A full tstamp names one run even when a later run's tstamp extends it (same second).
        chosen = [r for r in chosen if r.tstamp in exact or any(
            r.tstamp.startswith(p) for p in prefixes if p not in exact)]
        if not chosen:
            raise UsageError(f"no finished run matches --runs {' '.join(prefixes)}; `flor runs` lists them")
    if where:
        # flor's own filter language (as in flor ui), never DataFrame.query: that evaluates
        # Python (`@pd.io.common.os.system(...)`, attribute chains, method calls).
        from ..filters import compile_filter

        records = []
        for run in chosen:
            row = {"tstamp": run.tstamp, **store.last_values(run.run_id), **store.args(run.run_id)}
            records.append(row)
        if records:
            keep = compile_filter(where, dict.fromkeys(name for row in records for name in row))
            chosen = [run for run, row in zip(chosen, records) if keep(row)]
    return chosen


def preload_modules(script: Path, root: Path) -> list[str]:
    """Modules that ``script`` imports at its top level from outside the project (torch, numpy):
    a warm worker imports them before its spec arrives. The project's own modules are left out,
    since a replay must import them from the run's version of the code."""
    import ast
    import importlib.util

    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    chosen, verdict = [], {}
    for name in names:
        top = name.split(".")[0]
        if top not in verdict:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            origin = (spec.origin or (list(spec.submodule_search_locations or []) or [None])[0]) if spec else None
            outside = origin is not None and not Path(origin).resolve().is_relative_to(root.resolve())
            verdict[top] = outside and top not in sys.builtin_module_names and spec.origin != "frozen"
        if verdict[top]:
            chosen.append(name)
    return chosen


class Session:
    """One `flor replay` invocation."""

    def __init__(self, names, *, runs=None, where=None, iterations=None, workers=1, gpus=None,
                 force=False, start: Path | None = None, out=None, progress=None) -> None:
        from ..query import project_store

        self.names = list(names or [])
        for name in self.names:
            if type(name) is not str or not name:
                raise UsageError(f"replay names must be strings, got {name!r}")
        if workers < 1:
            raise UsageError(f"--workers must be 1 or more, got {workers}")
        self.workers = workers
        self.gpus = gpus
        self.force = force
        if iterations:
            parse_iterations(iterations, None, 0)  # the form is checked now, the loop name per run
        self.iterations = iterations
        self.out = out or sys.stdout
        self.progress = progress or sys.stderr
        self.store = project_store(start, readonly=False)
        self.store.reap_killed()
        self.root = self.store.path.parent.parent
        self.repo = Repo(self.root)
        self.selected = _select_runs(self.store, runs, where)
        self.executor: LocalProcessExecutor | None = None

    def close(self) -> None:
        """Release the store and any worker that got no task."""
        if self.executor is not None:
            self.executor.close()
        self.store.close()

    def warm_up(self) -> None:
        """Start workers importing the script's libraries now, while planning goes on."""
        if not self.selected:
            return
        filenames = dict.fromkeys(run.filename for run in self.selected)
        preload = list(dict.fromkeys(m for name in filenames for m in preload_modules(self.root / name, self.root)))
        self.executor = LocalProcessExecutor(self.workers, self.gpus, preload)
        self.executor.warm_up(len(self.selected))

    # -- planning ---------------------------------------------------------------------------

    def plan(self) -> list[RunReplay]:
        """Place and plan every selected run."""
        from .propagation import Propagator

        plans = []
        todays: dict[str, str | None] = {}
        self._check_names_exist(todays)
        for run in self.selected:
            item = RunReplay(run)
            plans.append(item)
            try:
                self._plan_one(item, todays, Propagator)
            except FlorError as exc:
                item.status, item.reason = "refused", str(exc)
        return plans

    def _today(self, filename: str, todays: dict) -> str | None:
        if filename not in todays:
            path = self.root / filename
            todays[filename] = path.read_text() if path.is_file() else None
        return todays[filename]

    def _check_names_exist(self, todays: dict) -> None:
        """Names asked for that no flor.log of today's scripts logs: an error when none is
        logged anywhere (nothing could be replayed), else a warning naming them."""
        import ast

        from .florcalls import logged_names

        if not self.names or not self.selected:
            return
        logged: dict[str, None] = {}
        filenames = list(dict.fromkeys(run.filename for run in self.selected))
        for filename in filenames:
            text = self._today(filename, todays)
            if text is None:
                continue
            try:
                logged.update(dict.fromkeys(logged_names(ast.parse(text))))
            except (SyntaxError, ValueError):
                return  # the runs are refused one by one with the parse error
        unknown = [n for n in self.names if n not in logged]
        if not unknown:
            return
        where = " or ".join(f"today's {name}" for name in filenames)
        shown = ", ".join(logged) or "nothing"
        message = f"no flor.log of {' or '.join(map(repr, unknown))} in {where} (it logs: {shown})"
        if len(unknown) == len(self.names):
            raise UsageError(message + "; add the statement to the script first")
        warn(message)

    def _plan_one(self, item: RunReplay, todays, Propagator) -> None:
        run = item.run
        if not run.code_commit:
            item.status, item.reason = "refused", "its code version was not kept (recorded outside git); it cannot be replayed"
            return
        today = self._today(run.filename, todays)
        if today is None:
            item.status, item.reason = "refused", f"{run.filename} does not exist in the working tree today"
            return
        old = self.repo.read_file(run.code_commit, run.filename)
        records = item.records = RunRecords.read(self.store, run)
        # One matching of today's script against this version, to find the statements and place them.
        propagator = Propagator(today, old)
        statements = propagator.new_statements()
        if self.names:
            statements = [s for s in statements if set(s.names) & set(self.names)]
            if not statements:
                item.status = "skipped"
                item.reason = f"today's {run.filename} adds no flor.log of {', '.join(self.names)} to this run's version"
                return
        if not statements:
            item.status, item.reason = "skipped", f"today's {run.filename} adds no new flor.log to this run's version"
            return
        names = sorted({n for s in statements for n in s.names if not self.names or n in self.names})
        if not self.force:
            recorded = [n for n in names if n in records.recorded_names]
            if recorded:
                names = [n for n in names if n not in recorded]
                if not names:
                    item.status, item.reason = "skipped", f"already holds {', '.join(recorded)} (use --force to replay again)"
                    return
        item.names = names
        placement = propagator.place(statements)
        if not placement.ok:
            reason = placement.reason if placement.reason.startswith("could not place") else f"could not place: {placement.reason}"
            item.status, item.reason = "refused", reason
            return
        item.source = placement.source
        item.diff = placement.diff(old, run.filename)
        layout = Layout.of(placement.source)
        places = {layout.where(ins.lineno) for ins in placement.inserted}
        outer_name = layout.outer_name
        recorded_loops = sorted({c[3] for c in records.contexts if c[1] is None})
        if layout.outer is None and recorded_loops:
            # The run went through flor.loop, but the analysis cannot see which statement is its
            # outer loop (flor.loop reached under a name no import gives it): a plan would skip it.
            item.status = "refused"
            item.reason = (f"cannot tell which loop of {run.filename} is the flor.loop {recorded_loops[0]!r} that the run "
                           "recorded; call it as flor.loop(...) (or through an `import flor as ...` alias)")
            return
        checkpoints = records.checkpoints
        total, costs = records.costs(outer_name) if outer_name else (0, Costs())
        strategy = strategy_for(list(places))
        if layout.outer is None or not checkpoints:
            strategy = "reexec"  # nothing to restore from: re-execute the whole run
        read_after = layout.names_read_after_first_nested()
        memo_possible = records.variables_known and not (records.missing_variables & read_after)
        selected = parse_iterations(self.iterations, outer_name, total)
        if not self.force:
            done = records.done_for(names)
            if strategy == "outside" and -1 in done:
                item.status, item.reason = "skipped", f"already replayed {', '.join(names)} (use --force to replay again)"
                return
            if strategy != "outside" and done:
                base = list(range(total)) if selected is None else selected
                remaining = [i for i in base if i not in done]
                if not remaining and (AFTER not in places or -1 in done):
                    item.status, item.reason = "skipped", f"already replayed {', '.join(names)} (use --force to replay again)"
                    return
                selected = remaining
        if strategy == "reexec" and not checkpoints:
            # No checkpoints: one process re-executes everything.
            segment = Segment({i: "exec" for i in range(total)}, list(range(total)) if selected is None else selected,
                              total, True, True, True)
            segment.seconds = 2.0 + costs.before_loop_s + sum(costs.iteration_s)
            item.segments = [segment]
        else:
            item.segments = plan_run(
                strategy, total, checkpoints, places=places, selected=selected, workers=self.workers,
                costs=costs, memo_ok=lambda index: memo_possible,
            )
        item.strategy = strategy
        item.total = total
        item.outer_name = outer_name
        item.checkpoints = checkpoints
        if not item.segments:
            item.status, item.reason = "skipped", "no iterations selected"

    # -- execution ----------------------------------------------------------------------------

    def execute(self, plans: list[RunReplay]) -> float:
        """Run every planned segment; fill in the outcomes. Returns the wall time."""
        todo = [p for p in plans if p.status == "planned"]
        if not todo:
            return 0.0
        scratch = Path(tempfile.mkdtemp(prefix="flor-replay-"))
        tasks, owner = [], {}
        started = time.monotonic()
        try:
            for number, item in enumerate(todo):
                folder = scratch / f"run{number}"
                workspace = folder / "tree"
                from .workspace import prepare

                prepare(self.repo, item.run.code_commit, item.run.filename, item.source, workspace)
                recorded_names = sorted(item.records.recorded_names)
                for index, segment in enumerate(item.segments):
                    key = f"{number}.{index}"
                    spec = WorkerSpec(
                        run_id=item.run.run_id, tstamp=item.run.tstamp, root=str(self.root), db=str(self.store.path),
                        workspace=str(workspace), filename=item.run.filename,
                        cwd=item.run.cwd if not os.path.isabs(item.run.cwd) else ".", argv=list(item.run.argv),
                        names=list(item.names), recorded_names=recorded_names, outer_name=item.outer_name,
                        checkpoints=item.checkpoints, segment=segment,
                        result_path=str(folder / f"{index}.result.json"),
                        progress_path=str(folder / f"{index}.progress.json"),
                    )
                    spec_path = folder / f"{index}.spec.json"
                    spec_path.write_text(spec.to_json())
                    task = Task(key, spec_path, folder / f"{index}.result.json", folder / f"{index}.progress.json",
                                len(segment.actions) or 1, segment.seconds, folder / f"{index}.log")
                    tasks.append(task)
                    owner[key] = item
            progress = Progress(self.progress, {p.run.tstamp: sum(len(s.actions) or 1 for s in p.segments) for p in todo},
                                {t.key: owner[t.key].run.tstamp for t in tasks})
            if self.executor is None:
                self.executor = LocalProcessExecutor(self.workers, self.gpus)
            outcomes = self.executor.run(tasks, progress.update)
            progress.close()
            for outcome in outcomes:
                item = owner[outcome.task.key]
                result = outcome.result
                item.stored += result.get("stored", 0)
                item.matched += result.get("matched", 0)
                item.drifted += result.get("drifted", 0)
                for name, entry in (result.get("drift") or {}).items():
                    merged = item.drift.setdefault(name, {"count": 0, "max_difference": None})
                    merged["count"] += entry["count"]
                    if entry.get("max_difference") is not None:
                        merged["max_difference"] = max(merged["max_difference"] or 0.0, entry["max_difference"])
                if not outcome.ok:
                    item.errors.append(outcome.error or "failed")
            for item in todo:
                item.status = "failed" if item.errors else "done"
                item.reason = "; ".join(dict.fromkeys(item.errors))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return time.monotonic() - started


def describe_plan(item: RunReplay, diff: bool = False) -> str:
    """The --dry-run text of one run."""
    head = f"{item.run.tstamp}  {item.run.filename}"
    if item.status != "planned":
        return f"{head}  {item.status}: {item.reason}"
    lines = [f"{head}  {item.strategy} for {', '.join(item.names)}  (estimated {item.seconds:.1f} s)"]
    for number, segment in enumerate(item.segments, 1):
        lines.append(f"    segment {number}: {segment.describe()}  (~{segment.seconds:.1f} s)")
    if diff and item.diff:
        lines.append("".join("    " + line for line in item.diff.splitlines(keepends=True)).rstrip())
    return "\n".join(lines)


def describe_outcome(item: RunReplay) -> str:
    """The closing line of one run."""
    head = f"{item.run.tstamp}  "
    if item.status == "done":
        text = f"{head}done: {', '.join(item.names)}: {item.stored} value(s) stored"
    elif item.status == "failed":
        text = f"{head}failed: {item.reason} (finished segments are kept; run `flor replay` again for the rest)"
        if item.stored:
            text += f"; {item.stored} value(s) stored"
    else:
        return f"{head}{item.status}: {item.reason}"
    checked = item.matched + item.drifted
    if checked:
        if item.drifted:
            worst = ", ".join(
                f"{name} ({entry['count']}x" + (f", max |diff| {entry['max_difference']:.3g})" if entry["max_difference"] is not None else ")")
                for name, entry in item.drift.items()
            )
            text += f"; fidelity: {item.matched} of {checked} recorded values matched, DRIFTED: {worst}"
        else:
            text += f"; fidelity: {item.matched} of {checked} recorded values matched"
    return text


def replay(*names: str, runs=None, where=None, iterations=None, workers: int = 1, gpus=None,
           dry_run: bool = False, diff: bool = False, force: bool = False, confirm: bool = False,
           out=None, progress=None) -> ReplayReport:
    """Recover ``names`` (default: every new flor.log of today's script) for past runs.

    Results (plans, outcomes) are written to ``out`` (default stdout); progress bars and timings
    to ``progress`` (default stderr).

    >>> flor.replay("weight_norm", workers=2)           # doctest: +SKIP
    """
    out = out or sys.stdout
    session = Session(names, runs=runs, where=where, iterations=iterations, workers=workers, gpus=gpus,
                      force=force, out=out, progress=progress)
    try:
        if not dry_run and not confirm:
            session.warm_up()
        plans = session.plan()
        if not plans:
            print("no runs to replay", file=out)
            return ReplayReport([])
        if dry_run:
            for item in plans:
                print(describe_plan(item, diff), file=out)
            total = sum(p.seconds for p in plans if p.status == "planned")
            print(f"estimated {total:.1f} s of work with {workers} worker(s)", file=out)
            return ReplayReport(plans)
        if confirm:
            planned = [p for p in plans if p.status == "planned"]
            for item in plans:
                print(describe_plan(item, diff), file=out)
            answer = input(f"replay {len(planned)} run(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("nothing replayed", file=out)
                return ReplayReport(plans)
        seconds = session.execute(plans)
        for item in plans:
            print(describe_outcome(item), file=out)
        return ReplayReport(plans, seconds)
    finally:
        session.close()

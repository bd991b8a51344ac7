"""Planning one `flor replay`: for each selected run, place today's new statements into its code
version, and decide which iterations each worker memoizes, restores and re-executes.

The planner is given what it reads from: the store (each run's records, read once into
``RunRecords``), the repository (the run's code version) and the replay's options. It writes
nothing and starts nothing: its result is one :class:`~flor.replay.report.RunReplay` per run,
holding its :class:`~flor.replay.report.RunPlan` (planned, skipped or refused with a reason),
which ``execution`` then runs.

A plan is frozen once made. This module alone makes plans, and alone replaces one after: the
functions at its end (:func:`refuse`, :func:`follow`, :func:`whole_body`) are the decisions that
tie a distributed job's ranks together (``job.plan_jobs``), made after every rank is planned
(``tests/test_architecture.py`` checks that no other module builds or replaces a plan).
"""

from __future__ import annotations

import copy
import os
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

from ..environment import settings
from ..errors import FlorError, UsageError
from ..messages import warn
from ..store import RunRow, Store
from ..recording.notebook import is_notebook, is_unknown, script_of, todays_source
from ..environment.vcs import Repo
from .analysis import AFTER, BODY, NESTED, Layout, strategy_for
from .isolation import groups_of, training_call, wrap
from .plan import Costs, Segment, alone_check, plan_driven, plan_independent, plan_run, runs_nested_after_memo
from .records import RunRecords
from .report import RunPlan, RunReplay


def parse_iterations(spec: str | None, outer_name: str | None, total: int,
                     item_keys: dict[str, int] | None = None) -> list[int] | None:
    """``epoch=all|last|0,5,9`` -> the selected outer iterations (None: all); for a keyed loop
    the values are its items' keys (``document=a.txt,b.txt``), mapped through ``item_keys``."""
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
    if item_keys:
        wanted = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [k for k in wanted if k not in item_keys]
        if len(unknown) == len(wanted):
            shown = ", ".join(list(item_keys)[:5]) + (", ..." if len(item_keys) > 5 else "")
            raise UsageError(f"--iterations {name.strip()}={value}: no such item in this run (its items: {shown})")
        return sorted({item_keys[k] for k in wanted if k in item_keys})
    try:
        return sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--iterations {spec!r}: expected all, last or numbers like 0,5,9") from None


class _Draft:
    """One run's plan while the planner makes it: :class:`RunPlan`'s fields, settable, frozen
    into the plan once its status is decided. A refusal keeps what was decided before it (the
    names, which ``--dry-run --json`` shows)."""

    def __init__(self, run: RunRow) -> None:
        self.run = run
        for spec in fields(RunPlan):
            setattr(self, spec.name, spec.default_factory() if spec.default_factory is not MISSING else spec.default)

    def freeze(self, status: str, reason: str) -> RunPlan:
        decided = {spec.name: getattr(self, spec.name) for spec in fields(RunPlan)}
        return RunPlan(**{**decided, "status": status, "reason": reason})


@dataclass
class _Placed:
    """Today's new statements found in one old version, and where they were placed."""

    propagator: object  # propagation.Propagator (imported where it is used: the matcher is heavy)
    statements: list
    placement: object = None  # propagation.Placement, made the first time a run of this version needs it


class Planner:
    """Plans the replay of runs; see the module docstring."""

    def __init__(self, store: Store, repo: Repo, root: Path, *, names: list[str], force: bool,
                 iterations: str | None, workers: int, slicing: bool = True) -> None:
        self.store = store
        self.slicing = slicing  # memoized iterations run the slice of the new statements (slice.py)
        self.repo = repo
        self.root = root
        self.names = names
        self.force = force
        self.iterations = iterations
        self.workers = workers
        self.selected: list[RunRow] = []
        # Runs of one sweep share a code version: the matching of today's script against it
        # (hundreds of ms for a 200-line script) is made once per (today's text, old text).
        self._placed: dict[tuple[str, str], _Placed] = {}
        self._analysed: dict[tuple, object] = {}  # what depends on the placed source alone, by key

    def plan(self, selected: list[RunRow]) -> list[RunReplay]:
        """Place and plan every run of ``selected``."""
        from .propagation import Propagator

        self.selected = selected
        plans = []
        todays: dict[str, str | None] = {}
        self._check_names_exist(todays)
        for run in self.selected:
            draft = _Draft(run)
            try:
                status, reason = self._plan_one(draft, todays, Propagator)
            except FlorError as exc:
                status, reason = "refused", str(exc)
            plans.append(RunReplay(run, draft.freeze(status, reason)))
        return plans

    def _once(self, key: tuple, make):
        """What the placed source alone decides (its layout, its observer wrapping, its slice),
        made once per key: the runs of one code version share them. Shared results are read,
        never changed, by the plans that hold them."""
        if key not in self._analysed:
            self._analysed[key] = make()
        return self._analysed[key]

    def _today(self, filename: str, todays: dict) -> str | None:
        if filename not in todays:
            todays[filename] = todays_source(self.root, filename)  # a notebook: its code cells as a script
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
            where = "to a cell of the notebook" if all(map(is_notebook, filenames)) else "to the script"
            raise UsageError(f"{message}; add the statement {where} first")
        warn(message)

    def _plan_one(self, draft: _Draft, todays, Propagator) -> tuple[str, str]:
        """Fill in ``draft`` (the draft of one run's plan); its status and reason."""
        run = draft.run
        if not run.code_commit:
            return "refused", "its code version was not kept (recorded outside git); it cannot be replayed"
        today = self._today(run.filename, todays)
        if today is None:
            return "refused", (
                "its kernel did not say which notebook it ran (docs/notebooks.md): today's cells cannot be read"
                if is_unknown(run.filename) else f"{run.filename} does not exist in the working tree today")
        old = self.repo.read_file(run.code_commit, script_of(run.filename))  # a notebook: the cells it ran
        records = draft.records = RunRecords.read(self.store, run)
        # One matching of today's script against this version, to find the statements and place them.
        placed = self._placed.get((today, old))
        if placed is None:
            propagator = Propagator(today, old)
            statements = propagator.new_statements()
            if self.names:
                statements = [s for s in statements if set(s.names or s.feeds) & set(self.names)]
            placed = self._placed[(today, old)] = _Placed(propagator, statements)
        statements = placed.statements
        if self.names:
            if not statements:
                return "skipped", f"today's {run.filename} adds no flor.log of {', '.join(self.names)} to this run's version"
        if not statements:
            return "skipped", f"today's {run.filename} adds no new flor.log to this run's version"
        names = sorted({n for s in statements for n in s.names if not self.names or n in self.names})
        if not self.force:
            recorded = [n for n in names if n in records.recorded_names]
            if recorded:
                names = [n for n in names if n not in recorded]
                if not names:
                    return "skipped", f"already holds {', '.join(recorded)} (use --force to replay again)"
        draft.names = names
        if placed.placement is None:
            placed.placement = placed.propagator.place(statements)
        placement = placed.placement
        if not placement.ok:
            reason = placement.reason if placement.reason.startswith("could not place") else f"could not place: {placement.reason}"
            return "refused", reason
        training = next((t for t in (training_call(ins.text) for ins in placement.inserted if ins.placed) if t), "")
        if training:
            return "refused", (f"the new statement calls {training}: a hindsight statement observes the run and may "
                               "not train it; log a value computed without it")
        draft.source = placement.source
        if settings.replay_isolation():
            draft.source = self._once(("wrap", id(placement)),
                                      lambda: wrap(placement.source, groups_of(placement.inserted)))
        draft.diff = placement.diff(old, script_of(run.filename))  # a notebook: of the recorded cells
        framework = run.environment.get("framework") or ""
        if framework:
            from .frameworks import FrameworkLayout, describe

            layout = FrameworkLayout.of(placement.source, framework, records.args)
            draft.framework = framework
        else:
            layout = self._once(("layout", placement.source), lambda: Layout.of(placement.source))
        places = set().union(*(layout.places(ins.lineno) for ins in placement.inserted))
        if framework:
            first = placement.inserted[0].lineno
            draft.reach_note = describe(framework, layout.hook_of(first), places)
        outer_name = layout.outer_name
        recorded_loops = sorted({c.loop_name for c in records.contexts if c.parent_id is None})
        if layout.outer is None and recorded_loops:
            # The run went through flor.loop, but the analysis cannot see which statement is its
            # outer loop (flor.loop reached under a name no import gives it): a plan would skip it.
            return "refused", (f"cannot tell which loop of {run.filename} is the flor.loop {recorded_loops[0]!r} that "
                               "the run recorded; call it as flor.loop(...) (or through an `import flor as ...` alias)")
        unreproducible = self._unreproducible(run)
        if unreproducible:
            return "refused", unreproducible
        # Checkpoints that lack a registered object (its state could not be read while
        # recording) are never restored.
        checkpoints, draft.unkept_note = records.usable_checkpoints(outer_name or "iteration")
        total, costs = records.costs(outer_name) if outer_name else (0, Costs())
        strategy = draft.wanted = strategy_for(list(places))
        draft.nested = bool(layout.nested)
        if layout.outer is None or not checkpoints:
            strategy = "reexec"  # nothing to restore from: re-execute the whole run
        # A skipped loop's effect that no checkpoint holds matters where it is live: read before
        # the script assigns it again (liveness); module state may be read by anything.
        blocking, nested_only = _memo_blockers(layout, records)
        if not records.variables_known:
            blocking = ["the loops' variables could not be read from the script"]
        if framework and run.environment.get("framework_memo"):
            blocking = [f"no checkpoint holds the state where the training steps end ({run.environment['framework_memo']})"]
        memo_possible = not blocking
        draft.memo_blocked = blocking
        item_keys = _outer_keys(records, outer_name)
        try:
            selected = parse_iterations(self.iterations, outer_name, total, item_keys)
        except UsageError as exc:
            if not item_keys:
                raise
            return "skipped", str(exc)  # another run may have those items
        if BODY in places and NESTED not in places:
            selected = self._reached(draft, layout, placement, records, outer_name, total, selected)
        if not self.force:
            done = records.done_for(names)
            if strategy == "outside" and -1 in done:
                return "skipped", f"already replayed {', '.join(names)} (use --force to replay again)"
            if strategy != "outside" and done:
                base = list(range(total)) if selected is None else selected
                remaining = [i for i in base if i not in done]
                if not remaining and (AFTER not in places or -1 in done):
                    return "skipped", f"already replayed {', '.join(names)} (use --force to replay again)"
                selected = remaining
        independent = self._independent(layout, item_keys, places, run)
        if strategy == "reexec" and not checkpoints and independent:
            # Items that share no state: each replayed alone, split across the workers.
            draft.segments = plan_independent(list(range(total)) if selected is None else selected, self.workers,
                                              costs, places)
            draft.alone_check = alone_check(draft.segments)
            draft.reach_note = (draft.reach_note + "; " if draft.reach_note else "") + (
                f"the {outer_name} loop's iterations share no state: each item is replayed alone, "
                f"split across {min(self.workers, max(1, len(draft.segments)))} worker(s)")
        elif framework:
            draft.segments = plan_driven(strategy, total, checkpoints, places=places, selected=selected, costs=costs,
                                         memo_ok=lambda index: memo_possible)
        elif strategy == "reexec" and not checkpoints:
            # No checkpoints: one process re-executes everything.
            segment = Segment({i: "exec" for i in range(total)}, list(range(total)) if selected is None else selected,
                              total, True, True, True)
            segment.seconds = 2.0 + costs.before_loop_s + sum(costs.iteration_s)
            draft.segments = [segment]
        else:
            before_nested = strategy == "memo" and any(layout.before_first_nested(ins.lineno)
                                                       for ins in placement.inserted)
            draft.segments = plan_run(
                strategy, total, checkpoints, places=places, selected=selected, workers=self.workers,
                costs=costs, memo_ok=lambda index: memo_possible, before_nested=before_nested,
            )
            if memo_possible and nested_only and runs_nested_after_memo(draft.segments):
                # The nested loop would run again after a skipped one, reading what it left unkept.
                memo_possible = False
                draft.memo_blocked = nested_only
                draft.segments = plan_run(strategy, total, checkpoints, places=places, selected=selected,
                                          workers=self.workers, costs=costs, memo_ok=lambda index: False)
        # A re-execution after drift restores a memoized iteration and runs the next one.
        retry_ok = memo_possible and not nested_only
        draft.strategy = strategy
        draft.total = total
        draft.outer_name = outer_name
        draft.checkpoints = checkpoints
        draft.places, draft.costs, draft.retry_ok = places, costs, retry_ok
        if not draft.segments:
            return "skipped", "no iterations selected"
        if self.slicing and strategy == "memo" and memo_possible and not framework:
            # The project's modules come from the run's version: runs of one tree share the slice.
            tree = self._once(("tree", run.code_commit), lambda: self.repo.tree_id(run.code_commit))
            draft.slice = self._once(("slice", id(placement), draft.source, tuple(draft.names), tree,
                                      bool(run.environment.get("main_module"))),
                                     lambda: _slice(draft, placement, run, self._module_reader(run)))
        return "planned", ""

    def _independent(self, layout, item_keys: dict, places: set[str], run: RunRow) -> bool:
        """A keyed outer loop whose iterations share no state (``independence``, following the
        helpers of the run's own code version), with the new statements inside it (code after
        the loop needs every iteration's state)."""
        from .independence import carried

        if not item_keys or layout.outer is None or AFTER in places:
            return False
        return not carried(layout.outer, layout.tree, self._module_reader(run))

    def _module_reader(self, run: RunRow):
        """dotted module name -> its syntax tree in the run's code version (None: not the
        project's), looked up beside the script and at the project's root."""
        import ast
        import posixpath

        folder = posixpath.dirname(run.filename)
        listed: list[set[str]] = []

        def read(dotted: str):
            if not listed:  # read once, and only when the body calls an imported helper
                listed.append(set(self.repo.tree_files(run.code_commit)) if run.code_commit else set())
            files = listed[0]
            rel = dotted.replace(".", "/")
            for candidate in (posixpath.join(folder, rel + ".py"), posixpath.join(folder, rel, "__init__.py"),
                              rel + ".py", posixpath.join(rel, "__init__.py")):
                candidate = posixpath.normpath(candidate)
                if candidate in files:
                    return ast.parse(self.repo.read_file(run.code_commit, candidate))
            return None

        return read

    def _reached(self, draft: _Draft, layout, placement, records: RunRecords, outer_name: str, total: int,
                 selected: list[int] | None) -> list[int] | None:
        """Only the outer iterations a statement under an ``if`` can reach: those where the
        recorded logs of the same branch were logged (every iteration when one statement is not
        guarded so)."""
        marks: set[str] = set()
        for inserted in placement.inserted:
            guards = layout.guards(inserted.lineno)
            if guards is None:
                return selected
            marks |= set().union(*guards)
        marks &= records.recorded_names
        if not marks:
            return selected
        reached = records.outer_iterations_of(self.store, marks, outer_name)
        base = range(total) if selected is None else selected
        chosen = sorted(i for i in base if i in reached)
        shown = ", ".join(map(str, chosen[:12])) + (" ..." if len(chosen) > 12 else "")
        draft.reach_note = (f"only {outer_name} {shown or '(none)'}: the statement is in a branch that ran where "
                            f"{', '.join(sorted(marks))} was logged")
        return chosen

    def _unreproducible(self, run: RunRow) -> str:
        """Why this machine cannot give the run's code and files back (empty when it can)."""
        problems = self.repo.missing_submodules(run.code_commit)
        if problems:
            return problems[0]
        for rel, (size, mtime) in (run.environment.get("left_out") or {}).items():
            try:
                info = os.stat(self.root / rel)
                same = (info.st_size, info.st_mtime_ns) == (size, mtime)
            except OSError:
                same = False
            if not same:
                return (f"{rel} was left out of the run's code version (over the size cap) and has changed or gone "
                        "since; the replay would read other data")
        return ""


def _memo_blockers(layout, records: RunRecords) -> tuple[list[str], list[str]]:
    """Why the nested loop cannot be skipped (its effect that no checkpoint keeps and that is
    live after it), and why it cannot run again after a skipped one (an unkept name only the
    nested loop itself reads later): reasons naming variables as code."""
    missing = set(records.missing_variables)
    plain = {n for n in missing if ":" not in n and "." not in n}
    live = layout.live_after_first_nested(plain)
    loop = f"`{layout.nested_name}` loop" if layout.nested_name else "nested loop"

    def why(name: str) -> str:
        entry = records.unkept.get(name)
        return f" ({entry['reason']})" if entry else ""

    blocking = [f"`{n}` is module state the {loop} may change, which its checkpoints do not keep{why(n)}"
                for n in sorted(missing - plain)]
    blocking += [f"the {loop} changes `{n}`, which its checkpoints do not keep{why(n)}, and it is read after "
                 "that loop" for n in sorted(plain) if live.reads(n)]
    nested_only = [f"the {loop} changes `{n}`, which its checkpoints do not keep{why(n)}, and reads it in the "
                   "next iteration, which would run after a skipped one" for n in sorted(plain) if live.reads_in_nested(n)]
    return blocking, nested_only


def _outer_keys(records: RunRecords, outer_name: str | None) -> dict[str, int]:
    """The outer loop's item keys (as text) -> positions, when the run keyed that loop."""
    from ..recording import keys

    found: dict[str, int] = {}
    for item in records.item_paths:
        if item.loop_name == outer_name and item.iteration is not None:
            parsed = keys.decode(item.path, "tuple")
            if len(parsed) == 1:
                found[str(parsed[0][1])] = item.iteration
    return found


def _slice(draft: _Draft, placement, run: RunRow, read_module):
    """The slice of the outer body that memoized iterations run (slice.py)."""
    from .slice import Slice, slice_body

    if run.environment.get("main_module"):
        return Slice(whole="the run was started with `python -m`")
    # The placed lines, where the source is the placement's (isolation wraps them in observers,
    # which the slicer finds by themselves).
    lines = {ins.lineno for ins in placement.inserted if ins.placed and ins.lineno} \
        if draft.source == placement.source else set()
    try:
        return slice_body(draft.source, set(draft.names), lines, read_module)
    except (SyntaxError, RecursionError) as exc:
        return Slice(whole=f"the placed script could not be analysed ({type(exc).__name__})")


# -- decisions made after every run is planned (a distributed job's ranks, job.plan_jobs) ---------


def refuse(item: RunReplay, reason: str) -> None:
    """``item`` is refused after all (its job cannot replay whole)."""
    item.plan = replace(item.plan, status="refused", reason=reason)


def follow(item: RunReplay, leader: RunReplay) -> None:
    """A rank replays with the segments of its job's leading rank (the same segments on every
    rank); a rank that found nothing to store (a rank-0-only branch) still runs, for the
    collectives, with the leader's names."""
    plan = item.plan
    if plan.status == "skipped":
        plan = replace(plan, status="planned", reason="", names=list(plan.names or leader.plan.names))
    if [s.actions for s in plan.segments] != [s.actions for s in leader.plan.segments]:
        plan = replace(plan, segments=copy.deepcopy(leader.plan.segments))
    item.plan = plan


def whole_body(item: RunReplay, why: str) -> None:
    """Memoized iterations of ``item`` run the whole body, not a slice (say ``why``)."""
    from .slice import Slice

    if item.plan.slice is not None:
        item.plan = replace(item.plan, slice=Slice(whole=why))

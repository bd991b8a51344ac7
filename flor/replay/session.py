"""A replay session: choose runs, place the new statements, plan, execute, report.

>>> report = flor.replay("weight_norm", workers=2)          # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from .. import numerics, settings
from ..errors import FlorError, UsageError
from ..messages import say, warn
from ..paths import ProjectPaths
from ..store import RunRow, Store
from ..vcs import Repo
from .analysis import AFTER, BODY, NESTED, Layout, strategy_for
from .executor import LocalProcessExecutor
from .isolation import groups_of, training_call, wrap
from .report import ReplayReport, RunReplay, describe_outcome, describe_plan, describe_timings
from .plan import Costs, Segment, alone_check, plan_driven, plan_independent, plan_run, runs_nested_after_memo
from .records import RunRecords
from ..selection import select_runs

CONFINEMENTS = ("auto", "namespace", "copy", "none")  # --confinement, FLOR_REPLAY_CONFINE
UNGUARDED = ("--confinement none: the old code runs in a workspace of copies and nothing stops it from deleting or "
             "overwriting your files by absolute path, through a subprocess, or through links to large files")


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
            # The standard library is left out by name: which of its modules are frozen or built in
            # differs between Python versions (os is a file on 3.10, frozen from 3.11).
            verdict[top] = outside and top not in sys.stdlib_module_names and spec.origin != "frozen"
        if verdict[top]:
            chosen.append(name)
    return chosen


class Session:
    """One `flor replay` invocation."""

    def __init__(self, names, *, runs=None, where=None, iterations=None, workers=1, gpus=None,
                 force=False, start: Path | None = None, out=None, progress=None, accept_drift: bool = False,
                 allow_inexact: bool = False, executor: str | None = None, address: str | None = None,
                 confinement: str | None = None) -> None:
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
        self.executor_kind = (executor or settings.executor()).lower()
        if self.executor_kind not in ("local", "ray"):
            raise UsageError(f"--executor {executor!r}: expected local or ray")
        self.address = address or settings.ray_address()
        self.confinement_asked = (confinement or settings.replay_confinement()).lower()
        if self.confinement_asked not in CONFINEMENTS:
            raise UsageError(f"--confinement {confinement!r}: expected {', '.join(CONFINEMENTS)}")
        settings.checkpoint_store()  # malformed: refused before anything runs
        if iterations:
            if "=" not in iterations:  # the form is checked now; the loop name and values per run (keys or numbers)
                parse_iterations(iterations, None, 0)
        self.iterations = iterations
        self.out = out or sys.stdout
        self.progress = progress or sys.stderr
        self.store = project_store(start, readonly=False)
        self.store.reap_killed()
        self.root = self.store.path.parent.parent
        self.repo = Repo(self.root)
        self.selected = select_runs(self.store, runs, where)
        self.executor = None  # LocalProcessExecutor or RayExecutor, once warm_up chose
        self.accept_drift = accept_drift or allow_inexact
        self.inexact_threads: int | None = None
        self.notes: list[str] = []  # lines said once, before the outcomes
        self._plan_workers(allow_inexact)
        if self.executor_kind == "ray":
            store_url = settings.checkpoint_store()
            self.notes.append(
                f"replaying on Ray: every node must hold this project at {self.root} with the data its scripts read "
                "(git-ignored files do not travel with the tasks); checkpoints are read from "
                + (store_url if store_url else f"{self.root / '.flor'} at that same path") + " (docs/scale-out.md)")
        self._confinement: str | None = None
        self._locks: list = []

    def close(self) -> None:
        """Release the store, the runs' replay locks and any worker that got no task."""
        if self.executor is not None:
            self.executor.close()
        for handle in self._locks:
            handle.close()
        self._locks = []
        self.store.close()

    def _plan_workers(self, allow_inexact: bool) -> None:
        """Workers times the threads the runs computed with must fit the machine: float reductions
        over another number of threads give other bits. Fewer workers than asked keep values exact."""
        threads = max([numerics.threads(r.environment.get("numeric") or {}) for r in self.selected] or [1])
        if self.executor_kind == "ray":
            return  # each Ray task reserves the run's threads as CPUs on its node
        cores = numerics.cores()
        faithful = max(1, cores // threads)
        if self.gpus or self.workers <= faithful:
            return
        if allow_inexact:
            self.inexact_threads = max(1, cores // self.workers)
            self.notes.append(
                f"recorded with {threads} thread(s): {self.workers} workers get {self.inexact_threads} each "
                "(--allow-inexact): values may differ from the recording and are stored anyway")
            return
        self.notes.append(
            f"recorded with {threads} thread(s): {faithful} worker(s) of the {self.workers} asked for keep values exact "
            f"on {cores} core(s) (--allow-inexact runs {self.workers}, with other arithmetic)")
        self.workers = faithful

    @property
    def confinement(self) -> str:
        """How workers keep the old code's writes away from the user's files: ``namespace`` (a
        private view, confine.py), ``copy`` (a workspace of copies, writes elsewhere refused by
        Landlock) or ``none`` (a workspace of copies, unguarded: only when asked for)."""
        if self._confinement is None:
            from . import confine, landlock

            choice = self.confinement_asked
            if choice == "none":
                warn(UNGUARDED)
                self._confinement = choice
                return choice
            reason = None
            if choice in ("auto", "namespace"):
                reason = confine.probe()
                if reason is None:
                    self._confinement = "namespace"
                    return self._confinement
                if choice == "namespace":
                    raise UsageError(f"FLOR_REPLAY_CONFINE=namespace, but {reason}")
            missing = landlock.unavailable()
            if missing is not None:
                why = "; ".join(r for r in (reason, missing) if r)
                raise UsageError(f"replay cannot confine the old code's writes here ({why}): it could delete or overwrite "
                                 "your files; replay unguarded with --confinement none (FLOR_REPLAY_CONFINE=none)")
            if reason is not None:
                warn(f"replay cannot use a private view of the file system here ({reason}); the old code runs in a "
                     "workspace of copies and Landlock refuses its writes anywhere else (docs/reliability.md)")
            self._confinement = "copy"
        return self._confinement

    def warm_up(self) -> None:
        """Start workers importing the script's libraries now, while planning goes on."""
        if not self.selected:
            return
        filenames = dict.fromkeys(run.filename for run in self.selected)
        preload = list(dict.fromkeys(m for name in filenames for m in preload_modules(self.root / name, self.root)))
        if self.executor_kind == "ray":
            from .ray_executor import RayExecutor

            self.executor = RayExecutor(self.workers, self.gpus, preload, confinement=self.confinement,
                                        address=self.address, retries=settings.ray_retries())
        else:
            self.executor = LocalProcessExecutor(self.workers, self.gpus, preload, confinement=self.confinement)
        numeric = self.selected[0].environment.get("numeric") or {}
        env = ({n: str(self.inexact_threads) for n in numerics.THREAD_VARIABLES} if self.inexact_threads
               else numerics.thread_env(numeric))
        self.executor.warm_up(len(self.selected), env)

    def lock_runs(self) -> None:
        """Hold each selected run's replay lock: a second `flor replay` of the same runs waits, then
        plans with what this one stored (and so does only what is still missing)."""
        import fcntl

        paths = ProjectPaths(self.root)
        paths.locks.mkdir(parents=True, exist_ok=True)
        _enough_open_files(len(self.selected))
        for run in sorted(self.selected, key=lambda r: r.run_id):  # one order: no deadlock
            try:
                handle = open(paths.replay_lock(run.run_id), "a+")
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                raise UsageError(_too_many_runs(len(self.selected))) from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for another flor replay of run {run.tstamp} to finish")
                fcntl.flock(handle, fcntl.LOCK_EX)
            self._locks.append(handle)

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
            statements = [s for s in statements if set(s.names or s.feeds) & set(self.names)]
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
        training = next((t for t in (training_call(ins.text) for ins in placement.inserted if ins.placed) if t), "")
        if training:
            item.status = "refused"
            item.reason = (f"the new statement calls {training}: a hindsight statement observes the run and may not "
                           "train it; log a value computed without it")
            return
        item.source = placement.source
        if settings.replay_isolation():
            item.source = wrap(placement.source, groups_of(placement.inserted))
        item.diff = placement.diff(old, run.filename)
        framework = run.environment.get("framework") or ""
        if framework:
            from .frameworks import FrameworkLayout, describe

            layout = FrameworkLayout.of(placement.source, framework, self.store.args(run.run_id))
            item.framework = framework
        else:
            layout = Layout.of(placement.source)
        places = set().union(*(layout.places(ins.lineno) for ins in placement.inserted))
        if framework:
            first = placement.inserted[0].lineno
            item.reach_note = describe(framework, layout.hook_of(first), places)
        outer_name = layout.outer_name
        recorded_loops = sorted({c[3] for c in records.contexts if c[1] is None})
        if layout.outer is None and recorded_loops:
            # The run went through flor.loop, but the analysis cannot see which statement is its
            # outer loop (flor.loop reached under a name no import gives it): a plan would skip it.
            item.status = "refused"
            item.reason = (f"cannot tell which loop of {run.filename} is the flor.loop {recorded_loops[0]!r} that the run "
                           "recorded; call it as flor.loop(...) (or through an `import flor as ...` alias)")
            return
        unreproducible = self._unreproducible(run)
        if unreproducible:
            item.status, item.reason = "refused", unreproducible
            return
        # Checkpoints that lack a registered object (its state could not be read while
        # recording) are never restored.
        checkpoints, item.unkept_note = records.usable_checkpoints(outer_name or "iteration")
        total, costs = records.costs(outer_name) if outer_name else (0, Costs())
        strategy = item.wanted = strategy_for(list(places))
        item.nested = bool(layout.nested)
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
        item.memo_blocked = blocking
        item_keys = self._outer_keys(run.run_id, outer_name)
        try:
            selected = parse_iterations(self.iterations, outer_name, total, item_keys)
        except UsageError as exc:
            if not item_keys:
                raise
            item.status, item.reason = "skipped", str(exc)  # another run may have those items
            return
        if BODY in places and NESTED not in places:
            selected = self._reached(item, layout, placement, records, outer_name, total, selected)
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
        independent = self._independent(layout, item_keys, places, run)
        if strategy == "reexec" and not checkpoints and independent:
            # Items that share no state: each replayed alone, split across the workers.
            item.segments = plan_independent(list(range(total)) if selected is None else selected, self.workers,
                                             costs, places)
            item.alone_check = alone_check(item.segments)
            item.reach_note = (item.reach_note + "; " if item.reach_note else "") + (
                f"the {outer_name} loop's iterations share no state: each item is replayed alone, "
                f"split across {min(self.workers, max(1, len(item.segments)))} worker(s)")
        elif framework:
            item.segments = plan_driven(strategy, total, checkpoints, places=places, selected=selected, costs=costs,
                                        memo_ok=lambda index: memo_possible)
        elif strategy == "reexec" and not checkpoints:
            # No checkpoints: one process re-executes everything.
            segment = Segment({i: "exec" for i in range(total)}, list(range(total)) if selected is None else selected,
                              total, True, True, True)
            segment.seconds = 2.0 + costs.before_loop_s + sum(costs.iteration_s)
            item.segments = [segment]
        else:
            before_nested = strategy == "memo" and any(layout.before_first_nested(ins.lineno)
                                                       for ins in placement.inserted)
            item.segments = plan_run(
                strategy, total, checkpoints, places=places, selected=selected, workers=self.workers,
                costs=costs, memo_ok=lambda index: memo_possible, before_nested=before_nested,
            )
            if memo_possible and nested_only and runs_nested_after_memo(item.segments):
                # The nested loop would run again after a skipped one, reading what it left unkept.
                memo_possible = False
                item.memo_blocked = nested_only
                item.segments = plan_run(strategy, total, checkpoints, places=places, selected=selected,
                                         workers=self.workers, costs=costs, memo_ok=lambda index: False)
        # A re-execution after drift restores a memoized iteration and runs the next one.
        retry_ok = memo_possible and not nested_only
        item.strategy = strategy
        item.total = total
        item.outer_name = outer_name
        item.checkpoints = checkpoints
        item.places, item.costs, item.memo_ok = places, costs, lambda index: retry_ok
        if not item.segments:
            item.status, item.reason = "skipped", "no iterations selected"

    def _outer_keys(self, run_id: int, outer_name: str | None) -> dict[str, int]:
        """The outer loop's item keys (as text) -> positions, when the run keyed that loop."""
        from .. import keys

        found: dict[str, int] = {}
        for loop_name, path, iteration in self.store.item_paths(run_id):
            if loop_name == outer_name and iteration is not None:
                parsed = keys.decode(path, "tuple")
                if len(parsed) == 1:
                    found[str(parsed[0][1])] = iteration
        return found

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

    def _reached(self, item: RunReplay, layout, placement, records: RunRecords, outer_name: str, total: int,
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
        item.reach_note = (f"only {outer_name} {shown or '(none)'}: the statement is in a branch that ran where "
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

    # -- execution ----------------------------------------------------------------------------

    def execute(self, plans: list[RunReplay]) -> float:
        """Run every planned segment; fill in the outcomes. Returns the wall time."""
        from .execution import Execution

        todo = [p for p in plans if p.status == "planned"]
        return Execution(self).run(todo) if todo else 0.0


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


def _hint_extract(store: Store, plans: list[RunReplay]) -> None:
    """Say when a name to replay is already in what the runs printed: ``flor extract`` reads it
    with no re-execution (a hint only: flor does not guess the pattern)."""
    from ..extraction import mention

    wanted = [p for p in plans if p.status == "planned"]
    names = dict.fromkeys(name for item in wanted for name in item.names)
    if not names:
        return
    captured = store.output_counts([item.run.run_id for item in wanted])
    ids = [item.run.run_id for item in wanted if captured.get(item.run.run_id)]
    for name in names:
        line = mention(store, ids, name)
        if line is not None:
            say(f"hint: what these runs printed mentions {name} (\"{line[:80]}\"); `flor extract {name} PATTERN` "
                "reads values from that output with no re-execution")


# Files a replay holds open besides its runs' locks (the store, git, workers' pipes and logs):
# what it asks for, and the least it goes on with.
_FILES_BESIDES_LOCKS = 256
_FEWEST_BESIDES_LOCKS = 32


def _too_many_runs(count: int) -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f"replaying {count} runs holds a lock file open for each, beyond this process's open-file limit "
            f"({soft}, at most {hard}); raise it (ulimit -n {count + _FILES_BESIDES_LOCKS}) or replay fewer runs "
            "at once (--runs, --where)")


def _enough_open_files(count: int) -> None:
    """Raise the soft open-file limit so that one lock per run fits (macOS starts at 256), up to
    the hard limit; past that, refuse in one line before opening any."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    needed = count + _FILES_BESIDES_LOCKS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < count + _FEWEST_BESIDES_LOCKS:
        raise UsageError(_too_many_runs(count))


def replay(*names: str, runs=None, where=None, iterations=None, workers: int = 1, gpus=None,
           dry_run: bool = False, diff: bool = False, force: bool = False, confirm: bool = False,
           accept_drift: bool = False, allow_inexact: bool = False, out=None, progress=None,
           executor: str | None = None, address: str | None = None, confinement: str | None = None) -> ReplayReport:
    """Recover ``names`` (default: every new flor.log of today's script) for past runs.

    Values whose iteration drifted from the recording (even after re-execution) are not stored
    unless ``accept_drift``. ``workers`` beyond what keeps the recorded arithmetic (workers times
    the run's threads within the machine's cores) run as many as keep it, unless ``allow_inexact``.
    Results (plans, outcomes) are written to ``out`` (default stdout); progress bars and timings
    to ``progress`` (default stderr). ``confinement`` (default ``FLOR_REPLAY_CONFINE``, else
    ``auto``): ``namespace``, ``copy`` (Landlock-guarded copies) or ``none`` (unguarded, said in
    one warning); ``auto`` takes the first of the two guarded ones the kernel allows and refuses
    where it allows neither.

    >>> flor.replay("weight_norm", workers=2)           # doctest: +SKIP
    """
    out = out or sys.stdout
    session = Session(names, runs=runs, where=where, iterations=iterations, workers=workers, gpus=gpus,
                      force=force, out=out, progress=progress, accept_drift=accept_drift,
                      allow_inexact=allow_inexact, executor=executor, address=address, confinement=confinement)
    try:
        for note in session.notes:
            say(note)
        if not dry_run:
            session.lock_runs()
        if not dry_run and not confirm:
            session.warm_up()
        plans = session.plan()
        if not plans:
            print("no runs to replay", file=out)
            return ReplayReport([])
        _hint_extract(session.store, plans)
        if dry_run:
            for item in plans:
                print(describe_plan(item, diff), file=out)
            total = sum(p.seconds for p in plans if p.status == "planned")
            print(f"estimated {total:.1f} s of work with {session.workers} worker(s)", file=out)
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
            print(describe_outcome(item, session.root), file=out)
            if item.timings:
                say(describe_timings(item))
        return ReplayReport(plans, seconds)
    finally:
        session.close()

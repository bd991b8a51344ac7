"""Executing planned replays: workspaces, worker tasks, storing what workers send, re-execution.

For each planned run it lays out the run's code version (``workspace.py``), writes what its
workers need from the store into one file (recorded args, random state, loop instances, recorded
values), and gives each segment to the executor as a task. Workers send values back; this module
is the one that stores them, resolving the loop instances the recording never had to real ids.

**Drift is never stored quietly.** A worker holds back an iteration whose recorded values came out
different (see ``worker_run.py``) and reports it as rejected. The rejected iterations of a run are
then re-executed: first from the last checkpoint before each (a memoized restore may have missed
state that the checkpoint could not hold), then, for those still rejected, from the start of the
run with no checkpoint at all. What still drifts then is left unstored and reported (with
``accept_drift``, the last attempt's values are stored anyway).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..environment import numerics
from .. import values
from ..errors import FlorError
from ..logged import Drift, LoggedValue, LoopInstance, ReplayDone
from ..messages import say
from ..recording.notebook import script_of
from .channel import NewInstance
from .executor import Task
from .plan import in_order, retry_segment, sliceable
from .progress import Progress
from .spec import WorkerSpec
from .workspace import files_to_hide, prepare

# The attempts after the planned one: re-execute from the last checkpoint, then from the start.
RETRIES = ("from the last checkpoint", "from the start")


class _RunState:
    """What the driver tracks of one run while its segments execute."""

    def __init__(self, item, folder: Path) -> None:
        self.item = item  # report.RunReplay: its plan is read here, its outcome written
        self.folder = folder
        # The segments executed: the plan's, unless its items turn out to share state
        # (Execution._check_independence), then one segment in order.
        self.segments = list(item.plan.segments)
        known = [instance.ctx_id for instance in item.plan.records.contexts]
        self.next_ctx = (max(known) if known else 0) + 1
        self.new_contexts: dict[tuple, int] = {}  # (parent, parent iteration, loop, rank) -> id
        self.provisional: dict[tuple, int] = {}  # (task key, provisional id) -> id
        self.rejected: set[int] = set()
        self.unverified: set[int] = set()  # rejected because nothing could verify them
        self.slice_rejected: set[int] = set()  # rejected because a later check found the slice wrong
        self.rejected_run_level = False
        self.retried: list[str] = []


@dataclass(frozen=True)
class ExecutionSettings:
    """What execution needs of the replay's options, decided before it starts."""

    root: Path  # the project's root
    confinement: str  # namespace, copy or none (session.confinement, already probed)
    progress: object  # the stream progress bars go to
    inexact_threads: int | None  # --allow-inexact: threads per worker (drift then expected, not retried)
    accept_drift: bool  # store the last attempt's values even when they drifted
    gpus: list | None = None  # --gpus: the devices workers (and a job's gang) are given
    preload: list[str] = field(default_factory=list)  # modules workers import first
    verify_slice: int = 2  # memoized iterations per segment that run the full body too (--verify-slice)


class Execution:
    """Executes the planned runs of one replay: given the store it writes, the repository the
    code versions come from, the one executor every attempt runs on, and its settings."""

    def __init__(self, store, repo, executor, settings: ExecutionSettings, jobs: dict | None = None,
                 gangs=None) -> None:
        self.store = store
        self.jobs = jobs or {}  # run_id -> replay.job.JobReplay: ranks that run together, in gangs
        self.gangs = gangs  # replay.job.Gangs: the jobs' warm workers (None: made and stopped here)
        self.repo = repo
        self.executor = executor
        self.settings = settings
        self.root = settings.root
        self.tasks: dict[str, tuple[_RunState, int]] = {}
        self.captured: dict[str, list] = {}  # check task -> the values it logged (independence)

    # -- laying out ------------------------------------------------------------------------

    def _records_file(self, state: _RunState) -> Path:
        """What a worker needs of the run's records, as one JSON file: what planning read
        (``RunRecords``), and the recorded values of the names it compares (read here: which
        names those are is known once the run is planned)."""
        item, records = state.item, state.item.plan.records
        run_id = item.run.run_id
        compare = sorted(records.recorded_names - set(item.plan.names))
        recorded = [logged.as_json() for logged in (self.store.logs(run_id, compare, "record") if compare else [])]
        blob = records.rng
        data = {
            "args": [[name, *values.encode(value)] for name, value in records.args.items()],
            "rng": base64.b64encode(blob).decode() if blob else None,
            "contexts": [instance.as_json() for instance in records.contexts],
            "recorded": recorded,
            # Keyed loops yield exactly the items the recording yielded (keyed.py).
            "items": [[i.loop_name, i.path, i.iteration] for i in records.item_paths],
            "keyed": records.keyed,
            # The registered state's fingerprint at the run's end: verifies the code after the loop.
            "state_end": item.run.environment.get("state_end"),
        }
        path = state.folder / "records.json"
        path.write_text(json.dumps(data))
        return path

    def _tasks_for(self, state: _RunState, segments, phase: int, records_path: Path, accept_drift: bool,
                   environ: dict[str, str] | None = None) -> list[Task]:
        settings, item, plan = self.settings, state.item, state.item.plan
        numeric = dict(item.run.environment.get("numeric") or {})
        env = numerics.thread_env(numeric)
        if settings.inexact_threads:
            numeric["threads"] = settings.inexact_threads
            env = {name: str(settings.inexact_threads) for name in numerics.THREAD_VARIABLES}
        tasks = []
        for index, segment in enumerate(segments):
            key = f"{item.run.run_id}.{phase}.{index}"
            scratch = state.folder / f"scratch-{phase}-{index}"
            scratch.mkdir()
            spec = WorkerSpec(
                run_id=item.run.run_id, tstamp=item.run.tstamp, root=str(self.root), filename=script_of(item.run.filename),
                cwd=item.run.cwd if not os.path.isabs(item.run.cwd) else ".", argv=list(item.run.argv),
                names=list(plan.names), recorded_names=sorted(plan.records.recorded_names), outer_name=plan.outer_name,
                checkpoints=plan.checkpoints, segment=segment, records_path=str(records_path),
                run_tree=str(state.folder / "tree"), scratch=str(scratch), confinement=settings.confinement,
                hide=state.hide, main_module=item.run.environment.get("main_module"), numeric=numeric,
                accept_drift=accept_drift, pickled=plan.records.pickled,
                digests=plan.records.digests, verify_slice=settings.verify_slice, environ=dict(environ or {}),
                **_slice_fields(plan, segment),
            )
            spec_path = state.folder / f"{phase}-{index}.spec.json"
            spec_path.write_text(spec.to_json())
            tasks.append(Task(key, spec_path, len(segment.actions) or 1, segment.seconds,
                              state.folder / f"{phase}-{index}.log", env))
            self.tasks[key] = (state, index)
        return tasks

    # -- what workers send -----------------------------------------------------------------

    def _ctx(self, state: _RunState, key: str, ref):
        if ref is None or ref >= 0:
            return ref
        return state.provisional[(key, ref)]

    def _on_message(self, key: str, message: dict) -> None:
        state, _index = self.tasks[key]
        if message["kind"] == "progress":
            self.progress.update(key, int(message.get("done", 0)))
            return
        if message["kind"] != "batch":
            return
        if key in self.captured:  # a check's values are compared, never stored
            self.captured[key] += [logged._replace(ctx_id=None)
                                   for logged in map(LoggedValue.from_json, message.get("logs", []))]
            return
        contexts = []
        for new in map(NewInstance.from_json, message.get("contexts", [])):
            parent = self._ctx(state, key, new.parent_id)
            identity = (parent, new.parent_iteration, new.loop_name, new.rank)
            real = state.new_contexts.get(identity)
            if real is None:
                real = state.new_contexts[identity] = state.next_ctx
                state.next_ctx += 1
                contexts.append(LoopInstance(real, parent, new.parent_iteration, new.loop_name))
            state.provisional[(key, new.provisional_id)] = real
        logs = [logged._replace(ctx_id=self._ctx(state, key, logged.ctx_id))
                for logged in map(LoggedValue.from_json, message.get("logs", []))]
        drift = [d._replace(ctx_id=self._ctx(state, key, d.ctx_id)) for d in map(Drift.from_json, message.get("drift", []))]
        done = [ReplayDone(name, iteration) for name, iteration in message.get("done", [])]
        self.store.write_replayed(state.item.run.run_id, contexts, logs, drift, done)
        state.item.outcome.add_stored(len(logs))

    # -- running ---------------------------------------------------------------------------

    def _check_independence(self, states: list[_RunState]) -> None:
        """Before trusting that a keyed loop's items share no state (a static judgment that cannot
        see into every call), replay the first item planned alone both alone and after the item
        before it; unless both give the same values, the items are replayed in order."""
        if not states:
            return
        tasks = []
        for state in states:
            for task in self._tasks_for(state, list(state.item.plan.alone_check), "check", state.records_path,
                                        accept_drift=True):
                self.captured[task.key] = []
                tasks.append(task)
        outcomes = {o.task.key: o for o in self._execute(tasks, states, merge=False)}
        for state in states:
            item, plan = state.item, state.item.plan
            alone, after = (f"{item.run.run_id}.check.{i}" for i in range(2))
            same = all(outcomes[k].ok for k in (alone, after)) and self.captured[alone] == self.captured[after]
            if same:
                continue
            index = min(plan.alone_check[0].actions)
            targets = sorted({t for segment in state.segments for t in segment.store})
            state.segments = [in_order(targets, plan.places, plan.costs)]
            note = (f"{plan.outer_name} {index} replayed alone differs from {plan.outer_name} {index - 1}, {index} "
                    "replayed in order: its items share state flor cannot see, so they are replayed in order")
            say(f"  {item.run.tstamp}: {note}")

    def run(self, todo: list) -> float:
        """Run every planned segment of ``todo``, then re-execute what drifted; fill in outcomes."""
        settings = self.settings
        scratch = Path(tempfile.mkdtemp(prefix="flor-replay-"))
        started = time.monotonic()
        try:
            states, tasks = [], []
            for number, item in enumerate(todo):
                folder = scratch / f"run{number}"
                folder.mkdir()
                state = _RunState(item, folder)
                try:
                    prepare(self.repo, item.run.code_commit, script_of(item.run.filename), item.plan.source, folder / "tree",
                            copies=settings.confinement != "namespace")
                    state.hide = files_to_hide(self.repo, item.run.code_commit,
                                               item.run.environment.get("left_out") or {})
                    state.records_path = self._records_file(state)
                except FlorError as exc:
                    item.outcome.fail(str(exc))
                    continue
                states.append(state)
            self._check_independence([s for s in states if s.item.plan.alone_check])
            # A distributed job's ranks run together, segment by segment (replay/job.py).
            jobs = self.jobs
            for state in states:
                if state.item.run.run_id not in jobs:
                    tasks += self._tasks_for(state, state.segments, 0, state.records_path,
                                             accept_drift=settings.inexact_threads is not None)
            self._execute(tasks, [s for s in states if s.item.run.run_id not in jobs])
            if jobs:
                from .job import run_jobs

                run_jobs(self, [s for s in states if s.item.run.run_id in jobs], jobs, self.gangs)
            # With other arithmetic than the recording's (--allow-inexact), drift is expected:
            # re-executing would only repeat it, slower.
            retries = () if settings.inexact_threads is not None else RETRIES
            for attempt, how in enumerate(retries, 1):
                retry = [s for s in states if (s.rejected or s.rejected_run_level) and not s.item.outcome.errors
                         and s.item.run.run_id not in jobs]  # a job's drift is reported as it came
                if not retry:
                    break
                tasks = []
                for state in retry:
                    item, plan = state.item, state.item.plan
                    shown = ", ".join(map(str, sorted(state.rejected))) + (" and outside the loop" if state.rejected_run_level else "")
                    what = ("could not be verified (no recorded value and no checkpoint to compare the state with)"
                            if state.rejected <= state.unverified and not state.rejected_run_level
                            else "ran only the slice, which a later check found wrong: nothing of them stored"
                            if state.rejected <= state.slice_rejected and not state.rejected_run_level
                            else "drifted from the recording")
                    say(f"  {item.run.tstamp}: {plan.outer_name or 'iteration'} {shown} {what}; re-executing {how}")
                    state.retried.append(how)
                    segment = retry_segment(
                        sorted(state.rejected), plan.total, plan.checkpoints if attempt == 1 else {},
                        run_level=state.rejected_run_level, places=plan.places, memo_ok=plan.memo_ok,
                        costs=plan.costs, driven=bool(plan.framework),
                    )
                    state.rejected, state.rejected_run_level, state.unverified = set(), False, set()
                    state.slice_rejected = set()
                    tasks += self._tasks_for(state, [segment], attempt, state.records_path,
                                             accept_drift=settings.accept_drift and attempt == len(RETRIES))
                self._execute(tasks, retry)
            laid_out = {id(state.item): state for state in states}
            for item in todo:
                state = laid_out.get(id(item))  # None: its code version could not be laid out
                item.outcome.finish(sorted(state.rejected) if state else [], bool(state and state.rejected_run_level),
                                    state.retried if state else [], settings.accept_drift)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return time.monotonic() - started

    def _execute(self, tasks: list[Task], states: list[_RunState], merge: bool = True, executor=None) -> list:
        if not tasks:
            return []
        totals = {s.item.run.tstamp: sum(t.iterations for t in tasks if self.tasks[t.key][0] is s) for s in states}
        self.progress = Progress(self.settings.progress, {k: v for k, v in totals.items() if v},
                                 {t.key: self.tasks[t.key][0].item.run.tstamp for t in tasks})
        # The same executor for every attempt: a finished run closes its idle workers, and the
        # next attempt's tasks start (local) or reach (Ray) workers of the same kind.
        outcomes = (executor or self.executor).run(tasks, self._on_message)
        self.progress.close()
        if not merge:
            return outcomes
        for outcome in outcomes:
            state, _index = self.tasks[outcome.task.key]
            result = outcome.result
            state.item.outcome.merge(result, outcome.ok, outcome.error)
            # What drifted is this attempt's to retry; the outcome gets what is left at the end.
            state.rejected |= set(result.get("rejected") or [])
            state.unverified |= set(result.get("unverified") or [])
            state.slice_rejected |= set(result.get("slice_rejected") or [])
            state.rejected_run_level |= bool(result.get("rejected_run_level"))
        return outcomes


def _slice_fields(run_plan, segment) -> dict:
    """The slice a segment's worker runs: only where every iteration is memoized and the code
    after the loop does not run (what skipped statements leave would be read there)."""
    plan = run_plan.slice
    iterations = sliceable(segment)
    if plan is None or plan.whole or not iterations:
        return {}
    return {"slice_iterations": iterations, "slice_skip": [list(position) for position in plan.skipped], "slice_names": list(plan.names),
            "slice_objects": list(plan.objects), "slice_breaks": [list(position) for position in plan.breaks],
            "slice_unrestored": list(plan.unrestored),
            "slice_last": run_plan.total - 1}

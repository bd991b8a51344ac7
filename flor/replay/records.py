"""RunRecords: what planning and executing the replay of one run need from the store, read once.

Its recorded args, random state and keyed loops' items (what a worker answers and yields as the
recording did), its checkpoints (after waiting for a handed-off writer), its loop instances and iteration start
times (for estimates), the names it recorded (compared, never replayed again), what earlier
replays finished, and which variables and objects its checkpoints could not keep (a probe that
failed while recording: ``checkpoints.probe``). Planning is then a pure
function of these and of the placed source.

>>> records = RunRecords.read(store, run)            # doctest: +SKIP
>>> records.costs("epoch")[0]
10
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..checkpoints.handoff import await_writers
from ..checkpoints.probe import OBJECT, UNKEPT_KEY
from ..logged import IterationStart, ItemPath, LoopInstance
from ..messages import say
from ..environment.paths import ProjectPaths
from ..store import RunRow, Store
from .plan import Costs


@dataclass
class RunRecords:
    """One run's records, as replay planning sees them."""

    run: RunRow
    checkpoints: dict[int, dict[str, str]]  # outer iteration -> point -> location
    contexts: list[LoopInstance]
    iterations: list[IterationStart]
    recorded_names: set[str]
    done: dict[str, set[int]]  # name -> outer iterations replayed to the end (-1: outside the loop)
    args: dict[str, object] = field(default_factory=dict)  # as recorded (decoded)
    rng: bytes | None = None  # the random state captured when the run began
    item_paths: list[ItemPath] = field(default_factory=list)  # the items keyed loops yielded, in order
    keyed: list[str] = field(default_factory=list)  # the keyed loops it ran (also those with no item)
    missing_variables: set[str] = field(default_factory=set)
    variables_known: bool = True
    pickled: dict[str, list | None] = field(default_factory=dict)  # location -> objects recorded as pickled
    digests: dict[str, str | None] = field(default_factory=dict)  # location -> the manifest's sha256 the store kept
    lacking: set[int] = field(default_factory=set)  # checkpoints left out: they lack a data iterator
    # name -> {"kind": "object"|"variable", "reason", "from": outer iteration}: left out while recording
    unkept: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def read(cls, store: Store, run: RunRow) -> "RunRecords":
        """Read what replay needs of ``run`` from ``store``."""
        # A run's last checkpoint may still be written by a handed-off process: plan with it.
        await_writers(store.paths.flor_dir, run.run_id, say=say)
        checkpoints: dict[int, dict[str, str]] = {}
        pickled: dict[str, list | None] = {}
        digests: dict[str, str | None] = {}
        for row in store.checkpoints(run.run_id):
            checkpoints.setdefault(row.iteration, {})[row.point] = row.location
            pickled[row.location] = row.pickled
            digests[row.location] = row.sha256
        # A checkpoint that lacks a data iterator the loop draws from is no place to start from.
        lacking = set(run.environment.get("iterators_missing") or ())
        if "iterators_missing" not in run.environment and run.status != "finished":
            lacking = _lacking_iterators(ProjectPaths.of_db(store.path), checkpoints)
        for index in lacking:
            checkpoints.pop(index, None)
        missing, known = _missing_variables(ProjectPaths.of_db(store.path), checkpoints)
        unkept = dict(run.environment.get(UNKEPT_KEY) or {})
        missing |= {name for name, entry in unkept.items() if entry.get("kind") != OBJECT}
        return cls(
            run=run, checkpoints=checkpoints, contexts=store.contexts(run.run_id),
            iterations=store.iterations(run.run_id),
            recorded_names={name for name, source, _count in store.log_names(run.run_id) if source == "record"},
            done=store.replay_done_all(run.run_id), missing_variables=missing, variables_known=known,
            pickled=pickled, digests=digests, lacking=lacking, unkept=unkept,
            args=store.args(run.run_id), rng=store.rng_state(run.run_id), item_paths=store.item_paths(run.run_id),
            keyed=store.keyed_loops_of(run.run_id),
        )

    def usable_checkpoints(self, outer_name: str) -> tuple[dict[int, dict[str, str]], str]:
        """The checkpoints that hold every registered object, and why the others cannot be
        restored (empty when all can): a registered object left out from an iteration on makes
        that checkpoint and every later one incomplete."""
        lacking = {name: entry for name, entry in self.unkept.items() if entry.get("kind") == OBJECT}
        if not lacking:
            return self.checkpoints, ""
        first = min((entry.get("from") if entry.get("from") is not None else -1) for entry in lacking.values())
        usable = {i: points for i, points in self.checkpoints.items() if first < 0 or i < first}
        name, entry = min(lacking.items(), key=lambda item: item[1].get("from") if item[1].get("from") is not None else -1)
        since = "" if first < 0 else f" from {outer_name} {first} on"
        why = (f"the checkpoints{since} lack `{name}` ({entry.get('reason', 'it could not be read')}): "
               "those are not restored; the iterations they would skip are re-executed")
        return usable, why

    def outer_iterations_of(self, store: Store, names: set[str], outer_name: str) -> set[int]:
        """The outer iterations in which the run logged any of ``names`` (read when a statement
        sits in a branch that those logs mark)."""
        parents = {c.ctx_id: c for c in self.contexts}
        roots = {c.ctx_id for c in self.contexts if c.parent_id is None and c.loop_name == outer_name}
        found: set[int] = set()
        for logged in store.logs(self.run.run_id, sorted(names), "record"):
            ctx, iteration = logged.ctx_id, logged.iteration
            while ctx is not None and ctx not in roots:
                parent = parents.get(ctx)
                ctx, iteration = (parent.parent_id, parent.parent_iteration) if parent else (None, None)
            if ctx is not None and iteration is not None:
                found.add(iteration)
        return found

    def done_for(self, names: list[str]) -> set[int]:
        """Outer iterations whose replay finished for every one of ``names``."""
        sets = [self.done.get(name, set()) for name in names]
        return set.intersection(*sets) if sets else set()

    def costs(self, outer_name: str) -> tuple[int, Costs]:
        """(outer iterations recorded, their timings) from the run's loop instances."""
        run, instances = self.run, self.contexts
        roots = [c for c in instances if c.parent_id is None and c.loop_name == outer_name]
        if not roots:
            return 0, Costs()
        root = roots[0].ctx_id
        starts = {s.iteration: s.t or 0.0 for s in self.iterations if s.ctx_id == root}
        if not starts:
            return 0, Costs()
        total = max(starts) + 1
        nested: dict[int, float] = {}
        for c in instances:
            if c.parent_id == root and c.parent_iteration not in nested and c.t_start is not None and c.t_end is not None:
                nested[c.parent_iteration] = c.t_end - c.t_start
        end = roots[0].t_end
        if end is None and run.ended:
            end = run.ended - run.started
        iteration_s, nested_s = [], []
        for i in range(total):
            nxt = starts.get(i + 1, end if end is not None else starts.get(i, 0.0))
            duration = max(0.0, (nxt or 0.0) - starts.get(i, 0.0))
            iteration_s.append(duration)
            nested_s.append(min(duration, nested.get(i, 0.0)))
        return total, Costs(iteration_s, nested_s, starts.get(0, 0.0))


def _missing_variables(paths: ProjectPaths, checkpoints: dict[int, dict[str, str]]) -> tuple[set[str], bool]:
    """The variables the run's checkpoints could not keep, from the first readable manifest."""
    for points in checkpoints.values():
        for location in points.values():
            try:
                manifest = json.loads(paths.at(location).read_text())
            except (OSError, ValueError):
                continue
            return set(manifest.get("variables_missing", [])), bool(manifest.get("variables_known"))
    return set(), True


def _lacking_iterators(paths: ProjectPaths, checkpoints: dict[int, dict[str, str]]) -> set[int]:
    """The iterations whose checkpoints list a data iterator they could not keep (a run that did
    not finish says so only in its manifests)."""
    found = set()
    for index, points in checkpoints.items():
        for location in points.values():
            try:
                manifest = json.loads(paths.at(location).read_text())
            except (OSError, ValueError):
                continue
            if manifest.get("iterators_missing"):
                found.add(index)
    return found

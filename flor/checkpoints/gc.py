"""Thinning checkpoints: what ``flor gc`` keeps, what it frees, and what replay then costs.

A run's checkpoints are thinned to a *spine*: the first, the last, every K-th (K =
``FLOR_CKPT_FULL_EVERY``), and the ones just before the iterations of a periodic branch the policy
learned (where hindsight questions land); with a byte budget (``--budget`` or
``FLOR_CKPT_DISK_TOTAL``) the oldest runs are thinned first, and if the spines alone are still
over it, the oldest runs keep only their first and last. Never removed:

- checkpoints of a run that a ``flor replay`` is replaying now (its replay lock is held; gc holds
  the same lock while it deletes, so no replay of that run starts meanwhile);
- checkpoints pinned by the model registry (``flor.best(..., checkpointed=True)`` pins what it
  names), unless asked (``include_pinned``).

Delta chains are never broken: an object a kept checkpoint needs whose base is about to go is
first rewritten standalone under its own name (the name is the hash of the raw bytes, so every
reader still verifies it), and only then is the base removed. The order is safe against a crash:
rows are unlisted first (no replay plans with them), then objects re-based, then files removed.
With ``FLOR_CHECKPOINT_STORE`` the store's copies are removed too.

Replay then re-executes, for an iteration, the iterations since the last kept checkpoint before
it; :class:`RunPlan` says how many that is at most and on average, and in seconds from the run's
own iteration time.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..environment import settings
from ..errors import UsageError
from ..environment.paths import ProjectPaths
from . import handoff
from .objects import SUFFIX, Encoder, Reader, base_of, files, header, stored


@dataclass
class RunPlan:
    """What gc does to one run."""

    run_id: int
    tstamp: str
    started: float
    keep: list = field(default_factory=list)  # CheckpointRow
    drop: list = field(default_factory=list)
    bytes: int = 0  # stored bytes of the run's checkpoints now (objects shared with other runs counted once, here)
    frees: int = 0  # bytes removed
    skipped: str | None = None  # why the run is left alone
    iteration_s: float | None = None
    pinned: set = field(default_factory=set)  # iterations the registry pins

    def replay_cost(self, rows) -> tuple[int, float]:
        """(most, mean) iterations replay re-executes to reach one iteration, given ``rows``."""
        points = sorted({r.iteration for r in rows})
        if not points:
            return 0, 0.0
        last = points[-1]
        gaps, previous = [], -1
        for point in points:
            gaps.append(point - previous)
            previous = point
        # An iteration between two checkpoints re-executes from the earlier one: on average half a gap.
        mean = sum(g * (g + 1) / 2 for g in gaps) / max(1, last + 1)
        return max(gaps), mean

    def describe(self) -> str:
        if self.skipped:
            return f"{self.tstamp}: left alone ({self.skipped})"
        before_most, before_mean = self.replay_cost(self.keep + self.drop)
        most, mean = self.replay_cost(self.keep)
        seconds = (f", about {most * self.iteration_s:.1f} s at most (was {before_most * self.iteration_s:.1f} s)"
                   if self.iteration_s else "")
        return (f"{self.tstamp}: {len(self.keep) + len(self.drop)} checkpoint(s), {_mb(self.bytes)}; "
                f"drop {len(self.drop)}, keep {len(self.keep)}, frees {_mb(self.frees)}; replay of one iteration "
                f"then re-executes at most {most} (was {before_most}), {mean:.1f} on average (was {before_mean:.1f})"
                f"{seconds}")


@dataclass
class GcPlan:
    """What gc does to the project."""

    runs: list[RunPlan]
    total_before: int
    budget: int | None
    done: bool = False

    @property
    def frees(self) -> int:
        return sum(r.frees for r in self.runs)

    def describe(self) -> list[str]:
        head = ("removed" if self.done else "would remove") + \
            f" {sum(len(r.drop) for r in self.runs)} checkpoint(s), freeing {_mb(self.frees)} of {_mb(self.total_before)}"
        if self.budget is not None:
            after = self.total_before - self.frees
            head += f"; {_mb(after)} left against a budget of {_mb(self.budget)}" + ("" if after <= self.budget else
                                                                                    " (still over: pinned or in use)")
        return [head] + ["  " + r.describe() for r in self.runs]


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def spine(rows: list, every: int, branch_periods: list, pinned: set) -> set:
    """The iterations of ``rows`` kept by thinning: first, last, every ``every``-th checkpoint,
    the ones before a periodic branch, and the pinned ones. ``branch_periods``: each a period (a
    branch at multiples of it, ``it % n == 0``) or a (period, phase) pair (one at ``it % n == phase``)."""
    iterations = sorted({r.iteration for r in rows})
    if not iterations:
        return set()
    kept = {iterations[0], iterations[-1]} | (set(iterations) & pinned)
    kept |= {it for n, it in enumerate(iterations) if n % max(1, every) == 0}
    branches = [tuple(b) if isinstance(b, (list, tuple)) else (b, 0) for b in branch_periods]
    kept |= {it for it in iterations for p, phase in branches if p > 1 and (it + 1) % p == phase % p}
    return kept


def _manifest(flor_dir: Path, location: str, remote) -> dict | None:
    path = ProjectPaths.of_flor_dir(flor_dir).at(location)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        data = remote.fetch(location) if remote is not None else None
        return json.loads(data) if data is not None else None
    except (OSError, ValueError):
        return None


def _size(objects: Path, digest: str, remote) -> int:
    path = stored(objects, digest)
    if path is not None:
        try:
            return path.stat().st_size
        except OSError:
            return 0
    return 0


def _closure(objects: Path, digests: set[str]) -> set[str]:
    """``digests`` and every delta base they need."""
    needed, todo = set(), list(digests)
    while todo:
        digest = todo.pop()
        if digest in needed:
            continue
        needed.add(digest)
        base = base_of(objects, digest)
        if base:
            todo.append(base)
    return needed


def _locked(paths: ProjectPaths, run_id: int):
    """The run's replay lock, held (None: a replay holds it now)."""
    paths.locks.mkdir(parents=True, exist_ok=True)
    handle = open(paths.replay_lock(run_id), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def plan(store, flor_dir: Path, runs: list | None = None, keep_last: int = 0, older_than_days: float | None = None,
         budget: int | None = None, include_pinned: bool = False, remote=None, _locks: list | None = None,
         this_run: int | None = None) -> GcPlan:
    """What gc would do (nothing is changed). ``runs``: RunRows to consider (default all);
    ``keep_last``: the newest N runs are left alone; ``older_than_days``: only runs started before
    then; ``budget``: thin until the project's checkpoints fit it (else every run to its spine)."""
    if keep_last < 0:
        raise UsageError(f"--keep-last {keep_last}: expected 0 or more")
    flor_dir = Path(flor_dir)
    paths = ProjectPaths.of_flor_dir(flor_dir)
    objects = paths.objects
    every = settings.ckpt_full_every()
    everything = sorted(store.runs(), key=lambda r: (r.started, r.run_id))
    chosen = {r.run_id for r in (runs if runs is not None else everything)}
    newest = {r.run_id for r in everything[len(everything) - keep_last:]} if keep_last else set()
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    pins = store.checkpoint_pins() if not include_pinned else {}
    # A run still recording (or a checkpoint still being handed off) may be writing a checkpoint
    # that is not listed yet and names, by content, an object an older run's checkpoint holds:
    # removing that object would damage the new checkpoint. So nothing is thinned meanwhile.
    # ``this_run``: the run that asks at its own end (its checkpoints are all listed by then).
    writing = [r.tstamp for r in everything
               if r.run_id != this_run and (r.status == "running" or handoff.pending(flor_dir, r.run_id))]
    # Which objects each checkpoint names, and who else needs them.
    manifests: dict[tuple, list[str]] = {}
    rows_of: dict[int, list] = {}
    for run in everything:
        rows_of[run.run_id] = store.checkpoints(run.run_id)
        for row in rows_of[run.run_id]:
            found = _manifest(flor_dir, row.location, remote)
            manifests[(run.run_id, row.iteration, row.point)] = list(found.get("blobs", [])) if found else []
    owner_count: dict[str, int] = {}
    for blobs in manifests.values():
        for digest in set(blobs):
            owner_count[digest] = owner_count.get(digest, 0) + 1
    total_before = sum(_size(objects, d, remote) for d in owner_count) + \
        sum(_manifest_size(flor_dir, r.location) for rows in rows_of.values() for r in rows)
    plans = []
    for run in everything:
        if run.run_id not in chosen:
            continue
        rows = rows_of[run.run_id]
        environment = run.environment if isinstance(getattr(run, "environment", None), dict) else {}
        summary = environment.get("checkpoints") or {}
        item = RunPlan(run.run_id, run.tstamp, run.started, keep=list(rows), iteration_s=summary.get("iteration_s"),
                       pinned=set(pins.get(run.run_id, ())))
        item.bytes = sum(_size(objects, d, remote) for r in rows for d in set(manifests[(run.run_id, r.iteration, r.point)])
                         if owner_count.get(d) == 1) + sum(_manifest_size(flor_dir, r.location) for r in rows)
        if writing:
            item.skipped = (f"run {writing[0]} is still writing checkpoints, which may share objects with this run's; "
                            "run flor gc again when it has ended")
        elif run.run_id in newest:
            item.skipped = f"one of the newest {keep_last}"
        elif cutoff is not None and run.started >= cutoff:
            item.skipped = f"newer than {older_than_days:g} day(s)"
        elif run.status == "running":
            item.skipped = "it is still running"
        elif not rows:
            item.skipped = "no checkpoints"
        else:
            handle = _locked(paths, run.run_id)
            if handle is None:
                item.skipped = "a flor replay of it is in progress"
            elif _locks is not None:
                _locks.append(handle)
            else:
                handle.close()
        plans.append(item)
    candidates = [p for p in plans if not p.skipped]
    branch_periods = {p.run_id: _branch_periods(next(r for r in everything if r.run_id == p.run_id)) for p in candidates}

    def thin(item: RunPlan, keep_iterations: set) -> None:
        item.keep = [r for r in rows_of[item.run_id] if r.iteration in keep_iterations or r.iteration in item.pinned]
        item.drop = [r for r in rows_of[item.run_id] if r not in item.keep]

    def frees() -> int:
        return _frees(plans, manifests, owner_count, objects, flor_dir, remote)

    if budget is None:
        for item in candidates:
            thin(item, spine(rows_of[item.run_id], every, branch_periods[item.run_id], item.pinned))
    else:
        for stage in ("spine", "ends"):
            for item in candidates:  # oldest first
                if total_before - frees() <= budget:
                    break
                rows = rows_of[item.run_id]
                if stage == "spine":
                    thin(item, spine(rows, every, branch_periods[item.run_id], item.pinned))
                else:
                    iterations = sorted({r.iteration for r in rows})
                    thin(item, {iterations[0], iterations[-1]})
    _frees(plans, manifests, owner_count, objects, flor_dir, remote, assign=True)
    return GcPlan(plans, total_before, budget)


def _manifest_size(flor_dir: Path, location: str) -> int:
    try:
        return (ProjectPaths.of_flor_dir(flor_dir).at(location)).stat().st_size
    except OSError:
        return 0


def _branch_periods(run) -> list[int]:
    environment = run.environment if isinstance(getattr(run, "environment", None), dict) else {}
    found = environment.get("checkpoints") or {}
    # Runs recorded since the phases were kept name (period, phase); older ones the periods only.
    return list(found.get("branches") or found.get("branch_periods") or [])


def _frees(plans, manifests, owner_count, objects: Path, flor_dir: Path, remote, assign: bool = False) -> int:
    """Bytes freed by dropping what the plans drop (objects no kept checkpoint names; a base a
    kept delta needs is freed too: that delta is rewritten standalone, which costs its size)."""
    dropped = {(p.run_id, r.iteration, r.point) for p in plans for r in p.drop}
    left: dict[str, int] = dict(owner_count)
    for key in dropped:
        for digest in set(manifests.get(key, [])):
            left[digest] -= 1
    total = 0
    for item in plans:
        freed = 0
        for row in item.drop:
            freed += _manifest_size(flor_dir, row.location)
            for digest in set(manifests.get((item.run_id, row.iteration, row.point), [])):
                if left.get(digest) == 0:
                    left[digest] = -1  # counted once
                    freed += _size(objects, digest, remote)
        if assign:
            item.frees = freed
        total += freed
    return total


def apply(store, flor_dir: Path, gc_plan: GcPlan, remote=None) -> None:
    """Carry out a plan made with the runs' replay locks held (see :func:`collect`)."""
    flor_dir = Path(flor_dir)
    objects = ProjectPaths.of_flor_dir(flor_dir).objects
    drop_keys = [(p.run_id, r.iteration, r.point) for p in gc_plan.runs for r in p.drop]
    if not drop_keys:
        gc_plan.done = True
        return
    dropped_locations = [r.location for p in gc_plan.runs for r in p.drop]
    store.unlist_checkpoints(drop_keys)  # first: no replay plans with them from here on
    kept_digests: set[str] = set()
    for run_id, iteration, point, location, *_ in store.all_checkpoints():
        found = _manifest(flor_dir, location, remote)
        kept_digests.update(found.get("blobs", []) if found else [])
    dropped_digests: set[str] = set()
    for location in dropped_locations:
        found = _manifest(flor_dir, location, None)
        dropped_digests.update(found.get("blobs", []) if found else [])
    needed = _closure(objects, kept_digests)
    doomed = (dropped_digests | _closure(objects, dropped_digests)) - kept_digests
    # A kept object whose chain runs through a doomed one is rewritten standalone first.
    reader = Reader(objects, remote)
    for digest in sorted(kept_digests):
        chain, link = [], base_of(objects, digest)
        while link:
            chain.append(link)
            link = base_of(objects, link)
        if any(link in doomed for link in chain):
            _standalone(objects, digest, reader)
            reader.cache.clear()
    needed = _closure(objects, kept_digests)
    for location in dropped_locations:
        _remove(ProjectPaths.of_flor_dir(flor_dir).at(location))
        if remote is not None:
            _remove_remote(remote, location)
    for digest in sorted(doomed - needed):
        for path in files(objects, digest):
            _remove(path)
            if remote is not None:
                _remove_remote(remote, f"objects/{path.name}")
    gc_plan.done = True


def _standalone(objects: Path, digest: str, reader: Reader) -> None:
    """Rewrite a delta object as a standalone one under its own name."""
    from .writer import write_durably

    path = stored(objects, digest)
    with open(path, "rb") as handle:
        found = header(handle.read(512)) or {}
    raw = reader.read(digest)  # decoded and verified before anything is replaced
    encoded = Encoder().encode(memoryview(raw), int(found.get("shuffle") or 1))
    target = objects / f"{digest}{encoded.suffix}"
    write_durably(target, encoded.data)
    if target != path:
        _remove(path)
    if reader.remote is not None and not callable(reader.remote):
        reader.remote.put(f"objects/{target.name}", bytes(encoded.data))


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_remote(remote, relative: str) -> None:
    try:
        if remote.fs.exists(remote.path(relative)):
            remote.fs.rm(remote.path(relative))
    except Exception:  # noqa: BLE001 - a store that does not answer keeps its copy; doctor reports it
        pass


def collect(store, flor_dir: Path, dry_run: bool = False, **options) -> GcPlan:
    """Plan and (unless ``dry_run``) carry out a gc, holding the replay locks of the runs it
    thins while it does."""
    from .remote import remote_store

    remote = remote_store()
    if options.get("budget") is None:
        options["budget"] = settings.ckpt_disk_total()
    locks: list = []
    try:
        gc_plan = plan(store, flor_dir, remote=remote, _locks=locks, **options)
        if not dry_run:
            apply(store, flor_dir, gc_plan, remote)
        return gc_plan
    finally:
        for handle in locks:
            handle.close()


def space(store, flor_dir: Path) -> list[tuple[str, int, int]]:
    """(tstamp, checkpoints, bytes stored for them and no other run) per run, for ``flor doctor``."""
    flor_dir = Path(flor_dir)
    objects = ProjectPaths.of_flor_dir(flor_dir).objects
    owners: dict[str, set] = {}
    per_run: dict[int, list] = {}
    for run_id, iteration, point, location, tstamp, *_ in store.all_checkpoints():
        per_run.setdefault(run_id, [tstamp, 0, 0])
        per_run[run_id][1] += 1
        per_run[run_id][2] += _manifest_size(flor_dir, location)
        found = _manifest(flor_dir, location, None)
        for digest in _closure(objects, set(found.get("blobs", []) if found else [])):
            owners.setdefault(digest, set()).add(run_id)
    for digest, runs in owners.items():
        if len(runs) == 1:
            per_run[next(iter(runs))][2] += _size(objects, digest, None)
    return [(str(v[0]), v[1], v[2]) for v in per_run.values()]


__all__ = ["GcPlan", "RunPlan", "apply", "collect", "plan", "space", "spine", "SUFFIX"]


def gc_project(runs: list[str] | None = None, keep_last: int = 0, older_than_days: float | None = None,
               budget: str | None = None, dry_run: bool = False, include_pinned: bool = False) -> GcPlan:
    """``flor gc``: the project's store opened, the runs named by tstamp prefix (default all)."""
    from ..reading.query import project_store

    if older_than_days is not None and older_than_days < 0:
        raise UsageError(f"--older-than {older_than_days:g}: expected a number of days, 0 or more")
    limit = settings.parse_bytes("--budget", budget).bytes if budget is not None else None
    store = project_store(readonly=dry_run)
    try:
        store.reap_killed()  # a run whose process is gone is not "still writing" (and a dry run only reads)
        chosen = None
        if runs:
            chosen = [store.find_run(prefix) for text in runs for prefix in text.split(",") if prefix.strip()]
        return collect(store, store.paths.flor_dir, dry_run=dry_run, runs=chosen, keep_last=keep_last,
                       older_than_days=older_than_days, budget=limit, include_pinned=include_pinned)
    finally:
        store.close()

"""The record of each run a replay considered (:class:`RunReplay`: its :class:`RunPlan`, then its
``outcome.RunOutcome``; :class:`ReplayReport`: all of them), and what a replay says about it: the
plan (``--dry-run``), where its time went, and how it ended (stored values, verification, drift and
its first cause, what the old code wrote). Nothing here plans or runs.

Data flows one way: ``planner`` makes each run's plan (frozen: a decision is never edited after,
only replaced by the planning stage, ``planner.refuse`` and friends); ``execution`` fills in the
outcome through its methods; this module reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from ..environment import settings
from ..store import RunRow
from .isolation import describe as describe_effects
from .outcome import RunOutcome
from .plan import Costs, Segment, sliceable
from .records import RunRecords


@dataclass(frozen=True)
class RunPlan:
    """What planning decided for one run (``planner.py`` alone builds it)."""

    status: str = "planned"  # planned, skipped, refused (how execution ends is the outcome's)
    reason: str = ""  # why skipped or refused
    names: list[str] = field(default_factory=list)
    strategy: str = ""
    segments: list[Segment] = field(default_factory=list)
    diff: str = ""
    source: str = ""
    total: int = 0
    outer_name: str | None = None
    checkpoints: dict = field(default_factory=dict)
    records: RunRecords | None = None
    places: set = field(default_factory=set)
    costs: Costs = field(default_factory=Costs)
    retry_ok: bool = False  # whether a re-execution after drift may memoize an iteration
    memo_blocked: list[str] = field(default_factory=list)  # why the nested loop cannot be skipped
    unkept_note: str = ""  # which checkpoints lack a registered object, and so are not restored
    wanted: str = ""  # the strategy where the statements stand asks for (memo, reexec, outside)
    reach_note: str = ""  # which iterations a statement in a branch can reach, and why
    nested: bool = True  # whether the outer loop's body holds a flor.loop (memo skips it)
    framework: str = ""  # the integration that drove the run's loops (flor.integrations), if any
    alone_check: tuple | None = None  # an item replayed alone and in order, compared before trusting independence
    slice: object = None  # slice.Slice: what memoized iterations run (None: not computed, --no-slice)

    @property
    def seconds(self) -> float:
        """Estimated seconds of this run's replay (sum over its segments)."""
        return sum(s.seconds for s in self.segments)

    def memo_ok(self, index: int) -> bool:
        """Whether a retry may memoize iteration ``index`` (``plan.retry_segment`` asks)."""
        return self.retry_ok


_PLAN_FIELDS = frozenset(f.name for f in fields(RunPlan))
_OUTCOME_FIELDS = frozenset(f.name for f in fields(RunOutcome))


@dataclass
class RunReplay:
    """One run of a replay: its plan, then its outcome.

    ``status`` and ``reason`` read both (the outcome's once execution ended, else the plan's).
    Every field of either reads through as an attribute (``item.stored``, ``item.segments``), for
    the report's readers, a container as a read-only view; none can be set or changed here: the
    plan is replaced whole by the planner, the outcome written through its methods."""

    run: RunRow
    plan: RunPlan = field(default_factory=RunPlan)
    outcome: RunOutcome = field(default_factory=RunOutcome)

    @property
    def status(self) -> str:
        return self.outcome.status or self.plan.status

    @property
    def reason(self) -> str:
        return self.outcome.reason if self.outcome.status else self.plan.reason

    @property
    def seconds(self) -> float:
        return self.plan.seconds

    def __getattr__(self, name: str):
        # Only reached for names that are not RunReplay's own (dataclass fields, properties).
        # A container reads through as a read-only view: `item.errors.append(...)` or
        # `item.timings[key] = ...` (as the record allowed before it was split) raises, rather
        # than changing a frozen plan, or an outcome behind its methods' back.
        if name in _PLAN_FIELDS:
            return _read_only(getattr(self.plan, name))
        if name in _OUTCOME_FIELDS:
            return _read_only(getattr(self.outcome, name))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in _PLAN_FIELDS:
            raise AttributeError(f"RunReplay.{name} is the plan's: the planner (planner.py) replaces a plan whole")
        if name in _OUTCOME_FIELDS:
            raise AttributeError(f"RunReplay.{name} is the outcome's: execution writes it through RunOutcome's methods")
        if name not in ("run", "plan", "outcome"):
            raise AttributeError(f"RunReplay holds a run, its plan and its outcome, not {name!r}")
        object.__setattr__(self, name, value)


class _ListView(list):
    """A list read through a RunReplay: a copy, equal to the list, that refuses to change."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a field read through RunReplay is a view: the planner replaces a plan, and execution "
                        "writes an outcome through RunOutcome's methods")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


def _read_only(value):
    if isinstance(value, list):
        return _ListView(value)
    if isinstance(value, dict):
        return MappingProxyType(value)
    if isinstance(value, set):
        return frozenset(value)
    return value


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
        if "drifted" in statuses:
            return "drifted"
        return "ok"

    @property
    def ok(self) -> bool:
        """True when nothing failed, was refused or drifted."""
        return self.outcome == "ok"


def describe_plan(item: RunReplay, diff: bool = False) -> str:
    """The --dry-run text of one run."""
    head = f"{item.run.tstamp}  {item.run.filename}"
    if item.status != "planned":
        return f"{head}  {item.status}: {item.reason}"
    title = headline(item)
    lines = [f"{head}  {title}  (estimated {item.seconds:.1f} s)"]
    for number, segment in enumerate(item.plan.segments, 1):
        lines.append(f"    segment {number}: {segment.describe()}  (~{segment.seconds:.1f} s)")
    if item.plan.reach_note:
        lines.append(f"    {item.plan.reach_note}")
    if item.plan.unkept_note:
        lines.append(f"    {item.plan.unkept_note}")
    executed = any(action == "exec" for segment in item.plan.segments for action in segment.actions.values())
    reasons = item.plan.memo_blocked[1:5] if "memoization blocked" in title else item.plan.memo_blocked[:5]
    if reasons and (item.plan.strategy != "outside" or executed):
        lines.append(f"    re-executed, not memoized: {'; '.join(reasons)}")
    if item.plan.slice is not None and not any(sliceable(segment) for segment in item.plan.segments):
        lines.append("    no slice: no segment has memoized iterations after its last re-executed one (a re-executed "
                     "iteration, or the code after the loop, would read what a skipped statement leaves)")
    elif item.plan.slice is not None:
        lines += [f"    {line}" for line in item.plan.slice.describe()]
    if diff and item.plan.diff:
        lines.append("".join("    " + line for line in item.plan.diff.splitlines(keepends=True)).rstrip())
    return "\n".join(lines)


# The stable keys of `flor replay --dry-run --json/--csv`, one row per run considered.
PLAN_COLUMNS = ("tstamp", "filename", "status", "reason", "names", "plan", "seconds", "segments")


def plan_row(item: RunReplay) -> tuple:
    """One run's plan as the values of :data:`PLAN_COLUMNS` (a rendering of the plan, nothing more)."""
    planned = item.status == "planned"
    segments = [{"actions": segment.describe(), "seconds": segment.seconds} for segment in item.plan.segments]
    return (item.run.tstamp, item.run.filename, item.status, item.reason or None, list(item.plan.names),
            headline(item) if planned else None, item.seconds if planned else None, segments)


def headline(item: RunReplay) -> str:
    """What the plan does, as its segments do it: a statement in the epoch body whose iterations
    are all re-executed reads ``exec for NAME (memoization blocked: ...)``, not ``memo``."""
    names = ", ".join(item.plan.names)
    actions = {action for segment in item.plan.segments for action in segment.actions.values()}
    if item.plan.wanted != "memo" or "memo" in actions:
        return f"{item.plan.strategy} for {names}"
    if item.plan.memo_blocked:
        why = f"memoization blocked: {item.plan.memo_blocked[0]}"
    elif item.plan.unkept_note:
        why = "memoization blocked: no checkpoint holds every registered object"
    elif not item.plan.nested:  # a loop of one level (LBFGS's steps): nothing to skip in its body
        why = f"the {item.plan.outer_name or 'outer'} loop holds no nested flor.loop to skip: each iteration runs"
    else:
        why = "no checkpoint where the nested loop ends"
    return f"exec for {names} ({why})"


def _iterations(item: RunReplay, indices: list[int], run_level: bool) -> str:
    shown = ", ".join(map(str, indices))
    text = f"{item.plan.outer_name or 'iteration'} {shown}" if indices else ""
    if run_level:
        text += (" and " if text else "") + "outside the loop"
    return text


def _verification(item: RunReplay) -> str:
    """How the stored values were verified, in words (nothing is stored unverified)."""
    labels = {"values": "by the recorded values they logged again", "fingerprint": "by the registered state's "
              "fingerprint at a checkpoint", "start": "re-executed from the start", "memo": "memoized from their checkpoints"}
    parts = [f"{count} {item.plan.outer_name or 'iteration'}(s) {labels[how]}" for how, count in item.outcome.verified.items()
             if count and how in labels]
    if item.outcome.end_check == "fingerprint":
        parts.append("after the loop by the registered state's fingerprint at the end of the run")
    elif item.outcome.end_check == "values":
        parts.append("after the loop by the recorded values")
    return "; ".join(parts)


def describe_writes(writes: dict, root: Path | None, shown: int = 10) -> str:
    """What the old code wrote (kept in the replay's scratch layer, then discarded): paths in the
    project relative to it, first; others absolute."""
    names = []
    for path, size in writes.items():
        rel = path
        if root is not None:
            try:
                rel = str(Path(path).relative_to(Path(root).resolve()))
            except ValueError:
                pass
        names.append((rel.startswith("/"), rel + (" (deleted)" if size is None else "")))
    names = [name for _outside, name in sorted(names)]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"    the old code wrote {len(names)} file(s), kept apart from yours and discarded: "
            f"{', '.join(names[:shown])}{more}")


def describe_timings(item: RunReplay) -> str:
    """Where the workers' time went for one run (stderr: timings are not results)."""
    t = item.outcome.timings
    # Set-up is the task's time before its loop: laying out its view or copies (workspace), the
    # script's lines up to the loop, and in them a job rank's rendezvous (both shown where measured).
    inside = [(label, t[key]) for label, key in (("workspace", "workspace_s"), ("rendezvous", "rendezvous_s"))
              if key in t]
    setup = f"set-up {t.get('setup_s', 0.0) + t.get('workspace_s', 0.0):.2f} s"
    if inside:
        setup += " (" + ", ".join(f"{label} {seconds:.2f} s" for label, seconds in inside) + ")"
    parts = [("restoring checkpoints", t.get("restore_s", 0.0)),
             ("memoized iterations", t.get("memo_s", 0.0)), ("re-executed iterations", t.get("exec_s", 0.0)),
             ("after the loop", t.get("after_s", 0.0))]
    if "store_s" in t:
        parts.append(("storing", t["store_s"]))
    text = f"  {item.run.tstamp}  time: {setup}, " + ", ".join(f"{label} {seconds:.2f} s" for label, seconds in parts)
    if "imports_s" in t:  # the worker's own start, before its first task (overlapping planning when warm)
        text += f"; before its task the worker started in {t.get('start_s', 0.0):.2f} s and imported in {t['imports_s']:.2f} s"
    return text


def describe_outcome(item: RunReplay, root: Path | None = None) -> str:
    """The closing line(s) of one run."""
    head = f"{item.run.tstamp}  "
    if item.status in ("done", "drifted"):
        text = f"{head}{item.status}: {', '.join(item.plan.names)}: {item.outcome.stored} value(s) stored"
    elif item.status == "failed":
        text = f"{head}failed: {item.reason} (finished segments are kept; run `flor replay` again for the rest)"
        if item.outcome.stored:
            text += f"; {item.outcome.stored} value(s) stored"
    else:
        return f"{head}{item.status}: {item.reason}"
    checked = item.outcome.matched + item.outcome.drifted
    if checked:
        text += f"; fidelity: {item.outcome.matched} of {checked} recorded values matched"
        if item.outcome.drifted:
            worst = ", ".join(
                f"{name} ({entry['count']}x" + (f", max |diff| {entry['max_difference']:.3g})" if entry["max_difference"] is not None else ")")
                for name, entry in item.outcome.drift.items()
            )
            text += f", DRIFTED: {worst}"
    lines = [text]
    how = _verification(item)
    if how:
        lines.append(f"    verified: {how}")
    if item.outcome.slice_outcome:
        lines.append(f"    {_slice_line(item)}")
    if item.outcome.retried:
        lines.append(f"    drifted iterations were re-executed {' then '.join(item.outcome.retried)}")
    if item.outcome.first_drift:
        first = item.outcome.first_drift
        lines.append(f"    first drift: {first['name']} at {first['where']}: recorded {first['recorded']}, replayed "
                     f"{first['replayed']}; {_effects(item)}")
    if item.outcome.rejected or item.outcome.rejected_run_level:
        where = _iterations(item, item.outcome.rejected, item.outcome.rejected_run_level)
        if item.status == "drifted":
            lines.append(f"    still DRIFTED at {where}: its values are not stored (--accept-drift stores them)")
        else:
            lines.append(f"    DRIFTED at {where}: stored anyway (--accept-drift)")
    if item.outcome.writes:
        lines.append(describe_writes(item.outcome.writes, root))
    return "\n".join(lines)


def _effects(item: RunReplay) -> str:
    if not settings.replay_isolation():
        return "the new statements ran without isolation (FLOR_REPLAY_ISOLATE=0)"
    return describe_effects(item.outcome.observer)


def _slice_line(item: RunReplay) -> str:
    """How memoized iterations ran the slice, and whether it held (slice_run.py)."""
    seen, loop = item.outcome.slice_outcome, item.plan.outer_name or "iteration"
    verified, sliced = seen.get("verified", []), seen.get("sliced", [])
    text = (f"slice: {len(sliced)} memoized {loop}(s) ran only the statements the new ones need "
            f"({seen['statements']} statement(s) skipped; {seen.get('uncompared', 0)} recorded value(s) they would log "
            "not compared)")
    if seen.get("partial"):
        text += (f"; {len(seen['partial'])} of them did not restore "
                 f"{', '.join(f'`{name}`' for name in seen.get('unrestored', []))} (the slice neither reads nor writes it)")
    if verified:
        text += f"; checked against the whole body at {loop} {', '.join(map(str, verified))}: equal"
        if seen.get("loop_ended") is not None:
            text += f" (both ended the loop at {loop} {seen['loop_ended']})"
    stopped = seen.get("stopped")
    if stopped:
        text += (f"; the slice did not pay (at {loop} {stopped['iteration']} it took {stopped['slice_s']:.2f} s, the "
                 f"whole body {stopped['full_s']:.2f} s): later iterations ran the whole body")
    fell = seen.get("fell_back")
    if fell:
        text += (f"; FELL BACK to full memoization at {loop} {fell['iteration']}: {fell['why']}")
    return text

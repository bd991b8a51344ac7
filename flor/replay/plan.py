"""Plans: what each replay worker restores, skips, memoizes and re-executes.

For each run, the strategy follows from where the new statements stand (see ``analysis``):

* ``outside`` — before or after the outer loop: restore the last checkpoint, skip the loop;
* ``memo`` — in the outer body: each outer iteration runs with its first nested loop skipped,
  its effect restored from the checkpoint of that iteration;
* ``reexec`` — inside a nested loop: re-execute, split into segments that start at checkpoints.

A missing checkpoint (the adaptive period skips some) is covered by re-executing from the nearest
earlier one. Each :class:`Segment` holds, per outer iteration, one action: ``memo``, ``exec``,
or ``restore_end`` (skip the iteration and restore the state at its end); iterations without an
action are skipped, and the loop stops at ``stop``.

>>> plan_run("reexec", total=10, checkpoints={i: {"nested": f"c{i}"} for i in range(10)}, workers=2)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

STARTUP_S = 2.0  # interpreter, imports and setup of a replayed process, before its outer loop


@dataclass
class Segment:
    """The work of one replay worker over one run."""

    actions: dict[int, str]
    store: list[int]
    stop: int
    run_post: bool
    store_before: bool
    store_after: bool
    seconds: float = 0.0

    @property
    def first(self) -> int | None:
        """The first outer iteration this segment yields or restores."""
        return min(self.actions) if self.actions else None

    def describe(self) -> str:
        """'memo 0-9', 'restore 4 (memo), exec 5-9', ... for --dry-run."""
        parts: list[str] = []
        for action, indices in _runs_of(self.actions):
            label = {"memo": "memo", "exec": "exec", "restore_end": "restore"}[action]
            parts.append(f"{label} {_span(indices)}")
        if not parts:
            parts.append("no loop iterations")
        if self.run_post:
            parts.append("then the code after the loop")
        return ", ".join(parts)


def sliceable(segment: Segment) -> list[int]:
    """The memoized iterations of a segment that may run the slice (replay/slice.py): those after
    its last re-executed iteration, and not right after it (that one is verified by the recorded
    values its whole body logs), in a segment that does not run the code after the loop. A
    re-executed iteration, or that code, would read what a skipped statement leaves."""
    if segment.run_post:
        return []
    executed = [index for index, action in segment.actions.items() if action == "exec"]
    after = max(executed) + 1 if executed else -1
    return sorted(index for index, action in segment.actions.items() if action == "memo" and index > after)


def _span(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}-{indices[-1]}"


def _runs_of(actions: dict[int, str]):
    current, indices = None, []
    for index in sorted(actions):
        action = actions[index]
        if action != current or (indices and index != indices[-1] + 1):
            if indices:
                yield current, indices
            current, indices = action, []
        indices.append(index)
    if indices:
        yield current, indices


@dataclass
class Costs:
    """Recorded timings of one run, for estimates."""

    iteration_s: list[float] = field(default_factory=list)  # per outer iteration
    nested_s: list[float] = field(default_factory=list)  # of its first nested loop
    before_loop_s: float = 0.0

    def of(self, index: int, action: str) -> float:
        """Estimated seconds of one action on one iteration."""
        if index >= len(self.iteration_s):
            return 0.0
        if action == "exec":
            return self.iteration_s[index]
        if action == "memo":
            return max(0.0, self.iteration_s[index] - self.nested_s[index])
        return 0.0


def chain(targets: list[int], strategy: str, checkpoints: dict[int, dict[str, str]], memo_ok,
          before_nested: bool = False) -> dict[int, str]:
    """Actions that reach every target iteration with the right state, in one process.

    ``before_nested``: a statement runs in the outer body before the nested loop (an evaluation
    at the top of the body), so memoizing iteration k needs the state at the end of k-1 as well:
    it is reached first (restored, or re-executed from the nearest earlier checkpoint)."""
    actions: dict[int, str] = {}
    state_at = -1  # the process holds the state at the end of this outer iteration (-1: loop start)
    for target in sorted(targets):
        memo_here = strategy == "memo" and "nested" in checkpoints.get(target, {}) and memo_ok(target)
        if memo_here and (not before_nested or state_at == target - 1):
            actions[target] = "memo"
            state_at = target
            continue
        if state_at != target - 1:
            restore = None
            for j in range(target - 1, state_at, -1):
                points = checkpoints.get(j, {})
                if "end" in points:
                    restore = (j, "restore_end")
                    break
                if "nested" in points and memo_ok(j):
                    restore = (j, "memo")
                    break
            start = state_at + 1
            if restore is not None:
                actions[restore[0]] = restore[1]
                start = restore[0] + 1
            for k in range(start, target):
                actions[k] = "exec"
        actions[target] = "memo" if memo_here else "exec"
        state_at = target
    return actions


def _split(targets: list[int], pieces: int, weight) -> list[list[int]]:
    """Contiguous chunks of ``targets`` with about equal total weight."""
    pieces = max(1, min(pieces, len(targets)))
    if pieces == 1:
        return [targets]
    total = sum(weight(t) for t in targets) or len(targets)
    chunks, current, acc = [], [], 0.0
    for position, t in enumerate(targets):
        current.append(t)
        acc += weight(t) or total / len(targets)
        # Close a chunk at its share of the weight, or where the targets left are only enough
        # for one each: else a heavy last target (the last item, timed with the loop's end)
        # let the first chunk take everything, and a replay asked for 2 workers ran on 1.
        last_chance = len(targets) - position - 1 <= pieces - len(chunks) - 1
        if len(chunks) < pieces - 1 and (acc >= total / pieces * (len(chunks) + 1) or last_chance):
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def _restorable(index: int, checkpoints: dict[int, dict[str, str]], memo_ok) -> bool:
    """Whether the state at the end of outer iteration ``index`` can be restored (-1: the start)."""
    if index < 0:
        return True
    points = checkpoints.get(index, {})
    return "end" in points or ("nested" in points and memo_ok(index))


def _align(chunks: list[list[int]], checkpoints: dict[int, dict[str, str]], memo_ok) -> list[list[int]]:
    """Move each cut between chunks back to an iteration whose state before it is restorable, so
    that no segment re-executes iterations another segment owns (merging chunks where there is
    no such cut)."""
    if len(chunks) < 2:
        return chunks
    targets = [t for chunk in chunks for t in chunk]
    cuts = []
    for chunk in chunks[1:]:
        start = targets.index(chunk[0])
        while start > 0 and not _restorable(targets[start] - 1, checkpoints, memo_ok):
            start -= 1
        if start > 0 and (not cuts or start > cuts[-1]):
            cuts.append(start)
    bounds = [0, *cuts, len(targets)]
    return [targets[a:b] for a, b in zip(bounds, bounds[1:]) if a < b]


def plan_run(
    strategy: str,
    total: int,
    checkpoints: dict[int, dict[str, str]],
    *,
    places: set[str] = frozenset(),
    selected: list[int] | None = None,
    workers: int = 1,
    costs: Costs | None = None,
    memo_ok=lambda index: True,
    before_nested: bool = False,
) -> list[Segment]:
    """The segments that replay one run (``before_nested``: see :func:`chain`)."""
    costs = costs or Costs()
    needs_after = "after" in places
    needs_before = "before" in places
    if strategy == "outside":
        if not needs_after:
            return [_costed(Segment({}, [], 0, False, True, False), costs)]
        if not total:
            actions = {}
        elif "end" in checkpoints.get(total - 1, {}):
            actions = {total - 1: "restore_end"}
        else:
            actions = chain([total - 1], "memo", checkpoints, memo_ok)
        return [_costed(Segment(actions, [], total, True, needs_before, True), costs)]

    targets = sorted(set(range(total) if selected is None else [i for i in selected if 0 <= i < total]))
    if not targets:
        return []
    weight = lambda i: costs.of(i, "memo" if strategy == "memo" else "exec") or 0.001
    pieces = workers if strategy == "reexec" else max(1, min(workers, int(sum(map(weight, targets)) // STARTUP_S)))
    segments = []
    chunks = _split(targets, pieces, weight)
    if strategy == "reexec":  # a memoized iteration restores its own checkpoint: no cut to move
        chunks = _align(chunks, checkpoints, memo_ok)
    for number, chunk in enumerate(chunks):
        last_chunk = number == len(chunks) - 1
        run_post = last_chunk and needs_after
        goal = chunk + (list(range(chunk[-1] + 1, total)) if run_post else [])
        actions = chain(goal, strategy, checkpoints, memo_ok, before_nested)
        segment = Segment(actions, chunk, total if run_post else chunk[-1] + 1, run_post, number == 0 and needs_before, run_post)
        segments.append(_costed(segment, costs))
    return segments


def runs_nested_after_memo(segments: list[Segment]) -> bool:
    """Whether a segment executes an iteration right after one it memoized (or restored that
    way): the nested loop then runs again on what the skipped one left."""
    return any(action == "memo" and segment.actions.get(index + 1) == "exec"
               for segment in segments for index, action in segment.actions.items())


def plan_independent(targets: list[int], workers: int, costs: Costs, places: set[str]) -> list[Segment]:
    """Segments for a loop whose iterations share no state (``independence``): each target
    iteration runs alone, with nothing before it re-executed, split across ``workers``."""
    if not targets:
        return []
    weight = lambda i: costs.of(i, "exec") or 0.001
    chunks = _split(sorted(targets), max(1, workers), weight)
    return [
        _costed(Segment({t: "exec" for t in chunk}, chunk, chunk[-1] + 1, False, number == 0 and "before" in places,
                        False), costs)
        for number, chunk in enumerate(chunks)
    ]


def alone_check(segments: list[Segment]) -> tuple[Segment, Segment] | None:
    """Two segments that test what independence assumes, before anything is stored: the first
    item an independent plan replays without the one before it, replayed alone and after that
    one; None when no item runs alone (nothing is assumed). Nothing after the loop runs."""
    alone = None
    for segment in segments:
        for index in sorted(segment.actions):
            if index > 0 and segment.actions.get(index - 1) != "exec" and (alone is None or index < alone):
                alone = index
    if alone is None:
        return None
    return (Segment({alone: "exec"}, [alone], alone + 1, False, False, False),
            Segment({alone - 1: "exec", alone: "exec"}, [alone], alone + 1, False, False, False))


def in_order(targets: list[int], places: set[str], costs: Costs) -> Segment:
    """One segment that re-executes every item up to the last target, in order."""
    stop = max(targets) + 1
    return _costed(Segment({i: "exec" for i in range(stop)}, sorted(targets), stop, False, "before" in places, False),
                   costs)


def driven_actions(targets: list[int], stop: int, strategy: str, checkpoints: dict[int, dict[str, str]],
                   memo_ok) -> dict[int, str]:
    """An action for every iteration before ``stop``, as a framework's loop needs (it runs every
    epoch: none can be skipped or jumped over): ``exec`` for the targets of a re-execution, else
    ``memo`` where the iteration has a checkpoint where its nested loop ended, else ``exec``."""
    chosen = set(targets)
    actions = {}
    for index in range(stop):
        memo = "nested" in checkpoints.get(index, {}) and memo_ok(index)
        actions[index] = "exec" if (strategy == "reexec" and index in chosen) or not memo else "memo"
    return actions


def plan_driven(
    strategy: str,
    total: int,
    checkpoints: dict[int, dict[str, str]],
    *,
    places: set[str] = frozenset(),
    selected: list[int] | None = None,
    costs: Costs | None = None,
    memo_ok=lambda index: True,
) -> list[Segment]:
    """One segment for a run whose outer loop a framework drove (see :func:`driven_actions`)."""
    costs = costs or Costs()
    needs_after, needs_before = "after" in places, "before" in places
    if strategy == "outside" and not needs_after:
        return [_costed(Segment({}, [], 0, False, True, False), costs)]
    targets = [] if strategy == "outside" else sorted(
        set(range(total) if selected is None else [i for i in selected if 0 <= i < total]))
    if not targets and not needs_after:
        return []
    stop = total if needs_after else targets[-1] + 1
    actions = driven_actions(targets, stop, strategy, checkpoints, memo_ok)
    return [_costed(Segment(actions, targets, stop, needs_after, needs_before, needs_after), costs)]


def _costed(segment: Segment, costs: Costs) -> Segment:
    segment.seconds = STARTUP_S + costs.before_loop_s + sum(costs.of(i, a) for i, a in segment.actions.items())
    return segment


def retry_segment(
    targets: list[int],
    total: int,
    checkpoints: dict[int, dict[str, str]],
    *,
    run_level: bool = False,
    places: set[str] = frozenset(),
    memo_ok=lambda index: True,
    costs: Costs | None = None,
    driven: bool = False,
) -> Segment:
    """One segment that re-executes ``targets`` (iterations whose replay drifted), each from the
    last checkpoint before it; with no ``checkpoints``, everything from the start of the run.
    ``run_level``: the values logged outside the outer loop are re-executed too. ``driven``: a
    framework's loop, which needs an action for every iteration (:func:`driven_actions`)."""
    costs = costs or Costs()
    goal = sorted(set(targets) | (set(range(total)) if run_level else set()))
    if driven:
        stop = total if run_level else (max(goal) + 1 if goal else 0)
        actions = driven_actions(goal, stop, "reexec", checkpoints, memo_ok)
        return _costed(Segment(actions, sorted(targets), stop, run_level, run_level and "before" in places, run_level),
                       costs)
    if checkpoints:
        actions = chain(goal, "reexec", checkpoints, memo_ok)
    else:
        actions = {i: "exec" for i in range(max(goal) + 1)} if goal else {}
    stop = total if run_level else (max(goal) + 1 if goal else 0)
    segment = Segment(actions, sorted(targets), stop, run_level, run_level and "before" in places, run_level)
    return _costed(segment, costs)

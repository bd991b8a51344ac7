"""Policy: when to checkpoint, so that checkpoints cost training at most a budget of its time.

What a checkpoint costs *training* is what the policy charges against the budget
(``FLOR_CKPT_BUDGET``, default 0.01 = 1 %):

- the time the training thread spends on it (finding the loop's variables, the snapshot copy into
  host memory), measured each time;
- the slowdown the background writer causes. Iterations the writer overlapped are compared with
  the mean of recent iterations it did not (iterations over twice that mean, an evaluation
  branch, are left out of both), and the excess, signed so that noise averages out, is charged to
  the checkpoints written meanwhile, at most the writer's own CPU time (beyond that it is noise).
  Until that measure stands out of the noise (three windows, a mean over twice its standard
  error), a model stands in: the writer runs at low priority, so what it costs training shows in
  what it got of the CPU. While hashing and writing it measures its own CPU time against its wall
  time: a writer that got a core whenever it asked ran on a core training left idle and cost
  nothing; one that got a tenth of one was competing with training for busy cores, and that
  share of its CPU time, spread over the cores, is charged.

The writer's own wall time is not charged: at low priority beside a training loop that uses every
core it may take long, and that costs training nothing. A writer that falls behind (two
checkpoints waiting) is throttled instead: the next checkpoint is skipped.

Checkpoints are spaced by training time, not by a count of iterations: one is due once the
training time since the last one reaches cost / budget, so a run of 0.1 s iterations gets one
every few iterations, a run of 2 s epochs one every epoch, and long evaluation iterations count
for what they take. ``FLOR_CKPT_PERIOD=N`` fixes the period at N iterations instead. The last
iteration is always checkpointed, and so is the second when the training thread's own cost of a
checkpoint fits the budget: the writer's first job pays one-time work, so the policy judges the
writer after two.

Branches that run every N iterations (``if it % eval_interval == 0:``) are where hindsight
questions tend to land, and replaying one of their iterations costs the iterations since the last
checkpoint before it. Their periods are read from the outer loop's source (periodic.py, told by
:meth:`Policy.know_branches` after the loop's second iteration), and then believed for good: the
iteration before each is checkpointed, and the regular spacing widens so that all of them
together stay within the budget; under a disk budget that may run out, nothing is checkpointed
until they are read (:meth:`Policy.waits_for_source`). Where the source shows none, the periods are learned from the
iterations' times: such an iteration takes longer than the others; once two have been seen N
apart, the iteration before the next one is checkpointed. A loop may have several such branches
(makemore samples every 200 steps and evaluates every 500): each long iteration that no learned
period explains is a hypothesis for every earlier long iteration it could repeat, kept until the
iteration it foretells is not long. Under a disk budget that binds, the checkpoints before learned
branches draw on the whole budget, all of them where it holds every one still to come, else
evenly spaced over them (:meth:`Policy.branch_room`); regular ones spend only what those leave
(and, while no branch is learned on a loop of unknown length, a share, ``REGULAR_SHARE``, of it).
:meth:`Policy.explain` says why the spacing is what it is (``flor show`` prints it).

>>> policy = Policy(budget=0.01)
>>> policy.observe_iteration(1.5, 0.0); policy.observe_checkpoint(0.002)
>>> policy.due(1)
True
"""

from __future__ import annotations

import math
import os
import statistics

from ..environment import settings
from .diskbudget import DiskSpacing

COPY_BYTES_PER_S = 1.5e9  # a first guess for the snapshot cost, before one is measured
LONG_REMEMBERED = 16  # long iterations remembered for finding periods
MAX_SUPPOSED = 3  # periods supposed and not yet confirmed, at once (slow moments suppose some)
# On a loop of unknown length, the share of the disk budget regular checkpoints may spend; the
# rest is kept for the ones before periodic branches (an evaluation every N iterations is learned
# only after two of them, when a budget spent from the start would be gone). While no period is
# learned the reserve is released as the loop outlives RESERVE_ITERATIONS (at 4x as many, 7/8 of
# the budget is open), so a loop without one still spends most of its budget.
REGULAR_SHARE = 0.5
RESERVE_MARGIN = 1.05  # the bytes held back for the checkpoints before branches, over their measured size
RESERVE_ITERATIONS = 100


def _ewma(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _firings(first: int, last: int, period: int, phase: int) -> int:
    """How many iterations in [first, last] have index % period == phase."""
    if last < first:
        return 0
    return (last - phase) // period - (first - 1 - phase) // period


class Policy:
    """Adaptive checkpoint spacing from measured costs."""

    def __init__(self, budget: float | None = None, fixed_period: int | None = None, cores: int | None = None,
                 disk: DiskSpacing | None = None) -> None:
        self.budget = settings.ckpt_budget() if budget is None else budget
        # The disk budget (diskbudget.py): checkpoints at least its period apart as well.
        self.disk = DiskSpacing(setting=settings.ckpt_disk()) if disk is None else disk
        self.total: int | None = None  # the outer loop's length, where known (the disk budget spreads over it)
        self.disk_refused = 0  # checkpoints the time budget called for and the disk budget refused
        self.fixed_period = settings.ckpt_period() if fixed_period is None else fixed_period
        self.cores = max(1, cores or os.cpu_count() or 1)
        self.iteration_s: float | None = None  # every iteration
        self.train_s: float | None = None  # the training thread's time per checkpoint
        self.writer_cpu_s: float | None = None  # the writer's CPU time per checkpoint
        self.slowdown_s: float | None = None  # measured: training time the writer cost per checkpoint
        self.copy_rate = COPY_BYTES_PER_S
        self.state_bytes = 0  # size of the registered state, for a first estimate
        self.since_s = 0.0  # training time since the last checkpoint
        self.iterations = 0
        self.taken = 0
        self.writes = 0  # checkpoints the writer has reported
        self.skipped = 0  # checkpoints skipped because the writer was behind
        self.windows = 0  # writer-busy windows measured against clean iterations
        self._clean: list[float] = []  # recent iterations the writer was idle through (not the first)
        self._excess = 0.0  # signed slowdown of the iterations since the writer became busy
        self._excess_iterations = 0
        self._excess_jobs = 0
        self._checkpoint_in_iteration = 0.0
        self._excesses: list[float] = []  # per-checkpoint slowdown of each measured window
        self._share: float | None = None  # the share of a core the writer got while computing
        self._durations: list[float] = []  # recent iterations, for telling the long ones
        self._long: list[int] = []  # indices of the recent long iterations (a branch ran), ascending
        self._first: int | None = None  # the first index observed: nothing is known before it
        # Periodic branches, learned or supposed: (period, phase) -> the last index it ran at.
        self.branches: dict[tuple[int, int], int] = {}
        self._confirmed: set[tuple[int, int]] = set()  # those whose foretold iteration was long
        # Those read from the source (periodic.py): (period, phase) -> the test. Once there are
        # some, the timing learner stops: a slow moment supposes nothing more.
        self.source: dict[tuple[int, int], str] = {}
        self.predicted_total: int | None = None  # the loop's length a `break` bound in the source implies
        # The source shows periodic tests whose period is read only once the loop's counter has
        # been seen to step (periodic.py, after its second iteration): see :meth:`waits_for_source`.
        self.source_pending = False

    # -- measurements ------------------------------------------------------------------------

    def clean_s(self) -> float | None:
        """A typical iteration that the writer did not overlap (the mean of recent ones: unbiased,
        and the iterations of another kind are already left out)."""
        return statistics.fmean(self._clean) if self._clean else None

    def observe_iteration(self, seconds: float, writer_overlap_s: float, index: int | None = None) -> None:
        """Outer iteration ``index`` took ``seconds``; the writer was busy ``writer_overlap_s`` of them."""
        own = self._checkpoint_in_iteration  # the checkpoint's own time is charged as train_s
        self._checkpoint_in_iteration = 0.0
        self.iteration_s = _ewma(self.iteration_s, seconds)
        self.since_s += seconds
        first = self.iterations == 0
        self._note_branch(self.iterations if index is None else index, seconds - own)
        self.iterations += 1
        if first:
            return  # warm-up (imports, caches): no baseline for the writer's slowdown
        work = seconds - own
        clean = self.clean_s()
        if clean is not None and work > 2 * clean:
            return  # another kind of iteration (an evaluation branch): no measure of the writer
        if writer_overlap_s <= 0:
            if self._excess_jobs and self._excess_iterations and clean is not None:
                self._excesses = (self._excesses + [self._excess / self._excess_jobs])[-15:]
                self.windows += 1
                # The mean, signed: noise averages out; beyond the writer's own CPU time it is noise.
                self.slowdown_s = min(max(0.0, statistics.fmean(self._excesses)), self.writer_cpu_s or 0.0)
            self._excess, self._excess_iterations, self._excess_jobs = 0.0, 0, 0
            self._clean = (self._clean + [work])[-15:]
        elif clean is not None:
            self._excess += work - clean
            self._excess_iterations += 1

    def know_branches(self, branches, index: int, total: int | None = None) -> None:
        """Periodic branches read from the source (periodic.py's ``Branch``: period, phase, text),
        known once outer iteration ``index`` ended; ``total``: the loop's length a ``break`` bound
        implies. They replace whatever the timing learner supposed or learned, for good."""
        self.source_pending = False
        if total is not None and self.total is None and total > index + 1:
            self.predicted_total = total
        if not branches:
            return
        self.source = {(b.period, b.phase): b.text for b in branches}
        # The last iteration each ran at before ``index`` (negative: not yet): ``due(index)``
        # is asked before ``observe_iteration(index)`` notes it.
        self.branches = {key: index - 1 - ((index - 1 - key[1]) % key[0]) for key in self.source}
        self._confirmed = set(self.source)

    def _note_branch(self, index: int, work: float) -> None:
        """Tell the long iterations (over 1.5 times the median of recent ones) and their periods.

        A long iteration that a known period explains confirms it. One that none explains is
        either noise (a slow moment of the machine) or a branch not yet learned: it supposes a
        period for each earlier remembered long iteration it could repeat (every iteration of that
        period and phase since the first remembered was long). A period whose foretold iteration
        is not long is dropped: noise costs one checkpoint, and a second branch (makemore's
        evaluation every 500 steps beside its sampling every 200) is learned like the first."""
        if self.source:
            for key in self.branches:
                if index % key[0] == key[1]:
                    self.branches[key] = index
            return
        if self._first is None:
            self._first = index
        recent = self._durations
        if index == 0:
            self._long = [0]  # long anyway (warm-up), and where `it % n == 0` branches run first
        elif len(recent) >= 3 and work > 1.5 * statistics.median(recent):
            explained = [key for key, last in self.branches.items() if (index - last) % key[0] == 0]
            for key in explained:
                self.branches[key] = index
                self._confirmed.add(key)
            if not explained:
                remembered = set(self._long)
                oldest = max(self._first, self._long[0]) if self._long else self._first
                for earlier in self._long:
                    period = index - earlier
                    if period < 2:
                        continue  # consecutive long iterations: noise, or a stretch of slow ones
                    if all(k in remembered for k in range(earlier, oldest - 1, -period)):
                        self.branches.setdefault((period, index % period), index)
                # Noise supposes some at every slow moment: keep the learned ones, and of the
                # supposed ones those tested soonest (a later slow moment must not push out the
                # evaluation's period before its next iteration tests it).
                supposed = sorted((k for k in self.branches if k not in self._confirmed),
                                  key=lambda k: self.branches[k] + k[0])
                for key in supposed[MAX_SUPPOSED:]:
                    del self.branches[key]
            self._long = (self._long + [index])[-LONG_REMEMBERED:]
        else:
            self._durations = (recent + [work])[-15:]
            for key, last in list(self.branches.items()):
                if index == last + key[0]:  # the branch did not come: not a period of it
                    del self.branches[key]
                    self._confirmed.discard(key)

    @property
    def branch_period(self) -> int | None:
        """The shortest period of a periodic branch learned now (None: none)."""
        return min((period for period, _ in self._confirmed), default=None)

    def anticipated(self) -> set[int]:
        """The next iteration each known periodic branch is expected to run at."""
        return {last + period for (period, _), last in self.branches.items()}

    def observe_checkpoint(self, train_s: float, writer_cpu_s: float | None = None, nbytes: int = 0,
                           elapsed_s: float = 0.0, writer_share: float | None = None,
                           copy_s: float | None = None, written_bytes: int | None = None,
                           raw_bytes: int | None = None) -> None:
        """One checkpoint took ``train_s`` of the training thread (reported when taken,
        ``elapsed_s`` into its iteration) and ``writer_cpu_s`` of the writer's CPU (reported when
        written, with ``writer_share``: its CPU time over its wall time while computing)."""
        if written_bytes is not None:
            self.disk.observe_written(written_bytes, raw_bytes)
        if writer_cpu_s is not None:
            self.writes += 1
            self.writer_cpu_s = _ewma(self.writer_cpu_s, writer_cpu_s, 0.5)
            if writer_share is not None:
                self._share = _ewma(self._share, min(1.0, max(0.0, writer_share)), 0.5)
            self._excess_jobs += 1
            return
        self._checkpoint_in_iteration += train_s
        if self.taken == 0 and copy_s is not None:
            # The first one also pays one-time work (reading the script's syntax tree): until a
            # later one is measured, charge what they cost, about the copy (``copy_s``) twice.
            train_s = min(train_s, 2 * copy_s)
        self.train_s = _ewma(self.train_s, train_s, 0.5)
        if nbytes and train_s > 0:
            self.copy_rate = nbytes / train_s
        # The rest of this iteration counts toward the next spacing (the whole iteration is added
        # when it ends).
        self.since_s = -elapsed_s
        self.taken += 1

    def throttled(self) -> None:
        """A checkpoint was skipped because the writer was behind."""
        self.skipped += 1

    # -- decisions --------------------------------------------------------------------------

    def cost(self) -> float:
        """Estimated training seconds lost per checkpoint."""
        train = self.train_s if self.train_s is not None else self.state_bytes / self.copy_rate
        return train + self.writer_cost()

    def measured(self) -> bool:
        """Whether the writer's measured slowdown stands out of the noise."""
        found = self._excesses
        if len(found) < 3 or self.slowdown_s is None:
            return False
        error = statistics.stdev(found) / math.sqrt(len(found))
        return statistics.fmean(found) > 2 * error

    def writer_cost(self) -> float:
        """Training seconds the writer costs per checkpoint: measured where the measure stands
        out of the noise, else the share of its CPU time it had to take from training."""
        cpu = self.writer_cpu_s or 0.0
        if self.measured():
            return self.slowdown_s
        if self._share is None:
            return cpu / self.cores
        return cpu * (1.0 - self._share) / self.cores

    @property
    def base_spacing_s(self) -> float:
        """Training seconds between checkpoints that keep their cost within the budget."""
        return self.cost() / self.budget

    def branch_span_s(self) -> float | None:
        """Training seconds between checkpoints before periodic branches, all of them together
        (each branch's span is its period's training time; their rates add), when there is one."""
        # Learned periods only: a supposed one costs one checkpoint before it is tested, and
        # the spacing would swing with every slow moment of the machine.
        if not self._confirmed or not self.iteration_s:
            return None
        return 1.0 / sum(1.0 / (period * self.iteration_s) for period, _ in self._confirmed)

    @property
    def spacing_s(self) -> float:
        """The regular spacing: the budget's, widened so that the checkpoints before periodic
        branches and the regular ones together cost the budget."""
        base = self.base_spacing_s
        span = self.branch_span_s()
        if span is None:
            return base
        if span <= base:
            return math.inf  # the branches come more often than checkpoints do: only before them
        return base * span / (span - base)

    def length(self, index: int) -> int | None:
        """The outer loop's length: its ``len``, else what a ``break`` bound in the source implies
        while the loop has not outlived it (None: unknown)."""
        if self.total is not None:
            return self.total
        if self.predicted_total is not None and index < self.predicted_total - 1:
            return self.predicted_total
        return None

    def future_firings(self, index: int) -> int:
        """Iterations after ``index + 1`` at which a learned periodic branch will run (each wants
        the checkpoint before it): up to the loop's end where its length is known; on a loop of
        unknown length, supposing it runs as long again as it has (as many as ran so far)."""
        end = self.length(index)
        if end is None:
            return sum(_firings(0, index + 1, period, phase) for period, phase in self._confirmed)
        return sum(_firings(index + 2, end - 1, period, phase) for period, phase in self._confirmed)

    def disk_period(self, index: int, before_branch: bool = False) -> float:
        """The fewest iterations between checkpoints that the disk budget allows after ``index``;
        ``before_branch``: for a checkpoint just before a periodic branch, which draws on the whole
        budget. A regular one leaves room for the checkpoints before the learned branches still
        to come, and while none is learned, on a loop of unknown length, a reserve
        (``REGULAR_SHARE``) for those before branches learned later."""
        self.disk.observe_state(self.state_bytes)
        total = self.length(index)
        if before_branch:
            return self.disk.period(index, total, self.in_flight())
        share = 1.0 if total is not None else self.regular_share(index)
        # Held back with a margin: sizes move by a few per cent (a standalone after deltas), and
        # a regular checkpoint at 275 that fit by 0.3 MB left the one before the evaluation at
        # 300 short by 0.1 MB (nanoGPT at 6x, traced).
        reserve = self.future_firings(index) * self.disk.bytes_per_checkpoint() * RESERVE_MARGIN if self._confirmed else 0.0
        return self.disk.period(index, total, self.in_flight(), share, reserve)

    def in_flight(self) -> int:
        """Checkpoints taken and not yet reported written."""
        return max(0, self.taken - self.writes)

    def branch_room(self, index: int, last_checkpointed: int) -> bool:
        """Whether the disk budget allows the checkpoint before the branch at ``index + 1``: all
        of them when it holds every one still to come, else every s-th (s the fewest firings
        apart that keep the budget), like regular checkpoints but counted in the branch's runs."""
        self.disk.observe_state(self.state_bytes)
        budget = self.disk.budget_bytes
        if budget is None:
            return True
        each = self.disk.bytes_per_checkpoint()
        left = budget - self.disk.used - (self.in_flight() + 1) * each  # room kept for the last one
        if left < each:
            return False
        if self.disk.per_checkpoint is None:
            # None written yet: their size is only guessed (the raw state, 15-20 % above what the
            # coding writes), and judged by the guess nanoGPT's 6x looked one short of every
            # evaluation, skipped the one at 50 (or, with the writer's first report 60 iterations
            # late, at 100) and later spent the room on a regular one. Take them where they fit
            # (the guess still bounds the bytes); from the first written size on the stride below
            # is exact.
            return True
        needed = (self.future_firings(index) + 1) * each
        if left >= needed:
            return True
        stride = math.ceil(needed / left - 1e-9)
        passed = sum(_firings(last_checkpointed + 2, index + 1, period, phase) for period, phase in self._confirmed)
        return passed >= stride

    def regular_share(self, index: int) -> float:
        """The share of the disk budget regular checkpoints may spend on a loop of unknown length
        while no periodic branch is learned (once one is, its checkpoints' bytes are held back)."""
        if self._confirmed:
            return 1.0
        return 1.0 - (1.0 - REGULAR_SHARE) * min(1.0, RESERVE_ITERATIONS / (index + 1))

    def disk_binds(self, index: int | None = None) -> bool:
        """Whether the disk budget, not the time budget, sets the spacing now."""
        if self.fixed_period or self.disk.budget_bytes is None:
            return False
        return self.disk_period(self.iterations if index is None else index) > self._time_period()

    @property
    def period(self) -> int:
        """About how many outer iterations apart regular checkpoints fall now."""
        if self.fixed_period:
            return self.fixed_period
        disk = self.disk_period(self.iterations)
        time_period = self._time_period()
        if disk > time_period:
            return disk if not math.isinf(disk) else max(self.total or 0, self.iterations, 1)
        return time_period

    def _time_period(self) -> int:
        if self.fixed_period:
            return self.fixed_period
        if not self.iteration_s:
            return 1
        spacing = self.spacing_s
        if math.isinf(spacing):
            return self.branch_period or 1
        return max(1, math.ceil(spacing / self.iteration_s - 1e-9))

    def due(self, index: int, last_checkpointed: int | None = None, is_last: bool = False,
            elapsed_s: float | None = None) -> bool:
        """Whether outer iteration ``index`` should be checkpointed now; ``elapsed_s``: the time
        the current iteration has taken so far (default: a typical iteration's)."""
        if is_last:
            return True
        if self.fixed_period:
            return (index + 1) % self.fixed_period == 0
        if self.waits_for_source():
            return False
        by_time = self._due_by_time(index, elapsed_s)
        # A multiple of the state is known once the state is measured: before this, a budget of
        # "20x" read as none until the run's end, and bound nothing.
        self.disk.observe_state(self.state_bytes)
        if self.disk.budget_bytes is None:
            return by_time
        if last_checkpointed is None:
            if not self.source:
                return by_time
            # Branches read from the source before the first checkpoint (waits_for_source): the
            # loop's start stands for one, and the disk budget spaces the first as any other.
            last_checkpointed = -1
        before_branch = index + 1 in self.anticipated()
        learned = before_branch and any(index + 1 == last + key[0] for key, last in self.branches.items()
                                        if key in self._confirmed)
        if learned:
            # Before a learned branch, where questions land: whenever the disk allows (the
            # regular ones leave room for these).
            if not self.branch_room(index, last_checkpointed):
                if by_time:
                    self.disk_refused += 1
                return False
            return by_time or self.disk_binds(index)
        if index - last_checkpointed < self.disk_period(index, before_branch):
            if by_time:
                self.disk_refused += 1  # the disk budget: too soon after the last one
            return False
        binds = self.disk_binds(index)
        # Before a supposed one too (nanoGPT's evaluation every 50 is supposed at 50 and learned at
        # 100: waiting for it gives up the checkpoint before 100); but a supposed period does not
        # stop regular ones (a slow moment supposes some: a recording gated on them kept
        # checkpoints at 69, 74, 80, 86, 93 and none before an evaluation).
        return by_time or (before_branch and binds)

    def waits_for_source(self) -> bool:
        """Whether to take no checkpoint until the source's periodic branches are read.

        Under a disk budget that may run out, a checkpoint spent before the period is known is
        one fewer before an evaluation, where questions land: nanoGPT's 6x kept 0, 99, 149,
        199, 249, 299 and the end, and the evaluation at 50 re-executed 50 iterations in every
        replay of it. Waiting costs the first two iterations' checkpoints, which a replay
        re-executes from the start instead. Not where the budget holds a checkpoint for every
        iteration of a loop of known length: there it costs something and saves nothing."""
        if not self.source_pending:
            return False
        self.disk.observe_state(self.state_bytes)
        budget = self.disk.budget_bytes
        if budget is None:
            return False
        return self.total is None or self.total * self.disk.bytes_per_checkpoint() > budget

    def _due_by_time(self, index: int, elapsed_s: float | None) -> bool:
        """Whether the time budget (and the periodic branches) call for a checkpoint now."""
        current = elapsed_s if elapsed_s is not None else (self.iteration_s or 0.0)
        since = self.since_s + current
        if self.writes < 2 and self.taken == 1 and self.train_s is not None and self.iteration_s \
                and self.train_s <= self.budget * self.iteration_s:
            # The writer's first job also pays one-time work (its buffers, the first files of the
            # object store, a training loop still warming up beside it): judged alone it made the
            # second checkpoint of 2 s epochs look over budget. Take the second one when the
            # training thread's own cost fits, and decide from two measures.
            return True
        anticipated = self.anticipated()
        if index + 1 in anticipated:
            # Before a periodic branch: always when regular checkpoints come more often than the
            # branches; else once the budget's spacing less their span has passed.
            span = self.branch_span_s() or 0.0
            base = self.base_spacing_s
            if span > base or since >= base - span - 1e-12:
                return True
        spacing = self.spacing_s
        if anticipated and self.iteration_s:
            ahead = (min((n for n in anticipated if n > index + 1), default=math.inf) - 1 - index) * self.iteration_s
            if 0 < ahead <= spacing / 2:
                return False  # the one before a branch comes soon: it stands for this one
        return since >= spacing - 1e-12

    def explain(self) -> str:
        """Why checkpoints are as far apart as they are, in one line (for ``flor show``)."""
        if self.fixed_period:
            return f"every {self.fixed_period} iteration(s): FLOR_CKPT_PERIOD"
        if not self.iteration_s:
            return "no outer iteration finished"
        cost = self.cost()
        train = self.train_s or 0.0
        writer_ms = 1000 * self.writer_cost()
        cpu_ms = 1000 * (self.writer_cpu_s or 0.0)
        if self.measured():
            writer = f"{writer_ms:.1f} ms the writer slowed it (measured over {len(self._excesses)} windows)"
        elif self._share is not None:
            writer = (f"{writer_ms:.1f} ms of the writer's {cpu_ms:.1f} ms CPU: it got {100 * self._share:.0f} % of a "
                      f"core while computing, the rest it took from training, shared by {self.cores} cores")
        else:
            writer = f"{writer_ms:.1f} ms of writer CPU shared by {self.cores} cores"
        period = self.period
        every = "every iteration" if period == 1 else f"about every {period} iterations"
        spacing = self.spacing_s
        periods = " and ".join(str(p) for p in sorted({p for p, _ in self._confirmed}))
        if math.isinf(spacing):
            every = f"before each iteration of a branch that runs every {periods} iterations only"
        elif self._confirmed:
            every += f", and before each iteration of a branch that runs every {periods}"
        if self.source:
            every += " (read from the source: " + ", ".join(f"`if {t}`" for t in sorted(set(self.source.values()))) + ")"
        one_per = self.base_spacing_s if math.isinf(spacing) else spacing
        text = (f"{every} (one per {one_per:.2f} s of training): a checkpoint costs training "
                f"{1000 * cost:.1f} ms ({1000 * train:.1f} ms in the training thread, {writer}); "
                f"{100 * self.budget:g} % of {self.iteration_s:.2f} s iterations allows {1000 * self.budget * self.iteration_s:.1f} ms")
        if self.skipped:
            text += f"; {self.skipped} skipped while the writer was behind"
        if self.disk.budget_bytes is not None:
            binds = self.disk_refused > 0 if self.total is not None and self.iterations >= self.total else self.disk_binds()
            which = "the disk budget set the period" if binds else "the time budget set the period"
            if self.disk_refused:
                which += f", refusing {self.disk_refused} checkpoint(s) the time budget allowed"
            text += f"; {which} ({self.disk.explain()})"
            if self.total is None and self.predicted_total is not None:
                text += f"; the loop's length {self.predicted_total} read from its `break`"
            share = self.regular_share(self.iterations)
            if self.total is None and share < 1.0:
                text += (f"; on this loop of unknown length regular checkpoints spend at most {100 * share:.0f} % "
                         "of it, the rest is kept for those before periodic branches")
            elif self._confirmed:
                text += "; regular checkpoints leave the bytes kept for those before periodic branches still to come"
        return text

    def summary(self) -> dict:
        """What :meth:`explain` says, as numbers (kept with the run)."""
        return {
            "explain": self.explain(), "budget": self.budget, "fixed_period": self.fixed_period,
            "iteration_s": self.iteration_s, "cost_s": self.cost() if self.iteration_s else None,
            "train_s": self.train_s, "slowdown_s": self.slowdown_s, "writer_cpu_s": self.writer_cpu_s,
            "windows": self.windows, "writer_share": self._share,
            "measured": self.measured(), "branch_period": self.branch_period,
            "branch_periods": sorted({p for p, _ in self._confirmed}),
            "branches": sorted([p, phase] for p, phase in self._confirmed),  # the spine gc keeps
            "branch_source": sorted(set(self.source.values())),  # the tests they were read from
            "predicted_total": self.predicted_total,
            "taken": self.taken, "skipped": self.skipped,
            "disk_refused": self.disk_refused, **self.disk.summary(),
        }

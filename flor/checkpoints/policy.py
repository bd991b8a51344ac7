"""Policy: when to checkpoint, so that checkpoints cost training at most a budget of its time.

What a checkpoint costs *training* is what the policy charges against the budget
(``FLOR_CKPT_BUDGET``, default 0.01 = 1 %):

- the time the training thread spends on it (finding the loop's variables, the snapshot copy into
  host memory), measured each time;
- the slowdown the background writer causes: iterations during which the writer was busy are
  compared with iterations during which it was not, and the excess is charged to the checkpoints
  written meanwhile. Until that has been measured, the writer's CPU time shared among the cores
  stands in for it.

The writer's own wall time is not charged: at low priority beside a training loop that uses every
core it may take long, and that costs training nothing. A writer that falls behind (two
checkpoints waiting) is throttled instead: the next checkpoint is skipped.

Checkpoints are spaced by training time, not by a count of iterations: one is due once the
training time since the last one reaches cost / budget, so a run of 0.1 s iterations gets one
every few iterations, a run of 2 s epochs one every epoch, and long evaluation iterations count
for what they take. ``FLOR_CKPT_PERIOD=N`` fixes the period at N iterations instead. The last
iteration is always checkpointed. :meth:`Policy.explain` says why the spacing is what it is
(``flor show`` prints it).

>>> policy = Policy(budget=0.01)
>>> policy.observe_iteration(1.5, 0.0); policy.observe_checkpoint(0.002, 0.01)
>>> policy.due(1)
True
"""

from __future__ import annotations

import math
import os

from .. import settings

COPY_BYTES_PER_S = 1.5e9  # a first guess for the snapshot cost, before one is measured


def _ewma(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else (1 - weight) * old + weight * new


class Policy:
    """Adaptive checkpoint spacing from measured costs."""

    def __init__(self, budget: float | None = None, fixed_period: int | None = None, cores: int | None = None) -> None:
        self.budget = settings.ckpt_budget() if budget is None else budget
        self.fixed_period = settings.ckpt_period() if fixed_period is None else fixed_period
        self.cores = max(1, cores or os.cpu_count() or 1)
        self.iteration_s: float | None = None  # every iteration
        self.clean_s: float | None = None  # iterations the writer was idle through (not the first)
        self.train_s: float | None = None  # the training thread's time per checkpoint
        self.writer_cpu_s: float | None = None  # the writer's CPU time per checkpoint
        self.slowdown_s: float | None = None  # measured: training time the writer cost per checkpoint
        self.copy_rate = COPY_BYTES_PER_S
        self.state_bytes = 0  # size of the registered state, for a first estimate
        self.since_s = 0.0  # training time since the last checkpoint
        self.iterations = 0
        self.taken = 0
        self.skipped = 0  # checkpoints skipped because the writer was behind
        self._excess = 0.0  # slowdown of the iterations since the writer became busy
        self._excess_jobs = 0
        self._checkpoint_in_iteration = 0.0

    # -- measurements ------------------------------------------------------------------------

    def observe_iteration(self, seconds: float, writer_overlap_s: float) -> None:
        """One outer iteration took ``seconds``; the writer was busy ``writer_overlap_s`` of them."""
        own = self._checkpoint_in_iteration  # the checkpoint's own time is charged as train_s
        self._checkpoint_in_iteration = 0.0
        self.iteration_s = _ewma(self.iteration_s, seconds)
        self.since_s += seconds
        first = self.iterations == 0
        self.iterations += 1
        if first:
            return  # warm-up (imports, caches): no baseline
        if writer_overlap_s <= 0:
            if self._excess_jobs and self.clean_s is not None:
                self.slowdown_s = _ewma(self.slowdown_s, self._excess / self._excess_jobs, 0.5)
            self._excess, self._excess_jobs = 0.0, 0
            self.clean_s = _ewma(self.clean_s, seconds - own)
        elif self.clean_s is not None:
            self._excess += max(0.0, seconds - own - self.clean_s)

    def observe_checkpoint(self, train_s: float, writer_cpu_s: float | None = None, nbytes: int = 0,
                           elapsed_s: float = 0.0) -> None:
        """One checkpoint took ``train_s`` of the training thread (reported when taken,
        ``elapsed_s`` into its iteration) and ``writer_cpu_s`` of the writer's CPU (reported when
        written)."""
        if writer_cpu_s is not None:
            self.writer_cpu_s = _ewma(self.writer_cpu_s, writer_cpu_s, 0.5)
            self._excess_jobs += 1
            return
        self.train_s = _ewma(self.train_s, train_s, 0.5)
        self._checkpoint_in_iteration += train_s
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
        if self.slowdown_s is not None:
            return train + self.slowdown_s
        return train + (self.writer_cpu_s or 0.0) / self.cores

    @property
    def spacing_s(self) -> float:
        """Training seconds between checkpoints that keep their cost within the budget."""
        return self.cost() / self.budget

    @property
    def period(self) -> int:
        """About how many outer iterations apart checkpoints fall now."""
        if self.fixed_period:
            return self.fixed_period
        if not self.iteration_s:
            return 1
        return max(1, math.ceil(self.spacing_s / self.iteration_s - 1e-9))

    def due(self, index: int, last_checkpointed: int | None = None, is_last: bool = False,
            elapsed_s: float | None = None) -> bool:
        """Whether outer iteration ``index`` should be checkpointed now; ``elapsed_s``: the time
        the current iteration has taken so far (default: a typical iteration's)."""
        if is_last:
            return True
        if self.fixed_period:
            return (index + 1) % self.fixed_period == 0
        current = elapsed_s if elapsed_s is not None else (self.iteration_s or 0.0)
        return self.since_s + current >= self.spacing_s - 1e-12

    def explain(self) -> str:
        """Why checkpoints are as far apart as they are, in one line (for ``flor show``)."""
        if self.fixed_period:
            return f"every {self.fixed_period} iteration(s): FLOR_CKPT_PERIOD"
        if not self.iteration_s:
            return "no outer iteration finished"
        cost = self.cost()
        train = self.train_s or 0.0
        writer = (f"{1000 * self.slowdown_s:.1f} ms the writer slowed it (measured)" if self.slowdown_s is not None
                  else f"{1000 * (self.writer_cpu_s or 0.0) / self.cores:.1f} ms of writer CPU shared by {self.cores} cores")
        period = self.period
        every = "every iteration" if period == 1 else f"about every {period} iterations"
        text = (f"{every} (one per {self.spacing_s:.2f} s of training): a checkpoint costs training "
                f"{1000 * cost:.1f} ms ({1000 * train:.1f} ms in the training thread, {writer}); "
                f"{100 * self.budget:g} % of {self.iteration_s:.2f} s iterations allows {1000 * self.budget * self.iteration_s:.1f} ms")
        if self.skipped:
            text += f"; {self.skipped} skipped while the writer was behind"
        return text

    def summary(self) -> dict:
        """What :meth:`explain` says, as numbers (kept with the run)."""
        return {
            "explain": self.explain(), "budget": self.budget, "fixed_period": self.fixed_period,
            "iteration_s": self.iteration_s, "cost_s": self.cost() if self.iteration_s else None,
            "train_s": self.train_s, "slowdown_s": self.slowdown_s, "writer_cpu_s": self.writer_cpu_s,
            "taken": self.taken, "skipped": self.skipped,
        }

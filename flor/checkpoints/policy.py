"""Policy: when to checkpoint, so that checkpoints cost at most a budget of training time.

Each checkpoint costs the training process its snapshot (copying state into host memory) and
shares the machine with the background writer. The policy measures both and the duration of an
outer iteration, and checkpoints every ``period`` iterations, the smallest period whose cost
stays within the budget (``FLOR_CKPT_BUDGET``, default 0.01 = 1 %). ``FLOR_CKPT_PERIOD=N`` fixes
the period instead. The last iteration is always checkpointed.

>>> policy = Policy(budget=0.01)
>>> policy.observe_iteration(1.5); policy.observe_checkpoint(0.002, 0.01)
>>> policy.period
1
"""

from __future__ import annotations

import math
import os

from .. import settings

COPY_BYTES_PER_S = 1.5e9  # a first guess for the snapshot cost, before one is measured


class Policy:
    """Adaptive checkpoint period from measured costs."""

    def __init__(self, budget: float | None = None, fixed_period: int | None = None, cores: int | None = None) -> None:
        self.budget = settings.ckpt_budget() if budget is None else budget
        self.fixed_period = settings.ckpt_period() if fixed_period is None else fixed_period
        self.cores = max(1, cores or os.cpu_count() or 1)
        self.iteration_s: float | None = None
        self.snapshot_s: float | None = None
        self.write_s: float | None = None
        self.copy_rate = COPY_BYTES_PER_S
        self.state_bytes = 0  # size of the registered state, for a first estimate

    def observe_iteration(self, seconds: float) -> None:
        """Duration of one outer iteration (smoothed)."""
        self.iteration_s = seconds if self.iteration_s is None else 0.7 * self.iteration_s + 0.3 * seconds

    def observe_checkpoint(self, snapshot_s: float, write_s: float | None, nbytes: int = 0) -> None:
        """Measured costs of one checkpoint (write_s None until the writer reports)."""
        self.snapshot_s = snapshot_s if self.snapshot_s is None else 0.5 * self.snapshot_s + 0.5 * snapshot_s
        if nbytes and snapshot_s > 0:
            self.copy_rate = nbytes / snapshot_s
        if write_s is not None:
            self.write_s = write_s if self.write_s is None else 0.5 * self.write_s + 0.5 * write_s

    def cost(self) -> float:
        """Estimated training seconds lost per checkpoint."""
        snapshot = self.snapshot_s if self.snapshot_s is not None else self.state_bytes / self.copy_rate
        # The writer's CPU time (hashing, copying into the page cache) is shared among the cores.
        background = (self.write_s or 0.0) / self.cores
        return snapshot + background

    @property
    def period(self) -> int:
        """Checkpoint every this many outer iterations."""
        if self.fixed_period:
            return self.fixed_period
        if not self.iteration_s:
            return 1
        return max(1, math.ceil(self.cost() / (self.budget * self.iteration_s) - 1e-9))

    def due(self, index: int, last_checkpointed: int | None, is_last: bool = False) -> bool:
        """Whether outer iteration ``index`` should be checkpointed."""
        if is_last:
            return True
        if self.fixed_period:
            return (index + 1) % self.fixed_period == 0
        if last_checkpointed is None and self.snapshot_s is None and self.iteration_s:
            return self.cost() <= self.budget * self.iteration_s * max(1, index + 1)
        since = index - (last_checkpointed if last_checkpointed is not None else -1)
        return since >= self.period

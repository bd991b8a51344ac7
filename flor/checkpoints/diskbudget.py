"""The disk budget of one run's checkpoints (``FLOR_CKPT_DISK``), beside the time budget.

The time budget (policy.py) says how often a checkpoint is affordable in training time; this one
says how many bytes of checkpoints the run may leave. From the bytes each checkpoint actually
wrote (after dedup, compression and deltas; the size of the state until one is written; never
less than the largest state seen at the coding's measured ratio, since a first checkpoint without
Adam's moments is half the size of the next ones and a loaded writer reports late) and what the
run has used, it gives the fewest iterations between two checkpoints that keep the run within
its budget, keeping room for the last iteration's checkpoint (always taken):

    period = ceil(iterations left * bytes per checkpoint / bytes left)

A loop of known length knows the iterations left. One of unknown length (``itertools.count``
with a ``break``, nanoGPT's) supposes it runs as long again as it has so far: the spacing then
widens as the run goes on, and the bytes used approach the budget without passing it (each step
spends a share of what is left). The policy takes whichever of the two budgets spaces checkpoints
further apart and says which (``flor show``). A budget given as a multiple (``20x``) is of the
largest raw checkpoint seen so far.

On such a loop a budget spent this way from the start is gone early: nanoGPT's 6x once kept
checkpoints 0, 1, 5, 12, 22, before its evaluation period (50) was known, and none before the
evaluations where questions land. So the policy gives each checkpoint a ``share`` of the budget to
draw on: one just before a periodic branch the whole, a regular one on a loop of unknown length
half (policy.py's ``REGULAR_SHARE``; released as the loop outlives 100 iterations while no branch
is learned), which keeps the rest for the checkpoints before the branches once their period is
supposed. Measured (benchmarks/disk_budget.py, docs/checkpoints.md): 12x then matched 20x's eval
replay where the period was learned, but not in a noisy recording, so the default stays 20x. Where
the period is read from the source (periodic.py) the reserve is exact instead: a regular checkpoint
leaves the bytes of those before the branches still to come (``reserve``; the policy counts them
up to the loop's length, or supposing it runs as long again).

>>> spacing = DiskSpacing(budget_bytes=100)
>>> spacing.observe_written(10); spacing.period(index=0, total=100)
13
"""

from __future__ import annotations

import math


class DiskSpacing:
    """Checkpoint spacing that keeps a run's checkpoint bytes within ``budget_bytes``."""

    def __init__(self, budget_bytes: int | None = None, text: str = "", setting=None) -> None:
        self._budget_bytes = budget_bytes  # None: unbounded (or from ``setting`` once the state is known)
        self.setting = setting  # a settings.DiskBudget: bytes, or a multiple of the state's size
        self.text = text or (setting.text if setting is not None else "")  # how the user said it
        self.used = 0  # bytes the writer reported written
        self.written = 0  # checkpoints the writer reported
        self.per_checkpoint: float | None = None  # bytes a checkpoint writes (the largest recent)
        self.ratio: float | None = None  # written over raw bytes of recent checkpoints (the coding's)
        self.estimate = 0  # the most bytes a checkpoint copied (raw), and the size a multiple is of

    @property
    def budget_bytes(self) -> int | None:
        """The budget in bytes (None: unbounded, or a multiple of a state not yet measured)."""
        if self._budget_bytes is not None or self.setting is None:
            return self._budget_bytes
        if self.setting.bytes is None and not self.estimate:
            return None
        # A multiple follows the largest state seen: at the first checkpoint an optimizer may
        # not have made its moments yet (Adam's come with its first step), and a budget fixed
        # then would be a third of the one meant.
        return self.setting.of(self.estimate)

    def observe_state(self, nbytes: int) -> None:
        """A checkpoint of ``nbytes`` raw bytes is (or was) taken: what a multiple is of."""
        self.estimate = max(self.estimate, int(nbytes or 0))

    def observe_written(self, nbytes: int, raw_bytes: int | None = None) -> None:
        """A checkpoint was written: ``nbytes`` reached the disk (of ``raw_bytes`` copied)."""
        self.used += nbytes
        self.written += 1
        if raw_bytes:
            self.ratio = max(self.ratio or 0.0, nbytes / raw_bytes) if self.written <= 2 else \
                0.8 * (self.ratio or 0.0) + 0.2 * nbytes / raw_bytes
        # The larger of the last and a slow average: a standalone checkpoint after deltas is
        # larger than the deltas, and under-guessing it is what would pass the budget.
        average = nbytes if self.per_checkpoint is None else 0.8 * self.per_checkpoint + 0.2 * nbytes
        self.per_checkpoint = max(nbytes, average)

    def bytes_per_checkpoint(self) -> float:
        if self.per_checkpoint is None:
            return float(max(self.estimate, 1))
        # Written bytes lag the state: the first checkpoint of an Adam run has no moments yet
        # (half the bytes of the next), and under load the writer reports late. What the
        # largest state seen writes at the coding's ratio keeps those from passing the budget.
        return max(self.per_checkpoint, (self.ratio or 0.0) * self.estimate)

    def period(self, index: int, total: int | None, in_flight: int = 0, share: float = 1.0,
               reserve: float = 0.0) -> float:
        """The fewest iterations from a checkpoint at ``index`` to the next (inf: none but the
        last); 1 when there is no budget. ``in_flight``: checkpoints taken and not yet written;
        ``share``: the part of the budget this checkpoint may draw on; ``reserve``: bytes held
        back besides (the checkpoints before periodic branches still to come)."""
        if self.budget_bytes is None:
            return 1
        each = self.bytes_per_checkpoint()
        left = share * self.budget_bytes - reserve - self.used - in_flight * each - each  # room kept for the last one
        if left < each:
            return math.inf
        remaining = (total - index - 1) if total is not None else index + 1
        if remaining <= 0:
            return 1  # the loop is over: nothing left to space
        return max(1, math.ceil(remaining * each / left - 1e-9))

    def explain(self) -> str:
        """What the disk budget allows, in a clause."""
        if self.budget_bytes is None:
            return "no disk budget (FLOR_CKPT_DISK unbounded)"
        return (f"FLOR_CKPT_DISK {self.text or self.budget_bytes} = {_mb(self.budget_bytes)}, {_mb(self.used)} used by "
                f"{self.written} checkpoint(s) of about {_mb(self.bytes_per_checkpoint())}")

    def summary(self) -> dict:
        return {"disk_budget_bytes": self.budget_bytes, "disk_used_bytes": self.used,
                "disk_per_checkpoint_bytes": self.per_checkpoint}


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"

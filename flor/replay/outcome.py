"""What executing one run's replay found (:class:`RunOutcome`), written through a few methods.

Planning decides (``report.RunPlan``, frozen); execution finds. The outcome starts empty, and
``execution`` (and ``job``, for a job's ranks) fills it in only through the methods below: the
values a batch stored, what each worker's result said, a failure, a time, and the end. Nothing
else writes it (``tests/test_architecture.py`` checks), so how a run ended can be followed from
these methods alone; ``report`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunOutcome:
    """What the workers of one run sent back, merged over its segments and attempts."""

    status: str = ""  # done, drifted (values left unstored), failed; "" until execution ends
    stored: int = 0  # values written to the store
    matched: int = 0  # recorded values logged again and equal
    drifted: int = 0  # recorded values logged again and different
    drift: dict = field(default_factory=dict)  # name -> {count, max_difference}
    errors: list[str] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)  # iterations left unstored: still drifting
    rejected_run_level: bool = False
    retried: list[str] = field(default_factory=list)  # how drifted iterations were re-executed
    writes: dict = field(default_factory=dict)  # path -> bytes (None: deleted) the old code wrote
    timings: dict = field(default_factory=dict)  # where the workers' time went (summed over segments)
    first_drift: dict | None = None  # the earliest recorded value that differed (by outer iteration)
    observer: dict = field(default_factory=dict)  # what the new statements did, merged over workers
    verified: dict = field(default_factory=dict)  # how stored iterations were verified -> count
    end_check: str = ""  # how values after the loop were verified
    slice_outcome: dict = field(default_factory=dict)  # merged over segments: sliced, verified, fell_back

    @property
    def reason(self) -> str:
        """Why the run failed (its distinct errors), empty otherwise."""
        return "; ".join(dict.fromkeys(self.errors))

    # -- the writers (execution.py, job.py) ------------------------------------------------

    def add_stored(self, count: int) -> None:
        """A batch of ``count`` values was written to the store."""
        self.stored += count

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + float(seconds)

    def fail(self, error: str) -> None:
        self.errors.append(error)

    def retract_errors(self, since: int) -> None:
        """Forget the errors after the first ``since`` (a job's segment is tried again, whole)."""
        del self.errors[since:]

    def merge(self, result: dict, ok: bool, error: str | None) -> None:
        """Fold one task's result (``worker_run.ReplayRun``'s last message) into the outcome."""
        self.matched += result.get("matched", 0)
        self.drifted += result.get("drifted", 0)
        for name, entry in (result.get("drift") or {}).items():
            merged = self.drift.setdefault(name, {"count": 0, "max_difference": None})
            merged["count"] += entry["count"]
            if entry.get("max_difference") is not None:
                merged["max_difference"] = max(merged["max_difference"] or 0.0, entry["max_difference"])
        self._merge_observations(result)
        for how, count in (result.get("verified") or {}).items():
            self.verified[how] = self.verified.get(how, 0) + int(count)
        if result.get("end_check"):
            self.end_check = result["end_check"]
        self._merge_slice(result.get("slice") or {})
        for path, size in result.get("writes") or []:
            self.writes[path] = size
        for key, seconds in (result.get("timings") or {}).items():
            self.add_time(key, seconds)
        if not ok:
            self.fail(error or "failed")

    def finish(self, rejected: list[int], run_level: bool, retried: list[str], accept_drift: bool) -> None:
        """Execution ended: what still drifts after the retries, and so the run's status."""
        self.rejected = sorted(rejected)
        self.rejected_run_level = run_level
        self.retried = list(retried)
        drifted = (self.rejected or self.rejected_run_level) and not accept_drift
        self.status = "failed" if self.errors else ("drifted" if drifted else "done")

    # -- merging ---------------------------------------------------------------------------

    def _merge_observations(self, result: dict) -> None:
        """Keep the earliest first drift (by outer iteration; run level last) and the union of
        what the observers of every segment saw."""
        first = result.get("first_drift")
        if first:
            def order(entry):
                return (entry.get("outer") is None, entry.get("outer") or 0)

            if self.first_drift is None or order(first) < order(self.first_drift):
                self.first_drift = first
        seen = result.get("observer") or {}
        if seen:
            merged = self.observer
            merged["calls"] = merged.get("calls", 0) + seen.get("calls", 0)
            for key in ("drew", "modes", "buffers"):
                merged[key] = sorted(set(merged.get(key, [])) | set(seen.get(key, [])))
            merged["error"] = merged.get("error") or seen.get("error", "")

    def _merge_slice(self, seen: dict) -> None:
        if not seen.get("statements"):
            return
        merged = self.slice_outcome
        merged["statements"] = seen["statements"]
        for key in ("sliced", "verified", "partial", "unrestored"):
            merged[key] = sorted(set(merged.get(key, [])) | set(seen.get(key) or []))
        merged["uncompared"] = merged.get("uncompared", 0) + int(seen.get("uncompared") or 0)
        if seen.get("loop_ended") is not None:
            merged["loop_ended"] = seen["loop_ended"]
        fell = seen.get("fell_back")
        if fell and (not merged.get("fell_back") or fell["iteration"] < merged["fell_back"]["iteration"]):
            merged["fell_back"] = fell
        stopped = seen.get("stopped")
        if stopped and (not merged.get("stopped") or stopped["iteration"] < merged["stopped"]["iteration"]):
            merged["stopped"] = stopped

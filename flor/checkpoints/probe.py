"""Probes of user objects while recording: a failure never reaches the training script.

Recording asks the script's objects for their state (``state_dict()``, pickling, sizes, the
prints that tell what a loop changed, ``named_parameters()``). Those are the user's (or a
library's) code, and any of them may raise: Accelerate's prepared ``DataLoaderShard`` has a
``state_dict`` that raises ``AttributeError`` unless the loader is stateful. Training must go on:
a probe that fails leaves that object out of the checkpoint, says so once (not once per
iteration), and notes it in the run's environment (``unkept``), from which replay plans around it:

* a registered object (or the gradients or generators flor keeps for it) missing from a
  checkpoint makes that checkpoint, and every later one, unusable for restoring;
* an unregistered object the loop changed becomes a variable the checkpoint does not keep, which
  blocks memoization only where the rest of the body reads it (``replay.analysis``).

>>> probes = Probes(run)                                               # doctest: +SKIP
>>> ok, state = probes.call("lr_scheduler", OBJECT, "state_dict()", object_state, scheduler, index=3)
"""

from __future__ import annotations

from ..messages import warn

OBJECT = "object"  # registered with flor.checkpointing: its checkpoints cannot be restored without it
VARIABLE = "variable"  # a plain variable or unregistered object: replay treats it as not kept

UNKEPT_KEY = "unkept"  # run.environment[...]: name -> {"kind", "reason", "from"}


class Probes:
    """The probes of one recording run, and what they could not keep."""

    def __init__(self, run) -> None:
        self.run = run
        self.unkept: dict[str, dict] = {}

    def call(self, name: str, kind: str, what: str, fn, *args, index: int | None = None, default=None):
        """``(True, fn(*args))``, or ``(False, default)`` once the failure is noted."""
        try:
            return True, fn(*args)
        except Exception as exc:  # the user's code: anything may come out of it
            self.failed(name, kind, what, exc, index)
            return False, default

    def failed(self, name: str, kind: str, what: str, exc: BaseException, index: int | None = None) -> None:
        """Note that ``name`` could not be kept (``what`` raised ``exc``), warning once per name."""
        known = self.unkept.get(name)
        if known is not None:
            if kind == OBJECT and known["kind"] != OBJECT:
                known["kind"] = OBJECT  # the stricter reading wins
                self._note()
            return
        reason = f"{what} raised {type(exc).__name__}: {exc}".strip()
        if len(reason) > 200:
            reason = reason[:197] + "..."
        self.unkept[name] = {"kind": kind, "reason": reason, "from": index}
        consequence = ("replay restores no checkpoint from here on and re-executes instead" if kind == OBJECT
                       else f"replay re-executes where `{name}` is read after a skipped loop")
        warn(f"checkpoints leave out `{name}` ({reason}); training goes on; {consequence}")
        self._note()

    def _note(self) -> None:
        note = getattr(self.run, "note_environment", None)
        if callable(note):
            note(UNKEPT_KEY, {name: dict(entry) for name, entry in self.unkept.items()})

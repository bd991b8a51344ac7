"""Where a statement stands in a run whose loops a framework drove (``flor.integrations``).

The script of such a run has no ``flor.loop``: the Trainer calls the user's hooks. A statement's
place follows from the hook it is in, by the hook's name (a method of a LightningModule, a
Lightning or Hugging Face callback, a Trainer subclass, or a function handed to the Trainer such
as ``compute_metrics=``):

* ``nested`` — hooks that run at every training batch (``training_step``, ``on_train_batch_end``,
  ``on_step_end``, ``compute_loss``...): re-executed;
* ``body`` — hooks that run once per epoch after its training batches (``validation_step``,
  ``on_validation_epoch_end``, ``on_train_epoch_end``, ``on_epoch_end``...): memoized, the
  training batches skipped and their end state restored;
* ``before`` / ``after`` — set-up (``__init__``, ``configure_optimizers``, ``on_train_start``)
  and what follows ``fit`` (``on_train_end``, ``test_step``, code after ``trainer.fit(...)``).

A statement in a helper stands where the helper is called (or handed over by keyword, as
``compute_metrics=compute_metrics``); a helper never seen called is ``nested`` (re-executed,
which is always correct). Hugging Face's evaluation hooks run per epoch only when the run's
recorded ``eval_strategy`` is ``epoch``, and Lightning's validation hooks only when its
``val_check_interval`` was 1.0 (after each epoch's batches); otherwise they are ``nested``.

>>> FrameworkLayout.of(source, "lightning", {}).places(42)           # doctest: +SKIP
{'body'}
"""

from __future__ import annotations

import ast

from .analysis import AFTER, BEFORE, BODY, NESTED
from .liveness import Live

_COMMON_AFTER = {"on_train_end", "on_fit_end", "teardown", "test_step", "on_test_epoch_end", "on_test_start",
                 "on_test_end", "on_test_batch_end", "on_test_epoch_start", "predict_step", "on_predict_end"}
LIGHTNING = {
    NESTED: {"training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
             "on_before_optimizer_step", "on_before_zero_grad", "optimizer_step", "optimizer_zero_grad", "backward",
             "configure_gradient_clipping", "transfer_batch_to_device", "on_before_batch_transfer",
             "on_after_batch_transfer", "lr_scheduler_step", "training_step_end", "manual_backward"},
    # validation also runs in the sanity check before the first epoch
    "validation": {"validation_step", "on_validation_start", "on_validation_end", "on_validation_epoch_start",
                   "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
                   "on_validation_model_eval", "on_validation_model_train", "on_validation_model_zero_grad",
                   "validation_step_end", "on_sanity_check_start", "on_sanity_check_end"},
    BODY: {"on_train_epoch_start", "on_train_epoch_end", "on_save_checkpoint"},
    BEFORE: {"__init__", "setup", "configure_optimizers", "configure_model", "configure_callbacks", "prepare_data",
             "on_fit_start", "on_train_start", "train_dataloader", "val_dataloader", "on_load_checkpoint"},
    AFTER: _COMMON_AFTER,
}
TRANSFORMERS = {
    NESTED: {"on_step_begin", "on_step_end", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_log",
             "compute_loss", "training_step", "create_optimizer_and_scheduler", "get_batch_samples"},
    # evaluation: once per epoch only with eval_strategy="epoch"
    "evaluation": {"compute_metrics", "preprocess_logits_for_metrics", "on_evaluate", "on_prediction_step",
                   "evaluate", "prediction_step", "evaluation_loop", "on_save"},
    BODY: {"on_epoch_begin", "on_epoch_end"},
    BEFORE: {"__init__", "on_init_end", "on_train_begin", "model_init", "create_optimizer", "create_scheduler"},
    AFTER: _COMMON_AFTER | {"predict"},
}
_FIT_CALLS = {"fit", "train"}  # trainer.fit(...) / trainer.train(...)


class FrameworkLayout:
    """The places of statements in one script version of a framework-driven run."""

    def __init__(self, tree: ast.Module, framework: str, recorded_args: dict) -> None:
        self.tree = tree
        self.framework = framework
        table = LIGHTNING if framework == "lightning" else TRANSFORMERS
        if framework == "lightning":
            # Validation runs after each epoch's batches unless the run asked for it within them.
            interval = recorded_args.get("trainer.val_check_interval", 1.0)
            per_epoch_eval = type(interval) is float and interval == 1.0
        else:
            per_epoch_eval = str(recorded_args.get("eval_strategy", "")).lower() in ("epoch", "intervalstrategy.epoch")
        self.kinds: dict[str, set[str]] = {}
        for place, names in table.items():
            if place == "validation":
                kind = {BEFORE, BODY} if per_epoch_eval else {BEFORE, NESTED}
            elif place == "evaluation":
                kind = {BODY} if per_epoch_eval else {NESTED}
            else:
                kind = {place}
            for name in names:
                self.kinds[name] = kind
        self.functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.fit_lines = sorted(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                                and isinstance(n.func, ast.Attribute) and n.func.attr in _FIT_CALLS)
        self._calls: dict[str, list[int]] = {}
        self._handed: dict[str, set[str]] = {}  # function name -> hook names it is handed to by keyword
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                if name is not None:
                    self._calls.setdefault(name, []).append(node.lineno)
                for keyword in node.keywords:
                    if keyword.arg and isinstance(keyword.value, (ast.Name, ast.Attribute)):
                        target = keyword.value.id if isinstance(keyword.value, ast.Name) else keyword.value.attr
                        self._handed.setdefault(target, set()).add(keyword.arg)
        # analysis.Layout's interface, as the session reads it
        self.outer = tree
        self.nested: list = []
        self.outer_name = "epoch"

    @classmethod
    def of(cls, source: str, framework: str, recorded_args: dict) -> "FrameworkLayout":
        return cls(ast.parse(source), framework, recorded_args)

    def places(self, lineno: int, _seen: frozenset = frozenset()) -> set[str]:
        """Every place line ``lineno`` runs from (see the module docstring)."""
        enclosing = sorted((f for f in self.functions if f.lineno <= lineno <= f.end_lineno), key=lambda f: f.lineno)
        if not enclosing:
            return {self._around_fit(lineno)}
        for function in reversed(enclosing):  # the innermost hook decides
            kind = self.kinds.get(function.name)
            if kind is not None:
                return set(kind)
        function = enclosing[-1]
        if any(f.lineno <= line <= f.end_lineno for f in enclosing for line in self.fit_lines):
            return {self._around_fit(lineno)}  # main(): before or after its trainer.fit(...)
        if function in _seen:
            return {NESTED}
        found: set[str] = set()
        for hook in self._handed.get(function.name, ()):
            kind = self.kinds.get(hook)
            if kind is not None:
                found |= kind
        for line in self._calls.get(function.name, []):
            if not (function.lineno <= line <= function.end_lineno):
                found |= self.places(line, _seen | {function})
        return found or {NESTED}

    def _around_fit(self, lineno: int) -> str:
        return AFTER if self.fit_lines and lineno > self.fit_lines[0] else BEFORE

    def hook_of(self, lineno: int) -> str | None:
        """The name of the function holding ``lineno`` (for --dry-run)."""
        enclosing = [f for f in self.functions if f.lineno <= lineno <= f.end_lineno]
        return max(enclosing, key=lambda f: f.lineno).name if enclosing else None

    def guards(self, lineno: int):
        """No branch analysis through the framework's loop: every epoch may reach it."""
        return None

    @property
    def nested_name(self) -> str | None:
        """No nested flor.loop in the script: the framework runs the steps."""
        return None

    def live_after_first_nested(self, names: set[str]) -> Live:
        """What the rest of the epoch reads from the skipped batches is in the checkpoint."""
        return Live(frozenset(), frozenset())


def describe(framework: str, hook: str | None, places: set[str]) -> str:
    """One line for --dry-run: how the framework's loop is driven for this statement."""
    where = f"in {hook}" if hook else "at module level"
    label = {"lightning": "Lightning", "transformers": "Hugging Face"}.get(framework, framework)
    if NESTED in places:
        return f"{label} run: the statement is {where}, which runs at training steps: those epochs are re-executed"
    if BODY in places:
        return (f"{label} run: the statement is {where}, which runs once per epoch after its training steps: "
                "epochs with a checkpoint are memoized (their training steps skipped, the state they left restored)")
    if AFTER in places:
        return f"{label} run: the statement is {where}, after training: every epoch is memoized, then the rest runs"
    return f"{label} run: the statement is {where}, before training: no epoch runs"

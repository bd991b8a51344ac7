"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[FlorCallback()])``.

Recording, the callback makes the Trainer's loops flor loops (``epoch``, and ``step`` for its
optimizer steps), registers the model, optimizer and scheduler and the Trainer's own state
(``TrainerState``, ``TrainerControl``, the running loss, stateful callbacks) with
``flor.checkpointing``, records the ``TrainingArguments`` that matter and the model config's
non-default values as args, and logs what the Trainer logs (``on_log``: the loss, learning rate,
evaluation metrics; not timings, which differ run to run) in epoch and step context.

Replaying, a *memoized* epoch does not run its steps: ``Trainer._run_epoch`` is replaced, for
that epoch, by a restore of the checkpoint taken where its steps ended, followed by what
``_run_epoch`` does after its steps (``on_epoch_end``, then logging, evaluation and saving as
the arguments ask). An *executed* epoch runs as recorded.

``--kwargs learning_rate=...`` (any ``TrainingArguments`` field) is applied when the arguments
are built, before the Trainer reads them. The model config is already in effect when the Trainer
starts: an override of ``config.*`` stops the script in one line.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import pickle

from .. import api
from ..errors import FlorError, UsageError
from ..messages import warn
from .driven import (DrivenLoop, begin_run, current_action, frame_of, mark_framework, record_settings, replaying,
                     resuming)

try:
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - the extra is not installed
    raise FlorError(
        "flor.integrations.transformers needs transformers: pip install 'flor-hindsight[transformers]'"
    ) from None

# The TrainingArguments recorded as args (with any other field a --kwargs override names).
ARGUMENTS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "per_device_eval_batch_size", "gradient_accumulation_steps", "weight_decay", "warmup_steps",
             "warmup_ratio", "lr_scheduler_type", "optim", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon",
             "seed", "data_seed", "eval_strategy", "eval_steps", "save_strategy", "logging_strategy", "logging_steps",
             "fp16", "bf16", "label_smoothing_factor")
_TIMING = ("_runtime", "_per_second")  # logged by the Trainer, never the same twice


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    return value


# -- TrainingArguments overrides ---------------------------------------------------------------

def _install_arguments_hook() -> None:
    original = TrainingArguments.__post_init__
    if getattr(original, "_flor", False):
        return
    names = {f.name for f in dataclasses.fields(TrainingArguments)}

    def __post_init__(self):
        # Overrides (recording) or the recorded values (replay) go in before the arguments are
        # checked and derived values computed, as if the script had passed them.
        run = api.current_run() or api.collecting_run()
        wanted = set(getattr(run, "recorded_args", {})) if replaying() else set(api.overridden())
        for name in sorted(wanted & names):
            if name not in run.args:
                setattr(self, name, api.arg(name, _plain(getattr(self, name))))
        original(self)

    __post_init__._flor = True
    TrainingArguments.__post_init__ = __post_init__


_install_arguments_hook()


# -- the Trainer's state that is not in a state_dict -------------------------------------------

class TrainerProgress:
    """What a memoized epoch restores besides the model, optimizer and scheduler: the Trainer's
    state and control, its running loss, the stateful callbacks, and the last step's gradient
    norm and learning rate (what the epoch-end log reports). Registered with flor.checkpointing."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.last_step: dict = {}  # grad_norm, learning_rate: set when a checkpoint is restored

    def _stateful(self):
        return [cb for cb in self.trainer.callback_handler.callbacks if isinstance(cb, ExportableState)]

    def state_dict(self) -> dict:
        trainer = self.trainer
        try:
            local = frame_of(Trainer, function="_run_epoch").f_locals
        except UsageError:
            local = {}
        grad_norm = local.get("grad_norm")
        return {
            "state": pickle.dumps(trainer.state, protocol=pickle.HIGHEST_PROTOCOL),
            "control": pickle.dumps(trainer.control, protocol=pickle.HIGHEST_PROTOCOL),
            "tr_loss": trainer._tr_loss.detach().clone(),
            "total_loss_scalar": float(trainer._total_loss_scalar),
            "globalstep_last_logged": int(trainer._globalstep_last_logged),
            "current_flos": float(trainer.current_flos),
            "grad_norm": grad_norm.detach().clone() if hasattr(grad_norm, "detach") else grad_norm,
            "learning_rate": local.get("learning_rate"),
            "callbacks": [dict(cb.state().get("attributes", {})) for cb in self._stateful()],
        }

    def load_state_dict(self, state: dict) -> None:
        trainer = self.trainer
        trainer.state = pickle.loads(state["state"])
        trainer.control = pickle.loads(state["control"])
        trainer._tr_loss = state["tr_loss"].to(trainer._tr_loss.device)
        trainer._total_loss_scalar = state["total_loss_scalar"]
        trainer._globalstep_last_logged = state["globalstep_last_logged"]
        trainer.current_flos = state["current_flos"]
        for callback, attributes in zip(self._stateful(), state["callbacks"]):
            for name, value in attributes.items():
                setattr(callback, name, value)
        self.last_step = {"grad_norm": state["grad_norm"], "learning_rate": state["learning_rate"]}


# -- the callback --------------------------------------------------------------------------

class FlorCallback(TrainerCallback):
    """Records (and replays) a Hugging Face ``Trainer.train`` as flor loops; see the module docstring."""

    def __init__(self) -> None:
        self._trainer = None
        self._epochs: DrivenLoop | None = None
        self._steps: DrivenLoop | None = None
        self._scope = None
        self._progress: TrainerProgress | None = None
        self._unsupported = ""  # why this transformers cannot memoize an epoch, if it cannot
        self._skip_epochs = 0  # `flor resume`: the Trainer's epochs before the checkpoint's, not run
        self._resumed = False  # `flor resume`: the checkpoint's epoch restores it instead of its steps

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainer = frame_of(Trainer).f_locals["self"]
        missing = missing_internals(trainer)
        if missing:
            # Record anyway; only memoized replay needs these, so replays of this run re-execute.
            self._unsupported = (f"transformers {transformers.__version__} has no Trainer.{missing[0]}, which a memoized "
                                 "epoch needs")
            warn(f"{self._unsupported}; replays of this run will re-execute its epochs")
        self._trainer = trainer
        callbacks = trainer.callback_handler.callbacks
        if callbacks[0] is not self:
            # First, so that the epoch-end state is taken (and restored) before other callbacks run.
            callbacks.remove(self)
            callbacks.insert(0, self)
        mark_framework("transformers")
        run = api.current_run() or api.collecting_run()
        if self._unsupported:
            run.note_environment("framework_memo", self._unsupported)
        chosen = {name: _plain(getattr(args, name)) for name in ARGUMENTS if hasattr(args, name)}
        record_settings({k: v for k, v in chosen.items() if k not in run.args and v is not None}, "", overridable=False)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_diff_dict"):
            settings = {k: _plain(v) for k, v in config.to_diff_dict().items() if k != "transformers_version"}
            record_settings(settings, "config.", overridable=False)
        begin_run()
        objects = {"model": trainer.model, "optimizer": trainer.optimizer}
        if trainer.lr_scheduler is not None:
            objects["scheduler"] = trainer.lr_scheduler
        if not self._unsupported:
            self._progress = objects["trainer"] = TrainerProgress(trainer)
        self._scope = api.checkpointing(**objects)
        self._scope.__enter__()
        if self._scope.manager is not None:
            self._scope.manager.frameless = True
        epochs = state.num_train_epochs
        self._epochs = DrivenLoop("epoch", int(math.ceil(epochs)) if epochs else None)
        self._steps = DrivenLoop("step")
        resume = resuming()
        if resume is not None:
            if self._unsupported or resume.get("point") == "end":
                why = self._unsupported or "the checkpoint is not where an epoch's steps end"
                api.fail_fast(UsageError(f"flor resume: {why}; rerun the script instead"))
            # The Trainer counts its epochs from 0: those before the checkpoint's do nothing, and
            # the checkpoint's is restored where its steps ended, as a memoized epoch is.
            self._skip_epochs, self._resumed = resume["iteration"], True

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._epochs is None:
            return
        self._trainer.__dict__.pop("_run_epoch", None)
        if self._skip_epochs:
            self._skip_epochs -= 1
            self._trainer._run_epoch = self._skipped_epoch
            return
        self._steps.end()
        self._epochs.begin()
        if (current_action() == "memo" or self._resumed) and not self._unsupported:
            self._trainer._run_epoch = self._memoized_epoch
        self._resumed = False

    def _skipped_epoch(self, **kwargs):
        """Instead of ``Trainer._run_epoch``, for an epoch a resumed run's checkpoint comes after."""
        self._trainer.__dict__.pop("_run_epoch", None)

    def _memoized_epoch(self, **kwargs):
        """Instead of ``Trainer._run_epoch``: restore the state where its steps ended (the
        replay driver restores it when the skipped step loop starts), then do what it does next."""
        trainer = self._trainer
        trainer.__dict__.pop("_run_epoch", None)
        self._steps.begin()
        last = self._progress.last_step
        trainer.control = trainer.callback_handler.on_epoch_end(trainer.args, trainer.state, trainer.control)
        call = {"model": kwargs["model"], "trial": kwargs.get("trial"), "epoch": kwargs["epoch"],
                "ignore_keys_for_eval": kwargs.get("ignore_keys_for_eval"), "start_time": kwargs["start_time"]}
        trainer._maybe_log_save_evaluate(trainer._tr_loss, last.get("grad_norm"), learning_rate=last.get("learning_rate"),
                                         **_accepted(trainer._maybe_log_save_evaluate, call))

    def on_step_begin(self, args, state, control, **kwargs):
        if self._epochs is not None and self._epochs.active:
            self._steps.begin()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._steps is not None:
            self._steps.end()  # recording: the checkpoint of this epoch is taken here

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name, value in (logs or {}).items():
            if name == "epoch" or name.endswith(_TIMING) or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                api.log(name, value)

    def on_train_end(self, args, state, control, **kwargs):
        if self._epochs is not None:
            steps, epochs = self._steps, self._epochs
            self._steps = self._epochs = None
            steps.end()
            epochs.end()
        if self._trainer is not None:
            self._trainer.__dict__.pop("_run_epoch", None)
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(None, None, None)


def missing_internals(trainer) -> list[str]:
    """The Trainer internals a memoized epoch needs that this transformers lacks."""
    return [name for name in ("_run_epoch", "_maybe_log_save_evaluate", "_tr_loss", "_globalstep_last_logged",
                              "_total_loss_scalar", "current_flos") if not hasattr(trainer, name)]


def _accepted(function, call: dict) -> dict:
    """The keyword arguments of ``call`` that ``function`` takes (its signature varies by version)."""
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in call.items() if k in parameters}


__all__ = ["FlorCallback", "TrainerProgress", "replaying"]

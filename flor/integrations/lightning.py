"""PyTorch Lightning: ``Trainer(logger=FlorLogger(), callbacks=[FlorCallback()])``.

Recording, the callback makes the Trainer's loops flor loops (``epoch``, and ``step`` for the
training batches), registers the LightningModule, its optimizers and schedulers and the Trainer's
own progress with ``flor.checkpointing``, and records the module's ``save_hyperparameters`` and
the Trainer's settings as args. The logger records ``self.log`` values in the context of the
epoch (and step) they were logged in; a ``flor.log`` in any hook gets the same context.

Replaying, a *memoized* epoch does not run its training batches: the epoch loop's ``advance``
is replaced, for that epoch, by a restore of the checkpoint taken where the batches ended
(module, optimizers, schedulers, random state, the Trainer's progress counters and logged
results, the callbacks' state, the module's plain attributes). Lightning then goes on as it did
after the last batch: validation, ``on_train_epoch_end``, epoch schedulers, epoch metrics. An
*executed* epoch runs as recorded. Recorded values logged again are compared, as for any script.

This reaches into Lightning's loops (``fit_loop.epoch_loop``), checked when training starts:
supported are the Lightning 2.x versions whose loops have the attributes named in ``_NEEDED``.

``--kwargs name=value`` reaches the module's ``__init__`` arguments saved by
``save_hyperparameters()``: the override is applied there, to ``self.hparams`` and to the
``__init__``'s own variable, so code after the call sees it either way.
"""

from __future__ import annotations

import copy
import io
import pickle
import sys

from .. import api
from ..errors import CheckpointError, FlorError, UsageError
from ..messages import warn
from ..values import is_plain
from .driven import DrivenLoop, begin_run, current_action, mark_framework, record_settings, replaying, resuming


def _import_lightning():
    # The package the script uses: `lightning.pytorch` (the unified package) unless only the
    # older `pytorch_lightning` is loaded or installed; their Trainer only accepts its own classes.
    if "pytorch_lightning" in sys.modules and "lightning" not in sys.modules:
        import pytorch_lightning as pl

        return pl
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise FlorError(
                "flor.integrations.lightning needs PyTorch Lightning: pip install 'flor-hindsight[lightning]'"
            ) from None
    return pl


pl = _import_lightning()
_Callback = pl.Callback
_Logger = pl.loggers.Logger

# The Trainer internals a memoized epoch needs (attribute paths from trainer.fit_loop).
_NEEDED = ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress", "epoch_loop.automatic_optimization.optim_progress",
           "epoch_loop.manual_optimization.optim_step_progress", "epoch_loop._batches_that_stepped",
           "epoch_loop._results", "epoch_loop.advance", "epoch_loop.on_advance_end", "epoch_loop._is_training_done")
TRAINER_SETTINGS = ("max_epochs", "max_steps", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
                    "limit_train_batches", "limit_val_batches", "val_check_interval", "check_val_every_n_epoch",
                    "num_sanity_val_steps", "precision", "deterministic")


# -- hyper-parameters ------------------------------------------------------------------------

def _declare(settings: dict, prefix: str = "", fixed: bool = False) -> dict:
    """Record the plain entries of ``settings`` (nested dicts as dotted names) as args, applying
    ``--kwargs`` (recording) or the recorded values (replay) in place; returns the top-level
    entries that changed. Names already declared (an argparse option of the same name) stay.
    ``fixed``: the settings are already in effect, so an override of one stops the script."""
    before = dict(settings)
    why = None if not fixed or replaying() else (
        "the module was built before flor.integrations.lightning was imported; import it before defining the "
        "LightningModule")
    used = api.record_settings(settings, prefix, fixed=why, keep_declared=True)
    return {key: value for key, value in used.items() if value is not before[key]} if not prefix else {}


def _set_local(frame, name: str, value) -> None:
    """Set a variable of a running function (its ``__init__``), as debuggers do."""
    frame.f_locals[name] = value  # Python 3.13+: a write-through view of the frame
    if sys.version_info < (3, 13):
        import ctypes

        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def _install_hparams_hook() -> None:
    mixin = pl.core.mixins.HyperparametersMixin
    original = mixin.save_hyperparameters
    if getattr(original, "_flor", False):
        return

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger=True):
        if frame is None:
            frame = sys._getframe(1)
        original(self, *args, ignore=ignore, frame=frame, logger=logger)
        changed = _declare(self._hparams)
        if changed:
            for key, value in changed.items():
                if key in frame.f_code.co_varnames:
                    _set_local(frame, key, value)
            self._hparams_initial = copy.deepcopy(self._hparams)

    save_hyperparameters._flor = True
    save_hyperparameters.__doc__ = original.__doc__
    mixin.save_hyperparameters = save_hyperparameters


_install_hparams_hook()


# -- the Trainer's state that is not in a state_dict ------------------------------------------

def _path(root, dotted: str):
    value = root
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _user_attributes(module) -> dict:
    """The module's own plain attributes (``self.outputs = []`` filled by training_step and read at
    epoch end): not parameters, submodules or Lightning's private state."""
    import torch

    def plain(value, depth=0) -> bool:
        if is_plain(value) or isinstance(value, torch.Tensor):
            return not isinstance(value, torch.nn.Parameter)
        if depth < 3 and type(value) in (list, tuple):
            return all(plain(v, depth + 1) for v in value)
        if depth < 3 and type(value) is dict:
            return all(type(k) is str and plain(v, depth + 1) for k, v in value.items())
        return False

    klass = type(module)
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and name != "training" and not isinstance(getattr(klass, name, None), property)
            and plain(value)}


_TENSOR_LIST = "__flor_tensor_list__"


def _pack(attributes: dict) -> dict:
    """A list of same-shaped tensors (step outputs) as one stacked tensor: one copy, not hundreds."""
    import torch

    packed = {}
    for name, value in attributes.items():
        if (type(value) is list and len(value) > 1 and all(isinstance(v, torch.Tensor) for v in value)
                and len({(v.shape, v.dtype, v.device) for v in value}) == 1):
            value = {_TENSOR_LIST: torch.stack([v.detach() for v in value])}
        packed[name] = value
    return packed


def _unpack(value):
    if isinstance(value, dict) and _TENSOR_LIST in value:
        import torch

        stacked = value[_TENSOR_LIST]
        if not isinstance(stacked, torch.Tensor):
            stacked = torch.from_numpy(stacked)
        return [t.clone() for t in stacked.unbind(0)]
    return value


def _metric_states(module) -> dict:
    """The accumulated state of the module's torchmetrics metrics (not in its state_dict)."""
    found = {}
    for name, child in module.named_modules():
        defaults = getattr(child, "_defaults", None)
        if isinstance(defaults, dict) and hasattr(child, "_update_count"):
            found[name] = {"states": {s: getattr(child, s) for s in defaults},
                           "update_count": child._update_count}
    return found


def _restore_metric_states(module, saved: dict) -> None:
    children = dict(module.named_modules())
    for name, state in saved.items():
        child = children.get(name)
        if child is None:
            continue
        for key, value in state["states"].items():
            setattr(child, key, value)
        child._update_count = state["update_count"]
        child._computed = None


class TrainerProgress:
    """What a memoized epoch must restore besides the module, optimizers and schedulers: the
    Trainer's progress counters, its logged results, the callbacks' state, the precision plugin
    (a GradScaler) and the module's plain attributes. Registered with flor.checkpointing."""

    def __init__(self, trainer, module, flor_callback) -> None:
        self.trainer = trainer
        self.module = module
        self.flor_callback = flor_callback

    def _callbacks(self):
        return [cb for cb in self.trainer.callbacks if cb is not self.flor_callback]

    def state_dict(self) -> dict:
        loop = self.trainer.fit_loop.epoch_loop
        connector = self.trainer._logger_connector
        state = {
            "batch": loop.batch_progress.state_dict(),
            "scheduler": loop.scheduler_progress.state_dict(),
            "optim": loop.automatic_optimization.optim_progress.state_dict(),
            "manual": loop.manual_optimization.optim_step_progress.state_dict(),
            "batches_that_stepped": loop._batches_that_stepped,
            "results": loop._results,
            "metrics": {"callback": getattr(connector, "_callback_metrics", {}),
                        "logged": getattr(connector, "_logged_metrics", {}),
                        "progress_bar": getattr(connector, "_progress_bar_metrics", {})},
            "callbacks": {cb.state_key: cb.state_dict() for cb in self._callbacks()},
            "precision": self.trainer.precision_plugin.state_dict(),
        }
        # One pickle (the pickling is the copy), which flor keeps and accounts for as a pickled part
        # of this object: the logged results are a dict subclass of metric objects that flor
        # would keep as a plain dict, step outputs kept in a list are hundreds of tiny tensors
        # (cheaper as one object than as one each), and live objects are referred to by name.
        return {"pickled": self._dumps(state), "attributes": _pack(_user_attributes(self.module)),
                "metrics_state": _metric_states(self.module)}

    def load_state_dict(self, saved: dict) -> None:
        state = self._loads(saved["pickled"])
        loop = self.trainer.fit_loop.epoch_loop
        loop.batch_progress.load_state_dict(state["batch"])
        loop.scheduler_progress.load_state_dict(state["scheduler"])
        loop.automatic_optimization.optim_progress.load_state_dict(state["optim"])
        loop.manual_optimization.optim_step_progress.load_state_dict(state["manual"])
        loop._batches_that_stepped = state["batches_that_stepped"]
        loop._results = state["results"]
        connector = self.trainer._logger_connector
        for key, name in (("callback", "_callback_metrics"), ("logged", "_logged_metrics"),
                          ("progress_bar", "_progress_bar_metrics")):
            if hasattr(connector, name):
                setattr(connector, name, state["metrics"][key])
        saved_callbacks = state["callbacks"]
        for cb in self._callbacks():
            if cb.state_key in saved_callbacks:
                cb.load_state_dict(saved_callbacks[cb.state_key])
        if state.get("precision"):
            self.trainer.precision_plugin.load_state_dict(state["precision"])
        for name, value in saved["attributes"].items():
            setattr(self.module, name, _unpack(value))
        _restore_metric_states(self.module, saved.get("metrics_state", {}))

    def _live(self) -> dict[str, object]:
        """Objects of this process that pickled state refers to by name, not by copy: the
        Trainer, its strategy (whose ``reduce`` each logged result holds), the module's parts."""
        trainer = self.trainer
        named = {"trainer": trainer, "strategy": trainer.strategy, "accelerator": trainer.accelerator,
                 "precision": trainer.precision_plugin}
        for name, module in self.module.named_modules():
            named[f"module:{name}"] = module
        return named

    def _dumps(self, value) -> bytes:
        ids = {id(obj): name for name, obj in self._live().items()}
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = lambda obj: ids.get(id(obj))
        pickler.dump(value)
        return buffer.getvalue()

    def _loads(self, data: bytes):
        live = self._live()

        def persistent_load(name):
            if name not in live:
                raise CheckpointError(f"the Trainer's logged results refer to {name}, which this run does not have")
            return live[name]

        unpickler = pickle.Unpickler(io.BytesIO(data))
        unpickler.persistent_load = persistent_load
        return unpickler.load()


# -- the callback --------------------------------------------------------------------------

class FlorCallback(_Callback):
    """Records (and replays) a Lightning ``fit`` as flor loops; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._epochs: DrivenLoop | None = None
        self._steps: DrivenLoop | None = None
        self._scope = None
        self._loop = None  # trainer.fit_loop.epoch_loop
        self._original_advance_end = None
        self._unsupported = ""  # why this Lightning cannot memoize an epoch, if it cannot
        self._resumed = False  # a `flor resume` run whose first epoch restores the killed run's checkpoint

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        loop = trainer.fit_loop
        missing = missing_internals(loop)
        if missing:
            # Record anyway; only memoized replay needs these, so replays of this run re-execute.
            self._unsupported = (f"Lightning {pl.__version__} has no fit_loop.{missing[0]}, which a memoized epoch "
                                 "needs")
            warn(f"{self._unsupported}; replays of this run will re-execute its epochs")
        callbacks = trainer.callbacks
        if callbacks and callbacks[0] is not self:
            # First, so that the epoch-end state is taken (and restored) before other callbacks run.
            callbacks.remove(self)
            callbacks.insert(0, self)
        mark_framework("lightning")
        if self._unsupported:
            (api.current_run() or api.collecting_run()).note_environment("framework_memo", self._unsupported)
        _declare(dict(pl_module.hparams), fixed=True)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "hparams", None):
            _declare(dict(datamodule.hparams), fixed=True)
        settings = {name: _plain_setting(_trainer_setting(trainer, name)) for name in TRAINER_SETTINGS}
        record_settings({k: v for k, v in settings.items() if v is not None}, "trainer.", overridable=False)
        begin_run()

    def on_train_start(self, trainer, pl_module) -> None:
        objects = {"model": pl_module}
        for i, optimizer in enumerate(trainer.optimizers):
            objects[f"optimizer{i}" if i else "optimizer"] = optimizer
        for i, config in enumerate(trainer.lr_scheduler_configs):
            objects[f"scheduler{i}" if i else "scheduler"] = config.scheduler
        if not self._unsupported:
            objects["trainer"] = TrainerProgress(trainer, pl_module, self)
        self._scope = api.checkpointing(**objects)
        self._scope.__enter__()
        if self._scope.manager is not None:
            self._scope.manager.frameless = True
        self._loop = trainer.fit_loop.epoch_loop
        finite = trainer.max_epochs is not None and trainer.max_epochs >= 0
        self._epochs = DrivenLoop("epoch", trainer.max_epochs if finite else None)
        self._steps = DrivenLoop("step")
        if not self._unsupported:
            # The training batches end where the epoch loop's on_advance_end sees the last one.
            self._original_advance_end = self._loop.on_advance_end
            self._loop.on_advance_end = self._on_advance_end
        resume = resuming()
        if resume is not None:
            self._start_at(trainer, resume)

    def _start_at(self, trainer, resume: dict) -> None:
        """``flor resume``: the Trainer starts at the checkpoint's epoch (its progress counters set
        as a finished epoch leaves them), whose batches are replaced by the checkpoint's restore,
        as a memoized epoch is; validation and the epoch's end then run as they did."""
        if self._unsupported or resume.get("point") == "end":
            why = self._unsupported or "the checkpoint is not where an epoch's batches end"
            api.fail_fast(UsageError(f"flor resume: {why}; rerun the script instead"))
        epoch = resume["iteration"]
        progress = trainer.fit_loop.epoch_progress
        for tracker in (progress.total, progress.current):
            tracker.ready = tracker.started = tracker.processed = tracker.completed = epoch
        self._resumed = True

    def _on_advance_end(self, data_fetcher) -> None:
        if self._steps is not None and self._steps.active and self._loop._is_training_done:
            self._steps.end()  # checkpoint point: the training batches of this epoch are done
        self._original_advance_end(data_fetcher)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._epochs is None:
            return
        self._steps.end()
        self._epochs.begin()
        loop = self._loop
        loop.__dict__.pop("advance", None)
        if (current_action() == "memo" or self._resumed) and not self._unsupported:
            loop.advance = self._memoized_advance
        self._resumed = False

    def _memoized_advance(self, data_fetcher) -> None:
        """One call instead of the epoch's batches: restore the state they left (the replay
        driver restores the checkpoint when the skipped step loop starts)."""
        self._loop.__dict__.pop("advance", None)
        self._steps.begin()
        if not self._loop._is_training_done:
            raise FlorError("the restored checkpoint does not end this epoch's training batches")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._steps is not None and self._steps.active:
            # The batches ended without the epoch loop's on_advance_end (on_train_batch_start
            # returned -1): the state here is not the one a memoized epoch can restore.
            run = api.current_run()
            if run is not None and not replaying() and not self._unsupported:
                run.note_environment("framework_memo", "an epoch's training batches ended early (on_train_batch_start "
                                                       "returned -1)")
            self._steps.end()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._steps is not None and self._epochs is not None and self._epochs.active:
            self._steps.begin()

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish(failed=False)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._finish(failed=True)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._finish(failed=False)

    def _finish(self, failed: bool) -> None:
        if self._loop is not None:
            self._loop.__dict__.pop("advance", None)
            self._loop.__dict__.pop("on_advance_end", None)
            self._loop = None
        if self._epochs is not None:
            steps, epochs = self._steps, self._epochs
            self._steps = self._epochs = None
            if not failed:
                steps.end()
                epochs.end()
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(RuntimeError if failed else None, None, None)


def missing_internals(fit_loop) -> list[str]:
    """The Trainer internals a memoized epoch needs that this Lightning lacks (``_NEEDED``)."""
    return [p for p in _NEEDED if not _has(fit_loop, p)]


def _has(root, dotted: str) -> bool:
    try:
        _path(root, dotted)
    except AttributeError:
        return False
    return True


def _trainer_setting(trainer, name: str):
    if name in ("max_epochs", "max_steps"):
        return getattr(trainer, name, None)
    if name == "precision":
        return getattr(trainer.precision_plugin, "precision", None)
    if name == "deterministic":
        return getattr(getattr(trainer, "_accelerator_connector", None), "deterministic", None)
    return getattr(trainer, name, None)


def _plain_setting(value):
    if is_plain(value):
        return value
    return str(value)


# -- the logger ------------------------------------------------------------------------------

class FlorLogger(_Logger):
    """Sends ``self.log`` values to flor, in the current epoch (and step) context."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def name(self) -> str:
        return "flor"

    @property
    def version(self) -> str:
        # The run begins at the Trainer's setup, before its checkpoint callback asks for this.
        run = api.current_run()
        return str(getattr(run, "tstamp", None) or "unversioned")

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        if params is None:
            return
        params = vars(params) if not isinstance(params, dict) else params
        _declare(dict(params))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        for name, value in metrics.items():
            if name == "epoch":
                continue  # Lightning adds the epoch number; flor's context has it
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            api.log(name, value)

    def save(self) -> None:
        """Values are flushed by the run."""

    def finalize(self, status: str) -> None:
        """The run ends with the script."""


__all__ = ["FlorCallback", "FlorLogger", "TrainerProgress", "replaying"]

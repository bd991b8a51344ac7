"""Hooks on the trackers a script already imported: each logged scalar is also handed to
``record(name, value, step)`` (flor.log in the current loop context, see ``api.note_trackers``),
and each tracker run is handed once to ``note(tracker, where)``, where ``where`` says how to
find it again (``{"log_dir": ...}``, ``{"run_id": ..., "tracking_uri": ...}``, ``{"path": ...}``).

Hooks are installed by :func:`install`, which looks in ``sys.modules`` only: a script that never
imported mlflow never pays for its import. It is called at ``import flor`` and at each
``flor.loop``, so a tracker imported after flor is still seen at the next loop. A hook that fails
to read a value or a tracker run leaves the user's call untouched (the tracker gets its value).
``from mlflow import log_metric`` done before the hook went in keeps the unhooked function.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable

from ..environment.imported import imported

Record = Callable[[str, object, object], None]
Note = Callable[[str, dict], None]

_installed: set[str] = set()
_targets: dict = {}
_inside = threading.local()


def install(record: Record, note: Note) -> None:
    """Hook every tracker the script has imported so far (each once)."""
    _targets["record"], _targets["note"] = record, note
    for name, hook in (("torch.utils.tensorboard.writer", _tensorboard), ("tensorboardX.writer", _tensorboard),
                       ("mlflow", _mlflow), ("wandb.sdk.wandb_run", _wandb)):
        if name in _installed:
            continue
        module = imported(name)
        if module is not None:
            _installed.add(name)
            hook(module)


def _record(name: object, value: object, step: object) -> None:
    try:
        number = float(value)  # a tensor, numpy scalar, int or float; anything else is not a scalar
    except (TypeError, ValueError, RuntimeError):
        return
    if isinstance(name, str):
        _targets["record"](name, number, step)


def _note(tracker: str, where: dict) -> None:
    _targets["note"](tracker, where)


def _wrap(owner, attribute: str, after: Callable) -> None:
    """Replace ``owner.attribute`` by a function that calls it, then ``after(result, *args,
    **kwargs)`` (whose errors are swallowed: noting never breaks the user's logging)."""
    original = getattr(owner, attribute, None)
    if original is None or getattr(original, "__flor_wrapped__", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        # Only the outermost hooked call records: wandb.log calls Run.log, a tracker may call
        # its own hooked functions; each value is recorded once.
        depth = getattr(_inside, "depth", 0)
        _inside.depth = depth + 1
        try:
            result = original(*args, **kwargs)
        finally:
            _inside.depth = depth
        if depth == 0:
            try:
                after(result, *args, **kwargs)
            except Exception:  # noqa: BLE001
                pass
        return result

    wrapper.__flor_wrapped__ = True
    setattr(owner, attribute, wrapper)


# -- TensorBoard (torch.utils.tensorboard and tensorboardX) --------------------------------------


def _writer_dir(writer) -> None:
    if getattr(writer, "_flor_noted", False):
        return  # once per writer: add_scalar is called every step
    log_dir = getattr(writer, "log_dir", None) or getattr(writer, "logdir", None)
    if log_dir is None and hasattr(writer, "get_logdir"):
        log_dir = writer.get_logdir()
    if log_dir is not None:
        import os

        _note("tensorboard", {"log_dir": os.path.abspath(str(log_dir))})
        try:
            writer._flor_noted = True
        except AttributeError:
            pass


def _tensorboard(module) -> None:
    writer = getattr(module, "SummaryWriter", None)
    if writer is None:
        return

    def add_scalar(_result, self, tag, scalar_value, global_step=None, *args, **kwargs):
        _writer_dir(self)
        _record(tag, scalar_value, global_step)

    def add_scalars(_result, self, main_tag, tag_scalar_dict, global_step=None, *args, **kwargs):
        _writer_dir(self)
        for tag, value in dict(tag_scalar_dict).items():
            _record(f"{main_tag}/{tag}", value, global_step)  # the name TensorBoard shows

    _wrap(writer, "__init__", lambda _result, self, *args, **kwargs: _writer_dir(self))
    _wrap(writer, "add_scalar", add_scalar)
    _wrap(writer, "add_scalars", add_scalars)


# -- MLflow --------------------------------------------------------------------------------------


def _mlflow_run(mlflow, run=None) -> None:
    run = run or mlflow.active_run()
    if run is not None:
        _note("mlflow", {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                         "tracking_uri": mlflow.get_tracking_uri()})


def _mlflow(mlflow) -> None:
    def log_metric(_result, key, value, step=None, *args, **kwargs):
        _mlflow_run(mlflow)
        _record(key, value, step)

    def log_metrics(_result, metrics, step=None, *args, **kwargs):
        _mlflow_run(mlflow)
        for key, value in dict(metrics).items():
            _record(key, value, step)

    _wrap(mlflow, "start_run", lambda run, *args, **kwargs: _mlflow_run(mlflow, run))
    _wrap(mlflow, "log_metric", log_metric)
    _wrap(mlflow, "log_metrics", log_metrics)


# -- Weights & Biases ----------------------------------------------------------------------------


def _wandb(module) -> None:
    run_class = getattr(module, "Run", None)
    if run_class is None:
        return

    def log(_result, self, data, step=None, *args, **kwargs):
        _note("wandb", {"path": "/".join(str(p) for p in (self.entity, self.project, self.id) if p),
                        "dir": str(getattr(self, "dir", "") or "")})
        for key, value in dict(data).items():
            _record(key, value, step)

    _wrap(run_class, "log", log)
    top = imported("wandb")
    bound = getattr(top, "log", None)
    if getattr(bound, "__self__", None) is not None and isinstance(bound.__self__, run_class):
        top.log = bound.__self__.log  # wandb.init bound wandb.log to its run before the hook went in

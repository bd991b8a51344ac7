"""Fast checks of the modules whose other tests all train or launch processes (the replay worker,
the deferred compiler import, the framework integrations), so that the fast tier loads every
module of flor (tests/test_fast_tier.py). The framework integrations' checks are slow: importing
Lightning or transformers alone takes seconds."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from flor.replay import lazy_dynamo, worker


def test_the_worker_lets_programs_write_to_tmp_and_home_but_never_to_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    places = worker._writable_places(tmp_path / "project")
    assert Path(tempfile.gettempdir()) in places and Path("/tmp") in places and tmp_path in places
    monkeypatch.setenv("HOME", "/")
    assert Path("/") not in worker._writable_places(tmp_path / "project")


def test_the_compiler_import_is_deferred_only_while_nothing_can_compile(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch._compile", raising=False)
    assert lazy_dynamo.defer_dynamo_import() == 0  # torch not imported: nothing to wrap
    monkeypatch.setitem(sys.modules, "torch._compile", object())
    monkeypatch.setitem(sys.modules, "torch._dynamo", object())
    assert lazy_dynamo.defer_dynamo_import() == 0  # the compiler is already there: torch's own wrappers


@pytest.mark.slow  # importing Lightning takes 10 s to minutes on a loaded 2-core machine
def test_lightning_has_the_trainer_internals_a_memoized_epoch_needs():
    lightning = pytest.importorskip("lightning")
    from flor.integrations import lightning as integration

    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu", devices=1)
    assert integration.missing_internals(trainer.fit_loop) == []


@pytest.mark.slow
def test_lightning_sets_a_local_of_a_running_function():
    pytest.importorskip("lightning")
    from flor.integrations import lightning as integration

    def init():
        hidden = 10
        integration._set_local(sys._getframe(), "hidden", 75)
        return hidden

    assert init() == 75


@pytest.mark.slow  # importing transformers' Trainer: seconds
def test_transformers_trainer_has_the_methods_a_memoized_epoch_drives():
    transformers = pytest.importorskip("transformers")
    from flor.integrations import transformers as integration

    # The other internals are attributes a Trainer sets on itself; the methods are on the class.
    assert set(integration.missing_internals(transformers.Trainer)) <= {
        "_tr_loss", "_globalstep_last_logged", "_total_loss_scalar", "current_flos"}


def test_tracker_hooks_record_each_scalar_once_and_leave_the_call_alone(monkeypatch):
    """flor.trackers.hooks on a stand-in mlflow module (the real trackers are tested in
    test_trackers.py, slow): the user's call gets its value, flor gets name, value and step once
    per outermost call, a non-scalar is not recorded, and a second install hooks nothing twice."""
    import types

    from flor.trackers import hooks

    calls, recorded, noted = [], [], []
    mlflow = types.ModuleType("mlflow")

    class _Info:
        run_id, experiment_id = "r1", "0"

    class _Run:
        info = _Info()

    mlflow.active_run = lambda: _Run()
    mlflow.get_tracking_uri = lambda: "file:///tmp/mlruns"
    mlflow.start_run = lambda *a, **k: _Run()

    def log_metric(key, value, step=None):
        calls.append((key, value, step))
        if key == "outer":
            mlflow.log_metric("inner", 1.0, step)  # a tracker calling its own hooked function

    mlflow.log_metric = log_metric
    mlflow.log_metrics = lambda metrics, step=None: [mlflow.log_metric(k, v, step) for k, v in metrics.items()]
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setattr(hooks, "_installed", set())
    monkeypatch.setattr(hooks, "_targets", {})
    hooks.install(lambda *a: recorded.append(a), lambda *a: noted.append(a))
    hooks.install(lambda *a: recorded.append(a), lambda *a: noted.append(a))  # once per tracker
    mlflow.log_metric("loss", 0.5, step=3)
    mlflow.log_metric("text", "not a number")
    mlflow.log_metric("outer", 2.0, 4)
    assert calls == [("loss", 0.5, 3), ("text", "not a number", None), ("outer", 2.0, 4), ("inner", 1.0, 4)]
    assert recorded == [("loss", 0.5, 3), ("outer", 2.0, 4)]
    assert noted[0] == ("mlflow", {"run_id": "r1", "experiment_id": "0", "tracking_uri": "file:///tmp/mlruns"})

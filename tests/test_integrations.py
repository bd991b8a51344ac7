"""flor.integrations: Lightning's and Hugging Face's Trainers recorded and replayed (issue 17).

The planning of framework-driven runs (which hook is per step, per epoch, before or after
training) is tested on source text; the recording and replay end to end, with tiny models built
from code or configs (nothing downloads): each script is recorded twice with different args, an
epoch-level statement is replayed for both runs, and every value must equal a fresh run of
today's script with the same args, with the user's files untouched. The corpus of
``tests/realworld`` checks more questions of the same scripts (validation, step-level, after
training).
"""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from pathlib import Path

import pytest

from flor.replay.analysis import AFTER, BEFORE, BODY, NESTED
from flor.replay.frameworks import FrameworkLayout
from flor.replay.plan import plan_driven, retry_segment
from tests.realworld.harness import SCRIPTS, _hashes, _values, today_text

lightning = pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")

LIGHTNING_SOURCE = textwrap.dedent('''\
    import lightning.pytorch as L

    def summarize(outputs):
        return sum(outputs)                                  # 4

    def everywhere(x):
        return x                                             # 7

    class Model(L.LightningModule):
        def training_step(self, batch, batch_idx):
            value = everywhere(batch)                        # 11
            return value

        def on_train_epoch_end(self):
            total = summarize(self.outputs)                  # 15
            everywhere(total)

        def validation_step(self, batch, batch_idx):
            return batch                                     # 19

        def configure_optimizers(self):
            return None                                      # 22

    class Watcher(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            pass                                             # 26

        def on_validation_epoch_end(self, trainer, module):
            pass                                             # 29

    def unused():
        return 1                                             # 32

    def main():
        trainer = L.Trainer()
        print("before")                                      # 36
        trainer.fit(Model())
        print("after")                                       # 38

    main()
''')

HF_SOURCE = textwrap.dedent('''\
    from transformers import Trainer, TrainerCallback

    def compute_metrics(eval_pred):
        return {}                                            # 4

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            pass                                             # 8

        def on_epoch_end(self, args, state, control, **kwargs):
            pass                                             # 11

    trainer = Trainer(compute_metrics=compute_metrics, callbacks=[Watch()])
    trainer.train()
    print("done")                                            # 15
''')


def _line(source: str, marker: str) -> int:
    return next(n for n, text in enumerate(source.splitlines(), 1) if text.rstrip().endswith(f"# {marker}"))


@pytest.mark.parametrize("marker, expected", [
    ("4", {BODY}),  # a helper called from on_train_epoch_end
    ("7", {NESTED, BODY}),  # called from training_step and from an epoch hook
    ("11", {NESTED}), ("15", {BODY}),
    ("19", {BEFORE, BODY}),  # validation runs in the sanity check, then every epoch
    ("22", {BEFORE}), ("26", {NESTED}), ("29", {BEFORE, BODY}),
    ("32", {NESTED}),  # never seen called: re-executed
    ("36", {BEFORE}), ("38", {AFTER}),
])
def test_lightning_hooks_are_placed_by_when_the_trainer_calls_them(marker, expected):
    layout = FrameworkLayout.of(LIGHTNING_SOURCE, "lightning", {})
    assert layout.places(_line(LIGHTNING_SOURCE, marker)) == expected


@pytest.mark.parametrize("interval, validation", [(1.0, {BEFORE, BODY}), (0.5, {BEFORE, NESTED}), (50, {BEFORE, NESTED})])
def test_lightning_validation_within_epochs_is_per_step(interval, validation):
    layout = FrameworkLayout.of(LIGHTNING_SOURCE, "lightning", {"trainer.val_check_interval": interval})
    assert layout.places(_line(LIGHTNING_SOURCE, "19")) == validation
    assert layout.places(_line(LIGHTNING_SOURCE, "15")) == {BODY}


@pytest.mark.parametrize("strategy, metrics", [("epoch", {BODY}), ("steps", {NESTED})])
def test_hf_evaluation_hooks_follow_the_recorded_eval_strategy(strategy, metrics):
    layout = FrameworkLayout.of(HF_SOURCE, "transformers", {"eval_strategy": strategy})
    assert layout.places(_line(HF_SOURCE, "4")) == metrics  # handed over as compute_metrics=
    assert layout.places(_line(HF_SOURCE, "8")) == {NESTED}
    assert layout.places(_line(HF_SOURCE, "11")) == {BODY}
    assert layout.places(_line(HF_SOURCE, "15")) == {AFTER}


def test_driven_plans_give_every_epoch_an_action():
    checkpoints = {0: {"nested": "a"}, 1: {"nested": "b"}, 3: {"nested": "d"}}
    [memo] = plan_driven("memo", 4, checkpoints, places={BODY})
    assert memo.actions == {0: "memo", 1: "memo", 2: "exec", 3: "memo"} and memo.stop == 4
    [chosen] = plan_driven("memo", 4, checkpoints, places={BODY}, selected=[1])
    assert chosen.actions == {0: "memo", 1: "memo"} and chosen.store == [1] and chosen.stop == 2
    [reexec] = plan_driven("reexec", 4, checkpoints, places={NESTED}, selected=[3])
    assert reexec.actions == {0: "memo", 1: "memo", 2: "exec", 3: "exec"}
    [after] = plan_driven("outside", 4, checkpoints, places={AFTER})
    assert after.actions == {0: "memo", 1: "memo", 2: "exec", 3: "memo"} and after.run_post and after.store == []
    [before] = plan_driven("outside", 4, checkpoints, places={BEFORE})
    assert before.actions == {} and before.stop == 0 and before.store_before
    retry = retry_segment([1], 4, checkpoints, driven=True)
    assert retry.actions == {0: "memo", 1: "exec"} and retry.store == [1]


# -- end to end --------------------------------------------------------------------------------

def _project(tmp_path: Path, folder: str, name: str) -> tuple[Path, str]:
    from tests.conftest import git

    root = tmp_path / name
    shutil.copytree(SCRIPTS / folder, root)
    source = (root / "train.py").read_text()
    from tests.realworld.harness import recorded_text

    (root / "train.py").write_text(recorded_text(source))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", folder)
    return root, source


def _tstamps(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return [t for (t,) in connection.execute("SELECT tstamp FROM runs ORDER BY run_id")]


def _args(db: Path, tstamp: str) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return dict(connection.execute("SELECT a.name, a.value FROM args a JOIN runs r USING (run_id) WHERE r.tstamp = ?",
                                       (tstamp,)).fetchall())


def _two_runs_replayed(tmp_path, folder: str, argv: tuple, kwargs: list[str], qid: str, name: str):
    """Record ``folder``'s script with each of ``kwargs``; replay ``qid`` for both runs; compare each
    replayed value with a fresh run of today's script with the same args. The recordings and the
    fresh runs start together (their imports are most of their time); the replay follows."""
    from tests.realworld.harness import finish, start

    root, source = _project(tmp_path, folder, "recorded")
    started = []
    for index, override in enumerate(kwargs):
        copy = shutil.copytree(root, tmp_path / f"fresh{index}")
        (copy / "train.py").write_text(today_text(source, qid))
        started.append((copy, start(copy, "train.py", *argv, "--kwargs", override)))
    recordings = [start(root, "train.py", *argv, "--kwargs", override) for override in kwargs]
    for done in [finish(p) for p in recordings] + [finish(p) for _copy, p in started]:
        assert done.returncode == 0, done.stderr[-2000:]
    db = root / ".flor" / "flor.db"
    tstamps = _tstamps(db)
    assert len(tstamps) == 2
    by_override = {}
    for tstamp in tstamps:
        recorded = _args(db, tstamp)
        by_override[next(o for o in kwargs if float(o.split("=")[1]) == recorded[o.split("=")[0]])] = tstamp

    from tests.realworld.harness import run

    (root / "train.py").write_text(today_text(source, qid))
    before = _hashes(root)
    plan = run(root, "-m", "flor", "replay", name, "--dry-run")
    done = run(root, "-m", "flor", "replay", name)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert _hashes(root) == before, "replay touched the user's files"
    for index, override in enumerate(kwargs):
        reference = _values(started[index][0] / ".flor" / "flor.db", name, "record")[1]
        replayed = _values(db, name, "replay", by_override[override])[1]
        assert reference and replayed == reference
    return root, [by_override[o] for o in kwargs], plan.stdout + plan.stderr, done.stdout + done.stderr


@pytest.mark.slow
def test_lightning_runs_recorded_and_replayed(tmp_path):
    root, tstamps, plan, out = _two_runs_replayed(
        tmp_path, "lightning_classifier", ("--epochs", "2", "--train_size", "128"),
        ["learning_rate=0.05", "learning_rate=0.2"], "a_epoch", "weight_norm")
    assert "memo 0-1" in plan and "on_train_epoch_end" in plan and "memoized" in plan
    db = root / ".flor" / "flor.db"
    first, second = (_args(db, t) for t in tstamps)
    assert first["learning_rate"] == 0.05 and second["learning_rate"] == 0.2  # save_hyperparameters, overridden
    assert first["trainer.max_epochs"] == 2 and first["epochs"] == 2  # the Trainer's settings and argparse
    assert _values(db, "val_loss", "record", tstamps[0])[1] != _values(db, "val_loss", "record", tstamps[1])[1]
    loss = _values(db, "train_loss_step", "record", tstamps[0])[1]
    assert {tuple(part[0] for part in context) for context in loss} == {("epoch", "step")}


@pytest.mark.slow
def test_hf_trainer_runs_recorded_and_replayed(tmp_path):
    root, tstamps, plan, out = _two_runs_replayed(
        tmp_path, "hf_text_classifier", ("--epochs", "2", "--train_size", "64"),
        ["learning_rate=0.002", "learning_rate=0.0005"], "a_epoch", "epoch_classifier_norm")
    assert "memo 0-1" in plan and "on_epoch_end" in plan
    db = root / ".flor" / "flor.db"
    first, second = (_args(db, t) for t in tstamps)
    assert first["learning_rate"] == 0.002 and second["learning_rate"] == 0.0005  # TrainingArguments, overridden
    assert first["config.num_hidden_layers"] == 2 and first["eval_strategy"] == "epoch"
    learning_rates = _values(db, "learning_rate", "record", tstamps[1])[1]
    assert learning_rates and max(v for values in learning_rates.values() for v in values) <= 0.0005


@pytest.mark.slow
def test_lightning_override_reaches_the_init_variable(project):
    project.write("train.py", '''
        import flor
        import lightning.pytorch as L
        import torch
        from flor.integrations.lightning import FlorCallback

        class Tiny(L.LightningModule):
            def __init__(self, hidden=4):
                super().__init__()
                self.save_hyperparameters()
                self.layer = torch.nn.Linear(3, hidden)   # the __init__'s own variable

            def training_step(self, batch, batch_idx):
                return self.layer(batch[0]).sum()

            def on_train_epoch_end(self):
                flor.log("width", self.layer.out_features)
                flor.log("hparam", self.hparams.hidden)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
        L.Trainer(max_epochs=1, logger=False, callbacks=[FlorCallback()], enable_progress_bar=False,
                  enable_checkpointing=False, enable_model_summary=False).fit(Tiny(), data)
    ''')
    project.commit_all()
    project.run("train.py", "--kwargs", "hidden=6")
    _t, width = _values(project.db, "width", "record")
    _t, hparam = _values(project.db, "hparam", "record")
    assert list(width.values()) == [[6]] and list(hparam.values()) == [[6]]
    done = project.run("train.py", "--kwargs", "trainer.max_epochs=3", check=False)
    assert done.returncode == 2 and "trainer.max_epochs" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_hf_config_override_is_refused_in_one_line(tmp_path):
    from tests.realworld.harness import run

    root, _source = _project(tmp_path, "hf_text_classifier", "proj")
    done = run(root, "train.py", "--epochs", "1", "--train_size", "16", "--kwargs", "config.hidden_size=8")
    assert done.returncode == 2
    assert "config.hidden_size" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_lightning_epochs_cut_short_are_re_executed(project):
    """An epoch ended by on_train_batch_start returning -1 skipped validation: no memoized epoch
    can restore that state, so the run says so and its replays re-execute, with exact values."""
    script = '''
        import flor
        import lightning.pytorch as L
        import torch
        from flor.integrations.lightning import FlorCallback

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(3, 2)

            def on_train_batch_start(self, batch, batch_idx):
                return -1 if batch_idx == 2 else None

            def training_step(self, batch, batch_idx):
                return self.layer(batch[0]).pow(2).mean()

            def on_train_epoch_end(self):
                pass  # HINDSIGHT

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        L.seed_everything(0)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=4, shuffle=True)
        L.Trainer(max_epochs=3, logger=False, callbacks=[FlorCallback()], enable_progress_bar=False,
                  enable_checkpointing=False, enable_model_summary=False).fit(Tiny(), data)
    '''
    statement = 'flor.log("bias", self.layer.bias.sum().item())'
    project.write("train.py", script)
    project.commit_all()
    fresh = shutil.copytree(project.root, project.root.parent / "fresh")
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    today = textwrap.dedent(script).replace("pass  # HINDSIGHT", statement)
    (fresh / "train.py").write_text(today)
    project.run(str(fresh / "train.py"), cwd=fresh, env={"FLOR_CKPT_PERIOD": "1"})
    (project.root / "train.py").write_text(today)
    plan = project.flor("replay", "bias", "--dry-run").stdout
    assert "exec 0-2" in plan and "ended early" in plan
    project.flor("replay", "bias")
    replayed = _values(project.db, "bias", "replay")[1]
    assert replayed and replayed == _values(fresh / ".flor" / "flor.db", "bias", "record")[1]


# -- flor resume of a framework run ---------------------------------------------------------------

RESUMABLE_LIGHTNING = '''
    import os, time
    import flor
    import lightning.pytorch as L
    import torch
    from flor.integrations.lightning import FlorCallback, FlorLogger

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(3, 2)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean())

        def on_train_epoch_end(self):
            flor.log("bias", self.layer.bias.sum().item())
            flor.log("numbering", [self.current_epoch, self.global_step])
            time.sleep(float(os.environ.get("SLOW", "0")))

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)]

    L.seed_everything(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=4, shuffle=True)
    check = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    L.Trainer(max_epochs=6, logger=FlorLogger(), callbacks=[FlorCallback()], enable_progress_bar=False,
              enable_checkpointing=False, enable_model_summary=False).fit(Tiny(), data, check)
'''


def _kill_after_checkpoints(root: Path, argv: tuple, count: int) -> None:
    """Start the script, poll the store until the new run has ``count`` checkpoints listed, SIGKILL it."""
    import signal
    import subprocess
    import sys
    import time

    from tests.realworld.harness import child_env

    db = root / ".flor" / "flor.db"
    with sqlite3.connect(db) as connection:
        before = connection.execute("SELECT COALESCE(MAX(run_id), 0) FROM runs").fetchone()[0]
    process = subprocess.Popen([sys.executable, "train.py", *argv], cwd=root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**child_env(), "FLOR_CKPT_PERIOD": "1", "SLOW": "0.5"})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
                    (listed,) = connection.execute("SELECT COUNT(*) FROM checkpoints WHERE run_id > ?", (before,)).fetchone()
            except sqlite3.Error:
                continue
            if listed >= count:
                break
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it was killed"


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["lightning", "transformers"])
def test_framework_run_killed_and_resumed_equals_a_fresh_run(tmp_path, project, framework):
    """6 (Lightning) or 5 (HF) epochs, a checkpoint each, SIGKILL once 3 are listed, `flor resume`:
    the resumed run continues the epoch and step numbering of the killed one, and every value it
    logs equals the fresh run's in the same epoch and step (the epochs after the checkpoint's all
    logged)."""
    from tests.realworld.harness import run

    if framework == "lightning":
        project.write("train.py", RESUMABLE_LIGHTNING)
        project.commit_all()
        root, argv = project.root, ()
    else:
        root, source = _project(tmp_path, "hf_text_classifier", "hf")
        statement = 'flor.log("epoch_classifier_norm", model.classifier.weight.norm().item())'
        (root / "train.py").write_text(today_text(source, "a_epoch").replace(
            statement, statement + '; import os, time; time.sleep(float(os.environ.get("SLOW", "0")))'))
        (root / ".gitignore").write_text("hf_out/\n")
        from tests.conftest import git

        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "slow")
        argv = ("--epochs", "5", "--train_size", "64")
    assert run(root, "train.py", *argv).returncode == 0  # the fresh, uninterrupted run (the same environment)
    _kill_after_checkpoints(root, argv, 3)
    assert run(root, "-m", "flor", "runs").returncode == 0
    db = root / ".flor" / "flor.db"
    fresh, killed = _tstamps(db)
    done = run(root, "-m", "flor", "resume", killed)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = _tstamps(db)[2]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        names = [n for (n,) in connection.execute("SELECT DISTINCT name FROM logs WHERE run_id = 1")]
        status = connection.execute("SELECT status, resumed_from FROM runs WHERE run_id = 3").fetchone()
    assert status == ("finished", 2)
    start, compared = None, 0
    for name in names:
        expected = _values(db, name, "record", fresh)[1]
        got = _values(db, name, "record", resumed)[1]
        assert got, name
        for context, values in got.items():
            assert context and context[0][0] == "epoch", f"{name} logged outside an epoch: {context}"
            assert expected.get(context) == values, (name, context, values, expected.get(context))
        first = min(context[0][2] for context in got)
        start = first if start is None else min(start, first)
        later = {c: v for c, v in expected.items() if c and c[0][2] > first}
        assert all(got.get(c) == v for c, v in later.items()), name
        compared += len(later)
    assert compared >= 3 and 1 <= start <= 3  # continued from the killed run's checkpoint, not from epoch 0

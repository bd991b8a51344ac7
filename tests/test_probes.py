"""Recording never breaks training (issue 25): a user object whose state cannot be read is left
out of the checkpoint with one warning, the run finishes, and replay plans around it; the
canonical Accelerate loop (everything prepared, ``outputs = model(**batch)``) records and
replays exactly."""

from __future__ import annotations

import sqlite3

import pytest

from flor.checkpoints.probe import OBJECT, VARIABLE, Probes


def _values(project, name: str, source: str, run_id: int) -> list:
    """The values of ``name`` in one run, in loop order (epoch, then step)."""
    with sqlite3.connect(project.db) as connection:
        return [v for (v,) in connection.execute(
            "SELECT l.value FROM logs l JOIN contexts c ON c.run_id = l.run_id AND c.ctx_id = l.ctx_id "
            "WHERE l.name = ? AND l.source = ? AND l.run_id = ? "
            "ORDER BY coalesce(c.parent_iteration, l.iteration), l.iteration", (name, source, run_id))]


def _status(project, run_id: int) -> str:
    with sqlite3.connect(project.db) as connection:
        return connection.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]


def _warnings(stderr: str, word: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("flor: warning:") and word in line]


def test_a_failed_probe_warns_once_and_notes_the_object():
    class Run:
        environment: dict = {}

        def note_environment(self, key, value):
            self.environment = {**self.environment, key: value}

    run = Run()
    probes = Probes(run)

    def broken():
        raise AttributeError("'DataLoader' object has no attribute 'dl_state_dict'")

    for index in range(3):
        assert probes.call("train_dataloader", VARIABLE, "its state_dict()", broken, index=index) == (False, None)
    assert probes.call("model", OBJECT, "its state_dict()", lambda: {"w": 1}) == (True, {"w": 1})
    assert run.environment["unkept"] == {"train_dataloader": {
        "kind": VARIABLE, "from": 0,
        "reason": "its state_dict() raised AttributeError: 'DataLoader' object has no attribute 'dl_state_dict'"}}


RAISING = """
import threading
import flor

class Weights:
    def __init__(self):
        self.w = 0.0
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"]

class Counter:
    def __init__(self):
        self.n = 0
    def state_dict(self):
        raise RuntimeError("no state here")
    def load_state_dict(self, state):
        pass

class Record(dict):
    __getattr__ = dict.__getitem__  # hasattr(record, "x") raises KeyError, not AttributeError

weights, counter = Weights(), Counter()
with flor.checkpointing(weights=weights, counter=counter, lock=threading.Lock()):
    for epoch in flor.loop("epoch", range(4)):
        for step in flor.loop("step", range(3)):
            weights.w += 0.5
            counter.n += 1
            record = Record(step=step)
        flor.log("w", weights.w)
        # BODY
"""


@pytest.mark.slow
def test_a_registered_object_whose_state_dict_raises_leaves_training_running(project):
    project.write("train.py", RAISING)
    project.commit_all()
    done = project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    assert _status(project, 1) == "finished"
    # One warning per object, not one per iteration.
    assert len(_warnings(done.stderr, "`counter`")) == 1, done.stderr
    assert "RuntimeError: no state here" in _warnings(done.stderr, "`counter`")[0]
    assert len(_warnings(done.stderr, "`lock`")) == 1, done.stderr  # a registered object that does not pickle
    assert len(_warnings(done.stderr, "`record`")) == 1, done.stderr  # a variable looked into for generators
    assert _values(project, "w", "record", 1) == [1.5, 3.0, 4.5, 6.0]

    # Replay plans around it: no checkpoint lacking `counter` is restored.
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace("        # BODY", '        flor.log("n", counter.n)'))
    plan = project.flor("replay", "n", "--dry-run").stdout
    assert "exec for n (memoization blocked" in plan and "lack `counter`" in plan, plan
    project.flor("replay", "n")
    project.run("train.py")
    assert _values(project, "n", "replay", 1) == _values(project, "n", "record", 2) == [3, 6, 9, 12]


ACCELERATE = """
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

import flor


class Output(dict):
    # Like transformers' ModelOutput: a dict subclass read by attribute (not plain data to flor).
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask, labels=None):
        mask = attention_mask.unsqueeze(-1).float()
        hidden = (self.drop(self.embed(input_ids)) * mask).sum(1) / mask.sum(1)
        logits = self.head(hidden)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return Output(loss=loss, logits=logits)


class Pairs(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 20, (n, 6), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(6, dtype=torch.long), "labels": self.labels[i]}


torch.manual_seed(0)
accelerator = Accelerator(cpu=True)
model = TinyClassifier()
train_dataloader = DataLoader(Pairs(24, 1), batch_size=8, shuffle=True)
eval_dataloader = DataLoader(Pairs(16, 2), batch_size=8)
optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
epochs = flor.arg("epochs", 3)
lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler)
with flor.checkpointing(model=model, optimizer=optimizer, lr_scheduler=lr_scheduler):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for step, batch in flor.loop("step", enumerate(train_dataloader)):
            outputs = model(**batch)
            loss = outputs.loss
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            flor.log("loss", loss.item())
            # STEP
        model.eval()
        correct = 0
        for batch in eval_dataloader:
            with torch.no_grad():
                outputs = model(**batch)
            correct += (outputs.logits.argmax(-1) == batch["labels"]).sum().item()
        flor.log("accuracy", correct / 16)
        # EPOCH
"""


@pytest.mark.slow
def test_the_accelerate_loop_records_and_replays_exactly(project):
    pytest.importorskip("accelerate")
    project.write("train.py", ACCELERATE)
    project.commit_all()
    done = project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    assert _status(project, 1) == "finished"
    # The prepared loader's state_dict raises (it is not a stateful loader): said once, by name.
    assert len(_warnings(done.stderr, "`train_dataloader`")) == 1, done.stderr
    text = ACCELERATE.replace("        # EPOCH", '        flor.log("head_norm", model.head.weight.norm().item())')
    text = text.replace("            # STEP", '            flor.log("lr", lr_scheduler.get_last_lr()[0])')
    project.write("train.py", text)
    # `outputs`, `batch`, `loss` are reassigned before any read: they do not block memoization.
    plan = project.flor("replay", "head_norm", "--dry-run").stdout
    assert "memo for head_norm" in plan and "memo 0-2" in plan and "not memoized" not in plan, plan
    project.flor("replay", "head_norm")
    project.flor("replay", "lr")
    project.run("train.py")
    for name, count in (("head_norm", 3), ("lr", 9)):
        fresh = _values(project, name, "record", 2)
        assert len(fresh) == count and _values(project, name, "replay", 1) == fresh, name

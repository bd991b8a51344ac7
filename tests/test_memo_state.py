"""What a checkpoint keeps of a skipped loop's effect beyond the registered objects: mutated
containers, the script's own generators, module globals, unregistered objects with a state_dict,
and what it cannot keep (which then blocks memoization)."""

from __future__ import annotations

import ast
import sqlite3
import sys

import numpy as np
import torch

import pytest

from flor.environment import rng
from flor.checkpoints import variables


def test_mutations_the_syntax_tree_shows_are_found():
    loop = ast.parse(
        "for step in flor.loop('step', data):\n"
        "    history['loss'].append(loss)\n"
        "    stats.count += 1\n"
        "    table[step] = 1\n"
        "    del cache[0]\n"
        "    seen.add(step)\n"
        "    total = total + 1\n"
        "    print(step)\n"
    ).body[0]
    assert variables.mutated_names(loop) == ["history", "stats", "table", "cache", "seen"]
    assert "total" in variables.assigned_names(loop) and "print" not in variables.mutated_names(loop)


def test_a_mutated_container_is_restored_in_place_and_a_rebound_one_is_rebound():
    history = {"loss": [1.0, 2.0]}
    alias = history  # another name for the same object: it must see the restored content
    last = 0.5
    variables.restore(sys._getframe(), {"history": {"loss": [1.0, 2.0, 3.0]}, "last": 0.25}, frozenset({"history"}))
    assert alias is history and alias == {"loss": [1.0, 2.0, 3.0]}
    assert sys._getframe().f_locals["last"] == 0.25 or last == 0.25


def test_generators_of_the_script_are_kept_by_name_and_on_loaders():
    g = torch.Generator().manual_seed(3)
    n = np.random.default_rng(5)
    loader = torch.utils.data.DataLoader(list(range(10)), shuffle=True, generator=torch.Generator().manual_seed(1))
    frame = sys._getframe()
    saved = rng.capture_generators((frame,))
    assert {"g", "n", "loader.generator"} <= set(saved)
    expected = (torch.rand(2, generator=g).tolist(), n.random(), [int(x) for x in loader])
    rng.restore_generators((frame,), saved)
    assert (torch.rand(2, generator=g).tolist(), n.random(), [int(x) for x in loader]) == expected


MODULE_STATE = """
import flor
import torch
import helpers

torch.manual_seed(0)
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)  # stepped per batch, unregistered
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            opt.zero_grad()
            helpers.train_step(model, torch.ones(2, 3))
            opt.step()
            sched.step()
        # BODY
"""

HELPERS = """
counter = 0

def train_step(model, x):
    global counter   # module state the syntax tree shows: kept with the checkpoint
    counter += 1
    model(x).sum().backward()
"""

HIDDEN = """
STATS = {"steps": 0}   # changed through a subscript: no `global`, invisible to the syntax tree

def train_step(model, x):
    STATS["steps"] += 1
    model(x).sum().backward()
"""


def _replayed(project, name):
    with sqlite3.connect(project.db) as connection:
        return [v for (v,) in connection.execute(
            "SELECT value FROM logs WHERE name = ? AND source = 'replay' ORDER BY iteration", (name,))]


def _fresh(project, *names):
    """What a fresh run of today's script logs under each of ``names``."""
    project.run("train.py")
    with sqlite3.connect(project.db) as connection:
        return [[v for (v,) in connection.execute(
            "SELECT value FROM logs WHERE name = ? AND source = 'record' ORDER BY rowid", (name,))] for name in names]


def _setup(project, line, helpers=HELPERS):
    project.write("helpers.py", helpers)
    project.write("train.py", MODULE_STATE)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace("        # BODY", "        " + line + "\n        # BODY"))


@pytest.mark.slow
def test_globals_and_an_unregistered_scheduler_are_kept_so_memoization_is_exact(project):
    _setup(project, 'flor.log("lr", opt.param_groups[0]["lr"]); flor.log("counter", helpers.counter)')
    plan = project.flor("replay", "lr", "counter", "--dry-run").stdout
    assert "memo 0-2" in plan and "not memoized" not in plan
    project.flor("replay", "lr", "counter")
    assert [_replayed(project, "lr"), _replayed(project, "counter")] == _fresh(project, "lr", "counter")


@pytest.mark.slow
def test_state_changed_invisibly_blocks_memoization(project):
    _setup(project, 'flor.log("steps", helpers.STATS["steps"])', HIDDEN)
    plan = project.flor("replay", "steps", "--dry-run").stdout
    assert "exec for steps (memoization blocked: `helpers:STATS` is module state the `step` loop may change" in plan
    project.flor("replay", "steps")
    assert [_replayed(project, "steps")] == _fresh(project, "steps") == [[4, 8, 12]]


@pytest.mark.slow
def test_gradients_are_kept_only_where_the_rest_of_the_body_reads_them(project):
    """They are as large as the model: kept for a step after the skipped loop, not otherwise."""
    import json

    base = """
import flor
import torch
torch.manual_seed(0)
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(2)):
        for micro in flor.loop("micro", range(2)):
            {inner}
        {after}
"""
    cases = {
        "step after the loop": ("model(torch.ones(1, 3)).sum().backward()", "opt.step(); opt.zero_grad()", True),
        "step inside the loop": ("opt.zero_grad(); model(torch.ones(1, 3)).sum().backward(); opt.step()",
                                 'flor.log("w", float(model.weight.sum()))', False),
    }
    for label, (inner, after, expected) in cases.items():
        project.write("train.py", base.format(inner=inner, after=after))
        project.commit_all(label)
        project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
        with sqlite3.connect(project.db) as connection:
            (location,) = connection.execute(
                "SELECT location FROM checkpoints WHERE iteration = 0 ORDER BY rowid DESC LIMIT 1").fetchone()
        manifest = json.loads((project.root / ".flor" / location).read_text())
        assert bool(manifest["grads"]) is expected, label


IDIOMS = """
import flor

class Output:
    def __init__(self, loss):
        self.loss = loss
        self.parts = [loss] * 2000  # too big to keep with a checkpoint

class Model:
    def __init__(self):
        self.w = 1.0
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"]

model = Model()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(3)):
        for step, batch in flor.loop("step", enumerate([1.0, 2.0, 3.0])):
            outputs = Output(model.w * batch)
            loss = outputs.loss
            model.w -= 0.1 * loss
        flor.log("w", model.w)
        # BODY
"""


@pytest.mark.slow
def test_names_the_step_loop_leaves_dead_do_not_block_memoization(project):
    """`outputs` is too big to keep; it blocks only where the rest of the body reads it."""
    project.write("train.py", IDIOMS)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    text = IDIOMS.replace("        # BODY", '        flor.log("w2", model.w * 2)')
    project.write("train.py", text)
    plan = project.flor("replay", "w2", "--dry-run").stdout
    assert "memo for w2" in plan and "memo 0-2" in plan and "not memoized" not in plan, plan
    project.write("train.py", IDIOMS.replace("        # BODY", '        flor.log("last", outputs.loss)'))
    plan = project.flor("replay", "last", "--dry-run").stdout
    # The header says what will happen, and names the variable as code.
    assert ("exec for last (memoization blocked: the `step` loop changes `outputs`, which its checkpoints do not "
            "keep, and it is read after that loop)") in plan, plan
    assert "segment 1: exec 0-2" in plan, plan
    project.flor("replay", "last")
    assert [_replayed(project, "last")] == _fresh(project, "last")


# A registered object of the plainest kind: one float, with state_dict/load_state_dict.
TOY_MODEL = """class Model:
    def __init__(self):
        self.w = 1.0
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"]
"""

FEED = """
import flor

""" + TOY_MODEL + """
class Feed:
    # Like Accelerate's prepared loader: counts its passes, and its state_dict raises.
    def __init__(self):
        self.passes = 0
    def __iter__(self):
        for x in (1.0, 2.0, 3.0):
            yield x * (1 + self.passes)
        self.passes += 1
    def state_dict(self):
        raise AttributeError("'DataLoader' object has no attribute 'dl_state_dict'")
    def load_state_dict(self, state):
        pass

model, feed = Model(), Feed()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(4)):
        for step, x in flor.loop("step", enumerate(feed)):
            model.w -= 0.01 * x
        flor.log("w", model.w)
        # BODY
"""


@pytest.mark.slow
def test_what_only_the_step_loop_reads_again_blocks_only_plans_that_run_it_after_a_skipped_one(project):
    project.write("train.py", FEED)
    project.commit_all()
    done = project.run("train.py", env={"FLOR_CKPT_PERIOD": "2"})  # checkpoints at epochs 0, 2, 3
    assert done.stderr.count("checkpoints leave out `feed`") == 1, done.stderr
    project.write("train.py", FEED.replace("        # BODY", '        flor.log("w2", model.w * 2)'))
    plan = project.flor("replay", "w2", "--dry-run").stdout
    # Memoizing epoch 0 and executing epoch 1 would run the step loop on a stale `feed`.
    assert ("exec for w2 (memoization blocked: the `step` loop changes `feed`, which its checkpoints do not keep "
            "(its state_dict() raised AttributeError") in plan and "segment 1: exec 0-3" in plan, plan
    project.flor("replay", "w2")
    assert [_replayed(project, "w2")] == _fresh(project, "w2")


STRETCH = """
import flor
import time

""" + TOY_MODEL + """
model = Model()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(4)):
        for step in flor.loop("step", range(3)):
            model.w -= 0.01 * (step + epoch)
            flor.log("loss", model.w * 2 + NOISE)
        # BODY
"""


@pytest.mark.slow
def test_a_memoized_iteration_after_a_verified_stretch_is_stored_without_re_executing(project):
    """Checkpoints at epochs 1 and 3: epoch 2 is re-executed from epoch 1's checkpoint and verified
    by its recorded losses; epoch 3 runs its body up to the skipped loop from that verified state,
    then restores its own checkpoint. It was held for a verification point that never comes (a
    memoized epoch logs no recorded value), and the whole stretch was re-executed again."""
    project.write("train.py", STRETCH.replace("NOISE", "0"))
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "2"})
    project.write("train.py", STRETCH.replace("NOISE", "0").replace("        # BODY", '        flor.log("w", model.w)'))
    assert "exec 0, memo 1, exec 2, memo 3" in project.flor("replay", "w", "--dry-run").stdout
    done = project.flor("replay", "w")
    assert "could not be verified" not in done.stderr and "re-executing" not in done.stderr, done.stderr
    assert "2 epoch(s) memoized from their checkpoints" in done.stdout, done.stdout
    assert [_replayed(project, "w")] == _fresh(project, "w")


@pytest.mark.slow
def test_a_memoized_iteration_after_a_drifting_stretch_is_not_stored(project):
    """The same shape, but the re-executed epoch drifts (its loss reads the clock): the memoized
    epoch after it ran part of its body from that state, so it is not stored either."""
    project.write("train.py", STRETCH.replace("NOISE", "time.time() % 1"))
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "2"})
    project.write("train.py", STRETCH.replace("NOISE", "time.time() % 1")
                  .replace("        # BODY", '        flor.log("w", model.w)'))
    done = project.flor("replay", "w", check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    assert 3 not in [i for (i,) in sqlite3.connect(project.db).execute(
        "SELECT iteration FROM logs WHERE name = 'w' AND source = 'replay'")], done.stdout

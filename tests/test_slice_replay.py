"""Replay with a slice, end to end: an MNIST-shaped script (a per-epoch test() pass and a scheduler),
recorded, then replayed with a new statement; every replayed value equals a fresh run's."""

from __future__ import annotations

import sqlite3

import pytest

SCRIPT = """
import flor
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


def shrink(module):
    pass  # SHRINK


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        shrink(self)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


def train(model, optimizer, loader):
    model.train()
    for x, y in flor.loop("step", loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())


def test(model, loader):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x, y in loader:
            total += F.cross_entropy(model(x), y, reduction="sum").item()
    # INSIDE
    flor.log("test_loss", total)
    print("test", total)
    return total


data, labels = torch.randn(64, 8), torch.randint(0, 3, (64,))
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels), batch_size=16, shuffle=True)
test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data[:32], labels[:32]), batch_size=16)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.7)
with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(4)):
        train(model, optimizer, train_loader)
        test(model, test_loader)
        scheduler.step()
        # BODY
"""

WEIGHT_NORM = 'flor.log("wn", sum(p.norm() ** 2 for p in model.parameters()).item())'


def _record(project, script=SCRIPT):
    project.write("train.py", script)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})


def _values(project, name, source):
    with sqlite3.connect(project.db) as connection:
        return [v for (v,) in connection.execute(
            # Replayed values by iteration: a re-executed one is stored after those settled before it.
            "SELECT value FROM logs WHERE name = ? AND source = ? "
            "ORDER BY CASE WHEN source = 'replay' THEN iteration END, rowid", (name, source))]


def _shrinking(condition: str = "not module.training") -> str:
    """SCRIPT whose forward shrinks the weights through a helper the slicer does not follow into
    (a documented assumption), where ``condition`` holds: test() then changes the weights."""
    return SCRIPT.replace("    pass  # SHRINK", f"    if {condition}:\n"
                          "        with torch.no_grad():\n"
                          "            for p in module.parameters():\n"
                          "                p.mul_(0.99)")


def _replay_weight_norm(project, script):
    """Record ``script``, add the weight norm after the epoch body, and replay it (sliced)."""
    _record(project, script)
    project.write("train.py", script.replace("        # BODY", "        " + WEIGHT_NORM))
    assert "skip line" in project.flor("replay", "wn", "--dry-run").stdout
    return project.flor("replay", "wn")


def _fresh(project, name):
    project.run("train.py")
    return _values(project, name, "record")[-4:]


@pytest.mark.slow
def test_an_epoch_statement_reading_the_model_runs_the_slice_and_equals_a_fresh_run(project):
    _record(project)
    project.write("train.py", SCRIPT.replace("        # BODY", "        " + WEIGHT_NORM))
    plan = project.flor("replay", "wn", "--dry-run").stdout
    assert "memo 0-3" in plan
    assert "skip line" in plan and "test(model, test_loader)" in plan.split("skip line")[1], plan
    assert "keep line" in plan and "scheduler.step()" in plan
    done = project.flor("replay", "wn")
    assert "slice: " in done.stdout and "checked against the whole body at epoch 0, 3: equal" in done.stdout, done.stdout
    assert "FELL BACK" not in done.stdout
    replayed = _values(project, "wn", "replay")
    assert len(replayed) == 4
    assert replayed == _fresh(project, "wn")


@pytest.mark.slow
def test_a_statement_inside_the_evaluation_keeps_the_body_whole(project):
    _record(project)
    statement = 'flor.log("mean_loss", total / 32)'
    project.write("train.py", SCRIPT.replace("    # INSIDE", "    " + statement))
    plan = project.flor("replay", "mean_loss", "--dry-run").stdout
    assert "no slice" in plan and "skip line" not in plan, plan
    project.flor("replay", "mean_loss")
    assert _values(project, "mean_loss", "replay") == _fresh(project, "mean_loss")


@pytest.mark.slow
def test_a_wrong_slice_is_caught_by_verification_and_the_run_falls_back(project):
    """The model's forward changes its weights through a helper the slicer does not follow into
    (a documented assumption): skipping test() would give other weight norms."""
    script = _shrinking()
    done = _replay_weight_norm(project, script)
    assert "FELL BACK to full memoization at epoch 0: wn was" in done.stdout, done.stdout
    assert _values(project, "wn", "replay") == _fresh(project, "wn")


@pytest.mark.slow
def test_no_slice_replays_as_before(project):
    _record(project)
    project.write("train.py", SCRIPT.replace("        # BODY", "        " + WEIGHT_NORM))
    assert "slice" not in project.flor("replay", "wn", "--dry-run", "--no-slice").stdout
    done = project.flor("replay", "wn", "--no-slice")
    assert "slice:" not in done.stdout
    assert _values(project, "wn", "replay") == _fresh(project, "wn")


SLOW_NORM = '''

def slow_norm(model):
    a = torch.ones(600, 600)
    for _ in range(100):  # the statement's own work (about 0.9 s): most of the body, and kept
        a = a @ a / 600.0
    return sum(p.norm() ** 2 for p in model.parameters()).item() + 0.0 * a[0, 0].item()


data, labels ='''


@pytest.mark.slow
def test_a_slice_that_keeps_most_of_the_body_stops_after_its_first_check(project):
    """Each check runs the slice, then the whole body: where the slice keeps nearly all of it
    (nanoGPT's evaluation statement: 14.0 s sliced against 11.2 s with --no-slice), the first
    check's timings stop it, and the other iterations run whole; every value exact."""
    script = SCRIPT.replace("\n\ndata, labels =", SLOW_NORM, 1)
    _record(project, script)
    project.write("train.py", script.replace("        # BODY", '        flor.log("wn", slow_norm(model))'))
    assert "skip line" in project.flor("replay", "wn", "--dry-run").stdout
    done = project.flor("replay", "wn")
    assert "checked against the whole body at epoch 0: equal" in done.stdout, done.stdout
    assert "the slice did not pay (at epoch 0 it took" in done.stdout, done.stdout
    assert "FELL BACK" not in done.stdout
    assert _values(project, "wn", "replay") == _fresh(project, "wn")


BREAK_AT_2 = "        if epoch + 1 >= 3:\n            break"


@pytest.mark.slow
def test_a_kept_break_on_the_loop_counter_slices_and_both_passes_end_the_loop_where_the_recording_did(project):
    script = SCRIPT.replace("        # BODY", "        # BODY\n" + BREAK_AT_2)
    _record(project, script)
    project.write("train.py", script.replace("        # BODY", "        " + WEIGHT_NORM))
    plan = project.flor("replay", "wn", "--dry-run").stdout
    assert "memo 0-2" in plan, plan
    assert "test(model, test_loader)" in plan.split("skip line")[1], plan
    assert "if epoch + 1 >= 3:  -- may end the loop (break at line" in plan, plan
    done = project.flor("replay", "wn")
    assert "checked against the whole body at epoch 0, 2: equal (both ended the loop at epoch 2)" in done.stdout, \
        done.stdout
    assert "FELL BACK" not in done.stdout
    replayed = _values(project, "wn", "replay")
    project.run("train.py")
    assert replayed == _values(project, "wn", "record")[-3:] and len(replayed) == 3


@pytest.mark.slow
def test_a_slice_that_would_end_the_loop_elsewhere_is_caught_and_the_run_falls_back(project):
    """The break reads the parameters, which test() shrinks through a helper the slicer does not
    follow into: the slice would not end the loop where the whole body does. The new statement's
    values agree, so only the comparison of where the loop ended catches it."""
    script = _shrinking()
    script = script.replace("lr=0.1", "lr=1e-9").replace("model = Net()\n", "model = Net()\nstart = sum(p.abs().sum() for p in model.parameters()).item()\n")
    script = script.replace("        # BODY", "        # BODY\n"
                            "        if sum(p.abs().sum() for p in model.parameters()).item() < start * 0.95:\n"
                            "            break")
    _record(project, script)
    new = 'flor.log("lr", optimizer.param_groups[0]["lr"])'
    project.write("train.py", script.replace("        # BODY", "        " + new))
    plan = project.flor("replay", "lr", "--dry-run").stdout
    assert "memo 0-2" in plan and "test(model, test_loader)" in plan.split("skip line")[1], plan
    done = project.flor("replay", "lr")
    assert "FELL BACK to full memoization at epoch 2: the slice did not end the loop at epoch 2 and the full body did" \
        in done.stdout, done.stdout
    replayed = _values(project, "lr", "replay")
    project.run("train.py")
    assert replayed == _values(project, "lr", "record")[-3:] and len(replayed) == 3


# The optimizer's state is read only by a statement the slice skips (it logs a recorded value
# before the nested loop): an iteration that runs the slice only need not restore it, but the
# whole body of the last verified iteration reads it, so the iteration before must restore it.
ADAM = SCRIPT.replace("optimizer = torch.optim.SGD(model.parameters(), lr=0.1)",
                      "optimizer = torch.optim.Adam(model.parameters(), lr=0.01)") \
    .replace("scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.7)\n", "") \
    .replace("range(4)", "range(6)").replace("        scheduler.step()\n", "") \
    .replace("        train(model, optimizer, train_loader)\n",
             "        flor.log(\"adam_steps\", sum(float(s[\"step\"]) for s in optimizer.state.values()))\n"
             "        train(model, optimizer, train_loader)\n")


@pytest.mark.slow
def test_a_slice_reading_only_the_model_leaves_the_optimizer_unrestored_and_every_value_is_exact(project):
    _record(project, ADAM)
    project.write("train.py", ADAM.replace("        # BODY", "        " + WEIGHT_NORM))
    plan = project.flor("replay", "wn", "--dry-run").stdout
    assert "memo 0-5" in plan and "not restored: `optimizer`" in plan, plan
    done = project.flor("replay", "wn")
    out = done.stdout
    assert "3 of them did not restore `optimizer`" in out, out  # epochs 1-3 (4 is before the verified 5)
    assert "checked against the whole body at epoch 0, 5: equal" in out, out
    assert "FELL BACK" not in out and "re-executing" not in out and "drift" not in out, out
    sliced = _values(project, "wn", "replay")
    project.flor("replay", "wn", "--no-slice", "--force")
    assert _values(project, "wn", "replay")[-6:] == sliced and len(sliced) == 6
    project.run("train.py")
    assert _values(project, "wn", "record")[-6:] == sliced


@pytest.mark.slow
def test_a_slice_that_reads_the_optimizer_restores_it(project):
    _record(project)  # scheduler.step() is kept: it reads and writes the optimizer
    project.write("train.py", SCRIPT.replace("        # BODY", "        " + WEIGHT_NORM))
    plan = project.flor("replay", "wn", "--dry-run").stdout
    assert any("keep line" in line and "scheduler.step()" in line for line in plan.splitlines()), plan
    assert "not restored" not in plan, plan
    done = project.flor("replay", "wn")
    assert "did not restore" not in done.stdout and "checked against the whole body" in done.stdout, done.stdout


# The optimizer reached only through a list filled before the loop: its lr, read after the
# scheduler's step, changes at epoch 3 (logged from epoch 2 on). The slice must keep the step and
# restore the optimizer; it did neither (the list was a root of its own), and the slice-only epochs
# 2-3 logged the lr of epoch 0, between two verified epochs that agreed.
HELD = SCRIPT.replace("scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.7)",
                      "scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3], gamma=0.1)\n"
                      "holders = []\nholders.append(optimizer)") \
    .replace("range(4)", "range(6)")


@pytest.mark.slow
def test_an_object_read_through_a_list_filled_before_the_loop_is_restored_and_every_value_is_exact(project):
    _record(project, HELD)
    project.write("train.py", HELD.replace("        # BODY", '        flor.log("lr", holders[0].param_groups[0]["lr"])'))
    plan = project.flor("replay", "lr", "--dry-run").stdout
    assert "memo 0-5" in plan and "not restored" not in plan, plan
    project.flor("replay", "lr")
    replayed = _values(project, "lr", "replay")
    project.run("train.py")
    assert replayed == _values(project, "lr", "record")[-6:] == [0.1, 0.1] + [0.1 * 0.1] * 4, replayed


@pytest.mark.slow
def test_a_slice_found_wrong_only_at_a_later_check_stores_nothing_of_the_iterations_it_ran(project):
    """The same unseen helper, from epoch 2 on only: the first check (epoch 0) agrees, epochs 1-2
    run the slice alone, and the last check (epoch 3) finds it wrong. Epoch 2's slice value was
    wrong and used to be stored; the slice-only epochs' values now wait for the next check, and
    are dropped and re-executed when it disagrees."""
    script = _shrinking("not module.training and epoch >= 2")
    done = _replay_weight_norm(project, script)
    assert "FELL BACK to full memoization at epoch 3" in done.stdout, done.stdout
    said = done.stdout + done.stderr
    assert "epoch 1, 2 ran only the slice, which a later check found wrong: nothing of them stored" in said, said
    assert _values(project, "wn", "replay") == _fresh(project, "wn")

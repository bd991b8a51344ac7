"""Hindsight statements observe, never perturb (issue 24): observer isolation, hindsight blocks,
and the explanation of a drift that remains."""

from __future__ import annotations

import ast
import random
import shutil
import sqlite3

import pytest

from flor.replay.isolation import Effects, Group, Observer, ObserverError, groups_of, training_call, wrap
from flor.replay.propagation import Propagator
from tests.realworld.truth import __file__ as TRUTH_FILE

TRAIN = """
import torch, torch.nn as nn
import flor

torch.manual_seed(0)
X = torch.randn(192, 10)
Y = (X[:, 0] > 0).long()
net = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
opt = torch.optim.SGD(net.parameters(), lr=0.1)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=32, shuffle=True)


def evaluate(model, data):
    model.eval()
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum().item() for x, y in data) / len(data.dataset)


with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
        net.train()
        for x, y in flor.loop("step", loader):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            # STEP
            flor.log("loss", loss.item())
        # EPOCH
        flor.log("w", net[0].weight.norm().item())
"""

STEP_FORWARD = 'flor.log("train_acc", (net(x).argmax(1) == y).float().mean().item())'
VAL_BLOCK = [
    "vsum, vn = 0.0, 0",
    "for xb, yb in loader:",
    '    vsum += nn.functional.cross_entropy(net(xb), yb, reduction="sum").item()',
    "    vn += len(yb)",
    'flor.log("val_loss", vsum / vn)',
]
EVAL_HELPER = 'flor.log("train_set_acc", evaluate(net, loader))'
TRUTH = 'with __import__("_flor_truth").observed():'


def _with(text: str, lines: list[str], marker: str, truth: bool = False) -> str:
    indent = "            " if marker == "STEP" else "        "
    body = [("    " if truth else "") + line for line in lines]
    if truth:
        body.insert(0, TRUTH)
    return text.replace(f"{indent}# {marker}\n", "".join(f"{indent}{line}\n" for line in body), 1)


def _values(db, name, source):
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT c.parent_iteration, l.iteration, l.value FROM logs l LEFT JOIN contexts c ON c.ctx_id = l.ctx_id "
            "WHERE l.name = ? AND l.source = ? ORDER BY 1, 2", (name, source)).fetchall()
    return [(a, b, float(v)) for a, b, v in rows]


# -- text ------------------------------------------------------------------------------------------


def test_wrap_keeps_lines_of_a_simple_statement_and_indents_a_block():
    source = "for i in range(3):\n    a = i\n    flor.log('a', a)\n    s = '''x\ny'''\n    if a:\n        flor.log('b', s)\n"
    one = wrap(source, [Group(3, 3)])
    assert one.splitlines()[2] == "    with __flor_observe__(): flor.log('a', a)"
    assert len(one.splitlines()) == len(source.splitlines())
    block = wrap(source, [Group(4, 7)])
    assert "    with __flor_observe__():\n        s = '''x\ny'''\n        if a:\n            flor.log('b', s)\n" in block
    tree = ast.parse(block)
    assert sum(isinstance(n, ast.With) for n in ast.walk(tree)) == 1


@pytest.mark.slow
def test_training_calls_are_named():
    assert "backward" in training_call("flor.log('g', loss.backward())")
    assert "step" in training_call("opt.step()\n")
    assert training_call("flor.log('lr', sched.get_last_lr()[0])") == ""


def test_a_hindsight_block_is_found_and_placed_with_its_log():
    old = "import flor\nfor e in flor.loop('e', range(2)):\n    w = e * 2\n    flor.log('w', w)\n"
    today = ("import flor\nfor e in flor.loop('e', range(2)):\n    w = e * 2\n    flor.log('w', w)\n"
             "    total = 0\n    for k in range(e):\n        total += k\n    flor.log('total', total)\n")
    p = Propagator(today, old)
    statements = p.new_statements()
    assert [s.names for s in statements] == [[], [], ["total"]]
    assert {s.block for s in statements} == {statements[-1].block}
    assert statements[0].feeds == ["total"]
    placement = p.place(statements)
    assert placement.ok, placement.reason
    (group,) = groups_of(placement.inserted)
    wrapped = wrap(placement.source, [group])
    namespace: dict = {"flor": type("F", (), {"loop": staticmethod(lambda n, it: it), "log": staticmethod(print)}),
                       "__flor_observe__": lambda: Observer(dict, list, Effects())}
    exec(compile(wrapped, "<t>", "exec"), namespace)


def test_a_line_not_right_before_the_log_is_named_in_the_refusal():
    old = "import flor\nfor e in flor.loop('e', range(2)):\n    w = e * 2\n    flor.log('w', w)\n"
    today = ("import flor\nfor e in flor.loop('e', range(2)):\n    total = e + 1\n    w = e * 2\n"
             "    flor.log('w', w)\n    flor.log('total', total)\n")
    placement = Propagator(today, old).place()
    assert not placement.ok
    assert "`total` is not defined in this version" in placement.reason
    assert "right before the flor.log" in placement.reason


# -- the observer, in process ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_observer_puts_back_random_state_modes_and_buffers_and_refuses_parameter_changes():
    import numpy as np
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    effects = Effects()
    with Observer(lambda: {"model": net}, list, effects):
        net(torch.randn(8, 4))
        random.random()
        np.random.rand()
        net.eval()
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert {"python", "numpy", "torch"} <= effects.drew
    assert "model.1.running_mean" in effects.buffers and "model" in effects.modes
    with pytest.raises(ObserverError, match="model.0.weight"):
        with Observer(lambda: {"model": net}, list, Effects()):
            with torch.no_grad():
                net[0].weight.mul_(1.0)
    with pytest.raises(ObserverError, match="gradient of `model.0"):
        with Observer(lambda: {"model": net}, list, Effects()):
            net(torch.randn(8, 4)).sum().backward()


# -- replay, end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One run of TRAIN (checkpoint every epoch), and the ground truth: a fresh run of today's
    script with every new statement inside tests/realworld/truth.py's observer."""
    from tests.conftest import Project, clean_env, git

    root = tmp_path_factory.mktemp("iso") / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    project = Project(root)
    project.write("train.py", TRAIN)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    truth = tmp_path_factory.mktemp("truth") / "proj"
    shutil.copytree(root, truth)
    shutil.rmtree(truth / ".flor")
    # Each statement (a block counts as one) is its own observer, as replay runs it.
    text = _with(_with(TRAIN, [STEP_FORWARD], "STEP", truth=True), VAL_BLOCK, "EPOCH", truth=True)
    text = text.replace('        flor.log("w"', f'        {TRUTH}\n            {EVAL_HELPER}\n        flor.log("w"', 1)
    (truth / "train.py").write_text(text)
    shutil.copy(TRUTH_FILE, truth / "_flor_truth.py")
    assert Project(truth).run("train.py", env=clean_env()).returncode == 0
    return project, truth / ".flor" / "flor.db"


@pytest.mark.slow
@pytest.mark.parametrize("reexec", [False, True], ids=["memoized", "re-executed"])
def test_perturbing_statements_replay_equal_to_the_isolated_truth(recorded, tmp_path, reexec):
    from tests.conftest import Project

    project, truth = recorded
    root = tmp_path / "proj"
    shutil.copytree(project.root, root)
    copy = Project(root)
    copy.write("train.py", _with(_with(TRAIN, [STEP_FORWARD], "STEP"), VAL_BLOCK + [EVAL_HELPER], "EPOCH"))
    assert (copy.root / "train.py").read_text().count("flor.log(") == 5
    if reexec:
        with sqlite3.connect(copy.db) as connection:
            connection.execute("DELETE FROM checkpoints")
    done = copy.flor("replay", "train_acc", "val_loss", "train_set_acc")
    assert "DRIFTED" not in done.stdout + done.stderr
    for name in ("train_acc", "val_loss", "train_set_acc"):
        want = _values(truth, name, "record")
        assert want and _values(copy.db, name, "replay") == want, name


@pytest.mark.slow
def test_a_drift_that_remains_is_explained(recorded, tmp_path):
    from tests.conftest import Project

    project, _ = recorded
    root = tmp_path / "proj"
    shutil.copytree(project.root, root)
    copy = Project(root)
    # Draws from torch (put back), and changes the optimizer's learning rate (not put back).
    statement = 'flor.log("odd", torch.rand(1).item() + (opt.param_groups[0].update(lr=0.05) is None))'
    copy.write("train.py", _with(TRAIN, [statement], "STEP"))
    done = copy.flor("replay", "odd", check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 4, said
    assert "first drift: loss at epoch 0, step 2" in said, said
    assert "drew random numbers from torch" in said and "flor put that back" in said, said


@pytest.mark.slow
def test_a_statement_that_trains_is_refused(recorded, tmp_path):
    from tests.conftest import Project

    project, _ = recorded
    root = tmp_path / "proj"
    shutil.copytree(project.root, root)
    copy = Project(root)
    copy.write("train.py", _with(TRAIN, ['flor.log("g", net(x).sum().backward())'], "STEP"))
    done = copy.flor("replay", "g", check=False)
    assert done.returncode == 3
    assert "backward()" in done.stdout + done.stderr and "may not train it" in done.stdout + done.stderr

"""The slicer (flor/replay/slice.py) on the shapes that make slicing hard: each is sliced
correctly or kept whole, never wrong. AST only: no training, no process."""

import textwrap

import pytest

from flor.replay.slice import slice_body

HEAD = '''
import flor
import torch
import torch.nn as nn
from helpers import evaluate_elsewhere

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)

def train_epoch(model, optimizer, loader):
    model.train()
    for x in flor.loop("step", loader):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

def evaluate(model, loader):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x in loader:
            total += model(x).sum().item()
    print("eval", total)
    flor.log("eval_total", total)
    return total

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
loader = [torch.ones(3, 4)] * 2
test_loader = [torch.ones(3, 4)]
'''

WEIGHT_NORM = 'flor.log("wn", sum(p.norm() for p in model.parameters()).item())'


def plan(body: str, head: str = HEAD, names=("wn",)):
    source = head + "with flor.checkpointing(model=model, optimizer=optimizer):\n" \
        "    for epoch in flor.loop(\"epoch\", range(3)):\n" + textwrap.indent(textwrap.dedent(body), "        ")
    return slice_body(source, set(names)), source


def kept(result) -> list[str]:
    return [s.text for s in result.statements if s.kept]


def skipped(result) -> list[str]:
    return [s.text for s in result.statements if not s.kept]


def test_an_epoch_statement_reading_the_parameters_skips_the_evaluation_and_its_print():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        val = evaluate(model, test_loader)
        print("epoch", epoch, val)
        scheduler.step()
        {WEIGHT_NORM}
    """)
    assert not result.whole
    assert skipped(result) == ["val = evaluate(model, test_loader)", 'print("epoch", epoch, val)']
    assert "scheduler.step()" in kept(result) and "train_epoch(model, optimizer, loader)" in kept(result)
    why = {s.text: s.why for s in result.statements}
    assert "restored" in why["train_epoch(model, optimizer, loader)"]
    assert "(it prints)" in why['print("epoch", epoch, val)']
    assert "not compared" in why["val = evaluate(model, test_loader)"]  # a recorded value
    assert "scheduler" in result.objects  # changed by the slice, not registered: snapshotted to verify
    text = "\n".join(result.describe())
    assert "skip line" in text and "keep line" in text


def test_a_scheduler_stepped_on_the_evaluations_loss_keeps_the_evaluation():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        val_loss = evaluate(model, test_loader)
        scheduler.step(val_loss)
        {WEIGHT_NORM}
    """)
    assert result.whole or "val_loss = evaluate(model, test_loader)" in kept(result)


def test_aliasing_a_mode_switch_through_another_name_is_kept_for_a_statement_that_runs_the_model():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        m = model
        m.eval()
        flor.log("out", model(test_loader[0]).sum().item())
    """, names=("out",))
    assert result.whole or {"m = model", "m.eval()"} <= set(kept(result))


def test_an_alias_made_before_the_loop_is_followed():
    head = HEAD + "m = model\n"
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        m.eval()
        flor.log("out", model(test_loader[0]).sum().item())
    """, head=head, names=("out",))
    assert result.whole or "m.eval()" in kept(result)


def test_eval_and_train_around_the_evaluation_kept_when_the_statement_runs_the_model():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        model.eval()
        acc = evaluate(model, test_loader)
        model.train()
        flor.log("probe", model(test_loader[0]).sum().item())
    """, names=("probe",))
    assert result.whole or {"model.eval()", "acc = evaluate(model, test_loader)", "model.train()"} <= set(kept(result))


def test_eval_and_train_around_the_evaluation_skipped_when_the_statement_reads_only_parameters():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        model.eval()
        acc = evaluate(model, test_loader)
        model.train()
        {WEIGHT_NORM}
    """)
    assert not result.whole
    assert set(skipped(result)) == {"model.eval()", "acc = evaluate(model, test_loader)", "model.train()"}


def test_an_early_break_on_a_metric_is_kept_with_what_computes_the_metric():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        print("epoch", epoch, acc)
        {WEIGHT_NORM}
        if acc > 0.9:
            break
    """)
    assert not result.whole
    assert {"if acc > 0.9:", "acc = evaluate(model, test_loader)"} <= set(kept(result))
    assert skipped(result) == ['print("epoch", epoch, acc)']
    why = {s.text: s.why for s in result.statements}
    assert "may end the loop (break at line" in why["if acc > 0.9:"]
    assert len(result.breaks) == 1 and result.breaks[0][0] == result.statements[-1].line + 1


def test_a_break_on_the_loop_counter_keeps_only_itself_and_the_evaluation_is_skipped():
    """nanoGPT's `if iter_num > max_iters: break`: the condition reads what no statement writes."""
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        print(acc)
        {WEIGHT_NORM}
        if epoch + 1 > 2:
            break
    """)
    assert not result.whole
    assert skipped(result) == ["acc = evaluate(model, test_loader)", "print(acc)"]
    assert "if epoch + 1 > 2:" in kept(result)


def test_a_break_in_an_elif_else_chain_and_a_loop_carried_condition():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        print(acc)
        {WEIGHT_NORM}
        if epoch == 0:
            pass
        elif stale > 3:
            break
        else:
            stale = stale + 1 if acc < best else 0
        best = max(best, acc)
    """, head=HEAD + "stale = 0\nbest = 0.0\n")
    assert not result.whole
    # the condition reads `stale`, written (loop-carried) from `acc` and `best`: all kept
    assert {"acc = evaluate(model, test_loader)", "best = max(best, acc)", "if epoch == 0:"} <= set(kept(result))
    assert skipped(result) == ["print(acc)"]
    assert len(result.breaks) == 1


def test_a_continue_at_the_bodys_level_is_kept_and_needs_no_rewriting():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        if epoch == 1:
            continue
        {WEIGHT_NORM}
    """)
    assert not result.whole
    assert "if epoch == 1:" in kept(result) and skipped(result) == ["acc = evaluate(model, test_loader)"]
    assert "may end the iteration (continue" in {s.text: s.why for s in result.statements}["if epoch == 1:"]
    assert result.breaks == ()


def test_a_break_of_a_loop_inside_the_body_does_not_stop_slicing():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        for x in test_loader:
            if x.sum() > 0:
                break
        while True:
            break
        {WEIGHT_NORM}
    """)
    assert not result.whole
    assert "acc = evaluate(model, test_loader)" in skipped(result)
    assert result.breaks == ()


def test_a_break_inside_try_or_with_keeps_the_body_whole():
    for wrapper in ("try:\n            if acc > 0.9:\n                break\n        except ValueError:\n            pass",
                    "with torch.no_grad():\n            if acc > 0.9:\n                break"):
        result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        {WEIGHT_NORM}
        {wrapper}
    """)
        assert result.whole and "break inside try/with" in result.whole, wrapper


def test_a_break_whose_condition_calls_code_flor_cannot_see_keeps_what_that_code_reaches():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        {WEIGHT_NORM}
        if evaluate_elsewhere(model):
            break
    """)
    assert result.whole or "acc = evaluate(model, test_loader)" in kept(result)


def test_return_keeps_the_body_whole():
    head = HEAD + "def main():\n"
    source = head + "    with flor.checkpointing(model=model, optimizer=optimizer):\n" \
        "        for epoch in flor.loop(\"epoch\", range(3)):\n" \
        "            train_epoch(model, optimizer, loader)\n" \
        "            if epoch == 1:\n                return\n" \
        f"            {WEIGHT_NORM}\n"
    result = slice_body(source, {"wn"})
    assert result.whole


def test_a_statement_in_a_branch_taken_by_a_metric_keeps_what_computes_the_metric():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        acc = evaluate(model, test_loader)
        print(acc)
        if acc > 0.5:
            {WEIGHT_NORM}
    """)
    assert not result.whole
    assert "acc = evaluate(model, test_loader)" in kept(result)
    assert skipped(result) == ["print(acc)"]


def test_a_helper_that_mutates_a_global_is_kept_when_the_statement_reads_the_global():
    head = HEAD + '''
counter = 0
history = []

def bump():
    global counter
    counter += 1

def remember(value):
    history.append(value)
'''
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        bump()
        remember(epoch)
        flor.log("c", counter)
    """, head=head, names=("c",))
    assert not result.whole
    assert "bump()" in kept(result) and "remember(epoch)" in skipped(result)
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        bump()
        remember(epoch)
        flor.log("h", len(history))
    """, head=head, names=("h",))
    assert "remember(epoch)" in kept(result) and "bump()" in skipped(result)


def test_a_generator_advanced_in_the_body_is_kept_when_its_items_are_read():
    head = HEAD + "batches = iter(test_loader * 10)\n"
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        batch = next(batches)
        flor.log("b", batch.sum().item())
    """, head=head, names=("b",))
    assert "batch = next(batches)" in kept(result)
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        batch = next(batches)
        {WEIGHT_NORM}
    """, head=head)
    assert "batch = next(batches)" in skipped(result)


def test_a_generator_the_nested_loop_reads_is_kept():
    head = HEAD + "batches = iter(loader * 10)\n"
    result, _ = plan(f"""
        train_epoch(model, optimizer, batches)
        extra = next(batches)
        {WEIGHT_NORM}
    """, head=head)
    assert result.whole or "extra = next(batches)" in kept(result)


def test_code_flor_cannot_see_reads_and_writes_what_it_is_given():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        evaluate_elsewhere(model)
        {WEIGHT_NORM}
    """)
    assert result.whole or "evaluate_elsewhere(model)" in kept(result)


def test_a_statement_inside_a_helper_keeps_its_call():
    source = HEAD.replace('    print("eval", total)\n', '    print("eval", total)\n    flor.log("inside", total)\n')
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        scheduler.step()
    """, head=source, names=("inside",))
    assert result.whole or "evaluate(model, test_loader)" in kept(result)


def test_dynamic_code_in_the_body_keeps_it_whole():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        exec("x = 1")
        {WEIGHT_NORM}
    """)
    assert result.whole and "exec" in result.whole


def test_a_loop_carried_name_keeps_its_writer_wherever_it_stands():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        flor.log("best", best)
        print("epoch", epoch)
        best = evaluate(model, test_loader)
    """, head=HEAD + "best = 0.0\n", names=("best",))
    assert "best = evaluate(model, test_loader)" in kept(result)
    assert "best" in result.names  # undone before a verified iteration's full pass


def test_a_model_whose_forward_changes_itself_is_not_trusted_with_its_parameters():
    head = HEAD.replace("        return self.fc(x)", "        self.fc.weight.data.mul_(0.5)\n        return self.fc(x)")
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        {WEIGHT_NORM}
    """, head=head)
    assert result.whole or "evaluate(model, test_loader)" in kept(result)


def test_the_worker_compiles_skipped_statements_behind_the_guard_with_their_line_numbers():
    import builtins

    import pytest

    from flor.errors import ReplayError
    from flor.replay.slice_run import GUARD, compile_sliced

    source = "ran = []\nfor i in range(2):\n    ran.append(('kept', i))\n    ran.append(('skipped', i))\n    x = 1 / 0 if i > 5 else 0\n"
    code = compile_sliced(source, "train.py", [[4, 4]])
    for full in (False, True):
        setattr(builtins, GUARD, lambda full=full: full)
        try:
            scope: dict = {}
            exec(code, scope)
        finally:
            delattr(builtins, GUARD)
        assert [kind for kind, _ in scope["ran"]] == (["kept", "skipped"] * 2 if full else ["kept", "kept"])
    broken = compile_sliced("for i in range(1):\n    pass\n    y = 1 / 0\n", "train.py", [[3, 4]])
    setattr(builtins, GUARD, lambda: True)
    try:
        with pytest.raises(ZeroDivisionError) as caught:
            exec(broken, {})
    finally:
        delattr(builtins, GUARD)
    assert caught.traceback[-1].lineno == 2  # 0-based: the guarded statement is still line 3 of train.py
    with pytest.raises(ReplayError, match="--no-slice"):
        compile_sliced(source, "train.py", [[9, 4]])


def test_the_worker_asks_before_a_kept_break_and_a_slice_pass_turns_it_into_continue():
    import builtins

    from flor.replay.slice_run import ENDS, GUARD, compile_sliced

    source = ("ran = []\nfor i in range(5):\n    ran.append(i)\n    if i == 1:\n        break\n"
              "    for j in range(3):\n        break\n    ran.append(-i)\n")
    code = compile_sliced(source, "train.py", [[8, 4]], [[5, 8]])
    for ends, expected in ((False, [0, 0, 1]), (True, [0, 0, 1, 2, -2, 3, -3, 4, -4])):
        setattr(builtins, GUARD, lambda: True)
        setattr(builtins, ENDS, lambda ends=ends: ends)
        try:
            scope: dict = {}
            exec(code, scope)
        finally:
            delattr(builtins, GUARD)
            delattr(builtins, ENDS)
        assert scope["ran"] == expected  # the inner loop's break is its own, never asked


def test_a_negative_verify_slice_is_refused_in_one_line(in_project):
    import pytest

    from flor.errors import UsageError
    from flor.replay.session import Session

    with pytest.raises(UsageError, match="--verify-slice must be 0 or more"):
        Session([], verify_slice=-1)


def test_a_function_of_a_project_module_is_code_flor_cannot_see():
    head = HEAD.replace("from helpers import evaluate_elsewhere", "from helpers import evaluate_elsewhere\nimport helpers")
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        helpers.bump()
        print(epoch)
        flor.log("c", helpers.counter)
    """, head=head, names=("c",))
    assert not result.whole
    assert "helpers.bump()" in kept(result) and skipped(result) == ["print(epoch)"]


def test_the_verified_iterations_are_the_first_and_spread_to_the_last():
    from flor.replay.slice_run import _sample

    assert _sample([3, 4, 5, 6, 7], 2) == {3, 7}
    assert _sample([3, 4, 5, 6, 7], 3) == {3, 5, 7}
    assert _sample([3, 4, 5], 1) == {3} and _sample([3], 4) == {3} and _sample([3, 4], 0) == set()
    assert _sample([0, 1], 9) == {0, 1}


def test_a_slice_only_iteration_ending_the_loop_before_the_recording_did_stops_the_replay():
    import builtins

    import pytest

    from flor.errors import ReplayError
    from flor.replay.slice_run import ENDS, GUARD, SliceRun

    class Run:
        outer_name = "epoch"

    try:
        run = SliceRun(Run(), [[9, 8]], [0, 1, 2, 3], [], [], verify=0, breaks=True, last=3)
        assert getattr(builtins, ENDS)() is False  # not slicing: the script's own break
        run.slicing, run.index = True, 3
        assert run.slice_ends() is False  # where the recording ended: it ends here too
        run.index, run.checking = 1, True
        assert run.slice_ends() is True and run.ended == 1  # checked: continue, then the whole body
        run.checking = False
        with pytest.raises(ReplayError, match="ended the loop at epoch 1, where the recording went on.*--no-slice"):
            run.slice_ends()
    finally:
        for name in (GUARD, ENDS):
            if hasattr(builtins, name):
                delattr(builtins, name)


PROJECT_MODEL = '''
import torch
import torch.nn as nn


class GPT(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(n, n)

    def forward(self, x):
        return self.fc(x)

    def configure_optimizers(self, lr):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr)
'''

NANOGPT_HEAD = '''
import os
import time
import flor
import torch
from model import GPT

n = 4
out_dir = "out"
model = GPT(n)
optimizer = model.configure_optimizers(1e-3)
loader = [torch.ones(3, 4)] * 2

def train_epoch(model, optimizer, loader):
    for x in flor.loop("step", loader):
        model(x).sum().backward()

@torch.no_grad()
def estimate_loss():
    model.eval()
    out = model(torch.randn(2, n)).sum()
    model.train()
    return out
'''

NANOGPT_BODY = f"""
    for param_group in optimizer.param_groups:
        param_group["lr"] = 0.1
    if epoch % 2 == 0:
        losses = estimate_loss()
        print(losses)
        torch.save({{"model": model.state_dict(), "optimizer": optimizer.state_dict()}}, os.path.join(out_dir, "c.pt"))
    train_epoch(model, optimizer, loader)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    {WEIGHT_NORM}
    t1 = time.time()
    if epoch + 1 > n:
        break
"""


def test_a_model_class_of_the_projects_own_module_is_read_and_its_evaluation_skipped():
    """nanoGPT's shape: GPT from model.py, the optimizer from its configure_optimizers, an eval
    branch drawing random batches and torch.save-ing state dicts, a clip, a break on the counter."""
    import ast

    result, _ = plan(NANOGPT_BODY, head=NANOGPT_HEAD)
    # without the project's module: GPT is code flor cannot see, and the eval branch stays
    assert "if epoch % 2 == 0:" in kept(result)
    source = NANOGPT_HEAD + "with flor.checkpointing(model=model, optimizer=optimizer):\n" \
        "    for epoch in flor.loop(\"epoch\", range(9)):\n" + textwrap.indent(textwrap.dedent(NANOGPT_BODY), "        ")
    read = lambda name: ast.parse(PROJECT_MODEL) if name == "model" else None
    result = slice_body(source, {"wn"}, read_module=read)
    assert not result.whole
    assert set(skipped(result)) == {"if epoch % 2 == 0:", "t1 = time.time()"}
    assert {"for param_group in optimizer.param_groups:", "optimizer.step()", "if epoch + 1 > n:"} <= set(kept(result))
    # a forward that changes the model's own weights: the evaluation is kept again
    changing = PROJECT_MODEL.replace("        return self.fc(x)", "        self.fc.weight.data.mul_(0.9)\n        return self.fc(x)")
    result = slice_body(source, {"wn"}, read_module=lambda name: ast.parse(changing))
    assert "if epoch % 2 == 0:" in kept(result)
    # a statement reading what the evaluation computes keeps it
    result = slice_body(source.replace(WEIGHT_NORM, 'flor.log("l", losses.item())'), {"l"}, read_module=read)
    assert "if epoch % 2 == 0:" in kept(result)


def test_an_in_place_library_call_and_a_shuffle_change_their_arguments_only():
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        noise = torch.randn(3)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        {WEIGHT_NORM}
    """)
    assert skipped(result) == ["noise = torch.randn(3)"]  # draws: the world, which nothing kept reads
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        order = list(range(4))
        random.shuffle(order)
        flor.log("o", order[0])
    """, head=HEAD + "import random\n", names=("o",))
    assert "random.shuffle(order)" in kept(result)


def test_putting_back_keeps_the_models_parameters_in_a_param_group_and_restores_the_registered_objects():
    """nanoGPT's `for param_group in optimizer.param_groups: param_group["lr"] = lr` leaves
    `param_group` naming the optimizer's own dict: what verification puts back must keep the
    parameters it holds (a deep copy there would cut the optimizer off the model)."""
    import sys

    torch = pytest.importorskip("torch")

    from flor.replay.slice_run import SliceRun

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    param_group = optimizer.param_groups[0]

    class Manager:
        objects = {"model": model, "optimizer": optimizer}

    class Run:
        outer_frame = None
        managers = [Manager()]

    Run.outer_frame = sys._getframe()  # this function's frame: `param_group` is one of its names

    run = SliceRun(Run(), [], [0], [], ["param_group"], verify=2)
    saved, why = run._snapshot()
    assert saved is not None and not why
    before = model.weight.detach().clone()
    param_group["lr"] = 0.5
    with torch.no_grad():  # the slice pass's optimizer step; statements before the nested loop
        model.weight.add_(1.0)  # (nanoGPT's eval branch) read the registered objects in the full pass
    model.eval()
    assert run._put_back(saved) == ""
    # (load_state_dict makes the optimizer new group dicts, as every checkpoint restore does)
    assert param_group["lr"] == 0.1 and optimizer.param_groups[0]["lr"] == 0.1
    for group in (param_group, optimizer.param_groups[0]):
        assert [id(p) for p in group["params"]] == [id(q) for q in model.parameters()]
    assert torch.equal(model.weight, before) and model.training


# -- restoring only what the slice reads (issue 30) ----------------------------------------


def test_a_slice_that_reads_only_the_model_does_not_restore_the_optimizer():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        """ + WEIGHT_NORM)
    assert "evaluate(model, test_loader)" in skipped(result)
    assert result.unrestored == ("optimizer",)
    assert [name for name, _why in result.restored] == ["model"]
    assert any("not restored: `optimizer`" in line for line in result.describe())


def test_a_slice_that_steps_the_scheduler_restores_the_optimizer():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        scheduler.step()
        """ + WEIGHT_NORM)
    assert "scheduler.step()" in kept(result)
    assert result.unrestored == ()
    assert dict(result.restored)["optimizer"].startswith("line ")


def test_registered_objects_flor_cannot_name_are_always_restored():
    body = "    for epoch in flor.loop(\"epoch\", range(3)):\n" \
        "        train_epoch(model, optimizer, loader)\n        evaluate(model, test_loader)\n        " + WEIGHT_NORM + "\n"
    spread = slice_body(HEAD + "objs = dict(model=model, optimizer=optimizer)\nwith flor.checkpointing(**objs):\n" + body, {"wn"})
    assert spread.unrestored == () and spread.restored == ()
    by_position = slice_body(HEAD + "with flor.checkpointing(model, optimizer):\n" + body, {"wn"})
    assert by_position.unrestored == ("1",)
    expression = slice_body(HEAD + "with flor.checkpointing(model=model, optimizer=[optimizer][0]):\n" + body, {"wn"})
    assert expression.unrestored == () and dict(expression.restored)["optimizer"] == "flor cannot tell which object it is"


def test_an_alias_of_a_registered_object_is_followed_to_what_the_slice_touches():
    head = HEAD + "opt = optimizer\n"
    source = head + "with flor.checkpointing(model=model, optimizer=opt):\n" \
        "    for epoch in flor.loop(\"epoch\", range(3)):\n        train_epoch(model, optimizer, loader)\n" \
        "        for group in optimizer.param_groups:\n            group['lr'] = 0.1\n        " + WEIGHT_NORM + "\n"
    assert slice_body(source, {"wn"}).unrestored == ()


def test_only_slice_only_iterations_before_another_slice_only_one_leave_objects_unrestored():
    """The iteration before a verified one and the recording's last restore everything: the whole
    body runs next (or the state is compared at the loop's end); nothing carries over."""
    import builtins

    from flor.replay.slice_run import GUARD, SliceRun

    class Run:
        managers = []

    try:
        run = SliceRun(Run(), [(1, 0)], [0, 1, 2, 3, 4, 5], [], [], verify=2, last=5, unrestored=["optimizer"])
        assert run.to_verify == {0, 5}
        seen = {}
        for index in range(6):
            run.index, run.slicing = index, True
            seen[index] = run.not_restored(index)
        run.slicing = False
        assert run.not_restored(2) == frozenset()  # the whole body (a verified iteration's full pass)
        assert seen == {0: {"optimizer"}, 1: {"optimizer"}, 2: {"optimizer"}, 3: {"optimizer"}, 4: frozenset(),
                        5: frozenset()}
        run.on = False  # fell back: everything is restored
        run.slicing = True
        assert run.not_restored(1) == frozenset()
    finally:
        if hasattr(builtins, GUARD):
            delattr(builtins, GUARD)


@pytest.mark.parametrize("bind", ["m2, o2 = model, optimizer", "o2: torch.optim.Optimizer = optimizer",
                                  "for o2 in [optimizer]:\n    pass"])
def test_a_registered_object_read_through_a_name_bound_otherwise_is_restored(bind):
    """`m2, o2 = model, optimizer` outside the loop: `o2.state` is the optimizer's, so an
    iteration running the slice must restore it (it read the previous checkpoint's steps)."""
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        flor.log("p", len(o2.state))
        """, head=HEAD + bind + "\n", names=("p",))
    assert 'flor.log("p", len(o2.state))' in kept(result)
    assert "optimizer" not in result.unrestored


@pytest.mark.parametrize("hold, read", [
    ("holders = []\nholders.append(optimizer)", "holders[0]"),
    ("state = {}\nstate['opt'] = optimizer", "state['opt']"),
    ("Net.opt = optimizer", "Net.opt"),
    ("def setup():\n    global o2\n    o2 = optimizer\nsetup()", "o2"),
    ("print(o2 := optimizer)", "o2"),
    ("holders = []\ndef keep(o):\n    holders.append(o)\nkeep(optimizer)", "holders[0]"),
    ("class Box:\n    pass\nbox = Box()\ndef put(b, o):\n    b.o = o\nput(box, o=optimizer)", "box.o"),
])
def test_a_registered_object_a_name_comes_to_hold_outside_the_loop_is_restored(hold, read):
    """A name made to hold the optimizer other than by binding it (a container filled, an
    attribute set, a function's `global`): a kept statement reading through it reads the
    optimizer, which an iteration running the slice must restore."""
    result, _ = plan(f"""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        flor.log("p", len({read}.state))
        """, head=HEAD + hold + "\n", names=("p",))
    assert f'flor.log("p", len({read}.state))' in kept(result)
    assert "optimizer" not in result.unrestored


def test_a_list_of_the_models_parameters_still_leaves_the_optimizer_unrestored():
    result, _ = plan("""
        train_epoch(model, optimizer, loader)
        evaluate(model, test_loader)
        flor.log("p", params[0].norm().item())
        """, head=HEAD + "params = list(model.parameters())\nprint(params)\n", names=("p",))
    assert result.unrestored == ("optimizer",)


def test_positions_after_a_starred_argument_are_not_known_so_everything_is_restored():
    """`flor.checkpointing(*extra, model, optimizer)`: the names' positions ("0", "1", ...) depend
    on how many objects `extra` holds; which one is the optimizer cannot be told."""
    body = "    for epoch in flor.loop(\"epoch\", range(3)):\n" \
        "        train_epoch(model, optimizer, loader)\n        evaluate(model, test_loader)\n        " + WEIGHT_NORM + "\n"
    result = slice_body(HEAD + "extra = [scheduler]\nwith flor.checkpointing(*extra, model, optimizer):\n" + body, {"wn"})
    assert result.unrestored == ()

"""A replay worker does not import torch's compiler for a script that never compiles, and
nothing else changes: same numbers, and the real dynamo wrapper once the compiler is loaded."""

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import clean_env

pytestmark = pytest.mark.slow  # every test trains or launches processes

TRAIN = """
import sys
import torch
{defer}
torch.manual_seed(0)
net = torch.nn.Linear(4, 2)
opt = torch.optim.Adam(net.parameters(), lr=0.1)
opt.load_state_dict(opt.state_dict())
opt.zero_grad()
# What a memoized replay does (restore, skip the steps) does not need the compiler...
print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
for _ in range(3):
    opt.zero_grad()
    net(torch.randn(8, 4)).pow(2).sum().backward()
    opt.step()  # ...a step imports it in any case (optimizer.py's _use_grad)
opt.load_state_dict(opt.state_dict())
print(repr([p.detach().tolist() for p in net.parameters()]))
{after}
"""

DEFER = "from flor.replay.lazy_dynamo import defer_dynamo_import\nassert defer_dynamo_import() > 0"


def _python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=clean_env(OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_deferred_optimizer_gives_the_same_numbers_without_the_compiler():
    plain = _python(TRAIN.format(defer="", after=""))
    deferred = _python(TRAIN.format(defer=DEFER, after=""))
    assert plain[0] == "dynamo"  # the reason for the module: creating an optimizer imports it
    assert deferred == ["no dynamo", plain[1]]


def test_once_the_compiler_is_loaded_the_real_wrapper_is_used_and_compile_works():
    after = """
opt.zero_grad()
wrapper = torch.optim.Optimizer.zero_grad.__wrapped__.__dynamo_disable
print(type(wrapper).__module__, getattr(wrapper, "__qualname__", ""))
compiled = torch.compile(lambda x: net(x).sum(), backend="eager")
print(float(compiled(torch.ones(1, 4))) == float(net(torch.ones(1, 4)).sum()))
"""
    lines = _python(TRAIN.format(defer=DEFER, after=after))
    assert "lazy_dynamo" not in lines[2] and lines[3] == "True"


def test_replay_worker_skips_the_compiler_import(project):
    project.write("train.py", """
        import sys
        import flor
        import torch
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        with flor.checkpointing(model=net, optimizer=opt):
            for epoch in flor.loop("epoch", range(2)):
                for step in flor.loop("step", range(3)):
                    opt.zero_grad()
                    net(torch.randn(8, 4)).pow(2).sum().backward()
                    opt.step()
                # BODY
        print("compiler in recording:", int("torch._dynamo" in sys.modules))
    """)
    project.commit_all()
    assert "compiler in recording: 1" in project.run("train.py").stdout
    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace(
        "# BODY", 'flor.log("weight", float(net.weight.sum())); flor.log("compiler", int("torch._dynamo" in sys.modules))'))
    project.flor("replay", "weight", "compiler")
    with sqlite3.connect(project.db) as connection:
        rows = dict(connection.execute(
            "SELECT name, group_concat(value) FROM logs WHERE name IN ('compiler', 'weight') GROUP BY name").fetchall())
    assert rows["compiler"] == "0,0"
    assert len(rows["weight"].split(",")) == 2

    # A step-level statement: the steps re-execute, and still nothing imports the compiler.
    step_line = next(line for line in text.splitlines() if line.strip() == "opt.step()")
    indent = step_line[: len(step_line) - len(step_line.lstrip())]
    (project.root / "train.py").write_text(text.replace(
        step_line, f'{step_line}\n{indent}flor.log("compiler_at_step", int("torch._dynamo" in sys.modules))'))
    done = project.flor("replay", "compiler_at_step")
    assert "done: compiler_at_step: 6 value(s) stored" in done.stdout, done.stdout
    with sqlite3.connect(project.db) as connection:
        steps = [v for (v,) in connection.execute("SELECT value FROM logs WHERE name = 'compiler_at_step'")]
    assert [int(v) for v in steps] == [0] * 6


STEPS = """
import hashlib, sys
import torch
{defer}
torch.manual_seed(0)
found = []
for Opt, kw in [(torch.optim.SGD, dict(lr=0.1, momentum=0.9)), (torch.optim.Adam, dict(lr=0.01)),
                (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)), (torch.optim.RMSprop, dict(lr=0.01)),
                (torch.optim.LBFGS, dict(lr=0.1))]:
    net = torch.nn.Linear(4, 2)
    opt = Opt(net.parameters(), **kw)
    x = torch.randn(8, 4)
    for _ in range(3):
        def closure():
            opt.zero_grad()
            loss = net(x).pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
    assert torch.is_grad_enabled()
    found.append([p.detach().tolist() for p in net.parameters()])
print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
print(hashlib.sha256(repr(found).encode()).hexdigest())
{after}
"""


def test_optimizer_steps_run_without_the_compiler_and_give_the_same_numbers():
    """``optimizer.step()`` imports the compiler only to mark a graph break (lazy_dynamo.
    defer_optimizer_import): deferred, five optimizers step to the same bits without it; once the
    compiler is imported, torch's own wrapper runs and torch.compile works."""
    defer = DEFER + "\nfrom flor.replay.lazy_dynamo import defer_optimizer_import\nassert defer_optimizer_import() > 0"
    after = """
import torch._dynamo
net = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
net(torch.ones(1, 4)).sum().backward()
opt.step()
compiled = torch.compile(lambda x: net(x).sum(), backend="eager")
print(float(compiled(torch.ones(1, 4))) == float(net(torch.ones(1, 4)).sum()), torch.is_grad_enabled())
"""
    plain = _python(STEPS.format(defer="", after=""))
    deferred = _python(STEPS.format(defer=defer, after=after))
    assert plain[0] == "dynamo"
    assert deferred == ["no dynamo", plain[1], "True True"]


DDP = """
import os, sys
import torch, torch.distributed as dist, torch.nn.parallel
{defer}
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
with torch.no_grad():
    out = model(torch.ones(3, 4)).sum().item()
model.load_state_dict(model.state_dict())
print(int("torch._dynamo" in sys.modules), model._use_python_reducer, out)
{after}
dist.destroy_process_group()
"""


def test_ddp_is_built_without_the_compiler_and_the_compiler_still_loads():
    """DDP's constructor reads one setting of the compiler (lazy_dynamo.defer_ddp_probe): a job's
    memoized epochs build the model without importing it, the same model; importing it later
    puts the real module back and torch.compile works."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -rn` (gloo on a private loopback)")
    defer = ("from flor.replay.lazy_dynamo import defer_ddp_probe, defer_dynamo_import\n"
             "assert defer_dynamo_import() and defer_ddp_probe()")  # as a replay worker does
    after = """
import torch._dynamo, types
print(type(torch._dynamo) is types.ModuleType, torch._dynamo.utils.get_optimize_ddp_mode())
compiled = torch.compile(lambda x: model(x).sum(), backend="eager")
print(float(compiled(torch.ones(1, 4))) == float(model(torch.ones(1, 4)).sum()))
"""

    def run(code: str) -> list[str]:
        done = subprocess.run(["unshare", "-rn", "sh", "-c", f"ip link set lo up && {sys.executable} -c \"$CODE\""],
                              capture_output=True, text=True, timeout=120,
                              env=clean_env(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", CODE=code))
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.splitlines()

    plain = run(DDP.format(defer="", after=""))
    deferred = run(DDP.format(defer=defer, after=after))
    assert plain[0].startswith("1 False ")  # what the stand-in saves: DDP(...) imports the compiler
    assert deferred[0] == "0" + plain[0][1:]  # not imported, the same reducer and output
    assert deferred[1:] == ["True ddp_optimizer", "True"]

"""Checkpoint space (issue 29): bytes written and writer CPU per checkpoint, today's raw objects
against compressed ones and compressed deltas, on real training state; restore time per
checkpoint; and a disk budget honoured by a recording run.

States (each trained between checkpoints, so every tensor moves as in a run):

* ``mlp``: the standard MLP of ``workloads.py`` (64-512-512-10, Adam), 50 steps between checkpoints;
* ``cnn``: the MNIST-shaped CNN of ``corpus_replay.py`` (conv 1-32-64, fc 9216-128-10, Adadelta),
  10 steps of 64 images between checkpoints (the script checkpoints once an epoch);
* ``gpt``: the nanoGPT-shaped GPT of ``tests/realworld`` at the benchmark's size (4 layers, 128
  wide, 64-token blocks, AdamW, gradients kept as flor keeps them before the step), 50 iterations
  between checkpoints (its evaluation interval).

Encodings, written alternately checkpoint by checkpoint into separate folders by the same
``persist`` the writer thread runs: ``raw`` (``FLOR_CKPT_COMPRESS=0``, what flor wrote before),
``zstd`` (compressed, ``FLOR_CKPT_FULL_EVERY=1``), ``zstd+delta`` (the default: deltas, a standalone
copy every 4), ``zstd+delta K=8`` (a standalone copy every 8: does a longer chain pay?). Deltas
subtract each float's bits from the previous checkpoint's (objects.py). Writer CPU is the thread's
CPU time in ``persist``. Restore time reads the whole checkpoint back (``read_manifest``: decode, follow chains, verify every hash).

The budget rows record a small loop (a 2.6 MB float32 random walk, 0.02 s iterations) under
``FLOR_CKPT_DISK`` and compare what ``.flor/objects`` and the manifests hold with the budget.

    python benchmarks/checkpoint_space.py [--checkpoints 9] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _results import fmt_range, machine, write_section  # noqa: E402

SECTION = "checkpoint_space"
ENCODINGS = {"raw": (False, 1), "zstd": (True, 1), "zstd+delta": (True, 4), "zstd+delta K=8": (True, 8)}


def _mlp():
    import torch

    torch.manual_seed(0)
    sizes = (64, 512, 512, 10)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

    def train():
        for _ in range(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return {"model": net, "optimizer": opt}, {}

    return train


def _cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 32, 3, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adadelta(net.parameters(), lr=1.0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def train():
        for _ in range(10):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return {"model": net, "optimizer": opt}, {}

    return train


def _gpt():
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "realworld" / "scripts" / "nanogpt_style"))
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    net = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128))
    opt = net.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    x = torch.randint(0, 65, (12, 64))

    def train():
        for _ in range(50):
            opt.zero_grad(set_to_none=True)
            _, loss = net(x, x)
            loss.backward()
            opt.step()
        _, loss = net(x, x)
        loss.backward()  # flor keeps the gradients of a checkpoint taken before the step
        grads = {name: p.grad for name, p in net.named_parameters()}
        return {"model": net, "optimizer": opt}, {"grads": grads}

    return train


STATES = {"mlp": _mlp, "cnn": _cnn, "gpt": _gpt}


def measure(name: str, count: int) -> dict:
    from flor.environment import rng
    from flor.checkpoints.restore import read_manifest
    from flor.checkpoints.snapshot import Snapshotter, object_state
    from flor.checkpoints.writer import Deltas, Encoding, Job, persist

    train = STATES[name]()
    folders = {enc: Path(tempfile.mkdtemp(prefix=f"space-{name}-{enc}-")) for enc in ENCODINGS}
    deltas = {enc: Deltas(Encoding(*flags)) for enc, flags in ENCODINGS.items()}
    known = {enc: set() for enc in ENCODINGS}
    written = {enc: [] for enc in ENCODINGS}
    cpu = {enc: [] for enc in ENCODINGS}
    locations = {enc: [] for enc in ENCODINGS}
    snapshotter = Snapshotter()
    nbytes = 0
    order = list(ENCODINGS)
    for iteration in range(count):
        objects, extra = train()
        tree = {"objects": {k: object_state(v) for k, v in objects.items()}, "rng": rng.capture(), "variables": {},
                **extra}
        snap = snapshotter.take(tree)
        nbytes = snap.nbytes
        order = order[1:] + order[:1]  # alternate which encoding goes first
        for enc in order:
            started = time.thread_time()
            location, size, _ = persist(folders[enc], Job(1, "t", iteration, "end", snap, {}), known[enc], None,
                                        deltas[enc])
            cpu[enc].append(time.thread_time() - started)
            written[enc].append(size)
            locations[enc].append(location)
    restore = {}
    for enc in ENCODINGS:
        times = []
        for location in locations[enc]:
            started = time.perf_counter()
            read_manifest(folders[enc] / ".flor", location, trusted=True)
            times.append(time.perf_counter() - started)
        restore[enc] = times
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return {"state": nbytes, "written": written, "cpu": cpu, "restore": restore}


BUDGET_SCRIPT = """
import flor, itertools, time, numpy as np
rng = np.random.default_rng(0)
class Walk:
    def __init__(self):
        self.w = np.zeros(650_000, dtype=np.float32)
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"].copy()
walk = Walk()
with flor.checkpointing(walk=walk):
    for it in flor.loop("it", LOOP):
        walk.w += rng.standard_normal(650_000).astype(np.float32) * 0.01
        time.sleep(0.02)
        flor.log("norm", float(np.abs(walk.w).sum()))
        if it == 399:
            break
"""


def budget_case(budget: str, loop: str) -> tuple[int, int, int]:
    """(bytes kept in .flor, the budget in bytes, checkpoints) of one recording under FLOR_CKPT_DISK."""
    from flor.environment import settings
    from workloads import child_env, git

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "walk.py").write_text(BUDGET_SCRIPT.replace("LOOP", loop))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "walk")
        env = child_env(FLOR_CKPT_DISK=budget, PYTHONPATH=str(ROOT))  # this checkout's flor (a worktree shares the venv)
        subprocess.run([sys.executable, "walk.py"], cwd=repo, env=env, check=True, capture_output=True)
        flor = repo / ".flor"
        kept = sum(p.stat().st_size for p in (flor / "objects").iterdir()) + \
            sum(p.stat().st_size for p in (flor / "checkpoints").rglob("*.json"))
        count = len(list((flor / "checkpoints").rglob("*.json")))
        os.environ.pop("FLOR_CKPT_DISK", None)
        return kept, settings.parse_bytes("FLOR_CKPT_DISK", budget).bytes, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=9)
    parser.add_argument("--states", default=",".join(STATES))
    parser.add_argument("--no-budget", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = time.time()
    lines = [
        f"Command: `python benchmarks/checkpoint_space.py --checkpoints {args.checkpoints}` "
        f"({(time.time() - started) / 60:.1f} min). {machine()}.",
        "",
        "| state | state MB | encoding | MB written per checkpoint, median (range) | vs raw: median | vs raw: all bytes | "
        "writer CPU ms per checkpoint | restore ms per checkpoint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in args.states.split(",") if n]:
        found = measure(name, args.checkpoints)
        raw = statistics.median(found["written"]["raw"])
        for enc in ENCODINGS:
            # The first checkpoint of every encoding stands alone; medians are over all of them.
            written = found["written"][enc]
            lines.append(f"| {name} | {found['state'] / 1e6:.1f} | {enc} | {fmt_range(written, 1e-6, 2)} | "
                         f"{statistics.median(written) / raw:.2f} | {sum(written) / sum(found['written']['raw']):.3f} | "
                         f"{fmt_range(found['cpu'][enc], 1e3, 1)} | "
                         f"{fmt_range(found['restore'][enc], 1e3, 1)} |")
        print("\n".join(lines[-len(ENCODINGS):]), flush=True)
    budget_lines = []
    if not args.no_budget:
        budget_lines += ["Disk budget: a 2.6 MB random walk, 400 iterations of 0.02 s, recorded under FLOR_CKPT_DISK "
                  "(`range(400)`: length known; `itertools.count()` + `break`: unknown).", "",
                         "| loop | FLOR_CKPT_DISK | budget MB | kept in .flor MB | kept / budget | checkpoints |", "|---|---|---|---|---|---|"]
        for loop, label in (("range(400)", "range"), ("itertools.count()", "count")):
            for budget in ("10M", "30M"):
                kept, limit, count = budget_case(budget, loop)
                budget_lines.append(f"| {label} | {budget} | {limit / 1e6:.1f} | {kept / 1e6:.2f} | {kept / limit:.3f} | {count} |")
                print(budget_lines[-1], flush=True)
    lines[0] = (f"Command: `python benchmarks/checkpoint_space.py --checkpoints {args.checkpoints}` "
                f"({(time.time() - started) / 60:.1f} min). {machine()}, load average "
                f"{os.getloadavg()[0]:.0f} (other work on the 2 cores: CPU times are high and noisy).")
    text = "\n".join(lines)
    print(text)
    if not args.no_write and len(lines) > 4:
        write_section(SECTION, "## Checkpoint space (issue 29)\n\n" + text)
    if not args.no_write and budget_lines:
        budget_lines.insert(0, lines[0].replace("--checkpoints", "--states '' --checkpoints") + "\n")
        write_section(SECTION + "_budget", "## Checkpoint disk budget (issue 29)\n\n" + "\n".join(budget_lines))


if __name__ == "__main__":
    main()

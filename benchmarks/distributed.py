"""Distributed jobs (issue 28): a torchrun/DDP job with flor against the same job without it, the
replay of a job, job start, the 8-rank stress, and what replicated weights cost on disk.

Every launch runs inside one private network namespace (``unshare -rn``, ``ip link set lo up``;
``MASTER_ADDR=127.0.0.1``, ``GLOO_SOCKET_IFNAME=lo``), gloo on CPU, one thread per rank.

* ``overhead``: a 2-rank DDP job (MLP 64-512-512-1, SGD with momentum, DistributedSampler with
  set_epoch, an all_reduced metric per epoch, a rank-0 eval), with flor (flor.loop,
  flor.checkpointing, flor.log of the loss every step) and the same script with flor's calls
  removed, run alternately. Measured: the torchrun process's wall time, and the training loop's
  time on rank 0 (printed by the script).
* ``replay``: ``flor replay`` of an epoch-level and of a step-level statement on one recorded job
  (``--force``, alternately), against the recording's whole torchrun process.
* ``start``: from launch to the first training step (rank 0's clock against the launcher's),
  with and without flor, 2 and 8 ranks.
* ``stress``: 8 ranks launched together, N launches one after another (a flor-only script, no
  torch in the ranks): runs, commits, values kept.
* ``bytes``: checkpoint bytes each rank wrote for a 2-rank job of a 4 MB model.
* ``long`` (its own section, *distributed-long*): the same DDP script for ``--epochs`` epochs
  (default 40: a recording of about 90 s on the 2-core machine, so that a replay's fixed
  start-up is a small part of it). Each repetition records a fresh job with flor, runs the same
  job without flor, and replays the epoch-level and the step-level statement of the job it just
  recorded (the four alternately ordered), so each ratio pairs a replay with a recording taken
  minutes apart under the same load. The replays' per-rank phases (``flor replay``'s timing
  lines: workspace, rendezvous, set-up, restores, memoized and re-executed epochs, storing, and
  the warm worker's start and imports) are kept too.
* ``gang`` (its own section, *distributed-gang*; with ``--before PATH``, a checkout of flor from
  before the change measured): one recorded job (the ``replay`` one), its epoch-level and
  step-level statements replayed (``--force``) with flor from ``PATH`` and with this checkout,
  alternately (before/after, then after/before), with each rank's worker start and imports.

    python benchmarks/distributed.py [--reps 5] [--launches 20] [--only overhead,replay,start,stress,bytes,long,gang]
                                     [--epochs 40] [--ckpt-period N] [--before PATH] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402

SECTION = "distributed"
LOADS: list[float] = []  # the 1-minute load average as each measured command began

DDP = '''
import os, sys, time
T_LAUNCH = float(os.environ.get("BENCH_T0", "0"))
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
import flor

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
epochs = flor.arg("epochs", int(os.environ.get("BENCH_EPOCHS", "5")))
width = flor.arg("width", 512)
g = torch.Generator().manual_seed(1234)
X = torch.randn(4096, 64, generator=g)
Y = X[:, :8].sum(1) + 0.1 * torch.randn(4096, generator=g)
data = TensorDataset(X, Y)
sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=7)
loader = DataLoader(data, batch_size=32, sampler=sampler)
model = DDP(nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
started = None
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        sampler.set_epoch(epoch)
        total = torch.zeros(1)
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            if started is None:
                started = time.time()
                if rank == 0:
                    print(f"BENCH first_step {started - T_LAUNCH:.4f}", flush=True)
            opt.zero_grad()
            loss = ((model(x).squeeze(-1) - y) ** 2).mean()
            loss.backward()
            opt.step()
            total += loss.detach()
            flor.log("loss", loss.item())
        dist.all_reduce(total)
        flor.log("mean_loss", total.item() / world / len(loader))
        if rank == 0:
            with torch.no_grad():
                flor.log("eval", ((model.module(X[:512]).squeeze(-1) - Y[:512]) ** 2).mean().item())
if rank == 0:
    print(f"BENCH train {time.time() - started:.4f}", flush=True)
dist.destroy_process_group()
'''

STRESS = '''
import os
import flor

rank = int(os.environ["RANK"])
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(20)):
        flor.log("v", rank * 1000 + epoch * 100 + step)
'''

EPOCH_STATEMENT = ('        flor.log("mean_loss", total.item() / world / len(loader))\n',
                   '        flor.log("w_norm", model.module[0].weight.norm().item())\n')
STEP_STATEMENT = ('            flor.log("loss", loss.item())\n', '            flor.log("x_sum", x.sum().item())\n')


def without_flor(text: str) -> str:
    """The same script with flor's calls removed (what the job costs without flor)."""
    text = text.replace("import flor\n", "")
    text = text.replace('flor.arg("epochs", int(os.environ.get("BENCH_EPOCHS", "5")))', 'int(os.environ.get("BENCH_EPOCHS", "5"))').replace('flor.arg("width", 512)', "512")
    text = text.replace("with flor.checkpointing(model=model, optimizer=opt):\n", "if True:\n")
    text = re.sub(r'flor\.loop\("\w+", (.*)\):', r"\1:", text)
    text = re.sub(r'flor\.log\("\w+", (.*)\)\n', r"(\1)\n", text)
    assert "flor" not in text, text
    return text


def env() -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOR_")}
    base.update(PYTHONPATH=str(REPO), MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
                GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench",
                GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com")
    return base


def in_netns(cwd: Path, command: str, timeout: float = 900, flor_from: Path | None = None) -> tuple[float, str]:
    """Run ``command`` in a private network namespace; (wall seconds, output). ``flor_from``:
    the checkout of flor to import (default: this one)."""
    LOADS.append(os.getloadavg()[0])
    script = f"ip link set lo up\nexport BENCH_T0=$(python3 -c 'import time; print(time.time())')\n{command}"
    began = time.perf_counter()
    environ = env()
    if flor_from is not None:
        environ["PYTHONPATH"] = str(flor_from)
    done = subprocess.run(["unshare", "-rn", "sh", "-c", script], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def torchrun(nproc: int, script: str, *args: str) -> str:
    return " ".join([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
                     "--master-addr=127.0.0.1", "--master-port=29533", script, *args])


def project(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *command], cwd=folder, env=env(), check=True, capture_output=True)
    return folder


def bench_value(output: str, name: str) -> float:
    return float(re.search(rf"BENCH {name} ([0-9.]+)", output).group(1))


def overhead(scratch: Path, reps: int) -> dict:
    root = project(scratch / "overhead", {"train.py": DDP, "plain.py": without_flor(DDP), ".gitignore": ".flor/\n"})
    rows = {"flor": [], "plain": [], "flor_train": [], "plain_train": []}
    for rep in range(reps):
        for kind in (("flor", "plain") if rep % 2 == 0 else ("plain", "flor")):
            seconds, output = in_netns(root, torchrun(2, "train.py" if kind == "flor" else "plain.py"))
            rows[kind].append(seconds)
            rows[f"{kind}_train"].append(bench_value(output, "train"))
            print(f"overhead {kind}: {seconds:.2f} s, train {rows[f'{kind}_train'][-1]:.2f} s", flush=True)
    return rows


def record_then_add_statements(root: Path) -> float:
    """Record the DDP job once (torchrun, 2 ranks); then today's script gains the epoch- and
    step-level statements the replays ask for. The recording's seconds."""
    record, _ = in_netns(root, torchrun(2, "train.py"))
    text = DDP
    for anchor, line in (EPOCH_STATEMENT, STEP_STATEMENT):
        text = text.replace(anchor, anchor + line)
    (root / "train.py").write_text(text)
    return record


def replay(scratch: Path, reps: int) -> dict:
    root = project(scratch / "replay", {"train.py": DDP})
    record = record_then_add_statements(root)
    rows = {"record": [record], "epoch": [], "step": []}
    flor = f"{sys.executable} -m flor replay --force"
    for rep in range(reps):
        for kind in (("epoch", "step") if rep % 2 == 0 else ("step", "epoch")):
            name = "w_norm" if kind == "epoch" else "x_sum"
            seconds, _ = in_netns(root, f"{flor} {name}")
            rows[kind].append(seconds)
            print(f"replay {kind}: {seconds:.2f} s (recording {record:.2f} s)", flush=True)
    return rows


def gang(scratch: Path, reps: int, before: Path) -> dict:
    """Replays of one recorded job with flor from ``before`` and from this checkout, alternately."""
    root = project(scratch / "gang", {"train.py": DDP})
    record = record_then_add_statements(root)
    rows: dict = {"record": record}
    flor = f"{sys.executable} -m flor replay --force"
    for rep in range(reps):
        for kind in ("epoch", "step"):
            name = "w_norm" if kind == "epoch" else "x_sum"
            for which in (("before", "after") if rep % 2 == 0 else ("after", "before")):
                seconds, output = in_netns(root, f"{flor} {name}", flor_from=before if which == "before" else REPO)
                found = phases(output)
                rows.setdefault((kind, which), []).append(seconds)
                for rank in (0, 1):
                    rows.setdefault((kind, which, "imports"), []).append(found.get((rank, "imports"), float("nan")))
                print(f"gang {kind} {which}: {seconds:.2f} s, imports {[found.get((r, 'imports')) for r in (0, 1)]}",
                      flush=True)
    return rows


def render_gang(r: dict, before: str) -> list[str]:
    lines = [f"| one torch import per gang: replay of the 5-epoch job (recording {r['record']:.2f} s), `--force` | "
             f"before (`{before}`), s | after, s | after / before (pairs) | imports per rank before, s | after, s |",
             "|---|---|---|---|---|---|"]
    for kind, label in (("epoch", "epoch-level statement (memoized)"), ("step", "step-level statement (re-executed)")):
        b, a = r[(kind, "before")], r[(kind, "after")]
        lines.append(f"| {label} | {fmt_range(b, digits=2)} | {fmt_range(a, digits=2)} | "
                     f"{fmt_range([x / y for x, y in zip(a, b)], digits=2)} | "
                     f"{fmt_range(r[(kind, 'before', 'imports')], digits=2)} | "
                     f"{fmt_range(r[(kind, 'after', 'imports')], digits=2)} |")
    return lines + [""]


def start(scratch: Path, reps: int) -> dict:
    root = project(scratch / "start", {"train.py": DDP, "plain.py": without_flor(DDP), ".gitignore": ".flor/\n"})
    rows: dict = {}
    for nproc in (2, 8):
        for rep in range(reps):
            for kind in (("flor", "plain") if rep % 2 == 0 else ("plain", "flor")):
                script = "train.py" if kind == "flor" else "plain.py"
                _seconds, output = in_netns(root, "BENCH_EPOCHS=1 " + torchrun(nproc, script))
                rows.setdefault((nproc, kind), []).append(bench_value(output, "first_step"))
                print(f"start {nproc} ranks {kind}: {rows[(nproc, kind)][-1]:.2f} s", flush=True)
    return rows


def stress(scratch: Path, launches: int) -> dict:
    root = project(scratch / "stress", {"tiny.py": STRESS})
    for n in range(launches):
        in_netns(root, torchrun(8, "tiny.py"))
        print(f"stress launch {n + 1}/{launches}", flush=True)
    with sqlite3.connect(root / ".flor" / "flor.db") as db:
        jobs = db.execute("SELECT COUNT(*), COUNT(DISTINCT code_commit) FROM jobs").fetchone()
        ranks = db.execute("SELECT COUNT(*) FROM job_ranks").fetchone()[0]
        finished = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'finished'").fetchone()[0]
        values = db.execute("SELECT COUNT(*) FROM logs").fetchone()[0]
    refs = subprocess.run(["git", "for-each-ref", "refs/flor/"], cwd=root, capture_output=True, text=True).stdout.split("\n")
    return {"launches": launches, "jobs": jobs[0], "commits": jobs[1], "refs": len([r for r in refs if r]),
            "rank_runs": ranks, "finished": finished, "values": values, "expected": launches * 8 * 3 * 20}


def checkpoint_bytes(scratch: Path) -> dict:
    root = project(scratch / "bytes", {"train.py": DDP.replace('flor.arg("width", 512)', 'flor.arg("width", 1024)')})
    in_netns(root, torchrun(2, "train.py", "--kwargs", "epochs=3"))
    with sqlite3.connect(root / ".flor" / "flor.db") as db:
        rows = db.execute("SELECT k.rank, c.iteration, c.bytes, c.bytes_written FROM checkpoints c "
                          "JOIN job_ranks k USING (run_id) ORDER BY c.iteration, k.rank").fetchall()
    on_disk = sum(p.stat().st_size for p in (root / ".flor" / "objects").rglob("*") if p.is_file())
    return {"rows": rows, "on_disk": on_disk}


PHASES = (("workspace", r"workspace ([0-9.]+) s"), ("rendezvous", r"rendezvous ([0-9.]+) s"),
          ("set-up (with the two above)", r"set-up ([0-9.]+) s"), ("restores", r"restoring checkpoints ([0-9.]+) s"),
          ("memoized", r"memoized iterations ([0-9.]+) s"), ("re-executed", r"re-executed iterations ([0-9.]+) s"),
          ("storing", r"storing ([0-9.]+) s"), ("worker start", r"worker started in ([0-9.]+) s"),
          ("imports", r"imported in ([0-9.]+) s"))


def phases(output: str) -> dict:
    """(rank, phase) -> seconds, from `flor replay`'s timing lines (one per rank run)."""
    found = {}
    for line in output.splitlines():
        rank = re.search(r"\+r(\d+)  time: ", line)
        if rank is None:
            continue
        for label, pattern in PHASES:
            value = re.search(pattern, line)
            if value is not None:
                found[(int(rank.group(1)), label)] = float(value.group(1))
    return found


def long_job(scratch: Path, reps: int, epochs: int, after_rep=None, period: int | None = None) -> dict:
    """Record, run without flor, replay an epoch-level and a step-level statement: per repetition
    (``after_rep(rows)`` after each, so a long benchmark cut short still leaves its rows)."""
    replayed = DDP
    for anchor, line in (EPOCH_STATEMENT, STEP_STATEMENT):
        replayed = replayed.replace(anchor, anchor + line)
    root = project(scratch / "long", {"train.py": DDP, "plain.py": without_flor(DDP), ".gitignore": ".flor/\n"})
    rows: dict = {"record": [], "plain": [], "epoch": [], "step": [], "epoch_ratio": [], "step_ratio": [],
                  "overhead": [], "phases": {"epoch": [], "step": []}, "values": []}
    flor = f"{sys.executable} -m flor replay --force"
    for rep in range(reps):
        (root / "train.py").write_text(DDP)
        order = ["record", "plain"] if rep % 2 == 0 else ["plain", "record"]
        order += ["epoch", "step"] if rep % 2 == 0 else ["step", "epoch"]
        tstamp = None
        times: dict = {}
        for kind in order:
            if kind in ("record", "plain"):
                policy = f"FLOR_CKPT_PERIOD={period} " if period else ""  # the same for both: a no-op without flor
                seconds, output = in_netns(root, f"{policy}BENCH_EPOCHS={epochs} "
                                           + torchrun(2, "train.py" if kind == "record" else "plain.py"))
                times[f"{kind}_train"] = bench_value(output, "train")  # rank 0's training loop
                if kind == "record":
                    tstamp = re.search(r"finished run (\S+)\+r0 ", output).group(1)
                    (root / "train.py").write_text(replayed)  # the statements, for the replays
            else:
                if tstamp is None:  # the job to replay is recorded first
                    raise SystemExit("the order put a replay before its recording")
                name = "w_norm" if kind == "epoch" else "x_sum"
                seconds, output = in_netns(root, f"{flor} {name} --runs {tstamp}")
                rows["phases"][kind].append(phases(output))
                stored = [int(v) for v in re.findall(r"\+r\d+  done: \w+: (\d+) value", output)]
                rows["values"].append((kind, stored))
            times[kind] = seconds
            print(f"long {rep + 1}/{reps} {kind}: {seconds:.2f} s", flush=True)
        for kind in order:
            rows[kind].append(times[kind])
        rows["epoch_ratio"].append(times["epoch"] / times["record"])
        rows["step_ratio"].append(times["step"] / times["record"])
        rows["overhead"].append(times["record"] / times["plain"] - 1)
        rows.setdefault("train_overhead", []).append(times["record_train"] / times["plain_train"] - 1)
        for kind in ("record_train", "plain_train"):
            rows.setdefault(kind, []).append(times[kind])
        if after_rep is not None:
            after_rep(rows)
    return rows


def render_long(r: dict, epochs: int, period: int | None = None) -> list[str]:
    policy = f"FLOR_CKPT_PERIOD={period}" if period else "flor's adaptive checkpoint policy"
    lines = [f"| 2-rank DDP job, {epochs} epochs (64 steps per rank per epoch), {policy} | seconds | / recording (pairs) |",
             "|---|---|---|",
             f"| recording with flor (torchrun process) | {fmt_range(r['record'], digits=1)} | 1 |",
             f"| the same job without flor | {fmt_range(r['plain'], digits=1)} | "
             f"record overhead {fmt_range(r['overhead'], 100, 1)} % |",
             f"| training loop on rank 0, with flor / without | {fmt_range(r['record_train'], digits=1)} / "
             f"{fmt_range(r['plain_train'], digits=1)} | overhead {fmt_range(r['train_overhead'], 100, 1)} % |",
             f"| replay, epoch-level statement (whole `flor replay`) | {fmt_range(r['epoch'], digits=1)} | "
             f"{fmt_range(r['epoch_ratio'], digits=2)} |",
             f"| replay, step-level statement (whole `flor replay`) | {fmt_range(r['step'], digits=1)} | "
             f"{fmt_range(r['step_ratio'], digits=2)} |", ""]
    for kind in ("epoch", "step"):
        found = r["phases"][kind]
        if not found:
            continue
        lines += [f"Per-rank phases of the {kind}-level replays, s (median (min-max) over repetitions; the worker's "
                  "start and imports run while the replay plans):", "",
                  "| phase | rank 0 | rank 1 |", "|---|---|---|"]
        for label, _pattern in PHASES:
            cells = [[f[(rank, label)] for f in found if (rank, label) in f] for rank in (0, 1)]
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(fmt_range(c, digits=2) if c else "-" for c in cells) + " |")
        lines.append("")
    return lines


def render(results: dict, command: str, elapsed: float) -> str:
    long_only = set(results) <= {"load", "epochs", "period", "long"}
    gang_only = set(results) <= {"load", "gang", "before"}
    title = "one torch import per gang, before and after" if gang_only else f"a{' long' if long_only else ''} 2-rank gloo DDP job"
    lines = [f"## Distributed jobs: {title} (issue 28)", "",
             f"Command: `{command}` ({elapsed / 60:.1f} min). {machine()}, load average {results['load'][0]:.1f} at "
             f"start and {results['load'][1]:.1f} at end (the 2 cores are shared with other work). Every launch inside "
             "a private network "
             "namespace, gloo on loopback, one thread per rank; the machine is shared by other work, so compare "
             "within a row. Each cell: median (min-max); compared commands run alternately."
             + (f" Load average as each command began: {fmt_range(LOADS, digits=1)}." if LOADS else ""), ""]
    if "overhead" in results:
        r = results["overhead"]
        ratio = [f / p - 1 for f, p in zip(r["flor_train"], r["plain_train"])]
        lines += ["| record overhead (2 ranks, 5 epochs, 64 steps per rank per epoch) | with flor | without flor |",
                  "|---|---|---|",
                  f"| torchrun process, s | {fmt_range(r['flor'], digits=2)} | {fmt_range(r['plain'], digits=2)} |",
                  f"| training loop on rank 0, s | {fmt_range(r['flor_train'], digits=2)} | {fmt_range(r['plain_train'], digits=2)} |",
                  f"| training loop, flor / plain - 1 (pairs in order) | {fmt_range(ratio, 100, 1)} % | |", ""]
    if "replay" in results:
        r = results["replay"]
        record = r["record"][0]
        lines += ["| replay of the recorded job (whole `flor replay` process, `--force`) | seconds | / recording |",
                  "|---|---|---|",
                  f"| recording (torchrun process, once) | {record:.2f} | 1 |",
                  f"| epoch-level statement (memoized) | {fmt_range(r['epoch'], digits=2)} | "
                  f"{fmt_range([s / record for s in r['epoch']], digits=2)} |",
                  f"| step-level statement (re-executed) | {fmt_range(r['step'], digits=2)} | "
                  f"{fmt_range([s / record for s in r['step']], digits=2)} |", ""]
    if "start" in results:
        r = results["start"]
        lines += ["| job start: launch to rank 0's first training step, s | with flor | without flor |", "|---|---|---|"]
        for nproc in (2, 8):
            if (nproc, "flor") in r:
                lines.append(f"| {nproc} ranks | {fmt_range(r[(nproc, 'flor')], digits=2)} | "
                             f"{fmt_range(r[(nproc, 'plain')], digits=2)} |")
        lines.append("")
    if "stress" in results:
        r = results["stress"]
        lines += [f"Stress: {r['launches']} launches of 8 ranks (one after another, the ranks of each together): "
                  f"{r['jobs']} jobs, {r['commits']} distinct commits ({r['refs']} refs), {r['rank_runs']} rank runs "
                  f"({r['finished']} finished), {r['values']} of {r['expected']} values kept.", ""]
    if "gang" in results:
        lines += render_gang(results["gang"], results["before"])
    if "long" in results:
        lines += render_long(results["long"], results["epochs"], results.get("period"))
    if "bytes" in results:
        rows = results["bytes"]["rows"]
        shown = "; ".join(f"iteration {it} rank {rank}: {nbytes / 1e6:.2f} MB state, {written / 1e6:.2f} MB written"
                          for rank, it, nbytes, written in rows)
        states = sum(nbytes for _rank, _it, nbytes, _written in rows)
        lines += [f"Checkpoint bytes, 2 ranks of a {4 * (64 * 1024 + 1024 * 1024 + 1024) / 1e6:.1f} MB model "
                  f"(SGD momentum doubles it), 3 epochs: {shown}."]
        if "on_disk" in results["bytes"]:
            lines += ["", f"On disk: `.flor/objects` holds {results['bytes']['on_disk'] / 1e6:.2f} MB for "
                      f"{len(rows)} checkpoints whose states sum to {states / 1e6:.2f} MB over both ranks: the ranks' "
                      "identical weights and momentum are one object each (content-addressed); ranks that write the "
                      "same object at the same moment may both write it (bytes written above), one copy remains."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--only", default="overhead,replay,start,stress,bytes,long")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the long job (section long)")
    parser.add_argument("--ckpt-period", type=int, default=None,
                        help="FLOR_CKPT_PERIOD for the long job's recordings (default: flor's adaptive policy); "
                             "its rows go to their own section")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of flor from before a change: section gang replays with it and with this one")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    only = args.only.split(",")
    began = time.perf_counter()
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    long_section = SECTION + "-long" + (f"-period{args.ckpt_period}" if args.ckpt_period else "")
    results: dict = {"load": [os.getloadavg()[0], 0.0]}
    with tempfile.TemporaryDirectory(prefix="flor-dist-bench-") as scratch:
        scratch = Path(scratch)
        if "stress" in only:
            results["stress"] = stress(scratch, args.launches)
            print(results["stress"], flush=True)
        if "bytes" in only:
            results["bytes"] = checkpoint_bytes(scratch)
            print(results["bytes"], flush=True)
        if "overhead" in only:
            results["overhead"] = overhead(scratch, args.reps)
        if "replay" in only:
            results["replay"] = replay(scratch, max(2, args.reps // 2))
        if "start" in only:
            results["start"] = start(scratch, max(2, args.reps // 2))
        if "gang" in only:
            if args.before is None:
                raise SystemExit("--only gang needs --before PATH: a checkout of flor to compare with")
            results["gang"], results["before"] = gang(scratch, args.reps, args.before.resolve()), str(args.before)
        if "long" in only:
            results["epochs"], results["period"] = args.epochs, args.ckpt_period

            def partial(rows: dict) -> None:  # each repetition's rows written as they come
                if args.no_write or only != ["long"]:
                    return
                done = {**results, "long": rows, "load": [results["load"][0], os.getloadavg()[0]]}
                write_section(long_section, render(done, command, time.perf_counter() - began))

            results["long"] = long_job(scratch, args.reps, args.epochs, partial, args.ckpt_period)
            print(results["long"], flush=True)
    results["load"][1] = os.getloadavg()[0]
    text = render(results, command, time.perf_counter() - began)
    print(text)
    if not args.no_write:
        # --only bytes and --only long refresh their own sections, leaving the others as they were.
        write_section({"bytes": SECTION + "-bytes", "long": long_section, "gang": SECTION + "-gang"}.get(only[0], SECTION)
                      if len(only) == 1
                      else SECTION, text)


if __name__ == "__main__":
    main()

"""Training scripts shared by the checkpoint and replay benchmarks, and the helpers that run them.

    from workloads import STANDARD, HEAVY, script, make_repo, run_script
    text = script(STANDARD, "flor", epoch_stmt='flor.log("weight_norm", weight_norm(net))')

One template, three variants of the same training loop:

* ``plain``  -- PyTorch only, no flor (``loss.item()`` is still taken every step);
* ``flor``   -- ``import flor``: ``flor.checkpointing(model=net, optimizer=optimizer)``,
  ``flor.loop("epoch")`` around ``flor.loop("step")``, ``flor.log("loss", ...)`` every step;
* ``flordb`` -- the same text with ``import flordb as flor`` (FlorDB 4.0.1's API has the same names).

Every parameter of the workload is a literal in the script (no ``flor.arg``), so the three variants
differ only in the flor lines. The data are synthetic (``torch.randn`` features, ``torch.randint``
labels, seed 0). The loop alone is timed with ``perf_counter`` inside the script; when the
environment names ``BENCH_OUT``, the script writes ``{"loop_s", "loop_cpu_s", "setup_s", "final_loss"}`` there as
JSON (replayed processes see no ``BENCH_OUT`` and write nothing). The traced variants end with a
run-level ``flor.log("final_loss", ...)``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Workload:
    """An MLP trained with Adam on synthetic data."""

    name: str
    sizes: tuple[int, ...]  # layer widths, input first, classes last
    samples: int
    batch: int
    epochs: int = 10
    frozen_half: bool = False  # requires_grad=False on the first half of the Linear layers

    @property
    def steps(self) -> int:
        """Steps per epoch."""
        return -(-self.samples // self.batch)

    @property
    def parameters(self) -> int:
        """Number of parameters of the model."""
        return sum(a * b + b for a, b in zip(self.sizes, self.sizes[1:]))

    def describe(self) -> str:
        """One line: model, data, epochs."""
        widths = "-".join(str(s) for s in self.sizes) if len(self.sizes) <= 5 else (
            f"{self.sizes[0]}-({len(self.sizes) - 2} x {self.sizes[1]})-{self.sizes[-1]}")
        frozen = ", first half of the layers frozen" if self.frozen_half else ""
        return (f"MLP {widths} ({self.parameters / 1e6:.1f}M parameters{frozen}), Adam, "
                f"{self.samples:,} synthetic samples, batch {self.batch} ({self.steps} steps/epoch), "
                f"{self.epochs} epochs")


# The issues' standard workload: 32,000 samples, 500 steps/epoch (about 2.3 s/epoch on this machine).
STANDARD = Workload("standard", (64, 512, 512, 10), samples=32_000, batch=64)
# ~50M parameters: twelve 2048x2048 layers and a head; Adam doubles the state to ~600 MB.
HEAVY = Workload("heavy", (2048,) * 13 + (10,), samples=64, batch=32)
HEAVY_FROZEN = Workload("heavy_frozen", HEAVY.sizes, samples=HEAVY.samples, batch=HEAVY.batch, frozen_half=True)

TEMPLATE = '''\
"""Benchmark workload {name}: {describe} ({variant})."""
import json
import os
import time

_T0 = time.perf_counter()
import torch
import torch.nn as nn
{import_line}

SIZES = {sizes!r}
SAMPLES, BATCH, EPOCHS, FROZEN_HALF = {samples}, {batch}, {epochs}, {frozen}

torch.manual_seed(0)
features = torch.randn(SAMPLES, SIZES[0])
labels = torch.randint(0, SIZES[-1], (SAMPLES,))
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(features, labels), batch_size=BATCH, shuffle=True
)
layers = []
for width_in, width_out in zip(SIZES, SIZES[1:]):
    layers += [nn.Linear(width_in, width_out), nn.ReLU()]
net = nn.Sequential(*layers[:-1])
if FROZEN_HALF:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for module in linears[: len(linears) // 2]:
        module.requires_grad_(False)
optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
criterion = nn.CrossEntropyLoss()

_L0, _C0 = time.perf_counter(), time.process_time()
{with_line}
    for epoch in {epoch_iter}:
        for step, (inputs, targets) in {step_iter}:
            optimizer.zero_grad()
            loss = criterion(net(inputs), targets)
            loss.backward()
            optimizer.step()
            {log_line}
{step_stmt}
{epoch_stmt}
_LOOP_S, _LOOP_CPU_S = time.perf_counter() - _L0, time.process_time() - _C0
{final_log}

if os.environ.get("BENCH_OUT"):
    with open(os.environ["BENCH_OUT"], "w") as _f:
        json.dump({{"loop_s": _LOOP_S, "loop_cpu_s": _LOOP_CPU_S, "setup_s": _L0 - _T0, "final_loss": loss.item()}}, _f)
'''

VARIANTS = ("plain", "flor", "flordb")


def script(workload: Workload, variant: str, *, epoch_stmt: str = "", step_stmt: str = "") -> str:
    """The training script of ``workload`` as ``variant``; optional extra statements.

    ``step_stmt`` goes at the end of the step loop's body, ``epoch_stmt`` after the step loop
    (in the epoch body). Both are single lines without indentation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {VARIANTS}")
    traced = variant != "plain"
    return TEMPLATE.format(
        name=workload.name,
        describe=workload.describe(),
        variant=variant,
        import_line={"plain": "", "flor": "import flor", "flordb": "import flordb as flor"}[variant],
        sizes=workload.sizes,
        samples=workload.samples,
        batch=workload.batch,
        epochs=workload.epochs,
        frozen=workload.frozen_half,
        with_line="with flor.checkpointing(model=net, optimizer=optimizer):" if traced else "if True:",
        epoch_iter='flor.loop("epoch", range(EPOCHS))' if traced else "range(EPOCHS)",
        step_iter='flor.loop("step", enumerate(loader))' if traced else "enumerate(loader)",
        log_line='flor.log("loss", loss.item())' if traced else "loss.item()",
        # FlorDB 4.0.1's replay fails (KeyError: 'projid') on a run without a run-level log.
        final_log='flor.log("final_loss", loss.item())' if traced else "",
        step_stmt=("            " + step_stmt) if step_stmt else "",
        epoch_stmt=("        " + epoch_stmt) if epoch_stmt else "",
    )


# -- processes and repositories ------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """An environment isolated from the user's git config and flor settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOR_", "GIT_", "BENCH_"))}
    env.update(
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="flor-bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="flor-bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    env.pop("PYTHONPATH", None)
    if os.environ.get("BENCH_CHECKOUT_FIRST") == "1":
        # Measure this checkout's flor where the venv's editable install points at another
        # checkout (a git worktree sharing one venv): the children import flor from here.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    env.update(extra)
    return env


def git(repo: Path, *args: str) -> None:
    """A git command in ``repo`` with the isolated environment."""
    subprocess.run(["git", *args], cwd=repo, env=child_env(), check=True, stdout=subprocess.DEVNULL)


def make_repo(parent: Path, name: str, files: dict[str, str]) -> Path:
    """A fresh git repository on branch main with ``files`` in one commit."""
    repo = Path(parent) / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


@dataclass
class Timed:
    """One process: wall seconds of the whole process, and what the script reported."""

    wall_s: float
    cpu_s: float | None = None  # user + system CPU of the whole child process
    loop_s: float | None = None
    loop_cpu_s: float | None = None  # process CPU (all threads) during the training loop
    setup_s: float | None = None
    final_loss: float | None = None
    output: str = ""
    durable_s: float | None = None  # until the last checkpoint was durable (>= wall_s with a handoff)


def run_script(python: str | Path, script_name: str, repo: Path, *, env: dict[str, str] | None = None,
               args: tuple[str, ...] = (), timeout: float = 1800, stdin: str | None = None) -> Timed:
    """Run ``python script_name args`` in ``repo``; wall time and the script's BENCH_OUT report.

    stdout and stderr go to a temporary file (FlorDB redraws progress bars at every log); the tail
    is kept for error messages. A non-zero exit raises ``RuntimeError``.
    """
    import json

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        run_env = dict(env if env is not None else child_env())
        run_env["BENCH_OUT"] = str(out)
        with tempfile.TemporaryFile() as log:
            import resource

            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            proc = subprocess.run(
                [str(python), script_name, *args], cwd=repo, env=run_env, stdout=log, stderr=subprocess.STDOUT,
                timeout=timeout, input=stdin.encode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
            wall = time.perf_counter() - started
            # flor may hand its last checkpoint to a process that outlives the run: wait for it,
            # so that the next run does not share the machine with it, and report when it ended.
            wait_for_handoff(repo)
            durable = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4000))
            text = log.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{python} {script_name} {' '.join(args)} exited {proc.returncode}:\n{text}")
        report = json.loads(out.read_text()) if out.exists() else {}
    return Timed(wall, cpu, report.get("loop_s"), report.get("loop_cpu_s"), report.get("setup_s"),
                 report.get("final_loss"), text, durable)


def wait_for_handoff(repo: Path, timeout: float = 600) -> None:
    """Wait until no handed-off checkpoint writer of ``repo``'s flor store is alive."""
    from flor.checkpoints.handoff import await_writers

    flor_dir = Path(repo) / ".flor"
    for run_dir in sorted((flor_dir / "checkpoints").glob("*")):
        if run_dir.name.isdigit():
            await_writers(flor_dir, int(run_dir.name), timeout)


def run_command(cmd: list[str], repo: Path, *, env: dict[str, str] | None = None, timeout: float = 1800,
                stdin: str | None = None, check: bool = True) -> tuple[float, int, str]:
    """Run ``cmd`` in ``repo``; (wall seconds, exit status, combined output)."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=repo, env=env if env is not None else child_env(), stdout=log, stderr=subprocess.STDOUT,
            timeout=timeout, input=stdin.encode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        log.seek(0)
        text = log.read().decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-4000:]}")
    return wall, proc.returncode, text


def flor_db(repo: Path) -> sqlite3.Connection:
    """Read-only connection to a repository's flor store."""
    return sqlite3.connect(f"file:{Path(repo) / '.flor' / 'flor.db'}?mode=ro", uri=True)


def checkpoints(repo: Path) -> list[tuple]:
    """(iteration, point, bytes, bytes_written, snapshot_s, write_s) of every checkpoint, in order."""
    db = flor_db(repo)
    try:
        return db.execute(
            "SELECT iteration, point, bytes, bytes_written, snapshot_s, write_s FROM checkpoints "
            "ORDER BY run_id, iteration"
        ).fetchall()
    finally:
        db.close()


def flor_python() -> Path:
    """The interpreter of flor's venv (the one running the benchmark, normally)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(os.sys.executable)


def flor_cli() -> list[str]:
    """The ``flor`` command of flor's venv."""
    exe = flor_python().parent / "flor"
    return [str(exe)] if exe.exists() else [str(flor_python()), "-m", "flor"]

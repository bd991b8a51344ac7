"""What a replay worker kept warm between two `flor replay` commands would save (issue 30).

Within one command, `flor replay` already starts its workers warm (``replay/executor.py``): a
worker process imports flor's worker and the script's third-party modules (torch) while the
parent is still planning, and every task of the command forks from it. A worker kept warm
*between* commands would save only the part of that start-up the parent's own start-up and
planning do not already hide. On the MNIST-shaped corpus case (3 epochs, recorded once), each
repetition times, one after the other (their order alternating):

* ``worker``: ``python -c "import flor.replay.worker, torch, torch.nn, torch.nn.functional, torch.optim"``
  -- a worker from its start to waiting for a task (the preload is the script's imports);
* ``parent``: ``python -c "import flor.cli"`` -- the parent before it can start a worker;
* ``plan``: ``flor replay weight_norm --dry-run`` -- the parent's start-up and planning, which a
  real replay overlaps with the worker's start-up.

The saving of a warm worker is then ``max(0, worker - (plan - parent))`` per command.

    python benchmarks/warm_worker.py [--reps 7] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import child_env, flor_cli, flor_python, git, run_command  # noqa: E402

from tests.realworld.harness import recorded_text, today_text  # noqa: E402

SECTION = "warm_worker"
CASE = ROOT / "tests" / "realworld" / "scripts" / "mnist_examples"
IMPORTS = "import flor.replay.worker, torch, torch.nn, torch.nn.functional, torch.optim"


def log(message: str) -> None:
    print(f"[warm_worker {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    python = str(flor_python())
    with tempfile.TemporaryDirectory(prefix="flor-warm-bench-") as tmp:
        repo = Path(tmp) / "mnist"
        shutil.copytree(CASE, repo)
        source = (repo / "train.py").read_text()
        (repo / "train.py").write_text(recorded_text(source))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "mnist")
        run_command([python, "prepare.py"], repo, env=child_env())
        record_s, _rc, _out = run_command([python, "train.py", "--epochs", "3"], repo, env=child_env())
        log(f"recorded in {record_s:.1f} s")
        (repo / "train.py").write_text(today_text(source, "a_epoch"))
        commands = {
            "worker": [python, "-c", IMPORTS],
            "parent": [python, "-c", "import flor.cli"],
            "plan": [*flor_cli(), "replay", "weight_norm", "--dry-run"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        loads = []
        for rep in range(args.reps):
            order = list(commands) if rep % 2 == 0 else list(reversed(commands))
            for name in order:
                wall, _rc, _out = run_command(commands[name], repo, env=child_env())
                times[name].append(wall)
            loads.append(os.getloadavg()[0])
            log(f"rep {rep}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in commands))
    saving = [max(0.0, w - (p - q)) for w, p, q in zip(times["worker"], times["plan"], times["parent"])]
    section = "\n".join([
        "## A replay worker kept warm between commands (issue 30)", "",
        f"Command: `python benchmarks/warm_worker.py{f' --reps {args.reps}' if args.reps != 7 else ''}` "
        f"({(time.perf_counter() - started) / 60:.1f} min). {machine()}; load average (1 min) during the "
        f"repetitions {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs. The corpus's MNIST-shaped case "
        f"(`tests/realworld/scripts/mnist_examples`, 3 epochs, recorded in {record_s:.1f} s); the three commands run "
        "one after the other, their order alternating. Seconds, median (min-max):", "",
        "| a worker's start-up (`python -c \"" + IMPORTS + "\"`) | the parent before it starts a worker "
        "(`python -c \"import flor.cli\"`) | `flor replay weight_norm --dry-run` (start-up and planning) | "
        "what a warm worker would save per command: max(0, worker - (plan - parent)) |",
        "|---|---|---|---|",
        f"| {fmt_range(times['worker'], digits=2)} | {fmt_range(times['parent'], digits=2)} | "
        f"{fmt_range(times['plan'], digits=2)} | {fmt_range(saving, digits=2)} |",
    ])
    if not args.no_write:
        write_section(SECTION, section)
    print(section)
    print(f"median saving {statistics.median(saving):.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

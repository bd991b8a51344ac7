"""A step-level replay, this checkout of flor against another one (a change to what re-executed
steps cost): the standard workload (``workloads.STANDARD``, fewer epochs) is recorded once, then
a statement inside the step loop, which re-executes every step, is replayed with ``--force`` by
each checkout in turn, alternating, for ``--rounds`` rounds. Whole ``flor replay`` processes
timed by the parent, and the worker's own time for the re-executed iterations; paired ratios.
The values each checkout stores are compared (they must be equal).

    python benchmarks/step_replay.py --before DIR [--rounds 5] [--epochs 3] [--section NAME] [--no-write]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import STANDARD, child_env, flor_python, make_repo, run_command, run_script, script  # noqa: E402

SECTION = "step_replay"
STATEMENT = 'flor.log("w0_norm", net[0].weight.norm().item())'


def log(message: str) -> None:
    print(f"[step_replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def replay(checkout: Path, repo: Path) -> tuple[float, float, list]:
    """(wall s, the worker's re-executed iterations s, the stored values) of one replay by ``checkout``."""
    env = child_env()
    env["PYTHONPATH"] = str(checkout)  # with cwd the project, `-m flor` finds this checkout's flor first
    wall, _rc, text = run_command([str(flor_python()), "-m", "flor", "replay", "w0_norm", "--force"], repo, env=env)
    if "done: w0_norm" not in text or "DRIFTED" in text:
        raise SystemExit(f"{checkout}: the replay did not finish exactly:\n{text[-3000:]}")
    reexec = float(re.search(r"re-executed iterations ([0-9.]+) s", text).group(1))
    with sqlite3.connect(repo / ".flor" / "flor.db") as connection:
        stored = connection.execute("SELECT value FROM logs WHERE name = 'w0_norm' ORDER BY rowid").fetchall()
    return wall, reexec, stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of flor from before a change")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--section", default=SECTION)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    checkouts = {"before": args.before.resolve(), "this checkout": HERE.parent}
    workload = replace(STANDARD, epochs=args.epochs)
    times = {label: [] for label in checkouts}
    reexec = {label: [] for label in checkouts}
    values = {}
    with tempfile.TemporaryDirectory(prefix="flor-step-bench-") as tmp:
        repo = make_repo(Path(tmp), "standard", {"train.py": script(workload, "flor")})
        recorded = run_script(flor_python(), "train.py", repo, env=child_env())
        log(f"recorded in {recorded.wall_s:.1f} s")
        (repo / "train.py").write_text(script(workload, "flor", step_stmt=STATEMENT))
        for round_ in range(args.rounds):
            for label, checkout in (list(checkouts.items()) if round_ % 2 == 0 else list(reversed(checkouts.items()))):
                wall, inner, stored = replay(checkout, repo)
                times[label].append(wall)
                reexec[label].append(inner)
                values.setdefault(label, stored)
                if stored != values[label]:
                    raise SystemExit(f"{label}: values changed between rounds")
            log(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    same = values["before"] == values["this checkout"]
    ratios = [a / b for a, b in zip(times["this checkout"], times["before"])]
    inner_ratios = [a / b for a, b in zip(reexec["this checkout"], reexec["before"])]
    steps = workload.steps * workload.epochs
    lines = [
        "## A step-level replay, this checkout against another",
        "",
        f"Command: `python benchmarks/step_replay.py --before {args.before} --rounds {args.rounds} --epochs {args.epochs}` "
        f"({(time.perf_counter() - started) / 60:.1f} min). {machine()}. {workload.describe()}, recorded once "
        f"({recorded.wall_s:.1f} s, the whole process) with the default checkpoint policy; `{STATEMENT}` at the end "
        f"of the step loop ({steps} steps re-executed per replay), replayed with `--force` by each checkout in turn, "
        "alternating; whole `flor replay` processes at the machine's default threads.",
        "",
        "| measure | before | this checkout | this / before (paired) |",
        "|---|---|---|---|",
        f"| replay, s | {fmt_range(times['before'], digits=2)} | {fmt_range(times['this checkout'], digits=2)} | "
        f"{fmt_range(ratios, digits=3)} |",
        f"| the worker's re-executed iterations, s | {fmt_range(reexec['before'], digits=2)} | "
        f"{fmt_range(reexec['this checkout'], digits=2)} | {fmt_range(inner_ratios, digits=3)} |",
        f"| replay / recording | {statistics.median(times['before']) / recorded.wall_s:.2f} | "
        f"{statistics.median(times['this checkout']) / recorded.wall_s:.2f} | |",
        "",
        f"Stored values: {len(values['this checkout'])} per replay, "
        f"{'the same from both checkouts' if same else 'DIFFERENT between the checkouts'}.",
    ]
    section = "\n".join(lines)
    if not args.no_write:
        write_section(args.section, section)
    print(section)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

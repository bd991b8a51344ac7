"""Planning a sweep: `flor replay NAME --dry-run` over many runs of one code version, in two checkouts.

    python benchmarks/plan_sweep.py BEFORE_CHECKOUT AFTER_CHECKOUT [--runs 12] [--reps 5] [--no-write]

(A checkout: a folder holding flor/, e.g. `git archive REV | tar -x -C DIR`.) A fresh git repository
gets a training script of realistic length (a loop in flor.loop/flor.checkpointing over helpers of
about 200 lines, as real scripts carry: data, model, schedule, evaluation), recorded --runs times
with different args and no torch (the recordings are not what is measured). Today's script then
gets one new flor.log in the epoch body, and the whole `flor replay NAME --dry-run` process
(interpreter start, store reads, propagation, planning; no worker) is timed, the two checkouts
alternating, the order swapping every repetition. Writes the `plan_sweep` section of RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import child_env, make_repo, run_command  # noqa: E402

HELPERS = "\n".join(f'''
def schedule_{i}(step, warmup={i + 10}, total=1000, base=0.1):
    """A learning-rate schedule, as scripts write them by hand."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    value = base * 0.5 * (1.0 + progress * {i % 3})
    for _ in range(2):
        value = max(value, base * 0.01)
    return value
''' for i in range(16))

SCRIPT = f'''
import flor

class Model:
    def __init__(self):
        self.w = 1.0
    def state_dict(self):
        return {{"w": self.w}}
    def load_state_dict(self, state):
        self.w = state["w"]
{HELPERS}

lr = flor.arg("lr", 0.01)
model = Model()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            model.w -= lr * schedule_0(step) * (step + 1)
            flor.log("loss", model.w * 2)
        # BODY
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_repo(Path(tmp), "sweep", {"train.py": SCRIPT})
        for i in range(args.runs):
            run_command([sys.executable, "train.py", "--kwargs", f"lr={0.01 * (i + 1)}"], root,
                        env=child_env(PYTHONPATH=str(args.after.resolve()), FLOR_CKPT_PERIOD="1"))
        (root / "train.py").write_text(SCRIPT.replace("        # BODY", '        flor.log("w", model.w)'))
        times = {"before": [], "after": []}
        planned = {}
        load = []
        for rep in range(args.reps):
            order = ["before", "after"] if rep % 2 == 0 else ["after", "before"]
            for which in order:
                checkout = (args.before if which == "before" else args.after).resolve()
                wall, _, output = run_command([sys.executable, "-m", "flor", "replay", "w", "--dry-run"], root,
                                              env=child_env(PYTHONPATH=str(checkout)))
                times[which].append(wall)
                planned[which] = output.count("memo for w")
            load.append(os.getloadavg()[0])
    lines = SCRIPT.count("\n")
    ratio = [a / b for a, b in zip(times["after"], times["before"])]
    markdown = (
        "## Planning a sweep: one matching per code version (issue 27)\n\n"
        f"Command: `python benchmarks/plan_sweep.py BEFORE AFTER --runs {args.runs} --reps {args.reps}`. "
        f"Machine: {machine()}, shared (load average {min(load):.1f}-{max(load):.1f} during the timings). "
        f"{args.runs} runs of one version of a {lines}-line script; `flor replay w --dry-run` as a whole process, "
        "checkouts alternating.\n\n"
        "| checkout | runs planned | dry-run s, median (range) |\n|---|---|---|\n"
        f"| before (`{args.before.name}`) | {planned['before']} | {fmt_range(times['before'], digits=2)} |\n"
        f"| after (`{args.after.name}`) | {planned['after']} | {fmt_range(times['after'], digits=2)} |\n\n"
        f"after / before per repetition: {', '.join(f'{r:.2f}' for r in ratio)}.\n"
    )
    print(markdown)
    if not args.no_write:
        write_section("plan_sweep", markdown)


if __name__ == "__main__":
    main()

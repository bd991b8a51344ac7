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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import fmt_range, machine, write_section  # noqa: E402

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


def run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOR_")}
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.py").write_text(SCRIPT)
        run(["git", "init", "-q", "-b", "main"], root, env)
        run(["git", "add", "-A"], root, env)
        run(["git", "commit", "-q", "-m", "train"], root, env)
        record_env = {**env, "PYTHONPATH": str(args.after.resolve()), "FLOR_CKPT_PERIOD": "1"}
        for i in range(args.runs):
            run([sys.executable, "train.py", "--kwargs", f"lr={0.01 * (i + 1)}"], root, record_env)
        (root / "train.py").write_text(SCRIPT.replace("        # BODY", '        flor.log("w", model.w)'))
        times = {"before": [], "after": []}
        planned = {}
        load = []
        for rep in range(args.reps):
            order = ["before", "after"] if rep % 2 == 0 else ["after", "before"]
            for which in order:
                checkout = (args.before if which == "before" else args.after).resolve()
                t0 = time.perf_counter()
                done = run([sys.executable, "-m", "flor", "replay", "w", "--dry-run"], root,
                           {**env, "PYTHONPATH": str(checkout)})
                times[which].append(time.perf_counter() - t0)
                planned[which] = done.stdout.count("memo for w")
            load.append(os.getloadavg()[0])
    lines = sorted(SCRIPT.count("\n") for _ in [0])
    ratio = [a / b for a, b in zip(times["after"], times["before"])]
    markdown = (
        "## Planning a sweep: one matching per code version (issue 27)\n\n"
        f"Command: `python benchmarks/plan_sweep.py BEFORE AFTER --runs {args.runs} --reps {args.reps}`. "
        f"Machine: {machine()}, shared (load average {min(load):.1f}-{max(load):.1f} during the timings). "
        f"{args.runs} runs of one version of a {lines[0]}-line script; `flor replay w --dry-run` as a whole process, "
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

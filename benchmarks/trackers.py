"""What flor's tracker hooks cost per logged scalar: ``SummaryWriter.add_scalar`` in a flor.loop,
hooked (FLOR_TRACKERS=1, the default: each value also recorded by flor) against unhooked
(FLOR_TRACKERS=0), the two run alternately in fresh processes and one fresh git repository.

    python benchmarks/trackers.py [--repeat 5] [--calls 10000]

Writes the ``trackers`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import fmt_range, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """\
import sys, time
import flor
from torch.utils.tensorboard import SummaryWriter

calls = int(sys.argv[1])
writer = SummaryWriter("tb")
steps = 500
start = time.perf_counter()
for epoch in flor.loop("epoch", range(calls // steps)):
    for step in flor.loop("step", range(steps)):
        writer.add_scalar("loss", 1.0 / (1 + step), epoch * steps + step)
elapsed = time.perf_counter() - start
writer.close()
print(elapsed)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    options = parser.parse_args()
    times: dict[str, list[float]] = {"1": [], "0": []}
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        (root / "bench.py").write_text(SCRIPT)
        (root / ".gitignore").write_text("tb/\n")
        for command in (["git", "init", "-q"], ["git", "add", "-A"],
                        ["git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "bench"]):
            subprocess.run(command, cwd=root, check=True)
        for _ in range(options.repeat):
            for setting in ("1", "0"):  # alternately
                env = {**os.environ, "FLOR_TRACKERS": setting, "FLOR_QUIET": "1", "PYTHONPATH": str(ROOT)}
                done = subprocess.run([sys.executable, "bench.py", str(options.calls)], cwd=root, env=env,
                                      capture_output=True, text=True, check=True)
                times[setting].append(float(done.stdout.strip().splitlines()[-1]) / options.calls)
    hooked, plain = times["1"], times["0"]
    extra = [h - p for h, p in zip(hooked, plain)]
    rows = [
        "## Tracker hooks: SummaryWriter.add_scalar inside flor.loop",
        "",
        f"Command: `python benchmarks/trackers.py --repeat {options.repeat} --calls {options.calls}` — {machine()}. "
        "Each cell: median (min-max) over the repetitions, the two settings run alternately in fresh processes "
        "(the loop's time only, inside the script).",
        "",
        "| setting | µs per add_scalar call |",
        "|---|---|",
        f"| FLOR_TRACKERS=1 (hooked: also recorded by flor) | {fmt_range(hooked, 1e6, 2)} |",
        f"| FLOR_TRACKERS=0 (TensorBoard alone) | {fmt_range(plain, 1e6, 2)} |",
        f"| difference, pairwise | {fmt_range(extra, 1e6, 2)} |",
    ]
    text = "\n".join(rows)
    print(text)
    if not options.no_write:
        write_section("trackers", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

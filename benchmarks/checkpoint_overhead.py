"""What checkpointing costs a training run: plain PyTorch vs flor vs FlorDB 4.0.1 (issue 3).

    python benchmarks/checkpoint_overhead.py            # full run (~20 min), writes RESULTS.md
    python benchmarks/checkpoint_overhead.py --quick    # smoke run (~3 min)
    python benchmarks/checkpoint_overhead.py --diagnose # plain in both venvs vs flor with/without checkpoints (~3 min)

Three measurements, each in fresh processes and fresh git repositories, the compared variants
alternating within every repetition (the order rotates from one repetition to the next):

1. Standard workload (workloads.STANDARD, an MLP 64-512-512-10 with Adam): the same script plain,
   with flor (default adaptive budget, FLOR_CKPT_BUDGET unset = 1 %), and with FlorDB 4.0.1.
   Overhead = median(variant) / median(plain) - 1, on the training loop timed inside the script
   (perf_counter around the epoch loop) and on the whole process (wall time seen by the parent,
   which includes interpreter start, imports, the git snapshot and the end of the run). The
   checkpoints flor kept are read from its ``checkpoints`` table.
2. Heavy workload (workloads.HEAVY, ~50M parameters, ~600 MB with Adam's state, one or two steps
   per epoch): the same comparison; target <= 3 % loop overhead for flor.
3. Disk: the heavy workload with the first half of its layers frozen, recorded by flor with a
   checkpoint every epoch (FLOR_CKPT_PERIOD=1): bytes of state per run (sum of ``bytes``) vs bytes
   written with content-addressed dedup (sum of ``bytes_written``).

Every child runs with OMP_NUM_THREADS=1 (and MKL/OPENBLAS likewise): on a shared 2-core machine
OpenMP's spinning threads make multi-threaded timings swing by 2x from one run to the next.
"""

from __future__ import annotations

import argparse
import os
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import (  # noqa: E402
    HEAVY, HEAVY_FROZEN, STANDARD, Workload, checkpoints, child_env, flor_python, make_repo, run_script, script,
)

SECTION = "checkpoint_overhead"
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
STANDARD_TARGET, HEAVY_TARGET = 0.01, 0.03


@dataclass
class Config:
    standard: Workload = STANDARD
    heavy: Workload = HEAVY
    frozen: Workload = HEAVY_FROZEN
    standard_reps: int = 7
    heavy_reps: int = 7
    flordb: bool = True
    flordb_heavy: bool = True
    quick: bool = False


@dataclass
class Measured:
    """Per variant: loop seconds, whole-process seconds, and flor's checkpoints per run."""

    loop: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)
    loop_cpu: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    kept: list[list[tuple]] = field(default_factory=list)
    durable: list[float] = field(default_factory=list)  # flor: process start to last checkpoint durable
    losses: dict[str, set] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(workload: Workload, variants: list[str], reps: int, tmp: Path, flordb_py: Path | None) -> Measured:
    """Alternate ``variants`` for ``reps`` repetitions, each run in a fresh repository."""
    result = Measured()
    env = child_env(**THREADS)
    texts = {v: script(workload, v) for v in variants}
    for rep in range(reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for variant in order:
            if variant in result.errors:
                continue
            repo = make_repo(tmp, f"{workload.name}-{variant}-{rep}", {"train.py": texts[variant]})
            python = flordb_py if variant == "flordb" else flor_python()
            try:
                timed = run_script(python, "train.py", repo, env=env)
            except Exception as exc:  # report, keep the other variants going
                result.errors[variant] = str(exc).strip().splitlines()[-1][:300]
                log(f"{workload.name} {variant} failed: {result.errors[variant]}")
                continue
            result.loop.setdefault(variant, []).append(timed.loop_s)
            result.wall.setdefault(variant, []).append(timed.wall_s)
            result.loop_cpu.setdefault(variant, []).append(timed.loop_cpu_s)
            result.cpu.setdefault(variant, []).append(timed.cpu_s)
            result.losses.setdefault(variant, set()).add(round(timed.final_loss, 6))
            if variant == "flor":
                result.kept.append(checkpoints(repo))
                result.durable.append(timed.durable_s)
            log(f"{workload.name} rep {rep} {variant}: loop {timed.loop_s:.2f}s (cpu {timed.loop_cpu_s:.2f}s), "
                f"process {timed.wall_s:.2f}s (cpu {timed.cpu_s:.2f}s)"
                + (f", checkpoints at {[c[0] for c in result.kept[-1]]}" if variant == "flor" else ""))
            shutil.rmtree(repo, ignore_errors=True)
    return result


def disk(workload: Workload, tmp: Path) -> tuple[list[tuple], float]:
    """One flor run of ``workload`` with a checkpoint every epoch: its checkpoints and wall time."""
    repo = make_repo(tmp, f"{workload.name}-disk", {"train.py": script(workload, "flor")})
    timed = run_script(flor_python(), "train.py", repo, env=child_env(FLOR_CKPT_PERIOD="1", **THREADS))
    rows = checkpoints(repo)
    shutil.rmtree(repo, ignore_errors=True)
    return rows, timed.wall_s


def overhead(values: list[float], base: list[float]) -> str:
    return f"{(statistics.median(values) / statistics.median(base) - 1) * 100:+.1f} %"


def kept_summary(kept: list[list[tuple]]) -> str:
    counts = [len(rows) for rows in kept]
    iterations = sorted({tuple(r[0] for r in rows) for rows in kept})
    shown = "; ".join(",".join(str(i) for i in its) for its in iterations[:3])
    more = f" (+{len(iterations) - 3} other patterns)" if len(iterations) > 3 else ""
    return f"{statistics.median(counts):g} ({min(counts)}-{max(counts)}) of {{epochs}}; epochs kept: {shown}{more}"


def paired(values: list[float], base: list[float]) -> list[float]:
    """Per-repetition ratios variant / plain - 1 (each repetition ran both, next to each other)."""
    return [v / b - 1 for v, b in zip(values, base)]


def pct_range(ratios: list[float]) -> str:
    return f"{statistics.median(ratios) * 100:+.1f} % ({min(ratios) * 100:+.1f} to {max(ratios) * 100:+.1f})"


def table(title: str, workload: Workload, m: Measured, target: float | None) -> str:
    lines = [f"**{title}**: {workload.describe()}.", "",
             "| variant | runs | training loop s, median (range) | loop overhead: paired, median (range) "
             "| loop: median vs median | loop: fastest vs fastest | whole process s, median (range) "
             "| process overhead: paired, median (range) | process CPU s (all threads) | process CPU: paired |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base_loop, base_wall = m.loop.get("plain"), m.wall.get("plain")
    for variant in ("plain", "flor", "flordb"):
        if variant not in m.loop:
            if variant in m.errors:
                lines.append(f"| {variant} | 0 | failed: {m.errors[variant]} | | | | | | | |")
            continue
        name = {"plain": "plain PyTorch", "flor": "flor", "flordb": "FlorDB 4.0.1"}[variant]
        compare = variant != "plain" and base_loop
        lp = pct_range(paired(m.loop[variant], base_loop)) if compare else "-"
        lo = overhead(m.loop[variant], base_loop) if compare else "-"
        lf = f"{(min(m.loop[variant]) / min(base_loop) - 1) * 100:+.1f} %" if compare else "-"
        wp = pct_range(paired(m.wall[variant], base_wall)) if compare else "-"
        cp = pct_range(paired(m.cpu[variant], m.cpu["plain"])) if compare else "-"
        lines.append(f"| {name} | {len(m.loop[variant])} | {fmt_range(m.loop[variant], digits=2)} | {lp} | {lo} | {lf} | "
                     f"{fmt_range(m.wall[variant], digits=2)} | {wp} | {fmt_range(m.cpu[variant], digits=2)} | {cp} |")
    lines.append("")
    if m.kept:
        lines.append("flor checkpoints kept per run (checkpoints table): "
                     + kept_summary(m.kept).replace("{epochs}", str(workload.epochs)) + ".")
        snap = [r[4] for rows in m.kept for r in rows if r[4] is not None]
        write = [r[5] for rows in m.kept for r in rows if r[5] is not None]
        if snap:
            lines.append(f"Per checkpoint: snapshot in the training thread {fmt_range(snap, 1000, 1)} ms, "
                         f"background write {fmt_range(write, 1000, 0)} ms, "
                         f"{statistics.median([r[2] for rows in m.kept for r in rows]) / 1e6:.1f} MB of state.")
    if m.durable and "flor" in m.wall and max(m.durable) > max(m.wall["flor"]) + 0.05:
        lines.append(f"flor handed its last checkpoint to a background process (handoff): the run's process "
                     f"ended at {fmt_range(m.wall['flor'], digits=2)} s and the checkpoint was durable at "
                     f"{fmt_range(m.durable, digits=2)} s after the start (the benchmark waits for it before "
                     f"the next run).")
    if target is not None and "flor" in m.loop and base_loop:
        ratio = statistics.median(paired(m.loop["flor"], base_loop))
        spread = statistics.median(abs(r) for r in paired(m.loop["plain"][1:], m.loop["plain"][:-1])) \
            if len(base_loop) > 2 else None
        lines.append(f"Target: flor loop overhead <= {target * 100:.0f} % (median of the paired ratios): "
                     f"{'met' if ratio <= target else 'NOT met'} ({ratio * 100:+.1f} %)."
                     + (f" For scale, two plain runs in a row differ by {spread * 100:.1f} % (median) on this "
                        f"machine." if spread is not None else ""))
    losses = {v: sorted(s) for v, s in m.losses.items()}
    if len({tuple(s) for s in losses.values()}) > 1:
        lines.append(f"Final losses differ between variants: {losses}.")
    return "\n".join(lines)


def diagnose(reps: int, tmp: Path, flordb_py: Path | None) -> str:
    """Where the standard workload's overhead comes from: checkpoints, or the venv and the noise floor.

    Alternates plain (flor's venv), plain (FlorDB's venv), flor (default budget), flor with only the
    forced last checkpoint (FLOR_CKPT_PERIOD=1000) and FlorDB.
    """
    env = child_env(**THREADS)
    cases = [("plain PyTorch, flor's venv", flor_python(), "plain", {}),
             ("flor, default budget", flor_python(), "flor", {}),
             ("flor, FLOR_CKPT_PERIOD=1000 (only the forced last checkpoint)", flor_python(), "flor",
              {"FLOR_CKPT_PERIOD": "1000"})]
    if flordb_py is not None:
        cases[1:1] = [("plain PyTorch, FlorDB's venv", flordb_py, "plain", {})]
        cases.append(("FlorDB 4.0.1", flordb_py, "flordb", {}))
    loop: dict[str, list[float]] = {c[0]: [] for c in cases}
    cpu: dict[str, list[float]] = {c[0]: [] for c in cases}
    for rep in range(reps):
        for i, (name, python, variant, extra) in enumerate(cases):
            repo = make_repo(tmp, f"diag-{rep}-{i}", {"train.py": script(STANDARD, variant)})
            timed = run_script(python, "train.py", repo, env={**env, **extra})
            loop[name].append(timed.loop_s)
            cpu[name].append(timed.loop_cpu_s)
            log(f"diagnose rep {rep} {name}: loop {timed.loop_s:.2f}s (cpu {timed.loop_cpu_s:.2f}s)")
            shutil.rmtree(repo, ignore_errors=True)
    base, base_cpu = loop[cases[0][0]], cpu[cases[0][0]]
    lines = ["## Checkpoint overhead: where the standard workload's overhead comes from (issue 3)", "",
             f"Command: `python benchmarks/checkpoint_overhead.py --diagnose` ({reps} repetitions, cases alternating). "
             f"Machine: {machine()}, shared. {STANDARD.describe()}; OMP_NUM_THREADS=1.", "",
             "| case | training loop s, median (range) | vs plain (flor's venv) | loop CPU s | CPU vs plain |",
             "|---|---|---|---|---|"]
    for name, *_ in cases:
        lines.append(f"| {name} | {fmt_range(loop[name], digits=2)} | {overhead(loop[name], base)} | "
                     f"{fmt_range(cpu[name], digits=2)} | {overhead(cpu[name], base_cpu)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and epochs, a smoke run")
    parser.add_argument("--no-flordb", action="store_true", help="skip FlorDB 4.0.1")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--reps", type=int, help="repetitions of the standard workload (default 7, quick 2)")
    parser.add_argument("--heavy-reps", type=int, help="repetitions of the heavy workload (default 7, quick 1)")
    parser.add_argument("--diagnose", action="store_true",
                        help="only the diagnostic: plain in both venvs, flor with and without per-epoch checkpoints")
    args = parser.parse_args(argv)

    cfg = Config()
    if args.quick:
        cfg = Config(
            standard=dataclasses.replace(STANDARD, samples=4000, epochs=3),
            heavy=dataclasses.replace(HEAVY, epochs=3),
            frozen=dataclasses.replace(HEAVY_FROZEN, epochs=3),
            standard_reps=2, heavy_reps=1, quick=True,
        )
    cfg.standard_reps = args.reps or cfg.standard_reps
    cfg.heavy_reps = args.heavy_reps or cfg.heavy_reps
    cfg.flordb = not args.no_flordb

    flordb_py, flordb_note = None, ""
    if cfg.flordb:
        try:
            from flordb_env import flordb_python

            flordb_py = flordb_python()
        except Exception as exc:
            flordb_note = f"FlorDB 4.0.1 not measured: {exc}"
            log(flordb_note)

    if args.diagnose:
        tmp = Path(tempfile.mkdtemp(prefix="flor-ckpt-bench-"))
        try:
            markdown = diagnose(args.reps or 3, tmp, flordb_py)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(markdown)
        if not args.no_write:
            write_section(SECTION + "_diagnostic", markdown)
        return 0

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="flor-ckpt-bench-"))
    try:
        variants = ["plain", "flor"] + (["flordb"] if flordb_py else [])
        log(f"standard: {cfg.standard.describe()}")
        standard = measure(cfg.standard, variants, cfg.standard_reps, tmp, flordb_py)
        log(f"heavy: {cfg.heavy.describe()}")
        heavy_variants = ["plain", "flor"] + (["flordb"] if flordb_py and cfg.flordb_heavy else [])
        heavy = measure(cfg.heavy, heavy_variants, cfg.heavy_reps, tmp, flordb_py)
        log(f"disk: {cfg.frozen.describe()}")
        frozen_rows, frozen_wall = disk(cfg.frozen, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    command = "python benchmarks/checkpoint_overhead.py" + (" --quick" if cfg.quick else "") + (
        f" --reps {args.reps}" if args.reps else "") + (f" --heavy-reps {args.heavy_reps}" if args.heavy_reps else "")
    total_bytes = sum(r[2] for r in frozen_rows)
    written = sum(r[3] for r in frozen_rows)
    parts = [
        "## Checkpoint overhead (issue 3)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). Machine: {machine()}; load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} when it ended. Each run is a fresh process in a fresh git repository; "
        "variants alternate within each repetition. Every child has OMP_NUM_THREADS=1 (multi-threaded "
        "torch on a loaded 2-core machine swung 2x run to run). Loop = perf_counter around the epoch loop "
        "inside the script; process = wall time of the whole child (interpreter start, imports, git "
        "snapshot, end of run). Paired overhead = variant / plain - 1 within each repetition (the runs were "
        "next to each other, so slow phases of the shared machine hit both), then the median over repetitions; "
        "the medians of each variant and the fastest runs are compared too. Process CPU = rusage of the child, "
        "all threads, flor's background writer included."
        + (" **Quick smoke run: reduced workloads and repetitions; not the issue's numbers.**" if cfg.quick else ""),
        "",
        table("Standard workload", cfg.standard, standard, STANDARD_TARGET),
        "",
        table("Heavy workload", cfg.heavy, heavy, HEAVY_TARGET),
        "",
        f"**Disk with dedup**: {cfg.frozen.describe()}; flor with FLOR_CKPT_PERIOD=1 (one checkpoint per epoch "
        f"requested), one run ({frozen_wall:.1f} s).",
        "",
        "| checkpoints kept | state bytes (sum of `bytes`) | bytes written (sum of `bytes_written`) | written / state |",
        "|---|---|---|---|",
        f"| {len(frozen_rows)} (epochs {','.join(str(r[0]) for r in frozen_rows)}) | {total_bytes / 1e6:,.0f} MB | "
        f"{written / 1e6:,.0f} MB | {written / total_bytes * 100 if total_bytes else 0:.0f} % |",
    ]
    if flordb_note:
        parts += ["", flordb_note]
    parts += ["", "FlorDB 4.0.1's `flor.checkpointing` is retired (a plain `with` that writes nothing; its "
              "replay recomputes from iteration 0), so its numbers show the cost of its logging and end of "
              "run, not of checkpoints."]
    markdown = "\n".join(parts)
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown)
        log(f"wrote section {SECTION!r} of {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

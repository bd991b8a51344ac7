"""How fast hindsight replay recovers a new flor.log on the standard workload (issue 4).

    python benchmarks/replay_speed.py            # full run (~15 min), writes RESULTS.md
    python benchmarks/replay_speed.py --quick    # smoke run (~4 min)
    python benchmarks/replay_speed.py --only d   # thread diagnostic, its own section (~3 min)
    python benchmarks/replay_speed.py --only e   # (a) recorded with a checkpoint every epoch, own section (~1 min)

The workload is workloads.STANDARD (MLP 64-512-512-10, Adam, 10 epochs), recorded by flor with
the default checkpoint budget in a fresh git repository. Today's script then gets one new
statement, left uncommitted in the working tree as a user would, and ``flor replay NAME`` is
timed as a whole process (interpreter start, planning, workers, storing) from the parent.

(a) Memoization: ``flor.log("weight_norm", ...)`` in the epoch body, after the step loop.
    Replay time / recorded time, where recorded time is the whole recording process (and, second,
    the training loop alone). Target <= 10 %. FlorDB 4.0.1 on the same script, recorded by FlorDB
    and replayed with ``python -m flordb replay --apply weight_norm`` (answering its prompt).
(b) Parallelism: ``flor.log("grad_sq", ...)`` inside the step loop, so every step must be
    re-executed. ``--workers 2`` vs ``--workers 1``, alternating, with ``--force`` on the same
    recorded run; speedup = median(w1) / median(w2), target >= 1.6x. Correctness: after every
    replay the replayed values are compared, per (epoch, step), with those of a fresh full run of
    today's script (recorded with the statement in it, same seed).
(c) Five recorded runs of the same script replayed by one ``flor replay grad_sq --workers 2``.
(d) Diagnostic (``--only d``): the plain loop at 1 vs 2 torch threads, and (a)'s replay at
    ``--workers 1`` vs ``--workers 2`` -- flor's executor gives workers cores // workers threads.
(e) (a) recorded with FLOR_CKPT_PERIOD=1 (``--only e``): the replay engine's cost when every epoch
    can be memoized, apart from the adaptive policy's choice of checkpoints.

Recording and ``flor replay`` both run with OMP_NUM_THREADS=1 (as in checkpoint_overhead.py);
flor's executor gives each worker min(cores // workers, the caller's OMP_NUM_THREADS) threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import (  # noqa: E402
    STANDARD, Workload, checkpoints, child_env, flor_cli, flor_python, make_repo, run_command, run_script,
    script,
)

SECTION = "replay_speed"
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
EPOCH_STMT = 'flor.log("weight_norm", float(sum(p.detach().pow(2).sum() for p in net.parameters()) ** 0.5))'
STEP_STMT = 'flor.log("grad_sq", float(sum(p.grad.detach().pow(2).sum() for p in net.parameters())))'
TARGET_MEMO, TARGET_SPEEDUP = 0.10, 1.6


@dataclass
class Config:
    workload: Workload = STANDARD
    reps_a: int = 3
    reps_b: int = 3
    runs_c: int = 5
    reps_c: int = 1
    flordb: bool = True
    quick: bool = False


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def done_line(output: str) -> str:
    """flor replay's closing lines (one per run), shortened."""
    lines = [ln.strip() for ln in output.splitlines() if re.search(r"\b(done|failed|refused|skipped):", ln)]
    return " | ".join(lines)[-600:]


def replayed_values(repo: Path, name: str) -> dict[str, dict[tuple, float]]:
    """tstamp -> {(epoch, step or None): value} of ``name``, read through ``flor.dataframe``.

    The public API rather than SQL, so that the benchmark survives schema changes. A run that
    never logged ``name`` (forward or replayed) has no entry.
    """
    import json
    import subprocess

    code = (
        "import flor, json, sys\n"
        f"df = flor.dataframe({name!r})\n"
        "loops = [c for c in ('epoch', 'step') if c in df.columns]\n"
        f"df = df[df[{name!r}].notna()] if {name!r} in df.columns else df.iloc[0:0]\n"
        "rows = [[r['tstamp'], [None if r[c] != r[c] else int(r[c]) for c in loops], float(r[" + repr(name) + "])]"
        " for r in df.to_dict('records')]\n"
        "json.dump(rows, sys.stdout)\n"
    )
    proc = subprocess.run([str(flor_python()), "-c", code], cwd=repo, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"flor.dataframe({name!r}) failed: {proc.stderr[-800:]}")
    found: dict[str, dict[tuple, float]] = {}
    for tstamp, path, value in json.loads(proc.stdout):
        found.setdefault(tstamp, {})[tuple(path)] = value
    return found


def compare(replayed: dict[tuple, float], reference: dict[tuple, float]) -> str:
    """Exact matches and largest relative difference of replayed values against a fresh run's."""
    common = set(replayed) & set(reference)
    exact = sum(1 for k in common if replayed[k] == reference[k])
    worst = max((abs(replayed[k] - reference[k]) / max(abs(reference[k]), 1e-30) for k in common), default=0.0)
    missing = len(set(reference) - set(replayed))
    return f"{exact}/{len(reference)} equal, max rel. diff {worst:.1e}" + (f", {missing} missing" if missing else "")


def record(repo: Path, env: dict[str, str]):
    return run_script(flor_python(), "train.py", repo, env=env)


def flor_replay(repo: Path, *args: str) -> tuple[float, str]:
    # The same environment as the recording: flor's executor caps worker threads by it.
    wall, rc, out = run_command([*flor_cli(), "replay", *args], repo, env=child_env(**THREADS), check=False)
    if rc != 0:
        raise RuntimeError(f"flor replay {' '.join(args)} exited {rc}: {out[-1500:]}")
    return wall, out


# -- (a) memoization --------------------------------------------------------------------------


def part_a(cfg: Config, tmp: Path, flordb_py: Path | None) -> dict:
    env = child_env(**THREADS)
    res: dict = {"dry": [], "plan": "", "rec_setup": [], "rec_wall": [], "rec_loop": [], "replay": [], "ratio_wall": [], "ratio_loop": [], "values": [],
                 "kept": [], "lines": [], "fdb_rec_wall": [], "fdb_rec_loop": [], "fdb_replay": [],
                 "fdb_ratio": [], "fdb_values": [], "fdb_error": None}
    recorded, today = script(cfg.workload, "flor"), script(cfg.workload, "flor", epoch_stmt=EPOCH_STMT)
    for rep in range(cfg.reps_a):
        repo = make_repo(tmp, f"a-flor-{rep}", {"train.py": recorded})
        rec = record(repo, env)
        (repo / "train.py").write_text(today)
        dry, dry_out = flor_replay(repo, "weight_norm", "--dry-run")
        res["dry"].append(dry)
        res["plan"] = " | ".join(ln.strip() for ln in dry_out.strip().splitlines())[-400:]
        wall, out = flor_replay(repo, "weight_norm")
        values = replayed_values(repo, "weight_norm")
        res["rec_wall"].append(rec.wall_s)
        res["rec_loop"].append(rec.loop_s)
        res["rec_setup"].append(rec.setup_s)
        res["replay"].append(wall)
        res["ratio_wall"].append(wall / rec.wall_s)
        res["ratio_loop"].append(wall / rec.loop_s)
        res["values"].append(sum(len(v) for v in values.values()))
        res["kept"].append(len(checkpoints(repo)))
        res["lines"].append(done_line(out))
        log(f"(a) rep {rep} flor: recorded {rec.wall_s:.2f}s (loop {rec.loop_s:.2f}s), replay {wall:.2f}s "
            f"= {wall / rec.wall_s * 100:.1f} %, {res['values'][-1]} values; {res['lines'][-1]}")
        shutil.rmtree(repo, ignore_errors=True)
        if flordb_py is not None and res["fdb_error"] is None:
            try:
                part_a_flordb(cfg, tmp, flordb_py, rep, res)
            except Exception as exc:
                res["fdb_error"] = str(exc).strip()[-400:]
                log(f"(a) FlorDB failed: {res['fdb_error']}")
    return res


def part_a_flordb(cfg: Config, tmp: Path, flordb_py: Path, rep: int, res: dict) -> None:
    """Record with FlorDB, add the statement, and time ``python -m flordb replay --apply weight_norm``."""
    repo = make_repo(tmp, f"a-flordb-{rep}", {"train.py": script(cfg.workload, "flordb")})
    env = child_env(**THREADS)
    env["PATH"] = f"{flordb_py.parent}{os.pathsep}{env.get('PATH', '')}"  # its replay runs `python`
    rec = run_script(flordb_py, "train.py", repo, env=env)
    (repo / "train.py").write_text(script(cfg.workload, "flordb", epoch_stmt=EPOCH_STMT))
    wall, rc, out = run_command([str(flordb_py), "-m", "flordb", "replay", "--apply", "weight_norm"], repo,
                                env=env, stdin="y\n", check=False)
    if rc != 0 or "Traceback" in out:
        raise RuntimeError(f"FlorDB replay exited {rc}: {out[-800:]}")
    import sqlite3

    dbs = list((repo / ".flor").glob("*.db"))
    count = 0
    for path in dbs:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            try:
                count += db.execute("SELECT count(*) FROM logs WHERE value_name = 'weight_norm'").fetchone()[0]
            except sqlite3.Error:
                count = -1
    res["fdb_rec_wall"].append(rec.wall_s)
    res["fdb_rec_loop"].append(rec.loop_s)
    res["fdb_replay"].append(wall)
    res["fdb_ratio"].append(wall / rec.wall_s)
    res["fdb_values"].append(count)
    log(f"(a) rep {rep} FlorDB: recorded {rec.wall_s:.2f}s (loop {rec.loop_s:.2f}s), replay {wall:.2f}s "
        f"= {wall / rec.wall_s * 100:.1f} %, {count} values")
    shutil.rmtree(repo, ignore_errors=True)


# -- (b) parallelism --------------------------------------------------------------------------


def part_b(cfg: Config, tmp: Path) -> dict:
    env = child_env(**THREADS)
    res: dict = {"w1": [], "w2": [], "check": {1: [], 2: []}, "lines": {1: [], 2: []}}
    repo = make_repo(tmp, "b-flor", {"train.py": script(cfg.workload, "flor")})
    rec = record(repo, env)
    res["rec_wall"], res["rec_loop"], res["kept"] = rec.wall_s, rec.loop_s, len(checkpoints(repo))
    today = script(cfg.workload, "flor", step_stmt=STEP_STMT)
    # The reference: a fresh full run of today's script, which logs grad_sq as it trains.
    fresh_repo = make_repo(tmp, "b-fresh", {"train.py": today})
    fresh = record(fresh_repo, env)
    reference = next(iter(replayed_values(fresh_repo, "grad_sq").values()))
    res["fresh_wall"] = fresh.wall_s
    log(f"(b) recorded {rec.wall_s:.2f}s (loop {rec.loop_s:.2f}s, {res['kept']} checkpoints); "
        f"fresh run with grad_sq {fresh.wall_s:.2f}s, {len(reference)} values")
    (repo / "train.py").write_text(today)
    first = True
    for rep in range(cfg.reps_b):
        for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
            args = ["grad_sq", "--workers", str(workers)] + ([] if first else ["--force"])
            first = False
            wall, out = flor_replay(repo, *args)
            values = next(iter(replayed_values(repo, "grad_sq").values()), {})
            check = compare(values, reference)
            res[f"w{workers}"].append(wall)
            res["check"][workers].append(check)
            res["lines"][workers].append(done_line(out))
            log(f"(b) rep {rep} --workers {workers}: {wall:.2f}s; vs fresh run: {check}; {res['lines'][workers][-1]}")
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(fresh_repo, ignore_errors=True)
    return res


# -- (c) five runs ----------------------------------------------------------------------------


def part_c(cfg: Config, tmp: Path) -> dict:
    env = child_env(**THREADS)
    res: dict = {"total": [], "rec_wall": [], "lines": [], "values": []}
    for rep in range(cfg.reps_c):
        repo = make_repo(tmp, f"c-flor-{rep}", {"train.py": script(cfg.workload, "flor")})
        for _ in range(cfg.runs_c):
            res["rec_wall"].append(record(repo, env).wall_s)
            time.sleep(1.05)  # runs are named by the second they start in
        (repo / "train.py").write_text(script(cfg.workload, "flor", step_stmt=STEP_STMT))
        wall, out = flor_replay(repo, "grad_sq", "--workers", "2")
        values = replayed_values(repo, "grad_sq")
        res["total"].append(wall)
        res["values"].append(sorted(len(v) for v in values.values()))
        res["lines"].append(done_line(out))
        log(f"(c) rep {rep}: {cfg.runs_c} runs in {wall:.2f}s ({wall / cfg.runs_c:.2f}s per run); "
            f"values per run {res['values'][-1]}; {res['lines'][-1]}")
        shutil.rmtree(repo, ignore_errors=True)
    return res


# -- (d) threads diagnostic --------------------------------------------------------------------


def part_d(cfg: Config, tmp: Path, reps: int = 2) -> dict:
    """Why --workers 1 is slow here: torch thread count, and the memo replay at 1 vs 2 workers.

    flor's executor gives each worker OMP_NUM_THREADS = cores // workers, so ``--workers 1`` runs
    the replayed script with 2 threads on this 2-core machine while the recording used 1.
    """
    res: dict = {"t1": [], "t2": [], "a_w1": [], "a_w2": [], "a_rec": [], "short": None}
    short = dataclasses.replace(cfg.workload, epochs=3)
    res["short"] = short
    repo = make_repo(tmp, "d-plain", {"train.py": script(short, "plain")})
    for rep in range(reps):
        for threads in ((1, 2) if rep % 2 == 0 else (2, 1)):
            env = child_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                            OPENBLAS_NUM_THREADS=str(threads))
            timed = run_script(flor_python(), "train.py", repo, env=env)
            res[f"t{threads}"].append(timed.loop_s)
            log(f"(d) rep {rep} plain {short.epochs} epochs, {threads} thread(s): loop {timed.loop_s:.2f}s")
    shutil.rmtree(repo, ignore_errors=True)
    env = child_env(**THREADS)
    for rep in range(reps):
        repo = make_repo(tmp, f"d-memo-{rep}", {"train.py": script(cfg.workload, "flor")})
        rec = record(repo, env)
        res["a_rec"].append(rec.wall_s)
        (repo / "train.py").write_text(script(cfg.workload, "flor", epoch_stmt=EPOCH_STMT))
        order = (1, 2) if rep % 2 == 0 else (2, 1)
        for i, workers in enumerate(order):
            wall, out = flor_replay(repo, "weight_norm", "--workers", str(workers), *(["--force"] if i else []))
            res[f"a_w{workers}"].append(wall)
            log(f"(d) rep {rep} memo replay --workers {workers}: {wall:.2f}s (recorded {rec.wall_s:.2f}s); {done_line(out)}")
        shutil.rmtree(repo, ignore_errors=True)
    return res


def render_d(cfg: Config, d: dict, command: str, elapsed: float) -> str:
    short = d["short"]
    return "\n".join([
        "## Replay speed: thread diagnostic (issue 4)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). Machine: {machine()}, shared and loaded. Row 1: the cost "
        "of 2 torch threads on this loaded 2-core machine. Row 2: (a)'s replay at 1 and 2 workers; flor's executor "
        "gives each worker min(cores // workers, the caller's OMP_NUM_THREADS) threads, and this benchmark calls "
        "`flor replay` with OMP_NUM_THREADS=1 as the recording had (before a fix to flor/replay/executor.py at "
        "13:34 today, `--workers 1` got 2 threads regardless).",
        "",
        "| measurement | row 1: 1 thread; row 2: --workers 2 | row 1: 2 threads; row 2: --workers 1 | ratio |",
        "|---|---|---|---|",
        f"| plain training loop, {short.describe()} | {fmt_range(d['t1'], digits=2)} s | {fmt_range(d['t2'], digits=2)} s | "
        f"{statistics.median(d['t2']) / statistics.median(d['t1']):.2f}x |",
        f"| `flor replay weight_norm` (epoch-body statement, memo), standard workload; recorded runs "
        f"{fmt_range(d['a_rec'], digits=2)} s | {fmt_range(d['a_w2'], digits=2)} s "
        f"({statistics.median(d['a_w2']) / statistics.median(d['a_rec']) * 100:.0f} % of recorded) | "
        f"{fmt_range(d['a_w1'], digits=2)} s ({statistics.median(d['a_w1']) / statistics.median(d['a_rec']) * 100:.0f} % of recorded) | "
        f"{statistics.median(d['a_w1']) / statistics.median(d['a_w2']):.2f}x |",
    ])


# -- (e) memo replay with a checkpoint every epoch ---------------------------------------------


def part_e(cfg: Config, tmp: Path, reps: int = 2) -> dict:
    """(a) again, recorded with FLOR_CKPT_PERIOD=1, so that every epoch can be memoized.

    Separates the replay engine's own cost from the adaptive policy's choice of checkpoints.
    """
    res: dict = {"rec": [], "loop": [], "kept": [], "w1": [], "w2": [], "plan": ""}
    env = child_env(FLOR_CKPT_PERIOD="1", **THREADS)
    for rep in range(reps):
        repo = make_repo(tmp, f"e-memo-{rep}", {"train.py": script(cfg.workload, "flor")})
        rec = record(repo, env)
        res["rec"].append(rec.wall_s)
        res["loop"].append(rec.loop_s)
        res["kept"].append(len(checkpoints(repo)))
        (repo / "train.py").write_text(script(cfg.workload, "flor", epoch_stmt=EPOCH_STMT))
        _dry, dry_out = flor_replay(repo, "weight_norm", "--dry-run")
        res["plan"] = " | ".join(ln.strip() for ln in dry_out.strip().splitlines())[-300:]
        order = (1, 2) if rep % 2 == 0 else (2, 1)
        for i, workers in enumerate(order):
            wall, out = flor_replay(repo, "weight_norm", "--workers", str(workers), *(["--force"] if i else []))
            res[f"w{workers}"].append(wall)
            log(f"(e) rep {rep} memo replay --workers {workers}: {wall:.2f}s (recorded {rec.wall_s:.2f}s, "
                f"{res['kept'][-1]} checkpoints); {done_line(out)}")
        shutil.rmtree(repo, ignore_errors=True)
    return res


def render_e(cfg: Config, e: dict, command: str, elapsed: float) -> str:
    rec = statistics.median(e["rec"])
    rows = [f"| {w} | {fmt_range(e[f'w{w}'], digits=2)} | {statistics.median(e[f'w{w}']) / rec * 100:.0f} % | "
            f"{statistics.median(e[f'w{w}']) / statistics.median(e['loop']) * 100:.0f} % |" for w in (1, 2)]
    return "\n".join([
        "## Replay speed: memo replay with a checkpoint every epoch (issue 4)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). Machine: {machine()}, shared and loaded. As (a) of "
        f"the replay section, but recorded with FLOR_CKPT_PERIOD=1 ({sorted(set(e['kept']))} checkpoints kept), "
        f"so no epoch has to be re-executed. Recorded runs {fmt_range(e['rec'], digits=2)} s whole process, "
        f"loop {fmt_range(e['loop'], digits=2)} s. Plan: `{e['plan']}`",
        "",
        "| workers | `flor replay weight_norm` s | replay / recorded run | replay / recorded loop |",
        "|---|---|---|---|",
        *rows,
    ])


# -- report -----------------------------------------------------------------------------------


def pct(values: list[float]) -> str:
    return fmt_range(values, 100, 1) + " %"


def render(cfg: Config, a: dict, b: dict, c: dict, elapsed: float, command: str, flordb_note: str) -> str:
    w = cfg.workload
    lines = [
        "## Replay speed (issue 4)" + ("" if w.samples == STANDARD.samples else f", {w.samples:,} samples"),
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). Machine: {machine()}, shared with other jobs "
        "(load average often 4-9 on 2 cores). Workload: " + w.describe() + ", recorded by flor with the "
        "default checkpoint budget, OMP_NUM_THREADS=1. Replay times are whole `flor replay` processes timed "
        "by the parent (interpreter start, planning, workers, storing); per run = total / runs."
        + (" **Quick smoke run: reduced workload and repetitions; not the issue's numbers.**" if cfg.quick else ""),
    ]
    if a["replay"] or a["fdb_replay"] or a.get("fdb_error"):
        lines += [
            "",
            f"**(a) New statement in the epoch body** (`{EPOCH_STMT}` after the step loop): "
            f"{len(a['replay'])} repetitions, each a fresh recording then `flor replay weight_norm`.",
            "",
            "| system | recorded run s (whole process) | recorded loop s | replay s (total = per run) | replay / recorded run | replay / recorded loop | values recovered |",
            "|---|---|---|---|---|---|---|",
        ]
    if a["replay"]:
        lines.append(f"| flor | {fmt_range(a['rec_wall'], digits=2)} | {fmt_range(a['rec_loop'], digits=2)} | "
                     f"{fmt_range(a['replay'], digits=2)} | {pct(a['ratio_wall'])} | {pct(a['ratio_loop'])} | "
                     f"{sorted(set(a['values']))} of {w.epochs} |")
    if a["fdb_replay"]:
        fdb_loop = [r / l for r, l in zip(a["fdb_replay"], a["fdb_rec_loop"])]
        lines.append(f"| FlorDB 4.0.1 | {fmt_range(a['fdb_rec_wall'], digits=2)} | {fmt_range(a['fdb_rec_loop'], digits=2)} | "
                     f"{fmt_range(a['fdb_replay'], digits=2)} | {pct(a['fdb_ratio'])} | {pct(fdb_loop)} | "
                     f"{sorted(set(a['fdb_values']))} rows named weight_norm in its db |")
    elif a.get("fdb_error"):
        lines.append(f"| FlorDB 4.0.1 | not measured: {a['fdb_error'].splitlines()[-1][:200]} | | | | | |")
    elif flordb_note and a["replay"]:
        lines.append(f"| FlorDB 4.0.1 | not measured: {flordb_note} | | | | | |")
    if a["replay"]:
        ratio = statistics.median(a["ratio_wall"])
        lines += ["", f"Target replay / recorded <= {TARGET_MEMO * 100:.0f} %: "
                  f"{'met' if ratio <= TARGET_MEMO else 'NOT met'} ({ratio * 100:.1f} % of the whole recorded process; "
                  f"{statistics.median(a['ratio_loop']) * 100:.1f} % of its training loop). flor kept "
                  f"{sorted(set(a['kept']))} checkpoints per recorded run. Closing line: `{a['lines'][-1]}`",
                  "", f"Where the fixed cost lies: `flor replay weight_norm --dry-run` (CLI start, planning, "
                  f"propagation; no worker) took {fmt_range(a['dry'], digits=2)} s; the recorded script spent "
                  f"{fmt_range(a['rec_setup'], digits=2)} s from its first line to the training loop (torch import, "
                  f"data, model; creating the optimizer imports torch._dynamo, which a replay worker skips: "
                  f"docs/design-notes.md), which a replay worker pays again. Plan: `{a['plan']}`"]
    if b:
        speedup = statistics.median(b["w1"]) / statistics.median(b["w2"]) if b["w1"] and b["w2"] else float("nan")
        pairs = [x / y for x, y in zip(b["w1"], b["w2"])]
        lines += [
            "",
            f"**(b) New statement inside the step loop** (`{STEP_STMT}`): every step re-executed. One recorded run "
            f"({b['rec_wall']:.2f} s whole process, loop {b['rec_loop']:.2f} s, {b['kept']} checkpoints kept); "
            f"replays alternate `--workers 1` / `--workers 2` ({len(b['w1'])} each; `--force` after the first). "
            f"Correctness: replayed grad_sq per (epoch, step) vs a fresh full run of today's script "
            f"({b['fresh_wall']:.2f} s).",
            "",
            "| workers | replay s (total = per run), median (range) | replay / recorded run | vs fresh run (each replay) |",
            "|---|---|---|---|",
        ]
        for workers in (1, 2):
            times = b[f"w{workers}"]
            if times:
                lines.append(f"| {workers} | {fmt_range(times, digits=2)} | "
                             f"{statistics.median(times) / b['rec_wall'] * 100:.0f} % | {'; '.join(b['check'][workers])} |")
        lines += ["", f"Speedup median(w1)/median(w2) = **{speedup:.2f}x** (per alternating pair: "
                  + ", ".join(f"{p:.2f}" for p in pairs) + f"); target >= {TARGET_SPEEDUP}x: "
                  f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}. Closing line (w2): `{b['lines'][2][-1] if b['lines'][2] else ''}`"]
    if c and c["total"]:
        n = cfg.runs_c
        lines += [
            "",
            f"**(c) {n} runs at once**: {n} recordings of the same script in one repository "
            f"(each {fmt_range(c['rec_wall'], digits=2)} s), then `flor replay grad_sq --workers 2` (step-loop "
            "statement, full re-execution).",
            "",
            "| runs | replay s total, median (range) | per run s | values per run |",
            "|---|---|---|---|",
            f"| {n} | {fmt_range(c['total'], digits=2)} | {statistics.median(c['total']) / n:.2f} | {c['values'][-1]} |",
            "",
            f"Closing lines: `{c['lines'][-1]}`",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workload and fewer repetitions, a smoke run")
    parser.add_argument("--no-flordb", action="store_true", help="skip FlorDB 4.0.1")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--only", choices=["a", "b", "c", "d", "e"], action="append", help="run only these parts")
    parser.add_argument("--samples", type=int, help="samples of the workload (default 32000); its own section")
    parser.add_argument("--reps", type=int, help="repetitions of (a) and (b) (default 3)")
    args = parser.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(workload=dataclasses.replace(STANDARD, samples=2000, epochs=4), reps_a=1, reps_b=1, runs_c=2,
                     quick=True)
    cfg.flordb = not args.no_flordb
    section = SECTION
    if args.samples:
        cfg.workload = dataclasses.replace(cfg.workload, samples=args.samples)
        section = f"{SECTION}_{args.samples}_samples"
    if args.reps:
        cfg.reps_a = cfg.reps_b = args.reps
    parts = set(args.only or ["a", "b", "c"])
    if "d" in parts:  # the diagnostic writes its own section
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="flor-replay-bench-"))
        try:
            d = part_d(cfg, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        markdown = render_d(cfg, d, "python benchmarks/replay_speed.py --only d",
                            time.perf_counter() - started)
        print(markdown)
        if not args.no_write:
            write_section(SECTION + "_threads", markdown)
        parts.discard("d")
    if "e" in parts:  # writes its own section too
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="flor-replay-bench-"))
        try:
            e = part_e(cfg, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        markdown = render_e(cfg, e, "python benchmarks/replay_speed.py --only e", time.perf_counter() - started)
        print(markdown)
        if not args.no_write:
            write_section(SECTION + "_every_epoch", markdown)
        parts.discard("e")
    if not parts:
        return 0

    flordb_py, flordb_note = None, ""
    if cfg.flordb and "a" in parts:
        try:
            from flordb_env import flordb_python

            flordb_py = flordb_python()
        except Exception as exc:
            flordb_note = f"cannot build the FlorDB venv: {exc}"
    elif not cfg.flordb:
        flordb_note = "skipped (--no-flordb)"

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="flor-replay-bench-"))
    a: dict = {"replay": [], "fdb_replay": [], "fdb_error": None}
    b: dict = {}
    c: dict = {}
    try:
        if "a" in parts:
            a = part_a(cfg, tmp, flordb_py)
        if "b" in parts:
            b = part_b(cfg, tmp)
        if "c" in parts:
            c = part_c(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    command = "python benchmarks/replay_speed.py" + " ".join([""] + (argv if argv is not None else sys.argv[1:]))
    markdown = render(cfg, a, b, c, elapsed, command.strip(), flordb_note)
    print(markdown)
    if not args.no_write:
        write_section(section, markdown)
        log(f"wrote section {section!r} of {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

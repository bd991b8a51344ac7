"""What recording costs: flor.log in loops, the end of a run, import flor, and flor.dataframe.

    python benchmarks/record_overhead.py            # full run (~10 min), rewrites its RESULTS.md section
    python benchmarks/record_overhead.py --quick --no-flordb --no-write   # smoke run (~10 s idle)

Options: ``--quick`` (small counts, few repetitions), ``--no-flordb`` (skip FlorDB: no venv, no
network), ``--no-write`` (print only), ``--only import log tutorial dataframe`` (a subset; never
writes), ``--reps N``, ``--json PATH`` (raw measurements), ``--tutorial PATH`` (another script in
place of the tutorial; never writes).

Four measurements, each over alternating repetitions (the order rotates every repetition) in
fresh processes, reported as median (min-max), with FlorDB 4.0.1 (PyPI, in its own venv: see
flordb_env.py) side by side:

1. ``flor.log`` inside two nested ``flor.loop``s: 1000 x 1000 calls for flor, 100 x 300 for
   FlorDB (about 130 µs a call here, so 1M calls would take minutes). A script runs the same
   nested loop plain and recorded, in a fresh git repository each time (git init, one commit,
   isolated from the user's git config); the loop alone is timed with perf_counter inside the
   process. It includes the run's start at the first flor.loop and the background flush and git
   snapshot threads that run meanwhile. Per call = (recorded loop - plain loop) / calls, paired
   within one repetition. The end of the run (``flor.commit()``) is timed separately, and the
   number of stored values is checked.
2. End of run on the tutorial (examples/tutorial/train.py, default args, fresh git repository):
   a wrapper runs the script with runpy, then times what ``atexit`` would do,
   ``flor.api.current_run().end()`` (final flush, join of the git snapshot thread, status update);
   for FlorDB, the same script with ``import flordb as flor`` and ``flordb.commit()``.
3. ``python -c "import flor"`` minus ``python -c "pass"``, paired per repetition, in a git
   repository (FlorDB's import needs one); plus ``-X importtime`` for where the time goes.
4. ``flor.dataframe("loss")`` over 1,000,000 stored log rows (built once by a 1000 x 1000 loop),
   timed inside fresh processes around the call only (it includes flor's lazy pandas import);
   flor and FlorDB also over 100,000 rows, side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TUTORIAL = ROOT / "examples" / "tutorial" / "train.py"
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402
from workloads import child_env, make_repo  # noqa: E402

COMMAND = "python benchmarks/record_overhead.py"
SECTION = "record_overhead"
TARGETS = {"log_us": 1.0, "tutorial_end_s": 0.2, "import_s": 0.15, "dataframe_s": 1.5}

# The child script of measurement 1: the same nested loop, plain or recorded.
LOG_SCRIPT = r'''
import json, sys, time
variant, outer, inner, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
del sys.argv[1:]
t0 = time.perf_counter()
if variant == "flor":
    import flor
elif variant == "flordb":
    import flordb as flor
import_s = time.perf_counter() - t0
end_s = end_cpu_s = 0.0
if variant == "plain":
    c0, t0 = time.process_time(), time.perf_counter()
    for epoch in range(outer):
        for step in range(inner):
            loss = step * 0.5
    loop_s, loop_cpu_s = time.perf_counter() - t0, time.process_time() - c0
else:
    c0, t0 = time.process_time(), time.perf_counter()
    for epoch in flor.loop("epoch", range(outer)):
        for step in flor.loop("step", range(inner)):
            loss = flor.log("loss", step * 0.5)
    loop_s, loop_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    flor.commit()
    end_s, end_cpu_s = time.perf_counter() - t0, time.process_time() - c0
with open(out, "w") as f:
    json.dump({"import_s": import_s, "loop_s": loop_s, "end_s": end_s, "loop_cpu_s": loop_cpu_s,
               "end_cpu_s": end_cpu_s, "done_at": time.time()}, f)
'''

# Runs the tutorial as __main__, then times the end of the run that atexit would otherwise do.
TUTORIAL_WRAPPER = r'''
import json, runpy, sys, time
variant, script, out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.argv = [script, *sys.argv[4:]]
t0 = time.perf_counter()
runpy.run_path(script, run_name="__main__")
body_s = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
if variant == "flor":
    import flor.api
    run = flor.api.current_run()
    assert run is not None and not run.ended, "the tutorial's run should still be open"
    run.end()
else:
    import flordb
    flordb.commit()
end_s, end_cpu_s = time.perf_counter() - t0, time.process_time() - c0
with open(out, "w") as f:
    json.dump({"body_s": body_s, "end_s": end_s, "end_cpu_s": end_cpu_s, "done_at": time.time()}, f)
'''

# Times one flor.dataframe call in a fresh process (python -c, so FlorDB records no run).
DATAFRAME_CODE = r'''
import json, sys, time
variant, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if variant == "flor":
    import flor
else:
    import flordb as flor
import_s = time.perf_counter() - t0
t0 = time.perf_counter()
c0 = time.process_time()
df = flor.dataframe(name)
dataframe_s, dataframe_cpu_s = time.perf_counter() - t0, time.process_time() - c0
with open(out, "w") as f:
    json.dump({"import_s": import_s, "dataframe_s": dataframe_s, "dataframe_cpu_s": dataframe_cpu_s, "rows": len(df),
               "columns": [str(c) for c in df.columns]}, f)
'''


@dataclass
class Config:
    reps: int = 7
    import_reps: int = 15
    dataframe_reps: int = 7
    tutorial_reps: int = 7
    flor_loop: tuple[int, int] = (1000, 1000)
    flordb_loop: tuple[int, int] = (100, 300)
    dataframe_loop: tuple[int, int] = (1000, 1000)
    flordb_dataframe_loop: tuple[int, int] = (100, 1000)
    tutorial_args: tuple[str, ...] = ()
    tutorial: Path = TUTORIAL
    quick: bool = False


QUICK = Config(
    reps=3, import_reps=3, dataframe_reps=2, tutorial_reps=1,
    flor_loop=(50, 200), flordb_loop=(10, 100), dataframe_loop=(50, 200),
    flordb_dataframe_loop=(10, 100), tutorial_args=("--kwargs", "epochs=1"), quick=True,
)


@dataclass
class Results:
    config: Config
    flor_python: str
    flordb_python: str | None = None
    flordb_error: str | None = None
    log: dict[str, list] = field(default_factory=dict)
    tutorial: dict[str, list] = field(default_factory=dict)
    imports: dict[str, list] = field(default_factory=dict)
    imports_cpu: dict[str, list] = field(default_factory=dict)
    import_profile: list[tuple[str, float]] = field(default_factory=list)
    heavy_modules: dict[str, bool] = field(default_factory=dict)
    dataframe: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    flor_version: str = ""


# -- processes and repositories ------------------------------------------------------------


# Children never buffer differently from a terminal run.
ENV = child_env(PYTHONUNBUFFERED="0")


class Child(float):
    """Wall seconds of a finished child process, with the tail of what it wrote to stderr."""

    stderr: str = ""
    cpu: float = 0.0  # user + sys seconds of the child and the processes it waited for


def run_child(cmd: list[str], cwd: Path, timeout: float = 900) -> Child:
    """Run ``cmd`` with stdout discarded; return its wall seconds (and stderr tail). Fails loudly."""
    with tempfile.TemporaryFile() as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
        wall = Child(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        err.seek(max(0, err.seek(0, os.SEEK_END) - 3000))
        wall.stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}):\n{wall.stderr}")
    return wall


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    path.unlink()
    return data


def count_logs(repo: Path, variant: str, name: str = "loss") -> int:
    """How many values the run stored under ``name`` (a check that it really recorded)."""
    if variant == "flor":
        db, sql = repo / ".flor" / "flor.db", "SELECT COUNT(*) FROM logs WHERE name = ?"
    else:
        db, sql = repo / ".flor" / f"{repo.name}.db", "SELECT COUNT(*) FROM logs WHERE value_name = ?"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, (name,)).fetchone()[0]
    finally:
        conn.close()


def rotated(items: list, rep: int) -> list:
    """``items`` in a different order each repetition, so no variant always runs first."""
    k = rep % len(items)
    return items[k:] + items[:k]


def flor_version() -> str:
    """The commit of the flor under test, marked when flor/ has uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "flor"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' + uncommitted changes in flor/' if dirty else ''}"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- 1. flor.log in nested loops --------------------------------------------------------------


def bench_log(res: Results, work: Path) -> None:
    cfg = res.config
    variants = [("plain", res.flor_python, cfg.flor_loop), ("flor", res.flor_python, cfg.flor_loop)]
    if res.flordb_python:
        variants += [("plain-flordb", res.flordb_python, cfg.flordb_loop),
                     ("flordb", res.flordb_python, cfg.flordb_loop)]
    out = work / "log.json"
    counter = 0
    for rep in range(cfg.reps):
        for variant, python, (outer, inner) in rotated(variants, rep):
            counter += 1
            kind = variant.split("-")[0]
            # The script lies in the repository, as a user's would: flor finds the project from it.
            repo = make_repo(work, f"log{counter}", {"log_script.py": LOG_SCRIPT})
            wall = run_child([python, "log_script.py", kind, str(outer), str(inner), str(out)], cwd=repo)
            data = read_json(out)
            data["wall_s"] = float(wall)
            if kind != "plain":
                stored = count_logs(repo, kind)
                if stored != outer * inner:
                    raise RuntimeError(f"{variant} stored {stored} of {outer * inner} logged values; "
                                       f"its stderr ended with:\n{wall.stderr}")
            res.log.setdefault(variant, []).append(data)
            shutil.rmtree(repo)
        say(f"  log rep {rep + 1}/{cfg.reps}: " + ", ".join(
            f"{v} {res.log[v][-1]['loop_s']:.3f}s" for v, _, _ in variants))


def per_call_us(res: Results, plain: str, recorded: str, calls: int, with_end: bool = False,
                key: str = "") -> list[float]:
    """(recorded - plain) / calls in microseconds, paired within each repetition (``key="cpu"``:
    process CPU time instead of wall time)."""
    loop, end = ("loop_cpu_s", "end_cpu_s") if key == "cpu" else ("loop_s", "end_s")
    out = []
    for p, r in zip(res.log[plain], res.log[recorded]):
        extra = r[loop] + (r[end] if with_end else 0.0) - p[loop]
        out.append(extra / calls * 1e6)
    return out


# -- 2. end of run on the tutorial ------------------------------------------------------------


def bench_tutorial(res: Results, work: Path) -> None:
    cfg = res.config
    wrapper = work / "tutorial_wrapper.py"
    wrapper.write_text(TUTORIAL_WRAPPER)
    source = cfg.tutorial.read_text()
    variants = [("flor", res.flor_python, source)]
    if res.flordb_python:
        flordb_source = source.replace("\nimport flor\n", "\nimport flordb as flor\n")
        assert flordb_source != source
        variants.append(("flordb", res.flordb_python, flordb_source))
    out = work / "tutorial.json"
    counter = 0
    for rep in range(cfg.tutorial_reps):
        for variant, python, text in rotated(variants, rep):
            counter += 1
            repo = make_repo(work, f"tutorial{counter}", {"train.py": text})
            cmd = [python, str(wrapper), variant, str(repo / "train.py"), str(out), *cfg.tutorial_args]
            wall = run_child(cmd, cwd=repo)
            after = time.time()
            data = read_json(out)
            data["wall_s"] = float(wall)
            data["exit_s"] = after - data.pop("done_at")
            if variant == "flor":
                status = _flor_status(repo)
                if status != "finished":
                    raise RuntimeError(f"the tutorial's flor run ended with status {status!r}")
            res.tutorial.setdefault(variant, []).append(data)
            shutil.rmtree(repo)
        say(f"  tutorial rep {rep + 1}/{cfg.tutorial_reps}: " + ", ".join(
            f"{v} end {res.tutorial[v][-1]['end_s']:.3f}s" for v, _, _ in variants))


def _flor_status(repo: Path) -> str:
    conn = sqlite3.connect(f"file:{repo / '.flor' / 'flor.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT status FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()


# -- 3. import time -----------------------------------------------------------------------------


def bench_import(res: Results, work: Path) -> None:
    cfg = res.config
    # Both in one fresh git repository: FlorDB's import needs one (and writes .flor/ there).
    repo = make_repo(work, "imports", {"README.md": "benchmark\n"})
    variants = [("pass", res.flor_python, "pass"), ("flor", res.flor_python, "import flor"),
                ("pandas", res.flor_python, "import pandas")]
    if res.flordb_python:
        variants += [("pass-flordb", res.flordb_python, "pass"), ("flordb", res.flordb_python, "import flordb")]
    for python, code in {(p, c) for _, p, c in variants}:  # warm the bytecode caches
        run_child([python, "-c", code], cwd=repo)
    for rep in range(cfg.import_reps):
        for variant, python, code in rotated(variants, rep):
            child = run_child([python, "-c", code], cwd=repo)
            res.imports.setdefault(variant, []).append(float(child))
            res.imports_cpu.setdefault(variant, []).append(child.cpu)
    probe = subprocess.run(
        [res.flor_python, "-c", "import flor, sys, json; "
         "print(json.dumps({m: m in sys.modules for m in ('torch', 'pandas', 'numpy', 'sqlite3')}))"],
        cwd=repo, env=ENV, capture_output=True, text=True, check=True,
    )
    res.heavy_modules = json.loads(probe.stdout.strip().splitlines()[-1])
    res.import_profile = import_profile(res.flor_python, repo)
    shutil.rmtree(repo)


def import_profile(python: str, cwd: Path, top: int = 6) -> list[tuple[str, float]]:
    """``import flor`` (cumulative s) and the modules under it with the most self time
    (``-X importtime``, one run)."""
    proc = subprocess.run([python, "-X", "importtime", "-c", "import flor"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((name.strip(), int(parts[0]) / 1e6, int(parts[1]) / 1e6, depth))
    # Post-order: a module's own imports are printed just before it, one level deeper.
    start = max((i for i, r in enumerate(rows) if r[0] == "flor" and r[3] == 0), default=None)
    if start is None:
        return []
    under, i = [], start - 1
    while i >= 0 and rows[i][3] > 0:
        under.append((rows[i][0], rows[i][1]))
        i -= 1
    under.sort(key=lambda r: -r[1])
    return [("flor (cumulative)", rows[start][2])] + under[:top]


# -- 4. flor.dataframe over stored rows ---------------------------------------------------------


def bench_dataframe(res: Results, work: Path) -> None:
    cfg = res.config
    stores = [("flor", res.flor_python, cfg.dataframe_loop)]
    if res.flordb_python:
        # flor also at FlorDB's (smaller) row count, for a like-for-like pair.
        stores.append(("flor-small", res.flor_python, cfg.flordb_dataframe_loop))
        stores.append(("flordb", res.flordb_python, cfg.flordb_dataframe_loop))
    repos = {}
    for variant, python, (outer, inner) in stores:
        repo = make_repo(work, f"store-{variant}", {"log_script.py": LOG_SCRIPT})
        say(f"  building a {variant} store of {outer * inner:,} rows ...")
        kind = variant.split("-")[0]
        run_child([python, "log_script.py", kind, str(outer), str(inner), str(work / "build.json")], cwd=repo)
        (work / "build.json").unlink()
        repos[variant] = repo
    out = work / "dataframe.json"
    for rep in range(cfg.dataframe_reps):
        for variant, python, (outer, inner) in rotated(stores, rep):
            kind = variant.split("-")[0]
            wall = run_child([python, "-c", DATAFRAME_CODE, kind, "loss", str(out)], cwd=repos[variant])
            data = read_json(out)
            data["wall_s"] = float(wall)
            if data["rows"] != outer * inner:
                raise RuntimeError(f"{variant} dataframe has {data['rows']} rows, expected {outer * inner}")
            res.dataframe.setdefault(variant, []).append(data)
        say(f"  dataframe rep {rep + 1}/{cfg.dataframe_reps}: " + ", ".join(
            f"{v} {res.dataframe[v][-1]['dataframe_s']:.3f}s" for v, _, _ in stores))
    for repo in repos.values():
        shutil.rmtree(repo)


# -- report -------------------------------------------------------------------------------------


def col(entries: list[dict], key: str) -> list[float]:
    return [e[key] for e in entries]


def verdict(values: list[float], target: float) -> str:
    return "yes" if statistics.median(values) <= target else "**no**"


def report(res: Results) -> str:
    cfg = res.config
    fo, fi = cfg.flor_loop
    do, di = cfg.flordb_loop
    have_db = bool(res.flordb_python)
    notes = list(res.notes)
    na = "not measured" if not res.flordb_error else "could not run (see notes)"
    lines = [
        "## Record overhead: flor.log, end of run, import, dataframe",
        "",
        f"Command: `{COMMAND}{' --quick' if cfg.quick else ''}`  ",
        f"Machine: {machine()}, load average {res.load[0]:.1f} at start and {res.load[1]:.1f} at end "
        f"(the machine is shared: absolute times vary, compare within a row). flor at {res.flor_version}. "
        "Each cell: median (min-max) over the repetitions shown, "
        "compared commands run alternately in fresh processes and fresh git repositories.",
        "",
        "| measure | flor | FlorDB 4.0.1 | target (flor) | flor meets it |",
        "|---|---|---|---|---|",
    ]
    if res.log:
        flor_us = per_call_us(res, "plain", "flor", fo * fi)
        db_us = per_call_us(res, "plain-flordb", "flordb", do * di) if have_db and "flordb" in res.log else None
        lines.append(
            f"| flor.log in 2 nested flor.loops, µs per call, (loop - plain loop) / calls; "
            f"flor {fo}x{fi}, FlorDB {do}x{di} calls, {cfg.reps} reps "
            f"| {fmt_range(flor_us, digits=2)} | {fmt_range(db_us, digits=1) if db_us else na} "
            f"| ≤ {TARGETS['log_us']} µs | {verdict(flor_us, TARGETS['log_us'])} |"
        )
        flor_cpu = per_call_us(res, "plain", "flor", fo * fi, key="cpu")
        db_cpu = per_call_us(res, "plain-flordb", "flordb", do * di, key="cpu") if db_us else None
        lines.append(
            f"| same in process CPU time (all threads; less sensitive to load), µs per call "
            f"| {fmt_range(flor_cpu, digits=2)} | {fmt_range(db_cpu, digits=1) if db_cpu else na} | | |"
        )
        flor_all = per_call_us(res, "plain", "flor", fo * fi, with_end=True)
        db_all = per_call_us(res, "plain-flordb", "flordb", do * di, with_end=True) if db_us else None
        lines.append(
            f"| same, counting the end of the run (flor.commit) too, µs per call "
            f"| {fmt_range(flor_all, digits=2)} | {fmt_range(db_all, digits=1) if db_all else na} | | |"
        )
        lines.append(
            f"| end of that run (flor.commit: flush, snapshot, status), s "
            f"| {fmt_range(col(res.log['flor'], 'end_s'))} "
            f"| {fmt_range(col(res.log['flordb'], 'end_s')) if db_us else na} | | |"
        )
        lines.append(
            f"| plain loop / recorded loop, s "
            f"| {fmt_range(col(res.log['plain'], 'loop_s'))} / {fmt_range(col(res.log['flor'], 'loop_s'))} "
            f"| {fmt_range(col(res.log['plain-flordb'], 'loop_s'))} / {fmt_range(col(res.log['flordb'], 'loop_s'))}"
            if db_us else
            f"| plain loop / recorded loop, s "
            f"| {fmt_range(col(res.log['plain'], 'loop_s'))} / {fmt_range(col(res.log['flor'], 'loop_s'))} | {na}"
        )
        lines[-1] += " | | |"
        db_imp = fmt_range(col(res.log["flordb"], "import_s"), digits=2) if db_us else na
        lines.append(f"| import inside that script (FlorDB imports torch in a script), s "
                     f"| {fmt_range(col(res.log['flor'], 'import_s'), digits=2)} | {db_imp} | | |")
    if res.tutorial:
        t = res.tutorial["flor"]
        tdb = res.tutorial.get("flordb")
        args = " ".join(cfg.tutorial_args) or "default args"
        label = "tutorial" if cfg.tutorial == TUTORIAL else f"{cfg.tutorial.name} (instead of the tutorial)"
        lines.append(
            f"| {label} ({args}): end of run after the script's last statement, s, {cfg.tutorial_reps} reps "
            f"| {fmt_range(col(t, 'end_s'))} | {fmt_range(col(tdb, 'end_s')) if tdb else na} "
            f"| ≤ {TARGETS['tutorial_end_s']} s | {verdict(col(t, 'end_s'), TARGETS['tutorial_end_s'])} |"
        )
        lines.append(
            f"| same in process CPU time, s | {fmt_range(col(t, 'end_cpu_s'))} "
            f"| {fmt_range(col(tdb, 'end_cpu_s')) if tdb else na} | | |"
        )
        lines.append(
            f"| tutorial: script body / rest of process exit (not flor), s "
            f"| {fmt_range(col(t, 'body_s'), digits=2)} / {fmt_range(col(t, 'exit_s'), digits=2)} "
            f"| {fmt_range(col(tdb, 'body_s'), digits=2) + ' / ' + fmt_range(col(tdb, 'exit_s'), digits=2) if tdb else na} | | |"
        )
    if res.imports:
        imp = [a - b for a, b in zip(res.imports["flor"], res.imports["pass"])]
        imp_db = ([a - b for a, b in zip(res.imports["flordb"], res.imports["pass-flordb"])]
                  if "flordb" in res.imports else None)
        lines.append(
            f"| `python -c \"import flor\"` - `python -c pass`, s, {cfg.import_reps} reps "
            f"| {fmt_range(imp)} | {fmt_range(imp_db) + ' (import flordb)' if imp_db else na} "
            f"| ≤ {TARGETS['import_s']} s | {verdict(imp, TARGETS['import_s'])} |"
        )
        cpu = res.imports_cpu
        imp_cpu = [a - b for a, b in zip(cpu["flor"], cpu["pass"])]
        imp_db_cpu = [a - b for a, b in zip(cpu["flordb"], cpu["pass-flordb"])] if imp_db else None
        lines.append(
            f"| same in CPU time (user+sys of the process; less sensitive to load), s "
            f"| {fmt_range(imp_cpu)} | {fmt_range(imp_db_cpu) if imp_db_cpu else na} | | |"
        )
        pandas = [a - b for a, b in zip(res.imports["pandas"], res.imports["pass"])]
        lines.append(f"| for scale: `python -c \"import pandas\"` - `python -c pass`, s | {fmt_range(pandas)} | | | |")
    if res.dataframe:
        df = res.dataframe["flor"]
        rows = cfg.dataframe_loop[0] * cfg.dataframe_loop[1]
        db_rows = cfg.flordb_dataframe_loop[0] * cfg.flordb_dataframe_loop[1]
        lines.append(
            f"| `flor.dataframe(\"loss\")` over {rows:,} rows in a fresh process, s, {cfg.dataframe_reps} reps "
            f"| {fmt_range(col(df, 'dataframe_s'))} | {'not run at this size (next row)' if 'flordb' in res.dataframe else na} "
            f"| ≤ {TARGETS['dataframe_s']} s | {verdict(col(df, 'dataframe_s'), TARGETS['dataframe_s'])} |"
        )
        lines.append(
            f"| same in process CPU time, s | {fmt_range(col(df, 'dataframe_cpu_s'))} | | | |"
        )
        if "flordb" in res.dataframe:
            lines.append(
                f"| same over {db_rows:,} rows, s "
                f"| {fmt_range(col(res.dataframe['flor-small'], 'dataframe_s'))} "
                f"| {fmt_range(col(res.dataframe['flordb'], 'dataframe_s'))} | | |"
            )
            lines.append(
                f"| same in process CPU time, s "
                f"| {fmt_range(col(res.dataframe['flor-small'], 'dataframe_cpu_s'))} "
                f"| {fmt_range(col(res.dataframe['flordb'], 'dataframe_cpu_s'))} | | |"
            )
        notes.append("flor.dataframe's time includes its lazy import of pandas and numpy (see the import "
                     "row for scale); FlorDB imports pandas at `import flordb`, outside the timed call.")
    lines.append("")
    if res.heavy_modules:
        loaded = [m for m, v in res.heavy_modules.items() if v]
        notes.append(f"After `import flor`, loaded of torch/pandas/numpy/sqlite3: {', '.join(loaded) or 'none'}.")
    if res.import_profile:
        total, rest = res.import_profile[0][1], res.import_profile[1:]
        notes.append(f"`python -X importtime -c \"import flor\"` (one run): {total * 1000:.0f} ms in all; "
                     "most self time in " + ", ".join(f"{n} {t * 1000:.1f} ms" for n, t in rest) + ".")
    if res.flordb_error:
        notes.append(f"FlorDB 4.0.1 could not be measured: {res.flordb_error}")
    elif have_db:
        notes.append(
            "FlorDB 4.0.1 runs in its own venv (benchmarks/flordb_env.py). Its flor.log prints every "
            "value through tqdm.write and keeps every record in memory until flor.commit(), which writes "
            "JSONL and SQLite and then runs `git add -A; git commit` on a shadow branch; its import, in a "
            "script, also imports torch. Its children's stdout/stderr go to /dev/null or a file. It "
            "checkpoints nothing in the tutorial (flor.checkpointing is a no-op there), while flor "
            "checkpoints the model and optimizer each epoch."
        )
    notes.append("The flor loop time includes the run's start (first flor.loop) and the background "
                 "flush and git-snapshot threads, which share the 2 cores with the loop.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def run_benchmarks(cfg: Config, *, flordb: bool = True, only: set[str] | None = None) -> Results:
    """Run the selected measurements and return the raw results."""
    res = Results(config=cfg, flor_python=sys.executable, flor_version=flor_version())
    check = subprocess.run([sys.executable, "-c", "import flor"], env=ENV, capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"record_overhead: flor is not importable by {sys.executable}: {check.stderr.strip()}")
    if flordb:
        try:
            from flordb_env import flordb_python

            say("preparing the FlorDB 4.0.1 venv (cached under benchmarks/.work) ...")
            res.flordb_python = str(flordb_python())
        except Exception as exc:  # noqa: BLE001 - reported in the table instead
            res.flordb_error = f"{type(exc).__name__}: {exc}"
            say(f"FlorDB unavailable: {res.flordb_error}")
    load_start = os.getloadavg()[0]
    steps = [("import", bench_import), ("log", bench_log), ("tutorial", bench_tutorial),
             ("dataframe", bench_dataframe)]
    with tempfile.TemporaryDirectory(prefix="flor-bench-") as tmp:
        for name, step in steps:
            if only and name not in only:
                continue
            say(f"{name} ...")
            try:
                step(res, Path(tmp))
            except RuntimeError as exc:
                if res.flordb_python and "flordb" in str(exc).lower():
                    res.flordb_error = str(exc).splitlines()[0]
                raise
    res.load = (load_start, os.getloadavg()[0])
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts and few repetitions (smoke run)")
    parser.add_argument("--no-flordb", action="store_true", help="skip FlorDB 4.0.1 (no venv, no network)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch RESULTS.md")
    parser.add_argument("--only", nargs="+", choices=["import", "log", "tutorial", "dataframe"],
                        help="run only these measurements")
    parser.add_argument("--reps", type=int, help="repetitions of the log and tutorial measurements")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--tutorial", type=Path, help="time the end of run of this script instead of "
                        "examples/tutorial/train.py (it must import flor with `import flor`)")
    opts = parser.parse_args(argv)
    cfg = dataclasses.replace(QUICK if opts.quick else Config())
    if opts.reps:
        cfg.reps = cfg.tutorial_reps = opts.reps
    if opts.tutorial:
        cfg.tutorial = opts.tutorial.resolve()
    res = run_benchmarks(cfg, flordb=not opts.no_flordb, only=set(opts.only) if opts.only else None)
    markdown = report(res)
    print(markdown)
    if opts.json:
        raw = {k: v for k, v in vars(res).items() if k != "config"}
        raw["config"] = vars(cfg)
        opts.json.write_text(json.dumps(raw, indent=1, default=str))
    if not opts.no_write and not opts.only and not opts.tutorial:
        write_section(SECTION, markdown)
        print(f"\nwrote section {SECTION!r} of {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

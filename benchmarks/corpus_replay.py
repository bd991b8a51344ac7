"""Replay speed on the real-shaped corpus (issue 14): replay / record for hindsight questions of
the MNIST-shaped and nanoGPT-shaped scripts of ``tests/realworld``, at realistic sizes.

The corpus scripts are the tests' own, scaled up as the scripts they mirror are sized:

* ``mnist``: pytorch/examples ``mnist/main.py``'s network (conv 1-32-64, fc 9216-128-10: 1.2 M
  parameters, 14.5 MB with Adadelta's state), on 2,880 synthetic 28x28 images per epoch (about
  2 s an epoch here, the shape the issue measured) and a test set a sixth of that (MNIST's 60,000 / 10,000), for the
  script's default 14 epochs. Questions: the epoch body (``weight_norm`` after ``train()``) and
  the ``test()`` helper called from it (``last_batch_confidence``).
* ``nanogpt``: nanoGPT's loop (``itertools.count`` + ``break``, gradient accumulation, clipping and
  the step after the micro loop, GradScaler, ``torch.save`` at every eval) with a 4-layer, 128-wide
  model on 64-token blocks (about 0.1 s an iteration here), 300 iterations, evaluation every 50.
  Questions: the eval branch (``wte_norm_at_eval``) and the iteration body (``param_norm``).

* ``makemore``: makemore's ``while True`` loop (an ``InfiniteDataLoader`` with its own generator,
  ``itertools.count`` + ``break``) run as makemore runs it: evaluation every 500 steps, to step
  1000. Questions: the eval branch (``wte_norm_at_eval``) and after the
  loop (``final_train_loss``).
* ``accelerate``: Accelerate's ``nlp_example.py`` shape (everything prepared, ``outputs =
  model(**batch)``) on 1,024 training and 256 evaluation sequences (MRPC has 3,668 and 408), its
  default 3 epochs. Question: the epoch body (``classifier_norm``, memoized although the step
  loop assigns ``outputs``).
* ``lbfgs``: time_sequence_prediction's LBFGS closure for its default 15 steps, the LSTM 51 units
  wide as the original, on 20 waves of 100 points (the original: 100 of 1,000). Questions: after
  the loop (``final_prediction_std``) and inside the closure (``closure_grad_norm``, every step
  re-executed).

Each repetition records the script (the machine's default threads, flor's default checkpoint
policy: what a user gets), replays each question, and checks every replayed value against a fresh
run of today's script. Times are whole processes timed by the parent. FlorDB 4.0.1 runs the same
scripts where it can (its ``flor`` has the same four calls).

    python benchmarks/corpus_replay.py [--reps 3] [--quick] [--no-flordb] [--no-write] [--cases makemore,lbfgs]

``--cases`` runs the cases named (a full run takes about 20 minutes on 2 cores) and writes their rows
into RESULTS.md's section in place of their earlier rows, keeping the other cases' rows and the
paragraphs that say how those were measured. ``BENCH_CHECKOUT_FIRST=1`` measures this checkout's flor
where the venv's editable install points at another checkout (a git worktree sharing one venv).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _results import fmt_range, machine, read_section, write_section  # noqa: E402
from workloads import child_env, flor_cli, flor_python, git, run_command  # noqa: E402

from tests.realworld.harness import MARKER, _values, recorded_text, today_text  # noqa: E402

SECTION = "corpus_replay"
SCRIPTS = ROOT / "tests" / "realworld" / "scripts"


@dataclass
class Case:
    name: str
    folder: str
    argv: tuple[str, ...]
    prepare: tuple[str, ...]
    edits: dict[str, list[tuple[str, str]]]  # file -> (old, new) replacements that size it
    questions: tuple[str, ...]
    target: dict[str, float] = field(default_factory=dict)  # question -> replay / record target


MNIST = Case(
    "mnist", "mnist_examples", ("--epochs", "14"), ("prepare.py",),
    {
        "train.py": [("nn.Conv2d(1, 8, 3, 1)", "nn.Conv2d(1, 32, 3, 1)"), ("nn.Conv2d(8, 16, 3, 1)", "nn.Conv2d(32, 64, 3, 1)"),
                     ("nn.Linear(2304, 32)", "nn.Linear(9216, 128)"), ("nn.Linear(32, 10)", "nn.Linear(128, 10)")],
        "prepare.py": [("make(384,", "make(2880,"), ("make(128,", "make(480,")],
    },
    ("a_epoch", "b_helper"), {"a_epoch": 0.15, "b_helper": 0.15},
)
NANOGPT = Case(
    "nanogpt", "nanogpt_style",
    ("--max_iters=300", "--lr_decay_iters=300", "--warmup_iters=20", "--eval_interval=50", "--eval_iters=8",
     "--n_layer=4", "--n_embd=128", "--n_head=4", "--block_size=64", "--batch_size=12"),
    ("data/shakespeare_char/prepare.py",), {}, ("c_eval", "a_epoch"), {"c_eval": 0.30},
)
MAKEMORE = Case(
    "makemore", "makemore_style", ("--max-steps", "1001", "--eval-every", "500"), ("prepare.py",), {},
    ("c_eval", "a_after"),
)
ACCELERATE = Case(
    "accelerate", "accelerate_nlp", ("--cpu", "--num_epochs", "3"), (),
    {"train.py": [("SyntheticPairs(64, seed=1), SyntheticPairs(32, seed=2)",
                   "SyntheticPairs(1024, seed=1), SyntheticPairs(256, seed=2)")]},
    ("a_epoch",),
)
LBFGS = Case(
    "lbfgs", "lbfgs_sequence", ("--steps", "15"), ("prepare.py",),
    {"train.py": [("HIDDEN = 12", "HIDDEN = 51")], "prepare.py": [("T, L, N = 20, 30, 6", "T, L, N = 20, 100, 20")]},
    ("a_after", "d_closure"),
)
CASES = [MNIST, NANOGPT, MAKEMORE, ACCELERATE, LBFGS]
QUICK_MNIST = Case(MNIST.name, MNIST.folder, ("--epochs", "3"), MNIST.prepare, MNIST.edits, MNIST.questions, MNIST.target)
QUICK_NANOGPT = Case(NANOGPT.name, NANOGPT.folder, tuple(a.replace("300", "60").replace("=50", "=20") for a in NANOGPT.argv),
                     NANOGPT.prepare, {}, NANOGPT.questions, NANOGPT.target)
QUICK = {MNIST.name: QUICK_MNIST, NANOGPT.name: QUICK_NANOGPT,
         MAKEMORE.name: Case(MAKEMORE.name, MAKEMORE.folder, ("--max-steps", "101", "--eval-every", "50"),
                             MAKEMORE.prepare, {}, MAKEMORE.questions),
         ACCELERATE.name: Case(ACCELERATE.name, ACCELERATE.folder, ACCELERATE.argv, (), {}, ACCELERATE.questions),
         LBFGS.name: Case(LBFGS.name, LBFGS.folder, ("--steps", "4"), LBFGS.prepare, {}, LBFGS.questions)}


def log(message: str) -> None:
    print(f"[corpus_replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _layout(case: Case, dest: Path) -> str:
    """Copy the case into ``dest``, sized; return the script's full text (with its markers)."""
    shutil.copytree(SCRIPTS / case.folder, dest)
    for rel, edits in case.edits.items():
        path = dest / rel
        text = path.read_text()
        for old, new in edits:
            assert old in text, f"{case.name}: {old!r} not in {rel}"
            text = text.replace(old, new)
        path.write_text(text)
    return (dest / "train.py").read_text()


def _statement_name(source: str, qid: str) -> str:
    for line in source.splitlines():
        match = MARKER.match(line)
        if match and match["qid"] == qid:
            return re.match(r'flor\.log\("([^"]+)"', match["statement"]).group(1)
    raise KeyError(qid)


def _run(repo: Path, *args: str, python: Path | None = None) -> float:
    wall, _rc, _out = run_command([str(python or flor_python()), *args], repo, env=child_env())
    return wall


def _tstamp(repo: Path) -> str:
    with sqlite3.connect(f"file:{repo / '.flor' / 'flor.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT tstamp FROM runs ORDER BY tstamp").fetchone()[0]


def _checkpoints(repo: Path) -> list[int]:
    with sqlite3.connect(f"file:{repo / '.flor' / 'flor.db'}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT iteration FROM checkpoints ORDER BY iteration")]


def _compare(replayed: dict, fresh: dict) -> str:
    wrong = sum(1 for k in fresh if replayed.get(k) != fresh[k])
    extra = len(set(replayed) - set(fresh))
    count = sum(len(v) for v in fresh.values())
    return f"{count - wrong if not extra else '?'} of {count} equal" + (f", {wrong} contexts differ" if wrong else "") + (
        f", {extra} extra" if extra else "")


def one_case(case: Case, tmp: Path, rep: int, flordb_py: Path | None) -> dict:
    """Record ``case`` once and replay each of its questions; what each took and whether it is exact."""
    repo = tmp / f"{case.name}-{rep}"
    source = _layout(case, repo)
    (repo / "train.py").write_text(recorded_text(source))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", case.name)
    for script in case.prepare:
        _run(repo, script)
    pristine = tmp / f"{case.name}-{rep}-pristine"
    shutil.copytree(repo, pristine)
    record_s = _run(repo, "train.py", *case.argv)
    tstamp = _tstamp(repo)
    result = {"record_s": record_s, "checkpoints": _checkpoints(repo), "questions": {}}
    log(f"{case.name} rep {rep}: recorded in {record_s:.1f} s, checkpoints at {result['checkpoints']}")
    for qid in case.questions:
        name = _statement_name(source, qid)
        (repo / "train.py").write_text(today_text(source, qid))
        plan_s, _rc, plan = run_command([*flor_cli(), "replay", name, "--dry-run"], repo, env=child_env(), check=False)
        wall, rc, out = run_command([*flor_cli(), "replay", name, "--force"], repo, env=child_env(), check=False)
        timing = next((line.split("time: ", 1)[1] for line in out.splitlines() if " time: " in line), "")
        fresh = tmp / f"{case.name}-{rep}-{qid}-fresh"
        shutil.copytree(pristine, fresh)
        (fresh / "train.py").write_text(today_text(source, qid))
        fresh_s = _run(fresh, "train.py", *case.argv)
        _t, replayed = _values(repo / ".flor" / "flor.db", name, "replay", tstamp)
        _t, reference = _values(fresh / ".flor" / "flor.db", name, "record")
        entry = {
            "name": name, "replay_s": wall, "exit": rc, "plan_s": plan_s, "fresh_s": fresh_s,
            "ratio": wall / record_s, "check": _compare(replayed, reference),
            "plan": " | ".join(line.strip() for line in plan.splitlines() if line.strip().startswith(("segment", "only", "re-executed"))),
            "timing": timing,
        }
        result["questions"][qid] = entry
        log(f"{case.name} rep {rep} {qid}: replay {wall:.2f} s = {100 * entry['ratio']:.1f} % of the recording "
            f"(exit {rc}); {entry['check']}; plan {entry['plan']}; {timing}")
        shutil.rmtree(fresh, ignore_errors=True)
    if flordb_py is not None:
        result["flordb"] = flordb_case(case, tmp, rep, source, flordb_py)
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(pristine, ignore_errors=True)
    return result


def flordb_case(case: Case, tmp: Path, rep: int, source: str, flordb_py: Path) -> dict:
    """The same script and questions under FlorDB 4.0.1: its record time and replay times."""
    repo = tmp / f"{case.name}-{rep}-flordb"
    _layout(case, repo)
    text = recorded_text(source).replace("import flor\n", "import flordb as flor\n")
    (repo / "train.py").write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", case.name)
    env = child_env()
    env["PATH"] = f"{flordb_py.parent}{os.pathsep}{env.get('PATH', '')}"
    found: dict = {}
    try:
        for script in case.prepare:
            run_command([str(flordb_py), script], repo, env=env)
        record_s, _rc, _out = run_command([str(flordb_py), "train.py", *case.argv], repo, env=env)
        found["record_s"] = record_s
        for qid in case.questions:
            (repo / "train.py").write_text(today_text(source, qid).replace("import flor\n", "import flordb as flor\n"))
            name = _statement_name(source, qid)
            wall, rc, out = run_command([str(flordb_py), "-m", "flordb", "replay", "--apply", name], repo, env=env,
                                        stdin="y\n", check=False)
            found[qid] = {"replay_s": wall, "exit": rc, "ratio": wall / record_s, "values": _flordb_values(repo, name),
                          "error": out.strip().splitlines()[-1][:200] if rc != 0 or "Traceback" in out else ""}
            log(f"{case.name} rep {rep} {qid} FlorDB: replay {wall:.1f} s = {100 * wall / record_s:.0f} % (exit {rc}), "
                f"{found[qid]['values']} value(s) of {name} in its db")
    except RuntimeError as exc:
        found["error"] = str(exc).strip().splitlines()[-1][:300]
        log(f"{case.name} rep {rep}: FlorDB does not run this script: {found['error']}")
    shutil.rmtree(repo, ignore_errors=True)
    return found


def _flordb_values(repo: Path, name: str) -> int:
    """Rows named ``name`` in FlorDB's databases (-1 when they cannot be read)."""
    count = 0
    for path in (repo / ".flor").glob("*.db"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            try:
                count += db.execute("SELECT count(*) FROM logs WHERE value_name = ?", (name,)).fetchone()[0]
            except sqlite3.Error:
                return -1
    return count


def warm_saving(reps: int = 5) -> dict:
    """What a worker that stays warm between `flor replay` commands would save: the import of the
    scripts' libraries (torch, numpy) that each command's workers pay once. Alternated with an
    empty interpreter."""
    found: dict = {"bare": [], "libraries": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            for key, code in (("bare", "pass"), ("libraries", "import numpy, torch, torch.nn, torch.optim")):
                wall, _rc, _out = run_command([str(flor_python()), "-c", code], Path(tmp), env=child_env())
                found[key].append(wall)
    return found


def render(cases: list[Case], results: dict[str, list[dict]], command: str, elapsed: float, warm: dict | None = None) -> str:
    lines = [
        "## Replay on the real-shaped corpus (issue 14)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). {machine()}. The corpus scripts of `tests/realworld`, "
        "sized as the scripts they mirror (see the benchmark's docstring), recorded with the machine's default "
        "threads and flor's default checkpoint policy; replay / record are whole processes timed by the parent; "
        "each replayed value compared with a fresh run of today's script.",
        "",
        "| case | question | recorded run s | checkpoints kept | replay s | replay / record | target | values vs fresh run | plan | where the worker's time went (last rep) | FlorDB 4.0.1 replay / record |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        reps = results[case.name]
        rec = [r["record_s"] for r in reps]
        kept = reps[-1]["checkpoints"]
        for qid in case.questions:
            entries = [r["questions"][qid] for r in reps]
            ratios = [e["ratio"] for e in entries]
            target = case.target.get(qid)
            met = "" if target is None else (f"≤ {100 * target:.0f} %: " + ("met" if statistics.median(ratios) <= target else "NOT met"))
            fdb = [r.get("flordb", {}).get(qid) for r in reps]
            fdb_text = "; ".join(
                f"{100 * f['ratio']:.0f} %, {f.get('values', '?')} value(s) stored"
                + (f" (exit {f['exit']}: {f['error']})" if f.get("error") else "") for f in fdb if f
            ) or (reps[-1].get("flordb", {}).get("error") or "not run")
            lines.append(
                f"| {case.name} | `{entries[0]['name']}` ({qid}) | {fmt_range(rec, digits=1)} | {len(kept)} | "
                f"{fmt_range([e['replay_s'] for e in entries], digits=2)} | {fmt_range([100 * x for x in ratios], digits=1)} % | "
                f"{met or '-'} | {'; '.join(e['check'] for e in entries)} | {entries[-1]['plan']} | {entries[-1]['timing']} | {fdb_text} |"
            )
    if warm:
        saving = statistics.median(warm["libraries"]) - statistics.median(warm["bare"])
        mnist = results.get("mnist")
        share = f", {100 * saving / statistics.median([r['record_s'] for r in mnist]):.0f} % of the MNIST-shaped recording" if mnist else ""
        lines += ["", f"A worker that stayed warm between `flor replay` commands would save each command the import of the "
                  f"scripts' libraries: {saving:.2f} s here ({fmt_range(warm['libraries'], digits=2)} s with numpy and torch "
                  f"against {fmt_range(warm['bare'], digits=2)} s for an empty interpreter{share}). Within one command, one "
                  "worker already serves every run (it forks a process per task), so this is paid once per command."]
    return "\n".join(lines)


def merge(old: str | None, new: str, ran: list[str]) -> str:
    """The section after a run of some cases (``ran``): the old section's rows of the other cases and
    its paragraphs, with the new rows in place of the ran cases' old ones and the new run's command
    paragraph, as "Rows of ...", after the table (replacing an earlier one for the same cases)."""
    if not old:
        return new
    def is_row(line: str) -> bool:
        return line.startswith("| ") and not line.startswith("| case |")
    def case_of(line: str) -> str:
        return line.split("|")[1].strip()
    new_lines = new.splitlines()
    rows = [line for line in new_lines if is_row(line)]
    said = next(line for line in new_lines if line.startswith("Command: "))
    note = f"Rows of {', '.join(ran)}: " + said[len("Command: "):]
    out, table_end = [], None
    for line in old.splitlines():
        if is_row(line) and case_of(line) in ran:
            continue
        if line.startswith(f"Rows of {', '.join(ran)}: "):
            continue
        out.append(line)
        if is_row(line) or line.startswith("|---"):
            table_end = len(out)
    if table_end is None:
        return new
    out[table_end:table_end] = rows + ["", note]
    # The removed note leaves its blank line: one blank line between paragraphs.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs, one repetition (a smoke run)")
    parser.add_argument("--no-flordb", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--cases", help="comma-separated case names (default: all); their rows replace their earlier "
                                        "rows in RESULTS.md, the other rows stay")
    args = parser.parse_args(argv)
    names = [case.name for case in CASES]
    chosen = args.cases.split(",") if args.cases else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; the cases: {', '.join(names)}")
    cases = [QUICK[case.name] if args.quick else case for case in CASES if case.name in chosen]
    partial = len(cases) < len(CASES)
    reps = 1 if args.quick else args.reps
    flordb_py = None
    if not args.no_flordb:
        from flordb_env import flordb_python

        try:
            flordb_py = flordb_python()
        except Exception as exc:  # noqa: BLE001 - no FlorDB venv here: report flor alone
            log(f"FlorDB 4.0.1 is not available ({exc}); flor alone")
    started = time.perf_counter()
    results: dict[str, list[dict]] = {case.name: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="flor-corpus-bench-") as tmp:
        for rep in range(reps):
            for case in (cases if rep % 2 == 0 else list(reversed(cases))):
                results[case.name].append(one_case(case, Path(tmp), rep, flordb_py))
    warm = None if partial else warm_saving(3 if args.quick else 7)
    command = "python benchmarks/corpus_replay.py" + (" --quick" if args.quick else "") + (
        f" --reps {args.reps}" if args.reps != 3 and not args.quick else "") + (
        " --no-flordb" if args.no_flordb else "") + (f" --cases {','.join(c.name for c in cases)}" if partial else "")
    section = render(cases, results, command, time.perf_counter() - started, warm)
    if partial:
        section = merge(read_section(SECTION), section, [case.name for case in cases])
    if args.no_write:
        print(section)
    else:
        write_section(SECTION, section)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

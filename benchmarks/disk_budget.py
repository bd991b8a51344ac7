"""The default disk budget decided by measurement (issue 29): on the nanoGPT-shaped corpus case,
for several ``FLOR_CKPT_DISK`` settings, the bytes a run leaves in ``.flor``, the checkpoints it
keeps, and the replay time of the case's corpus questions as a ratio of the recording.

The case is ``corpus_replay.py``'s ``nanogpt`` at its benchmark size (4 layers, 128 wide, AdamW,
300 iterations, evaluation every 50) and its questions: the eval branch (``wte_norm_at_eval``,
c_eval) and the iteration body (``param_norm``, a_epoch). Each repetition records the script once
per setting, the settings in a rotated order (so no setting always runs first, or last), and
replays both questions after each recording; every replayed value is compared with a fresh run of
today's script (run once per question: the values do not depend on the budget). In the first
repetition a second run of the same script is recorded into a copy of each project, for the
issue's measure (two runs' ``.flor``).

    python benchmarks/disk_budget.py [--settings 20x,10x,6x,4x,27M] [--reps 2] [--no-write]
    python benchmarks/disk_budget.py --honoured mnist:40M,mnist:80M,nanogpt:27M,nanogpt:60M
    python benchmarks/disk_budget.py --settings base:20x,20x,6x,4x --baseline DIR

``base:SETTING`` records and replays with the flor of ``--baseline DIR`` (a folder holding another
commit's ``flor/`` package, e.g. ``git archive COMMIT flor | tar -x -C DIR``): today's code in the
same alternation as the change, so the two are compared under the same load.

``--honoured``: whether a budget of N bytes is honoured on the MNIST- and nanoGPT-shaped corpus
cases (``corpus_replay.py``'s sizes): each recorded once under ``FLOR_CKPT_DISK=N``, the bytes its
checkpoints keep (objects and manifests: what the budget counts) against N.

``BENCH_CHECKOUT_FIRST=1`` measures this checkout's flor where the venv's editable install points
at another checkout (a git worktree sharing one venv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _results import fmt_range, machine, write_section  # noqa: E402
from corpus_replay import MNIST, NANOGPT, _checkpoints, _compare, _layout, _run, _statement_name, _tstamp  # noqa: E402
from workloads import child_env, flor_cli, git, run_command  # noqa: E402

from tests.realworld.harness import _values, recorded_text, today_text  # noqa: E402

SECTION = "disk_budget"
DEFAULT_SETTINGS = "20x,10x,6x,4x,27M"


def log(message: str) -> None:
    print(f"[disk_budget {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def template(tmp: Path) -> tuple[Path, str]:
    """The case laid out, its data prepared and committed once: (folder, the script with markers)."""
    repo = tmp / "template"
    source = _layout(NANOGPT, repo)
    (repo / "train.py").write_text(recorded_text(source))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", NANOGPT.name)
    for script in NANOGPT.prepare:
        _run(repo, script)
    return repo, source


def _both(source: str, qids) -> str:
    """Today's script with the statements of every question in ``qids`` written in."""
    from tests.realworld.harness import MARKER

    out = []
    for line in source.splitlines(keepends=True):
        match = MARKER.match(line)
        if match is None:
            out.append(line)
        elif match["qid"] in qids:
            out.append(f"{match['indent']}{match['statement']}\n")
    return "".join(out)


def references(tmp: Path, base: Path, source: str) -> dict[str, dict]:
    """Each question's values from one fresh run of today's script with all of them (no replay)."""
    fresh = tmp / "fresh"
    shutil.copytree(base, fresh)
    (fresh / "train.py").write_text(_both(source, NANOGPT.questions))
    _run(fresh, "train.py", *NANOGPT.argv)
    found = {qid: _values(fresh / ".flor" / "flor.db", _statement_name(source, qid), "record")[1]
             for qid in NANOGPT.questions}
    shutil.rmtree(fresh, ignore_errors=True)
    log("fresh run: " + ", ".join(f"{qid} {sum(len(v) for v in found[qid].values())} values" for qid in found))
    return found


BASELINE: str | None = None  # --baseline: the folder whose flor/ a ``base:`` setting runs


def _env(setting: str, **extra: str) -> dict:
    """The children's environment for ``setting`` (``base:X``: X with the baseline's flor)."""
    if setting.startswith("base:"):
        if BASELINE is None:
            raise SystemExit(f"{setting}: give --baseline DIR (a folder holding the baseline's flor/)")
        return child_env(PYTHONPATH=BASELINE, **extra)
    return child_env(**extra)


def one(tmp: Path, base: Path, source: str, setting: str, rep: int, fresh: dict, two_runs: bool,
        questions=NANOGPT.questions) -> dict:
    """Record under ``FLOR_CKPT_DISK=setting``, replay each question; sizes, ratios, checks."""
    repo = tmp / f"{setting.replace(':', '-')}-{rep}"
    shutil.copytree(base, repo)
    env = _env(setting, FLOR_CKPT_DISK=setting.removeprefix("base:"))
    record_s, _rc, _out = run_command([*flor_python_cmd(), "train.py", *NANOGPT.argv], repo, env=env)
    tstamp = _tstamp(repo)
    flor = repo / ".flor"
    found = {"record_s": record_s, "flor": _bytes(flor), "objects": _bytes(flor / "objects"),
             "checkpoints": _checkpoints(repo), "questions": {}}
    _rc, _rc2, show = run_command([*flor_cli(), "show", tstamp], repo, env=env, check=False)
    found["show"] = next((line.strip() for line in show.splitlines() if "FLOR_CKPT_DISK" in line), "")
    if two_runs:
        second = tmp / f"{setting}-{rep}-two"
        shutil.copytree(repo, second)
        run_command([*flor_python_cmd(), "train.py", *NANOGPT.argv], second, env=env)
        found["two_runs"] = _bytes(second / ".flor")
        shutil.rmtree(second, ignore_errors=True)
    log(f"{setting} rep {rep}: recorded in {record_s:.1f} s, .flor {found['flor'] / 1e6:.1f} MB, "
        f"checkpoints at {found['checkpoints']}" + (f", two runs {found['two_runs'] / 1e6:.1f} MB" if two_runs else ""))
    for qid in questions:
        name = _statement_name(source, qid)
        (repo / "train.py").write_text(today_text(source, qid))
        wall, rc, out = run_command([*flor_cli(), "replay", name, "--force"], repo, env=_env(setting), check=False)
        _t, replayed = _values(flor / "flor.db", name, "replay", tstamp)
        entry = {"replay_s": wall, "exit": rc, "ratio": wall / record_s, "check": _compare(replayed, fresh[qid])}
        found["questions"][qid] = entry
        log(f"{setting} rep {rep} {qid}: replay {wall:.2f} s = {100 * entry['ratio']:.1f} % (exit {rc}); {entry['check']}")
    shutil.rmtree(repo, ignore_errors=True)
    return found


def flor_python_cmd() -> list[str]:
    from workloads import flor_python

    return [str(flor_python())]


def honoured(tmp: Path, pairs: list[tuple[str, str]]) -> list[str]:
    """Rows: each case recorded once under each budget; what its checkpoints keep against it."""
    from flor import settings as flor_settings

    bases = {}
    rows = []
    for case_name, budget in pairs:
        case = {"mnist": MNIST, "nanogpt": NANOGPT}[case_name]
        if case_name not in bases:
            base = bases[case_name] = tmp / f"base-{case_name}"
            _layout(case, base)
            git(base, "init", "-q", "-b", "main")
            git(base, "add", "-A")
            git(base, "commit", "-q", "-m", case_name)
            for script in case.prepare:
                _run(base, script)
        repo = tmp / f"{case_name}-{budget}"
        shutil.copytree(bases[case_name], repo)
        record_s, _rc, _out = run_command([*flor_python_cmd(), "train.py", *case.argv], repo,
                                          env=child_env(FLOR_CKPT_DISK=budget))
        flor = repo / ".flor"
        kept = _bytes(flor / "objects") + sum(p.stat().st_size for p in (flor / "checkpoints").rglob("*.json"))
        limit = flor_settings.parse_bytes("FLOR_CKPT_DISK", budget).bytes
        count = len(_checkpoints(repo))
        rows.append(f"| {case_name} | {budget} | {limit / 1e6:.1f} | {kept / 1e6:.2f} | {kept / limit:.3f} | {count} | "
                    f"{record_s:.1f} |")
        log(rows[-1])
        shutil.rmtree(repo, ignore_errors=True)
    return rows


def _pct(values: list[float]) -> str:
    return f"{fmt_range(values, digits=1)} %" if values else "not replayed"


def render(settings: list[str], results: dict[str, list[dict]], command: str, elapsed: float, load: list[float]) -> str:
    lines = [
        "## The default disk budget, by measurement (issue 29)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). {machine()}, load average {min(load):.1f}-{max(load):.1f} "
        "during the run (the 2 cores are shared with other sessions). The nanoGPT-shaped corpus case at the corpus "
        "benchmark's size (see `corpus_replay.py`); settings recorded in a rotated order each repetition; replay / "
        "record are whole processes timed by the parent; every replayed value compared with a fresh run of today's "
        "script. Medians (range).",
        "",
        "| FLOR_CKPT_DISK | `.flor` MB per run | two runs' `.flor` MB | checkpoints kept | recorded run s | "
        "`wte_norm_at_eval` (c_eval) replay / record | `param_norm` (a_epoch) replay / record | values vs fresh run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in settings:
        reps = results[setting]
        two = [r["two_runs"] for r in reps if "two_runs" in r]
        ratio = {qid: [100 * r["questions"][qid]["ratio"] for r in reps if qid in r["questions"]]
                 for qid in NANOGPT.questions}
        checks = "; ".join(f"{q}: {r['questions'][q]['check']}" for r in reps for q in NANOGPT.questions
                           if q in r["questions"])
        lines.append(
            f"| {setting} | {fmt_range([r['flor'] for r in reps], 1e-6, 1)} | "
            f"{fmt_range(two, 1e-6, 1) if two else '-'} | {fmt_range([len(r['checkpoints']) for r in reps], digits=0)} | "
            f"{fmt_range([r['record_s'] for r in reps], digits=1)} | {_pct(ratio['c_eval'])} | "
            f"{_pct(ratio['a_epoch'])} | {checks} |")
    lines += ["", "Checkpoints kept (last repetition) and what `flor show` said of the disk budget:", ""]
    for setting in settings:
        last = results[setting][-1]
        lines.append(f"- {setting}: at {last['checkpoints']}; {last['show'] or '-'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--no-two-runs", action="store_true")
    parser.add_argument("--two-runs", default="", help="settings whose second run is recorded (default: all)")
    parser.add_argument("--full", default="", help="settings whose a_epoch question is replayed too (default: all)")
    parser.add_argument("--questions", default=",".join(NANOGPT.questions), help="the questions replayed")
    parser.add_argument("--reference", help="a project whose replay of the questions matched a fresh run (its "
                                             "values stand for the fresh run's, saving one recording)")
    parser.add_argument("--jsonl", help="append each setting's result to this file as it is measured")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--honoured", help="case:budget,... (mnist or nanogpt): is a budget of N bytes honoured")
    parser.add_argument("--baseline", help="a folder holding another commit's flor/, for the base:SETTING settings")
    args = parser.parse_args()
    global BASELINE
    BASELINE = str(Path(args.baseline).resolve()) if args.baseline else None
    if args.honoured:
        pairs = [tuple(item.split(":", 1)) for item in args.honoured.split(",") if item]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="flor-disk-honoured-") as name:
            rows = honoured(Path(name), pairs)
        section = "\n".join([
            "## A disk budget of N bytes per run, honoured? (issue 29)", "",
            f"Command: `python benchmarks/disk_budget.py --honoured {args.honoured}` "
            f"({(time.perf_counter() - started) / 60:.1f} min). {machine()}, load average {os.getloadavg()[0]:.1f} at "
            "the end. The MNIST- and nanoGPT-shaped corpus cases at `corpus_replay.py`'s sizes, each recorded once "
            "under `FLOR_CKPT_DISK=N`; kept = the run's checkpoint objects and manifests.", "",
            "| case | FLOR_CKPT_DISK | budget MB | kept MB | kept / budget | checkpoints | recorded run s |",
            "|---|---|---|---|---|---|---|", *rows])
        print(section)
        if not args.no_write:
            write_section(SECTION + "_honoured", section)
        return 0
    settings = [s for s in args.settings.split(",") if s]
    started = time.perf_counter()
    load = [os.getloadavg()[0]]
    results: dict[str, list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="flor-disk-budget-") as name:
        tmp = Path(name)
        base, source = template(tmp)
        if args.reference:
            db = Path(args.reference) / ".flor" / "flor.db"
            fresh = {qid: _values(db, _statement_name(source, qid), "replay", _tstamp(Path(args.reference)))[1]
                     for qid in args.questions.split(",")}
            log("reference values from " + args.reference + ": " + ", ".join(
                f"{qid} {sum(len(v) for v in fresh[qid].values())}" for qid in fresh))
        else:
            fresh = references(tmp, base, source)
        for rep in range(args.reps):
            order = settings[rep % len(settings):] + settings[:rep % len(settings)]
            for setting in (order if rep % 2 == 0 else list(reversed(order))):
                full = not args.full or setting in args.full.split(",")
                asked = tuple(args.questions.split(","))
                two = rep == 0 and not args.no_two_runs and (not args.two_runs or setting in args.two_runs.split(","))
                found = one(tmp, base, source, setting, rep, fresh, two,
                            asked if full else tuple(q for q in asked if q == "c_eval"))
                results[setting].append(found)
                if args.jsonl:
                    with open(args.jsonl, "a") as handle:
                        handle.write(json.dumps({"setting": setting, "rep": rep, "load": os.getloadavg()[0], **found}) + "\n")
                load.append(os.getloadavg()[0])
    command = f"python benchmarks/disk_budget.py --settings {','.join(settings)} --reps {args.reps}" + (
        " --no-two-runs" if args.no_two_runs else "") + (f" --two-runs {args.two_runs}" if args.two_runs else "") + (
        f" --full {args.full}" if args.full else "") + (
        f" --questions {args.questions}" if args.questions != ",".join(NANOGPT.questions) else "") + (
        " --reference DIR" if args.reference else "") + (" --baseline DIR" if args.baseline else "")
    section = render(settings, results, command, time.perf_counter() - started, load)
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

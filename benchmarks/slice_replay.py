"""Replay at the cost of the question (issue 30): the whole `flor replay` process with the slice
(the default) against `--no-slice`, as a share of the recording, on

* ``mnist``: the corpus benchmark's MNIST-shaped case (``benchmarks/corpus_replay.py``: the
  pytorch/examples network and sizes, 14 epochs, a per-epoch ``test()`` pass and StepLR);
  questions ``a_epoch`` (a weight norm in the epoch body: reads only the model) and ``b_helper``
  (inside ``test()``: the slice must keep the evaluation, no worse than before);
* ``evalheavy``: a workload shaped like GPU training where evaluation takes about a third of each
  epoch (20 epochs); question: a weight norm in the epoch body; ``evalheavy_long``: the same with
  epochs 8 times as long, so that the replay's fixed start-up weighs as little as on a real job;
* ``nanogpt_real``: the same script at nanoGPT's shakespeare_char proportions scaled to this CPU
  (:data:`NANOGPT_REAL`: a 1.8 M-parameter GPT, iterations that cost several restores each, an
  eval of 2 x 40 batches every 50 iterations); the same questions;
* ``nanogpt``: the corpus benchmark's nanoGPT-shaped case (a `flor.loop` over `itertools.count()`
  ending in `if iter_num + 1 > max_iters: break`, an eval branch every `eval_interval` iterations),
  sized by :data:`NANOGPT_BENCH`; questions ``a_epoch`` (the parameters' norm after the step:
  reads only the parameters) and ``c_eval`` (in the eval branch: no worse than before).

Each repetition records the script once (the machine's default threads, a checkpoint at every
epoch: ``FLOR_CKPT_PERIOD=1``; flor's default policy keeps fewer here, and a segment that
re-executes iterations runs no slice), then runs, per question, ``flor replay NAME --force`` and ``flor replay NAME --force
--no-slice`` one after the other (their order alternates between repetitions), and compares
the sliced replay's values with the ``--no-slice`` replay's (today's memoization) and, with
``--fresh``, every replayed value with a fresh run of today's script (a run as long as the
recording; ``tests/realworld`` checks the corpus cases against fresh runs).

    python benchmarks/slice_replay.py [--reps 3] [--cases mnist,evalheavy,evalheavy_long,nanogpt,nanogpt_real] [--section NAME] [--fresh] [--no-write]
"""

from __future__ import annotations

import argparse
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
from corpus_replay import MNIST, NANOGPT, Case, _compare, _layout, _run, _statement_name, _tstamp  # noqa: E402
from workloads import child_env, flor_cli, git, run_command  # noqa: E402

from tests.realworld.harness import _values, recorded_text, today_text  # noqa: E402

SECTION = "slice_replay"
# nanoGPT's proportions at a loaded 2-core machine's scale: an evaluation of 2 x 10 batches every
# 10 iterations (nanoGPT: 2 x 200 every 250), 40 iterations of 2 micro-steps, a 2-layer model.
NANOGPT_BENCH = Case(NANOGPT.name, NANOGPT.folder,
                     ("--max_iters=40", "--lr_decay_iters=40", "--warmup_iters=5", "--eval_interval=10",
                      "--eval_iters=10", "--n_layer=2", "--n_embd=64", "--n_head=2", "--block_size=32", "--batch_size=8"),
                     NANOGPT.prepare, {}, ("a_epoch", "c_eval"))
# nanoGPT's shakespeare_char config (config/train_shakespeare_char.py: 6 layers, 6 heads, 384 wide,
# block 256, batch 64, dropout 0.2, lr 1e-3 to 1e-4 over 5000 iterations, 100 warm-up, an eval of
# 2 x 200 batches every 250 iterations, one micro-step) scaled to a 2-core CPU: 4 layers, 4 heads,
# 192 wide (1.8 M parameters: 7 MB of weights, 28 MB of checkpointed state with the gradients
# and AdamW's two moments), block 64, batch 8, 150 iterations, an eval of 2 x 40 batches every 50
# (the same 0.8 eval batches per training iteration as nanoGPT's 200 per 250).
NANOGPT_REAL = Case("nanogpt_real", NANOGPT.folder,
                    ("--max_iters=150", "--lr_decay_iters=150", "--warmup_iters=4", "--eval_interval=50",
                     "--eval_iters=40", "--n_layer=4", "--n_embd=192", "--n_head=4", "--block_size=64",
                     "--batch_size=8", "--gradient_accumulation_steps=1", "--dropout=0.2", "--learning_rate=1e-3",
                     "--min_lr=1e-4"),
                    NANOGPT.prepare, {}, ("a_epoch", "c_eval"))
CASES = {"mnist": MNIST, "nanogpt": NANOGPT_BENCH, "nanogpt_real": NANOGPT_REAL}

EVAL_HEAVY = '''
import flor
import torch
import torch.nn as nn
import torch.nn.functional as F

SCALE = 1  # examples per epoch, in multiples of 4096 training and 6144 validation ones
torch.manual_seed(0)
X = torch.randn(4096 * SCALE, 64)
Y = (X[:, :8].sum(1) > 0).long()
VX = torch.randn(6144 * SCALE, 64)
VY = (VX[:, :8].sum(1) > 0).long()
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=64, shuffle=True)
val_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(VX, VY), batch_size=64)
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return correct / total


with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(20)):
        for x, y in flor.loop("step", train_loader):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        acc = evaluate(model, val_loader)
        flor.log("val_acc", acc)
        print(f"epoch {epoch}: val_acc {acc:.4f}")
        # HINDSIGHT a_epoch: flor.log("weight_norm", sum(p.norm() ** 2 for p in model.parameters()).item() ** 0.5)
'''


# evalheavy_long: the same epochs 8 times as long (about 3 s each here, a minute in all), so that
# the replay's fixed start-up (a process, torch's import: about 1.5 s) weighs on the ratio as
# little as it does on a GPU job whose epochs take minutes; the shape, an evaluation a third of
# each epoch, is the same.
EVAL_HEAVY_SCALES = {"evalheavy": 1, "evalheavy_long": 8}


def log(message: str) -> None:
    print(f"[slice_replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _prepare(case: str, repo: Path) -> tuple[str, tuple, tuple, tuple]:
    """Lay the case out in ``repo``; (full source with markers, argv, questions, scripts preparing data)."""
    if case in CASES:
        spec = CASES[case]
        return _layout(spec, repo), spec.argv, spec.questions, spec.prepare
    repo.mkdir(parents=True)
    scale = EVAL_HEAVY_SCALES[case]
    return EVAL_HEAVY.replace("SCALE = 1 ", f"SCALE = {scale} "), (), ("a_epoch",), ()


def one_rep(case: str, tmp: Path, rep: int, fresh_runs: bool) -> dict:
    repo = tmp / f"{case}-{rep}"
    source, argv, questions, prepare = _prepare(case, repo)
    (repo / "train.py").write_text(recorded_text(source))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", case)
    for script in prepare:
        _run(repo, script)
    pristine = tmp / f"{case}-{rep}-pristine"
    shutil.copytree(repo, pristine)
    # A checkpoint at every epoch: every iteration memoized (a segment that re-executes some
    # iterations runs no slice: what skipped statements leave would be read there).
    record_s, _rc, _out = run_command([sys.executable, "train.py", *argv], repo, env=child_env(FLOR_CKPT_PERIOD="1"))
    tstamp = _tstamp(repo)
    log(f"{case} rep {rep}: recorded in {record_s:.1f} s")
    result = {"record_s": record_s, "questions": {}}
    for qid in questions:
        name = _statement_name(source, qid)
        (repo / "train.py").write_text(today_text(source, qid))
        _s, _rc, plan = run_command([*flor_cli(), "replay", name, "--dry-run"], repo, env=child_env(), check=False)
        fresh = tmp / f"{case}-{rep}-{qid}-fresh"
        reference = None
        if fresh_runs:
            shutil.copytree(pristine, fresh)
            (fresh / "train.py").write_text(today_text(source, qid))
            _run(fresh, "train.py", *argv)
            _t, reference = _values(fresh / ".flor" / "flor.db", name, "record")
        entry = {"name": name, "plan": plan}
        variants = [("slice", []), ("no-slice", ["--no-slice"])]
        for label, extra in (variants if rep % 2 == 0 else list(reversed(variants))):
            wall, rc, out = run_command([*flor_cli(), "replay", name, "--force", *extra], repo, env=child_env(),
                                        check=False)
            _t, replayed = _values(repo / ".flor" / "flor.db", name, "replay", tstamp)
            entry.setdefault("values", {})[label] = replayed
            slice_line = next((line.strip() for line in out.splitlines() if line.strip().startswith("slice:")), "")
            timing = next((line.split("time: ", 1)[1] for line in out.splitlines() if " time: " in line), "")
            entry[label] = {"s": wall, "exit": rc, "ratio": wall / record_s,
                            "check": _compare(replayed, reference) + " as fresh" if reference is not None else "",
                            "slice": slice_line, "timing": timing}
            log(f"{case} rep {rep} {qid} {label}: {wall:.2f} s = {100 * wall / record_s:.1f} % (exit {rc}); "
                f"{entry[label]['check']}; {slice_line}; {timing}")
        values = entry.pop("values")
        entry["same"] = _compare(values["slice"], values["no-slice"]) + " as --no-slice"
        log(f"{case} rep {rep} {qid}: sliced values {entry['same']}")
        result["questions"][qid] = entry
        shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(pristine, ignore_errors=True)
    return result


TARGETS = {("mnist", "a_epoch"): "≤ 8 %", ("mnist", "b_helper"): "no worse than --no-slice",
           ("evalheavy", "a_epoch"): "≤ 5 %", ("evalheavy_long", "a_epoch"): "≤ 5 %", ("nanogpt", "a_epoch"): "≤ 10 %",
           ("nanogpt", "c_eval"): "no worse than --no-slice", ("nanogpt_real", "a_epoch"): "≤ 10 %",
           ("nanogpt_real", "c_eval"): "no worse than --no-slice"}


def render(results: dict[str, list[dict]], command: str, elapsed: float, loads: tuple = ()) -> str:
    lines = [
        "## Replay at the cost of the question: the slice (issue 30)", "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). {machine()}. Whole `flor replay --force` processes timed by "
        "the parent, recordings with a checkpoint every epoch (`FLOR_CKPT_PERIOD=1`), with the slice (default) and `--no-slice` run one after the other on the same recording, their "
        "order alternating between repetitions; the sliced replay's values compared with the `--no-slice` replay's. "
        "`mnist`: the corpus benchmark's MNIST-shaped case (14 epochs, pytorch/examples sizes); `evalheavy`: 20 epochs "
        "where evaluation is about a third of each epoch (`evalheavy_long`: the same, each epoch 8 times as long); `nanogpt_real`: nanoGPT's shakespeare_char config scaled to this "
        "CPU (`NANOGPT_REAL`: 4 layers x 192, 1.8 M parameters, 28 MB of checkpointed state, 150 iterations, an eval of "
        "2 x 40 batches every 50)." + (f" Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f}." if loads else ""),
        "",
        "| case | question | recorded run s | replay s (slice) | / record | replay s (--no-slice) | / record | target | "
        "sliced values (vs --no-slice; vs a fresh run where run) | slice (last rep) | where the worker's time went (slice, last rep) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, reps in results.items():
        record = [r["record_s"] for r in reps]
        for qid in reps[0]["questions"]:
            entries = [r["questions"][qid] for r in reps]
            sliced = [e["slice"] for e in entries]
            whole = [e["no-slice"] for e in entries]
            lines.append(
                f"| {case} | `{entries[0]['name']}` ({qid}) | {fmt_range(record, digits=1)} | "
                f"{fmt_range([v['s'] for v in sliced], digits=2)} | {fmt_range([v['ratio'] for v in sliced], 100, 1)} % | "
                f"{fmt_range([v['s'] for v in whole], digits=2)} | {fmt_range([v['ratio'] for v in whole], 100, 1)} % | "
                f"{TARGETS.get((case, qid), '-')} | {'; '.join(e['same'] for e in entries)}"
                f"{''.join('; ' + v['check'] for v in sliced + whole if v['check'])} | {sliced[-1]['slice'] or 'no slice'} | "
                f"{sliced[-1]['timing']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", default="mnist,evalheavy")
    parser.add_argument("--fresh", action="store_true", help="also compare with a fresh run of today's script")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default=SECTION, help="the RESULTS.md section the rows go to")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - {*EVAL_HEAVY_SCALES, *CASES})
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; the cases: {', '.join([*EVAL_HEAVY_SCALES, *CASES])}")
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results: dict[str, list[dict]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="flor-slice-bench-") as tmp:
        for rep in range(args.reps):
            for case in (cases if rep % 2 == 0 else list(reversed(cases))):
                results[case].append(one_rep(case, Path(tmp), rep, args.fresh))
    command = "python benchmarks/slice_replay.py" + (f" --reps {args.reps}" if args.reps != 3 else "") + (
        f" --cases {args.cases}" if args.cases != "mnist,evalheavy" else "") + (" --fresh" if args.fresh else "") + (
        f" --section {args.section}" if args.section != SECTION else "")
    section = render(results, command, time.perf_counter() - started, (load_start, os.getloadavg()[0]))
    if not args.no_write:
        write_section(args.section, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

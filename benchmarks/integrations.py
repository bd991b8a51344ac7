"""Replay through the frameworks (issue 17): replay / record of an epoch-level hindsight statement
in the Lightning and Hugging Face Trainer scripts of ``tests/realworld``, sized as small real jobs.

* ``lightning``: the Lightning docs' classifier shape (``LitClassifier``: ``save_hyperparameters``,
  ``self.log``, step outputs kept for ``on_train_epoch_end``, SGD + StepLR), an MLP 20-256-4 on
  65,536 synthetic samples (2,048 steps an epoch), 10 epochs. Question: ``weight_norm`` in
  ``on_train_epoch_end``; also ``val_confidence`` in ``validation_step``.
* ``transformers``: a 4-layer, 128-wide ``BertForSequenceClassification`` built from its config on
  4,096 synthetic 32-token sequences, 5 epochs, evaluation every epoch. Question:
  ``epoch_classifier_norm`` in a callback's ``on_epoch_end``; also ``eval_positive_rate`` in
  ``compute_metrics``.

Each repetition records the script (default threads, flor's default checkpoint policy), replays
each question, and compares every replayed value with a fresh run of today's script. Whole
processes, timed by the parent; the frameworks' own import (several seconds) is in both.

    python benchmarks/integrations.py [--reps 3] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import fmt_range, machine, write_section  # noqa: E402
from corpus_replay import Case, log, one_case  # noqa: E402

SECTION = "integrations"
LIGHTNING = Case(
    "lightning", "lightning_classifier", ("--epochs", "10", "--train_size", "65536"), (),
    {"train.py": [("hidden_dim=32", "hidden_dim=256")]},
    ("a_epoch", "c_val"), {"a_epoch": 0.25},
)
TRANSFORMERS = Case(
    "transformers", "hf_text_classifier", ("--epochs", "5", "--train_size", "4096"), (),
    {"train.py": [("hidden_size=32, num_hidden_layers=2", "hidden_size=128, num_hidden_layers=4"),
                  ("intermediate_size=64", "intermediate_size=256"), ("length=16", "length=32"),
                  ("max_position_embeddings=32", "max_position_embeddings=64")]},
    ("a_epoch", "c_metrics"), {"a_epoch": 0.25},
)
QUICK = [Case(c.name, c.folder, tuple("512" if a in ("65536", "4096") else a for a in c.argv), c.prepare, c.edits,
              c.questions, c.target) for c in (LIGHTNING, TRANSFORMERS)]


def render(cases: list[Case], results: dict[str, list[dict]], command: str, elapsed: float) -> str:
    lines = [
        "## Replay through Lightning and the Hugging Face Trainer (issue 17)",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min). {machine()}. The framework scripts of `tests/realworld`, "
        "sized as small real jobs (see the benchmark's docstring), recorded with the machine's default threads and "
        "flor's default checkpoint policy; replay / record are whole processes timed by the parent (the framework's "
        "import, several seconds, is in both); each replayed value compared with a fresh run of today's script.",
        "",
        "| framework | question | recorded run s | checkpoints kept | replay s | replay / record | target | values vs fresh run | plan | where the worker's time went (last rep) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        reps = results[case.name]
        for qid in case.questions:
            entries = [r["questions"][qid] for r in reps]
            ratios = [e["ratio"] for e in entries]
            target = case.target.get(qid)
            met = "-" if target is None else (f"≤ {100 * target:.0f} %: " + ("met" if statistics.median(ratios) <= target
                                                                             else "NOT met"))
            lines.append(
                f"| {case.name} | `{entries[0]['name']}` ({qid}) | {fmt_range([r['record_s'] for r in reps], digits=1)} | "
                f"{len(reps[-1]['checkpoints'])} | {fmt_range([e['replay_s'] for e in entries], digits=2)} | "
                f"{fmt_range([100 * x for x in ratios], digits=1)} % | {met} | {'; '.join(e['check'] for e in entries)} | "
                f"{entries[-1]['plan']} | {entries[-1]['timing']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs, one repetition (a smoke run)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else [LIGHTNING, TRANSFORMERS]
    reps = 1 if args.quick else args.reps
    started = time.perf_counter()
    results: dict[str, list[dict]] = {case.name: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="flor-integrations-bench-") as tmp:
        for rep in range(reps):
            for case in (cases if rep % 2 == 0 else list(reversed(cases))):
                results[case.name].append(one_case(case, Path(tmp), rep, None))
    command = "python benchmarks/integrations.py" + (" --quick" if args.quick else "")
    section = render(cases, results, command, time.perf_counter() - started)
    if not args.no_write and not args.quick:
        write_section(SECTION, section)
    print(section)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

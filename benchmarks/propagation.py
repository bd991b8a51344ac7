"""Propagation corpus benchmark: how often flor places a hindsight statement exactly where a person
would, how often it refuses, and whether it ever places one wrongly.

Runs every case of tests/propagation/ (today.py, old.py, and expected.py or refuse.txt), several
times for timing, prints the shares and writes the "propagation" section of benchmarks/RESULTS.md.

    python benchmarks/propagation.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import fmt_range, machine, write_section  # noqa: E402

from flor.replay.propagation import propagate  # noqa: E402

CORPUS = ROOT / "tests" / "propagation"
COMMAND = "python benchmarks/propagation.py"


def read(path: Path) -> str:
    """The file's exact text, line endings included."""
    return path.read_bytes().decode("utf-8")


def classify(case: Path) -> tuple[str, float, str]:
    """(outcome, confidence, reason) of one case; outcome is one of placed-correctly,
    placed-wrongly, refused-correctly, refused-wrongly."""
    today, old = read(case / "today.py"), read(case / "old.py")
    placement = propagate(today, old)
    expected = case / "expected.py"
    if expected.exists():
        if not placement.ok:
            return "refused-wrongly", placement.confidence, placement.reason
        right = placement.source == read(expected)
        return ("placed-correctly" if right else "placed-wrongly"), placement.confidence, placement.reason
    if placement.ok:
        return "placed-wrongly", placement.confidence, placement.reason
    keyword = (case / "refuse.txt").read_text().strip().lower()
    # A refusal for another reason than the expected one is still safe; it is counted as correct
    # and listed, since the user would read a misleading reason.
    note = "" if keyword in placement.reason.lower() else " [unexpected reason]"
    return "refused-correctly", placement.confidence, placement.reason + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over the corpus (default 5)")
    args = parser.parse_args()

    cases = sorted(p for p in CORPUS.iterdir() if p.is_dir() and (p / "today.py").exists())
    outcomes = {case.name: classify(case) for case in cases}
    passes = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for case in cases:
            propagate(read(case / "today.py"), read(case / "old.py"))
        passes.append((time.perf_counter() - start) / len(cases))

    placements = [n for n, c in zip(outcomes, cases) if (c / "expected.py").exists()]
    refusals = [n for n in outcomes if n not in placements]
    count = {k: sum(o[0] == k for o in outcomes.values()) for k in
             ("placed-correctly", "placed-wrongly", "refused-correctly", "refused-wrongly")}  # fmt: skip
    total = len(cases)
    exact = count["placed-correctly"] + count["refused-correctly"]

    def share(n: int, of: int) -> str:
        return f"{n}/{of} ({100 * n / of:.1f}%)" if of else "0/0"

    rows = [
        ("cases handled exactly as expected", share(exact, total)),
        ("placed exactly where expected (of cases to place)", share(count["placed-correctly"], len(placements))),
        ("refused (of cases to refuse)", share(count["refused-correctly"], len(refusals))),
        ("**placed wrongly** (all cases)", share(count["placed-wrongly"], total)),
        ("refused though placeable (of cases to place)", share(count["refused-wrongly"], len(placements))),
        ("time per case, ms: median (min-max) of per-pass means", fmt_range(passes, 1000, 2)),
    ]
    lines = [
        "## Hindsight-statement propagation (corpus)",
        "",
        f"Command: `{COMMAND} --repeat {args.repeat}` — {machine()}.",
        f"Corpus: `tests/propagation/`, {total} hand-written version pairs ({len(placements)} to place, "
        f"{len(refusals)} to refuse); default threshold 0.7.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
    ]
    odd = [
        (n, o)
        for n, o in outcomes.items()
        if o[0] in ("placed-wrongly", "refused-wrongly") or "[unexpected reason]" in o[2]
    ]
    if odd:
        lines += ["", "Cases not handled as expected:", ""]
        lines += [f"- `{n}`: {o[0]} — {o[2]}" for n, o in odd]
    confidences = sorted(o[1] for o in outcomes.values() if o[0] == "placed-correctly")
    if confidences:
        lines += ["", f"Confidence of the correct placements: min {confidences[0]:.2f}, "
                      f"{sum(c == 1.0 for c in confidences)} of {len(confidences)} at 1.00."]  # fmt: skip
    markdown = "\n".join(lines)
    print(markdown)
    write_section("propagation", markdown)


if __name__ == "__main__":
    main()

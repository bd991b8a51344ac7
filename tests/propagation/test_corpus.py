"""The propagation corpus: each folder holds today.py, old.py, and expected.py (old.py with the new
statements where they belong) or refuse.txt (a word that the refusal's reason must contain).

Every expected.py was written by hand; a case must be placed exactly as expected, or refused.
benchmarks/propagation.py reports the same corpus as shares.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flor.replay.propagation import propagate

CORPUS = Path(__file__).parent
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir() and (p / "today.py").exists())


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert sum((p / "refuse.txt").exists() for p in CASES) >= 8


def read(path: Path) -> str:
    """The file's exact text: line endings (CRLF cases) are part of what is tested."""
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_case(case: Path):
    today, old = read(case / "today.py"), read(case / "old.py")
    placement = propagate(today, old)
    expected = case / "expected.py"
    if expected.exists():
        assert placement.ok, placement.reason
        assert placement.source == read(expected), placement.diff(old)
    else:
        keyword = (case / "refuse.txt").read_text().strip()
        assert not placement.ok, f"placed a case that must be refused:\n{placement.diff(old)}"
        assert placement.source == old
        assert keyword.lower() in placement.reason.lower(), placement.reason

"""Shared helpers for benchmarks: timing statistics and the sections of benchmarks/RESULTS.md.

Each benchmark owns one section of RESULTS.md, delimited by HTML comments, and rewrites only that
section, so benchmarks can be re-run one at a time without losing the others' tables.
"""

from __future__ import annotations

import platform
import re
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is written by the benchmark it names; re-run that command to refresh it.\n"


def machine() -> str:
    """One line describing where the numbers were measured."""
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of measured values."""
    return statistics.median(values), min(values), max(values)


def fmt_range(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """'median (min-max)' with the given scale and precision."""
    med, lo, hi = summary(values)
    return f"{med * scale:.{digits}f} ({lo * scale:.{digits}f}-{hi * scale:.{digits}f})"


def read_section(name: str) -> str | None:
    """The markdown of the section called ``name`` in RESULTS.md (None: there is none)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.search(re.escape(f"<!-- begin:{name} -->") + r"\n(.*?)\n?" + re.escape(f"<!-- end:{name} -->"), text, re.S)
    return found.group(1) if found else None


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section called ``name`` in RESULTS.md with ``markdown``."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)

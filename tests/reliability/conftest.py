"""The reliability suite prints its fault tally (faults injected, runs killed, rows checked and
lost), per test module and in total, at the end of the session; docs/reliability.md quotes it."""

from .helpers import BY_MODULE, KEYS, TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not any(TALLY.values()):
        return
    terminalreporter.write_sep("-", "flor reliability tally")
    header = ("module",) + KEYS
    lines = [(name, *(str(row[k]) for k in KEYS)) for name, row in sorted(BY_MODULE.items())]
    lines.append(("total", *(str(TALLY[k]) for k in KEYS)))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        terminalreporter.write_line("  ".join(str(cell).rjust(w) if i else str(cell).ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))

"""The corpus's end-of-session report: every child that hung and was started once more (see
harness.note_hang), with the end of its threads' stacks, so that a rare hang seen in CI comes
with what it was doing even when the retry passed."""

from tests.realworld.harness import HANGS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not HANGS:
        return
    terminalreporter.write_sep("-", f"flor corpus: {len(HANGS)} hung child(ren), started once more")
    for what, dump, stacks in HANGS:
        terminalreporter.write_line(f"{what}: stacks in {dump}; their end:")
        for line in stacks.splitlines()[-40:]:
            terminalreporter.write_line("    " + line)

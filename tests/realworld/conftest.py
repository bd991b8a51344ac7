"""The corpus's end-of-session report: every child that hung and was started once more (see
harness.note_hang), with the end of its threads' stacks, so that a rare hang seen in CI comes
with what it was doing even when the retry passed. Under pytest-xdist (scripts/test.sh) each
worker hands its list to the controller, which prints it (tests/conftest.py)."""

from tests.conftest import write_hangs
from tests.realworld.harness import HANGS


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["flor_hangs"] = [(what, str(dump), stacks) for what, dump, stacks in HANGS]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    write_hangs(terminalreporter, HANGS)

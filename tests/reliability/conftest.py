"""The reliability suite prints its fault tally (faults injected, runs killed, rows checked and
lost), per test module and in total, at the end of the session; docs/reliability.md quotes it.
Under pytest-xdist (scripts/test.sh) each worker hands its tally to the controller, which prints
the sum (tests/conftest.py)."""

from tests.conftest import write_tally

from .helpers import BY_MODULE


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["flor_tally"] = BY_MODULE


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    write_tally(terminalreporter, BY_MODULE)

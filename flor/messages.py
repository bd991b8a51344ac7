"""One-line messages to the user, on stderr: warnings (each said once) and errors.

Every part of flor that talks to the user (the command line, a training script's exit, the
background threads of a run) prints through here, so the prefixes and the stream are the same
everywhere and a message can be found by grepping for ``flor: error:``.

>>> warn("checkpoint of iteration 3 not taken")      # doctest: +SKIP
flor: warning: checkpoint of iteration 3 not taken
"""

from __future__ import annotations

import sys

_warned: set[str] = set()


def warn(message: str) -> None:
    """Print a one-line warning to stderr, once per distinct message."""
    if message not in _warned:
        _warned.add(message)
        print(f"flor: warning: {message}", file=sys.stderr, flush=True)


def error(message: object) -> None:
    """Print a one-line error (a :class:`~flor.errors.FlorError` or text) to stderr."""
    print(f"flor: error: {message}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    """Print a progress or status line to stderr (never mixed into a command's results on stdout)."""
    print(message, file=sys.stderr, flush=True)

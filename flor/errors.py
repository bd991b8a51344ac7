"""The one exception tree of flor.

Every error a user can cause is a :class:`FlorError`; the command line prints its message as one
line and exits non-zero, without a traceback. Foreign errors (sqlite3, subprocess, git, pickle)
are converted once, where they cross into flor, with ``raise ... from exc``.

::

    FlorError
    ├── UsageError              a wrong call or command-line option
    │   ├── ArgumentError       --kwargs that do not match the declared flor.arg names or types
    │   └── FilterError         a filter (flor ui, flor replay --where) that is not allowed or does not parse
    ├── StoreError              the SQLite store cannot be opened, read or written
    ├── VersionControlError     git failed, or a code version is missing
    ├── CheckpointError         a checkpoint cannot be written, read or restored
    ├── RunNotFoundError        no run (or more than one) matches a tstamp prefix
    ├── ReplayError             a replay could not be planned or a worker failed
    └── PropagationError        a new statement cannot be placed into an old code version

    FlorWarning (a UserWarning)  something flor worked around, such as an unknown name among
                                 known ones in flor.dataframe; the command line prints it as one line
"""

from __future__ import annotations


class FlorError(Exception):
    """Base of every error flor raises on purpose; its message is one line for the user."""


class UsageError(FlorError):
    """A call or command-line option that flor cannot act on."""


class ArgumentError(UsageError):
    """``--kwargs`` that name an undeclared argument, do not parse, or do not convert."""


class FilterError(UsageError):
    """A filter expression that is not allowed or does not parse; the message says why."""


class StoreError(FlorError):
    """The store at ``.flor/flor.db`` cannot be opened, read or written."""


class VersionControlError(FlorError):
    """A git operation failed or a recorded code version cannot be found."""


class CheckpointError(FlorError):
    """A checkpoint cannot be written, read or restored."""


class RunNotFoundError(UsageError):
    """No run, or more than one, matches the tstamp (prefix) that the user gave."""


class ReplayError(FlorError):
    """A replay could not be planned, or some of its work failed."""


class PropagationError(ReplayError):
    """A new statement cannot be placed into an old version of the code with confidence."""


class FlorWarning(UserWarning):
    """A problem flor worked around; the command line prints it as ``flor: warning: ...``."""

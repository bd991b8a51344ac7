"""flor: record-replay for machine-learning training, with hindsight logging.

>>> import flor
>>> lr = flor.arg("lr", 1e-3)
>>> with flor.checkpointing(model=net, optimizer=opt):            # doctest: +SKIP
...     for epoch in flor.loop("epoch", range(10)):
...         for step, (x, y) in flor.loop("step", enumerate(loader)):
...             flor.log("loss", train_step(x, y))
>>> flor.dataframe("lr", "loss")                                   # doctest: +SKIP
"""

from __future__ import annotations

import sys as _sys

from . import api as _api
from . import messages as _messages
from . import replay
from .api import arg, args, checkpointing, commit, log, loop
from .errors import (
    ArgumentError,
    CheckpointError,
    FlorError,
    PropagationError,
    ReplayError,
    RunNotFoundError,
    StoreError,
    UsageError,
    VersionControlError,
)

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "CheckpointError",
    "FlorError",
    "PropagationError",
    "ReplayError",
    "RunNotFoundError",
    "StoreError",
    "UsageError",
    "VersionControlError",
    "arg",
    "args",
    "best",
    "checkpointing",
    "commit",
    "dataframe",
    "extract",
    "load_checkpoint",
    "log",
    "loop",
    "query",
    "replay",
]


def dataframe(*names: str, latest: bool = False, last: bool = False, read_by: str | None = None,
              readers_of: str | None = None, rank: int | None = None, where: str | None = None,
              order_by: str | None = None, limit: int | None = None, per_run: bool = False):
    """All runs as one pandas DataFrame: ``projid, tstamp, filename``, loop columns, then names.

    ``last=True``: one row per run, each name's last value (at the run's last logged iteration,
    as ``flor ui`` shows it). ``latest=True``: the feature-store view, one row per item key with
    each name's most recent value and the run that gave it. ``read_by`` / ``readers_of``: select
    runs by lineage. A distributed job's rows carry a ``rank`` column; ``rank=0`` keeps rank 0's.
    ``where`` (flor's filter grammar over args, last values and run columns),
    ``order_by`` (``"val_loss, lr desc"``) and ``limit`` choose runs as ``flor runs`` does;
    ``per_run=True`` is ``last=True``.

    >>> flor.dataframe("hidden", "accuracy")          # doctest: +SKIP
    >>> flor.dataframe("lr", "val_loss", per_run=True, where="lr < 0.01", order_by="val_loss", limit=3)  # doctest: +SKIP
    >>> flor.dataframe("n_words", latest=True)        # doctest: +SKIP
    """
    from .reading.query import dataframe as _dataframe

    return _dataframe(*names, latest=latest, last=last, read_by=read_by, readers_of=readers_of, rank=rank,
                      where=where, order_by=order_by, limit=limit, per_run=per_run)


def best(name: str, mode: str = "max", where: str | None = None, *, checkpointed: bool = False):
    """The run and iteration with the best value of a logged metric (the model registry); its
    ``load(model=net)`` loads that checkpoint.

    >>> flor.best("val_acc", checkpointed=True).load(model=net)      # doctest: +SKIP
    """
    from .reading.registry import best as _best

    return _best(name, mode, where, checkpointed=checkpointed)


def extract(name: str, pattern: str, *, runs=None, where=None, streams=None, dry_run: bool = False,
            force: bool = False):
    """Values of ``name`` read by ``pattern`` (a regular expression with one capture group) out of
    what past runs printed, stored beside their logged values (``source='extract'``).

    >>> flor.extract("test_loss", r"Average loss: ([0-9.]+)")     # doctest: +SKIP
    """
    from .reading.extraction import extract as _extract

    return _extract(name, pattern, runs=runs, where=where, streams=streams, dry_run=dry_run, force=force)


def load_checkpoint(run, iteration=None, *objs, trusted: bool = False, **named):
    """The checkpoint of ``run`` (tstamp prefix) at ``iteration`` (default: its last); with
    objects given, restore their state too. Tensors, arrays and plain values are read as data; an
    object kept as a pickle is unpickled only with ``trusted=True`` (unpickling runs code: pass it
    only for a .flor you trust), else CheckpointError says so.

    >>> flor.load_checkpoint("2026-11-26T15:04", 3, model=net)     # doctest: +SKIP
    """
    from .checkpoints.restore import load_checkpoint as _load

    return _load(run, iteration, *objs, trusted=trusted, **named)


def query(sql: str):
    """Read-only SQL over the store, as a DataFrame.

    >>> flor.query("SELECT tstamp, status FROM runs")  # doctest: +SKIP
    """
    from .reading.query import query as _query

    return _query(sql)


def _excepthook(exc_type, exc, tb, _previous=_sys.excepthook):
    """Record an uncaught error on the run; print flor's own errors as one line."""
    _api.note_uncaught(exc)
    if isinstance(exc, FlorError):
        _messages.error(exc)
        return
    _previous(exc_type, exc, tb)


_sys.excepthook = _excepthook
_api.take_kwargs_from_argv()
_api.capture_argparse()
_api.note_data_iterators()
_api.note_trackers()

"""The calls a training script makes: thin wrappers over the current :class:`~flor.recording.run.Run`.

``arg``, ``log``, ``loop``, ``commit`` and the ``checkpointing`` context manager.

>>> import flor
>>> hidden = flor.arg("hidden", 500)                               # doctest: +SKIP
>>> for epoch in flor.loop("epoch", range(3)):                      # doctest: +SKIP
...     flor.log("loss", 0.1 * epoch)
"""

from __future__ import annotations

import os
import sys

from .recording import lineage
from . import values
from .recording.args import split_kwargs
from .errors import ArgumentError, FlorError, UsageError
from .logged import LoggedValue
from .messages import error
from .recording.run import Run

# The run whose training has begun (flor.log's hot path reads only this), and the run that is
# still collecting args before it begins.
_current: Run | None = None
_pending: Run | None = None
_overrides: dict[str, str] = {}
_argv: list[str] = list(sys.argv)
# Values stored exactly as logged, with no work at log or flush time (SQLite tags their type).
_FAST_TYPES = frozenset((int, float, str))
_encode_logged = values.encode_logged


def take_kwargs_from_argv() -> None:
    """Remove ``--kwargs ...`` from sys.argv (at import) and keep the overrides for flor.arg."""
    global _overrides, _argv
    _argv = list(sys.argv)
    if "--kwargs" not in sys.argv:
        return
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in ("-m", "flor", "flor.exe"):
        return  # the flor command line itself (python -m flor / flor): its options are its own
    try:
        kept, _overrides = split_kwargs(sys.argv)
    except ArgumentError as exc:
        fail_fast(exc)
    sys.argv[:] = kept


def capture_argparse() -> None:
    """Record a script's argparse options as args (see ``argparsing``), unless this process is
    flor's own command line or ``FLOR_ARGPARSE=0``."""
    from .recording import argparsing
    from .environment import settings

    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in ("-m", "flor", "flor.exe", "-c") or not settings.argparse_capture():
        return
    argparsing.install(args)


def note_data_iterators() -> None:
    """Note how DataLoader iterators are made, once torch's data module is imported (see
    ``checkpoints.iterators``): called at import and at the script's first flor calls."""
    from .checkpoints import iterators

    iterators.install()


TRACKER_STEP = "tracker_step"  # the step the script gave its tracker, where it changes (flor export reads it)
_tracker_state: dict = {"on": None, "step_at": None}


def note_trackers() -> None:
    """Hook the trackers the script has imported (``trackers.hooks``), once each, unless
    ``FLOR_TRACKERS=0``; called at import and at each flor.loop, never importing a tracker."""
    from .environment import settings

    if _tracker_state["on"] is None:
        program = os.path.basename(sys.argv[0]) if sys.argv else ""
        if program in ("-m", "flor", "flor.exe"):
            # flor's own command line logs to no tracker (flor export imports one to write to
            # it); under `python -m`, argv[0] is "-m" until the module runs: decide at its first loop.
            return
        _tracker_state["on"] = settings.trackers()
    if _tracker_state["on"]:
        from .trackers import hooks

        hooks.install(_from_tracker, _tracker_run)


def _from_tracker(name: str, value: float, step) -> None:
    """A scalar the script gave its tracker: recorded as flor.log would, in the loop context;
    the tracker's own step is kept as ``tracker_step`` when it changes within that context."""
    run = _current or begin_run()
    log(name, value)
    if step is None or isinstance(step, bool):
        return
    try:
        step = int(step)
    except (TypeError, ValueError):
        return
    at = (id(run), run.loops.ctx_id, run.loops.iteration, step)
    if _tracker_state["step_at"] != at:
        _tracker_state["step_at"] = at
        log(TRACKER_STEP, step)


def _tracker_run(tracker: str, where: dict) -> None:
    """Note the tracker run this flor run logs to (flor show, flor export), once per change."""
    run = _current or collecting_run()
    known = dict(run.environment.get("trackers") or {})
    if known.get(tracker) != where:
        known[tracker] = dict(where)
        run.note_environment("trackers", known)


def fail_fast(exc: FlorError) -> None:
    """End a script on a user's mistake with one line on stderr and exit status 2."""
    error(exc)
    raise SystemExit(2)


def _new_run() -> Run:
    run = Run(dict(_overrides), list(_argv))
    run.read_runs.update(lineage.take_waiting())
    return run


def set_current(run: Run | None) -> None:
    """Make ``run`` the current one (replay workers install their own kind of Run)."""
    global _current, _pending
    _current = run
    _pending = None


def current_run() -> Run | None:
    """The run that has begun in this process, if any."""
    return _current


def overridden() -> frozenset[str]:
    """The names given a value with ``--kwargs`` on this script's command line."""
    return frozenset(_overrides)


def collecting_run() -> Run:
    global _pending
    note_data_iterators()
    note_trackers()
    if _current is not None:
        return _current
    if _pending is None:
        _pending = _new_run()
        import atexit

        # A script that only declares args is still a run; begin and end it at exit.
        atexit.register(_end_pending_at_exit, _pending)
    return _pending


def _end_pending_at_exit(run: Run) -> None:
    if run is not _pending or run.begun or run.ended:
        return
    if run.flor_error:
        return  # a misuse of flor before training started: nothing to record
    try:
        run.begin()
    except FlorError as exc:
        error(exc)
        return
    run.end()


def begin_run() -> Run:
    """Begin the run now (its args checked, row inserted, random state taken) unless it has begun."""
    global _current, _pending
    run = collecting_run()
    if not run.begun:
        try:
            run.begin()
        except ArgumentError as exc:
            run.ended = True
            fail_fast(exc)
        except FlorError:
            run.ended = True  # reported once, by whoever catches it; not retried at exit
            raise
        _pending = None
        _current = run
    return run


def arg(name: str, default: object = None) -> object:
    """Declare a hyper-parameter and return its value for this run.

    Precedence: the value recorded for the run being replayed; ``--kwargs name=value``; the
    default. Overrides are converted to the default's type.

    >>> lr = flor.arg("lr", 1e-3)        # python train.py --kwargs lr=0.01  ->  0.01
    """
    run = _current or collecting_run()
    try:
        return run.arg(name, default)
    except ArgumentError as exc:
        if not run.begun:
            run.ended = True
            fail_fast(exc)
        raise


def log(name: str, value):
    """Record ``value`` under ``name`` in the current loop context and return ``value``.

    >>> loss = flor.log("loss", criterion(out, y).item())
    """
    run = _current
    if run is None:
        run = begin_run()
    if type(name) is not str:
        raise UsageError(f"flor.log name must be a string, got {type(name).__name__} {name!r}")
    loops = run.loops
    if type(value) in _FAST_TYPES:
        # The hot path: a plain tuple of PlainLog's layout (a named tuple would cost more than the rest).
        run.push_log((name, value, loops.ctx_id, loops.iteration))
    else:
        stored, vtype = _encode_logged(value, name)
        run.push_special(LoggedValue(name, stored, vtype, loops.ctx_id, loops.iteration))
    return value


def loop(name: str, iterable, key=None, incremental: bool = False):
    """Iterate over ``iterable`` (streaming), with ``name`` and the index in the log context.

    ``key``: identify each iteration by its item's key instead of its position alone, ``True``
    for the item itself (a path, a number) or a function of the item; the dataframe shows the
    key in the loop's column. ``incremental=True`` (with a key) skips the items that an earlier
    run with the same loop body and args finished.

    >>> for epoch in flor.loop("epoch", range(10)):
    ...     for step, batch in flor.loop("step", enumerate(loader)): ...
    >>> for doc in flor.loop("document", paths, key=True, incremental=True): ...
    """
    if type(name) is not str or not name:
        raise UsageError(f"flor.loop name must be a non-empty string, got {name!r}")
    try:
        iter(iterable)
    except TypeError:
        raise UsageError(f"flor.loop({name!r}, ...) needs an iterable, got {type(iterable).__name__}") from None
    if key is not None and key is not True and not callable(key):
        raise UsageError(f"flor.loop({name!r}, key=...) takes True or a function of the item, got {key!r}")
    if incremental and key is None:
        raise UsageError(f"flor.loop({name!r}, incremental=True) needs key=...: items are skipped by their key")
    run = _current or begin_run()
    note_trackers()
    if key is None:
        return run.loop(name, iterable)
    keyed, items = run.keyed_loop(name, iterable, key, bool(incremental), sys._getframe(1))
    return run.loop(name, items, keyed)


def _deliver_read(run_ids: list[int], how: str) -> bool:
    """The lineage sink: give a read to the run recording (or collecting args) here."""
    run = _current or _pending
    if run is None:
        return False
    if run_ids:
        run.note_read(run_ids, how)
    return True


lineage.sink = _deliver_read


def commit() -> None:
    """End the current run now (notebooks); the next flor call starts a new run.

    >>> flor.commit()
    """
    global _current
    run = _current
    if run is None and _pending is not None:
        run = begin_run()
    if run is None:
        return
    _current = None
    run.end()


def note_uncaught(exc: BaseException) -> None:
    """Record the error that is ending the script on the current (or not yet begun) run."""
    run = _current or _pending
    if run is not None:
        run.note_failure(exc)


def _name_objects(objs: tuple, named: dict) -> dict[str, object]:
    registered: dict[str, object] = {}
    for position, obj in enumerate(objs):
        registered[f"{position}"] = obj
    for name, obj in named.items():
        if name in registered:
            raise UsageError(f"flor.checkpointing: the name {name!r} is used twice")
        registered[name] = obj
    if not registered:
        raise UsageError(
            "flor.checkpointing needs at least one object, e.g. flor.checkpointing(model=net, optimizer=opt)"
        )
    return registered


class checkpointing:  # noqa: N801 - used as a function, like open()
    """``with flor.checkpointing(model=net, optimizer=opt): ...``

    Registers objects with ``state_dict``/``load_state_dict`` (modules, optimizers, schedulers,
    scalers), numpy arrays and picklable objects. Their state and the random state are
    checkpointed in each iteration of the outermost ``flor.loop`` inside the block, as often
    as the overhead budget allows (``FLOR_CKPT_BUDGET``, default 1 %).

    >>> with flor.checkpointing(model=net, optimizer=opt):           # doctest: +SKIP
    ...     for epoch in flor.loop("epoch", range(10)): ...
    """

    def __init__(self, *objs: object, **named: object) -> None:
        self.objects = _name_objects(objs, named)
        self.run = None
        self.manager = None

    def __enter__(self) -> "checkpointing":
        # Entering the block does not begin the run: args declared later (for example in the
        # outer loop's range) are still checked before anything is recorded.
        run = _current or collecting_run()
        if run.scope is not None:
            raise UsageError("flor.checkpointing blocks cannot be nested; register all objects in one")
        self.run = run
        self.manager = run.checkpoint_manager(self.objects)
        run.scope = self.manager
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        run = self.run
        if run is not None and run.scope is self.manager:
            self.manager.leave(run, failed=exc_type is not None)
            run.scope = None


def record_settings(settings: dict, prefix: str = "", *, fixed: str | None = None, keep_declared: bool = False,
                    setter=None) -> dict[str, object]:
    """Record the plain entries of ``settings`` as args named ``prefix + key`` (nested dicts as
    dotted names) and apply ``--kwargs`` (recording) or the recorded values (replay) to them in
    place; return the top-level entries recorded, with the values to use. Keys that are not
    non-empty strings or start with ``_``, and values that are not plain settings
    (:func:`~flor.values.is_plain_setting`: objects, functions), are left alone.

    The one definition of "record settings as args": :func:`args` and the integrations'
    hyper-parameters and trainer settings go through it.

    ``fixed``: the settings are already in effect (a model built from them), so an override of
    one would be silently ignored; it stops the script in one line, ``fixed`` saying why and what
    to do. (A replay applies recorded values, never overrides: its callers pass None.)
    ``keep_declared``: names already declared (an argparse option of the same name) stay as they
    are. ``setter(key, value)``: how a changed value is put back (default: ``settings[key] = value``).
    """
    run = _current or collecting_run()
    put = setter or settings.__setitem__
    used: dict[str, object] = {}
    for key, value in list(settings.items()):
        if type(key) is not str or not key or key.startswith("_"):
            continue
        name = prefix + key
        if isinstance(value, dict):
            record_settings(value, name + ".", fixed=fixed, keep_declared=keep_declared)
            continue
        if (keep_declared and name in run.args) or not values.is_plain_setting(value):
            continue
        if fixed is not None and name in _overrides:
            fail_fast(ArgumentError(f"--kwargs {name}=... cannot take effect: {fixed}"))
        new = arg(name, value)
        if new is not value:
            put(key, new)
        used[key] = new
    return used


def args(settings, prefix: str = ""):
    """Record every entry of a mapping or namespace of settings (a config dict, an argparse
    ``Namespace``, a nanoGPT-style ``{k: globals()[k] ...}`` dict) as args, and return it with
    ``--kwargs`` overrides applied in place, as :func:`arg` does for one value. Nested dicts
    become dotted names (``--kwargs optimizer.lr=0.01``); values that are not plain (objects,
    functions) are left alone and not recorded.

    >>> config = flor.args({"lr": 1e-3, "optimizer": {"momentum": 0.9}})   # doctest: +SKIP
    >>> globals().update(flor.args(config))   # nanoGPT: the script reads its globals   # doctest: +SKIP
    """
    run = _current or collecting_run()
    if isinstance(settings, dict):
        record_settings(settings, prefix)
    elif hasattr(settings, "__dict__") and not isinstance(settings, type):
        record_settings(dict(vars(settings)), prefix, setter=lambda key, value: setattr(settings, key, value))
    else:
        raise UsageError(f"flor.args needs a dict or a namespace of settings, got {type(settings).__name__}")
    if not prefix and not run.begun:
        try:
            run.check_overrides(early=True)
        except ArgumentError as exc:
            run.ended = True
            fail_fast(exc)
    return settings

"""The replay worker: ``python -m flor.replay.worker --wait`` executes one segment of one run.

The executor starts it *warm*: it takes its channel (its standard output, a pipe to the driver),
enters a private mount namespace when replay is confined that way (first, while it has one
thread), imports the third-party modules of the script (``FLOR_REPLAY_PRELOAD``), and waits for a
line ``SPEC`` on stdin. Its own output and the script's go to its stderr, which the executor copies
into the task's log (the worker opens no file for writing). Then it sets the run's numeric
environment, lays out the run's view of the project (``confine.py``; or a workspace of copies),
installs a :class:`~flor.replay.driver.ReplayRun` and runs the script as ``__main__`` the way the
run was started (``python train.py`` or ``python -m pkg.train``). Values, drift and the result go
back over the channel; the worker never opens the store.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path

from .. import settings
from .channel import Channel


def _writable_places(root: Path) -> list[Path]:
    """Where programs expect to write, besides the project: the temporary folder and the home."""
    places = [Path(tempfile.gettempdir()), Path("/tmp")]
    home = os.environ.get("HOME")
    if home and Path(home).is_dir() and Path(home).resolve() != Path("/"):
        places.append(Path(home))
    return places


def main(spec_path: str, channel: Channel) -> int:
    """Run the segment described by the spec file ``spec_path``."""
    from .. import api, numerics
    from ..args import split_kwargs
    from .driver import ReplayRun
    from .spec import WorkerSpec

    spec = WorkerSpec.from_json(Path(spec_path).read_text())
    root = Path(spec.root)
    view = None
    if spec.confinement == "namespace":
        from . import confine

        view = confine.View(project=root, run_tree=Path(spec.run_tree), scratch=Path(spec.scratch),
                            writable=_writable_places(root), hide=list(spec.hide))
        confine.confine(view)
        base = root
    else:
        from .workspace import guard_writes

        base = Path(spec.run_tree)
        guard_writes(base, root)
    script = base / spec.filename
    workdir = base / spec.cwd if (base / spec.cwd).is_dir() else base
    os.chdir(workdir)
    numerics.apply(spec.numeric)
    recorded_argv, _ = split_kwargs(list(spec.argv) or [spec.filename])
    sys.argv = [str(script), *recorded_argv[1:]]
    # As `python train.py` and `python -m pkg.train` set it: the script's folder, or the cwd.
    sys.path[0] = str(workdir) if spec.main_module else str(script.parent)
    def writes() -> list:
        if view is None:
            return []
        from . import confine

        return confine.written(view)

    run = ReplayRun(spec, channel, writes)
    api.set_current(run)
    from ..argparsing import install

    install(api.args)  # the script's argparse options get the values the run recorded

    try:
        if spec.main_module:
            runpy.run_module(spec.main_module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            run.finish(ok=False, error=f"the script exited with status {exc.code}")
            return 1
    except BaseException as exc:  # the user's code failed: report it, keep what was sent
        traceback.print_exc()
        run.finish(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    run.finish(ok=True)
    return 0


def serve() -> int:
    """A warm worker (see the module docstring). No line on stdin: exit at once."""
    import importlib

    # The channel is our stdout as the executor gave it; what anything else prints must not mix
    # into it, so fd 1 points elsewhere from here on.
    channel = Channel(os.dup(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    if settings.replay_confinement() == "namespace":
        from . import confine

        try:
            confine.enter()
        except confine.ConfinementError as exc:
            channel.send("result", ok=False, error=f"cannot confine the replay: {exc}")
            return 1
    for name in settings.replay_preload():
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the script imports it for real and reports the error
            pass
    from .lazy_dynamo import defer_dynamo_import

    defer_dynamo_import()
    spec = sys.stdin.readline().rstrip("\n")
    if not spec:
        return 0
    os.dup2(2, 1)  # the script's prints go to the log with its errors
    try:
        return main(spec, channel)
    except Exception as exc:  # a failure of flor's own set-up: one line, as result and in the log
        from ..messages import error

        error(exc)
        channel.send("result", ok=False, error=str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(serve())

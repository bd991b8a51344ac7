"""The replay worker: ``python -m flor.replay.worker SPEC.json`` executes one segment of one run
(``--wait``: a warm worker that imports first and reads the spec path from stdin; see executor.py).

It installs a :class:`~flor.replay.driver.ReplayRun`, moves into the run's working directory inside
the workspace, makes imports and ``__file__`` resolve to the run's code version, and runs the
script as ``__main__``. Its result (values stored, fidelity, error) goes to the spec's result file.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the segment described by the spec file ``argv[0]``."""
    from .. import api
    from ..args import split_kwargs
    from .driver import ReplayRun
    from .spec import WorkerSpec
    from .workspace import guard_writes

    spec = WorkerSpec.from_json(Path(argv[0]).read_text())
    workspace = Path(spec.workspace)
    script = workspace / spec.filename
    os.chdir(workspace / spec.cwd if (workspace / spec.cwd).is_dir() else workspace)
    recorded_argv, _ = split_kwargs(list(spec.argv) or [spec.filename])
    sys.argv = [str(script), *recorded_argv[1:]]
    sys.path.insert(0, str(script.parent))
    guard_writes(workspace, Path(spec.root))
    run = ReplayRun(spec)
    api.set_current(run)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            run.finish(ok=False, error=f"the script exited with status {exc.code}")
            return 1
    except BaseException as exc:  # the user's code failed: report it, keep what was stored
        traceback.print_exc()
        run.finish(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    run.finish(ok=True)
    return 0


def serve() -> int:
    """A warm worker: import the modules named in ``FLOR_REPLAY_PRELOAD``, then run the spec whose
    path arrives on stdin (``SPEC<TAB>LOG``), its output going to LOG. No line: exit at once."""
    import importlib

    from .. import settings

    for name in settings.replay_preload():
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the script imports it for real and reports the error
            pass
    from .lazy_dynamo import defer_dynamo_import

    defer_dynamo_import()
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        return 0
    spec, _, log = line.partition("\t")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    return main([spec])


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--wait"] else main(sys.argv[1:]))

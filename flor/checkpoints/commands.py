"""``flor resume RUN``: continue a killed (or failed) run from its last durable checkpoint.

The run's script is started again from the working tree with the run's command line, in the
run's working directory; it restores the checkpoint at the outer loop and records a new run that
names the first as the one it continues (``resumed_from``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..cli import command
from ..errors import UsageError


def _register(commands) -> None:
    parser = commands.add_parser("resume", help="continue a killed run from its last checkpoint")
    parser.add_argument("run", metavar="RUN", help="tstamp or an unambiguous prefix")


def _handle(args) -> int:
    from ..query import project_store
    from ..vcs import Repo
    from .handoff import await_writers

    store = project_store(readonly=False)
    try:
        store.reap_killed()
        run = store.find_run(args.run)
        await_writers(store.path.parent, run.run_id, say=lambda m: print(m, file=sys.stderr, flush=True))
        checkpoints = store.checkpoints(run.run_id)
    finally:
        store.close()
    root = store.path.parent.parent
    if run.status == "running":
        raise UsageError(f"run {run.tstamp} is still running")
    if not checkpoints:
        raise UsageError(f"run {run.tstamp} has no checkpoint to resume from")
    last = max(checkpoints, key=lambda c: (c.iteration, c.point == "end"))
    script = root / run.filename
    if run.code_commit:
        recorded = Repo(root).read_file(run.code_commit, run.filename)
        if not script.is_file() or script.read_text() != recorded:
            raise UsageError(
                f"{run.filename} changed since run {run.tstamp}; restore its version first "
                f"(git show {run.code_commit[:10]}:{run.filename} > {run.filename})"
            )
    env = dict(os.environ)
    env["FLOR_RESUMED_FROM"] = str(run.run_id)
    env["FLOR_RESUME_CHECKPOINT"] = json.dumps(
        {"iteration": last.iteration, "point": last.point, "location": last.location}
    )
    cwd = root / run.cwd if not os.path.isabs(run.cwd) else root
    print(f"resuming {run.tstamp} from iteration {last.iteration} ({last.point})", file=sys.stderr, flush=True)
    argv = list(run.argv) or [run.filename]
    done = subprocess.run([sys.executable, str(script), *argv[1:]], cwd=cwd, env=env)
    return done.returncode


command("resume", _register, _handle)

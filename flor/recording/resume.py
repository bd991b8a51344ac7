"""Resuming a killed (or failed) run from its last durable checkpoint, as a new run.

The run's script is started again from the working tree with the run's command line, in the
run's working directory; it restores the checkpoint at the outer loop and records a new run that
names the first as the one it continues (``resumed_from``). The script must be the version the run
recorded: flor refuses when it changed, since the checkpoint belongs to that code.

>>> resume("2026-11-26T15:04")          # doctest: +SKIP
0
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..environment import settings
from ..checkpoints.handoff import await_writers
from ..errors import UsageError
from ..integrations.driven import FRAMEWORK_KEY
from ..messages import say
from ..store.project import project_store
from ..environment.vcs import Repo


def resume(run: str, *, start: Path | None = None) -> int:
    """Continue run ``run`` (a tstamp prefix) from its last checkpoint; returns the script's exit status.

    >>> resume("2026-11-26T15:04")      # doctest: +SKIP
    """
    store = project_store(start, readonly=False)
    try:
        store.reap_killed()
        from .job import find_job, split_tstamp

        job = find_job(store, run)
        row = None if job is not None else store.find_run(run)
        if job is not None or split_tstamp(row.tstamp)[1] is not None:
            name = job.tstamp if job is not None else split_tstamp(row.tstamp)[0]
            raise UsageError(f"run {name} is a distributed job: flor resume does not relaunch jobs yet; "
                             "relaunch it with its launcher (torchrun) instead (docs/distributed.md)")
        await_writers(store.paths.flor_dir, row.run_id, say=say)
        checkpoints = store.checkpoints(row.run_id)
    finally:
        store.close()
    root = store.paths.root
    if row.status == "running":
        raise UsageError(f"run {row.tstamp} is still running")
    from .notebook import is_notebook

    if is_notebook(row.filename):  # no script to start: its kernel ran cells
        raise UsageError(f"run {row.tstamp} ran in the notebook {row.filename}, which `flor resume` cannot restart; "
                         "run its cells again in Jupyter")
    if not checkpoints:
        raise UsageError(f"run {row.tstamp} has no checkpoint to resume from")
    framework = row.environment.get(FRAMEWORK_KEY)
    if framework:
        # A framework's Trainer restarts its epoch loop at the checkpoint's epoch, where the
        # epoch's training batches ended (its own progress restored), and nowhere else.
        unsupported = row.environment.get("framework_memo")
        if unsupported:
            raise UsageError(f"run {row.tstamp} cannot be resumed: {unsupported}; rerun the script instead")
        checkpoints = [c for c in checkpoints if c.point != "end"]
        if not checkpoints:
            raise UsageError(f"run {row.tstamp} has no checkpoint where a {framework} epoch's batches end; "
                             "rerun the script instead")
    last = max(checkpoints, key=lambda c: (c.iteration, c.point == "end"))
    script = root / row.filename
    if row.code_commit:
        recorded = Repo(root).read_file(row.code_commit, row.filename)
        if not script.is_file() or script.read_text() != recorded:
            raise UsageError(
                f"{row.filename} changed since run {row.tstamp}; restore its version first "
                f"(git show {row.code_commit[:10]}:{row.filename} > {row.filename})"
            )
    env = dict(os.environ)
    env.update(settings.resume_env(row.run_id, {"iteration": last.iteration, "point": last.point, "location": last.location,
                                                "pickled": last.pickled, "sha256": last.sha256}))
    cwd = root / row.cwd if not os.path.isabs(row.cwd) else root
    say(f"resuming {row.tstamp} from iteration {last.iteration} ({last.point})")
    argv = list(row.argv) or [row.filename]
    return subprocess.run([sys.executable, str(script), *argv[1:]], cwd=cwd, env=env).returncode

"""The local executor's warm workers and the modules they import ahead of their spec."""

import json
import time

from flor.replay.executor import LocalProcessExecutor, Task
from flor.replay.session import preload_modules


def test_preload_names_third_party_imports_but_not_the_projects_own(project):
    project.write("helpers.py", "X = 1\n")
    script = project.write("train.py", """
import os
import numpy as np
from numpy.linalg import norm
import helpers
from helpers import X
from . import nothing
def f():
    import json  # not at the top level: imported when the script gets there
""")
    assert preload_modules(script, project.root) == ["numpy", "numpy.linalg"]
    assert preload_modules(project.root / "missing.py", project.root) == []


def test_warm_workers_without_a_task_are_stopped_at_once_when_closed():
    executor = LocalProcessExecutor(2, preload=["json", "numpy"])
    executor.warm_up()
    processes = [p for queue in executor._idle.values() for p in queue]
    assert len(processes) == 2
    started = time.monotonic()
    executor.close()
    assert all(p.returncode is not None for p in processes) and time.monotonic() - started < 5


def test_a_task_reaches_a_warm_worker_and_its_failure_is_reported(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"workspace": str(tmp_path / "missing")}))
    task = Task("0.0", spec, tmp_path / "result.json", tmp_path / "progress.json", 1, 1.0, tmp_path / "log")
    executor = LocalProcessExecutor(1)
    executor.warm_up()
    (outcome,) = executor.run([task], lambda key, done: None)
    assert not outcome.ok and "exited with status" in outcome.error and "malformed spec ('segment')" in outcome.error
    assert "malformed spec" in (tmp_path / "log").read_text()  # the worker's output went to the task's log

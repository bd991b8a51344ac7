"""The local executor's warm workers and the modules they import ahead of their spec."""

import json
import os
import time

import pytest

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
    processes = [w.process for queue in executor._idle.values() for w in queue]
    assert len(processes) == 2
    started = time.monotonic()
    executor.close()
    assert all(p.returncode is not None for p in processes) and time.monotonic() - started < 5


@pytest.mark.slow
def test_a_task_reaches_a_warm_worker_and_its_failure_is_reported(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"workspace": str(tmp_path / "missing")}))
    task = Task("0.0", spec, 1, 1.0, tmp_path / "log")
    executor = LocalProcessExecutor(1)
    executor.warm_up()
    (outcome,) = executor.run([task], lambda key, message: None)
    assert not outcome.ok and "malformed spec ('segment')" in outcome.error
    assert "malformed spec" in (tmp_path / "log").read_text()  # the worker's output went to the task's log


@pytest.mark.slow
def test_messages_reach_the_driver_in_order_and_the_result_ends_the_task(tmp_path, monkeypatch):
    """A worker's channel carries its messages; the executor hands them over and keeps the result."""
    from flor.replay import executor as module

    fake = tmp_path / "fakeworker.py"
    fake.write_text(
        "import json, os, sys\n"
        "out = os.dup(1)\n"
        "sys.stdin.readline()\n"
        "for n in range(3):\n"
        "    os.write(out, (json.dumps({'kind': 'progress', 'done': n}) + '\\n').encode())\n"
        "os.write(out, (json.dumps({'kind': 'result', 'ok': True, 'stored': 7}) + '\\n').encode())\n"
        "print('to the log', file=sys.stderr)\n"
    )
    real_popen = module.subprocess.Popen
    monkeypatch.setattr(module.subprocess, "Popen", lambda args, **kw: real_popen([args[0], str(fake)], **kw))
    received = []
    task = Task("k", tmp_path / "spec.json", 3, 1.0, tmp_path / "log")
    (outcome,) = LocalProcessExecutor(1).run([task], lambda key, message: received.append((key, message["done"])))
    assert received == [("k", 0), ("k", 1), ("k", 2)]
    assert outcome.ok and outcome.result["stored"] == 7
    assert (tmp_path / "log").read_text() == "to the log\n"


@pytest.mark.slow
def test_one_warm_worker_serves_every_run_of_a_replay(project):
    """The worker imports the libraries once and forks a process per task: three runs, one server."""
    import sqlite3

    project.write("train.py", """
        import os
        import flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("e", epoch)
    """)
    project.commit_all()
    for _ in range(3):
        project.run("train.py")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("e", epoch)', 'flor.log("e", epoch)\n    flor.log("server", os.getppid())'))
    done = project.flor("replay", "server", "--workers", "1").stdout
    assert done.count("done: server: 2 value(s) stored") == 3
    with sqlite3.connect(project.db) as connection:
        servers = {v for (v,) in connection.execute("SELECT value FROM logs WHERE name = 'server'")}
    assert len(servers) == 1


@pytest.mark.slow
def test_the_executor_chosen_runs_every_attempt_even_with_confirm(in_project, monkeypatch):
    """`flor replay --executor ray --confirm` and its drift retries run on the executor chosen
    (once), never on a local one made up on the way. Ray itself is not started: a stand-in with
    Ray's name runs the tasks locally and says which executor ran each attempt."""
    import builtins

    import flor
    from flor.replay import executor as executor_module
    from flor.replay import ray_executor

    ran: list[str] = []
    real_run = executor_module.LocalProcessExecutor.run

    def tracking_run(self, tasks, on_message):
        ran.append(type(self).__name__)
        return real_run(self, tasks, on_message)

    class StandInRay(executor_module.LocalProcessExecutor):
        def __init__(self, workers=1, gpus=None, preload=None, confinement="copy", address=None, retries=3):
            super().__init__(workers, gpus, preload, confinement=confinement)

    monkeypatch.setattr(executor_module.LocalProcessExecutor, "run", tracking_run)
    monkeypatch.setattr(ray_executor, "RayExecutor", StandInRay)
    monkeypatch.setattr(builtins, "input", lambda prompt="": "y")
    in_project.write("train.py", """
        import time
        import flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("clock", time.time_ns())
    """)
    in_project.commit_all()
    in_project.run("train.py")
    text = (in_project.root / "train.py").read_text()
    in_project.write("train.py", text + "    flor.log(\"twice\", epoch * 2)\n")
    # The clock drifts in every attempt: the planned one and both retries run.
    flor.replay("twice", executor="ray", confirm=True, confinement="none", out=open(os.devnull, "w"))
    assert ran == ["StandInRay"] * 3


def test_a_module_that_fails_to_preload_is_said_in_the_task_log(tmp_path):
    """The warm worker goes on without it (the script imports it itself), but not silently."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"workspace": str(tmp_path / "missing")}))
    task = Task("0.0", spec, 1, 1.0, tmp_path / "log")
    executor = LocalProcessExecutor(1, preload=["flor_no_such_module"])
    executor.warm_up()
    (outcome,) = executor.run([task], lambda key, message: None)
    log = (tmp_path / "log").read_text()
    assert "preloading flor_no_such_module failed (ModuleNotFoundError" in log
    assert "malformed spec" in log  # the task itself still ran


def test_a_gang_no_ray_node_could_hold_is_refused_at_once_naming_what_it_needs():
    from flor.replay.ray_executor import too_large

    two = [{"CPU": 1}, {"CPU": 1}]
    small = {"Alive": True, "Resources": {"CPU": 1.0}}
    assert too_large(two, [small, small]) == (
        "a job of 2 ranks needs 2 CPUs on one Ray node (its ranks meet on loopback), and no node of the cluster "
        "has them: use --executor local, or add a node that large")
    assert too_large(two, [small, {"Alive": True, "Resources": {"CPU": 4.0}}]) is None
    assert too_large(two, [{"Alive": False, "Resources": {"CPU": 8.0}}]) is not None  # a dead node holds nothing
    gpu = [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]
    assert "2 GPUs" in too_large(gpu, [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}])


def test_a_failed_segment_names_the_rank_whose_own_error_it_was():
    """Outcomes arrive in the order they end: a rank whose all_reduce lost its peer may come first.
    The report names the rank that failed by itself, not the one that failed because of it."""
    from flor.replay.job import _symptom
    from flor.replay.ray_executor import STOPPED

    peer = "RuntimeError: [gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:22404: Connection reset by peer."
    own = "ZeroDivisionError: integer division or modulo by zero"
    failed = [(0, peer), (1, own), (2, STOPPED), (3, "the worker was killed by signal 9")]
    assert min(failed, key=lambda f: (_symptom(f[1]), f[0])) == (1, own)
    assert min(failed[:1] + failed[2:], key=lambda f: (_symptom(f[1]), f[0])) == (0, peer)

"""Replay on a Ray cluster (issue 18): a real local cluster, a head and a second node, started by
the test inside a private network namespace (``unshare -n``, then ``ip link set lo up``), where
Ray falls back to 127.0.0.1 and no traffic can leave loopback.

Two tutorial runs are recorded; an epoch-level and a step-level statement are replayed through
Ray and must store exactly what the local executor stores; then a Ray worker is killed while it
replays, and the replay still completes (Ray starts the task again).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TUTORIAL, clean_env

ray = pytest.importorskip("ray")

DRIVER = textwrap.dedent('''\
    """Inside the namespace: a Ray cluster of two nodes, then flor replay through it."""
    import os, signal, subprocess, sys, time
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    replay = [sys.executable, "-m", "flor", "replay", *sys.argv[2:], "--executor", "ray", "--address", cluster.address]
    try:
        if sys.argv[1] == "replay":
            done = subprocess.run(replay, capture_output=True, text=True, timeout=300)
            print(done.stdout, done.stderr, sep="\\n")
            sys.exit(done.returncode)
        # kill: the first Ray worker that runs a replay task dies mid-task
        process = subprocess.Popen(replay, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed, deadline = None, time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            found = subprocess.run(["pgrep", "-f", "ray::run_package"], capture_output=True, text=True).stdout.split()
            if found:
                time.sleep(0.3)
                try:
                    os.kill(int(found[0]), signal.SIGKILL)
                    killed = found[0]
                except ProcessLookupError:
                    pass  # that task ended first: wait for the next one
            time.sleep(0.05)
        output, _ = process.communicate(timeout=300)
        print(output)
        print("KILLED", killed)
        sys.exit(process.returncode)
    finally:
        cluster.shutdown()
''')


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs `unshare -n` (a private network namespace)")


def _values(db, name):
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute(
            "SELECT r.tstamp, c.loop_name, l.iteration, l.value FROM logs l JOIN runs r USING (run_id) "
            "LEFT JOIN contexts c ON c.run_id = l.run_id AND c.ctx_id = l.ctx_id "
            "WHERE l.name = ? AND l.source = 'replay'", (name,)).fetchall())


def _in_namespace(project, *args, timeout=420):
    (project.root.parent / "ray_driver.py").write_text(DRIVER)
    env = clean_env(RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run(["unshare", "-n", sys.executable, str(project.root.parent / "ray_driver.py"), *args],
                          cwd=project.root, env=env, capture_output=True, text=True, timeout=timeout)


def test_replay_through_ray_equals_local_and_survives_a_killed_worker(project):
    project.write("train.py", TUTORIAL.read_text())
    project.commit_all()
    project.run("train.py", "--kwargs", "epochs=3")
    project.run("train.py", "--kwargs", "epochs=3", "hidden=75")
    text = (project.root / "train.py").read_text()
    text = text.replace('            flor.log("loss", loss.item())\n',
                        '            flor.log("loss", loss.item())\n            flor.log("input_mean", float(inputs.mean()))\n')
    text = text.replace("\nwith torch.no_grad():", '        flor.log("weight_norm", sum(p.norm() ** 2 for p in '
                        'net.parameters()).item() ** 0.5)\n\nwith torch.no_grad():', 1)
    (project.root / "train.py").write_text(text)
    local = shutil.copytree(project.root, project.root.parent / "local", symlinks=True)
    project.flor("replay", "weight_norm", "input_mean", cwd=local)

    done = _in_namespace(project, "replay", "weight_norm", "input_mean")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("weight_norm", "input_mean"):
        through_ray = _values(project.db, name)
        assert through_ray and through_ray == _values(local / ".flor" / "flor.db", name)

    killed = _in_namespace(project, "kill", "weight_norm", "input_mean", "--force")
    assert killed.returncode == 0, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "KILLED None" not in killed.stdout, "no Ray worker was seen running a replay task"
    assert _values(project.db, "weight_norm") == _values(local / ".flor" / "flor.db", "weight_norm")

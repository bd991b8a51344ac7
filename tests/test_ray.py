"""Replay on a Ray cluster with checkpoints in object storage (issue 18): a real local cluster (a
head and a second node) and a real S3-compatible server (moto_server), both started by the test
inside a private network namespace (``unshare -n``, then ``ip link set lo up``), where Ray falls
back to 127.0.0.1 and no traffic can leave loopback.

Two tutorial runs are recorded with their checkpoints in the bucket; the local copies are set
apart, so the Ray workers restore from the bucket; an epoch-level and a step-level statement are
replayed through Ray and must store exactly what the local executor stores from local
checkpoints; then a Ray worker is killed while it replays, and the replay still completes (Ray
starts the task again).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TUTORIAL, clean_env

ray = pytest.importorskip("ray")

DRIVER = textwrap.dedent('''\
    """Inside the namespace: an S3 server and a two-node Ray cluster on loopback; two runs recorded
    with their checkpoints in the bucket; the local copies then set apart (the nodes read the
    bucket); a replay through Ray, then one whose Ray worker is killed mid-task."""
    import json, os, shutil, signal, socket, subprocess, sys, time
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    project, apart = sys.argv[1], sys.argv[2]
    moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", "5099"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", 5099), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      FSSPEC_S3_ENDPOINT_URL="http://127.0.0.1:5099", FLOR_CHECKPOINT_STORE="s3://flor-ray/tutorial")
    import s3fs
    s3fs.S3FileSystem().mkdir("flor-ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    out = {}
    try:
        for args in (["epochs=3"], ["epochs=3", "hidden=75"]):
            subprocess.run([sys.executable, "train.py", "--kwargs", *args], check=True, capture_output=True,
                           env={**os.environ, "FLOR_CKPT_PERIOD": "1"})
        shutil.copytree(project, apart, symlinks=True)  # with its local checkpoints, for the comparison
        shutil.rmtree(os.path.join(project, ".flor", "objects"))
        shutil.rmtree(os.path.join(project, ".flor", "checkpoints"))
        with open("train.py") as f:
            text = f.read()
        text = text.replace('            flor.log("loss", loss.item())\\n',
                            '            flor.log("loss", loss.item())\\n            flor.log("input_mean", float(inputs.mean()))\\n')
        text = text.replace("\\nwith torch.no_grad():", '        flor.log("weight_norm", sum(p.norm() ** 2 for p in '
                            'net.parameters()).item() ** 0.5)\\n\\nwith torch.no_grad():', 1)
        for folder in (project, apart):
            with open(os.path.join(folder, "train.py"), "w") as f:
                f.write(text)
        replay = [sys.executable, "-m", "flor", "replay", "weight_norm", "input_mean", "--executor", "ray",
                  "--address", cluster.address]
        done = subprocess.run(replay, capture_output=True, text=True, timeout=300)
        out["replay"] = [done.returncode, done.stdout[-2000:] + done.stderr[-3000:]]
        # The first Ray worker seen running a replay task dies mid-task.
        process = subprocess.Popen(replay + ["--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed, deadline = None, time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            # Only this namespace's Ray workers: another test may run a cluster of its own beside.
            found = subprocess.run(["pgrep", "--ns", str(os.getpid()), "--nslist", "net", "-f", "ray::run_package"],
                                   capture_output=True, text=True).stdout.split()
            if found:
                time.sleep(0.3)
                try:
                    os.kill(int(found[0]), signal.SIGKILL)
                    killed = found[0]
                except ProcessLookupError:
                    pass  # that task ended first: wait for the next one
            time.sleep(0.05)
        output, _ = process.communicate(timeout=300)
        out["kill"] = [process.returncode, output[-3000:], killed]
    finally:
        cluster.shutdown()
        moto.kill()
    print("RESULT " + json.dumps(out))
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


@pytest.mark.slow
def test_replay_through_ray_with_checkpoints_in_s3_equals_local_and_survives_a_killed_worker(project):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    import json

    project.write("train.py", TUTORIAL.read_text())
    project.commit_all()
    apart = project.root.parent / "apart"
    (project.root.parent / "ray_driver.py").write_text(DRIVER)
    done = subprocess.run(["unshare", "-n", sys.executable, str(project.root.parent / "ray_driver.py"), str(project.root),
                           str(apart)], cwd=project.root, env=clean_env(RAY_USAGE_STATS_ENABLED="0"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    code, output = found["replay"]
    assert code == 0, output
    # The same statements replayed by the local executor from local checkpoints.
    local = subprocess.run([sys.executable, "-m", "flor", "replay", "weight_norm", "input_mean"], cwd=apart,
                           env=clean_env(), capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-2000:]
    for name in ("weight_norm", "input_mean"):
        through_ray = _values(project.db, name)
        assert through_ray and through_ray == _values(apart / ".flor" / "flor.db", name)
    code, output, killed = found["kill"]
    assert killed is not None, "no Ray worker was seen running a replay task"
    assert code == 0, output
    assert _values(project.db, "weight_norm") == _values(apart / ".flor" / "flor.db", "weight_norm")


@pytest.mark.slow
def test_an_unreachable_cluster_is_refused_in_one_line(project):
    project.write("train.py", TUTORIAL.read_text())
    project.commit_all()
    project.run("train.py", "--kwargs", "epochs=1")
    text = (project.root / "train.py").read_text().replace(
        "\nwith torch.no_grad():", '        flor.log("w", float(net[0].weight.sum()))\n\nwith torch.no_grad():', 1)
    (project.root / "train.py").write_text(text)
    done = project.flor("replay", "w", "--executor", "ray", "--address", "127.0.0.1:1", check=False)
    assert done.returncode != 0 and "cannot reach the Ray cluster at 127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr

"""Distributed jobs (flor/recording/job.py): the ranks of one launch recorded as one run.

The fast tests check the pieces in process (the launch key, the store's job tables, checkpoint
decisions, the DDP prefix, the dataframe's rank column). The slow ones launch torchrun with
gloo on CPU inside a private network namespace that they make (``unshare -rn``, then ``ip link
set lo up``), so no rank talks to an address but loopback.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flor.recording import job
from flor.errors import StoreError
from flor.store import Store

from tests.conftest import clean_env

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]

DDP_SCRIPT = '''
import os
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import flor

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(flor.arg("seed", 0))
lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 4)
g = torch.Generator().manual_seed(1234)
X = torch.randn(64, 4, generator=g)
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
data = TensorDataset(X, Y)
sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=7)
loader = DataLoader(data, batch_size=8, sampler=sampler)
model = DDP(nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=lr)
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        sampler.set_epoch(epoch)
        total = torch.zeros(1)
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            opt.zero_grad()
            loss = ((model(x).squeeze(-1) - y) ** 2).mean()
            loss.backward()
            opt.step()
            total += loss.detach()
            flor.log("loss", loss.item())
        dist.all_reduce(total)
        flor.log("mean_loss", total.item() / world / len(loader))
        if rank == 0:
            with torch.no_grad():
                flor.log("eval", ((model.module(X).squeeze(-1) - Y) ** 2).mean().item())
if rank == 0:
    torch.save(model.module.state_dict(), "model.pt")
dist.destroy_process_group()
'''


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False




def launch_many(project, launches: list[tuple[int, list[str]]], *, timeout: float = 240, extra: str = "") -> list:
    """Start torchrun launches at once, in one private network namespace (loopback only):
    ``(nproc, script args)`` each; their (exit status, output), in order."""
    lines = ["ip link set lo up"]
    for n, (nproc, args) in enumerate(launches):
        command = " ".join([*TORCHRUN, f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
                            f"--master-port={29400 + n}", *args])
        lines.append(f"{{ {command} > out{n}.txt 2>&1; echo $? > rc{n}.txt; }} &")
    lines.append("wait")
    env = clean_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    done = subprocess.run(["unshare", "-rn", "sh", "-c", "\n".join(lines) + extra], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    results = []
    for n in range(len(launches)):
        results.append((int((project.root / f"rc{n}.txt").read_text()), (project.root / f"out{n}.txt").read_text()))
        (project.root / f"rc{n}.txt").unlink()
        (project.root / f"out{n}.txt").unlink()
    return results


# -- the launch key -------------------------------------------------------------------------


def _torchrun_env(rank: int, **extra) -> dict:
    return {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": "none", "TORCHELASTIC_RESTART_COUNT": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500", **extra}


def test_no_rank_or_a_world_of_one_is_no_job():
    assert job.identify({}) is None
    assert job.identify({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert job.identify({"RANK": "2", "WORLD_SIZE": "2"}) is None  # a rank outside its world
    assert job.identify({"RANK": "x", "WORLD_SIZE": "2"}) is None


def test_ranks_of_one_launch_share_a_key_and_two_launches_never_do():
    parent = os.getppid()
    zero = job.identify(_torchrun_env(0), ppid=parent)
    one = job.identify(_torchrun_env(1, LOCAL_RANK="1"), ppid=parent)
    assert zero.launcher == "torchrun" and (zero.rank, one.rank, one.local_rank, zero.world_size) == (0, 1, 1, 2)
    assert zero.key == one.key
    # Another launch with the same static ids ("none", same port) but another agent process.
    other = job.identify(_torchrun_env(0), ppid=os.getpid())
    assert other.key != zero.key
    # A restart of the same agent is another attempt: another job.
    assert job.identify(_torchrun_env(0, TORCHELASTIC_RESTART_COUNT="1"), ppid=parent).key != zero.key
    slurm = job.identify({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0",
                          "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}, ppid=parent)
    assert (slurm.launcher, slurm.rank, slurm.world_size, slurm.local_rank) == ("slurm", 1, 4, 1)


def test_rank_tstamps_split_back():
    assert job.split_tstamp(job.rank_tstamp("2026-01-01T00:00:00.123", 7)) == ("2026-01-01T00:00:00.123", 7)
    assert job.split_tstamp("2026-01-01T00:00:00") == ("2026-01-01T00:00:00", None)


# -- the store ------------------------------------------------------------------------------


def _fields(started: float, **extra) -> dict:
    return dict(tstamp="2026-01-01T00:00:00", projid="p", filename="train.py", argv=["train.py"], cwd=".",
                started=started, args=[("lr", 0.1, "float")], rng_state=None, resumed_from=None,
                environment={}, **extra)


def _join(store, key: str, rank: int, started: float = 1000.5, world: int = 2):
    return store.join_job(key=key, rank=rank, world_size=world, launcher="torchrun", identity={"rank": rank},
                          local_rank=rank, group_rank=0, host="h", **_fields(started))


def test_ranks_join_one_job_and_two_launches_in_one_second_get_two(tmp_path):
    store = Store.open(tmp_path / "flor.db")
    one = _join(store, "launch-a", 1)
    zero = _join(store, "launch-a", 0)
    assert one.job_id == zero.job_id and one.snapshots and not zero.snapshots
    assert (zero.tstamp, one.tstamp) == ("2026-01-01T00:00:00+r0", "2026-01-01T00:00:00+r1")
    other = _join(store, "launch-b", 0, started=1000.7)
    assert other.job_id != one.job_id and other.job_tstamp != one.job_tstamp
    # An ordinary run of that second does not take a job's tstamp either.
    _run_id, plain = store.insert_run(**_fields(1000.9))
    assert plain not in {one.job_tstamp, other.job_tstamp}
    with pytest.raises(StoreError, match="rank 0 of job .* already recorded"):
        _join(store, "launch-a", 0)
    [first, second] = store.jobs()
    assert [r.rank for r in first.ranks] == [0, 1] and first.world_size == 2 and second.missing == [1]
    assert job.find_job(store, one.job_tstamp).job_id == one.job_id
    assert job.find_job(store, one.tstamp) is None  # a rank run's own tstamp names that run


def test_the_job_snapshot_names_every_rank_even_those_that_join_later(tmp_path):
    store = Store.open(tmp_path / "flor.db")
    creator = _join(store, "k", 1)
    store.set_job_code(creator.job_id, code_commit="c0ffee", git_head="beef", git_dirty=False)
    late = _join(store, "k", 0)
    commits = {store.run(m.run_id).code_commit for m in (creator, late)}
    assert commits == {"c0ffee"}


def test_the_first_rank_decides_a_checkpoint_for_the_job(tmp_path):
    store = Store.open(tmp_path / "flor.db")
    member = _join(store, "k", 0)
    assert store.job_checkpoint_decision(member.job_id, 3, "nested") is None
    assert store.decide_job_checkpoint(member.job_id, 3, "nested", False, member.run_id) is False
    assert store.decide_job_checkpoint(member.job_id, 3, "nested", True, member.run_id + 1) is False
    assert store.job_checkpoint_decision(member.job_id, 3, "nested") is False


def test_job_status_is_finished_only_when_every_rank_finished(tmp_path):
    store = Store.open(tmp_path / "flor.db")
    zero, one = _join(store, "k", 0), _join(store, "k", 1)
    store.update_run(zero.run_id, status="finished", ended=1001.0)
    assert store.jobs()[0].status == "running"
    store.update_run(one.run_id, status="killed", ended=1001.0)
    assert store.jobs()[0].status == "killed"
    store.update_run(one.run_id, status="finished")
    assert store.jobs()[0].status == "finished"


def test_an_older_store_gains_the_job_tables(tmp_path):
    store = Store.open(tmp_path / "flor.db")
    store.close()
    with sqlite3.connect(tmp_path / "flor.db") as connection:
        connection.executescript("DROP TABLE jobs; DROP TABLE job_ranks; DROP TABLE job_checkpoints; "
                                 "UPDATE meta SET value = '7' WHERE key = 'schema_version';")
    store = Store.open(tmp_path / "flor.db")
    assert store.jobs() == []


# -- checkpoints and the dataframe ----------------------------------------------------------


@pytest.mark.slow  # imports torch
def test_a_ddp_wrapped_state_restores_into_the_bare_model_and_back():
    torch = pytest.importorskip("torch")
    from flor.checkpoints.restore import restore_object

    bare = torch.nn.Linear(3, 2)
    wrapped = torch.nn.DataParallel(torch.nn.Linear(3, 2))  # keys "module.*", as DDP's
    restore_object(bare, {"state_dict": wrapped.state_dict()}, "model")
    assert torch.equal(bare.weight, wrapped.module.weight)
    other = torch.nn.Linear(3, 2)
    restore_object(wrapped, {"state_dict": other.state_dict()}, "model")
    assert torch.equal(wrapped.module.bias, other.bias)


def test_the_dataframe_shows_a_job_as_one_tstamp_with_a_rank_column():
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame({"projid": ["p"] * 3, "tstamp": ["T1", "T2+r0", "T2+r1"], "loss": [1.0, 2.0, 3.0]})
    shown = job.with_ranks(table)
    assert list(shown.columns) == ["projid", "tstamp", "rank", "loss"]
    assert list(shown["tstamp"]) == ["T1", "T2", "T2"] and shown["rank"].tolist()[1:] == [0, 1]
    assert job.with_ranks(table, 1)["loss"].tolist() == [3.0]
    plain = table.iloc[:1]
    assert "rank" not in job.with_ranks(plain).columns


# -- launched jobs --------------------------------------------------------------------------


def test_a_rank_started_by_flor_gets_torchruns_environment_on_loopback():
    env = job.rank_environment(1, None, 2, 29999, "flor-resume-T")
    assert env["RANK"] == env["LOCAL_RANK"] == "1" and env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == "29999" and env["GLOO_SOCKET_IFNAME"] == "lo"
    identity = job.identify({**env, "TORCHELASTIC_RESTART_COUNT": "0"}, ppid=os.getpid())
    assert identity.launcher == "torchrun" and identity.rank == 1  # recorded as a rank of a job, like torchrun's
    assert 0 < job.loopback_port() < 65536


def test_a_job_gang_preloads_torch_distributed_not_the_compiler_and_its_task_gets_the_rank_in_its_spec():
    from flor.replay.job import JOB_PRELOAD, job_preload
    from flor.replay.plan import Segment
    from flor.replay.spec import WorkerSpec

    assert job_preload(["numpy"]) == ["numpy"]
    assert job_preload(["torch", "numpy"]) == ["torch", "numpy", *JOB_PRELOAD] and "torch._dynamo" not in JOB_PRELOAD
    spec = WorkerSpec(run_id=1, tstamp="T+r1", root="/r", filename="t.py", cwd=".", argv=[], names=[],
                      recorded_names=[], outer_name="epoch", checkpoints={}, segment=Segment({0: "exec"}, [0], 1, False, False, False),
                      records_path="/r.json", run_tree="/tree", scratch="/s", confinement="none",
                      environ={"RANK": "1", "MASTER_PORT": "29999"})
    assert WorkerSpec.from_json(spec.to_json()).environ == {"RANK": "1", "MASTER_PORT": "29999"}


def _parent(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


@pytest.mark.slow
def test_a_gang_imports_once_and_forks_its_ranks_workers_and_is_started_again_whole(tmp_path, monkeypatch):
    """A job's gang (replay/gang.py): one process imports what the workers preload, and what the
    driver adds once planned (Gangs.settle: the compiler when steps re-execute), then forks the
    other workers; a gang that lost a worker is started again whole at its next segment."""
    import time

    from flor.replay.executor import Task
    from flor.replay.gang import GangExecutor, Sibling

    (tmp_path / "gangprobe.py").write_text("import os\nwith open(os.environ['PROBE'], 'a') as f:\n    f.write(f'{os.getpid()}\\n')\n")
    (tmp_path / "gangthen.py").write_text("import os\nwith open(os.environ['PROBE'], 'a') as f:\n    f.write(f'then{os.getpid()}\\n')\n")
    probe = tmp_path / "imports.txt"
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("PROBE", str(probe))
    gang = GangExecutor(3, None, ["gangprobe"], "none")
    try:
        gang.warm_up(3, {})
        workers = [gang._idle[slot][0] for slot in range(3)]
        leader = workers[0].process
        assert not isinstance(leader, Sibling) and all(isinstance(w.process, Sibling) for w in workers[1:])
        time.sleep(0.5)
        assert all(w.process.poll() is None and w.process.pid is None for w in workers[1:])  # waiting for the plan
        gang.settle(["gangthen"])
        deadline = time.monotonic() + 60
        while any(w.process.pid is None for w in workers[1:]) and time.monotonic() < deadline:
            for w in workers[1:]:
                w.process.poll()
            time.sleep(0.05)
        assert [_parent(w.process.pid) for w in workers[1:]] == [leader.pid, leader.pid]
        assert probe.read_text().split() == [str(leader.pid), f"then{leader.pid}"]  # imported once, by the leader
        assert all(w.process.poll() is None for w in workers) and gang.leaders == 1
        workers[2].process.kill()  # a worker of the gang ends (a failed segment stops its ranks)
        while workers[2].process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers[2].process.poll() is not None and leader.poll() is None
        taken = gang._take(0, Task("k", tmp_path / "spec.json", 1, 1.0))  # the next segment's rank on slot 0
        assert gang.leaders == 2 and taken.process is not leader and leader.poll() is not None
        while probe.read_text().count("then") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe.read_text().split()[2:] == [str(taken.process.pid), f"then{taken.process.pid}"]  # told at once
        assert all(w.process.poll() is not None for w in workers)  # the old gang is gone, siblings with its leader
        gang._idle.setdefault(0, []).append(taken)
    finally:
        gang.close()
    assert taken.process.poll() is not None  # close() stops the new gang too


def _refs(project) -> list[str]:
    return project.git("for-each-ref", "--format=%(objectname)", "refs/flor/").split()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A project with our DDP script recorded as two torchrun jobs (2 ranks each, other args)."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    from tests.conftest import Project, git, git_env_in_this_process

    root = tmp_path_factory.mktemp("jobs") / "proj"
    root.mkdir()
    with git_env_in_this_process():
        git(root, "init", "-q", "-b", "main")
        project = Project(root)
        project.write("train.py", DDP_SCRIPT)
        project.write(".gitignore", "model.pt\n")
        project.commit_all()
        results = launch_many(project, [(2, ["train.py", "--kwargs", "lr=0.01"]),
                                        (2, ["train.py", "--kwargs", "lr=0.02"])])
    for code, output in results:
        assert code == 0, output[-3000:]
    return project


@pytest.mark.slow
def test_a_torchrun_job_is_one_run_with_every_rank(recorded, monkeypatch):
    import flor

    project = recorded
    assert project.git("status", "--porcelain") == ""  # user files untouched (model.pt is ignored)
    store = Store.open(project.db, readonly=True)
    jobs = store.jobs()
    assert len(jobs) == 2 and all(j.status == "finished" and [r.rank for r in j.ranks] == [0, 1] for j in jobs)
    # One snapshot per job, named by every rank.
    assert len(_refs(project)) == 2
    for j in jobs:
        assert {store.run(r.run_id).code_commit for r in j.ranks} == {j.code_commit} and j.code_commit
        # Checkpoints in step: every rank at the same iterations.
        points = [[(c.iteration, c.point) for c in store.checkpoints(r.run_id)] for r in j.ranks]
        assert points[0] and points[0] == points[1]
    monkeypatch.chdir(project.root)
    frame = flor.dataframe("lr", "mean_loss", "eval")
    assert sorted(frame["tstamp"].unique()) == sorted(j.tstamp for j in jobs)
    assert set(frame["rank"]) == {0, 1}
    # The all_reduced metric is the same on both ranks; the rank-0 branch only on rank 0.
    for _tstamp, rows in frame.groupby("tstamp"):
        assert rows[rows["rank"] == 0]["mean_loss"].tolist() == rows[rows["rank"] == 1]["mean_loss"].tolist()
        assert rows[rows["rank"] == 1]["eval"].isna().all() and rows[rows["rank"] == 0]["eval"].notna().all()
    assert len(flor.dataframe("mean_loss", rank=0)) == 2 * 4
    listed = project.flor("runs").stdout.splitlines()
    assert len(listed) == 3 and all("finished (2/2 ranks)" in line for line in listed[1:])
    shown = project.flor("show", jobs[0].tstamp).stdout
    assert "world size 2" in shown and "rank 0" in shown and "rank 1" in shown


NEW_STATEMENTS = [
    # epoch level, after the all_reduce
    ('        flor.log("mean_loss", total.item() / world / len(loader))\n',
     '        flor.log("w_norm", model.module.weight.norm().item())\n'),
    # the rank-0-only branch
    ('                flor.log("eval", ((model.module(X).squeeze(-1) - Y) ** 2).mean().item())\n',
     '                flor.log("eval_bias", model.module.bias.item())\n'),
    # step level
    ('            flor.log("loss", loss.item())\n', '            flor.log("step_x", x.sum().item())\n'),
]


def _in_netns(project, *commands: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = clean_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    script = "ip link set lo up\n" + "\n".join(commands)
    return subprocess.run(["unshare", "-rn", "sh", "-ec", script], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _values(db: Path, name: str, source: str) -> dict:
    """(job tstamp, rank) -> [(iteration, value), ...] of ``name``."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT r.tstamp, l.iteration, l.value FROM logs l JOIN runs r USING (run_id) "
            "WHERE l.name = ? AND l.source = ? ORDER BY r.tstamp, l.rowid", (name, source)).fetchall()
    found: dict = {}
    for tstamp, iteration, value in rows:
        found.setdefault(job.split_tstamp(tstamp), []).append((iteration, value))
    return found


@pytest.mark.slow
def test_a_job_replays_as_a_unit_and_equals_a_fresh_launch(recorded):
    project = recorded
    store = Store.open(project.db, readonly=True)
    # The two launches ran at once: find the job of lr=0.01 by its args.
    by_lr = {store.args(j.ranks[0].run_id)["lr"]: j.tstamp for j in store.jobs()}
    first, second = by_lr[0.01], by_lr[0.02]
    store.close()
    original = (project.root / "train.py").read_text()
    text = original
    for anchor, line in NEW_STATEMENTS:
        text = text.replace(anchor, anchor + line)
    (project.root / "train.py").write_text(text)
    py = f"{sys.executable} -m flor"
    dry = _in_netns(project, f"{py} replay w_norm eval_bias --dry-run")
    assert dry.stdout.count("2 ranks replayed together, 1 segment(s) of 2 processes each") == 2, dry.stdout + dry.stderr
    single = _in_netns(project, f"{py} replay w_norm --runs {first}+r1")
    assert single.returncode != 0 and "replays as a whole, and rank(s) 0 are not selected" in single.stdout + single.stderr
    done = _in_netns(project, f"{py} replay w_norm eval_bias --runs {first}", f"{py} replay step_x --runs {first}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Where each rank's time went: its rendezvous timed, its warm worker's imports said once.
    timing = [line for line in done.stderr.splitlines() if "  time: " in line and f"{first}+r" in line]
    assert len(timing) == 4 and all("rendezvous" in line and "imported in" in line for line in timing), timing
    # A fresh launch of the first job with the statements written in (a third job).
    [(code, output)] = launch_many(project, [(2, ["train.py", "--kwargs", "lr=0.01"])])
    assert code == 0, output[-3000:]
    store = Store.open(project.db, readonly=True)
    fresh = [j.tstamp for j in store.jobs() if j.tstamp not in (first, second)][0]
    store.close()
    (project.root / "train.py").write_text(original)
    for name in ("w_norm", "eval_bias", "step_x"):
        replayed, truth = _values(project.db, name, "replay"), _values(project.db, name, "record")
        for rank in (0, 1):
            expected = truth.get((fresh, rank))
            if name == "eval_bias" and rank == 1:
                assert expected is None and (first, 1) not in replayed  # rank 0's branch only
                continue
            assert expected and replayed[(first, rank)] == expected, name


RAY_DRIVER = """
import json, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.wait_for_nodes()
results = []
try:
    for cwd, args in json.loads(sys.argv[1]):  # flor replay ARGS in CWD, through the cluster
        done = subprocess.run([sys.executable, "-m", "flor", "replay", *args, "--executor", "ray",
                               "--address", cluster.address], cwd=cwd, capture_output=True, text=True, timeout=400)
        results.append([done.returncode, done.stdout[-3000:] + done.stderr[-3000:]])
finally:
    cluster.shutdown()
print("RESULT " + json.dumps(results))
"""

ALL_REDUCE_SCRIPT = '''
import torch
import torch.distributed as dist
import flor

dist.init_process_group("gloo")
rank = dist.get_rank()
for epoch in flor.loop("epoch", range(2)):
    t = torch.ones(1) * (rank + 1)
    dist.all_reduce(t)
    flor.log("t", t.item())
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_a_job_replays_through_ray_as_a_gang_in_one_placement_group(recorded, project, tmp_path):
    """--executor ray: each segment of a job runs as its ranks' tasks in one placement group (one
    node, rendezvous on its loopback), and stores what the local executor stores, rank by rank.
    A rank that fails while the other waits for it in an all_reduce: the other is cancelled,
    nothing is stored from either, and the segment is tried again, whole. The rendezvous port is
    chosen on the node, by rank 0's task (the driver puts none in the ranks' specs)."""
    pytest.importorskip("ray")
    import json
    import shutil

    store = Store.open(recorded.db, readonly=True)
    first = {store.args(j.ranks[0].run_id)["lr"]: j.tstamp for j in store.jobs()}[0.01]
    store.close()
    copies = {}
    for kind in ("ray", "local"):
        root = shutil.copytree(recorded.root, tmp_path / kind, symlinks=True)
        text = (root / "train.py").read_text()
        for anchor, line in NEW_STATEMENTS[:2]:
            text = text.replace(anchor, anchor + line)
        (root / "train.py").write_text(text)
        copies[kind] = root
    project.write("reduce.py", ALL_REDUCE_SCRIPT)
    project.write("port.py", "import os\n" + ALL_REDUCE_SCRIPT)
    project.commit_all()
    for code, output in launch_many(project, [(2, ["reduce.py"]), (2, ["port.py"])]):
        assert code == 0, output[-3000:]
    anchor = "    dist.all_reduce(t)\n"
    (project.root / "reduce.py").write_text(ALL_REDUCE_SCRIPT.replace(anchor, '    flor.log("bad", 1 // (1 - rank))\n' + anchor))
    (project.root / "port.py").write_text("import os\n" + ALL_REDUCE_SCRIPT.replace(
        anchor, anchor + '    flor.log("port", int(os.environ["MASTER_PORT"]))\n'))
    (tmp_path / "driver.py").write_text(RAY_DRIVER)
    env = clean_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    replays = [[str(copies["ray"]), ["w_norm", "eval_bias", "--runs", first]], [str(project.root), ["bad"]],
               [str(project.root), ["port"]]]
    done = subprocess.run(["unshare", "-rn", sys.executable, str(tmp_path / "driver.py"), json.dumps(replays)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [(code, said), (failed_code, failed), (port_code, port_said)] = json.loads(
        next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert code == 0, said
    assert port_code == 0, port_said
    ports = {rank: [v for _i, v in values] for (_t, rank), values in _values(project.db, "port", "replay").items()}
    assert ports.keys() == {0, 1} and ports[0] == ports[1] and len(ports[0]) == 2 and int(ports[0][0]) > 0, ports
    assert failed_code != 0 and "failed on rank 1" in failed and "nothing stored from any rank" in failed, failed
    assert "trying the segment again, whole" in failed and "Traceback" not in failed, failed
    assert _values(project.db, "bad", "replay") == {}
    local = subprocess.run(["unshare", "-rn", "sh", "-ec", f"ip link set lo up\n{sys.executable} -m flor replay "
                            f"w_norm eval_bias --runs {first}"], cwd=copies["local"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    for name in ("w_norm", "eval_bias"):
        through_ray = _values(copies["ray"] / ".flor" / "flor.db", name, "replay")
        assert through_ray and through_ray == _values(copies["local"] / ".flor" / "flor.db", name, "replay"), name
        assert {rank for (_t, rank) in through_ray} == ({0, 1} if name == "w_norm" else {0})


TINY_SCRIPT = '''
import os, signal, time
import flor

rank = int(os.environ["RANK"])
kill_at = flor.arg("kill_at", -1)
for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
    for step in flor.loop("step", range(5)):
        flor.log("v", rank * 1000 + epoch * 10 + step)
    if epoch == kill_at:
        time.sleep(1.5)  # the flush thread writes what was logged (at least every second)
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # the other ranks wait here until the launcher stops them
'''


@pytest.mark.slow
def test_eight_ranks_launched_together_give_one_run_one_commit_and_every_value(project):
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    project.write("tiny.py", TINY_SCRIPT)
    project.commit_all()
    launches = 2
    results = launch_many(project, [(8, ["tiny.py"])] * launches)
    for code, output in results:
        assert code == 0, output[-3000:]
    store = Store.open(project.db, readonly=True)
    jobs = store.jobs()
    assert len(jobs) == launches and all(len(j.ranks) == 8 and j.status == "finished" for j in jobs)
    assert len({j.code_commit for j in jobs}) == launches and len(_refs(project)) == launches
    with sqlite3.connect(project.db) as connection:
        counts = connection.execute("SELECT run_id, COUNT(*) FROM logs GROUP BY run_id").fetchall()
    assert len(counts) == 8 * launches and {n for _, n in counts} == {3 * 5}


@pytest.mark.slow
def test_a_killed_rank_marks_the_job_killed_and_keeps_what_every_rank_flushed(project):
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    project.write("tiny.py", TINY_SCRIPT)
    project.commit_all()
    [(code, output)] = launch_many(project, [(2, ["tiny.py", "--kwargs", "kill_at=1"])])
    assert code != 0
    shown = project.flor("doctor")
    doctor = shown.stdout + shown.stderr
    store = Store.open(project.db, readonly=True)
    [killed] = store.jobs()
    assert killed.status == "killed" and {r.status for r in killed.ranks} == {"killed"}
    with sqlite3.connect(project.db) as connection:
        kept = dict(connection.execute("SELECT run_id, COUNT(*) FROM logs GROUP BY run_id").fetchall())
    assert [kept.get(r.run_id) for r in killed.ranks] == [10, 10]  # epochs 0 and 1 of both ranks
    assert f"job {killed.tstamp} (2 ranks) killed: " in doctor and "rank 1 killed" in doctor
    # Nothing to resume from (the script checkpoints nothing): one line, and a rank alone is refused.
    refused = project.flor("resume", killed.tstamp, check=False)
    assert refused.returncode != 0 and "no checkpoint that every rank has" in refused.stderr
    assert "Traceback" not in refused.stderr
    alone = project.flor("resume", f"{killed.tstamp}+r1", check=False)
    assert alone.returncode != 0 and f"run `flor resume {killed.tstamp}`" in alone.stderr


RESUMABLE = DDP_SCRIPT.replace(
    '        flor.log("mean_loss", total.item() / world / len(loader))\n',
    '        flor.log("mean_loss", total.item() / world / len(loader))\n'
    '        if epoch == 2 and rank == 1 and os.path.exists("crash-now"):\n'
    '            import signal, time\n'
    '            time.sleep(1.5)  # the flush thread writes what was logged\n'
    '            os.kill(os.getpid(), signal.SIGKILL)\n')


@pytest.mark.slow
def test_a_job_killed_mid_run_resumes_whole_and_ends_as_a_job_run_through(project):
    """Rank 1 SIGKILLed in epoch 2 (torchrun then stops rank 0); `flor resume` relaunches both
    ranks from the last checkpoint both have, and the resumed job's values equal, rank by rank,
    those of the same job run through without the kill."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    assert RESUMABLE != DDP_SCRIPT
    project.write("train.py", RESUMABLE)
    project.write(".gitignore", "model.pt\ncrash-now\n")
    project.commit_all()
    launch = " ".join([*TORCHRUN, "--nproc-per-node=2", "--master-addr=127.0.0.1", "--master-port=29461", "train.py"])
    through = _in_netns(project, f"FLOR_CKPT_PERIOD=1 {launch}")
    assert through.returncode == 0, through.stderr[-3000:]
    (project.root / "crash-now").write_text("x")
    killed_launch = _in_netns(project, f"FLOR_CKPT_PERIOD=1 {launch}")
    assert killed_launch.returncode != 0
    (project.root / "crash-now").unlink()
    store = Store.open(project.db, readonly=True)
    reference, killed = sorted(store.jobs(), key=lambda j: j.job_id)
    # Rank 0 is stopped by torchrun (killed) or fails first on gloo's closed connection (failed).
    assert reference.status == "finished" and killed.status in ("killed", "failed"), killed
    done = _in_netns(project, f"{sys.executable} -m flor resume {killed.tstamp}")
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 1 died after epoch 2's steps: both ranks checkpointed there (after the nested loop) or,
    # at the latest, at the end of epoch 1.
    said = re.search(rf"resuming job {killed.tstamp} \(2 ranks\) from iteration (\d) \((\w+)\), the last "
                     "checkpoint every rank has", done.stderr)
    assert said and (int(said.group(1)), said.group(2)) in ((2, "nested"), (1, "end")), done.stderr[-2000:]
    store = Store.open(project.db, readonly=True)
    resumed = max(store.jobs(), key=lambda j: j.job_id)
    assert resumed.job_id != killed.job_id and resumed.status == "finished" and len(resumed.ranks) == 2
    old_run = {r.rank: r.run_id for r in killed.ranks}
    for member in resumed.ranks:  # each rank run continues the same rank of the killed job
        assert store.run(member.run_id).resumed_from == old_run[member.rank]
    steps_from = 3 if said.group(2) == "nested" else 2  # epoch 2's steps ran before the checkpoint
    for name, count in (("loss", 4 * (4 - steps_from)), ("mean_loss", 2), ("eval", 2)):
        values = _values(project.db, name, "record")
        for rank in (0, 1):
            after = values.get((resumed.tstamp, rank), [])
            through_values = [v for _it, v in values.get((reference.tstamp, rank), [])]
            if name == "eval" and rank == 1:
                assert not after and not through_values  # a rank-0-only branch
                continue
            assert len(after) == count, (name, rank, after)  # what epochs 2 and 3 log after the checkpoint
            assert [v for _it, v in after] == through_values[-count:], (name, rank)
    assert project.git("status", "--porcelain") == ""  # user files untouched (model.pt is ignored)


NODES_SCRIPT = '''
import torch
import torch.distributed as dist
import flor

dist.init_process_group("gloo")
for epoch in flor.loop("epoch", range(3)):
    total = torch.tensor([float(dist.get_rank() + epoch)])
    dist.all_reduce(total)
    flor.log("total", total.item())
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_two_nodes_each_with_its_own_working_copy(project):
    """--nnodes 2, simulated by two torchrun launches on this machine (static rendezvous on
    loopback), each node in its own clone: each store holds its node's ranks as one job."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    from tests.conftest import Project, git

    project.write("nodes.py", NODES_SCRIPT)
    project.commit_all()
    other = project.root.parent / "node1"
    git(project.root.parent, "clone", "-q", str(project.root), str(other))
    nodes = [project.root, other]
    lines = ["ip link set lo up"]
    for node, root in enumerate(nodes):
        command = " ".join([*TORCHRUN, "--nnodes=2", f"--node-rank={node}", "--nproc-per-node=2",
                            "--master-addr=127.0.0.1", "--master-port=29477", "nodes.py"])
        lines.append(f"{{ cd {root} && {command} > {root}/out.txt 2>&1; echo $? > {root}/rc.txt; }} &")
    lines.append("wait")
    env = clean_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    done = subprocess.run(["unshare", "-rn", "sh", "-c", "\n".join(lines)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    for node, root in enumerate(nodes):
        assert (root / "rc.txt").read_text().strip() == "0", (root / "out.txt").read_text()[-3000:]
        store = Store.open(Project(root).db, readonly=True)
        [recorded] = store.jobs()
        assert recorded.world_size == 4 and [r.rank for r in recorded.ranks] == [2 * node, 2 * node + 1]
        assert {r.group_rank for r in recorded.ranks} == {node} and recorded.status == "finished"
        assert recorded.missing == [r for r in range(4) if r // 2 != node] and recorded.code_commit
        with sqlite3.connect(Project(root).db) as connection:
            totals = connection.execute("SELECT value FROM logs WHERE name = 'total' ORDER BY run_id, rowid").fetchall()
        assert [t[0] for t in totals] == [6.0, 10.0, 14.0] * 2  # the all_reduce spanned both nodes


LIGHTNING_DDP = '''
import flor
import lightning.pytorch as L
import torch
from flor.integrations.lightning import FlorCallback, FlorLogger


class Tiny(L.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 2)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def on_train_epoch_end(self):
        flor.log("bias", self.layer.bias.sum().item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


if __name__ == "__main__":
    L.seed_everything(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=4)
    L.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=FlorLogger(),
              callbacks=[FlorCallback()], enable_progress_bar=False, enable_checkpointing=False,
              enable_model_summary=False).fit(Tiny(), data)
'''


@pytest.mark.slow
def test_lightning_ddp_is_one_job_and_replays_as_one(project):
    """strategy="ddp" on CPU with Lightning's own launcher (no torchrun, no RANK in the environment)."""
    pytest.importorskip("lightning")
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    project.write("train.py", LIGHTNING_DDP)
    project.commit_all()
    recorded = _in_netns(project, f"{sys.executable} train.py")
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    project.write("train.py", LIGHTNING_DDP.replace(
        '        flor.log("bias", self.layer.bias.sum().item())\n',
        '        flor.log("bias", self.layer.bias.sum().item())\n'
        '        flor.log("wsum", self.layer.weight.sum().item())\n'))
    replayed = _in_netns(project, f"{sys.executable} -m flor replay wsum")
    assert replayed.returncode == 0, replayed.stdout[-2000:] + replayed.stderr[-3000:]
    store = Store.open(project.db, readonly=True)
    [lit] = store.jobs()
    assert lit.launcher == "lightning" and lit.status == "finished" and [r.rank for r in lit.ranks] == [0, 1]
    store.close()
    assert replayed.stdout.count("wsum: 3 value(s) stored; fidelity: 6 of 6 recorded values matched") == 2
    values = _values(project.db, "wsum", "replay")
    assert len(values[(lit.tstamp, 0)]) == 3 and values[(lit.tstamp, 0)] == values[(lit.tstamp, 1)]


def _tiny_job_then(project, statement: str) -> None:
    """Record TINY_SCRIPT as a 2-rank job; then today's script gains ``statement`` in its epoch body."""
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a private network namespace)")
    project.write("tiny.py", TINY_SCRIPT)
    project.commit_all()
    [(code, output)] = launch_many(project, [(2, ["tiny.py"])])
    assert code == 0, output[-3000:]
    anchor = "    if epoch == kill_at:\n"
    (project.root / "tiny.py").write_text(TINY_SCRIPT.replace(anchor, statement + anchor))


@pytest.mark.slow
def test_a_segment_where_one_rank_fails_stores_nothing_from_any_rank(project):
    _tiny_job_then(project, '    flor.log("bad", 1 // (1 - rank))\n')
    done = _in_netns(project, f"{sys.executable} -m flor replay bad")
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "failed on rank 1" in said and "nothing stored from any rank" in said, said[-3000:]
    assert "trying the segment again, whole" in said and "Traceback" not in done.stdout
    assert _values(project.db, "bad", "replay") == {}


def _alive_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read()
            stat = open(f"/proc/{pid}/stat", "rb").read()
        except OSError:
            continue
        if marker.encode() in env and stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X"):
            found.append(int(pid))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("failing", [0])
def test_a_hung_rank_is_stopped_when_another_fails(project, failing):
    """One rank fails while the other hangs outside any collective (gloo would notice a dead peer
    in a collective by itself): only the gang's stop ends it. The replay must end, name the rank
    that failed, and leave no process behind. Rank 0 fails, so the hung one is a forked sibling."""
    # rank `failing` divides by zero; the other sleeps an hour (the slice keeps what the value needs)
    _tiny_job_then(project, f'    flor.log("bad", 1 // (rank - {failing}) + (time.sleep(3600) or 0))\n')
    marker = f"FLOR_REVIEW_MARK_{uuid.uuid4().hex}"
    env = clean_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", **{marker: "1"})
    began = time.monotonic()
    done = subprocess.run(["unshare", "-rn", "sh", "-ec", f"ip link set lo up\n{sys.executable} -m flor replay bad"],
                          cwd=project.root, env=env, capture_output=True, text=True, timeout=240)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and f"failed on rank {failing}" in said, said[-3000:]
    assert time.monotonic() - began < 200
    time.sleep(1.0)
    assert _alive_with(marker) == [], "processes of the replay outlived it"


@pytest.mark.slow
def test_a_sibling_whose_leader_died_is_not_signalled_by_a_stale_pid(monkeypatch):
    """Sibling.kill() trusts a pid it learned long ago without asking poll() first: after the
    leader died (and with it the sibling, reaped by init), the pid may belong to another process.
    run()'s finally (`worker.process.kill()` for every running worker) calls kill() that way.
    EXPECTED TO FAIL on ad52013."""
    import signal

    from flor.replay.gang import GangExecutor

    gang = GangExecutor(2, None, [], "none")
    try:
        gang.warm_up(2, {})
        leader, sibling = gang._idle[0][0].process, gang._idle[1][0].process
        deadline = time.monotonic() + 30
        while sibling.pid is None and time.monotonic() < deadline:
            sibling.poll()
            time.sleep(0.05)
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        while os.path.exists(f"/proc/{sibling.pid}") and time.monotonic() < deadline:
            time.sleep(0.05)  # gone with its leader, and reaped: its pid is free for reuse
        sent = []
        monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(pid))
        sibling.kill()
        monkeypatch.undo()
        assert sent == [], f"signalled pid {sent} of a sibling that ended with its leader"
    finally:
        gang.close()

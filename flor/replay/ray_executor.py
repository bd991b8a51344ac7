"""The Ray executor: replay segments as Ray tasks on a cluster (``flor replay --executor ray``).

Each task carries what its worker needs as data, not paths of this machine: the spec, the run's
records, and the run's code version as a tar archive (put in Ray's object store once per run and
shared by its tasks). On the node, the task lays them out in a
temporary folder and runs the usual worker (``python -m flor.replay.worker``, confined as
locally) as a child process; what the worker sends (values, drift, the result) is the task's
return value, so the driver stores it, as for local workers. Progress goes through a small actor
that tasks report to and the driver reads.

A task whose worker process dies with it (a node lost, a Ray worker killed) is retried by Ray,
up to ``FLOR_RAY_RETRIES`` times (3); a retry starts the segment over, and nothing of the failed
attempt was stored. A task that fails in the script is not retried: its error is reported.

What the nodes must share: the project's path with its data (git-ignored files the script reads)
and its ``.flor/`` checkpoints, and the same Python environment; a task on a node where the
project's path is missing or empty, or that lacks the ``.flor/`` checkpoints it restores, fails in
one line naming the node. The SQLite store stays on the
machine that drives the replay. See docs/scale-out.md.

A distributed job's segment (replay/job.py) runs as a *gang* (:class:`RayGang`): its ``world_size``
rank tasks in one placement group packed on one node (``STRICT_PACK``), so that they start
together and meet on that node's loopback (the rendezvous in each rank's spec), never retried
alone by Ray (a rank started again would wait for the others in a collective): when one fails, the
others are cancelled and job.py tries the segment again, whole, in a new placement group. The
rendezvous port is chosen on that node, not on the driver (a port free on the driver may be taken
there): rank 0's task takes a free loopback port where it runs and hands it to the other ranks'
tasks through a small actor (:class:`_Port`) before any of them starts its worker.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Callable

from ..environment import settings
from ..errors import ReplayError
from ..environment.paths import ProjectPaths
from .executor import Outcome, Task

POLL_S = 0.5
NODE_PORT = 0  # a rank's MASTER_PORT when its gang's rank 0 chooses the port on its node (RayGang)


def _ray():
    try:
        import ray
    except ImportError:
        raise ReplayError("--executor ray needs Ray: pip install 'flor-hindsight[ray]'") from None
    return ray


def package(task: Task, spec_text: str) -> dict:
    """A task's payload: the spec and the records (the code tree travels apart: :func:`archive`)."""
    spec = json.loads(spec_text)
    return {"key": task.key, "spec": spec, "records": Path(spec["records_path"]).read_bytes(), "env": dict(task.env)}


def archive(run_tree: str) -> bytes:
    """A run's code tree as a tar archive: built once per run and shared by its tasks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(run_tree, arcname="tree")
    return buffer.getvalue()


def missing_on_node(spec: dict, env: dict) -> str | None:
    """What this node lacks of the project that the task needs, as one line; None when nothing.
    Without it, an empty folder at the project's path replays as if the data were absent."""
    import socket

    root, node = Path(spec["root"]), socket.gethostname()
    if not root.is_dir():
        return (f"the project's path {root} does not exist on node {node}: the nodes must hold the "
                "project with the data it reads (docs/scale-out.md)")
    if not any(root.iterdir()):
        return (f"the project's path {root} is empty on node {node}: the project's files (the data the script reads) "
                "and its .flor checkpoints must be there (docs/scale-out.md)")
    restores = any(action in ("memo", "restore_end") for action in spec["segment"]["actions"].values())
    if restores and spec["checkpoints"] and not settings.checkpoint_store(env) and not ProjectPaths(root).flor_dir.is_dir():
        return (f"node {node} has no {ProjectPaths(root).flor_dir}: this task restores the run's checkpoints; share the project's "
                ".flor folder with the nodes or keep checkpoints in a bucket (FLOR_CHECKPOINT_STORE, docs/scale-out.md)")
    return None


class _Port:
    """A gang's rendezvous port, chosen by rank 0's task on its node and read by the others."""

    def __init__(self) -> None:
        self.port: int | None = None

    def publish(self, port: int) -> None:
        self.port = port

    def read(self) -> int | None:
        return self.port


def node_port(rank: str | None, rendezvous, wait_s: float = 120.0) -> int:
    """On a node, in a rank's task: rank 0 takes a free loopback port here and publishes it; the
    others wait for it (a bounded wait: rank 0's task starts with theirs, in one placement group)."""
    if rank == "0":
        from ..recording.job import loopback_port

        port = loopback_port()
        _ray().get(rendezvous.publish.remote(port))
        return port
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        port = _ray().get(rendezvous.read.remote())
        if port is not None:
            return port
        time.sleep(0.05)
    raise ReplayError(f"rank {rank} waited {wait_s:.0f} s for rank 0's task to choose the rendezvous port on its node")


def run_package(payload: dict, tree: bytes, env_base: dict, board=None, rendezvous=None) -> dict:
    """On a node: lay the payload out, run one worker on it, return what it sent. ``tree`` is the
    run's code archive (an object reference, resolved by Ray, when sent through a cluster);
    ``rendezvous``: a job's :class:`_Port`, whose port becomes the rank's ``MASTER_PORT``."""
    import subprocess
    import sys
    import tempfile

    from .channel import decode

    env = dict(os.environ)
    env.update(env_base)
    missing = missing_on_node(payload["spec"], env)
    if missing:
        return {"messages": [{"kind": "result", "ok": False, "error": missing}], "code": 1, "log": ""}
    if rendezvous is not None:  # the rank's identity and rendezvous are in its spec (WorkerSpec.environ)
        environ = dict(payload["spec"].get("environ") or {})
        try:
            environ["MASTER_PORT"] = str(node_port(environ.get("RANK"), rendezvous))
        except ReplayError as exc:
            return {"messages": [{"kind": "result", "ok": False, "error": str(exc)}], "code": 1, "log": ""}
        payload = {**payload, "spec": {**payload["spec"], "environ": environ}}
    with tempfile.TemporaryDirectory(prefix="flor-ray-task-") as tmp:
        folder = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
            archive.extractall(folder, filter="tar") if hasattr(tarfile, "data_filter") else archive.extractall(folder)
        spec = dict(payload["spec"])
        (folder / "records.json").write_bytes(payload["records"])
        (folder / "scratch").mkdir()
        spec.update(records_path=str(folder / "records.json"), run_tree=str(folder / "tree"),
                    scratch=str(folder / "scratch"))
        spec_path = folder / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for name, value in payload["env"].items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        process = subprocess.Popen([sys.executable, "-m", "flor.replay.worker", "--wait"], env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=_die_with_parent)
        process.stdin.write(f"{spec_path}\n".encode())
        process.stdin.close()
        messages, code = [], None
        for line in process.stdout:
            message = decode(line)
            if message is None:
                continue
            if message.get("kind") == "exited":
                code = int(message.get("code", 1))
            elif message.get("kind") == "progress" and board is not None:
                board.report.remote(payload["key"], message.get("done", 0))
            else:
                messages.append(message)
        stderr = process.stderr.read().decode(errors="replace")
        process.wait()
        return {"messages": messages, "code": code if code is not None else process.returncode, "log": stderr[-4000:]}


def _die_with_parent() -> None:
    """The worker ends with the Ray task that started it (a killed task leaves no replay behind)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _reachable(address: str | None) -> None:
    """Refuse at once a HOST:PORT where nothing listens (Ray itself keeps retrying for minutes)."""
    import socket

    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ReplayError(f"cannot reach the Ray cluster at {address} ({exc}); start one with `ray start --head` "
                          "and pass the address it prints") from None


class _Board:
    """Progress reported by tasks, read by the driver."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}

    def report(self, key: str, done: int) -> None:
        self.done[key] = max(done, self.done.get(key, 0))

    def snapshot(self) -> dict[str, int]:
        return dict(self.done)


class RayExecutor:
    """Runs tasks on a Ray cluster (see the module docstring)."""

    def __init__(self, workers: int = 1, gpus: list[str] | None = None, preload: list[str] | None = None,
                 confinement: str = "namespace", address: str | None = None, retries: int = 3) -> None:
        self.workers = workers
        self.gpus = len(gpus or [])
        self.preload = list(preload or [])
        self.confinement = confinement
        self.address = address
        self.retries = retries

    def warm_up(self, count: int | None = None, env: dict | None = None) -> None:
        """Ray's workers are the cluster's own: nothing to start here."""

    def close(self) -> None:
        """The cluster outlives the replay."""

    def connect(self):
        """Ray, connected to the cluster (or a one-line refusal)."""
        ray = _ray()
        _reachable(self.address)
        if not ray.is_initialized():
            try:
                ray.init(address=self.address or "auto", ignore_reinit_error=True, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ReplayError(f"cannot reach the Ray cluster at {self.address or 'auto'}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return ray

    def run(self, tasks: list[Task], on_message: Callable[[str, dict], None]) -> list[Outcome]:
        ray = self.connect()
        board = ray.remote(num_cpus=0)(_Board).remote()
        env_base = {**settings.worker_env(self.preload, self.confinement),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env_base.update(settings.checkpoint_store_env())
        remote = ray.remote(run_package)
        started = time.monotonic()
        refs, trees = {}, {}
        for task in tasks:
            # A task reserves as many CPUs as the run computed with: the same threads, the same bits.
            cpus = int(task.env.get("OMP_NUM_THREADS") or 1)
            options = remote.options(num_cpus=cpus, num_gpus=1 if self.gpus else 0, max_retries=self.retries,
                                     retry_exceptions=False)
            payload = package(task, task.spec_path.read_text())
            run_tree = payload["spec"]["run_tree"]
            if run_tree not in trees:
                # One archive per run in the object store, whatever its number of tasks (a large
                # tree packed and shipped for each task filled the driver's memory).
                trees[run_tree] = ray.put(archive(run_tree))
            refs[options.remote(payload, trees[run_tree], env_base, board)] = task
        outcomes: list[Outcome] = []
        shown: dict[str, int] = {}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            for key, done in ray.get(board.snapshot.remote()).items():
                if done > shown.get(key, -1):
                    shown[key] = done
                    on_message(key, {"kind": "progress", "done": done})
            for ref in ready:
                task = refs.pop(ref)
                outcomes.append(self._outcome(ray, ref, task, on_message, time.monotonic() - started))
        return outcomes

    def gang_of(self, world_size: int) -> "RayGang":
        """The executor of a job's segments: its ranks' tasks as one gang."""
        return RayGang(self, world_size)

    @staticmethod
    def _outcome(ray, ref, task: Task, on_message, seconds: float) -> Outcome:
        try:
            returned = ray.get(ref)
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return Outcome(task, False, {}, f"the Ray task failed after its retries: {first}", seconds)
        result = {}
        for message in returned["messages"]:
            if message.get("kind") == "result":
                result = message
            else:
                on_message(task.key, message)
        if returned["code"] == 0 and result.get("ok"):
            return Outcome(task, True, result, None, seconds)
        error = result.get("error")
        if not error:
            tail = [line for line in returned["log"].splitlines() if line.strip()]
            error = f"the worker exited with status {returned['code']}" + (f": {tail[-1]}" if tail else "")
        return Outcome(task, False, result, error, seconds)


STOPPED = "stopped with its gang"  # the error of a rank cancelled because another failed (replay/job.py)
PLACEMENT_WAIT_S = 120.0
# A rank that failed only because a peer went away: the others are cancelled after this grace, so
# that the peer that failed first returns its own error rather than being cancelled mid-return.
PEER_GONE_GRACE_S = 5.0
# Errors a rank shows because another rank failed (a collective whose peer went away, gloo).
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def peer_gone(error: str | None) -> bool:
    """Whether a rank's error only follows from another rank's failure (replay/job.py)."""
    return any(mark in (error or "") for mark in _PEER_GONE)


def too_large(bundles: list[dict], nodes: list[dict]) -> str | None:
    """Why no live node of the cluster (``ray.nodes()``) could ever hold the whole gang, or None.
    Said at once, not after waiting PLACEMENT_WAIT_S for resources that no node has."""
    need = {key: sum(b.get(key, 0) for b in bundles) for key in ("CPU", "GPU")}
    for node in nodes:
        have = node.get("Resources", {})
        if node.get("Alive") and all(have.get(key, 0) >= amount for key, amount in need.items()):
            return None
    wanted = f"{need['CPU']} CPUs" + (f" and {need['GPU']} GPUs" if need["GPU"] else "")
    return (f"a job of {len(bundles)} ranks needs {wanted} on one Ray node (its ranks meet on loopback), and no node "
            f"of the cluster has them: use --executor local, or add a node that large")


class RayGang:
    """One segment of a job: its rank tasks in a placement group on one node (module docstring)."""

    def __init__(self, executor: RayExecutor, world_size: int) -> None:
        self.executor, self.world_size = executor, world_size

    def close(self) -> None:
        """Each segment's placement group is removed when it ends."""

    def run(self, tasks: list[Task], on_message: Callable[[str, dict], None]) -> list[Outcome]:
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        owner = self.executor
        ray = owner.connect()
        env_base = {**settings.worker_env(owner.preload, owner.confinement),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env_base.update(settings.checkpoint_store_env())
        bundles = [{"CPU": int(task.env.get("OMP_NUM_THREADS") or 1), **({"GPU": 1} if owner.gpus else {})}
                   for task in tasks]
        refusal = too_large(bundles, ray.nodes())
        if refusal:
            raise ReplayError(refusal)
        group = placement_group(bundles, strategy="STRICT_PACK")
        started = time.monotonic()
        port = None
        try:
            ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_WAIT_S)
            if not ready:
                need = sum(b["CPU"] for b in bundles)
                raise ReplayError(f"a job of {len(tasks)} ranks needs {need} CPUs on one Ray node (a placement group "
                                  f"packed on one node, as its ranks meet on loopback); none was free after "
                                  f"{PLACEMENT_WAIT_S:.0f} s (busy with other work): try again, or use --executor local")
            remote = ray.remote(run_package)
            # The rendezvous port: chosen on the gang's node by rank 0's task (the module docstring).
            port = ray.remote(num_cpus=0)(_Port).options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=0)).remote()
            refs, trees = {}, {}
            for index, task in enumerate(tasks):
                payload = package(task, task.spec_path.read_text())
                run_tree = payload["spec"]["run_tree"]
                if run_tree not in trees:
                    trees[run_tree] = ray.put(archive(run_tree))
                strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
                options = remote.options(num_cpus=bundles[index]["CPU"], num_gpus=1 if owner.gpus else 0,
                                         max_retries=0, retry_exceptions=False, scheduling_strategy=strategy)
                refs[options.remote(payload, trees[run_tree], env_base, None, port)] = task
            outcomes: list[Outcome] = []
            cancelled: set = set()
            cancel_at = None  # when the ranks still running are cancelled, once one failed
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    task = refs.pop(ref)
                    outcome = RayExecutor._outcome(ray, ref, task, on_message, time.monotonic() - started)
                    if ref in cancelled and not outcome.ok and not outcome.result:
                        outcome.error = STOPPED  # ended by the cancel; a rank that failed by itself keeps its error
                    outcomes.append(outcome)
                    if not outcome.ok:
                        grace = PEER_GONE_GRACE_S if peer_gone(outcome.error) else 0.0
                        now = time.monotonic()
                        cancel_at = min(cancel_at, now + grace) if cancel_at is not None else now + grace
                if cancel_at is not None and time.monotonic() >= cancel_at:
                    for other in refs:  # they would wait in a collective for the rank that failed
                        if other not in cancelled:
                            ray.cancel(other, force=True)
                            cancelled.add(other)
            return outcomes
        finally:
            if port is not None:
                ray.kill(port)
            remove_placement_group(group)

"""The Ray executor's parts that need no cluster (tests/test_ray.py runs a real one): what a
node must hold of the project, checked before a task runs, and the code archive built once per
run and shared by the run's tasks."""

from __future__ import annotations

import json
import socket

import pytest

from flor.replay import ray_executor
from flor.replay.executor import Task


def _spec(tmp_path, root, actions, checkpoints=None) -> dict:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "train.py").write_text("print('x')\n")
    records = tmp_path / "records.json"
    records.write_text("{}")
    return {"root": str(root), "run_tree": str(tree), "records_path": str(records),
            "checkpoints": checkpoints if checkpoints is not None else {"0": {"end": "c0"}},
            "segment": {"actions": actions}}


def _error(tmp_path, spec, env=None) -> str:
    returned = ray_executor.run_package({"key": "k", "spec": spec, "records": b"{}", "env": {}}, b"", env or {})
    assert returned["code"] == 1
    (message,) = returned["messages"]
    assert message["ok"] is False and "\n" not in message["error"]
    return message["error"]


def test_a_node_with_an_empty_project_path_fails_the_task_in_one_line(tmp_path):
    empty = tmp_path / "project"
    empty.mkdir()
    error = _error(tmp_path, _spec(tmp_path, empty, {"0": "exec"}))
    assert socket.gethostname() in error and "is empty" in error and ".flor checkpoints" in error


def test_a_node_without_the_checkpoints_a_task_restores_fails_it_in_one_line(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "data.txt").write_text("1\n")
    spec = _spec(tmp_path, root, {"0": "memo", "1": "exec"})
    error = _error(tmp_path, spec)
    assert socket.gethostname() in error and str(root / ".flor") in error and "FLOR_CHECKPOINT_STORE" in error
    # Checkpoints in a bucket, or a task that restores nothing, need no local .flor.
    assert ray_executor.missing_on_node(spec, {"FLOR_CHECKPOINT_STORE": "s3://b/p"}) is None
    assert ray_executor.missing_on_node(_spec(tmp_path, root, {"0": "exec"}), {}) is None


class _Remote:
    def __init__(self, function, calls):
        self.function, self.calls = function, calls

    def options(self, **_options):
        return self

    def remote(self, *args):
        self.calls.append(args)
        return len(self.calls)


class _FakeRay:
    """Enough of Ray for RayExecutor.run: tasks are recorded, not run; each returns a failure."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self):
        self.puts, self.calls = [], []

    def is_initialized(self):
        return True

    def remote(self, target=None, **_options):
        if target is None:
            return lambda klass: self.remote(klass)
        if isinstance(target, type):
            board = target()

            class _Actor:
                class snapshot:
                    remote = staticmethod(lambda: "board")
            self.board = board
            return type("Handle", (), {"remote": staticmethod(lambda: _Actor)})
        return _Remote(target, self.calls)

    def put(self, value):
        self.puts.append(value)
        return f"ref{len(self.puts)}"

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref == "board":
            return {}
        return {"messages": [{"kind": "result", "ok": False, "error": "not run"}], "code": 1, "log": ""}


@pytest.mark.slow
def test_the_code_archive_is_built_once_per_run_and_shared_by_its_tasks(tmp_path, monkeypatch):
    fake = _FakeRay()
    monkeypatch.setattr(ray_executor, "_ray", lambda: fake)
    tasks = []
    for run in ("a", "b"):
        tree = tmp_path / run / "tree"
        tree.mkdir(parents=True)
        (tree / "train.py").write_text(f"print({run!r})\n")
        for segment in range(3):
            spec = {"root": str(tmp_path), "run_tree": str(tree), "records_path": str(tmp_path / "r.json"),
                    "checkpoints": {}, "segment": {"actions": {}}}
            (tmp_path / "r.json").write_text("{}")
            path = tmp_path / f"{run}{segment}.json"
            path.write_text(json.dumps(spec))
            tasks.append(Task(f"{run}{segment}", path, 1, 1.0))
    outcomes = ray_executor.RayExecutor().run(tasks, lambda key, message: None)
    assert len(outcomes) == 6 and len(fake.puts) == 2  # one archive for each of the two runs
    shared = {call[0]["spec"]["run_tree"]: set() for call in fake.calls}
    for payload, tree, _env, _board in fake.calls:
        assert "tree" not in payload
        shared[payload["spec"]["run_tree"]].add(tree)
    assert sorted(map(len, shared.values())) == [1, 1]

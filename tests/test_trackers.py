"""Scripts written for a tracker, recorded with `import flor` and its loops only (no flor.log,
no checkpointing): what they log
to TensorBoard / MLflow is recorded by flor too (with the tracker run noted), a hindsight value
is replayed and exported back, and the tracker's own reader finds it at the right step."""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.importorskip("tensorboard")

TENSORBOARD_SCRIPT = """
import flor
import torch
from torch.utils.tensorboard import SummaryWriter

torch.manual_seed(0)
net = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
data = torch.randn(8, 3)
writer = SummaryWriter("tb/exp")
for epoch in flor.loop("epoch", range(3)):
    for i in flor.loop("step", range(4)):
        loss = net(data[2 * i:2 * i + 2]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        writer.add_scalar("train/loss", loss.item(), epoch * 4 + i)
    # HINDSIGHT
writer.close()
"""


def _rows(db, sql):
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


@pytest.mark.slow
def test_tensorboard_script_recorded_replayed_exported_and_read_back(project):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project.write("train.py", TENSORBOARD_SCRIPT)
    project.write(".gitignore", "tb/\n")
    project.commit_all("tensorboard script")
    project.run("train.py")
    # What the script gave TensorBoard, flor recorded in its loop context, with the tracker's step.
    losses = _rows(project.db, "SELECT COUNT(*) FROM logs WHERE name = 'train/loss'")
    assert losses == [(12,)]
    steps = [r[0] for r in _rows(project.db, "SELECT value FROM logs WHERE name = 'tracker_step' ORDER BY rowid")]
    assert steps == [str(s) for s in range(12)] or [int(s) for s in steps] == list(range(12))
    (environment,) = _rows(project.db, "SELECT environment FROM runs")[0]
    log_dir = json.loads(environment)["trackers"]["tensorboard"]["log_dir"]
    assert log_dir == str(project.root / "tb" / "exp")
    shown = project.flor("show", _rows(project.db, "SELECT tstamp FROM runs")[0][0]).stdout
    assert f"tracker   tensorboard: log_dir={log_dir}" in shown

    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace(
        "    # HINDSIGHT", '    flor.log("weight_norm", net.weight.norm().item())'))
    project.flor("replay", "weight_norm", "--export", "tensorboard")
    replayed = [float(r[0]) for r in _rows(project.db, "SELECT value FROM logs WHERE name = 'weight_norm' ORDER BY rowid")]
    assert len(replayed) == 3

    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    points = events.Scalars("weight_norm")
    # Each epoch's value at the last step the script gave TensorBoard in that epoch.
    assert [p.step for p in points] == [3, 7, 11]
    assert [p.value for p in points] == pytest.approx(replayed, rel=1e-6)
    assert len(events.Scalars("train/loss")) == 12  # the script's own curve, untouched
    # Exporting again writes nothing new.
    again = project.flor("export", "--to", "tensorboard", "weight_norm", "--json").stdout
    assert json.loads(again)["written"] == 0


MLFLOW_SCRIPT = """
import flor
import mlflow

mlflow.set_experiment("demo")
with mlflow.start_run():
    w = 1.0
    for epoch in flor.loop("epoch", range(3)):
        w = w * 0.5
        mlflow.log_metric("w", w, step=10 * epoch)
        # HINDSIGHT
"""


@pytest.mark.slow
def test_mlflow_script_recorded_replayed_exported_and_read_back(project, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"file://{project.root / 'mlruns'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    # MLflow 3 keeps its file store only on request; the test's processes inherit it from here.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    project.write("train.py", MLFLOW_SCRIPT)
    project.write(".gitignore", "mlruns/\n")
    project.commit_all("mlflow script")
    project.run("train.py", env=env)
    assert _rows(project.db, "SELECT value FROM logs WHERE name = 'w' ORDER BY rowid") == [("0.5",), ("0.25",), ("0.125",)] \
        or len(_rows(project.db, "SELECT value FROM logs WHERE name = 'w'")) == 3
    (environment,) = _rows(project.db, "SELECT environment FROM runs")[0]
    noted = json.loads(environment)["trackers"]["mlflow"]
    assert noted["tracking_uri"] == uri

    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace("        # HINDSIGHT", '        flor.log("w_sq", w * w)'))
    project.flor("replay", "w_sq")
    done = project.flor("export", "--to", "mlflow", "w_sq", "--json").stdout
    assert json.loads(done)["written"] == 3

    history = MlflowClient(uri).get_metric_history(noted["run_id"], "w_sq")
    assert [(m.step, m.value) for m in history] == [(0, 0.25), (10, 0.0625), (20, 0.015625)]
    again = project.flor("export", "--to", "mlflow", "w_sq", "--json").stdout
    assert json.loads(again)["written"] == 0


CHECKPOINTED = """
import flor
import torch

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
opt = torch.optim.Adam(net.parameters(), lr=0.01)
x = torch.randn(16, 3)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(3)):
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch == 1:
            torch.save(net.state_dict(), "epoch1.pt")
"""


@pytest.mark.slow
def test_checkpoint_export_to_safetensors_and_pt(project):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    project.write("train.py", CHECKPOINTED)
    project.write(".gitignore", "*.pt\n*.safetensors\n")
    project.commit_all("checkpointed")
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    (tstamp, commit), = _rows(project.db, "SELECT tstamp, code_commit FROM runs")
    out = project.flor("checkpoint", "export", tstamp[:10], "--iteration", "1", "--to", "model.safetensors").stdout
    assert "model, optimizer of run" in out and "at iteration 1" in out
    path = str(project.root / "model.safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["flor.tstamp"] == tstamp and meta["flor.code_commit"] == commit and meta["flor.iteration"] == "1"
    assert json.loads(meta["flor.extras"])["optimizer.param_groups.0.lr"] == 0.01
    tensors = load_file(path)
    expected = torch.load(project.root / "epoch1.pt")
    for key, value in expected.items():
        assert torch.equal(tensors[f"model.{key}"], value)
    assert any(k.startswith("optimizer.state.") for k in tensors)

    project.flor("checkpoint", "export", tstamp, "--iteration", "1", "--to", "net.safetensors", "--object", "model")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    net.load_state_dict(load_file(str(project.root / "net.safetensors")))  # load_state_dict-ready
    project.flor("checkpoint", "export", tstamp, "--iteration", "1", "--to", "net.pt", "--object", "model")
    loaded = torch.load(project.root / "net.pt")
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())

    bad = project.flor("checkpoint", "export", tstamp, "--iteration", "7", "--to", "x.safetensors", check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "no checkpoint at iteration 7" in bad.stderr
    wrong = project.flor("checkpoint", "export", tstamp, "--to", "x.onnx", check=False)
    assert wrong.returncode == 2 and "name a .safetensors or .pt file" in wrong.stderr


WANDB_SCRIPT = """
import flor
import wandb

run = wandb.init(project="demo", dir=".")
w = 1.0
for epoch in flor.loop("epoch", range(3)):
    w = w * 0.5
    wandb.log({"w": w}, step=10 * epoch)
    # HINDSIGHT
run.finish()
"""


def _wandb_history(path):
    """The history rows of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending, rows = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or its last fragment
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif record.WhichOneof("record_type") == "run":
                rows.append({"$config": {i.key: json.loads(i.value_json) for i in record.run.config.update}})
    return rows


@pytest.mark.slow
def test_wandb_script_recorded_replayed_and_exported_to_a_linked_run(project, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    project.write("train.py", WANDB_SCRIPT)
    project.write(".gitignore", "wandb/\n")
    project.commit_all("wandb script")
    project.run("train.py")
    assert len(_rows(project.db, "SELECT value FROM logs WHERE name = 'w'")) == 3  # once each, not twice
    (environment,) = _rows(project.db, "SELECT environment FROM runs")[0]
    linked = json.loads(environment)["trackers"]["wandb"]["path"]
    assert linked.endswith("demo/" + linked.split("/")[-1])

    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace("    # HINDSIGHT", '    flor.log("w_sq", w * w)'))
    project.flor("replay", "w_sq")
    before = set(project.root.glob("wandb/offline-run-*"))
    done = json.loads(project.flor("export", "--to", "wandb", "w_sq", "--json").stdout)
    assert done["written"] == 3
    (new_run,) = set(project.root.glob("wandb/offline-run-*")) - before
    (run_file,) = new_run.glob("run-*.wandb")
    rows = _wandb_history(run_file)
    history = [(r["_step"], r["w_sq"]) for r in rows if "w_sq" in r]
    assert history == [(0, 0.25), (10, 0.0625), (20, 0.015625)]
    config = next(r["$config"] for r in rows if "$config" in r)
    assert config["flor.linked_run"] == linked


@pytest.mark.slow
def test_export_of_a_run_without_a_tracker_makes_one_run_per_flor_run(project, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.test_record import SMALL

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{project.root / 'mlruns'}"
    project.write("train.py", SMALL)
    project.write(".gitignore", "mlruns/\nflor-tensorboard/\n")
    project.commit_all("small")
    project.run("train.py", "--kwargs", "epochs=2")
    (tstamp, commit), = _rows(project.db, "SELECT tstamp, code_commit FROM runs")
    first = json.loads(project.flor("export", "--to", "mlflow", "acc", "loss", "final", "--tracking-uri", uri,
                                    "--json").stdout)
    assert first["written"] == 2 + 8 and first["skipped"] == 1  # 'final' is a string
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("flor").experiment_id])
    assert run.data.tags["flor.tstamp"] == tstamp and run.data.tags["flor.code_commit"] == commit
    assert run.data.params == {"epochs": "2"}
    # No tracker steps: an epoch's value at its epoch, a step's at its count across epochs.
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "acc")] == [(0, 0.0), (1, 0.1)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(8))
    again = json.loads(project.flor("export", "--to", "mlflow", "acc", "--tracking-uri", uri, "--json").stdout)
    assert again["written"] == 0 and again["where"] == first["where"]  # the same MLflow run, nothing twice

    project.flor("export", "--to", "tensorboard", "acc")
    events = EventAccumulator(str(project.root / "flor-tensorboard" / tstamp.replace(":", "-")))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("acc")] == [(0, 0.0), (1, pytest.approx(0.1))]
    bad = project.flor("export", "--to", "mlflow", "nosuch", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("flor: error: no logged values named 'nosuch'")
    assert len(bad.stderr.splitlines()) == 1

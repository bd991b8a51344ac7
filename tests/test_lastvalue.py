"""One last value everywhere (store/lastvalue.py): a run's last value of a name is its value at
the run's last logged iteration, whatever stored it and in whatever order. Every surface that
shows or filters by it agrees: flor ui's API, `flor replay --where`, `flor extract --where`,
`flor.dataframe(last=True)` and `flor.best(where=...)`."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from urllib.parse import quote

import pytest

from flor.logged import LoggedValue
from flor.store import Store
from tests.conftest import Project, git, git_env_in_this_process

SCRIPT = """\
import flor

lr = flor.arg("lr", 0.1)
w = 0.0
for epoch in flor.loop("epoch", range(4)):
    for step in flor.loop("step", range(3)):
        w += lr
        flor.log("loss", 1.0 / (1 + w))
    # BODY
    print(f"epoch {epoch} acc {0.5 + lr + epoch / 10:.2f}")
"""
# Hindsight: per run (by lr) and epoch. The first run's best value comes first and its last value
# is the worst, so taking epoch 0 for the last value selects the wrong runs.
VAL_LOSS = {0.1: [0.2, 0.9, 0.9, 0.9], 0.2: [1.5, 1.2, 1.0, 0.7], 0.3: [1.4, 1.1, 0.9, 0.6]}
STATEMENT = f'flor.log("val_loss", {VAL_LOSS!r}[lr][epoch])'


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Three runs (lr 0.1, 0.2, 0.3) whose val_loss was replayed for epochs 2-3 first and for
    epoch 0 after (so storage order is not iteration order), and whose printed acc was extracted."""
    root = tmp_path_factory.mktemp("lastvalue") / "proj"
    root.mkdir()
    with git_env_in_this_process():  # the UI runs git in this process
        git(root, "init", "-q", "-b", "main")
        project = Project(root)
        project.write("train.py", SCRIPT)
        project.commit_all("train")
        for lr in (0.1, 0.2, 0.3):
            project.run("train.py", "--kwargs", f"lr={lr}")
        text = (root / "train.py").read_text()
        (root / "train.py").write_text(text.replace("    # BODY", "    " + STATEMENT, 1))
        project.flor("replay", "val_loss", "--iterations", "epoch=2,3")
        project.flor("replay", "val_loss", "--iterations", "epoch=0")
        project.flor("extract", "acc", r"acc ([0-9.]+)")
        yield project


def _tstamps(project) -> dict[float, str]:
    with sqlite3.connect(project.db) as connection:
        rows = connection.execute(
            "SELECT r.tstamp, a.value FROM runs r JOIN args a ON a.run_id = r.run_id AND a.name = 'lr'").fetchall()
    return {float(lr): tstamp for tstamp, lr in rows}


def _named(text: str, tstamps) -> list[str]:
    """The tstamps that ``text`` names, whole (runs started in one second share a prefix)."""
    return sorted(t for t in tstamps if re.search(re.escape(t) + r"(?![.\d-])", text))


@pytest.mark.slow
def test_storage_order_differs_from_iteration_order(replayed):
    with sqlite3.connect(replayed.db) as connection:
        stored = [it for (it,) in connection.execute(
            "SELECT DISTINCT iteration FROM logs WHERE name = 'val_loss' ORDER BY rowid")]
        newest = connection.execute(
            "SELECT iteration FROM logs WHERE name = 'val_loss' ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    assert stored == [2, 3, 0] and newest == 0  # epoch 1 never replayed; epoch 0 stored last


@pytest.mark.slow
def test_every_surface_agrees_on_the_last_value(replayed, monkeypatch):
    pytest.importorskip("flask")
    import flor
    from flor.ui.server import UIData, create_app

    by_lr = _tstamps(replayed)
    last = {by_lr[lr]: values[-1] for lr, values in VAL_LOSS.items()}  # epoch 3
    passing = sorted(t for t, v in last.items() if v < 0.8)
    assert len(passing) == 2

    # flor ui: the runs table, its filter, the scatter/compare columns and the chart legend.
    data = UIData.open(replayed.db, replayed.root)
    data.load(wait=None)
    try:
        client = create_app(data).test_client()
        body = client.get("/api/runs").json
        names = [c["name"] for c in body["columns"]]
        rows = [dict(zip(names, row)) for row in body["rows"]]
        assert {r["tstamp"]: r["val_loss"] for r in rows} == last
        assert all(sources["val_loss"] == "replay" for sources in body["sources"])
        body = client.get("/api/runs?where=" + quote("val_loss < 0.8")).json
        assert sorted(row[names.index("tstamp")] for row in body["rows"]) == passing
        values = client.get("/api/values?names=val_loss").json
        assert dict(zip(values["runs"], values["columns"]["val_loss"])) == last
        series = client.get(f"/api/series?runs={','.join(last)}&name=val_loss").json
        for run in series["series"]:
            assert run["last"] == {"value": last[run["run"]], "source": "replay"}
            (part,) = run["parts"]
            # epoch 1 was not replayed: a gap (null), not a line bridging it; the chart ends at the last value
            assert part["x"] == [0, 1, 2, 3] and part["y"][1] is None and part["y"][-1] == last[run["run"]]
    finally:
        data.close()

    # flor replay --where and flor extract --where select the same runs.
    plan = replayed.flor("replay", "val_loss", "--where", "val_loss < 0.8", "--dry-run").stdout
    assert _named(plan, last) == passing, plan
    dry = replayed.flor("extract", "acc", r"acc ([0-9.]+)", "--where", "val_loss < 0.8", "--dry-run").stdout
    assert _named(dry, last) == passing, dry

    # The dataframe's one-row-per-run view and flor.best's candidates.
    monkeypatch.chdir(replayed.root)
    frame = flor.dataframe("lr", "val_loss", last=True)
    assert dict(zip(frame["tstamp"], frame["val_loss"])) == last
    printed = [json.loads(line) for line in replayed.flor("dataframe", "val_loss", "--last", "--json").stdout.splitlines()]
    assert {row["tstamp"]: row["val_loss"] for row in printed} == last
    best = flor.best("val_loss", mode="min", where="val_loss < 0.8")
    assert (best.tstamp, best.iteration, best.value) == (by_lr[0.3], 3, 0.6)


@pytest.mark.slow
def test_extracted_values_are_labelled_extract(replayed):
    pytest.importorskip("flask")
    from flor.ui.server import UIData, create_app

    by_lr = _tstamps(replayed)
    data = UIData.open(replayed.db, replayed.root)
    data.load(wait=None)
    try:
        client = create_app(data).test_client()
        body = client.get("/api/runs").json
        names = [c["name"] for c in body["columns"]]
        for row, sources in zip(body["rows"], body["sources"]):
            lr = row[names.index("lr")]
            assert row[names.index("acc")] == pytest.approx(0.5 + lr + 0.3)  # epoch 3's line
            assert sources["acc"] == "extract"
        tstamp = by_lr[0.2]
        logs = {(log["name"], log["source"]): log["count"] for log in client.get(f"/api/runs/{tstamp}").json["logs"]}
        assert logs[("acc", "extract")] == 4 and ("acc", "replay") not in logs
        (run,) = client.get(f"/api/series?runs={tstamp}&name=acc").json["series"]
        (part,) = run["parts"]
        assert part["source"] == "extract" and part["x"] == [0, 1, 2, 3]
        assert run["last"] == {"value": pytest.approx(1.0), "source": "extract"}
    finally:
        data.close()


def test_position_orders_nested_loops_and_run_level_values(tmp_path):
    """The definition on a hand-made store: outer iteration first, then the inner loop's; a value
    at a loop level after the loops inside it; a run-level value after every iteration; among
    values in one context the last logged."""
    store = Store.open(tmp_path / ".flor" / "flor.db")
    try:
        run_id, _ = store.insert_run(tstamp="2026-01-01T00:00:00", projid="p", filename="t.py", argv=[], cwd=".",
                                     started=time.time(), args=[])
        contexts = [(1, None, None, "epoch", 0.0, 1.0, 3)] + [(2 + e, 1, e, "step", 0.0, 1.0, 5) for e in range(3)]
        logs = [("loss", float(e * 10 + s), 2 + e, s) for e in range(3) for s in range(5)]
        logs += [("mixed", float(e * 10 + s), 2 + e, s) for e in range(3) for s in range(5)]
        logs += [("mixed", -1.0, 1, 1)]  # an epoch-level value of epoch 1: before epoch 2's steps
        logs += [("twice", 1.0, 1, 2), ("twice", 2.0, 1, 2)]
        store.write_batch(run_id, contexts, logs, run_fields={"status": "finished", "ended": time.time()})
        # Replayed out of order: epoch 2's step 4, then epoch 0's step 1.
        store.write_replayed(run_id, [], [LoggedValue("grad", 44.0, "float", 4, 4)])
        store.write_replayed(run_id, [], [LoggedValue("grad", 1.0, "float", 2, 1)])
        store.write_replayed(run_id, [], [LoggedValue("final", 7.0, "float", None, None), LoggedValue("final", 3.0, "float", 4, 3)])
        last = store.last_values(run_id)
        assert last == {"loss": 24.0, "mixed": 24.0, "twice": 2.0, "grad": 44.0, "final": 7.0}
    finally:
        store.close()

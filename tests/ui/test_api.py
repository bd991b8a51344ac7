"""The JSON API of flor ui through Flask's test client (no browser, no socket)."""

from __future__ import annotations

import re
import sqlite3
from urllib.parse import quote

import pytest

pytest.importorskip("flask")

from flor.logged import LoggedValue
from flor.errors import StoreError  # noqa: E402
from flor.store import ReadPool, Store  # noqa: E402
from flor.ui.server import UIData, create_app  # noqa: E402

pytestmark = pytest.mark.slow  # records four runs, then serves them


@pytest.fixture(scope="module")
def client(recorded):
    data = UIData.open(recorded.db, recorded.root)
    data.load(wait=None)
    app = create_app(data)
    yield app.test_client()
    data.close()


def rows_of(body):
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, row)) for row in body["rows"]]


def test_runs_table_has_one_row_per_run_with_args_and_last_values(client, recorded):
    body = client.get("/api/runs").json
    assert body["total"] == body["matched"] == 4
    names = [c["name"] for c in body["columns"]]
    assert names[:5] == ["tstamp", "filename", "status", "duration", "commit"]
    assert {c["name"]: c["kind"] for c in body["columns"]}["lr"] == "arg"
    assert {c["name"]: c["kind"] for c in body["columns"]}["accuracy"] == "log"
    assert body["metrics"] == ["loss", "accuracy"]  # 'note' is text: no chart for it
    rows = rows_of(body)
    assert [r["tstamp"] for r in rows] == recorded.tstamps
    first, second, failed, later = rows
    assert first["lr"] == 0.01 and first["epochs"] == 3 and first["optimizer"] == "sgd"
    assert first["accuracy"] == pytest.approx(1 - 0.5 / 3 - 0.01)
    assert first["loss"] == pytest.approx(1 / 60 + 0.01)  # the last of 60 steps
    assert second["optimizer"] == "adam" and second["status"] == "finished"
    assert failed["status"] == "failed" and failed["note"] is None
    assert len(first["commit"]) == 10 and first["commit"] != later["commit"]
    assert first["duration"] >= 0 and first["filename"] == "train.py"


def test_filter_narrows_and_sort_orders(client, recorded):
    where = quote("accuracy > 0.9 and lr < 0.01")
    body = client.get(f"/api/runs?where={where}").json
    assert body["matched"] == 1 and body["total"] == 4
    assert rows_of(body)[0]["tstamp"] == recorded.tstamps[3]
    body = client.get("/api/runs?where=" + quote("status in ('failed', 'killed') or optimizer == 'adam'")).json
    assert [r["tstamp"] for r in rows_of(body)] == recorded.tstamps[1:3]
    body = client.get("/api/runs?sort=accuracy&desc=1").json
    accuracies = [r["accuracy"] for r in rows_of(body)]
    assert accuracies == sorted(accuracies, reverse=True)
    body = client.get("/api/runs?sort=note").json  # missing values last, whatever the direction
    assert rows_of(body)[-1]["note"] is None
    page = client.get("/api/runs?offset=1&limit=2").json
    assert [r["tstamp"] for r in rows_of(page)] == recorded.tstamps[1:3]


@pytest.mark.parametrize("where, message", [
    ("__import__('os').system('true')", "function call"),
    ("accuracy.real > 0", "unknown column 'accuracy.real'"),
    ("lr + 1 > 0", "arithmetic"),
    ("acc > 0.9", "unknown column 'acc'"),
    ("lr >", "cannot parse"),
])
def test_unsafe_or_wrong_filters_are_one_line_errors(client, where, message):
    response = client.get("/api/runs?where=" + quote(where))
    assert response.status_code == 400
    assert message in response.json["error"] and "\n" not in response.json["error"]


def test_series_of_a_nested_loop_counts_steps_across_epochs(client, recorded):
    body = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=loss").json
    assert body["x_label"] == "step (counted across epoch)"
    (part,) = body["series"][0]["parts"]
    assert part["source"] == "record" and part["total"] == 60
    assert part["x"] == list(range(60))
    assert part["y"][0] == pytest.approx(1.01) and part["y"][-1] == pytest.approx(1 / 60 + 0.01)
    small = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=loss&points=10").json
    shown = small["series"][0]["parts"][0]
    assert shown["shown"] <= 10 and max(shown["y"]) == pytest.approx(1.01)
    zoom = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=loss&xmin=10&xmax=20").json
    assert zoom["series"][0]["parts"][0]["x"] == list(range(9, 22))  # one point beyond each edge


def test_series_of_an_outer_loop_and_of_several_runs(client, recorded):
    runs = ",".join(recorded.tstamps[:2])
    body = client.get(f"/api/series?runs={runs}&name=accuracy").json
    assert body["x_label"] == "epoch"
    assert [len(s["parts"][0]["x"]) for s in body["series"]] == [3, 5]
    assert [s["run"] for s in body["series"]] == recorded.tstamps[:2]


def test_replayed_values_come_apart_from_recorded_ones(recorded, tmp_path):
    import shutil

    # A copy of the project's store with replayed values, as `flor replay` would write them.
    copy = tmp_path / ".flor" / "flor.db"
    copy.parent.mkdir()
    shutil.copy(recorded.db, copy)
    store = Store.open(copy)
    run_id, = store._read("SELECT run_id FROM runs WHERE tstamp = ?", (recorded.tstamps[0],))[0]
    (epoch_loop,), = store._read("SELECT ctx_id FROM contexts WHERE run_id = ? AND loop_name = 'epoch'", (run_id,))
    store.write_replayed(run_id, [], [LoggedValue("grad_norm", 2.0 + i, "float", epoch_loop, i) for i in range(3)])
    store.close()
    data = UIData.open(copy, recorded.root)
    data.load(wait=None)
    try:
        client = create_app(data).test_client()
        body = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=grad_norm").json
        (part,) = body["series"][0]["parts"]
        assert part["source"] == "replay" and part["x"] == [0, 1, 2] and part["y"] == [2.0, 3.0, 4.0]
        rows = rows_of(client.get("/api/runs").json)
        assert rows[0]["grad_norm"] == 4.0 and rows[1]["grad_norm"] is None
    finally:
        data.close()


def test_run_page_code_and_diff(client, recorded):
    failed = client.get(f"/api/runs/{recorded.tstamps[2]}").json
    assert failed["status"] == "failed" and "boom at epoch 0" in failed["error"]
    assert {a["name"]: a["value"] for a in failed["args"]}["fail"] is True
    assert [(l["name"], l["count"]) for l in failed["logs"]] == [("loss", 20), ("accuracy", 1)]
    assert failed["checkpoints"] == [] and failed["argv"][-1] == "fail=true"
    code = client.get(f"/api/runs/{recorded.tstamps[0]}/code").json
    assert code["filename"] == "train.py" and 'flor.loop("step", range(20))' in code["text"]
    diff = client.get(f"/api/diff?a={recorded.tstamps[0]}&b={recorded.tstamps[3]}").json["text"]
    assert '-    for step in flor.loop("step", range(20)):' in diff
    assert '+    for step in flor.loop("step", range(30)):' in diff
    prefix = client.get(f"/api/runs/{recorded.tstamps[3][:22]}")
    assert prefix.status_code == 200
    missing = client.get("/api/runs/1999-01-01")
    assert missing.status_code == 404 and "1999" in missing.json["error"]


def test_output_of_a_run_with_its_loop_context_filtered(client, recorded):
    body = client.get(f"/api/runs/{quote(recorded.tstamps[0])}/output").json
    assert body["total"] == 3 and body["matched"] == 3
    assert [(line["stream"], line["context"], line["text"]) for line in body["lines"]] == [
        ("stdout", {"epoch": e}, f"epoch {e} done, accuracy {1 - 0.5 / (e + 1) - 0.01:.4f}") for e in range(3)]
    narrowed = client.get(f"/api/runs/{quote(recorded.tstamps[0])}/output?grep=epoch%202&limit=5").json
    assert narrowed["matched"] == 1 and narrowed["lines"][0]["line"] == 2
    assert client.get(f"/api/runs/{quote(recorded.tstamps[0])}/output?stream=stderr").json["lines"] == []
    bad = client.get(f"/api/runs/{quote(recorded.tstamps[0])}/output?grep=(")
    assert bad.status_code == 400 and "not a regular expression" in bad.json["error"]


def test_values_for_the_scatter_view(client, recorded):
    body = client.get("/api/values?names=lr,accuracy&where=" + quote("status == 'finished'")).json
    assert body["runs"] == [recorded.tstamps[i] for i in (0, 1, 3)]
    assert body["columns"]["lr"] == [0.01, 0.001, 0.0001]
    assert client.get("/api/values?names=nope").status_code == 400


def test_only_get_and_only_loopback(client):
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/runs")
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    assert client.get("/api/runs", headers={"Host": "evil.example:8000"}).status_code == 403
    assert client.get("/api/runs", headers={"Host": "localhost:8000"}).status_code == 200
    assert client.get("/api/runs", headers={"Host": "[::1]:8000"}).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/uPlot.iife.min.js").status_code == 200
    assert client.get("/api/nothing").status_code == 404


def test_the_connection_cannot_write(recorded):
    db = ReadPool(recorded.db)
    try:
        with pytest.raises(StoreError):
            db.read("DELETE FROM runs")
        with pytest.raises(StoreError):
            db.read("CREATE TABLE x(y)")
    finally:
        db.close()
    with sqlite3.connect(str(recorded.db)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4


def test_new_runs_appear_while_the_server_runs(recorded, tmp_path):
    import shutil

    root = tmp_path / "live"
    shutil.copytree(recorded.root, root)
    data = UIData.open(root / ".flor" / "flor.db", root)
    data.load(wait=None)
    try:
        client = create_app(data).test_client()
        before = client.get("/api/version").json
        assert before["runs"] == 4
        live = type(recorded)(root, [])
        live.record("lr=0.5", "epochs=2")
        after = client.get("/api/version").json
        assert after["runs"] == 5 and after["version"] > before["version"]
        rows = rows_of(client.get("/api/runs?where=" + quote("lr == 0.5")).json)
        assert len(rows) == 1 and rows[0]["accuracy"] == pytest.approx(1 - 0.25 - 0.5)
    finally:
        data.close()


LIVE = """\
import os, time
import flor

for step in flor.loop("step", range(100)):
    flor.log("loss", 1.0 / (step + 1))
    if step == 4:
        while not os.path.exists("go"):
            time.sleep(0.05)
"""


def test_a_running_run_shows_as_it_logs(recorded, tmp_path):
    import shutil
    import subprocess
    import sys
    import time

    from tests.ui.conftest import clean_env

    root = tmp_path / "running"
    shutil.copytree(recorded.root, root)
    (root / "live.py").write_text(LIVE)
    data = UIData.open(root / ".flor" / "flor.db", root)
    data.load(wait=None)
    process = subprocess.Popen([sys.executable, "live.py"], cwd=root, env=clean_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = create_app(data).test_client()

        def live_row():
            rows = rows_of(client.get("/api/runs?where=" + quote("filename == 'live.py'")).json)
            return rows[0] if rows else None

        deadline = time.monotonic() + 30
        while (row := live_row()) is None or row["loss"] != 0.2:  # flushed at least every second
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.poll() else row
            time.sleep(0.1)
        assert row["status"] == "running" and row["duration"] > 0
        assert client.get("/api/version").json["running"] == 1
        (root / "go").write_text("")
        assert process.wait(timeout=60) == 0
        row = live_row()
        assert row["status"] == "finished" and row["loss"] == 0.01
        (series,) = client.get(f"/api/series?runs={row['tstamp']}&name=loss").json["series"]
        assert series["parts"][0]["x"] == list(range(100))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        data.close()


def test_brushes_narrow_the_table_and_bad_ones_are_one_line(client, recorded):
    body = client.get("/api/runs?brush=" + quote("epochs:4:10;lr:0:0.01")).json
    assert [r["tstamp"] for r in rows_of(body)] == [recorded.tstamps[1], recorded.tstamps[3]]
    assert body["matched"] == 2 and body["total"] == 4
    refused = client.get("/api/runs?brush=nope:1:2")
    assert refused.status_code == 400 and "unknown column 'nope'" in refused.json["error"]
    refused = client.get("/api/runs?brush=lr:a:2")
    assert refused.status_code == 400 and "NAME:LOW:HIGH" in refused.json["error"]


def test_csv_of_the_filtered_sorted_table(client, recorded):
    response = client.get("/api/runs.csv?sort=lr&desc=0&columns=tstamp,lr,note&where=" + quote("lr < 0.01"))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "tstamp,lr,note,hindsight"
    assert lines[1:] == [f"{recorded.tstamps[3]},0.0001,<b>not markup</b>,", f"{recorded.tstamps[1]},0.001,<b>not markup</b>,"]
    assert client.get("/api/runs.csv?columns=nope").status_code == 400


def test_series_by_step_and_time(client, recorded):
    body = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=accuracy&x=step").json
    assert body["x_label"] == "step (step counted across epoch)" and body["integer_x"] is True
    assert body["series"][0]["parts"][0]["x"] == [19, 39, 59]
    body = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=loss&x=time").json
    xs = body["series"][0]["parts"][0]["x"]
    assert body["integer_x"] is False and len(xs) == 60 and xs == sorted(xs) and xs[0] >= 0
    refused = client.get(f"/api/series?runs={recorded.tstamps[0]}&name=loss&x=wall")
    assert refused.status_code == 400 and "x must be one of iteration, step, time" in refused.json["error"]


def test_a_filter_with_equals_suggests_the_comparison(client):
    refused = client.get("/api/runs?where=" + quote("lr=0.01 and optimizer='adam'"))
    assert refused.status_code == 400
    assert refused.json["error"].endswith("did you mean `lr == 0.01 and optimizer == 'adam'`?")


@pytest.fixture
def editable(recorded, tmp_path):
    """An app with editing allowed over a copy of the store (the edits must not reach `recorded`)."""
    import shutil

    copy = tmp_path / "proj"
    shutil.copytree(recorded.root, copy)
    db = copy / ".flor" / "flor.db"
    Store.open(db).close()  # as `flor ui --allow-edit` does: brings the schema up to date
    data = UIData.open(db, copy)
    data.load(wait=None)
    yield create_app(data, edit_token="s3cret").test_client(), db
    data.close()


def test_annotations_need_the_token_and_json(editable, recorded):
    client, _ = editable
    path = f"/api/runs/{recorded.tstamps[0]}/annotations"
    refused = client.post(path, json={"name": "baseline"})
    assert refused.status_code == 403 and "edit token" in refused.json["error"]
    refused = client.post(path, json={"name": "baseline"}, headers={"X-Flor-Token": "guess"})
    assert refused.status_code == 403
    # A form post (what another site can send without asking) is refused even with the token.
    refused = client.post(path, data={"name": "x"}, headers={"X-Flor-Token": "s3cret"})
    assert refused.status_code == 415
    refused = client.post(path, json={"colour": "red"}, headers={"X-Flor-Token": "s3cret"})
    assert refused.status_code == 400 and "some of: archived, name, note, tags" in refused.json["error"]
    refused = client.post(path, json={"tags": "a,b"}, headers={"X-Flor-Token": "s3cret"})
    assert refused.status_code == 400 and "tags must be a list" in refused.json["error"]
    assert client.post(f"/api/runs/{recorded.tstamps[0]}", json={}, headers={"X-Flor-Token": "s3cret"}).status_code == 405
    assert "name" not in [c["name"] for c in client.get("/api/runs").json["columns"]]


def test_annotations_are_stored_shown_and_archived_runs_hidden(editable, recorded):
    client, db = editable
    token = {"X-Flor-Token": "s3cret"}
    saved = client.post(f"/api/runs/{recorded.tstamps[0]}/annotations",
                        json={"name": "baseline", "tags": ["sweep", " best ", "sweep"], "note": "the first"},
                        headers=token)
    assert saved.status_code == 200
    assert saved.json == {"name": "baseline", "tags": ["sweep", "best"], "note": "the first", "archived": False}
    client.post(f"/api/runs/{recorded.tstamps[2]}/annotations", json={"archived": True}, headers=token)
    body = client.get("/api/runs").json
    assert body["total"] == 3 and body["archived"] == 1
    rows = {r["tstamp"]: r for r in rows_of(body)}
    assert recorded.tstamps[2] not in rows
    assert rows[recorded.tstamps[0]]["run_name"] == "baseline" and rows[recorded.tstamps[0]]["run_tags"] == "sweep, best"
    assert client.get("/api/runs?where=" + quote("run_name == 'baseline'")).json["matched"] == 1
    everything = client.get("/api/runs?archived=1").json
    assert everything["total"] == 4 and rows_of(everything)[2]["archived"] is True
    # Only the name changes; the tags and note stay. And the store has it for other readers.
    client.post(f"/api/runs/{recorded.tstamps[0]}/annotations", json={"name": "renamed"}, headers=token)
    store = Store.open(db, readonly=True)
    try:
        run_id, = store._read("SELECT run_id FROM runs WHERE tstamp = ?", (recorded.tstamps[0],))[0]
        note = store.run_note(run_id)
        assert (note.name, note.tags, note.note) == ("renamed", ("sweep", "best"), "the first")
    finally:
        store.close()
    detail = client.get(f"/api/runs/{recorded.tstamps[0]}").json
    assert detail["annotations"]["name"] == "renamed"


def test_read_only_server_refuses_edits_with_a_hint(client, recorded):
    refused = client.post(f"/api/runs/{recorded.tstamps[0]}/annotations", json={"name": "x"})
    assert refused.status_code == 405 and "--allow-edit" in refused.json["error"]
    assert client.get("/api/version").json["edit"] is False
    page = client.get("/").get_data(as_text=True)
    assert '<meta name="flor-edit-token" content="">' in page
    assert re.search(r'src="static/app\.js\?v=[0-9a-f]{12}"', page)  # assets carry a hash of their content


def test_base_path_and_allowed_hosts_for_a_proxy(recorded):
    from werkzeug.test import Client

    from flor.ui.server import BasePath, normal_base_path

    data = UIData.open(recorded.db, recorded.root)
    data.load(wait=None)
    try:
        app = create_app(data, allowed_hosts=("notebooks.example.com",))
        client = Client(BasePath(app, normal_base_path("proxy/8080/")))
        assert client.get("/proxy/8080/api/version").status_code == 200
        assert client.get("/api/version").status_code == 200  # a proxy that strips the prefix
        moved = client.get("/proxy/8080")
        assert moved.status_code == 308 and moved.headers["Location"] == "8080/"
        assert client.get("/proxy/8080/", headers={"Host": "notebooks.example.com"}).status_code == 200
        refused = client.get("/proxy/8080/api/runs", headers={"Host": "evil.example:8080"})
        assert refused.status_code == 403 and "--allow-host evil.example" in refused.json["error"]
    finally:
        data.close()
    with pytest.raises(Exception, match="--base-path must be a URL path"):
        normal_base_path("/a/../b")

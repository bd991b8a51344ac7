"""flor ui before its pass over every run's logs is done (issue 32): the page's first rows show
their logged values, and the chart it opens on is drawn, from reads of the runs on screen
through the logs index by run and name (schema version 11), and they agree with what the pass
gives once it is done. The pass is held with a hook, so "before" is certain, not a race."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from flor.logged import LoggedValue
from flor.store import ReadPool, Store
from flor.store.schema import MIGRATIONS
from flor.ui.data import RunsTable

pytest.importorskip("flask")

from flor.ui.server import UIData, create_app  # noqa: E402


def build(path) -> list[int]:
    """Five runs: an epoch loop with a nested step loop (`loss` per step, `acc` per epoch, a
    text `note` at the end); run 2 has replayed epochs, the third of them stored before the
    first two (the last value follows loop position, not storage); run 4 logs only `loss`."""
    store = Store.open(path)
    ids = []
    for i in range(5):
        run_id, _ = store.insert_run(tstamp=f"2026-01-0{i + 1}T00:00:00", projid="p", filename="t.py", argv=["t.py"],
                                     cwd=".", started=time.time(), args=())
        contexts = [(1, None, None, "epoch", 0.0, 1.0, 3)] + [(2 + e, 1, e, "step", 0.0, 1.0, 4) for e in range(3)]
        logs = [("loss", 1.0 / (1 + e * 4 + s) + i, 2 + e, s) for e in range(3) for s in range(4)]
        if i != 4:
            logs += [("acc", 0.1 * e + i, 1, e) for e in range(3)] + [("note", f"run {i}", None, None)]
        store.write_batch(run_id, contexts, logs)
        ids.append(run_id)
    store.write_replayed(ids[2], [], [LoggedValue("acc", 9.5, "float", 1, 2)])
    store.write_replayed(ids[2], [], [LoggedValue("acc", 9.0, "float", 1, 0), LoggedValue("acc", 9.25, "float", 1, 1)])
    store.close()
    return ids


class HeldPass:
    """Holds RunsTable's pass over the logs until released."""

    def __init__(self, monkeypatch):
        self.release = threading.Event()
        original = RunsTable._scan_logs

        def held(table, top):
            assert self.release.wait(30), "the test never released the pass"
            return original(table, top)

        monkeypatch.setattr(RunsTable, "_scan_logs", held)


def rows_of(body):
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, row)) for row in body["rows"]], [dict(s) for s in body["sources"]]


def test_migration_11_indexes_logs_by_run_and_name(tmp_path):
    assert (11, "_v11_logs_by_run_name") in [(v, step.__name__) for v, step in MIGRATIONS]
    path = tmp_path / ".flor" / "flor.db"
    build(path)
    with sqlite3.connect(path) as connection:
        plan = connection.execute("EXPLAIN QUERY PLAN SELECT value FROM logs WHERE run_id = 1 AND name = 'loss' "
                                  "AND source = 'record' ORDER BY rowid DESC").fetchall()
    assert "logs_by_run_name" in str(plan) and "TEMP B-TREE" not in str(plan)
    # A store of version 10 (no index) gains it when next opened for writing.
    with sqlite3.connect(path) as connection:
        connection.execute("DROP INDEX logs_by_run_name")
        connection.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
    assert not ReadPool(path).has_run_name_index()
    Store.open(path).close()
    assert ReadPool(path).has_run_name_index()


def test_first_rows_and_the_opening_chart_come_before_the_pass_and_agree_with_it(tmp_path, monkeypatch):
    path = tmp_path / ".flor" / "flor.db"
    build(path)
    held = HeldPass(monkeypatch)
    data = UIData(ReadPool(path), tmp_path)
    try:
        data.load()
        client = create_app(data).test_client()
        early = client.get("/api/runs?sort=tstamp&desc=1").json
        assert early["loading"] and early["charts_ready"]
        assert early["metrics"] == ["loss", "acc"]  # the first rows' numeric names, in order
        early_rows, early_sources = rows_of(early)
        tstamps = [row["tstamp"] for row in early_rows]
        series = {name: client.get(f"/api/series?runs={','.join(tstamps)}&name={name}").json for name in ("loss", "acc")}
        assert data.table.loading  # all of the above answered while the pass was held

        held.release.set()
        assert data.table.wait_loaded(30)
        late = client.get("/api/runs?sort=tstamp&desc=1").json
        assert not late["loading"]
        late_rows, late_sources = rows_of(late)
        for name in ("loss", "acc", "note"):
            assert [row.get(name) for row in early_rows] == [row.get(name) for row in late_rows], name
        assert early_sources == late_sources
        by_run = dict(zip(tstamps, early_rows))
        assert by_run["2026-01-03T00:00:00"]["acc"] == 9.5  # the last epoch's replay, stored before epochs 0 and 1
        assert early_sources[tstamps.index("2026-01-03T00:00:00")] == {"acc": "replay"}
        assert by_run["2026-01-05T00:00:00"]["acc"] is None
        for name in ("loss", "acc"):
            again = client.get(f"/api/series?runs={','.join(tstamps)}&name={name}").json
            assert again["series"] == series[name]["series"], name
            assert again["x_label"] == series[name]["x_label"]
        lasts = {s["run"]: s["last"] for s in series["acc"]["series"]}
        assert lasts["2026-01-03T00:00:00"] == {"value": 9.5, "source": "replay"}
        assert len(series["loss"]["series"][0]["parts"][0]["x"]) == 12
    finally:
        held.release.set()
        data.close()


def test_a_store_without_the_index_waits_for_the_pass_as_before(tmp_path, monkeypatch):
    path = tmp_path / ".flor" / "flor.db"
    build(path)
    with sqlite3.connect(path) as connection:  # a version 10 store opened read-only: never migrated
        connection.execute("DROP INDEX logs_by_run_name")
    held = HeldPass(monkeypatch)
    data = UIData(ReadPool(path), tmp_path)
    try:
        data.load()
        body = create_app(data).test_client().get("/api/runs").json
        assert body["loading"] and not body["charts_ready"] and body["metrics"] == []
        assert "loss" not in [c["name"] for c in body["columns"]]  # no scan of every run's logs per page
    finally:
        held.release.set()
        data.close()


@pytest.mark.slow
def test_the_page_opens_on_its_chart_while_the_pass_is_held(recorded, monkeypatch):
    """In a real browser: the table's first rows with their last values and the chart of the
    first logged name over the runs shown, both drawn while the pass over the logs is held; the
    chart's note gives the last values the table shows after the pass."""
    from pathlib import Path

    CHROMIUM = "/usr/bin/chromium"
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (run .ci/ui-setup.sh)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from flor.ui.server import make_server

    from .test_browser import ARGS

    held = HeldPass(monkeypatch)
    server, app = make_server(recorded.db, recorded.root)
    table = app.config["FLOR_DATA"].table
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_default_timeout(15_000)
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_function("() => { const c = document.querySelector('.panel .chart'); "
                                   "return c && c.dataset.drawn === c.dataset.request && c.dataset.drawn !== '0'; }")
            assert table.loading  # drawn before the pass
            assert page.eval_on_selector(".panel", "p => p.dataset.metric") == "loss"
            assert page.eval_on_selector(".panel .chart", "c => Number(c.dataset.series)") == 4
            assert page.eval_on_selector(".panel .chart", "c => Number(c.dataset.points)") == 60 + 100 + 20 + 270
            early_note = page.locator(".chart-note").first.inner_text()
            assert "over the 4 run(s) shown in the table" in early_note and "Last values:" in early_note
            early_cells = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.innerText)")
            assert "reading logged values" in page.locator("#count").inner_text()

            held.release.set()
            sync_api.expect(page.locator("#count")).not_to_contain_text("reading logged values")
            page.wait_for_function("() => { const c = document.querySelector('.panel .chart'); "
                                   "return c.dataset.drawn === c.dataset.request; }")
            assert page.locator(".chart-note").first.inner_text() == early_note
            late_cells = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.innerText)")
            assert late_cells == early_cells  # the same columns and values before and after the pass
            browser.close()
        assert not errors, errors
    finally:
        held.release.set()
        server.shutdown()
        app.config["FLOR_DATA"].close()


def test_a_large_store_answers_the_first_page_without_waiting_for_the_pass(tmp_path, monkeypatch):
    from flor.ui import data as ui_data

    path = tmp_path / ".flor" / "flor.db"
    build(path)
    held = HeldPass(monkeypatch)
    data = UIData(ReadPool(path), tmp_path)
    waits: list = []
    try:
        data.load()
        assert data.table.quick_pass  # 5 runs: the first answer waits a moment for the whole table
        monkeypatch.setattr(ui_data, "QUICK_PASS_ROWS", 10)  # as if the store held more log rows
        original = RunsTable.wait_loaded
        monkeypatch.setattr(RunsTable, "wait_loaded", lambda table, timeout=None: waits.append(timeout)
                            or original(table, timeout))
        body = create_app(data).test_client().get("/api/runs").json
        assert body["loading"] and not waits
        assert [c["name"] for c in body["columns"]][-3:] == ["loss", "acc", "note"]
    finally:
        held.release.set()
        data.close()


def test_curves_of_many_runs_read_at_once_equal_those_read_run_by_run(tmp_path):
    """SeriesReader.curves (three reads for a page of runs) against _read_curve (several reads
    per run, with and without what the pass counted): recorded values in a nested loop, sparse,
    NaN, run-level ones, replayed epochs stored out of order, extracted values, a text name."""
    import math

    import numpy as np

    from flor.ui.curves import SeriesReader

    path = tmp_path / ".flor" / "flor.db"
    ids = build(path)
    store = Store.open(path)
    store.write_batch(ids[0], [], [("val", 3.0, 2, 1), ("val", math.nan, 3, 0), ("val", 99.0, None, None),
                                   ("lvl", 7, None, None), ("lvl", 8, None, None)])
    store.write_replayed(ids[1], [], [LoggedValue("val", 0.5, "float", 1, 1), LoggedValue("lvl", 4.0, "float", None, None)])
    store.write_extracted("ext", {ids[3]: [(1, 2, 0.3, "float"), (1, 0, 0.1, "float"), (None, None, 5, "int")],
                                  ids[4]: [(3, 1, 0.7, "float")]})
    store.close()
    db = ReadPool(path)
    try:
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        reader = SeriesReader(db, table)
        for name in ("loss", "acc", "val", "lvl", "ext", "note"):
            together = reader.curves(ids, name)
            for run_id in ids:
                for pair in (None, table.pair(run_id, name)):
                    alone = reader._read_curve(run_id, name, pair)
                    got = together[run_id]
                    where = (name, run_id, pair is None)
                    assert np.array_equal(got.x, alone.x) and np.array_equal(got.source, alone.source), where
                    assert np.array_equal(got.y, alone.y, equal_nan=True), where
                    assert (got.x_label, got.run_level) == (alone.x_label, alone.run_level), where
                    assert type(got.run_level) is type(alone.run_level), where
        assert together  # the text name: every run's curve is empty
    finally:
        db.close()


def test_closing_while_the_pass_runs_stops_it_before_the_connections_close(tmp_path, monkeypatch):
    # A server closed soon after it started (a benchmark's, a test's, Ctrl+C on a large store)
    # closed the connections under the pass's running queries: the interpreter crashed.
    from flor.ui import data as ui_data

    path = tmp_path / ".flor" / "flor.db"
    build(path)
    monkeypatch.setattr(ui_data, "_SCAN_SLICE", 1)  # one query per log row: the pass is still running below
    data = UIData(ReadPool(path), tmp_path)
    data.load()
    data.close()
    assert not data.table._scan.is_alive()
    assert data.table.load_error == "the pass over the logs was stopped" or not data.table.loading

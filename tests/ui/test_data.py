"""The read-only data layer on hand-made stores: x axes, gaps, run-level values, late args, names."""

from __future__ import annotations

import math
import time

import pytest

from flor.logged import LoggedValue
from flor.store import ReadPool, Store
from flor.ui.curves import SeriesReader
from flor.ui.data import RunsTable


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / ".flor" / "flor.db")
    yield store
    store.close()


def new_run(store, tstamp, args=()):
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="t.py", argv=["t.py"], cwd=".",
                                 started=time.time(), args=args)
    return run_id


def test_sparse_values_in_a_nested_loop_keep_their_step_positions(store):
    run_id = new_run(store, "2026-01-01T00:00:00")
    # One epoch loop instance (ctx 1) and one step loop instance per epoch (ctx 2, 3, 4), the
    # way flor.loop writes them: (ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, iterations).
    contexts = [(1, None, None, "epoch", 0.0, 1.0, 3)]
    logs = []
    for epoch in range(3):
        step_loop = 2 + epoch
        contexts.append((step_loop, 1, epoch, "step", 0.0, 1.0, 10))
        for step in range(10):
            if step % 3 == 0:
                logs.append(("val", float(epoch * 10 + step), step_loop, step))
            logs.append(("loss", math.nan if step == 5 else 1.0, step_loop, step))
        logs.append(("acc", epoch / 10, 1, epoch))
    logs.append(("val", 99.0, None, None))       # a run-level value under a looped name
    logs.append(("label", "text", None, None))
    store.write_batch(run_id, contexts, logs)
    db = ReadPool(store.path)
    try:
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        reader = SeriesReader(db, table)
        val = reader.series(run_id, "val")
        assert val["x_label"] == "step (counted across epoch)"
        assert val["parts"][0]["x"] == [0, 3, 6, 9, 10, 13, 16, 19, 20, 23, 26, 29]
        assert val["parts"][0]["y"][:3] == [0.0, 3.0, 6.0] and val["run_level"] == 99.0
        loss = reader.series(run_id, "loss")
        assert loss["parts"][0]["x"] == list(range(30)) and loss["parts"][0]["y"][5] is None
        acc = reader.series(run_id, "acc")
        assert acc["x_label"] == "epoch" and acc["parts"][0]["x"] == [0, 1, 2]
        label = reader.series(run_id, "label")
        assert label["parts"] == [] and label["x_label"] == "run"
        assert table.metric_names() == ["loss", "acc", "val"]  # in the order they were last logged
        row = table.rows()[0]
        assert row["val"] == 99.0 and row["loss"] == 1.0 and row["label"] == "text" and row["status"] == "running"
    finally:
        db.close()


def test_late_args_new_runs_and_name_clashes_appear_on_refresh(store):
    first = new_run(store, "2026-01-01T00:00:00", [("lr", 0.1, "float"), ("status", "x", "str")])
    db = ReadPool(store.path)
    try:
        table = RunsTable(db)
        assert table.refresh() is True and table.wait_loaded() and table.refresh() is True  # the scan is news
        assert table.refresh() is False
        names = [name for name, _ in table.columns()]
        assert names == ["tstamp", "filename", "status", "duration", "commit", "lr", "arg_status"]
        assert table.rows()[0]["arg_status"] == "x" and table.rows()[0]["status"] == "running"
        store._write(lambda c: c.execute("INSERT INTO args(run_id, name, value, vtype) VALUES (?, 'late', 7, 'int')", (first,)))
        second = new_run(store, "2026-01-02T00:00:00", [("lr", 0.2, "float")])
        store.write_batch(second, [], [("acc", 0.5, None, None)], run_fields={"status": "finished", "ended": time.time()})
        assert table.refresh() is True
        rows = table.rows()
        assert [r["tstamp"] for r in rows] == ["2026-01-01T00:00:00", "2026-01-02T00:00:00"]
        assert rows[0]["late"] == 7 and rows[1]["late"] is None
        assert rows[1]["acc"] == 0.5 and rows[1]["status"] == "finished" and rows[1]["duration"] >= 0
        store.write_batch(second, [], [("acc", 0.75, None, None)])
        table.refresh()
        assert table.rows()[1]["acc"] == 0.75  # an update of an existing row, same columns
        assert table.run_id("2026-01-02") == second
    finally:
        db.close()


def test_last_values_follow_loop_position_as_replays_and_extractions_arrive(store):
    # The runs table after its first pass reads only new rows: a replay over earlier epochs
    # (stored after later ones) must not become the last value, and extracting again replaces
    # the extracted values (store/lastvalue.py).
    run_id = new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run_id, [(1, None, None, "epoch", 0.0, 1.0, 3)], [("loss", 1.0 - e / 10, 1, e) for e in range(3)])
    store.write_replayed(run_id, [], [LoggedValue("val", 0.7, "float", 1, 2)])
    db = ReadPool(store.path)
    try:
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        assert table.rows()[0]["val"] == 0.7
        store.write_replayed(run_id, [], [LoggedValue("val", 1.1, "float", 1, 0), LoggedValue("val", 0.9, "float", 1, 1)])
        store.write_extracted("acc", {run_id: [(1, e, 0.5 + e / 10, "float") for e in range(3)]})
        table.refresh()
        row = table.rows()[0]
        assert row["val"] == 0.7 and row["_sources"] == {"val": "replay", "acc": "extract"}
        assert row["acc"] == pytest.approx(0.7)
        store.write_extracted("acc", {run_id: [(1, 0, 0.25, "float")]})  # a narrower pattern: one match
        table.refresh()
        assert table.rows()[0]["acc"] == 0.25 and table.pair(run_id, "acc").extract_count == 1
        reader = SeriesReader(db, table)
        parts = {part["source"]: part for part in reader.series(run_id, "val")["parts"]}
        assert list(parts) == ["replay"] and parts["replay"]["x"] == [0, 1, 2]
        assert reader.series(run_id, "val")["last"] == {"value": 0.7, "source": "replay"}
        (part,) = reader.series(run_id, "acc")["parts"]
        assert part["source"] == "extract" and part["y"] == [0.25]
    finally:
        db.close()


def test_x_by_step_and_time_and_gaps_are_not_bridged(store):
    run_id = new_run(store, "2026-01-02T00:00:00")
    t0 = 0.0  # loop times are kept in seconds since the run started
    contexts = [(1, None, None, "epoch", t0, t0 + 40.0, 4)]
    logs = []
    for epoch in range(4):
        contexts.append((2 + epoch, 1, epoch, "step", t0 + 10 * epoch, t0 + 10 * epoch + 10, 5))
        for step in range(5):
            logs.append(("loss", 1.0 / (1 + step), 2 + epoch, step))
        if epoch != 2:  # epoch 2's value withheld (drift): a gap, not a line across it
            logs.append(("acc", epoch / 10, 1, epoch))
    store.write_batch(run_id, contexts, logs)
    db = ReadPool(store.path)
    try:
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        reader = SeriesReader(db, table)
        acc = reader.series(run_id, "acc")
        (part,) = acc["parts"]
        assert part["x"] == [0, 1, 2, 3] and part["y"] == [0.0, 0.1, None, 0.3] and part["gaps"] == 1
        by_step = reader.series(run_id, "acc", x_mode="step")
        assert by_step["x_label"] == "step (step counted across epoch)" and by_step["integer_x"]
        assert by_step["parts"][0]["x"] == [4, 9, 14, 19]  # the last step of each epoch, the gap half way
        assert reader.series(run_id, "loss", x_mode="step")["parts"][0]["x"] == list(range(20))
        by_time = reader.series(run_id, "loss", x_mode="time")
        assert not by_time["integer_x"] and by_time["x_label"].startswith("wall time")
        assert by_time["parts"][0]["x"][:2] == pytest.approx([2.0, 4.0])  # steps spread evenly over their epoch
        with pytest.raises(Exception, match="x must be one of"):
            reader.series(run_id, "loss", x_mode="wall")
    finally:
        db.close()


def test_annotations_table_comes_with_migration_10_and_an_older_store_reads_as_none(tmp_path):
    import sqlite3

    from flor.store import SCHEMA_VERSION
    from flor.store.schema import MIGRATIONS

    assert (10, "_v10_run_notes") in [(version, step.__name__) for version, step in MIGRATIONS]
    assert MIGRATIONS[-1][0] == SCHEMA_VERSION
    path = tmp_path / ".flor" / "flor.db"
    store = Store.open(path)
    run_id = new_run(store, "2026-01-03T00:00:00")
    with pytest.raises(Exception, match="a run's name must be at most"):
        store.annotate_run(run_id, name="x" * 201)
    with pytest.raises(Exception, match="no run with id"):
        store.annotate_run(run_id + 1, name="x")
    assert store.annotate_run(run_id, archived=True).archived is True
    store.close()
    # An older database (before the table) opened read-only is not migrated: no annotations.
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE run_notes")
        connection.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db = ReadPool(path)
    try:
        assert db.run_notes() == []
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        assert "run_name" not in [name for name, _ in table.columns()]
    finally:
        db.close()
    store = Store.open(path)  # opened for writing (flor ui --allow-edit): the table is back
    try:
        assert store.run_note(run_id) is None
    finally:
        store.close()


def test_a_crashed_epoch_is_placed_by_step_and_time_at_the_run_end(store):
    run_id = new_run(store, "2026-01-04T00:00:00")
    # The epoch loop a crash cut short: no end, no count; its step loop ran 5 steps.
    contexts = [(1, None, None, "epoch", 0.0, None, 0), (2, 1, 0, "step", 0.0, 1.0, 5)]
    logs = [("loss", 1.0, 2, s) for s in range(5)] + [("acc", 0.5, 1, 0)]
    store.write_batch(run_id, contexts, logs)
    started = store.run(run_id).started
    store.update_run(run_id, status="failed", ended=started + 3.0)
    db = ReadPool(store.path)
    try:
        table = RunsTable(db)
        table.refresh()
        table.wait_loaded()
        reader = SeriesReader(db, table)
        assert reader.series(run_id, "acc", x_mode="step")["parts"][0]["x"] == [4]
        assert reader.series(run_id, "acc", x_mode="time")["parts"][0]["x"] == pytest.approx([3.0])
    finally:
        db.close()

import subprocess
import sys
import time

import pytest

from flor.errors import RunNotFoundError, StoreError
from flor.store import Store


def _run(store, tstamp="2026-01-01T00:00:00", **kw):
    return store.insert_run(
        tstamp=tstamp, projid="p", filename="t.py", argv=["t.py"], cwd=".", started=time.time(),
        args=[("lr", 0.1, "float")], **kw,
    )


def test_schema_and_wal(tmp_path):
    store = Store.open(tmp_path / ".flor" / "flor.db")
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run_id, tstamp = _run(store)
    assert store.run(run_id).status == "running"
    assert store.args(run_id) == {"lr": 0.1}


def test_same_second_runs_get_distinct_tstamps(tmp_path):
    store = Store.open(tmp_path / "db")
    first = _run(store)[1]
    second = _run(store)[1]
    assert first == "2026-01-01T00:00:00" and second.startswith(first + ".") and second != first
    assert store.find_run(first).tstamp == first


def test_find_run_by_prefix(tmp_path):
    store = Store.open(tmp_path / "db")
    _run(store, "2026-01-01T00:00:00")
    _run(store, "2026-01-02T00:00:00")
    assert store.find_run("2026-01-02").tstamp == "2026-01-02T00:00:00"
    with pytest.raises(RunNotFoundError, match="matches 2 runs"):
        store.find_run("2026-01-0")
    with pytest.raises(RunNotFoundError, match="no run"):
        store.find_run("2027")


def test_batch_write_and_read(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    store.write_batch(
        run_id,
        [(1, None, None, "epoch", 0.0, None, None), (1, None, None, "epoch", 0.0, 2.0, 1)],
        [("loss", 0.5, 1, 0), ("acc", 1, None, None), ("name", "x", None, None), ("nan", float("nan"), 1, 0)],
        special=[(None, None, "flag", 1, "bool")],
        iterations=[(1, 0, 0.0)],
    )
    rows = store.logs(run_id)
    assert rows[:3] == [(1, 0, "loss", 0.5, "float", "record"), (None, None, "acc", 1, "int", "record"),
                        (None, None, "name", "x", "str", "record")]
    assert rows[3][4] == "float" and rows[3][3] is None  # NaN: SQLite keeps NULL, the tag keeps the type
    assert rows[4] == (None, None, "flag", 1, "bool", "record")
    assert store.contexts(run_id) == [(1, None, None, "epoch", 0.0, 2.0, 1)]
    assert store.iterations(run_id) == [(1, 0, 0.0)]


def test_huge_ints_fall_back_to_encoding(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    store.write_batch(run_id, [], [("big", 2**70, None, None), ("small", 3, None, None)])
    assert [(r[2], r[3], r[4]) for r in store.logs(run_id)] == [("big", str(2**70), "int"), ("small", 3, "int")]


def test_replayed_logs_are_stored_once(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    for value in (1.0, 2.0):
        store.write_replayed(run_id, [], [(1, 0, "norm", value, "float"), (None, None, "final", value, "float")])
    rows = store.logs(run_id, source="replay")
    assert sorted(rows, key=str) == sorted(
        [(1, 0, "norm", 2.0, "float", "replay"), (None, None, "final", 2.0, "float", "replay")], key=str)


def test_reap_marks_dead_processes_killed(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    store.connection.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (child.pid, run_id))
    assert store.reap_killed() == 1
    assert store.run(run_id).status == "killed"


def test_readonly_refuses_writes(tmp_path):
    path = tmp_path / "db"
    Store.open(path).close()
    reader = Store.open(path, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        reader.execute_readonly("DELETE FROM runs")
    assert reader.execute_readonly("SELECT COUNT(*) FROM runs")[1] == [(0,)]


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no flor database"):
        Store.open(tmp_path / "nothing.db", readonly=True)


def test_corrupt_database_names_the_file(tmp_path):
    path = tmp_path / "flor.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="flor.db"):
        Store.open(path)


def test_a_database_of_a_newer_flor_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "db"
    Store.open(path).close()
    import sqlite3

    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="made by a newer flor .*upgrade flor"):
            Store.open(path, readonly=readonly)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("99",)
    assert path.read_bytes() == before


def test_an_older_database_is_migrated_in_order(tmp_path):
    """A version-1 database (no log blocks, no git_head columns) keeps its rows and gains the rest."""
    import sqlite3

    from flor.store import schema

    path = tmp_path / "db"
    old_runs = schema.SCHEMA.split("CREATE TABLE IF NOT EXISTS args")[0]
    old_runs = old_runs.replace(",\n    git_head TEXT,\n    git_dirty INTEGER", "")
    with sqlite3.connect(path) as connection:
        connection.executescript(old_runs + """
            CREATE TABLE logs(run_id INTEGER NOT NULL, ctx_id INTEGER, iteration INTEGER, name TEXT NOT NULL,
                              value, vtype TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'record');
            INSERT INTO meta VALUES ('schema_version', '1');
            INSERT INTO runs(tstamp, projid, filename, argv, cwd, status, started) VALUES ('t', 'p', 'f', '[]', '.', 'finished', 0);
            INSERT INTO logs VALUES (1, NULL, NULL, 'acc', 0.5, 'float', 'record');
        """)
    store = Store.open(path)
    assert store.runs()[0].git_head is None and store.runs()[0].git_dirty is None
    assert store.log_blocks("acc") is None  # the old row is loose: read row by row
    assert store.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(schema.SCHEMA_VERSION),)
    assert [m[0] for m in schema.MIGRATIONS] == sorted(m[0] for m in schema.MIGRATIONS)

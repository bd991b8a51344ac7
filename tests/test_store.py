import sqlite3
import subprocess
import sys
import time

import pytest

from flor.logged import LoggedValue
from flor.errors import RunNotFoundError, StoreError, UsageError
from flor.store import Store


def _run(store, tstamp="2026-01-01T00:00:00", **kw):
    return store.insert_run(
        tstamp=tstamp, projid="p", filename="t.py", argv=["t.py"], cwd=".", started=time.time(),
        args=[("lr", 0.1, "float")], **kw,
    )


@pytest.mark.slow
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
        special=[LoggedValue("flag", 1, "bool", None, None)],
        iterations=[(1, 0, 0.0)],
    )
    rows = store.logs(run_id)
    assert rows[:3] == [LoggedValue("loss", 0.5, "float", 1, 0), LoggedValue("acc", 1, "int", None, None),
                        LoggedValue("name", "x", "str", None, None)]
    assert rows[3].vtype == "float" and rows[3].value is None  # NaN: SQLite keeps NULL, the tag keeps the type
    assert rows[4] == LoggedValue("flag", 1, "bool", None, None, "record")
    (instance,) = store.contexts(run_id)
    assert (instance.ctx_id, instance.loop_name, instance.t_end, instance.iterations) == (1, "epoch", 2.0, 1)
    (start,) = store.iterations(run_id)
    assert (start.ctx_id, start.iteration, start.t) == (1, 0, 0.0)


def test_huge_ints_fall_back_to_encoding(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    store.write_batch(run_id, [], [("big", 2**70, None, None), ("small", 3, None, None)])
    assert [(r.name, r.value, r.vtype) for r in store.logs(run_id)] == [("big", str(2**70), "int"), ("small", 3, "int")]


def test_replayed_logs_are_stored_once(tmp_path):
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    for value in (1.0, 2.0):
        store.write_replayed(run_id, [], [LoggedValue("norm", value, "float", 1, 0),
                                          LoggedValue("final", value, "float", None, None)])
    rows = store.logs(run_id, source="replay")
    assert sorted(rows, key=str) == sorted(
        [LoggedValue("norm", 2.0, "float", 1, 0, "replay"), LoggedValue("final", 2.0, "float", None, None, "replay")],
        key=str)


@pytest.mark.slow
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
    with pytest.raises(UsageError, match="read-only"):
        reader.execute_readonly("DELETE FROM runs")
    assert reader.execute_readonly("SELECT COUNT(*) FROM runs")[1] == [(0,)]


def _snapshot(path):
    """Everything a write could change: schema, rows, journal mode, and the files nearby."""
    with sqlite3.connect(path) as db:
        dump = list(db.iterdump())
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    return dump, mode, sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("sql, refused", [
    ("ATTACH DATABASE '{out}' AS x", "ATTACH"),
    ("VACUUM INTO '{out}'", "VACUUM"),
    ("-- a comment first\nvacuum", "VACUUM"),
    ("PRAGMA writable_schema = 1", "PRAGMA writable_schema = 1"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = DELETE"),
    ("PRAGMA query_only = 0", "PRAGMA query_only = 0"),
    ("SELECT * FROM pragma_user_version(7)", None),  # a table-valued PRAGMA cannot set either
    ("SELECT load_extension('{out}')", "the function load_extension()"),
    ("INSERT INTO runs(tstamp) VALUES ('x')", "INSERT"),
    ("CREATE TEMP TABLE t(x)", "CREATE"),
    ("WITH gone AS (SELECT run_id FROM runs) DELETE FROM runs WHERE run_id IN gone", "DELETE"),
    ("WITH c AS (SELECT 1) UPDATE runs SET pid = 0", "UPDATE"),
    ("DROP TABLE logs", "DROP"),
    ("BEGIN IMMEDIATE", "BEGIN"),
    ("DETACH DATABASE main", "DETACH"),
])
def test_free_sql_refuses_all_but_reads(tmp_path, sql, refused):
    path = tmp_path / "flor.db"
    store = Store.open(path)
    _run(store)
    store.close()
    before = _snapshot(path)
    reader = Store.open(path, readonly=True)
    if hasattr(reader.connection, "enable_load_extension"):
        # Even with extension loading switched on, the authorizer refuses load_extension.
        reader.connection.enable_load_extension(True)
    out = tmp_path / "escaped.db"
    with pytest.raises(UsageError) as caught:
        reader.execute_readonly(sql.format(out=out))
    message = str(caught.value)
    assert "\n" not in message
    if refused is not None:
        assert message == f"flor query is read-only: {refused} is not allowed; use SELECT statements"
    reader.close()
    assert not out.exists() and _snapshot(path) == before


def test_free_sql_still_reads_everything(tmp_path):
    path = tmp_path / "flor.db"
    store = Store.open(path)
    _run(store)
    store.close()
    reader = Store.open(path, readonly=True)
    assert reader.execute_readonly("SELECT tstamp FROM runs")[1] == [("2026-01-01T00:00:00",)]
    assert reader.execute_readonly(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT SUM(x) FROM c")[1] == [(6,)]
    assert reader.execute_readonly("SELECT args.value, j.value FROM args, json_each('[1, 2]') AS j WHERE name = 'lr'")[1] == [(0.1, 1), (0.1, 2)]
    assert ("run_id",) in [r[1:2] for r in reader.execute_readonly("PRAGMA table_info(runs)")[1]]
    assert reader.execute_readonly("SELECT name FROM pragma_table_info('args') LIMIT 1")[1] == [("run_id",)]
    assert reader.execute_readonly("PRAGMA journal_mode")[1] == [("wal",)]
    assert reader.execute_readonly("SELECT COUNT(*) FROM sqlite_master WHERE name = 'logs'")[1] == [(1,)]
    # The authorizer is for free SQL only: the store's own reads afterwards are unaffected.
    assert reader.runs()[0].tstamp == "2026-01-01T00:00:00"
    with pytest.raises(UsageError, match="one statement"):
        reader.execute_readonly("SELECT 1; SELECT 2")
    reader.close()


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

    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    # Closed here, so that its write is in the file now: left open, it is closed whenever Python
    # drops it (on 3.10, at the next connect below), and that close copies the WAL into the file.
    connection.close()
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


def test_a_failed_read_of_log_names_is_raised_not_taken_for_an_old_database(tmp_path):
    # Only a database from before blocks (no log_names table) falls back to rows; a read that
    # fails for another reason used to fall back silently, reading the same bad file again.
    store = Store.open(tmp_path / "db")
    run_id, _ = _run(store)
    store.write_batch(run_id, [], [("acc", 0.5, 1, 0)])
    assert store.log_blocks("acc")

    class FailingOnLogNames:
        def __init__(self, real):
            self.real = real

        def execute(self, sql, *params):
            if "FROM log_names" in sql:
                raise sqlite3.OperationalError("disk I/O error")
            return self.real.execute(sql, *params)

    real = store.connection
    store.connection = FailingOnLogNames(real)
    try:
        with pytest.raises(StoreError, match="disk I/O error"):
            store.log_blocks("acc")
    finally:
        store.connection = real
    real.execute("DROP TABLE log_names")
    assert store.log_blocks("acc") is None  # the old schema's absence still reads row by row
    store.close()


def test_an_unreadable_database_is_one_message_everywhere(tmp_path):
    # Five readers said it five ways; now every reader raises store.connection.unreadable's line.
    from flor.store import ReadPool

    bad = tmp_path / "flor.db"
    bad.write_bytes(b"this is not a database " * 200)
    attempts = [lambda: Store.open(bad, readonly=True), lambda: Store.open(bad, create=False),
                lambda: ReadPool(bad).read("SELECT 1")]
    for attempt in attempts:
        with pytest.raises(StoreError) as caught:
            attempt()
        text = str(caught.value)
        assert text.startswith(f"cannot open the flor database {bad}: file is not a database;"), text
        assert text.endswith("`flor doctor` checks it and `flor doctor --repair` repairs it") and "\n" not in text

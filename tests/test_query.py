"""The dataframe pivot and read-only SQL, on stores written through the library."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import flor
from flor.logged import LoggedValue
from flor.errors import FlorWarning, StoreError, UsageError
from flor.reading.query import BASE_COLUMNS, dataframe, query
from flor.store import Store


def _record(root, args, contexts, logs, special, tstamp):
    store = Store.open(root / ".flor" / "flor.db")
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="t.py", argv=[], cwd=".",
                                 started=time.time(), args=args)
    store.write_batch(run_id, contexts, logs, special=special, run_fields={"status": "finished", "ended": time.time()})
    store.close()


@pytest.fixture
def two_runs(in_project):
    root = in_project.root
    # One epoch loop (ctx 1) with a step loop per epoch (ctx 2 in epoch 0, ctx 3 in epoch 1).
    contexts = [(1, None, None, "epoch", 0, 1, 2), (2, 1, 0, "step", 0, 1, 2), (3, 1, 1, "step", 0, 1, 2)]
    logs = [("loss", 0.9, 2, 0), ("loss", 0.8, 2, 1), ("val", 0.5, 1, 0),
            ("loss", 0.7, 3, 0), ("loss", 0.6, 3, 1), ("val", 0.6, 1, 1), ("accuracy", 0.9, None, None)]
    special = [LoggedValue("note", '{"k": [1, 2]}', "json", None, None)]
    _record(root, [("hidden", 500, "int"), ("opt", "adam", "str")], contexts, logs, special, "2026-01-01T00:00:00")
    _record(root, [("hidden", 75, "int"), ("opt", "sgd", "str")], contexts[:2], logs[:3], [], "2026-01-02T00:00:00")
    return in_project


def test_run_level_values_one_row_per_run(two_runs):
    df = dataframe("hidden", "accuracy")
    assert list(df.columns) == ["projid", "tstamp", "filename", "git_head", "git_dirty", "hidden", "accuracy"]
    assert df["hidden"].tolist() == [500, 75]
    assert df["accuracy"].iloc[0] == 0.9 and pd.isna(df["accuracy"].iloc[1])


def test_nested_values_broadcast_outer_ones(two_runs):
    df = dataframe("hidden", "loss", "val")
    assert list(df.columns) == ["projid", "tstamp", "filename", "git_head", "git_dirty", "epoch", "step", "hidden", "loss", "val"]
    assert len(df) == 6
    first = df[df.tstamp == "2026-01-01T00:00:00"]
    assert first["loss"].tolist() == [0.9, 0.8, 0.7, 0.6]
    assert first["val"].tolist() == [0.5, 0.5, 0.6, 0.6]
    assert first["epoch"].tolist() == [0, 0, 1, 1] and first["step"].tolist() == [0, 1, 0, 1]
    assert df["loss"].dtype == float


def test_json_values_decode(two_runs):
    df = dataframe("note")
    assert df["note"].iloc[0] == {"k": [1, 2]}


def test_all_names_by_default(two_runs):
    df = dataframe()
    assert {"hidden", "opt", "loss", "val", "accuracy", "note"} <= set(df.columns)


def test_replayed_and_recorded_share_rows(two_runs):
    store = Store.open(two_runs.root / ".flor" / "flor.db")
    store.write_replayed(1, [], [LoggedValue("norm", 3.0, "float", 1, 0), LoggedValue("norm", 4.0, "float", 1, 1)])
    store.close()
    df = dataframe("val", "norm")
    first = df[df.tstamp == "2026-01-01T00:00:00"]
    assert first[["epoch", "val", "norm"]].values.tolist() == [[0, 0.5, 3.0], [1, 0.6, 4.0]]


def test_query_is_read_only(two_runs):
    assert query("SELECT COUNT(*) AS n FROM runs")["n"].tolist() == [2]
    with pytest.raises(UsageError, match="read-only"):
        query("DELETE FROM runs")
    assert query("SELECT COUNT(*) AS n FROM runs")["n"].tolist() == [2]


def test_bad_names_and_missing_store(in_project):
    with pytest.raises(StoreError, match="no flor runs"):
        flor.dataframe("loss")
    with pytest.raises(UsageError):
        dataframe(3)


def test_int_values_that_some_rows_lack_stay_exact_ints(two_runs):
    assert dataframe("hidden")["hidden"].dtype == "int64"  # complete: plain int64 as before
    # Only a third run has the arg "extra" and logs "seed".
    _record(two_runs.root, [("extra", 2**62 + 1, "int")], [], [("seed", 2**62 + 3, None, None)], [], "2026-01-03T00:00:00")
    df = dataframe("extra", "seed", "hidden", "accuracy")
    assert str(df["extra"].dtype) == "Int64" and str(df["seed"].dtype) == "Int64"
    assert df["extra"].tolist() == [pd.NA, pd.NA, 2**62 + 1] and df["seed"].tolist() == [pd.NA, pd.NA, 2**62 + 3]
    assert df["accuracy"].dtype == float  # floats stay floats, NaN where missing
    only = dataframe("seed", "loss")  # merged with a nested name: rows without a seed get <NA>
    assert str(only["seed"].dtype) == "Int64" and only["seed"].dropna().tolist() == [2**62 + 3]


def test_unknown_names_are_named(two_runs):
    with pytest.raises(UsageError) as caught:
        dataframe("nosuch", "other")
    assert str(caught.value) == "no arg or log named 'nosuch' or 'other' (known: hidden, opt, accuracy, loss, note, val)"
    with pytest.warns(FlorWarning, match=r"^no arg or log named 'nosuch' \(known: .*\); left out of the table$"):
        df = dataframe("hidden", "nosuch")
    assert list(df.columns) == ["projid", "tstamp", "filename", "git_head", "git_dirty", "hidden"]


RUNAWAY_PEAK = """
import os
from flor.errors import UsageError
from flor.reading.query import query
os.environ["FLOR_QUERY_MAX_BYTES"] = str(8 << 20)
os.environ["FLOR_QUERY_MAX_S"] = "1"
for sql in ("SELECT randomblob(900000000) AS a, randomblob(900000000) AS b",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, 'some text' AS t FROM c"):
    try:
        query(sql)
    except UsageError:
        pass
    else:
        raise SystemExit("no limit stopped " + sql)
# This process's own peak: VmHWM, not ru_maxrss, which a child spawned by a large process starts
# from its parent's peak (Linux folds the parent's high-water mark in at exec).
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


@pytest.mark.slow
def test_runaway_queries_stop_in_one_line(two_runs, monkeypatch):
    # Issue 26: a recursive CTE grew without bound (2.6 GB in 40 s); randomblob(9e8) twice gave a
    # MemoryError traceback.
    with pytest.raises(UsageError, match="a value over 64 MiB"):
        query("SELECT randomblob(900000000) AS a, randomblob(900000000) AS b")
    monkeypatch.setenv("FLOR_QUERY_MAX_BYTES", str(8 << 20))
    with pytest.raises(UsageError, match="the result is over 8 MiB"):
        query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, 'some text' AS t FROM c")
    monkeypatch.setenv("FLOR_QUERY_MAX_S", "1")
    started = time.monotonic()
    with pytest.raises(UsageError, match="stopped after 1 s"):
        query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c")
    assert time.monotonic() - started < 10
    # The peak memory is measured in a fresh process: this one's peak is whatever the tests before
    # it held (1.9 GB after the whole suite).
    env = {**os.environ, "PYTHONPATH": str(Path(flor.__file__).resolve().parents[1])}
    child = subprocess.run([sys.executable, "-c", RUNAWAY_PEAK], capture_output=True, text=True, timeout=120, env=env)
    assert child.returncode == 0, child.stderr
    assert int(child.stdout.split()[-1]) < 1_500_000  # KiB: no gigabytes held
    assert query("SELECT COUNT(*) AS n FROM runs")["n"].tolist() == [2]  # the connection's limits put back


CLOSURE = """
import flor
w = 1.0
for epoch in flor.loop("epoch", range(2)):
    for step in flor.loop("step", range(3)):
        for k in range(4):                          # an LBFGS closure: evaluated 4 times per step
            flor.log("closure_loss", w * (k + 1) + step)
            flor.log("phase", f"eval{k}")           # not a number: read from the rows, not blocks
        w *= 0.5
        flor.log("w", w)
    flor.log("epoch_w", w)
"""


@pytest.mark.slow
def test_a_name_logged_several_times_in_one_context_keeps_every_value(in_project):
    in_project.write("train.py", CLOSURE)
    in_project.run("train.py")
    df = dataframe("closure_loss", "phase", "w", "epoch_w")
    assert list(df.columns) == [*BASE_COLUMNS, "epoch", "step", "seq", "closure_loss", "phase", "w", "epoch_w"]
    assert len(df) == 2 * 3 * 4 and df["seq"].tolist() == [0, 1, 2, 3] * 6
    assert df["closure_loss"].tolist()[:8] == [1.0, 2.0, 3.0, 4.0, 1.5, 2.0, 2.5, 3.0]
    assert df["phase"].tolist()[:4] == ["eval0", "eval1", "eval2", "eval3"]
    # A name logged once per context fills each of its rows, as an epoch's value fills its steps.
    assert df["w"].tolist()[:5] == [0.5] * 4 + [0.25] and set(df["epoch_w"][:12]) == {0.125}
    assert "seq" not in dataframe("w", "epoch_w").columns  # no repeats asked for: no seq column


def test_a_replayed_value_is_not_counted_as_a_repeat_of_the_recorded_one(two_runs):
    from flor.reading.query import _ordinals

    store = Store.open(two_runs.root / ".flor" / "flor.db")
    store.write_replayed(1, [], [LoggedValue("val", 0.5, "float", 1, 0)])  # the recorded value, replayed again
    store.close()
    assert "seq" not in dataframe("val").columns
    order = np.arange(4)
    rank, loops, replayed = np.zeros(4), [np.array([0.0, 0.0, 0.0, 1.0])], np.array([False, False, True, False])
    assert _ordinals(rank, loops, replayed, order).tolist() == [0, 1, 0, 0]


def test_a_store_that_cannot_mark_dead_runs_is_read_and_says_so(two_runs, monkeypatch):
    # Marking runs whose process is gone is the reader's write; when it fails (a writer holds the
    # lock too long, a read-only copy) the table is still read, and a warning says the statuses
    # are as stored. It used to be dropped without a word.
    def locked(self):
        raise StoreError("cannot write the flor database: database is locked")

    monkeypatch.setattr(Store, "reap_killed", locked)
    with pytest.warns(FlorWarning, match="could not be marked killed.*database is locked"):
        df = dataframe("hidden")
    assert df["hidden"].tolist() == [500, 75]


def test_no_database_yet_is_one_error(in_project):
    with pytest.raises(StoreError, match="no flor runs recorded"):
        dataframe("hidden")

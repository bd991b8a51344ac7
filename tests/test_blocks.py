"""Columnar log blocks: the dataframe read from blocks equals the one read row by row from ``logs``."""

import math
import sqlite3
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flor.logged import LoggedValue
from flor.store import blocks
from flor.errors import FlorWarning, UsageError
from flor.reading.query import dataframe
from flor.store import Store

CONTEXTS = [(1, None, None, "epoch", 0, 1, 3), (2, 1, 0, "step", 0, 1, 2), (3, 1, 1, "step", 0, 1, 2)]


def _store(root) -> Store:
    return Store.open(root / ".flor" / "flor.db")


def _new_run(store: Store, tstamp: str) -> int:
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="t.py", argv=[], cwd=".", started=time.time(), args=[])
    return run_id


def _rowwise(root, *names):
    """The same dataframe with the blocks hidden, so every name is read from ``logs``."""
    db = sqlite3.connect(root / ".flor" / "flor.db")
    saved = db.execute("SELECT name, loose FROM log_names").fetchall()
    db.execute("UPDATE log_names SET loose = loose + 1")
    db.commit()
    try:
        return dataframe(*names)
    finally:
        db.executemany("UPDATE log_names SET loose = ? WHERE name = ?", [(loose, name) for name, loose in saved])
        db.commit()
        db.close()


def _uses_blocks(root, name) -> bool:
    store = _store(root)
    try:
        return bool(store.log_blocks(name))
    finally:
        store.close()


def test_build_groups_by_name_and_leaves_other_types_loose():
    built, loose = blocks.build([
        ("loss", 0.5, 2, 0), ("n", 3, None, None), ("loss", 1, 2, 1), ("note", "x", None, None), ("big", 2**70, 1, 0),
    ])
    by_name = {b[0]: b for b in built}
    assert set(by_name) == {"loss", "n"} and loose == {"loss": 0, "n": 0, "note": 1, "big": 1}
    columns = blocks.read([(7, *by_name["loss"][1:])])
    assert columns["value"].tolist() == [0.5, 1.0] and columns["iteration"].tolist() == [0.0, 1.0]
    ints = blocks.read([(7, *by_name["n"][1:])])
    assert ints["value"].dtype == np.int64 and math.isnan(ints["ctx_id"][0])


def test_plain_numbers_are_read_from_blocks(in_project):
    store = _store(in_project.root)
    run = _new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run, CONTEXTS, [("loss", 0.9, 2, 0), ("loss", 0.8, 2, 1), ("acc", 1, None, None)])
    store.write_batch(run, [], [("loss", 0.7, 3, 0), ("loss", float("nan"), 3, 1)])
    store.close()
    assert _uses_blocks(in_project.root, "loss") and _uses_blocks(in_project.root, "acc")
    fast = dataframe("loss", "acc")
    pd.testing.assert_frame_equal(fast, _rowwise(in_project.root, "loss", "acc"))
    assert fast["loss"].tolist()[:3] == [0.9, 0.8, 0.7] and math.isnan(fast["loss"].iloc[3])
    assert fast["acc"].dtype == np.int64


def test_ints_beyond_double_precision_stay_exact(in_project):
    store = _store(in_project.root)
    run = _new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run, CONTEXTS, [("seed", 2**62 + 1, None, None)])
    store.close()
    assert dataframe("seed")["seed"].tolist() == [2**62 + 1]
    assert _rowwise(in_project.root, "seed")["seed"].tolist() == [2**62 + 1]


def test_replayed_strings_and_big_ints_fall_back_to_rows(in_project):
    store = _store(in_project.root)
    run = _new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run, CONTEXTS, [("loss", 0.9, 2, 0), ("tag", "a", 1, 0), ("loss", 0.8, 2, 1)])
    store.write_batch(run, [], [("tag", 3, 1, 1), ("huge", 2**70, 1, 0)])
    store.write_replayed(run, [], [LoggedValue("loss", 5.0, "float", 1, 0)])
    store.close()
    for name in ("loss", "tag", "huge"):
        assert not _uses_blocks(in_project.root, name)
    df = dataframe("loss", "tag", "huge")
    assert df["tag"].tolist()[:2] == ["a", "a"] and df["huge"].iloc[0] == 2**70


def test_database_from_before_blocks_is_read_row_by_row(in_project):
    store = _store(in_project.root)
    run = _new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run, CONTEXTS, [("loss", 0.9, 2, 0), ("loss", 0.8, 2, 1)])
    store.close()
    db = sqlite3.connect(in_project.root / ".flor" / "flor.db")
    db.executescript("DROP TABLE log_blocks; DROP TABLE log_names; UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    db.close()
    assert dataframe("loss")["loss"].tolist() == [0.9, 0.8]  # read-only open of the old schema
    store = _store(in_project.root)  # a writer migrates: old rows stay loose, new ones get blocks
    store.write_batch(run, [], [("loss", 0.7, 3, 0), ("val", 0.1, 1, 0)])
    store.close()
    assert not _uses_blocks(in_project.root, "loss") and _uses_blocks(in_project.root, "val")
    assert dataframe("loss")["loss"].tolist() == [0.9, 0.8, 0.7]


_number = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True))
_log = st.tuples(st.sampled_from(["a", "b"]), _number, st.sampled_from([None, 1, 2, 3]), st.integers(0, 3))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(_log, max_size=12), min_size=1, max_size=4), runs=st.integers(1, 2))
def test_blocks_and_rows_give_the_same_dataframe(in_project, batches, runs):
    db = in_project.root / ".flor" / "flor.db"
    for leftover in db.parent.glob("flor.db*"):
        leftover.unlink()
    store = _store(in_project.root)
    for r in range(runs):
        run = _new_run(store, f"2026-01-0{r + 1}T00:00:00")
        store.write_batch(run, CONTEXTS, [])
        for batch in batches:
            # A run-level value has no iteration either.
            store.write_batch(run, [], [(n, v, c, None if c is None else i) for n, v, c, i in batch])
    store.close()
    if not any(batches):
        # Neither name was logged: both paths say so instead of returning a table without them.
        for read in (lambda: dataframe("a", "b"), lambda: _rowwise(in_project.root, "a", "b")):
            with pytest.raises(UsageError, match="no arg or log named 'a' or 'b'"):
                read()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlorWarning)  # one of the names may be missing
        fast = dataframe("a", "b")
        pd.testing.assert_frame_equal(fast, _rowwise(in_project.root, "a", "b"))


def test_every_float_reads_back_on_both_paths(in_project):
    # The row path once used -1.2345678901234567e308 to stand for NULL; a logged one became NaN.
    odd = [-1.2345678901234567e308, float("inf"), -0.0, 5e-324]
    store = _store(in_project.root)
    run = _new_run(store, "2026-01-01T00:00:00")
    store.write_batch(run, CONTEXTS, [("x", v, 1, i) for i, v in enumerate(odd)] + [("x", float("nan"), 1, 4)])
    store.close()
    for frame in (dataframe("x"), _rowwise(in_project.root, "x")):
        assert frame["x"].tolist()[:4] == odd and math.isnan(frame["x"].iloc[4])

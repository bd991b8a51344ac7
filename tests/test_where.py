"""`flor replay --where` speaks flor's one filter language (flor/reading/filters.py, as `flor ui` does):
nothing in it is evaluated as Python, and every mistake is one FilterError line."""

import time

import pytest

from flor.errors import FilterError, UsageError
from flor.reading.filters import MAX_DEPTH, compile_filter
from flor.reading.selection import select_runs
from flor.store import Store


def _finished(store, tstamp, args, logs):
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="train.py", argv=[], cwd=".",
                                 started=time.time(), args=args)
    store.write_batch(run_id, [], logs, run_fields={"status": "finished", "ended": time.time()})


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / ".flor" / "flor.db")
    _finished(store, "2026-01-01T00:00:00", [("hidden", 500, "int"), ("lr", 0.1, "float")],
              [("loss", 0.9, None, None), ("loss", 0.5, None, None)])
    _finished(store, "2026-01-02T00:00:00", [("hidden", 75, "int"), ("lr", 0.001, "float")], [("loss", 0.7, None, None)])
    _finished(store, "2026-01-03T00:00:00", [("hidden", 200, "int")], [])  # no lr, nothing logged
    yield store
    store.close()


def _selected(store, where):
    return [run.tstamp[:10] for run in select_runs(store, None, where)]


@pytest.mark.parametrize("where, expected", [
    ("hidden > 100", ["2026-01-01", "2026-01-03"]),
    ("lr < 0.01 and hidden > 50", ["2026-01-02"]),
    ("loss < 0.6", ["2026-01-01"]),  # the last logged value (0.5), not the first
    ("lr >= 0.001 or hidden == 200", ["2026-01-01", "2026-01-02", "2026-01-03"]),
    ("not (hidden in (75, 500))", ["2026-01-03"]),
    ("tstamp == '2026-01-02T00:00:00'", ["2026-01-02"]),
    ("lr > 0", ["2026-01-01", "2026-01-02"]),  # a run without lr does not match, and is no error
    ("", ["2026-01-01", "2026-01-02", "2026-01-03"]),
])
def test_where_selects_runs_by_args_and_last_values(store, where, expected):
    assert _selected(store, where) == expected


@pytest.mark.parametrize("where, message", [
    ("hidden.abs() > 100", "a function call is not allowed"),  # pandas accepted this
    ("tstamp.__class__.__mro__", "unknown column 'tstamp.__class__.__mro__'"),  # pandas evaluated it
    ("hidden > 100 && lr < 0.01", "write 'and' instead of '&&'"),  # pandas: a numexpr message
    ("hidden > 100 || lr < 0.01", "write 'or' instead of '||'"),
    ("(hidden > 100) & (lr < 0.01)", "'&' is not allowed in a filter; write 'and'"),
    ("(hidden > 100) | (lr < 0.01)", "'|' is not allowed in a filter; write 'or'"),
    ("~(hidden > 100)", "'~' is not allowed in a filter; write 'not'"),
    ("hiden > 100", "unknown column 'hiden' in the filter; columns are: hidden, loss, lr, tstamp"),
    ("hidden >", "cannot parse the filter"),
])
def test_where_mistakes_are_one_line_filter_errors(store, where, message):
    with pytest.raises(FilterError) as caught:
        select_runs(store, None, where)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, UsageError)


def _escapes(marker):
    touch = f"touch {marker}"
    return [
        f"@pd.io.common.os.system('{touch}')",  # created the file through DataFrame.query
        f"hidden > 0 and @pd.io.common.os.system('{touch}') == 0",
        f"__import__('os').system('{touch}')",
        "tstamp.__class__.__mro__[1].__subclasses__()",
        "().__class__.__bases__[0].__subclasses__()",
        "hidden.__class__ == int",
        "tstamp[0] == '2'",
        "tstamp[0:4] == '2026'",
        f"(lambda: __import__('os').system('{touch}'))()",
        "(hidden := 1) > 0",
        f"f'{{__import__(\"os\").system(\"{touch}\")}}' == ''",
        "[x for x in (1,)] == [1]",
        "hidden if lr else loss",
        "hidden * 2 > 100",
        "hidden == {1: 2}",
        "hidden == ...",
        "not " * (MAX_DEPTH + 5) + "hidden",
        "-" * 1500 + "hidden > 0",
        "(" * 1000 + "hidden" + ")" * 1000 + " > 0",
        "hidden > 0 and " * 200 + "x" * 2000,  # longer than MAX_LENGTH
    ]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(20))
def test_where_never_runs_code(store, tmp_path, index):
    marker = tmp_path / "escaped"
    where = _escapes(marker)[index]
    with pytest.raises(FilterError) as caught:
        select_runs(store, None, where)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_the_ui_and_replay_share_one_grammar():
    import flor.ui.server as server

    assert server.compile_filter is compile_filter and server.FilterError is FilterError
    with pytest.raises(FilterError, match=f"nests more than {MAX_DEPTH} levels deep"):
        compile_filter("not " * (MAX_DEPTH + 1) + "a", ["a"])
    assert compile_filter("not " * (MAX_DEPTH - 1) + "a", ["a"])({"a": 0}) is (MAX_DEPTH % 2 == 0)
    assert compile_filter("s == 'a && b || c'", ["s"])({"s": "a && b || c"}) is True  # inside a string: text


@pytest.mark.slow
def test_cli_where_error_is_one_line_and_exit_2(project, tmp_path):
    store = Store.open(project.db)
    _finished(store, "2026-01-01T00:00:00", [("hidden", 500, "int")], [])
    store.close()
    marker = tmp_path / "escaped"
    done = project.flor("replay", "loss", "--where", f"@pd.io.common.os.system('touch {marker}')", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("flor: error: cannot parse the filter") and len(done.stderr.splitlines()) == 1
    assert not marker.exists()
    done = project.flor("replay", "loss", "--where", "hidden > 100 && hidden < 1000", check=False)
    assert done.returncode == 2 and done.stderr.strip().endswith("write 'and' instead of '&&'")

"""One command-line convention: --json/--csv with stable keys on every command that reads,
`flor runs --where/--status/--order/--limit`, text tables without NaN, 1.0 or 1.796603e+09, and
flor.dataframe(where=, order_by=, limit=, per_run=True) with the same grammar. In-process
(cli.main), so fast."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

import flor
from flor import cli
from flor.store import Store


def _run(project, tstamp, args=(), logs=(), status="finished", output=()):
    store = Store.open(project.db)
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="t.py", argv=["t.py"], cwd=".",
                                 started=1_796_603_000.0 + len(tstamp), args=list(args), rng_state=None)
    store.write_batch(run_id, [], list(logs), run_fields={"status": status, "ended": time.time()})
    store.close()
    return run_id


@pytest.fixture
def three(in_project, monkeypatch):
    import argparse

    # `import flor` records a script's argparse options; flor's own command line, run here in
    # the test's process, is no script of the user's.
    parse = argparse.ArgumentParser.parse_known_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", getattr(parse, "__wrapped__", parse))
    _run(in_project, "2026-01-01T00:00:00", args=[("lr", 0.1, "float"), ("hidden", 100, "int")],
         logs=[("val_loss", 0.5, None, None)])
    _run(in_project, "2026-01-02T00:00:00", args=[("lr", 0.001, "float"), ("hidden", 200, "int")],
         logs=[("val_loss", 0.2, None, None)])
    _run(in_project, "2026-01-03T00:00:00", args=[("lr", 0.01, "float")], status="failed")
    return in_project


def _main(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


def test_runs_json_has_the_documented_keys_and_typed_values(three, capsys):
    status, out, _ = _main(capsys, "runs", "--json")
    assert status == 0
    records = _jsonl(out)
    assert [list(r) for r in records] == [list(cli_keys()) for _ in records]
    assert records[1]["args"] == {"lr": 0.001, "hidden": 200}
    assert records[1]["started"] == 1_796_603_000.0 + 19 and records[2]["status"] == "failed"


def cli_keys():
    from flor.reading.runlist import COLUMNS

    assert COLUMNS == ("tstamp", "status", "started", "ended", "duration_s", "filename", "code_commit", "git_head",
                       "git_dirty", "args", "world_size", "ranks")
    return COLUMNS


def test_runs_where_status_order_limit(three, capsys):
    _, out, _ = _main(capsys, "runs", "--json", "--where", "lr < 0.05", "--order", "lr desc")
    assert [r["tstamp"] for r in _jsonl(out)] == ["2026-01-03T00:00:00", "2026-01-02T00:00:00"]
    _, out, _ = _main(capsys, "runs", "--json", "--order", "val_loss", "--limit", "2")
    # the run without a val_loss comes last, whatever the direction
    assert [r["tstamp"] for r in _jsonl(out)] == ["2026-01-02T00:00:00", "2026-01-01T00:00:00"]
    _, out, _ = _main(capsys, "runs", "--json", "--order", "val_loss desc")
    assert [r["tstamp"][:10] for r in _jsonl(out)] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    _, out, _ = _main(capsys, "runs", "--csv", "--status", "failed")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:2] == ["tstamp", "status"] and [r[1] for r in rows[1:]] == ["failed"]
    assert rows[1][rows[0].index("args")] == '{"lr":0.01}'
    status, _, err = _main(capsys, "runs", "--status", "done")
    assert status == 2 and err == "flor: error: unknown status done; statuses are: running, finished, failed, killed\n"
    status, _, err = _main(capsys, "runs", "--where", "nosuch > 1")
    assert status == 2 and err.startswith("flor: error: unknown column 'nosuch' in the filter")
    status, _, err = _main(capsys, "runs", "--order", "lr sideways")
    assert status == 2 and "cannot read the order 'lr sideways'" in err


def test_text_tables_print_empty_ints_and_times(three, capsys):
    _, out, _ = _main(capsys, "runs")
    assert "NaN" not in out and "e+09" not in out
    assert "2026-12-" in out or "2026-11-" in out  # started, as a time
    _, out, _ = _main(capsys, "dataframe", "hidden", "val_loss")
    assert "NaN" not in out and "<NA>" not in out and "100.0" not in out and " 100 " in out
    _, out, _ = _main(capsys, "query", "SELECT run_id, started, CASE WHEN run_id = 1 THEN 5 END AS n FROM runs ORDER BY run_id")
    lines = out.splitlines()
    assert lines[0].split() == ["run_id", "started", "n"]
    assert lines[1].split()[2] == "5" and len(lines[2].split()) == 2  # the NULL is empty
    assert "e+09" not in out and "T" in lines[1].split()[1]


def test_show_and_logs_json_and_csv(three, capsys):
    _, out, _ = _main(capsys, "show", "2026-01-02", "--json")
    (record,) = _jsonl(out)
    from flor.reading.runinfo import JSON_KEYS

    assert tuple(record) == JSON_KEYS and record["args"] == {"lr": 0.001, "hidden": 200}
    assert record["logs"] == [{"name": "val_loss", "source": "record", "count": 1, "last": 0.2}]
    _, out, _ = _main(capsys, "show", "2026-01-02", "--csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(JSON_KEYS) and len(rows) == 2
    status, out, _ = _main(capsys, "logs", "2026-01-02", "--csv")
    assert status == 0 and out == "line,stream,t,context,text\n"
    status, out, _ = _main(capsys, "logs", "2026-01-02", "--grep", "nothing")
    assert status == 1 and out == ""  # as grep: no match exits 1


def test_doctor_json(three, capsys):
    status, out, _ = _main(capsys, "doctor", "--json")
    assert status == 0
    assert all(list(r) == ["kind", "what", "fix", "note"] for r in _jsonl(out))


def test_replay_json_needs_dry_run(three, capsys):
    status, _, err = _main(capsys, "replay", "--json")
    assert status == 2 and "add --dry-run" in err


def test_dataframe_where_order_limit_per_run(three):
    frame = flor.dataframe("lr", "val_loss", per_run=True, where="lr < 0.05", order_by="val_loss")
    assert list(frame["tstamp"]) == ["2026-01-02T00:00:00", "2026-01-03T00:00:00"]
    frame = flor.dataframe("lr", order_by="lr desc", limit=2)
    assert list(frame["lr"]) == [0.1, 0.01]
    assert flor.dataframe("lr", where="status == 'failed'", per_run=True)["lr"].tolist() == [0.01]
    with pytest.raises(flor.UsageError):
        flor.dataframe("lr", limit=-1)

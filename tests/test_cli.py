import base64
import json
import sqlite3
import time

import pytest

from flor.store import Store
from tests.test_record import SMALL

pytestmark = pytest.mark.slow  # every test trains or launches processes


def test_runs_show_query_and_errors(project):
    project.write("train.py", SMALL)
    project.run("train.py", "--kwargs", "epochs=2")
    runs = project.flor("runs").stdout.splitlines()
    assert runs[0].split()[:5] == ["tstamp", "status", "duration", "filename", "commit"]
    tstamp = runs[1].split()[0]
    assert "finished" in runs[1] and "epochs=2" in runs[1]
    show = project.flor("show", tstamp[:10]).stdout
    assert f"run       {tstamp}" in show and "loss" in show and "epochs=2" in show
    assert "checkpoints" in show
    query = project.flor("query", "SELECT name, COUNT(*) AS n FROM logs GROUP BY name ORDER BY name", "--csv").stdout
    assert query.splitlines() == ["name,n", "acc,2", "final,1", "loss,8"]
    table = project.flor("dataframe", "loss").stdout.splitlines()
    assert len(table) == 9 and table[0].split() == ["projid", "tstamp", "filename", "git_head", "git_dirty", "epoch", "step", "loss"]

    missing = project.flor("show", "1999", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == "flor: error: no run matches '1999'; `flor runs` lists them"
    write = project.flor("query", "DROP TABLE runs", check=False)
    assert write.returncode != 0 and len(write.stderr.strip().splitlines()) == 1


def test_no_project_is_one_line(tmp_path, project):
    done = project.flor("runs", check=False, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("flor: error: no flor runs recorded under")
    assert "Traceback" not in done.stderr


def test_module_and_help(project):
    assert "dataframe" in project.flor("--help").stdout


def test_runs_show_and_dataframe_name_the_users_head(project):
    head = project.git("rev-parse", "HEAD").strip()
    project.write("train.py", SMALL)  # untracked: the run's code differs from HEAD
    project.run("train.py", "--kwargs", "epochs=1")
    runs = project.flor("runs").stdout.splitlines()
    assert runs[0].split()[5] == "git_head" and f"{head[:10]}+dirty" in runs[1]
    show = project.flor("show", runs[1].split()[0]).stdout
    assert f"git head  {head}  (with uncommitted or untracked changes)" in show
    frame = project.flor("dataframe", "final", "--csv").stdout.splitlines()
    assert frame[0].startswith("projid,tstamp,filename,git_head,git_dirty") and f",{head},True," in frame[1]


def test_version(project):
    assert project.flor("--version").stdout.strip() == "flor 0.1.0"


def _store_run(project, tstamp, args=(), logs=(), rng_state=None):
    """A finished run written through the store (no script, no subprocess)."""
    store = Store.open(project.db)
    run_id, _ = store.insert_run(tstamp=tstamp, projid="p", filename="t.py", argv=[], cwd=".",
                                 started=time.time(), args=list(args), rng_state=rng_state)
    store.write_batch(run_id, [], list(logs), run_fields={"status": "finished", "ended": time.time()})
    store.close()
    return run_id


def _json_lines(text):
    """Parse JSON lines strictly: NaN and Infinity literals are not JSON."""
    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_query_json_is_exact_typed_and_handles_blobs(project):
    blob = bytes(range(256)) * 3  # not UTF-8: pandas' writer failed on it with a traceback
    _store_run(project, "2026-01-01T00:00:00", logs=[("x", 0.1 + 0.2, None, None), ("x", 1 / 3, None, None)],
               rng_state=blob)
    _store_run(project, "2026-01-02T00:00:00")
    done = project.flor("query", "SELECT * FROM runs ORDER BY run_id", "--json")
    records = _json_lines(done.stdout)
    with sqlite3.connect(project.db) as db:
        columns = [d[0] for d in db.execute("SELECT * FROM runs").description]
        started = db.execute("SELECT started FROM runs ORDER BY run_id").fetchall()
    assert [list(r) for r in records] == [columns, columns]  # keys in column order
    assert records[0]["rng_state"] == {"$base64": True, "encoded": base64.b64encode(blob).decode()}
    assert base64.b64decode(records[0]["rng_state"]["encoded"]) == blob
    assert records[1]["rng_state"] is None and records[0]["error"] is None
    assert [r["started"] for r in records] == [s for (s,) in started]  # every digit of the float

    values = _json_lines(project.flor("query", "SELECT value FROM logs WHERE name = 'x' ORDER BY rowid", "--json").stdout)
    assert values == [{"value": 0.1 + 0.2}, {"value": 1 / 3}]  # not 0.3 and 0.3333333333

    # An int column with a NULL in another row stays ints; infinities are strings, not invalid JSON.
    mixed = project.flor("query", "SELECT run_id, CASE WHEN run_id = 1 THEN 5 END AS n, 1e999 AS inf, "
                         "-1e999 AS ninf, 2 * 4611686018427387903 AS big FROM runs ORDER BY run_id", "--json").stdout
    assert mixed.splitlines() == [
        '{"run_id":1,"n":5,"inf":"Infinity","ninf":"-Infinity","big":9223372036854775806}',
        '{"run_id":2,"n":null,"inf":"Infinity","ninf":"-Infinity","big":9223372036854775806}',
    ]
    assert project.flor("query", "SELECT * FROM runs WHERE 0", "--json").stdout == ""

    csv_out = project.flor("query", "SELECT run_id, rng_state, CASE WHEN run_id = 1 THEN 5 END AS n FROM runs "
                           "ORDER BY run_id", "--csv").stdout
    assert csv_out.splitlines() == ["run_id,rng_state,n", f"1,{base64.b64encode(blob).decode()},5", "2,,"]

    twice = project.flor("query", "SELECT 1 AS a, 2 AS a", "--json", check=False)
    assert twice.returncode == 2 and twice.stdout == ""
    assert twice.stderr.strip() == "flor: error: --json: the column name 'a' appears twice; name the columns apart with AS"


def test_dataframe_json_keeps_ints_and_every_float_digit(project):
    _store_run(project, "2026-01-01T00:00:00", args=[("hidden", 500, "int")],
               logs=[("seed", 2**62 + 1, None, None), ("loss", 0.1 + 0.2, None, None), ("loss_inf", float("inf"), None, None)])
    _store_run(project, "2026-01-02T00:00:00", logs=[("loss", 1 / 3, None, None)])
    out = project.flor("dataframe", "hidden", "seed", "loss", "loss_inf", "--json").stdout
    records = _json_lines(out)
    assert [{k: r[k] for k in ("hidden", "seed", "loss", "loss_inf")} for r in records] == [
        {"hidden": 500, "seed": 2**62 + 1, "loss": 0.1 + 0.2, "loss_inf": "Infinity"},
        {"hidden": None, "seed": None, "loss": 1 / 3, "loss_inf": None},
    ]
    assert '"hidden":500,' in out  # an int, not 500.0
    assert list(records[0]) == ["projid", "tstamp", "filename", "git_head", "git_dirty", "hidden", "seed", "loss", "loss_inf"]


def test_query_refuses_attach_and_vacuum_into_with_one_line(project, tmp_path):
    _store_run(project, "2026-01-01T00:00:00")
    for sql, what in [(f"ATTACH DATABASE '{tmp_path / 'a.db'}' AS x", "ATTACH"),
                      (f"VACUUM INTO '{tmp_path / 'v.db'}'", "VACUUM"),
                      ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = DELETE")]:
        done = project.flor("query", sql, check=False)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == f"flor: error: flor query is read-only: {what} is not allowed; use SELECT statements\n"
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "v.db").exists()
    assert project.flor("query", "PRAGMA journal_mode", "--csv").stdout == "journal_mode\nwal\n"


def test_dataframe_names_what_is_unknown(project):
    _store_run(project, "2026-01-01T00:00:00", args=[("hidden", 500, "int")], logs=[("loss", 0.5, None, None)])
    done = project.flor("dataframe", "nosuch", check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "flor: error: no arg or log named 'nosuch' (known: hidden, loss)\n"
    some = project.flor("dataframe", "loss", "nosuch", "--csv")
    assert some.stderr == "flor: warning: no arg or log named 'nosuch' (known: hidden, loss); left out of the table\n"
    assert some.stdout.splitlines() == ["projid,tstamp,filename,git_head,git_dirty,loss", "p,2026-01-01T00:00:00,t.py,,,0.5"]

"""flor.args and the script's own argparse options: recorded as typed args, overridable with
--kwargs, given back to the script by a replay."""

from __future__ import annotations

import sqlite3
import pytest

pytestmark = pytest.mark.slow  # every test trains or launches processes

ARGPARSE_SCRIPT = """
import argparse
import flor

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=1.0)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--name", default="run")
parser.add_argument("--dry", action="store_true")
args = parser.parse_args()
print("model built", args.lr, args.epochs)
for epoch in flor.loop("epoch", range(args.epochs)):
    flor.log("scaled", epoch * args.lr)
"""


def _args(project):
    with sqlite3.connect(project.db) as connection:
        return [dict((n, (v, t)) for n, v, t in connection.execute(
            "SELECT name, value, vtype FROM args WHERE run_id = ?", (rid,))) for (rid,) in
            connection.execute("SELECT run_id FROM runs ORDER BY tstamp").fetchall()]


def test_argparse_options_are_recorded_typed_and_kwargs_override_them(project):
    project.write("train.py", ARGPARSE_SCRIPT)
    project.commit_all()
    out = project.run("train.py", "--lr", "0.1", "--epochs", "2", "--kwargs", "lr=0.5").stdout
    assert "model built 0.5 2" in out
    (recorded,) = _args(project)
    assert recorded == {"lr": (0.5, "float"), "epochs": (2, "int"), "name": ("run", "str"), "dry": (0, "bool")}
    runs = project.flor("runs").stdout
    assert "lr=0.5" in runs and "epochs=2" in runs
    frame = project.flor("dataframe", "lr", "scaled", "--csv").stdout.splitlines()
    assert frame[0].endswith(",epoch,lr,scaled") and frame[2].endswith(",1,0.5,0.5")


def test_an_unknown_kwargs_name_fails_before_the_model_is_built(project):
    project.write("train.py", ARGPARSE_SCRIPT)
    project.commit_all()
    done = project.run("train.py", "--kwargs", "lrr=0.5", check=False)
    assert done.returncode == 2 and "model built" not in done.stdout
    assert done.stderr.strip().startswith("flor: error: --kwargs lrr: not declared with flor.arg")


def test_replay_gives_the_script_the_recorded_options(project):
    project.write("train.py", ARGPARSE_SCRIPT)
    project.commit_all()
    project.run("train.py", "--epochs", "2", "--kwargs", "lr=0.25")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('    flor.log("scaled", epoch * args.lr)', '    flor.log("scaled", epoch * args.lr)\n    flor.log("lr_seen", args.lr)'))
    done = project.flor("replay", "lr_seen").stdout
    assert "done: lr_seen: 2 value(s) stored; fidelity: 2 of 2" in done
    with sqlite3.connect(project.db) as connection:
        assert {v for (v,) in connection.execute("SELECT value FROM logs WHERE name = 'lr_seen'")} == {0.25}


def test_flor_args_records_a_config_dict_with_dotted_names(project):
    project.write("train.py", """
        import flor
        config = {"lr": 0.1, "optim": {"momentum": 0.9, "nesterov": False}, "layers": [64, 64], "fn": print}
        config = flor.args(config)
        print(config["lr"], config["optim"]["momentum"], config["layers"])
        flor.log("m", config["optim"]["momentum"])
    """)
    project.commit_all()
    out = project.run("train.py", "--kwargs", "optim.momentum=0.5", "layers=[8]").stdout
    assert out.split("\n")[0] == "0.1 0.5 [8]"
    (recorded,) = _args(project)
    assert recorded["optim.momentum"] == (0.5, "float") and recorded["optim.nesterov"] == (0, "bool")
    assert recorded["layers"] == ("[8]", "json") and "fn" not in recorded


def test_nanogpt_style_globals_config(project):
    project.write("train.py", """
        import flor
        learning_rate = 6e-4
        max_iters = 3
        config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
        config = {k: globals()[k] for k in config_keys}
        globals().update(flor.args(config))
        for it in flor.loop("iter", range(max_iters)):
            flor.log("lr", learning_rate)
    """)
    project.commit_all()
    project.run("train.py", "--kwargs", "learning_rate=0.001", "max_iters=2")
    with sqlite3.connect(project.db) as connection:
        assert [v for (v,) in connection.execute("SELECT value FROM logs WHERE name = 'lr'")] == [0.001, 0.001]


def test_argparse_capture_can_be_turned_off_and_subparsers_record_once(project):
    project.write("train.py", """
        import argparse
        import flor
        parser = argparse.ArgumentParser()
        parser.add_argument("--seed", type=int, default=1)
        sub = parser.add_subparsers(dest="mode")
        fit = sub.add_parser("fit")
        fit.add_argument("--lr", type=float, default=0.1)
        fit.set_defaults(func=print)
        args = parser.parse_args()
        flor.log("seed", args.seed)
    """)
    project.commit_all()
    project.run("train.py", "fit", "--lr", "0.3")
    project.run("train.py", "fit", env={"FLOR_ARGPARSE": "0"})
    first, second = _args(project)
    assert first == {"seed": (1, "int"), "mode": ("fit", "str"), "lr": (0.3, "float")}
    assert second == {}
    assert "(command) fit" in project.flor("runs").stdout.splitlines()[2]

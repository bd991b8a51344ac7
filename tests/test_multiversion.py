"""Multiversion hindsight logging: five runs over three code versions, one new statement today."""

import sqlite3
import pytest

pytestmark = pytest.mark.slow  # every test trains or launches processes

HEAD = """
import flor
import numpy as np

class Model:
    def __init__(self):
        self.w = np.zeros(3)
    def state_dict(self):
        return {"w": self.w}
    def load_state_dict(self, state):
        self.w = state["w"].copy()

np.random.seed(flor.arg("seed", 0))
"""

V1 = HEAD + """
model = Model()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 4))):
        for step in flor.loop("step", range(5)):
            model.w += np.random.rand(3)
            flor.log("loss", float(model.w.sum()))
"""

# A rename: model -> net.
V2 = V1.replace("model = Model()", "net = Model()").replace("model=model", "model=net").replace("model.w", "net.w")

# An extracted function and an added validation loop.
V3 = HEAD + """
def train_epoch(net):
    for step in flor.loop("step", range(5)):
        net.w += np.random.rand(3)
        flor.log("loss", float(net.w.sum()))


net = Model()
with flor.checkpointing(model=net):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 4))):
        train_epoch(net)
        for v in flor.loop("val", range(2)):
            flor.log("val", float(net.w[v]))
"""

STATEMENT = '        flor.log("wnorm", float(np.linalg.norm(net.w)))\n'
TODAY = V3.replace("        train_epoch(net)\n", "        train_epoch(net)\n" + STATEMENT)
BY_HAND = {
    "v1": V1.replace('            flor.log("loss", float(model.w.sum()))\n',
                     '            flor.log("loss", float(model.w.sum()))\n' + STATEMENT.replace("net.w", "model.w")),
    "v2": V2.replace('            flor.log("loss", float(net.w.sum()))\n',
                     '            flor.log("loss", float(net.w.sum()))\n' + STATEMENT),
    "v3": TODAY,
}


def _values(db, name, source):
    sql = """SELECT r.tstamp, l.iteration, l.value FROM logs l JOIN runs r ON r.run_id = l.run_id
             WHERE l.name = ? AND l.source = ? ORDER BY r.tstamp, l.iteration"""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(sql, (name, source)).fetchall()
    found = {}
    for tstamp, iteration, value in rows:
        found.setdefault(tstamp, []).append((iteration, value))
    return found


def _record(project, source, seeds, version):
    project.write("train.py", source)
    project.commit_all(version)
    tstamps = []
    for seed in seeds:
        project.run("train.py", "--kwargs", f"seed={seed}", env={"FLOR_CKPT_PERIOD": "1"})
        with sqlite3.connect(project.db) as connection:
            tstamps.append(connection.execute("SELECT MAX(tstamp) FROM runs").fetchone()[0])
    return tstamps


def test_five_runs_over_three_versions(project, tmp_path):
    runs = {}
    for version, source, seeds in (("v1", V1, [0, 1]), ("v2", V2, [2, 3]), ("v3", V3, [4])):
        for tstamp, seed in zip(_record(project, source, seeds, version), seeds):
            runs[tstamp] = (version, seed)
    project.write("train.py", TODAY)
    diff = project.flor("replay", "wnorm", "--dry-run", "--diff").stdout
    assert diff.count("memo for wnorm") == 5 and "+        flor.log(\"wnorm\", float(np.linalg.norm(model.w)))" in diff
    out = project.flor("replay", "wnorm", "--workers", "2").stdout
    assert out.count("done: wnorm") == 5, out
    replayed = _values(project.db, "wnorm", "replay")

    # Each equals a fresh full re-run of that version with the statement added by hand.
    reference = tmp_path / "reference"
    reference.mkdir()
    from tests.conftest import Project, git

    git(reference, "init", "-q")
    ref = Project(reference)
    for tstamp, (version, seed) in runs.items():
        ref.write("train.py", BY_HAND[version])
        ref.run("train.py", "--kwargs", f"seed={seed}")
    fresh = _values(ref.db, "wnorm", "record")
    assert [replayed[t] for t in runs] == [fresh[t] for t in sorted(fresh)]
    assert all(len(v) == 4 for v in replayed.values())


def test_a_version_that_cannot_be_placed_is_reported_and_the_others_complete(project):
    # The new statement reads `scale`, which only the newer version defines.
    with_scale = V3.replace("net = Model()", "net = Model()\nscale = 2.0")
    old = _record(project, V1, [5], "v1")
    good = _record(project, with_scale, [4], "v3+scale")
    statement = STATEMENT.replace("np.linalg.norm(net.w)", "np.linalg.norm(net.w) * scale")
    project.write("train.py", with_scale.replace("        train_epoch(net)\n", "        train_epoch(net)\n" + statement))
    done = project.flor("replay", "wnorm", check=False)
    assert done.returncode == 3, done.stdout
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line[:4].isdigit()}
    assert "refused: could not place" in lines[old[0]] and "scale" in lines[old[0]]
    assert "done: wnorm: 4 value(s) stored" in lines[good[0]]

"""Dataflow (issue 16): keyed loops, the feature-store view, incremental re-runs, hindsight over
keyed items, lineage and the model registry."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import REPO_ROOT

FEATURIZE = """
    from pathlib import Path
    import flor

    scale = flor.arg("scale", 1)
    docs = sorted(Path("docs").glob("*.txt"))
    for doc in flor.loop("document", docs, key=lambda p: p.name, incremental=True):
        text = doc.read_text()
        if "FAIL" in text and Path("fail-flag").exists():
            raise SystemExit("failing on " + doc.name)
        for number, page in flor.loop("page", list(enumerate(text.split("|"))), key=lambda item: item[0]):
            words = page.split()
            flor.log("n_words", scale * len(words))
"""


def _docs(project, names, text="one two three|four five"):
    folder = project.root / "docs"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(text if not isinstance(text, dict) else text[name])


def _rows(project, sql):
    with sqlite3.connect(project.db) as db:
        return db.execute(sql).fetchall()


def _frame(project, *names, latest=False):
    args = ["dataframe", *names, "--json"] + (["--latest"] if latest else [])
    return [json.loads(line) for line in project.flor(*args).stdout.splitlines()]


@pytest.mark.slow
def test_keys_of_strings_ints_and_tuples_show_in_the_loop_columns(project):
    project.write("keys.py", """
        import flor
        for name in flor.loop("document", ["a.txt", "b.txt"], key=True):
            for page in flor.loop("page", [3, 7], key=True):
                flor.log("n", len(name) + page)
        for pair in flor.loop("pair", [("x", 1), ("y", 2)], key=True):
            flor.log("p", pair[1])
    """)
    project.commit_all()
    project.run("keys.py")
    rows = _frame(project, "n")
    assert [(r["document"], r["page"], r["n"]) for r in rows] == [("a.txt", 3, 8), ("a.txt", 7, 12), ("b.txt", 3, 8),
                                                                 ("b.txt", 7, 12)]
    pairs = _frame(project, "p")
    assert [(r["pair"], r["p"]) for r in pairs] == [(["x", 1], 1), (["y", 2], 2)]
    script = "import flor; df = flor.dataframe('p'); print(repr(list(df['pair'])))"
    assert project.run("-c", script).stdout.strip() == "[('x', 1), ('y', 2)]"


@pytest.mark.slow
def test_duplicate_and_unusable_keys_are_refused_in_one_line(project):
    project.write("dup.py", """
        import flor
        for name in flor.loop("document", ["a", "b", "a"], key=True):
            flor.log("n", 1)
    """)
    project.write("bad.py", """
        import flor
        for name in flor.loop("document", [{"a": 1}], key=True):
            flor.log("n", 1)
    """)
    project.commit_all()
    dup = project.run("dup.py", check=False)
    assert dup.returncode != 0
    lines = [line for line in dup.stderr.splitlines() if line.strip()]
    assert lines == ["flor: error: flor.loop('document'): key 'a' appears twice; keys must tell items apart "
                     "(pass key=lambda item: ... that returns a distinct key per item)"]
    bad = project.run("bad.py", check=False)
    assert bad.returncode != 0 and "a key must be a string, an int, a finite float or a tuple" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The values logged before the refusal are kept.
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'n'") == [(2,)]


@pytest.mark.slow
def test_incremental_skips_what_the_same_code_and_args_finished(project):
    _docs(project, ["a.txt", "b.txt", "c.txt"])
    project.write("featurize.py", FEATURIZE)
    project.commit_all()
    project.run("featurize.py")
    # Same code, same args, two new documents: only they run.
    _docs(project, ["d.txt", "e.txt"])
    second = project.run("featurize.py")
    assert "3 item(s) skipped" in second.stderr
    yielded = _rows(project, "SELECT i.key FROM item_keys i JOIN keyed_loops k USING (run_id, ctx_id) "
                             "WHERE i.run_id = 2 AND k.loop_name = 'document' AND i.state = 'done' ORDER BY i.key")
    assert yielded == [("d.txt",), ("e.txt",)]
    skipped = _rows(project, "SELECT key, by_run FROM item_keys WHERE run_id = 2 AND state = 'skipped' ORDER BY key")
    assert skipped == [("a.txt", 1), ("b.txt", 1), ("c.txt", 1)]
    show = project.flor("show", _rows(project, "SELECT tstamp FROM runs WHERE run_id = 2")[0][0]).stdout
    assert "skipped: done before by run" in show and "(same loop body and args)" in show
    # Other args: everything runs.
    third = project.run("featurize.py", "--kwargs", "scale=2")
    assert "skipped" not in third.stderr
    assert _rows(project, "SELECT COUNT(*) FROM item_keys i JOIN keyed_loops k USING (run_id, ctx_id) "
                          "WHERE i.run_id = 3 AND k.loop_name = 'document' AND i.state = 'done'") == [(5,)]
    # A changed loop body (not a comment): everything runs again.
    project.write("featurize.py", FEATURIZE.replace("scale * len(words)", "scale * len(words) + 0"))
    project.commit_all("change")
    fourth = project.run("featurize.py")
    assert "skipped" not in fourth.stderr
    # A comment or a blank line is not a change of the code.
    project.write("featurize.py", FEATURIZE.replace("scale * len(words)", "scale * len(words) + 0") + "\n    # note\n\n")
    project.commit_all("comment")
    fifth = project.run("featurize.py")
    assert "5 item(s) skipped" in fifth.stderr


@pytest.mark.slow
def test_a_changed_setting_the_body_reads_is_a_change_and_epochs_cannot_hold_incremental_items(project):
    _docs(project, ["a.txt", "b.txt"])
    script = """
        from pathlib import Path
        import flor
        LABELS = ["x", "y"]
        for doc in flor.loop("document", sorted(Path("docs").glob("*.txt")), key=lambda p: p.name, incremental=True):
            flor.log("label", LABELS.index("y"))
    """
    project.write("f.py", script)
    project.write("epochs.py", """
        import flor
        for epoch in flor.loop("epoch", range(2)):
            for doc in flor.loop("document", ["a", "b"], key=True, incremental=True):
                flor.log("n", 1)
    """)
    project.commit_all()
    project.run("f.py")
    assert "2 item(s) skipped" in project.run("f.py").stderr
    project.write("f.py", script.replace('["x", "y"]', '["y", "x"]'))  # reordered labels: new values
    assert "skipped" not in project.run("f.py").stderr
    refused = project.run("epochs.py", check=False)
    assert refused.returncode != 0 and "inside a loop that is not keyed" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_replay_refuses_items_missing_or_out_of_their_recorded_order(project):
    # The documents are git-ignored data (as in a real pipeline): replay reads them from the project.
    project.write(".gitignore", "docs/\n")
    _docs(project, ["a.txt", "b.txt", "c.txt"])
    project.write("featurize.py", FEATURIZE)
    project.commit_all()
    project.run("featurize.py")
    (project.root / "docs" / "a.txt").unlink()
    path = project.root / "featurize.py"
    path.write_text(path.read_text().replace(
        '        flor.log("n_words", scale * len(words))',
        '        flor.log("n_words", scale * len(words))\n        flor.log("chars", len(page))'))
    done = project.flor("replay", "chars", check=False)
    assert done.returncode != 0
    assert "items missing or in another order" in (done.stdout + done.stderr)
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'chars'") == [(0,)]


def test_random_state_keeps_items_in_one_process(project):
    import ast

    from flor.replay.independence import carried

    source = "import numpy as np\nrng = np.random.default_rng(0)\nfor d in flor.loop('doc', docs, key=True):\n    flor.log('r', rng.integers(9))\n"
    tree = ast.parse(source)
    assert carried(tree.body[2], tree) == ["`rng.integers(...)` draws random numbers"]


@pytest.mark.slow
def test_incremental_runs_again_the_items_whose_processing_failed(project):
    _docs(project, ["a.txt", "b.txt", "c.txt"])
    (project.root / "docs" / "b.txt").write_text("FAIL z|q")
    project.write("featurize.py", FEATURIZE)
    project.commit_all()
    (project.root / "fail-flag").write_text("")
    failed = project.run("featurize.py", check=False)
    assert failed.returncode != 0
    (project.root / "fail-flag").unlink()
    again = project.run("featurize.py")
    assert "1 item(s) skipped" in again.stderr  # a.txt; b.txt failed, c.txt never ran
    done = _rows(project, "SELECT key FROM item_keys i JOIN keyed_loops k USING (run_id, ctx_id) "
                          "WHERE i.run_id = 2 AND k.loop_name = 'document' AND i.state = 'done' ORDER BY key")
    assert done == [("b.txt",), ("c.txt",)]


@pytest.mark.slow
def test_the_latest_view_has_one_row_per_item_with_its_newest_value_and_run(project):
    _docs(project, ["a.txt", "b.txt"])
    project.write("featurize.py", FEATURIZE)
    project.write("redo.py", """
        import flor
        from pathlib import Path
        for doc in flor.loop("document", [Path("docs/b.txt")], key=lambda p: p.name):
            for number, page in flor.loop("page", list(enumerate(doc.read_text().split("|"))), key=lambda item: item[0]):
                flor.log("n_words", len(page.split()))
    """)
    project.commit_all()
    project.run("featurize.py")
    _docs(project, ["b.txt"], text="one|two three four five six")
    project.run("redo.py")
    stamps = [r[0] for r in _rows(project, "SELECT tstamp FROM runs ORDER BY run_id")]
    rows = _frame(project, "n_words", latest=True)
    assert [json.loads(line) for line in project.flor("dataframe", "--latest", "--json").stdout.splitlines()][0][
        "document"] == "a.txt"  # every name, loops not taken for names
    got = [(r["document"], r["page"], r["n_words"], r["tstamp"]) for r in rows]
    assert got == [("a.txt", 0, 3, stamps[0]), ("a.txt", 1, 2, stamps[0]), ("b.txt", 0, 1, stamps[1]),
                   ("b.txt", 1, 5, stamps[1])]


@pytest.mark.slow
def test_lineage_is_recorded_both_ways_and_selects_runs(project):
    _docs(project, ["a.txt"])
    project.write("featurize.py", FEATURIZE)
    project.write("train.py", """
        import flor
        features = flor.dataframe("n_words", latest=True)
        lr = flor.arg("lr", 0.1)
        for epoch in flor.loop("epoch", range(2)):
            flor.log("total", float(features["n_words"].sum()) * lr)
    """)
    project.write("notebook.py", """
        import flor
        print(len(flor.dataframe("n_words")))
    """)
    project.commit_all()
    project.run("featurize.py")
    project.run("train.py")
    project.run("notebook.py")  # reads without recording: no run, no lineage
    stamps = [r[0] for r in _rows(project, "SELECT tstamp FROM runs ORDER BY run_id")]
    assert len(stamps) == 2
    assert _rows(project, "SELECT reader, source, how FROM lineage") == [(2, 1, "feature store")]
    show_train = project.flor("show", stamps[1]).stdout
    assert "read from" in show_train and f"{stamps[0]}  featurize.py  (feature store)" in show_train
    show_feat = project.flor("show", stamps[0]).stdout
    assert "read by" in show_feat and f"{stamps[1]}  train.py" in show_feat
    upstream = [json.loads(line) for line in project.flor(
        "dataframe", "n_words", "--read-by", stamps[1], "--json").stdout.splitlines()]
    assert {r["tstamp"] for r in upstream} == {stamps[0]}
    downstream = [json.loads(line) for line in project.flor("dataframe", "total", "--readers-of", stamps[0],
                                                            "--json").stdout.splitlines()]
    assert {r["tstamp"] for r in downstream} == {stamps[1]}


@pytest.mark.slow
def test_the_run_page_shows_lineage_both_ways(project):
    pytest.importorskip("flask")
    from flor.ui.server import UIData, create_app

    _docs(project, ["a.txt"])
    project.write("featurize.py", FEATURIZE)
    project.write("train.py", """
        import flor
        total = flor.dataframe("n_words", latest=True)["n_words"].sum()
        flor.log("total", float(total))
    """)
    project.commit_all()
    project.run("featurize.py")
    project.run("train.py")
    stamps = [r[0] for r in _rows(project, "SELECT tstamp FROM runs ORDER BY run_id")]
    data = UIData.open(project.db, project.root)
    try:
        data.load(wait=None)
        client = create_app(data).test_client()
        train = client.get(f"/api/runs/{stamps[1]}").json["lineage"]
        feat = client.get(f"/api/runs/{stamps[0]}").json["lineage"]
    finally:
        data.close()
    assert train == {"read_from": [{"tstamp": stamps[0], "filename": "featurize.py", "how": "feature store"}],
                     "read_by": []}
    assert feat == {"read_from": [], "read_by": [{"tstamp": stamps[1], "filename": "train.py", "how": "feature store"}]}


@pytest.mark.slow
def test_best_finds_the_run_and_iteration_and_loads_its_checkpoint(project):
    project.write("train.py", """
        import flor, numpy as np

        class Model:
            def __init__(self): self.w = np.zeros(3)
            def state_dict(self): return {"w": self.w}
            def load_state_dict(self, s): self.w = np.array(s["w"])

        peak = flor.arg("peak", 2)
        model = Model()
        with flor.checkpointing(model=model):
            for epoch in flor.loop("epoch", range(5)):
                model.w = model.w + 1
                flor.log("val_acc", 1.0 - abs(epoch - peak) / 10 + peak / 100)
                flor.log("val_loss", abs(epoch - peak) + 0.5)
    """)
    project.commit_all()
    project.run("train.py", env={"FLOR_CKPT_PERIOD": "1"})
    project.run("train.py", "--kwargs", "peak=3", env={"FLOR_CKPT_PERIOD": "1"})
    stamps = [r[0] for r in _rows(project, "SELECT tstamp FROM runs ORDER BY run_id")]
    script = """
import flor, numpy as np
b = flor.best("val_acc")
print(b.tstamp, b.iteration, round(b.value, 3), b.checkpointed)
low = flor.best("val_loss", mode="min", where="peak == 2")
print(low.tstamp, low.iteration)
class M:
    def __init__(self): self.w = None
    def state_dict(self): return {"w": self.w}
    def load_state_dict(self, s): self.w = np.array(s["w"])
m = M()
b.load(model=m)
print(m.w.tolist())
try:
    flor.best("val_acc", mode="median")
except flor.UsageError as e:
    print("refused:", e)
"""
    out = project.run("-c", script).stdout.splitlines()
    assert out[0] == f"{stamps[1]} 3 1.03 True"
    assert out[1] == f"{stamps[0]} 2"
    assert out[2] == "[4.0, 4.0, 4.0]"
    assert out[3].startswith("refused: flor.best(mode=...) is 'max' or 'min'")
    # The registry pins the checkpoints it named: `flor gc` keeps them (issue 29).
    assert sorted(_rows(project, "SELECT run_id, iteration FROM checkpoint_pins")) == [(1, 2), (2, 3)]


@pytest.mark.slow
def test_a_hindsight_feature_is_replayed_for_every_keyed_item_in_parallel(project):
    _docs(project, [f"d{i}.txt" for i in range(6)], text="a b c|d e")
    project.write("featurize.py", FEATURIZE)
    project.commit_all()
    project.run("featurize.py")
    _docs(project, ["d6.txt", "d7.txt"], text="a b c d|e")
    project.run("featurize.py")
    project.write("featurize.py", FEATURIZE.replace(
        '            flor.log("n_words", scale * len(words))',
        '            flor.log("n_words", scale * len(words))\n            flor.log("chars", len(page))'))
    dry = project.flor("replay", "chars", "--workers", "2", "--dry-run").stdout
    assert "share no state" in dry and "segment 2" in dry
    project.flor("replay", "chars", "--workers", "2")
    rows = _frame(project, "chars", latest=True)
    assert sorted((r["document"], r["page"], r["chars"]) for r in rows) == sorted(
        [(f"d{i}.txt", 0, 5) for i in range(6)] + [(f"d{i}.txt", 1, 3) for i in range(6)]
        + [("d6.txt", 0, 7), ("d6.txt", 1, 1), ("d7.txt", 0, 7), ("d7.txt", 1, 1)])
    # Values equal those of a fresh run of today's script.
    fresh_rows = _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'chars' AND source = 'replay'")
    assert fresh_rows == [(16,)]


@pytest.mark.slow
def test_replay_of_chosen_keys_only(project):
    _docs(project, [f"d{i}.txt" for i in range(4)], text="a b|c")
    project.write("featurize.py", FEATURIZE)
    project.commit_all()
    project.run("featurize.py")
    project.write("featurize.py", FEATURIZE.replace(
        '            flor.log("n_words", scale * len(words))',
        '            flor.log("n_words", scale * len(words))\n            flor.log("chars", len(page))'))
    project.flor("replay", "chars", "--iterations", "document=d1.txt,d3.txt")
    typo = project.flor("replay", "chars", "--iterations", "document=d9.txt", "--force", check=False)
    assert "no such item in this run" in typo.stdout + typo.stderr
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'chars'") == [(4,)]
    rows = _frame(project, "chars")
    assert sorted({r["document"] for r in rows if r["chars"] is not None}) == ["d1.txt", "d3.txt"]


def test_carried_state_is_seen_in_the_syntax_tree():
    import ast

    from flor.replay.independence import carried

    def of(body):
        return carried(ast.parse("for d in flor.loop('doc', docs, key=True):\n" + body).body[0])

    assert of("    n = len(d)\n    flor.log('n', n)\n") == []
    assert of("    total += len(d)\n") and of("    seen.add(d)\n") and of("    cache[d] = 1\n")
    assert of("    flor.log('gap', len(d) - prev)\n    prev = len(d)\n")
    assert of("    count = count + 1\n")
    assert of("    global g\n    g = 1\n")


@pytest.mark.slow
def test_the_example_pipeline_runs_end_to_end(tmp_path):
    import shutil
    import subprocess

    from tests.conftest import clean_env

    if shutil.which("make") is None:
        pytest.fail("make is not installed (.ci installs it)")
    done = subprocess.run(["bash", str(REPO_ROOT / "examples" / "pipeline" / "run.sh")], env=clean_env(
        FLOR_PIPELINE_DIR=str(tmp_path / "pipeline"), FLOR_PYTHON=__import__("sys").executable),
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "featurized 30 document(s)" in out and "labelled 30 document(s)" in out
    assert "30 item(s) skipped" in done.stderr  # the incremental re-run after adding 10 documents
    assert "labelled 40 document(s)" in out
    assert "n_sentences" in out


REGISTER = """
    import flor

    seen = {"n": 0}


    def register(doc):
        seen["n"] += 1
        return seen["n"]


    docs = ["a", "bb", "ccc", "dddd"]
    for doc in flor.loop("doc", docs, key=lambda d: d):
        position = register(doc)
        flor.log("size", len(doc))
"""


@pytest.mark.slow
def test_state_carried_through_a_helper_keeps_items_in_order(project):
    # Issue 26, item 9: `seen["n"] += 1` inside a helper the keyed body calls; the items were
    # replayed "independently" and position was stored as 1, 1, 2, 3 with exit 0.
    project.write("featurize.py", REGISTER)
    project.commit_all()
    project.run("featurize.py")
    project.write("featurize.py", REGISTER.replace(
        '        flor.log("size", len(doc))', '        flor.log("size", len(doc))\n        flor.log("position", position)'))
    dry = project.flor("replay", "position", "--workers", "2", "--dry-run").stdout
    assert "share no state" not in dry
    project.flor("replay", "position", "--workers", "2")
    rows = _frame(project, "position", latest=True)
    assert sorted((r["doc"], r["position"]) for r in rows) == [("a", 1), ("bb", 2), ("ccc", 3), ("dddd", 4)]


HIDDEN_STATE = """
import flor
import holder

docs = ["a", "bb", "ccc", "dddd"]
for doc in flor.loop("doc", docs, key=lambda d: d):
    position = holder.REGISTRY.register(doc)
    flor.log("size", len(doc))
"""


@pytest.mark.slow
def test_state_the_analysis_cannot_see_is_caught_by_replaying_an_item_alone_and_in_order(project):
    """State kept in an object of an imported module, changed through a method of a class defined
    in a third file (as an installed library's would be): the static judgment calls the items
    independent; replaying the first item planned alone both alone and after the one before it
    shows the difference, so the items are replayed in order, with a fresh run's values."""
    project.write("vendor/__init__.py", "")
    project.write("vendor/registry.py", '''
        class Registry:
            def __init__(self):
                self.state = {"n": 0}

            def register(self, doc):
                self.state["n"] += 1
                return self.state["n"]
    ''')
    project.write("holder.py", "import vendor.registry as registry\nREGISTRY = registry.Registry()\n")
    project.write("featurize.py", HIDDEN_STATE)
    project.commit_all()
    project.run("featurize.py")
    project.write("featurize.py", HIDDEN_STATE.replace(
        '    flor.log("size", len(doc))', '    flor.log("size", len(doc))\n    flor.log("position", position)'))
    dry = project.flor("replay", "position", "--workers", "2", "--dry-run").stdout
    assert "share no state" in dry  # what the syntax tree shows
    done = project.flor("replay", "position", "--workers", "2")
    assert "replayed in order" in done.stdout + done.stderr
    rows = _frame(project, "position", latest=True)
    assert sorted((r["doc"], r["position"]) for r in rows) == [("a", 1), ("bb", 2), ("ccc", 3), ("dddd", 4)]
    # Items that share nothing pass the same check and stay split across workers.
    project.write("featurize.py", HIDDEN_STATE.replace(
        '    flor.log("size", len(doc))', '    flor.log("size", len(doc))\n    flor.log("twice", 2 * len(doc))'))
    done = project.flor("replay", "twice", "--workers", "2")
    assert "replayed in order" not in done.stdout + done.stderr
    assert sorted((r["doc"], r["twice"]) for r in _frame(project, "twice", latest=True)) == [
        ("a", 2), ("bb", 4), ("ccc", 6), ("dddd", 8)]


def test_helpers_the_body_calls_are_followed():
    import ast

    from flor.replay.independence import carried

    def of(src, modules=None):
        tree = ast.parse(src)
        return carried(next(n for n in ast.walk(tree) if isinstance(n, ast.For)), tree, modules)

    loop = "for d in flor.loop('doc', docs, key=True):\n    flor.log('n', {})\n"
    assert of("seen = {'n': 0}\ndef f(d):\n    seen['n'] += 1\n    return seen['n']\n" + loop.format("f(d)"))
    assert of("def f(d, acc=[]):\n    acc.append(d)\n    return len(acc)\n" + loop.format("f(d)"))  # default argument
    assert of("class C:\n    def __init__(self): self.n = 0\n    def see(self, d):\n        self.n += 1\n"
              "        return self.n\nc = C()\n" + loop.format("c.see(d)"))  # an object made outside the loop
    assert of("def g(d):\n    global t\n    t = d\n    return d\ndef f(d): return g(d)\n" + loop.format("f(d)"))
    assert of("import random\ndef f(d): return random.random()\n" + loop.format("f(d)"))
    helpers = {"helpers": ast.parse("SEEN = []\ndef register(d):\n    SEEN.append(d)\n    return len(SEEN)\n")}
    assert of("from helpers import register\n" + loop.format("register(d)"), helpers.get)
    assert of("import helpers\n" + loop.format("helpers.register(d)"), helpers.get)
    # Helpers that keep to the item are not state.
    assert of("def f(d):\n    out = []\n    out.append(len(d))\n    return out\n" + loop.format("f(d)")) == []
    assert of("class P:\n    def parse(self, d):\n        self.n = len(d)\n        return self.n\n"
              "for d in flor.loop('doc', docs, key=True):\n    p = P()\n    flor.log('n', p.parse(d))\n") == []

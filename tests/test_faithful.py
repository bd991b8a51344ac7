"""Faithful replay, the red-team cases: what a replay must never do is store a value a fresh run
would not have logged, quietly. Each test here is one case found by trying replay as a user would."""

from __future__ import annotations

import json
import pickle
import sqlite3
import subprocess
import sys
import threading

import pytest

from flor.replay.plan import plan_run
from tests.conftest import clean_env, git

TRAIN = """
import flor
import torch

torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
        for step in flor.loop("step", range(4)):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            flor.log("loss", loss.item())
        # BODY
"""


def _record(project, text=TRAIN, *args, env=None):
    project.write("train.py", text)
    project.commit_all()
    project.run("train.py", *args, env=env)


def _today(project, line, marker="        # BODY"):
    """Today's script: ``line`` inserted before ``marker``, at the marker's indentation."""
    text = (project.root / "train.py").read_text()
    indent = marker[: len(marker) - len(marker.lstrip())]
    project.write("train.py", text.replace(marker, indent + line + "\n" + marker, 1))


def _rows(project, sql, *params):
    with sqlite3.connect(project.db) as connection:
        return connection.execute(sql, params).fetchall()


@pytest.mark.slow
def test_accumulated_gradients_are_restored_when_the_step_follows_the_skipped_loop(project):
    """Was: the checkpoint where the micro-step loop ends lacked p.grad, so a memoized iteration
    stepped with no gradients (nanoGPT's shape) and replay stored wrong values with exit 0."""
    _record(project, """
import flor
import torch

torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.AdamW(model.parameters(), lr=0.1)
with flor.checkpointing(model=model, optimizer=opt):
    for it in flor.loop("iter", range(4)):
        for micro in flor.loop("micro", range(3)):
            loss = model(torch.randn(8, 4)).pow(2).mean() / 3
            loss.backward()
            flor.log("loss", loss.item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        # BODY
""", env={"FLOR_CKPT_PERIOD": "1"})
    _today(project, 'flor.log("norm", float(model.weight.norm()))')
    plan = project.flor("replay", "norm", "--dry-run").stdout
    assert "memo 0-3" in plan
    project.flor("replay", "norm")
    replayed = [v for (v,) in _rows(project, "SELECT value FROM logs WHERE name = 'norm' ORDER BY iteration")]
    project.run("train.py")  # a fresh run of today's script logs the truth
    fresh = [v for (v,) in _rows(project, "SELECT value FROM logs WHERE name = 'norm' AND source = 'record' ORDER BY rowid")]
    assert replayed == fresh and len(fresh) == 4


@pytest.mark.slow
def test_a_statement_that_drifts_even_after_reexecution_is_not_stored_and_exits_4(project):
    """State outside everything flor can see (a file the script reads and changes) drifts for
    real: nothing drifted is stored, the exit status says so, --accept-drift stores it."""
    project.write("counter.txt", "0\n")
    project.write(".gitignore", "counter.txt\n")
    _record(project, TRAIN.replace("        # BODY", """        n = int(open("counter.txt").read()) + 1
        open("counter.txt", "w").write(str(n))
        flor.log("n", n)
        # BODY"""))
    _today(project, 'flor.log("n2", 2 * n)')
    project.write("counter.txt", "100\n")  # today's file is not the run's
    done = project.flor("replay", "n2", check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "still DRIFTED at epoch 0, 1, 2" in done.stdout and "re-executed from the last checkpoint then from the start" in done.stdout
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'n2'") == [(0,)]
    accepted = project.flor("replay", "n2", "--accept-drift")
    assert "DRIFTED at epoch 0, 1, 2: stored anyway (--accept-drift)" in accepted.stdout
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'n2'") == [(3,)]


@pytest.mark.slow
def test_run_level_values_logged_several_times_are_compared_in_order(project):
    """Was: a value logged several times in one context (a while loop) was reported as DRIFTED."""
    _record(project, """
import flor
total, i = 0, 0
while i < 4:
    total += i
    flor.log("total", total)
    i += 1
flor.log("done", i)
""")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("done", i)', 'flor.log("done", i)\nflor.log("twice", 2 * total)'))
    done = project.flor("replay", "twice")
    assert "fidelity: 5 of 5 recorded values matched" in done.stdout and "DRIFTED" not in done.stdout


def test_segments_never_overlap():
    """Was: the second segment re-ran iterations the first covered (49 comparisons for 45 values)."""
    checkpoints = {i: {"end": f"c{i}"} for i in (0, 2, 4, 6, 8)}  # every other iteration
    segments = plan_run("reexec", 10, checkpoints, workers=3)
    owned = [i for s in segments for i in s.store]
    assert sorted(owned) == list(range(10)) and len(owned) == len(set(owned))
    for segment in segments:
        execs = [i for i, a in segment.actions.items() if a == "exec"]
        assert execs == segment.store, f"{segment.describe()} runs iterations it does not own"


@pytest.mark.slow
def test_two_replays_of_the_same_runs_do_the_work_once(project):
    """Was: two `flor replay` at once both did all the work and both reported every value."""
    _record(project, env={"FLOR_CKPT_PERIOD": "1"})
    _today(project, 'flor.log("w", float(model.weight.sum()))')
    outputs = []

    def replay():
        outputs.append(subprocess.run([sys.executable, "-m", "flor", "replay", "w"], cwd=project.root,
                                      env=clean_env(), capture_output=True, text=True, timeout=120))

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = sorted(o.stdout for o in outputs)
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert any("done: w: 3 value(s) stored" in t for t in texts)
    assert any("already replayed w" in t for t in texts)
    assert _rows(project, "SELECT COUNT(*) FROM logs WHERE name = 'w'") == [(3,)]


@pytest.mark.slow
def test_workers_beyond_the_recorded_threads_are_capped_and_said(project):
    """Was: each worker got cores // workers threads, the recording all cores': values drifted."""
    _record(project, env={"OMP_NUM_THREADS": "2"})
    environment = json.loads(_rows(project, "SELECT environment FROM runs")[0][0])
    assert environment["numeric"]["threads"] == 2 and environment["numeric"]["env"]["OMP_NUM_THREADS"] == "2"
    assert environment["numeric"]["default_dtype"] == "float32"
    _today(project, 'flor.log("s", float(loss))', "            flor.log(\"loss\"")
    done = subprocess.run([sys.executable, "-m", "flor", "replay", "s", "--workers", "4"], cwd=project.root,
                          env=clean_env(OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=120)
    import os

    cores = len(os.sched_getaffinity(0))
    faithful = max(1, cores // 2)
    if faithful < 4:
        assert f"recorded with 2 thread(s): {faithful} worker(s) of the 4 asked for keep values exact" in done.stderr
    assert done.returncode == 0 and "fidelity: 12 of 12" in done.stdout


@pytest.mark.slow
def test_a_tampered_manifest_cannot_run_code(project, tmp_path):
    """Was: a manifest edited to name a pickled object ran code in flor.load_checkpoint (trusted
    by default), though the run never had pickled objects; flor doctor did not flag it."""
    _record(project, env={"FLOR_CKPT_PERIOD": "1"})
    (location,) = _rows(project, "SELECT location FROM checkpoints WHERE iteration = 2")[0]
    path = project.root / ".flor" / location
    manifest = json.loads(path.read_text())
    witness = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    manifest["objects"]["model"] = {"object": {"__pickle__": pickle.dumps(Evil()).hex()}}
    path.write_text(json.dumps(manifest))
    tstamp = _rows(project, "SELECT tstamp FROM runs")[0][0]
    said = {}
    for trusted in (False, True):
        code = (f"import flor\ntry:\n    flor.load_checkpoint({tstamp!r}, 2, trusted={trusted})\n"
                "except flor.CheckpointError as exc:\n    print('refused:', exc)\n")
        said[trusted] = project.run("-c", code).stdout
        assert said[trusted].startswith("refused:") and not witness.exists()
    # The store keeps each manifest's sha256 (issue 26): an edited manifest fails before any object is read.
    assert all("edited or swapped" in said[trusted] for trusted in (False, True))
    doctor = project.flor("doctor", check=False)
    assert doctor.returncode == 1 and "pickled code the run did not record" in doctor.stdout, doctor.stdout
    # The run's own checkpoints of plain data still load without trust.
    ok = project.run("-c", f"import flor\nprint(sorted(flor.load_checkpoint({tstamp!r}, 1).keys()))").stdout
    assert ok.strip() == "['model', 'optimizer']"


@pytest.mark.slow
def test_export_attributes_do_not_change_what_the_replay_reads(project):
    """Was: a run whose repository had `config.json export-ignore` replayed with today's config."""
    project.write(".gitattributes", "config.json export-ignore\n")
    project.write("config.json", '{"scale": 2}\n')
    _record(project, """
import json
import flor
scale = json.load(open("config.json"))["scale"]
for epoch in flor.loop("epoch", range(3)):
    flor.log("v", epoch * scale)
""")
    project.write("config.json", '{"scale": 5}\n')
    git(project.root, "commit", "-qam", "new config")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("v", epoch * scale)', 'flor.log("v", epoch * scale)\n    flor.log("s", scale)'))
    done = project.flor("replay", "s")
    assert "fidelity: 3 of 3" in done.stdout
    assert {v for (v,) in _rows(project, "SELECT value FROM logs WHERE name = 's'")} == {2}


@pytest.mark.slow
def test_a_submodule_replays_at_the_commit_the_run_recorded(project, tmp_path):
    """Was: today's submodule files were used."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "consts.py").write_text("SCALE = 3\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "v1")
    git(project.root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    _record(project, """
import sys
sys.path.insert(0, "lib")
import flor
from consts import SCALE
for epoch in flor.loop("epoch", range(2)):
    flor.log("v", epoch * SCALE)
""")
    (project.root / "lib" / "consts.py").write_text("SCALE = 7\n")
    git(project.root / "lib", "commit", "-qam", "v2")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("v", epoch * SCALE)', 'flor.log("v", epoch * SCALE)\n    flor.log("s", SCALE)'))
    done = project.flor("replay", "s")
    assert "fidelity: 2 of 2" in done.stdout
    assert {v for (v,) in _rows(project, "SELECT value FROM logs WHERE name = 's'")} == {3}

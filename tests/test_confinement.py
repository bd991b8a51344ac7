"""Replay never writes the user's files: whatever the old script writes, through any API, to any
path, lands in the replay's scratch layer (or fails), and the user's files are byte-identical after.

Each test records a run of a script that writes, then replays a new statement; the script's
writes depend on the process (its pid and the time), so a write that escaped would change the
user's bytes. Every file under the project (but .flor and .git) and the outside folder is hashed
before and after."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest

from flor.replay import confine, landlock
from tests.conftest import clean_env

needs_namespace = pytest.mark.skipif(confine.probe() is not None, reason=f"no private mount namespace here: {confine.probe()}")

WRITER = """
import os, pathlib, shutil, subprocess, time
import numpy as np
import torch
import flor

OUT = {outside!r}
stamp = f"{{os.getpid()}} {{time.time()}}"
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with flor.checkpointing(model=model, optimizer=opt):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(2)):
            opt.zero_grad()
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
        flor.log("loss", float(model.weight.sum()))
        # BODY
        os.makedirs("out", exist_ok=True)
        with open("out/log.txt", "a") as handle:            # open, relative path
            handle.write(stamp + "\\n")
        fd = os.open("out/raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, stamp.encode()); os.close(fd)          # os.open
        pathlib.Path("out/path.txt").write_text(stamp)      # pathlib
        np.save("out/array.npy", np.arange(3) + time.time())  # numpy
        torch.save({{"w": model.weight, "s": stamp}}, os.path.abspath("out/ckpt.pt"))  # torch's C++ writer, absolute
        shutil.copyfile("data/input.txt", "out/copy.txt")   # shutil
        subprocess.run(["cp", "data/input.txt", "out/cp.txt"], check=True)  # a subprocess
        with open(os.path.join(OUT, "outside.txt"), "w") as handle:  # outside the project
            handle.write(stamp)
        for victim in ("data/remove_me.txt", "data/rename_me.txt"):
            if os.path.exists(victim):                      # only at replay: the test made them after
                os.remove(victim) if "remove" in victim else os.rename(victim, victim + ".moved")
        if os.path.isdir("data/tree_me"):
            shutil.rmtree("data/tree_me")
        os.makedirs("data/new_folder", exist_ok=True)
"""


def _hashes(*roots):
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".git", ".flor")]
            for name in files + [d + "/" for d in dirs]:
                path = os.path.join(folder, name.rstrip("/"))
                if name.endswith("/"):
                    found[path] = "dir"
                elif os.path.islink(path):
                    found[path] = "link:" + os.readlink(path)
                else:
                    with open(path, "rb") as handle:
                        found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.mark.slow
@needs_namespace
def test_no_write_of_the_old_script_reaches_the_users_files(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    project.write(".gitignore", "out/\ndata/\n")
    project.write("data/input.txt", "input\n")
    project.write("train.py", WRITER.format(outside=str(outside)))
    project.commit_all()
    project.run("train.py")
    # Made after the recording: the old script deletes, renames and removes them if it can.
    project.write("data/remove_me.txt", "keep me\n")
    project.write("data/rename_me.txt", "keep my name\n")
    project.write("data/tree_me/leaf.txt", "keep my folder\n")
    (project.root / "data" / "new_folder").rmdir()  # the replay must not make it again
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace("# BODY", 'flor.log("bias", float(model.bias.sum()))'))
    before = _hashes(project.root, outside)
    done = project.flor("replay", "bias")
    assert "done: bias: 3 value(s) stored" in done.stdout
    assert _hashes(project.root, outside) == before, "a write reached the user's files"
    assert not (project.root / "data" / "new_folder").exists()
    # The replay says what the old code wrote, and that it was kept apart.
    assert "the old code wrote" in done.stdout and "out/ckpt.pt" in done.stdout
    with sqlite3.connect(project.db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM logs WHERE name = 'bias' AND source = 'replay'").fetchone() == (3,)


@pytest.mark.slow
@needs_namespace
def test_a_project_with_many_ignored_entries_is_confined_all_the_same(project):
    """Was: past 50,000 entries whole folders were linked into the workspace and written through."""
    project.write(".gitignore", "cache/\n")
    for folder in range(60):
        base = project.root / "cache" / f"d{folder}"
        base.mkdir(parents=True)
        for index in range(1000):
            (base / f"f{index}").write_text("user\n")
    project.write("train.py", """
        import flor
        for epoch in flor.loop("epoch", range(2)):
            for d in range(60):
                with open(f"cache/d{d}/f0", "w") as handle:
                    handle.write(f"epoch {epoch}")
            flor.log("e", epoch)
    """)
    project.commit_all()
    project.run("train.py")
    for d in range(60):
        (project.root / "cache" / f"d{d}" / "f0").write_text("user\n")
    project.write("train.py", (project.root / "train.py").read_text().replace('flor.log("e", epoch)', 'flor.log("e", epoch)\n    flor.log("twice", 2 * epoch)'))
    project.flor("replay", "twice")
    assert all((project.root / "cache" / f"d{d}" / "f0").read_text() == "user\n" for d in range(60))


@pytest.mark.slow
@needs_namespace
def test_committed_symlinks_replay_as_symlinks(project, tmp_path):
    """Was: an absolute or outward symlink in the run's tree crashed the extraction (tarfile)."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("3\n")
    project.write("values.txt", "2\n")
    os.symlink(str(target), project.root / "absolute.txt")
    os.symlink("../elsewhere.txt", project.root / "outward.txt")
    os.symlink("values.txt", project.root / "inside.txt")
    project.write("train.py", """
        import flor
        for epoch in flor.loop("epoch", range(2)):
            n = int(open("inside.txt").read()) + int(open("absolute.txt").read())
            flor.log("n", n)
    """)
    project.commit_all()
    project.run("train.py")
    project.write("train.py", (project.root / "train.py").read_text().replace('flor.log("n", n)', 'flor.log("n", n)\n    flor.log("m", n * epoch)'))
    done = project.flor("replay", "m")
    assert "done: m: 2 value(s) stored" in done.stdout and "fidelity: 2 of 2" in done.stdout


@pytest.mark.slow
@needs_namespace
def test_a_run_started_with_python_m_imports_its_own_modules(project):
    """Was: `python -m pkg.train` replayed with today's pkg/helper.py."""
    project.write("pkg/__init__.py", "")
    project.write("pkg/helper.py", "SCALE = 2\n")
    project.write("pkg/train.py", """
        import flor
        from pkg.helper import SCALE
        for epoch in flor.loop("epoch", range(3)):
            flor.log("v", epoch * SCALE)
    """)
    project.commit_all()
    done = subprocess.run([sys.executable, "-m", "pkg.train"], cwd=project.root, capture_output=True, text=True,
                          env=clean_env())
    assert done.returncode == 0, done.stderr
    project.write("pkg/helper.py", "SCALE = 10\n")  # today's helper differs
    text = (project.root / "pkg" / "train.py").read_text()
    project.write("pkg/train.py", text.replace('flor.log("v", epoch * SCALE)', 'flor.log("v", epoch * SCALE)\n    flor.log("w", SCALE)'))
    out = project.flor("replay", "w").stdout
    assert "done: w: 3 value(s) stored" in out and "fidelity: 3 of 3" in out
    with sqlite3.connect(project.db) as connection:
        assert {r[0] for r in connection.execute("SELECT value FROM logs WHERE name = 'w'")} == {2}


@pytest.mark.slow
@needs_namespace
def test_replay_output_redirected_into_the_project_is_not_what_the_old_code_wrote(project):
    """Was: `flor replay x > out.txt` in the project listed "the old code wrote 1 file(s) ...
    out.txt (deleted)": out.txt, untracked and unknown to the run's version, was hidden from the
    run's view, and that hiding was reported as the old code's deletion."""
    project.write(".gitignore", "out/\n")
    project.write("train.py", """
        import os
        import flor
        for epoch in flor.loop("epoch", range(2)):
            os.makedirs("out", exist_ok=True)
            with open("out/log.txt", "a") as handle:
                handle.write(f"{os.getpid()}\\n")
            flor.log("e", epoch)
    """)
    project.commit_all()
    project.run("train.py")
    project.write("train.py", (project.root / "train.py").read_text().replace(
        'flor.log("e", epoch)', 'flor.log("e", epoch)\n    flor.log("e2", 2 * epoch)'))
    redirected = project.root / "out.txt"
    with open(redirected, "w") as stdout:  # what the shell does for `flor replay e2 > out.txt`
        done = subprocess.run([sys.executable, "-m", "flor", "replay", "e2"], cwd=project.root, env=clean_env(),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    said = redirected.read_text()
    assert done.returncode == 0 and "done: e2: 2 value(s) stored" in said, done.stderr + said
    assert "the old code wrote 1 file(s)" in said and "out/log.txt" in said
    assert "out.txt" not in said.replace("out/log.txt", "")

@pytest.mark.slow
@pytest.mark.parametrize("how", ["namespace", "copy"])
def test_files_left_out_of_the_code_version_are_read_by_the_replay_from_the_project(project, how):
    """Files that snapshots leave out (other tools' output, model files, .florignore's, and those
    over the size cap) are data: the old code reads them from the project, not hidden as code the
    run's version lacked."""
    if how == "namespace" and confine.probe() is not None:
        pytest.skip(f"no private mount namespace here: {confine.probe()}")
    if how == "copy" and landlock.unavailable() is not None:
        pytest.skip(f"the copy fallback needs Landlock: {landlock.unavailable()}")
    project.write(".florignore", "inputs/\n")
    project.write("train.py", """
        import flor
        base = sum(int(open(p).read()) for p in
                   ("pretrained.pt", "lightning_logs/version_0/hparams.txt", "inputs/scale.txt", "data.bin"))
        for epoch in flor.loop("epoch", range(2)):
            flor.log("v", base * epoch)
    """)
    project.commit_all()
    # Untracked: left out of the run's version.
    project.write("pretrained.pt", "3\n")
    project.write("lightning_logs/version_0/hparams.txt", "4\n")
    project.write("inputs/scale.txt", "5\n")
    project.write("data.bin", "6" + " " * 300 + "\n")
    project.run("train.py", env={"FLOR_SNAPSHOT_MAX_BYTES": "100"})
    with sqlite3.connect(project.db) as connection:
        (commit,) = connection.execute("SELECT code_commit FROM runs").fetchone()
    assert set(project.git("ls-tree", "-r", "--name-only", commit).split()) == {"README", ".florignore", "train.py"}
    project.write("train.py", (project.root / "train.py").read_text().replace(
        'flor.log("v", base * epoch)', 'flor.log("v", base * epoch)\n    flor.log("w", base)'))
    done = subprocess.run([sys.executable, "-m", "flor", "replay", "w"], cwd=project.root,
                          env=clean_env(FLOR_REPLAY_CONFINE=how) if how == "copy" else clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "done: w: 2 value(s) stored; fidelity: 2 of 2" in done.stdout, done.stdout + done.stderr
    with sqlite3.connect(project.db) as connection:
        assert {r[0] for r in connection.execute("SELECT value FROM logs WHERE name = 'w'")} == {18}

@pytest.mark.slow
@pytest.mark.skipif(landlock.unavailable() is not None, reason=f"the copy fallback needs Landlock: {landlock.unavailable()}")
def test_the_copy_fallback_replays_exactly_and_keeps_small_files(project):
    """Where no namespace is allowed (FLOR_REPLAY_CONFINE=copy here): a workspace of copies."""
    project.write(".gitignore", "out/\n")
    project.write("train.py", """
        import os
        import flor
        for epoch in flor.loop("epoch", range(3)):
            os.makedirs("out", exist_ok=True)
            with open("out/log.txt", "a") as handle:
                handle.write(f"{os.getpid()}\\n")
            flor.log("e", epoch)
    """)
    project.commit_all()
    project.run("train.py")
    before = (project.root / "out" / "log.txt").read_bytes()
    project.write("train.py", (project.root / "train.py").read_text().replace('flor.log("e", epoch)', 'flor.log("e", epoch)\n    flor.log("e2", 2 * epoch)'))
    done = subprocess.run([sys.executable, "-m", "flor", "replay", "e2"], cwd=project.root,
                          env=clean_env(FLOR_REPLAY_CONFINE="copy"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "done: e2: 3 value(s) stored; fidelity: 3 of 3" in done.stdout, done.stderr
    assert (project.root / "out" / "log.txt").read_bytes() == before
    bad = subprocess.run([sys.executable, "-m", "flor", "replay", "e2", "--force"], cwd=project.root,
                         env=clean_env(FLOR_REPLAY_CONFINE="sideways"), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "flor: error: FLOR_REPLAY_CONFINE='sideways': expected namespace, copy, none or auto"


@pytest.mark.slow
def test_the_confinement_probe_leaves_nothing_in_the_temporary_folder():
    """Issue 26: every replay left a flor-probe-* folder in the temporary folder."""
    import glob
    import tempfile

    pattern = os.path.join(tempfile.gettempdir(), "flor-probe-*")
    before = set(glob.glob(pattern))
    confine.probe()
    assert set(glob.glob(pattern)) == before

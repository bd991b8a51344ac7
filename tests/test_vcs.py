
import pytest

from flor.errors import VersionControlError
from flor.environment.vcs import Repo, find_root, ref_for


def _state(project):
    return (
        project.git("status", "--porcelain", "--ignored", "--untracked-files=all"),
        project.git("rev-parse", "HEAD"),
        project.git("branch", "--list"),
        (project.root / ".git" / "index").read_bytes(),
    )


def test_snapshot_keeps_tracked_untracked_and_leaves_everything_else(project):
    project.write("train.py", "print('v1')\n")
    project.commit_all()
    project.write("train.py", "print('v2, not committed')\n")
    project.write("helper.py", "X = 1\n")
    project.write(".gitignore", "data/\n")
    project.write("data/big.bin", "x")
    project.git("add", ".gitignore")
    before = _state(project)
    snap = Repo(project.root).snapshot("2026-01-01T00:00:00", "flor: test")
    # The work tree, the index, HEAD and the branches are as they were: every file keeps its status
    # (modified, added, untracked, ignored), none is added to or left out of git's view.
    assert _state(project) == before
    files = project.git("ls-tree", "-r", "--name-only", snap.commit).split()
    assert {"train.py", "helper.py", ".gitignore", "README"} <= set(files)
    assert "data/big.bin" not in files
    assert Repo(project.root).read_file(snap.commit, "train.py") == "print('v2, not committed')\n"
    assert project.git("rev-parse", ref_for("2026-01-01T00:00:00")).strip() == snap.commit
    assert ".flor/" in (project.root / ".git" / "info" / "exclude").read_text()
    assert not (project.root / ".gitignore").read_text().count(".flor")


def test_large_untracked_files_are_skipped(project):
    project.write("weights.bin", "0" * 2000)
    project.write("small.py", "a = 1\n")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:01", "m", max_bytes=1000)
    files = project.git("ls-tree", "-r", "--name-only", snap.commit).split()
    assert "small.py" in files and "weights.bin" not in files
    assert snap.skipped == ["weights.bin"]


def test_flor_dir_is_never_snapshotted(project):
    (project.root / ".flor").mkdir()
    (project.root / ".flor" / "flor.db").write_text("db")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:02", "m")
    assert not any(f.startswith(".flor") for f in project.git("ls-tree", "-r", "--name-only", snap.commit).split())


@pytest.mark.slow
def test_repository_without_commits(tmp_path):
    from tests.conftest import git

    git(tmp_path, "init", "-q")
    (tmp_path / "t.py").write_text("x = 1\n")
    snap = Repo(tmp_path).snapshot("2026-01-01T00:00:03", "m")
    assert "t.py" in git(tmp_path, "ls-tree", "-r", "--name-only", snap.commit)
    assert git(tmp_path, "status", "--porcelain") == "?? t.py\n"


def test_extract_writes_a_version_elsewhere(project, tmp_path):
    project.write("pkg/mod.py", "V = 1\n")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:04", "m")
    project.write("pkg/mod.py", "V = 2\n")
    Repo(project.root).extract(snap.commit, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "V = 1\n"
    assert (project.root / "pkg" / "mod.py").read_text() == "V = 2\n"


def test_find_root_and_errors(tmp_path):
    assert find_root(tmp_path) == (tmp_path.resolve(), False)
    with pytest.raises(VersionControlError, match="not inside a git repository"):
        Repo.find(tmp_path)


def test_snapshot_sees_a_same_size_edit_that_the_stat_cache_cannot(project):
    # A file changed in the same second as the index was written, keeping its size, looks
    # unchanged to git's stat cache; git then compares contents because the index is not
    # newer than the entry ("racy git"). The snapshot's copy of the index must keep that
    # property (its mtime), or the run is versioned with the old text. Made deterministic:
    # the edit keeps the entry's mtime, ctime is not trusted, and the snapshot starts in a later
    # second than the index's mtime (git compares whole seconds unless built with USE_NSEC).
    import os
    import time

    project.git("config", "core.trustctime", "false")
    project.write("train.py", "range(20)\n")
    project.commit_all()
    train, index = project.root / "train.py", project.root / ".git" / "index"
    stamp = train.stat().st_mtime_ns
    project.write("train.py", "range(30)\n")
    os.utime(train, ns=(stamp, stamp))
    os.utime(index, ns=(stamp, stamp))
    time.sleep(max(0.0, stamp / 1e9 + 1.05 - time.time()))
    snap = Repo(project.root).snapshot("2026-01-01T00:00:03", "m")
    assert Repo(project.root).read_file(snap.commit, "train.py") == "range(30)\n"


def test_snapshot_says_which_head_and_whether_the_tree_was_dirty(project):
    head = project.git("rev-parse", "HEAD").strip()
    repo = Repo(project.root)
    clean = repo.snapshot("2026-01-01T00:00:00", "clean")
    assert clean.head == head and clean.dirty is False
    project.write("notes.txt", "untracked\n")
    dirty = repo.snapshot("2026-01-01T00:00:01", "dirty")
    assert dirty.head == head and dirty.dirty is True


def test_extract_gives_the_exact_tree_whatever_the_export_attributes(project, tmp_path):
    """`git archive` would leave out export-ignore files and rewrite export-subst ones."""
    import os

    project.write(".gitattributes", "config.yaml export-ignore\nversion.txt export-subst\n")
    project.write("config.yaml", "lr: 0.1\n")
    project.write("version.txt", "$Format:%H$\n")
    os.symlink("config.yaml", project.root / "link.yaml")
    os.symlink("/etc/hostname", project.root / "outside")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:00", "attrs")
    out = tmp_path / "out"
    Repo(project.root).extract(snap.commit, out)
    assert (out / "config.yaml").read_text() == "lr: 0.1\n"
    assert (out / "version.txt").read_text() == "$Format:%H$\n"
    assert os.readlink(out / "link.yaml") == "config.yaml" and os.readlink(out / "outside") == "/etc/hostname"


@pytest.mark.slow
def test_git_variables_of_another_repository_are_not_followed(project, tmp_path, monkeypatch):
    """With GIT_DIR pointing elsewhere, the snapshot and its ref still go to the project's own repository."""
    import subprocess

    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    snap = Repo(project.root).snapshot("2026-01-01T00:00:00", "here")
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert project.git("rev-parse", ref_for("2026-01-01T00:00:00")).strip() == snap.commit
    refs = subprocess.run(["git", "-C", str(other), "for-each-ref"], capture_output=True, text=True).stdout
    assert refs == ""


def _tree(project, commit):
    return set(project.git("ls-tree", "-r", "--name-only", commit).split())


def _tstamp(project):
    import sqlite3

    with sqlite3.connect(project.db) as connection:
        return connection.execute("SELECT tstamp FROM runs").fetchone()[0]


def test_other_tools_output_is_left_out_unless_tracked(project):
    """Was: untracked runs/ (TensorBoard), lightning_logs/ (a .ckpt), mlruns/ and wandb/ were
    committed into every run's hidden ref."""
    project.write("tracked.pt", "kept: git tracks it")
    project.commit_all()
    for rel in ("runs/exp1/events.out.tfevents.1.host", "runs/exp2/events.out.tfevents.2.host",
                "lightning_logs/version_0/checkpoints/epoch=0.ckpt", "mlruns/0/meta.yaml", "wandb/run-1/files/x.json",
                "outputs/2026-01-01/main.log", "model.pt", "weights/best.pth", "w.safetensors",
                "logs/events.out.tfevents.3.host", "train.py", "src/model.py"):
        project.write(rel, "x")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:05", "m")
    assert _tree(project, snap.commit) == {"README", "tracked.pt", "train.py", "src/model.py"}
    left = {(e.path, e.pattern, e.source, e.files) for e in snap.excluded}
    assert left == {
        ("runs/", "runs/", "default", 2), ("lightning_logs/", "lightning_logs/", "default", 1),
        ("mlruns/", "mlruns/", "default", 1), ("wandb/", "wandb/", "default", 1), ("outputs/", "outputs/", "default", 1),
        ("model.pt", "*.pt", "default", 1), ("weights/best.pth", "*.pth", "default", 1),
        ("w.safetensors", "*.safetensors", "default", 1),
        ("logs/events.out.tfevents.3.host", "events.out.tfevents.*", "default", 1),
    }
    assert snap.skipped == [] and snap.dirty


def test_florignore_adds_patterns_and_re_includes_defaults(project):
    project.write(".florignore", "# mine\ncache/\n*.npz\n!model.pt\n!outputs/\n")
    for rel in ("cache/a.bin", "data.npz", "model.pt", "other.pt", "outputs/keep.txt", "runs/e", "train.py"):
        project.write(rel, "x")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:06", "m")
    assert _tree(project, snap.commit) == {"README", ".florignore", "model.pt", "outputs/keep.txt", "train.py"}
    assert {(e.path, e.pattern, e.source) for e in snap.excluded} == {
        ("cache/", "cache/", ".florignore"), ("data.npz", "*.npz", ".florignore"),
        ("other.pt", "*.pt", "default"), ("runs/", "runs/", "default"),
    }


@pytest.mark.slow
def test_flor_show_lists_what_the_code_version_left_out_and_why(project):
    project.write(".florignore", "scratch/\n")
    project.write("runs/exp/events.out.tfevents.1", "x")
    project.write("runs/exp/events.out.tfevents.2", "x")
    project.write("scratch/notes.txt", "x")
    project.write("best.ckpt", "x")
    project.write("train.py", """
        import flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("e", epoch)
    """)
    done = project.run("train.py")
    assert "left out" not in done.stderr  # no Python file among them: nothing to warn about
    shown = project.flor("show", _tstamp(project)).stdout
    lines = [line.split() for line in shown.splitlines()]
    assert ["runs/", "2", "file(s)", "default", "pattern", "runs/"] in lines, shown
    assert ["scratch/", "1", "file(s)", ".florignore", "pattern", "scratch/"] in lines
    assert ["best.ckpt", "default", "pattern", "*.ckpt"] in lines
    code = project.git("ls-tree", "-r", "--name-only", ref_for(_tstamp(project))).split()
    assert set(code) == {"README", ".florignore", "train.py"}


@pytest.mark.slow
def test_python_files_left_out_as_tool_output_are_warned_about(project):
    project.write("outputs/helpers.py", "X = 1\n")
    project.write("train.py", """
        import flor
        flor.log("x", 1)
    """)
    done = project.run("train.py")
    assert "Python files left out of the code version" in done.stderr and "outputs/ (outputs/)" in done.stderr


def test_untracked_names_that_are_not_utf8_are_versioned_or_left_out_like_any_other(project):
    import os

    os.makedirs(project.root / "runs")
    for name in (b"caf\xe9.py", b"runs/ev\xe9nts"):
        (project.root / os.fsdecode(name)).write_bytes(b"x = 1\n")
    snap = Repo(project.root).snapshot("2026-01-01T00:00:07", "m")
    files = Repo(project.root).tree_files(snap.commit)
    assert sorted(files) == ["README", os.fsdecode(b"caf\xe9.py")] and [(e.path, e.files) for e in snap.excluded] == [("runs/", 1)]

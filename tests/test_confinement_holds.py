"""The confinement holds against old code that tries to undo it (issue 26, findings 1-4).

Each test records a small script, then replays a new statement while the old code, at replay
only (a marker file the test makes after the recording), tries a way out: unmounting the
private view and remounting ``/`` read-write, writing through ``/proc/<pid>/root`` of a process
outside, leaving a daemon behind, reading a data folder that is its own mount, and, where
namespaces are refused (a seccomp filter as Docker's default profile), deleting and renaming
files by absolute path. The user's files must be byte-identical after."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from flor.replay import confine, landlock
from tests.conftest import clean_env
from tests.seccomp_filter import SUPPORTED as SECCOMP_SUPPORTED, refuse_namespaces

pytestmark = pytest.mark.slow  # every test trains or launches processes

_NAMESPACE = confine.probe()
needs_namespace = pytest.mark.skipif(_NAMESPACE is not None, reason=f"no private mount namespace here: {_NAMESPACE}")
needs_landlock = pytest.mark.skipif(landlock.unavailable() is not None, reason=f"{landlock.unavailable()}")
needs_seccomp = pytest.mark.skipif(not SECCOMP_SUPPORTED, reason="the test's seccomp filter is written for x86_64")

SCRIPT = """
import ctypes, os, shutil, socket, subprocess, sys, tempfile, time
import flor

PROJECT = {root!r}
DATA = os.path.join(PROJECT, "data")
libc = ctypes.CDLL(None, use_errno=True)


def attack():
{attack}


if os.path.exists(os.path.join(DATA, "replaying")):  # made after the recording
    attack()
for epoch in flor.loop("epoch", range(2)):
    flor.log("e", epoch)
"""


def _hashes(root):
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".flor")]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[path] = handle.read()
        for name in dirs:
            found[os.path.join(folder, name) + "/"] = b"dir"
    return found


def _record(project, attack: str, files: dict[str, str]) -> None:
    project.write(".gitignore", "data/\n")
    for name, text in files.items():
        project.write(name, text)
    project.write("train.py", SCRIPT.format(root=str(project.root), attack=textwrap.indent(textwrap.dedent(attack), "    ")))
    project.commit_all()
    project.run("train.py")
    project.write("data/replaying", "")
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("e", epoch)', 'flor.log("e", epoch)\n    flor.log("e2", 2 * epoch)'))


def _replay(project, *args: str, preexec_fn=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flor", "replay", "e2", *args], cwd=project.root, env=clean_env(**env),
                          capture_output=True, text=True, timeout=180, preexec_fn=preexec_fn)


def _stored(project) -> int:
    with sqlite3.connect(project.db) as connection:
        return connection.execute("SELECT COUNT(*) FROM logs WHERE name = 'e2' AND source = 'replay'").fetchone()[0]


UNDO = """
def undo():
    for target in (PROJECT, "/tmp", tempfile.gettempdir(), os.path.expanduser("~")):
        print("umount2", target, libc.umount2(target.encode(), 2))  # MNT_DETACH
    print("remount /", libc.mount(None, b"/", None, 32 | 4096, None))  # MS_REMOUNT | MS_BIND: read-write


def write(text):
    try:
        with open(os.path.join(DATA, "weights.txt"), "w") as handle:
            handle.write(text)
    except OSError as exc:
        print("refused:", exc)


undo()
write("overwritten")
pid = os.fork()
if pid == 0:  # again, from a user namespace of its own: there it has every capability back
    if libc.unshare(0x10000000 | 0x00020000) == 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {os.geteuid()} 1"), ("gid_map", f"0 {os.getegid()} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
            except OSError:
                pass
        undo()
    write("overwritten from a namespace of its own")
    os._exit(0)
os.waitpid(pid, 0)
"""


@needs_namespace
def test_the_old_code_cannot_unmount_its_view_and_write_the_users_files(project):
    """Finding 1: umount2(ROOT, MNT_DETACH) (and /tmp's, $HOME's), then remounting / read-write,
    then writing data/weights.txt overwrote the user's file, and the replay said the writes were
    kept apart. The mounts are now locked and the capabilities to change them dropped."""
    _record(project, UNDO, {"data/weights.txt": "user weights\n"})
    before = _hashes(project.root)
    done = _replay(project)
    assert done.returncode == 0 and "done: e2: 2 value(s) stored" in done.stdout, done.stdout + done.stderr
    assert (project.root / "data" / "weights.txt").read_text() == "user weights\n"
    assert _hashes(project.root) == before, "a write reached the user's files"
    # What the replay says is now true: the write landed in its scratch layer.
    assert "kept apart from yours and discarded" in done.stdout and "data/weights.txt" in done.stdout


PROC_ROOT = """
for pid in dict.fromkeys([os.getppid()] + [int(p) for p in os.listdir("/proc") if p.isdigit()]):
    try:
        with open(f"/proc/{pid}/root{DATA}/e1.txt", "w") as handle:
            handle.write(f"through /proc/{pid}/root")
    except OSError as exc:
        print(pid, exc)
"""


@needs_namespace
def test_the_old_code_cannot_write_through_another_process_root(project):
    """Finding 2: as root, /proc/<getppid()>/root led to the warm worker's view, the user's real
    files. The task now runs in a PID namespace of its own, with its own /proc."""
    _record(project, PROC_ROOT, {"data/e1.txt": "user e1\n"})
    before = _hashes(project.root)
    done = _replay(project)
    assert done.returncode == 0 and "done: e2: 2 value(s) stored" in done.stdout, done.stdout + done.stderr
    assert (project.root / "data" / "e1.txt").read_text() == "user e1\n"
    assert _hashes(project.root) == before


DAEMON = """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a daemon: detached from its session, its parent gone
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 4096)
        time.sleep(2)
        try:
            with open(os.path.join(DATA, "d.txt"), "w") as handle:
                handle.write("the daemon was here")
        except OSError:
            pass
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"alive", ("127.0.0.1", {port}))
        os._exit(0)
    os._exit(0)
os.wait()
"""


@pytest.mark.parametrize("how", ["namespace", "copy"])
def test_a_daemon_the_old_code_starts_ends_with_the_replay(project, how):
    """Finding 3: a double-forked daemon outlived `flor replay` and wrote a user file later. Every
    process a task starts now ends with it (its PID namespace; a subreaper in the copy fallback).
    The daemon would write a user file and say so over UDP 2 s after it started."""
    if how == "namespace" and _NAMESPACE is not None:
        pytest.skip(f"no private mount namespace here: {_NAMESPACE}")
    if how == "copy" and landlock.unavailable() is not None:
        pytest.skip(str(landlock.unavailable()))
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        _record(project, DAEMON.replace("{port}", str(listener.getsockname()[1])), {"data/keep.txt": "user\n"})
        before = _hashes(project.root)
        done = _replay(project, FLOR_REPLAY_CONFINE=how)
        assert done.returncode == 0 and "done: e2: 2 value(s) stored" in done.stdout, done.stdout + done.stderr
        time.sleep(4)
        with pytest.raises(BlockingIOError):
            listener.recv(64)  # nothing: the daemon was gone before its 2 s were up
        assert not (project.root / "data" / "d.txt").exists()
        assert _hashes(project.root) == before
    finally:
        listener.close()


def _mount_namespaces_for_tests() -> str | None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and `unshare -m` to mount a file system inside a test project"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs flor-test /mnt && umount /mnt"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"`unshare -m` + mount refused here: {probe.stderr.strip()}"


@needs_namespace
def test_a_data_folder_that_is_its_own_mount_is_visible_and_kept_unwritten(project):
    """Finding (confusing): an overlay shows only its lower folder's own file system, so a data
    folder mounted inside the project was an empty folder to the old code (a bare
    FileNotFoundError). Mounts inside the project now get an overlay of their own: the old code
    reads them, and what it writes there lands in the scratch layer, listed."""
    reason = _mount_namespaces_for_tests()
    if reason:
        pytest.skip(reason)
    project.write(".gitignore", "data/\nstash/\n")
    project.write("data/in.txt", "7\n")
    project.write("train.py", """
        import flor
        base = int(open("data/in.txt").read())
        try:
            with open("data/out.txt", "w") as handle:
                handle.write("written")
        except OSError as exc:
            print("refused:", exc)
        for epoch in flor.loop("epoch", range(2)):
            flor.log("v", base * epoch)
    """)
    project.commit_all()
    project.run("train.py")
    (project.root / "data" / "out.txt").unlink()
    (project.root / "data").rename(project.root / "stash")
    (project.root / "data").mkdir()
    text = (project.root / "train.py").read_text()
    project.write("train.py", text.replace('flor.log("v", base * epoch)', 'flor.log("v", base * epoch)\n    flor.log("w", base)'))
    # In a mount namespace of the test's own: data/ is a tmpfs there, nowhere else.
    command = (f"mount -t tmpfs flor-data data && cp stash/in.txt data/ && {sys.executable} -m flor replay w; "
               "code=$?; ls data; exit $code")
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=project.root, env=clean_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "done: w: 2 value(s) stored; fidelity: 2 of 2" in done.stdout, done.stdout + done.stderr
    assert done.stdout.rstrip().splitlines()[-1] == "in.txt"  # the old code's write did not reach the mount
    assert "kept apart from yours and discarded: data/out.txt" in done.stdout
    with sqlite3.connect(project.db) as connection:
        assert {r[0] for r in connection.execute("SELECT value FROM logs WHERE name = 'w'")} == {7}


DESTROY = """
attempts = {
    "remove": lambda: os.remove(os.path.join(DATA, "a.txt")),
    "rename": lambda: os.rename(os.path.join(DATA, "b.txt"), os.path.join(DATA, "b.moved")),
    "replace": lambda: (open("mine.txt", "w").write("old code"), os.replace("mine.txt", os.path.join(DATA, "r.txt"))),
    "rmtree": lambda: shutil.rmtree(os.path.join(DATA, "tree")),
    "truncate": lambda: os.truncate(os.path.join(DATA, "t.txt"), 0),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "went through")
    except OSError as exc:
        print(name, "refused:", exc)
subprocess.run(f"echo X > {DATA}/c.txt", shell=True)
"""
USER_FILES = {"data/a.txt": "a\n", "data/b.txt": "b\n", "data/r.txt": "r\n", "data/c.txt": "c\n",
              "data/t.txt": "t\n", "data/tree/leaf.txt": "leaf\n"}


@needs_seccomp
@needs_landlock
def test_where_namespaces_are_refused_landlock_keeps_the_users_files(project):
    """Finding 4: the copy fallback (namespaces refused, as Docker's default seccomp profile
    refuses them) patched only open/os.open: os.remove, os.rename, os.replace, shutil.rmtree and
    a shell's `>` by the project's absolute path changed or deleted the user's files, exit 0.
    Landlock now refuses every write outside the workspace."""
    _record(project, DESTROY, USER_FILES)
    before = _hashes(project.root)
    done = _replay(project, preexec_fn=refuse_namespaces())
    assert done.returncode == 0 and "done: e2: 2 value(s) stored" in done.stdout, done.stdout + done.stderr
    assert _hashes(project.root) == before, "the old code changed the user's files"
    assert "Landlock refuses its writes anywhere else" in done.stderr
    assert "kept apart" not in done.stdout


@needs_seccomp
def test_where_nothing_confines_replay_refuses_until_asked_for_none(project):
    """Without namespaces and without Landlock, replay refuses in one line naming the way to go on
    unguarded; `--confinement none` (or FLOR_REPLAY_CONFINE=none) replays, saying what is unguarded,
    and never says the old code's writes were kept apart."""
    _record(project, "pass", {"data/a.txt": "a\n"})
    for args, env in (((), {}), (("--confinement", "copy"), {}), ((), {"FLOR_REPLAY_CONFINE": "copy"})):
        refused = _replay(project, *args, preexec_fn=refuse_namespaces(landlock=False), **env)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert lines[0].startswith("flor: error: replay cannot confine the old code's writes here (")
        assert "--confinement none (FLOR_REPLAY_CONFINE=none)" in lines[0]
        assert _stored(project) == 0
    for args, env in ((("--confinement", "none"), {}), ((), {"FLOR_REPLAY_CONFINE": "none"})):
        done = _replay(project, *args, "--force", preexec_fn=refuse_namespaces(landlock=False), **env)
        assert done.returncode == 0 and "done: e2: 2 value(s) stored" in done.stdout, done.stdout + done.stderr
        assert ("flor: warning: --confinement none: the old code runs in a workspace of copies and nothing stops it "
                "from deleting or overwriting your files") in done.stderr
        assert "kept apart" not in done.stdout


AS_A_USER = """
import ctypes, os, sys, tempfile
from flor.replay import confine

base = sys.argv[1]
project = os.path.join(base, "project")
libc = ctypes.CDLL(None, use_errno=True)
confine.enter()
view = confine.View(project=project, run_tree=os.path.join(base, "tree"), scratch=os.path.join(base, "scratch"),
                    writable=[tempfile.gettempdir(), os.environ["HOME"]])
confine.confine(view)
getattr(confine, "lock", lambda: None)()  # (so that the test shows what it shows on code without it)
for target in (project, tempfile.gettempdir(), os.environ["HOME"]):
    libc.umount2(target.encode(), 2)
libc.mount(None, b"/", None, 32 | 4096, None)
if libc.unshare(0x10000000 | 0x00020000) == 0:  # a user namespace of its own: capabilities back
    for target in (project, tempfile.gettempdir(), os.environ["HOME"]):
        libc.umount2(target.encode(), 2)
    libc.mount(None, b"/", None, 32 | 4096, None)
with open(os.path.join(project, "data", "weights.txt"), "w") as handle:
    handle.write("overwritten")
print("ok")
"""


def _interpreter_for_nobody(base) -> str | None:
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(python) and subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", "import os"],
                cwd=base, capture_output=True, timeout=30).returncode == 0:
            return python
    return None


@needs_namespace
def test_without_root_the_view_is_locked_too(tmp_path):
    """Finding 1 without root: the worker's own user namespace held every capability over its
    mounts, so the same two calls undid the view. The view is locked by a further user namespace."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the worker's set-up as another user")
    base = tempfile.mkdtemp(prefix="flor-test-user-", dir="/tmp")  # tmp_path's parents are root's alone
    try:
        os.chmod(base, 0o755)
        python = _interpreter_for_nobody(base)
        if python is None:
            pytest.skip("no Python interpreter that user nobody may run")
        for name in ("project/data", "tree", "scratch", "home"):
            os.makedirs(os.path.join(base, name))
        with open(os.path.join(base, "project", "data", "weights.txt"), "w") as handle:
            handle.write("user weights\n")
        shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(__file__)), "flor"), os.path.join(base, "pkg", "flor"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        with open(os.path.join(base, "attack.py"), "w") as handle:
            handle.write(AS_A_USER)
        for folder, dirs, files in os.walk(base):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.chown(name, 65534, 65534)
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "attack.py", base],
                              cwd=base, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(base, "home"),
                                             "PYTHONPATH": os.path.join(base, "pkg")},
                              capture_output=True, text=True, timeout=60)
        if "user namespace" in done.stderr or "Operation not permitted" in done.stderr:
            pytest.skip(f"no user namespaces for user nobody here: {done.stderr.strip().splitlines()[-1]}")
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
        with open(os.path.join(base, "project", "data", "weights.txt")) as handle:
            assert handle.read() == "user weights\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)

"""The replay worker: ``python -m flor.replay.worker --wait`` executes one segment of one run.

The executor starts it *warm*: it takes its channel (its standard output, a pipe to the driver),
imports the third-party modules of the script (``FLOR_REPLAY_PRELOAD``), and waits for lines
``SPEC`` on stdin. For each it forks a process that enters a private mount namespace and a PID
namespace (while it has one thread, as the kernel requires), runs the task in that PID
namespace, and exits once every process the task started has ended (``lifetime.py``); the
server then says ``{"kind": "exited"}`` and waits for the next line, so one import of torch
serves every task. A job's gang (``gang.py``) starts as one such worker that, once it has imported,
forks its siblings, each a worker of its own on the pipes the driver made for it
(``--siblings``), so one import serves every rank. Its own output and the script's go to its stderr, which the executor copies
into the task's log (the worker opens no file for writing). Then it sets the run's numeric
environment, lays out the run's view of the project (``confine.py``, locked before the old code
runs; or a workspace of copies, its writes guarded by Landlock: ``landlock.py``), installs
a :class:`~flor.replay.worker_run.ReplayRun` and runs the script as ``__main__`` the way the
run was started (``python train.py`` or ``python -m pkg.train``). Values, drift and the result go
back over the channel; the worker never opens the store.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ..environment import settings
from .channel import Channel

_STARTED = time.time()  # when this module began to run: the interpreter had started by then


def _writable_places(root: Path) -> list[Path]:
    """Where programs expect to write, besides the project: the temporary folder and the home."""
    places = [Path(tempfile.gettempdir()), Path("/tmp")]
    home = os.environ.get("HOME")
    if home and Path(home).is_dir() and Path(home).resolve() != Path("/"):
        places.append(Path(home))
    return places


def _guard_with_landlock(workspace: Path, scratch: Path) -> None:
    """Copy confinement: writes only under the workspace, a temporary folder of the task's own
    (``TMPDIR``) and ``/dev/shm``, for the old code and everything it starts (``landlock.py``)."""
    from . import landlock

    private_tmp = scratch / "tmp"
    private_tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(private_tmp)
    tempfile.tempdir = None  # the warm worker may have looked it up already
    landlock.restrict_writes([workspace, scratch, Path("/dev/shm")])


def main(spec_path: str, channel: Channel, server_times: dict | None = None, forked: float | None = None) -> int:
    """Run the segment described by the spec file ``spec_path``. ``server_times``: where the warm
    worker's own time went before this task (its start and imports), added to the task's timings;
    ``forked``: when the task's process began (``time.perf_counter()``)."""
    forked = time.perf_counter() if forked is None else forked
    from .. import api
    from ..environment import numerics
    from ..recording.args import split_kwargs
    from .worker_run import ReplayRun
    from .spec import WorkerSpec

    spec = WorkerSpec.from_json(Path(spec_path).read_text())
    os.environ.update(spec.environ)  # a job rank's identity and rendezvous, before anything reads them
    root = Path(spec.root)
    view = None
    if spec.confinement == "namespace":
        from . import confine

        view = confine.View(project=root, run_tree=Path(spec.run_tree), scratch=Path(spec.scratch),
                            writable=_writable_places(root), hide=list(spec.hide))
        confine.confine(view)
        confine.lock()  # still one thread: from here on the view cannot change
        base = root
    else:
        from .workspace import guard_writes

        base = Path(spec.run_tree)
        if spec.confinement == "copy":
            _guard_with_landlock(base, Path(spec.scratch))
        guard_writes(base, root)
    script = base / spec.filename
    workdir = base / spec.cwd if (base / spec.cwd).is_dir() else base
    os.chdir(workdir)
    numerics.apply(spec.numeric)
    recorded_argv, _ = split_kwargs(list(spec.argv) or [spec.filename])
    sys.argv = [str(script), *recorded_argv[1:]]
    # As `python train.py` and `python -m pkg.train` set it: the script's folder, or the cwd.
    sys.path[0] = str(workdir) if spec.main_module else str(script.parent)
    def writes() -> list:
        if view is None:
            return []
        from . import confine

        return confine.written(view)

    run = ReplayRun(spec, channel, writes)
    run.timings.update(server_times or {})
    run.timings["workspace_s"] = time.perf_counter() - forked  # the view or copies, the spec, flor's imports
    if spec.environ:
        from .job import time_rendezvous

        time_rendezvous(run.timings)
    api.set_current(run)
    from .isolation import install as isolate

    isolate(run, run.effects)  # the placed statements observe the run (`with __flor_observe__():`)
    from ..recording.argparsing import install

    install(api.args)  # the script's argparse options get the values the run recorded

    try:
        if spec.main_module:
            runpy.run_module(spec.main_module, run_name="__main__", alter_sys=True)
        elif spec.slice_skip:  # the statements the slice skips behind a guard (slice_run.py)
            from .slice_run import compile_sliced, run_path

            run_path(compile_sliced(script.read_text(), str(script), spec.slice_skip, spec.slice_breaks), str(script))
        else:
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            run.finish(ok=False, error=f"the script exited with status {exc.code}")
            return 1
    except BaseException as exc:  # the user's code failed: report it, keep what was sent
        traceback.print_exc()
        run.finish(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    run.finish(ok=True)
    return 0


def _fork_siblings(channel: Channel, siblings: list[tuple[int, ...]]) -> Channel:
    """Fork one warm worker per group of fds (stdin, channel, stderr, pid pipe: ``gang.py``),
    after the imports, where it forks its tasks too (the same threads: see gang.py). Returns the
    channel of the process that returns: this one's, or in a sibling, its own."""
    from .lifetime import die_with_parent  # imported before the fork, not in the child

    leader = os.getpid()
    for fds in siblings:
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            die_with_parent(leader)  # the executor stops a gang by its leader (gang.Sibling.kill)
            stdin, out, err, pid_pipe = fds
            os.dup2(stdin, 0)
            os.dup2(err, 2)
            own = Channel(os.dup(out))
            os.write(pid_pipe, f"{os.getpid()}\n".encode())  # how the driver can kill this one alone
            os.close(channel.fd)  # the leader's channel: its reader must see its end when it ends
            for group in siblings:
                for fd in group:
                    os.close(fd)
            return own
    for group in siblings:
        for fd in group:
            os.close(fd)
    return channel


def serve(siblings: list[tuple[int, ...]] = (), then: bool = False) -> int:
    """A warm worker (see the module docstring): a server that forks one process per task.
    ``siblings``: fds of the workers to fork once imported (a gang's leader, ``gang.py``); ``then``:
    first read one line from stdin, the modules to import besides (``gang.THEN_FLAG``)."""
    import importlib

    # The channel is our stdout as the executor gave it; what anything else prints must not mix
    # into it, so fd 1 points elsewhere from here on.
    channel = Channel(os.dup(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    confined = settings.replay_confinement() == "namespace"
    server = os.getpid()
    failed = []  # what could not be preloaded: said in each task's log (output before a task is dropped)
    launched = settings.worker_launched()
    imports_began = time.time()
    # Where the worker's time went before its first task (reported with that task's timings).
    times = {"start_s": max(0.0, _STARTED - launched) if launched else 0.0}
    for name in settings.replay_preload():
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a module that fails (or exits) on import
            # Not fatal: the script imports it for real and its own error is reported then. An
            # interrupt is not caught: it ends the server.
            failed.append(f"flor: preloading {name} failed ({type(exc).__name__}: {exc}); the script imports it itself")
    from .lazy_dynamo import defer_ddp_probe, defer_dynamo_import, defer_optimizer_import

    defer_dynamo_import()
    defer_ddp_probe()
    defer_optimizer_import()
    if then:
        # A gang's leader: once the replay is planned the driver says what else the ranks need (the
        # compiler when some segment re-executes optimizer steps; gang.py), so it is imported once
        # here, before the fork, rather than by every rank. An empty line: nothing; none: we stop.
        more = _read_line(0)
        if more is None:
            return 0
        for name in filter(None, more.split(",")):
            try:
                importlib.import_module(name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - as for the preload above
                failed.append(f"flor: preloading {name} failed ({type(exc).__name__}: {exc}); the script imports it itself")
    times["imports_s"] = time.time() - imports_began
    if siblings:
        channel = _fork_siblings(channel, siblings)
        server = os.getpid()  # a sibling's tasks die with it, not with the leader
    while True:
        spec = sys.stdin.readline().rstrip("\n")
        if not spec:
            return 0
        server_times, times = times, {}  # the first task pays them; later ones find the worker warm
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the task's process: one thread, nothing of the project imported yet
            from .lifetime import die_with_parent

            die_with_parent(server)  # a warm worker killed by the executor takes its task with it
            for line in failed:
                print(line, file=sys.stderr)
            os._exit(_task(spec, channel, confined, server_times))
        _pid, status = os.waitpid(pid, 0)
        channel.send("exited", code=os.waitstatus_to_exitcode(status))


def _read_line(fd: int) -> str | None:
    """One line from ``fd``, read a byte at a time: ``sys.stdin`` would buffer what follows it (the
    first task's spec), and the siblings forked next would inherit that buffer. None at its end."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            return None
        line += byte
    return line.decode().strip()


def _task(spec: str, channel: Channel, confined: bool, server_times: dict) -> int:
    """One task, in a process forked for it."""
    forked = time.perf_counter()
    code = 1
    try:
        if confined:
            from . import confine

            try:
                confine.enter()  # single-threaded here, as a new user namespace requires
            except confine.ConfinementError as exc:
                channel.send("result", ok=False, error=f"cannot confine the replay: {exc}")
                return 1
        else:
            from . import lifetime

            lifetime.supervise()  # without a PID namespace: the supervisor ends what the task leaves
        os.dup2(2, 1)  # the script's prints go to the log with its errors
        code = main(spec, channel, server_times, forked)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - a failure of flor's own set-up: one line, as result and in the log
        from ..messages import error

        error(exc)
        channel.send("result", ok=False, error=str(exc))
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


def _siblings(argv: list[str]) -> list[tuple[int, ...]]:
    """``--siblings IN,OUT,ERR,PID;...`` (gang.py) as groups of fds."""
    if "--siblings" not in argv:
        return []
    text = argv[argv.index("--siblings") + 1]
    return [tuple(int(fd) for fd in group.split(",")) for group in text.split(";") if group]


if __name__ == "__main__":
    sys.exit(serve(_siblings(sys.argv[1:]), "--then-preload" in sys.argv[1:]))  # gang.THEN_FLAG

"""A replay session: choose runs, place the new statements, plan, execute, report.

>>> report = flor.replay("weight_norm", workers=2)          # doctest: +SKIP
>>> report.ok
True
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

from ..environment import numerics, settings
from ..errors import UsageError
from ..messages import say, warn
from ..environment.paths import ProjectPaths
from ..store import Store
from ..environment.vcs import Repo
from .executor import LocalProcessExecutor
from .report import ReplayReport, RunReplay, describe_outcome, describe_plan, describe_timings
from .planner import Planner, parse_iterations, whole_body
from ..reading.selection import select_runs

CONFINEMENTS = ("auto", "namespace", "copy", "none")  # --confinement, FLOR_REPLAY_CONFINE
UNGUARDED = ("--confinement none: the old code runs in a workspace of copies and nothing stops it from deleting or "
             "overwriting your files by absolute path, through a subprocess, or through links to large files")


def preload_modules(script: Path, root: Path) -> list[str]:
    """Modules that ``script`` imports at its top level from outside the project (torch, numpy):
    a warm worker imports them before its spec arrives. The project's own modules are left out,
    since a replay must import them from the run's version of the code."""
    import ast
    import importlib.util

    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    chosen, verdict = [], {}
    for name in names:
        top = name.split(".")[0]
        if top not in verdict:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            origin = (spec.origin or (list(spec.submodule_search_locations or []) or [None])[0]) if spec else None
            outside = origin is not None and not Path(origin).resolve().is_relative_to(root.resolve())
            # The standard library is left out by name: which of its modules are frozen or built in
            # differs between Python versions (os is a file on 3.10, frozen from 3.11).
            verdict[top] = outside and top not in sys.stdlib_module_names and spec.origin != "frozen"
        if verdict[top]:
            chosen.append(name)
    return chosen


class Session:
    """One `flor replay` invocation."""

    def __init__(self, names, *, runs=None, where=None, iterations=None, workers=1, gpus=None,
                 force=False, start: Path | None = None, out=None, progress=None, accept_drift: bool = False,
                 allow_inexact: bool = False, executor: str | None = None, address: str | None = None,
                 confinement: str | None = None, slicing: bool = True, verify_slice: int = 2) -> None:
        from ..store.project import project_store

        self.names = list(names or [])
        for name in self.names:
            if type(name) is not str or not name:
                raise UsageError(f"replay names must be strings, got {name!r}")
        if workers < 1:
            raise UsageError(f"--workers must be 1 or more, got {workers}")
        self.workers = workers
        if type(verify_slice) is not int or verify_slice < 0:
            raise UsageError(f"--verify-slice must be 0 or more, got {verify_slice}")
        self.slicing, self.verify_slice = slicing, verify_slice
        self.gpus = gpus
        self.force = force
        self.executor_kind = (executor or settings.executor()).lower()
        if self.executor_kind not in ("local", "ray"):
            raise UsageError(f"--executor {executor!r}: expected local or ray")
        self.address = address or settings.ray_address()
        self.confinement_asked = (confinement or settings.replay_confinement()).lower()
        if self.confinement_asked not in CONFINEMENTS:
            raise UsageError(f"--confinement {confinement!r}: expected {', '.join(CONFINEMENTS)}")
        settings.checkpoint_store()  # malformed: refused before anything runs
        if iterations:
            if "=" not in iterations:  # the form is checked now; the loop name and values per run (keys or numbers)
                parse_iterations(iterations, None, 0)
        self.iterations = iterations
        self.out = out or sys.stdout
        self.progress = progress or sys.stderr
        self.store = project_store(start, readonly=False)
        self.store.reap_killed()
        self.root = self.store.paths.root
        self.repo = Repo(self.root)
        self.selected = select_runs(self.store, runs, where)
        self.executor = None  # LocalProcessExecutor or RayExecutor: made once, by _executor()
        self.accept_drift = accept_drift or allow_inexact
        self.inexact_threads: int | None = None
        self.notes: list[str] = []  # lines said once, before the outcomes
        self._plan_workers(allow_inexact)
        if self.executor_kind == "ray":
            store_url = settings.checkpoint_store()
            self.notes.append(
                f"replaying on Ray: every node must hold this project at {self.root} with the data its scripts read "
                "(git-ignored files do not travel with the tasks); checkpoints are read from "
                + (store_url if store_url else f"{self.store.paths.flor_dir} at that same path") + " (docs/scale-out.md)")
        self._confinement: str | None = None
        self._locks: list = []
        self._preload: list[str] | None = None
        self.jobs: dict = {}  # run_id -> replay.job.JobReplay: the ranks of a distributed job
        self.gangs = None  # replay.job.Gangs: the jobs' warm workers, once a job is selected

    @property
    def preload(self) -> list[str]:
        """The modules workers import first (the scripts' libraries), warm workers and job gangs alike."""
        if self._preload is None:
            filenames = dict.fromkeys(run.filename for run in self.selected)
            self._preload = list(dict.fromkeys(m for name in filenames
                                               for m in preload_modules(self.root / name, self.root)))
        return self._preload

    def close(self) -> None:
        """Release the store, the runs' replay locks and any worker that got no task."""
        if self.executor is not None:
            self.executor.close()
        if self.gangs is not None:
            self.gangs.close()
        for handle in self._locks:
            handle.close()
        self._locks = []
        self.store.close()

    def _plan_workers(self, allow_inexact: bool) -> None:
        """Workers times the threads the runs computed with must fit the machine: float reductions
        over another number of threads give other bits. Fewer workers than asked keep values exact."""
        threads = max([numerics.threads(r.environment.get("numeric") or {}) for r in self.selected] or [1])
        if self.executor_kind == "ray":
            return  # each Ray task reserves the run's threads as CPUs on its node
        cores = numerics.cores()
        faithful = max(1, cores // threads)
        if self.gpus or self.workers <= faithful:
            return
        if allow_inexact:
            self.inexact_threads = max(1, cores // self.workers)
            self.notes.append(
                f"recorded with {threads} thread(s): {self.workers} workers get {self.inexact_threads} each "
                "(--allow-inexact): values may differ from the recording and are stored anyway")
            return
        self.notes.append(
            f"recorded with {threads} thread(s): {faithful} worker(s) of the {self.workers} asked for keep values exact "
            f"on {cores} core(s) (--allow-inexact runs {self.workers}, with other arithmetic)")
        self.workers = faithful

    @property
    def confinement(self) -> str:
        """How workers keep the old code's writes away from the user's files: ``namespace`` (a
        private view, confine.py), ``copy`` (a workspace of copies, writes elsewhere refused by
        Landlock) or ``none`` (a workspace of copies, unguarded: only when asked for)."""
        if self._confinement is None:
            from . import confine, landlock

            choice = self.confinement_asked
            if choice == "none":
                warn(UNGUARDED)
                self._confinement = choice
                return choice
            reason = None
            if choice in ("auto", "namespace"):
                reason = confine.probe()
                if reason is None:
                    self._confinement = "namespace"
                    return self._confinement
                if choice == "namespace":
                    raise UsageError(f"FLOR_REPLAY_CONFINE=namespace, but {reason}")
            missing = landlock.unavailable()
            if missing is not None:
                why = "; ".join(r for r in (reason, missing) if r)
                raise UsageError(f"replay cannot confine the old code's writes here ({why}): it could delete or overwrite "
                                 "your files; replay unguarded with --confinement none (FLOR_REPLAY_CONFINE=none)")
            if reason is not None:
                warn(f"replay cannot use a private view of the file system here ({reason}); the old code runs in a "
                     "workspace of copies and Landlock refuses its writes anywhere else (docs/reliability.md)")
            self._confinement = "copy"
        return self._confinement

    def _executor(self):
        """The executor of this replay, chosen once (by ``--executor``) and made on first use: the
        warm-up, the planned attempt and every retry run on the same one."""
        if self.executor is None:
            preload = self.preload
            if self.executor_kind == "ray":
                from .ray_executor import RayExecutor

                self.executor = RayExecutor(self.workers, self.gpus, preload, confinement=self.confinement,
                                            address=self.address, retries=settings.ray_retries())
            else:
                self.executor = LocalProcessExecutor(self.workers, self.gpus, preload, confinement=self.confinement)
        return self.executor

    def warm_up(self) -> None:
        """Start workers importing the script's libraries now, while planning goes on."""
        if not self.selected:
            return
        numeric = self.selected[0].environment.get("numeric") or {}
        env = ({n: str(self.inexact_threads) for n in numerics.THREAD_VARIABLES} if self.inexact_threads
               else numerics.thread_env(numeric))
        of_run = self.store.job_of_runs()
        in_jobs = {run.run_id for run in self.selected} & set(of_run)
        if in_jobs:
            # A distributed job's ranks run in gangs of their own (replay/job.py), warmed now.
            if self.executor_kind != "ray":
                first = {}  # job -> one of its selected ranks: their threads are the gang's
                for run in self.selected:
                    if run.run_id in in_jobs:
                        first.setdefault(of_run[run.run_id][0], run)
                for job_id, run in first.items():
                    threads = ({n: str(self.inexact_threads) for n in numerics.THREAD_VARIABLES} if self.inexact_threads
                               else numerics.thread_env(run.environment.get("numeric") or {}))
                    self._gangs().warm(self.store.job(job_id).world_size, threads)
            return
        executor = self._executor()
        executor.warm_up(len(self.selected), env)

    def _gangs(self):
        """The warm gangs of this replay's jobs (replay/job.py), made on first use."""
        if self.gangs is None:
            from .job import Gangs

            self.gangs = Gangs(self.gpus, self.preload, self.confinement)
        return self.gangs

    def lock_runs(self) -> None:
        """Hold each selected run's replay lock: a second `flor replay` of the same runs waits, then
        plans with what this one stored (and so does only what is still missing)."""
        import fcntl

        paths = ProjectPaths(self.root)
        paths.locks.mkdir(parents=True, exist_ok=True)
        _enough_open_files(len(self.selected))
        for run in sorted(self.selected, key=lambda r: r.run_id):  # one order: no deadlock
            try:
                handle = open(paths.replay_lock(run.run_id), "a+")
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                raise UsageError(_too_many_runs(len(self.selected))) from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for another flor replay of run {run.tstamp} to finish")
                fcntl.flock(handle, fcntl.LOCK_EX)
            self._locks.append(handle)

    # -- planning ---------------------------------------------------------------------------

    def plan(self) -> list[RunReplay]:
        """Place and plan every selected run (see ``planner``)."""
        planner = Planner(self.store, self.repo, self.root, names=self.names, force=self.force,
                          iterations=self.iterations, workers=self.workers, slicing=self.slicing)
        plans = planner.plan(self.selected)
        from .job import plan_jobs

        self.jobs = plan_jobs(self, plans)  # a distributed job's ranks replay together (replay/job.py)
        if self.gangs is not None:
            self.gangs.settle(self.jobs)  # the leaders, importing, learn whether the ranks need the compiler
        for item in plans:
            if item.run.run_id in self.jobs:
                # A rank that fell back alone would run collectives the others skip, and wait.
                whole_body(item, "a distributed job: every rank runs its whole body")
        return plans

    # -- execution ----------------------------------------------------------------------------

    def execute(self, plans: list[RunReplay]) -> float:
        """Run every planned segment; execution fills in the outcomes. Returns the wall time."""
        from .execution import Execution, ExecutionSettings

        todo = [p for p in plans if p.status == "planned"]
        if not todo:
            return 0.0
        settings_ = ExecutionSettings(root=self.root, confinement=self.confinement, progress=self.progress,
                                      inexact_threads=self.inexact_threads, accept_drift=self.accept_drift,
                                      gpus=self.gpus, preload=self.preload, verify_slice=self.verify_slice)
        gangs = self._gangs() if self.jobs else None
        return Execution(self.store, self.repo, self._executor(), settings_, jobs=self.jobs, gangs=gangs).run(todo)


def _hint_extract(store: Store, plans: list[RunReplay]) -> None:
    """Say when a name to replay is already in what the runs printed: ``flor extract`` reads it
    with no re-execution (a hint only: flor does not guess the pattern)."""
    from ..reading.extraction import mention

    wanted = [p for p in plans if p.status == "planned"]
    names = dict.fromkeys(name for item in wanted for name in item.names)
    if not names:
        return
    captured = store.output_counts([item.run.run_id for item in wanted])
    ids = [item.run.run_id for item in wanted if captured.get(item.run.run_id)]
    for name in names:
        line = mention(store, ids, name)
        if line is not None:
            say(f"hint: what these runs printed mentions {name} (\"{line[:80]}\"); `flor extract {name} PATTERN` "
                "reads values from that output with no re-execution")


# Files a replay holds open besides its runs' locks (the store, git, workers' pipes and logs):
# what it asks for, and the least it goes on with.
_FILES_BESIDES_LOCKS = 256
_FEWEST_BESIDES_LOCKS = 32


def _too_many_runs(count: int) -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f"replaying {count} runs holds a lock file open for each, beyond this process's open-file limit "
            f"({soft}, at most {hard}); raise it (ulimit -n {count + _FILES_BESIDES_LOCKS}) or replay fewer runs "
            "at once (--runs, --where)")


def _enough_open_files(count: int) -> None:
    """Raise the soft open-file limit so that one lock per run fits (macOS starts at 256), up to
    the hard limit; past that, refuse in one line before opening any."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    needed = count + _FILES_BESIDES_LOCKS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < count + _FEWEST_BESIDES_LOCKS:
        raise UsageError(_too_many_runs(count))


def replay(*names: str, runs=None, where=None, iterations=None, workers: int = 1, gpus=None,
           dry_run: bool = False, diff: bool = False, force: bool = False, confirm: bool = False,
           accept_drift: bool = False, allow_inexact: bool = False, out=None, progress=None,
           executor: str | None = None, address: str | None = None, confinement: str | None = None,
           export: str | None = None, slicing: bool = True, verify_slice: int = 2) -> ReplayReport:
    """Recover ``names`` (default: every new flor.log of today's script) for past runs.

    Values whose iteration drifted from the recording (even after re-execution) are not stored
    unless ``accept_drift``. ``workers`` beyond what keeps the recorded arithmetic (workers times
    the run's threads within the machine's cores) run as many as keep it, unless ``allow_inexact``.
    Results (plans, outcomes) are written to ``out`` (default stdout); progress bars and timings
    to ``progress`` (default stderr). ``confinement`` (default ``FLOR_REPLAY_CONFINE``, else
    ``auto``): ``namespace``, ``copy`` (Landlock-guarded copies) or ``none`` (unguarded, said in
    one warning); ``auto`` takes the first of the two guarded ones the kernel allows and refuses
    where it allows neither. ``export`` (``mlflow``, ``tensorboard``): write the stored values
    into that tracker too (flor/export). ``slicing``: memoized iterations run only the statements
    the new ones depend on (docs/slicing.md), ``verify_slice`` of each segment (the first and the
    last, and others between) checked
    against the full body; False replays as before slicing (``--no-slice``).

    >>> flor.replay("weight_norm", workers=2)           # doctest: +SKIP
    """
    out = out or sys.stdout
    session = Session(names, runs=runs, where=where, iterations=iterations, workers=workers, gpus=gpus,
                      force=force, out=out, progress=progress, accept_drift=accept_drift,
                      allow_inexact=allow_inexact, executor=executor, address=address, confinement=confinement,
                      slicing=slicing, verify_slice=verify_slice)
    try:
        for note in session.notes:
            say(note)
        if not dry_run:
            session.lock_runs()
        if not dry_run and not confirm:
            session.warm_up()
        plans = session.plan()
        if not plans:
            print("no runs to replay", file=out)
            return ReplayReport([])
        _hint_extract(session.store, plans)
        if dry_run:
            for item in plans:
                print(describe_plan(item, diff), file=out)
            total = sum(p.seconds for p in plans if p.status == "planned")
            from .job import describe as describe_jobs

            for line in describe_jobs(session.jobs, numerics.cores()):
                print(line, file=out)
            print(f"estimated {total:.1f} s of work with {session.workers} worker(s)", file=out)
            return ReplayReport(plans)
        if confirm:
            planned = [p for p in plans if p.status == "planned"]
            for item in plans:
                print(describe_plan(item, diff), file=out)
            answer = input(f"replay {len(planned)} run(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("nothing replayed", file=out)
                return ReplayReport(plans)
        seconds = session.execute(plans)
        for item in plans:
            print(describe_outcome(item, session.root), file=out)
            if item.timings:
                say(describe_timings(item))
        if export:
            from ..export import export_replayed, text_lines

            for line in text_lines(export_replayed(plans, export, start=session.root)):
                print(line, file=out)
        return ReplayReport(plans, seconds)
    finally:
        session.close()

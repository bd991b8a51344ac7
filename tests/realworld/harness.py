"""The faithful-replay harness: record a real-shaped script once, add one hindsight statement to
today's version, replay it, and compare every replayed value with a fresh full run of today's
script.

A case is a folder under ``scripts/`` whose ``train.py`` carries marker comments::

    # HINDSIGHT a_epoch: flor.log("weight_norm", ...)

The recorded version has every marker line removed; today's version for question ``a_epoch`` has
that line replaced by its statement (same indentation) and the other markers removed. Questions
whose id starts with ``d`` (inside the step loop) are replayed with ``--workers 2``.

For each question, :func:`check` replays in a copy of the recorded project (with its ``.flor``
and ``.git``), hashing every file outside ``.flor/`` and ``.git/`` before and after (a file written
again with the same bytes, a new mtime or inode, counts as touched too). The reference
is a fresh full run of today's script in a copy of the project as it was just before the
recording, with the same argv and environment. By default one fresh run per case has *every*
statement of the case written in (each inside ``truth.py``'s observer, so each logs what it would
log alone), started once the recording has finished. An ``e_*`` question that would make another
question log more often (it calls the helper that question sits in) or rebinds a name another
reads gets a fresh run of its own (:func:`own_fresh_run`); the others share the case's run.
``CORPUS_FRESH=each`` also runs today's script of each question on its own and checks that it logs
the same values as the run it was compared with.

The environment is the machine's, as a user's would be: no thread variables (torch uses every
core), unless ``CORPUS_THREADS=N`` asks for ``OMP_NUM_THREADS=N``; a checkpoint due at every
outer iteration (``FLOR_CKPT_PERIOD=1``, so that memoization is used wherever it can be; flor's
writer still skips one when two are pending), unless ``CORPUS_CKPT_PERIOD`` says otherwise
(empty: flor's adaptive default). The plans still depend on timing: ``--workers 2`` is split
into segments by the recorded iteration times.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import clean_env, git

SCRIPTS = Path(__file__).resolve().parent / "scripts"
SCRIPT = "train.py"
MARKER = re.compile(r"^(?P<indent>[ \t]*)# HINDSIGHT (?P<qid>\w+): (?P<statement>.+?)\s*$")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
TIMEOUT_S = 300


@dataclass(frozen=True)
class Case:
    """One script of the corpus: its folder, the command line it was recorded with, the data
    scripts run before the recording, and (unfaithful cases) the state a refusal must name."""

    name: str
    argv: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()
    unseen: tuple[str, ...] = ()
    # A distributed case: launched by torchrun with this many ranks (gloo, loopback), recorded,
    # run fresh and replayed inside a private network namespace (:func:`start`).
    ranks: int = 1
    # The argv of a second recording in the same project (after the first): every question
    # replays both runs, each compared with a fresh run of its own argv.
    again: tuple[str, ...] | None = None

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [self.argv] + ([self.again] if self.again is not None else [])

    def launch(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """What python runs to start the script with ``argv``: the script, or torchrun and it."""
        if self.ranks == 1:
            return (SCRIPT, *argv)
        return ("-m", "torch.distributed.run", f"--nproc-per-node={self.ranks}", "--master-addr=127.0.0.1",
                "--master-port=29500", SCRIPT, *argv)

    @property
    def folder(self) -> Path:
        return SCRIPTS / self.name

    @property
    def netns(self) -> bool:
        return self.ranks > 1


@dataclass(frozen=True)
class Question:
    """One hindsight statement of a case (several marker lines with one id: a hindsight block,
    the lines that feed a flor.log written before it). ``e_*`` questions (statements that would
    perturb the run unless isolated) are asked twice: by memoization, and by re-execution in a
    copy whose checkpoints are unlisted (``reexec``)."""

    case: Case
    qid: str
    statement: str
    name: str
    reexec: bool = False

    @property
    def workers(self) -> int:
        return 2 if self.qid.startswith("d") else 1

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.qid}" + ("-reexec" if self.reexec else "")


def questions(case: Case) -> list[Question]:
    """The questions marked in the case's script, in file order."""
    lines: dict[str, list[str]] = {}
    for line in (case.folder / SCRIPT).read_text().splitlines():
        match = MARKER.match(line)
        if match:
            lines.setdefault(match["qid"], []).append(match["statement"])
    found = []
    for qid, block in lines.items():
        name = re.match(r'flor\.log\("([^"]+)"', block[-1].strip())
        assert name, f"{case.name}: a HINDSIGHT block must end with flor.log(\"NAME\", ...): {block[-1]}"
        found.append(Question(case, qid, "\n".join(block), name.group(1)))
        if qid.startswith("e_"):
            found.append(Question(case, qid, "\n".join(block), name.group(1), reexec=True))
    return found


def recorded_text(text: str) -> str:
    """The script as recorded: no marker lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not MARKER.match(line))


def today_text(text: str, qid: str) -> str:
    """Today's script for one question: its statement written in, the other markers gone."""
    out, placed = [], False
    for line in text.splitlines(keepends=True):
        match = MARKER.match(line)
        if match is None:
            out.append(line)
        elif match["qid"] == qid:
            out.append(f"{match['indent']}{match['statement']}\n")
            placed = True
    assert placed, f"no HINDSIGHT marker {qid!r}"
    return "".join(out)


TRUTH = "with __import__(\"_flor_truth\").observed():"


def all_statements_text(text: str) -> str:
    """The script with every statement written in, each (block) run as an observer that changes
    nothing (``truth.py``): the reference run of a whole case."""
    out, previous = [], None
    for line in text.splitlines(keepends=True):
        m = MARKER.match(line)
        if m is None:
            out.append(line)
            previous = None
            continue
        if m["qid"] != previous:
            out.append(f"{m['indent']}{TRUTH}\n")
            previous = m["qid"]
        out.append(f"{m['indent']}    {m['statement']}\n")
    return "".join(out)


def _only(source: str, keep) -> str:
    """``source`` with the markers of the questions ``keep(qid)`` accepts, and no others."""
    return "".join(line for line in source.splitlines(keepends=True)
                   if (m := MARKER.match(line)) is None or keep(m["qid"]))


def _blocks(source: str) -> dict[str, str]:
    """qid -> its statement (the marker lines of one id, joined)."""
    found: dict[str, list[str]] = {}
    for line in source.splitlines():
        match = MARKER.match(line)
        if match:
            found.setdefault(match["qid"], []).append(match["statement"])
    return {qid: "\n".join(lines) for qid, lines in found.items()}


def _called(tree: ast.AST) -> set[str]:
    """Names a piece of code calls: ``f(...)`` and ``obj.f(...)`` both give ``f``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def _names(tree: ast.AST, context: type) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, context)}


def _holds_statement(tree: ast.AST) -> bool:
    """Whether ``tree`` holds a question's statement (written in by :func:`all_statements_text`)."""
    return any(isinstance(node, ast.With) and "_flor_truth" in ast.unparse(node.items[0].context_expr)
               for node in ast.walk(tree))


def own_fresh_run(source: str, qid: str) -> bool:
    """Whether an ``e_*`` question needs a fresh run of its own instead of the case's shared one.

    In the shared run every statement runs inside the truth observer, so a statement that would
    perturb training does not; what the observer cannot undo is a statement making another one
    log more often (``evaluate(...)`` where a b-question sits inside ``evaluate``) or rebinding a
    name another statement reads. So: its own run when the statement assigns a name another
    statement reads, when it calls (directly or through the script's functions) a function that
    holds another statement, or when another statement sits in a class (a method the statement
    may call without naming it: ``model(x)`` runs ``forward``)."""
    blocks = _blocks(source)
    own = ast.parse(blocks[qid])
    others = [ast.parse(text) for other, text in blocks.items() if other != qid]
    if _names(own, ast.Store) & set().union(*(_names(tree, ast.Load) for tree in others)):
        return True
    script = ast.parse(all_statements_text(_only(source, lambda other: other != qid)))
    if any(isinstance(node, ast.ClassDef) and _holds_statement(node) for node in ast.walk(script)):
        return True
    functions = [node for node in ast.walk(script) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    calls = {node.name: _called(node) for node in functions}
    holders = {node.name for node in functions if _holds_statement(node)}
    reached, frontier = set(), _called(own)
    while frontier:
        name = frontier.pop()
        if name in reached:
            continue
        reached.add(name)
        frontier |= calls.get(name, set())
    return bool(reached & holders)


def _shared_by(source: str):
    """The questions the case's one fresh run holds: all but the e_* ones that need their own."""
    return lambda qid: not (qid.startswith("e_") and own_fresh_run(source, qid))


def _fresh_copy(source: Path, destination: Path, text: str) -> Path:
    """A copy of ``source`` with ``text`` as the script and the ground truth's observer beside it."""
    _copy(source, destination)
    (destination / SCRIPT).write_text(text)
    shutil.copy(Path(__file__).with_name("truth.py"), destination / "_flor_truth.py")
    return destination


def child_env() -> dict[str, str]:
    """The environment of every recording, fresh run and replay (see the module docstring)."""
    env = clean_env()
    for name in THREAD_VARIABLES:
        env.pop(name, None)
    threads = os.environ.get("CORPUS_THREADS")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    period = os.environ.get("CORPUS_CKPT_PERIOD", "1")
    if period:
        env["FLOR_CKPT_PERIOD"] = period
    return env


HANGS: list[tuple[str, Path, str]] = []  # (what, file holding the stacks, the stacks): shown by conftest.py


def note_hang(what: str, hung: "Hung", dump: Path) -> None:
    """Keep the stacks of a child that hung, warn, and list it for the end of the session."""
    import warnings

    dump.write_text(hung.stacks)
    HANGS.append((what, dump, hung.stacks))
    warnings.warn(f"{what} hung for {TIMEOUT_S} s (its stacks: {dump}); started once more", stacklevel=3)


class Hung(AssertionError):
    """A child that ran past TIMEOUT_S; ``stacks`` is what it (and its children, DataLoader
    workers included) printed when stopped: every thread's Python stack, from faulthandler."""

    def __init__(self, what: str, stacks: str) -> None:
        super().__init__(f"{what}: no end after {TIMEOUT_S} s; the stacks of its threads when stopped:\n{stacks[-6000:]}")
        self.stacks = stacks


def start(root: Path, *args: str, netns: bool = False) -> subprocess.Popen:
    """``python ARGS`` in ``root`` with :func:`child_env`, in the background (wait with
    :func:`finish`). In a session of its own and with faulthandler on, so that a hung child and
    every process it forked can be stopped together, each printing its threads' stacks.

    ``netns``: inside a private network namespace made for it (``unshare -rn``, loopback up),
    with ``MASTER_ADDR=127.0.0.1`` and ``GLOO_SOCKET_IFNAME=lo``, so that no rank of a distributed
    case (torchrun's, or a replay's gang) talks to an address but loopback."""
    env, command = child_env(), [sys.executable, "-X", "faulthandler", *args]
    if netns:
        env.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", PYTHONFAULTHANDLER="1")
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    return subprocess.Popen(command, cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, what: str = "a child") -> subprocess.CompletedProcess:
    """How ``process`` ended; a child still running after TIMEOUT_S is stopped with SIGABRT (its
    whole session: faulthandler prints each thread's stack) and :class:`Hung` is raised."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            # One process at a time, the forked ones first, so that their dumps do not interleave.
            for pid in sorted(_session(process.pid), key=lambda p: p == process.pid):
                _abort(pid)
            stdout, stderr = process.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            stderr = ""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise Hung(what, stderr or "") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...


def _session(sid: int) -> list[int]:
    """The live processes of session ``sid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[3] == str(sid) and fields[0] != "Z":
            found.append(int(entry))
    return found


def _abort(pid: int, wait_s: float = 5.0) -> None:
    """SIGABRT to ``pid`` (faulthandler prints its stacks), then wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGABRT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (fields := _stat(pid)) and fields[0] != "Z":
        time.sleep(0.05)


def run(root: Path, *args: str, netns: bool = False) -> subprocess.CompletedProcess:
    """:func:`start` and :func:`finish`."""
    return finish(start(root, *args, netns=netns), f"python {' '.join(args)} in {root}")


def _must(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise AssertionError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _copy(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@dataclass
class Recording:
    """A case recorded once: the project as it was before the run and after it, and the fresh
    run of the script with every statement written in (started after the recording, so that
    the recorded timings, from which flor splits a replay into segments, are the run's own)."""

    case: Case
    pristine: Path
    recorded: Path
    fresh: Path
    _reference: subprocess.Popen | None = None
    _done: subprocess.CompletedProcess | None = None  # how the fresh run ended
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # e_* questions call helpers that other questions log in, so each has a fresh run of its own.
    alone: dict = field(default_factory=dict)  # qid -> [folder, its fresh run: running, then how it ended]
    tstamps: list = field(default_factory=list)  # the recorded runs' (jobs') tstamps, one per case.argvs
    # The fresh runs of case.again: [folder, its fresh run: running, then how it ended].
    also: list = field(default_factory=list)

    def references(self, question: Question) -> list[tuple[str, Path]]:
        """(recorded tstamp, the database of the fresh run that holds its true values), for each
        recorded run: the case's argv, then ``case.again``'s."""
        found = [(self.tstamps[0], self.reference_for(question))]
        for tstamp, entry in zip(self.tstamps[1:], self.also):
            with self._lock:
                if isinstance(entry[1], subprocess.Popen):
                    entry[1] = finish(entry[1], f"{self.case.name}: fresh run of its second argv")
                _must(entry[1], f"{self.case.name}: fresh run of its second argv")
            found.append((tstamp, entry[0] / ".flor" / "flor.db"))
        return found

    def reference_for(self, question: Question) -> Path:
        """The database of the fresh run that holds ``question``'s true values."""
        if question.qid not in self.alone:
            return self.reference_db()
        with self._lock:
            folder, process = self.alone[question.qid]
            if isinstance(process, subprocess.Popen):
                self.alone[question.qid][1] = finish(process, f"{question.id}: fresh run")
            _must(self.alone[question.qid][1], f"{question.id}: fresh run of its statement alone")
        return folder / ".flor" / "flor.db"

    def reference_db(self) -> Path:
        """The fresh run's database, once that run has finished (questions may ask at once).

        A fresh run that hangs (seen in earlier sessions, dataloader_shuffle: a DataLoader forking
        workers beside flor's threads; not reproduced since, in 9 recordings and fresh runs 3 at a
        time under a load of about 20, and 2 pytest runs of the case, all with the exact-class generator
        search that coincided with it) is started once more from the
        pristine copy, with a warning naming the file that holds the stacks of the hung run and of
        its DataLoader workers (:func:`finish`), so that one hang does not fail every question of
        the case; a second hang fails them, with the stacks in the message."""
        with self._lock:
            if self._reference is not None:
                process, self._reference = self._reference, None
                try:
                    done = finish(process, f"{self.case.name}: fresh run")
                except Hung as hung:
                    note_hang(f"{self.case.name}: fresh run", hung, self.fresh.parent / "hung-fresh-run.txt")
                    shutil.rmtree(self.fresh)
                    source = (self.case.folder / SCRIPT).read_text()
                    _fresh_copy(self.pristine, self.fresh, all_statements_text(_only(source, _shared_by(source))))
                    again = start(self.fresh, *self.case.launch(self.case.argv), netns=self.case.netns)
                    try:
                        done = finish(again, f"{self.case.name}: fresh run, started once more")
                    except Hung as twice:  # kept, so that every question of the case says so
                        done = subprocess.CompletedProcess(again.args, again.returncode, "", str(twice))
                self._done = done
            # Every question of the case fails when the fresh run did, not only the first to ask.
            _must(self._done, f"{self.case.name}: fresh run with every statement")
        return self.fresh / ".flor" / "flor.db"

    def stop(self) -> None:
        """End the fresh run if no question waited for it (a failed check)."""
        for process in [self._reference] + [entry[1] for entry in [*self.alone.values(), *self.also]]:
            if isinstance(process, subprocess.Popen) and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its session: DataLoader workers too
                process.wait()


def record(case: Case, workdir: Path) -> Recording:
    """Commit the case's files into a new git project, prepare its data, record one run, and
    start the fresh reference run in its own copy."""
    source = (case.folder / SCRIPT).read_text()
    root = workdir / "recorded"
    _copy(case.folder, root)
    (root / SCRIPT).write_text(recorded_text(source))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", case.name)
    for script in case.prepare:
        _must(run(root, script), f"{case.name}: {script}")
    pristine = _copy(root, workdir / "pristine")
    try:
        done = run(root, *case.launch(case.argv), netns=case.netns)
    except Hung as hung:
        # As for the fresh run (Recording.reference_db): kept and shown at the end of the session
        # (conftest.py), recorded once more from the pristine copy; a second hang fails.
        note_hang(f"{case.name}: recording", hung, workdir / "hung-recording.txt")
        shutil.rmtree(root)
        _copy(pristine, root)
        done = run(root, *case.launch(case.argv), netns=case.netns)
    _must(done, f"{case.name}: recording")
    tstamps = [_only_tstamp(root / ".flor" / "flor.db", set())]
    if case.again is not None:  # a second recording, other args, in the same project
        _must(run(root, *case.launch(case.again), netns=case.netns), f"{case.name}: second recording")
        tstamps.append(_only_tstamp(root / ".flor" / "flor.db", set(tstamps)))
    text = all_statements_text(_only(source, _shared_by(source)))
    fresh = _fresh_copy(pristine, workdir / "fresh", text)
    recording = Recording(case, pristine, root, fresh, start(fresh, *case.launch(case.argv), netns=case.netns),
                          tstamps=tstamps)
    if case.again is not None:
        folder = _fresh_copy(pristine, workdir / "fresh-again", text)
        recording.also.append([folder, start(folder, *case.launch(case.again), netns=case.netns)])
    for qid in dict.fromkeys(q.qid for q in questions(case) if q.qid.startswith("e_") and own_fresh_run(source, q.qid)):
        folder = _fresh_copy(pristine, workdir / f"fresh-{qid}", all_statements_text(_only(source, qid.__eq__)))
        recording.alone[qid] = [folder, start(folder, SCRIPT, *case.argv)]
    return recording


def _only_tstamp(db: Path, known: set) -> str:
    """The one run (a job: its ranks' runs) in ``db`` whose tstamp is not in ``known``."""
    from flor.recording.job import split_tstamp

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        found = {split_tstamp(t)[0] for (t,) in connection.execute("SELECT tstamp FROM runs")} - known
    assert len(found) == 1, f"expected one new run in {db}, found {sorted(found)}"
    return found.pop()


# -- reading values back --------------------------------------------------------------------


def _values(db: Path, name: str, source: str, tstamp: str | None = None) -> tuple[str, dict]:
    """(tstamp, {loop context: [values in logging order]}) of ``name`` in one run of ``db``
    (the given run, else the only one). A loop context is a tuple of (loop, rank among
    same-named sibling loops, iteration) from the outermost loop in. A job (a distributed run:
    a run per rank, tstamps ``T+r0``, ``T+r1``, ...) is one run here, ``T``, and each of its
    contexts starts with ``("rank", r)``."""
    from flor.recording.job import split_tstamp

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        runs: dict[str, list] = {}
        for run_id, run_tstamp in connection.execute("SELECT run_id, tstamp FROM runs ORDER BY run_id"):
            base, rank = split_tstamp(run_tstamp)
            runs.setdefault(base, []).append((run_id, rank))
        if tstamp is None:
            assert len(runs) == 1, f"expected one run in {db}, found {len(runs)}"
            tstamp = next(iter(runs))
        found: dict[tuple, list] = {}
        for run_id, rank in runs[tstamp]:
            prefix = () if rank is None else (("rank", rank),)
            for context, values in _run_values(connection, run_id, name, source).items():
                found[prefix + context] = values
    return tstamp, found


def _run_values(connection, run_id: int, name: str, source: str) -> dict[tuple, list]:
    """{loop context: [values in logging order]} of ``name`` in the run ``run_id``."""
    from flor import values as flor_values

    contexts = {ctx: (parent, parent_iteration, loop) for ctx, parent, parent_iteration, loop in connection.execute(
        "SELECT ctx_id, parent_id, parent_iteration, loop_name FROM contexts WHERE run_id = ? ORDER BY ctx_id",
        (run_id,))}
    rows = connection.execute(
        "SELECT ctx_id, iteration, value, vtype FROM logs WHERE run_id = ? AND name = ? AND source = ? ORDER BY rowid",
        (run_id, name, source)).fetchall()
    ranks, seen = {}, {}
    for ctx, (parent, parent_iteration, loop) in contexts.items():
        key = (parent, parent_iteration, loop)
        seen[key] = seen.get(key, -1) + 1
        ranks[ctx] = seen[key]

    def path(ctx, iteration):
        parts = []
        while ctx is not None:
            parent, parent_iteration, loop = contexts[ctx]
            parts.append((loop, ranks[ctx], iteration))
            ctx, iteration = parent, parent_iteration
        return tuple(reversed(parts))

    found: dict[tuple, list] = {}
    for ctx, iteration, value, vtype in rows:
        found.setdefault(path(ctx, iteration), []).append(flor_values.decode(value, vtype))
    return found


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


def _relative(a, b) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-12)


def _hashes(root: Path) -> dict[str, tuple]:
    """(sha256, (mtime, inode)) of every file under ``root`` outside .flor/ and .git/ (links by
    their target): the bytes, and whether the file was written at all."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in (".flor", ".git")]
        for name in files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            stat = path.lstat()
            if path.is_symlink():
                found[relative] = ("link:" + os.readlink(path), (stat.st_mtime_ns, stat.st_ino))
            else:
                found[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), (stat.st_mtime_ns, stat.st_ino))
    return found


# -- one question ---------------------------------------------------------------------------


@dataclass
class Verdict:
    """What one replay did, against the fresh run."""

    question: Question
    returncode: int
    output: str
    expected: int = 0  # values the fresh run logged
    stored: int = 0  # values the replay stored
    wrong: int = 0  # stored, at a context the fresh run logged, with another value
    missing: int = 0  # logged by the fresh run, not stored by the replay
    extra: int = 0  # stored at a context the fresh run did not log
    max_relative: float | None = None
    kept_last: int = 0  # contexts logged several times where only the last value was stored
    changed: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)  # written again, with the same bytes
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    replay_s: float = 0.0
    plan: str = ""  # what `flor replay --dry-run` said it would do

    @property
    def values_ok(self) -> bool:
        return self.wrong == 0 and self.missing == 0 and self.extra == 0 and self.expected > 0

    @property
    def files_ok(self) -> bool:
        return not (self.changed or self.rewritten or self.added or self.removed)

    @property
    def refused_naming_it(self) -> bool:
        """Non-zero exit whose output names the state flor cannot restore (unfaithful cases)."""
        unseen = self.question.case.unseen
        return self.returncode != 0 and any(name in self.output for name in unseen)

    @property
    def ok(self) -> bool:
        if not self.files_ok or self.wrong or self.extra:
            return False  # wrong values or touched user files: never acceptable
        if self.question.case.unseen and self.refused_naming_it:
            return True
        return self.returncode == 0 and self.values_ok

    def problems(self) -> list[str]:
        found = []
        if self.returncode != 0:
            found.append(f"exit {self.returncode}")
        if self.wrong:
            rel = f", max rel diff {self.max_relative:.3g}" if self.max_relative is not None else ""
            found.append(f"{self.wrong} of {self.expected} values wrong{rel}")
        if self.missing:
            note = f" (only the last value of {self.kept_last} repeatedly logged contexts kept)" if self.kept_last else ""
            found.append(f"{self.missing} of {self.expected} values missing{note}")
        if self.extra:
            found.append(f"{self.extra} values at contexts the fresh run did not log")
        if self.expected == 0:
            found.append("the fresh run logged nothing")
        for label, paths in (("changed", self.changed), ("rewritten with the same bytes", self.rewritten),
                             ("created", self.added), ("deleted", self.removed)):
            if paths:
                found.append(f"user files {label}: {', '.join(paths)}")
        return found

    def summary(self) -> str:
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.problems())
        tail = _last_lines(self.output)
        return (f"{self.question.id} (workers {self.question.workers}): {status}\n    plan: {self.plan}\n"
                f"    flor replay said: {tail}")


def _plan_lines(text: str) -> str:
    keep = ("segment", "re-executed", "exec for", "memo for", "outside for", "reexec for")
    return " | ".join(line.strip() for line in text.splitlines()
                      if any(word in line for word in keep) and "estimated" not in line.split("(")[0][:8])


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and "[#" not in line]
    return " | ".join(lines[-count:])


def _compare(verdict: Verdict, expected: dict, got: dict) -> None:
    """Count into ``verdict`` how one run's replayed values (``got``) differ from the fresh run's."""
    verdict.expected += sum(len(v) for v in expected.values())
    verdict.stored += sum(len(v) for v in got.values())
    for context, want in expected.items():
        have = got.get(context, [])
        verdict.missing += max(0, len(want) - len(have))
        verdict.extra += max(0, len(have) - len(want))
        if 0 < len(have) < len(want) and _equal(have, want[-len(have):]):
            verdict.kept_last += 1  # a context logged several times, and only its last value stored
            continue
        for a, b in zip(have, want):
            if not _same(a, b):
                verdict.wrong += 1
                rel = _relative(a, b)
                if rel is not None:
                    verdict.max_relative = max(verdict.max_relative or 0.0, rel)
    verdict.extra += sum(len(v) for c, v in got.items() if c not in expected)


def check(question: Question, recording: Recording, workdir: Path) -> Verdict:
    """Replay ``question`` in a copy of the recorded project and compare with a fresh run."""
    source = (question.case.folder / SCRIPT).read_text()
    today = today_text(source, question.qid)

    replayed = _copy(recording.recorded, workdir / "replayed")
    (replayed / SCRIPT).write_text(today)
    if question.reexec:  # no checkpoint to restore: the replay re-executes every iteration
        with sqlite3.connect(replayed / ".flor" / "flor.db") as connection:
            connection.execute("DELETE FROM checkpoints")
    before = _hashes(replayed)
    command = ["-m", "flor", "replay", question.name]
    if question.workers > 1:
        command += ["--workers", str(question.workers)]
    started = time.monotonic()
    done = run(replayed, *command, netns=question.case.netns)
    replay_s = time.monotonic() - started
    after = _hashes(replayed)

    verdict = Verdict(question, done.returncode, done.stdout + done.stderr, replay_s=replay_s)
    case = question.case
    # Every recorded run (a case recorded twice: both) against the fresh run of its own argv.
    for number, (argv, (tstamp, reference)) in enumerate(zip(case.argvs, recording.references(question))):
        _, expected = _values(reference, question.name, "record")
        if os.environ.get("CORPUS_FRESH") == "each":
            alone = _fresh_copy(recording.pristine, workdir / f"fresh-{number}",
                                all_statements_text(_only(source, question.qid.__eq__)))
            _must(run(alone, *case.launch(argv), netns=case.netns), f"{question.id}: fresh run of today's script")
            _, logged_alone = _values(alone / ".flor" / "flor.db", question.name, "record")
            assert _equal(logged_alone, expected), f"{question.id}: today's script alone logs other values than with every statement"
        _, got = _values(replayed / ".flor" / "flor.db", question.name, "replay", tstamp)
        _compare(verdict, expected, got)
    verdict.changed = sorted(p for p in before if p in after and before[p][0] != after[p][0])
    verdict.rewritten = sorted(p for p in before if p in after and before[p][0] == after[p][0] and before[p] != after[p])
    verdict.added = sorted(p for p in after if p not in before)
    verdict.removed = sorted(p for p in before if p not in after)
    if not verdict.ok or os.environ.get("CORPUS_REPORT"):
        # The plan, for the failure message and the report: asked after the replay (a process
        # per question otherwise), with --force (the values are stored now), of the same
        # recorded run and timings, once the files have been hashed.
        verdict.plan = _plan_lines(run(replayed, *command, "--dry-run", "--force", netns=question.case.netns).stdout)
    return verdict

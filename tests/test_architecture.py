"""The shape of the package: no import circles, small modules, a short public API, a clean lint,
and a wheel that carries its license. These hold the layout that docs/architecture.md describes."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import flor

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "flor"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The flor modules that ``name`` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import x`: x is a module when there is one by that name, else a name in `module`.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles_among_flor_modules():
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ is imported before any of its submodules; an edge from a submodule to
    # its own package (`from .. import settings` aside) would be a cycle through the __init__.
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_800_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_public_api_is_short_and_deliberate():
    assert flor.__all__ == [
        "ArgumentError", "CheckpointError", "FlorError", "PropagationError", "ReplayError", "RunNotFoundError",
        "StoreError", "UsageError", "VersionControlError",
        "arg", "args", "best", "checkpointing", "commit", "dataframe", "extract", "load_checkpoint", "log", "loop", "query",
        "replay",
    ]
    assert flor.__all__ == sorted(flor.__all__)
    for name in flor.__all__:
        assert getattr(flor, name).__doc__, f"flor.{name} has no docstring"


def test_import_flor_imports_nothing_heavy():
    code = "import sys, flor; print(' '.join(sorted(m for m in ('torch', 'numpy', 'pandas', 'sqlite3', 'flask', 'lightning', 'pytorch_lightning', 'transformers', 'ray', 's3fs', 'fsspec') if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == ""


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    done = subprocess.run([ruff, "check", "flor", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_wheel_carries_the_license(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata


def test_sql_lives_in_the_store_package_only():
    """SQL strings and sqlite3 belong to flor/store/, with no exception (doctor's raw recovery
    reader is store/salvage.py)."""
    import re

    statement = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|REPLACE)\s", re.I)
    offenders = []
    for name, path in _modules().items():
        if name.startswith("flor.store"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "sqlite3" in modules:
                    offenders.append(f"{name}: imports sqlite3")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if statement.match(node.value):
                    offenders.append(f"{name}: {node.value[:40]!r}")
    assert offenders == []


def _docstring_nodes(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def _named(node: ast.AST) -> str | None:
    """The name an expression ends in (``flor_dir``, ``self.flor_dir``, ``Path(flor_dir)``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path" and node.args:
        node = node.args[0]
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _everywhere(rule, but: tuple[str, ...] = ()) -> list[str]:
    """What ``rule(name, tree)`` finds in every flor module but those named in ``but``."""
    found: list[str] = []
    for name, path in _modules().items():
        if name not in but:
            found += rule(name, ast.parse(path.read_text()))
    return found


# Where a .flor path is still built by hand, each with its reason. An entry names the exact
# expression, so a new one in the same module still fails.
PATHS_BUILT_ELSEWHERE = {
    # the suffix of the event files flor writes into a TensorBoard log dir, not the .flor/ folder
    ("flor.export.to_tensorboard", "'.flor'"),
}


def _hand_built_flor_paths(name: str, tree: ast.AST) -> list[str]:
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.rstrip("/") in (".flor", "flor.db"):
                found.append(repr(node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _named(node.left) == "flor_dir":
            found.append(ast.unparse(node))
        elif (isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Attribute)
              and node.value.attr == "path"):
            found.append(ast.unparse(node))  # a store's database path, climbed to .flor/ or the root
    return [f"{name}: {what}" for what in found if (name, what) not in PATHS_BUILT_ELSEWHERE]


def test_flor_paths_are_built_in_paths_only():
    """``.flor/`` and what lies under it are named by flor/environment/paths.py alone (ProjectPaths)."""
    assert _everywhere(_hand_built_flor_paths, but=("flor.environment.paths",)) == []


def test_the_path_rule_finds_hand_built_paths():
    code = 'db = root / ".flor" / "flor.db"\nblob = flor_dir / "objects" / d\nx = Path(flor_dir) / loc\ny = store.path.parent\n'
    assert len(_hand_built_flor_paths("m", ast.parse(code))) == 5
    assert _hand_built_flor_paths("m", ast.parse('"""Lives in .flor/ (a docstring)."""\np = paths.db\n')) == []


# FLOR_* names written outside settings.py that are not environment reads, each with its reason.
FLOR_NAMES_ELSEWHERE = {
    ("flor.ui.server", "FLOR_DATA"),
    ("flor.ui.server", "FLOR_BASE_PATH"),  # a key of the Flask app's config (--base-path), not an environment variable
    ("flor.checkpoints.audit", "FLOR_CHECKPOINT_STORE"),  # the setting's name shown in doctor's lines
}


def _flor_names(name: str, tree: ast.AST) -> list[str]:
    """Every string that is exactly a ``FLOR_*`` name (how an environment variable is read or set)."""
    import re

    docstrings = _docstring_nodes(tree)
    found = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
             and re.fullmatch(r"FLOR_[A-Z0-9_]+", node.value)]
    return [f"{name}: {value}" for value in found if (name, value) not in FLOR_NAMES_ELSEWHERE]


def test_flor_settings_are_read_in_settings_only():
    """Every FLOR_* environment variable is read (and, for flor's own children, set) through
    flor/environment/settings.py, which refuses a malformed value in one line."""
    assert _everywhere(_flor_names, but=("flor.environment.settings",)) == []


def test_the_settings_rule_finds_a_raw_read():
    code = 'import os\nurl = os.environ.get("FLOR_CHECKPOINT_STORE")\nenv["FLOR_REPLAY_CONFINE"] = "copy"\n'
    assert _flor_names("m", ast.parse(code)) == ["m: FLOR_CHECKPOINT_STORE", "m: FLOR_REPLAY_CONFINE"]
    assert _flor_names("m", ast.parse('raise UsageError("FLOR_X is malformed; unset it")\n')) == []


def _message_start(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return ""


def _prefixed_messages(name: str, tree: ast.AST) -> list[str]:
    """Messages that start with ``flor:`` although what prints them adds the prefix: warn() and
    error() of flor/messages.py, flor's exceptions and warnings (printed as ``flor: error: ...``)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        called = _named(node.func) or ""
        if called in ("warn", "error") or called.endswith(("Error", "Warning")):
            if _message_start(node.args[0]).startswith("flor:"):
                found.append(f"{name}: {called}({ast.unparse(node.args[0])[:60]})")
    return found


def test_one_flor_prefix_per_line():
    """``flor: warning: flor: ...`` came from messages that carried the prefix their printer adds."""
    assert _everywhere(_prefixed_messages) == []


def test_the_prefix_rule_finds_a_double_prefix():
    code = 'warn(f"flor: {x}; y")\nraise UsageError("flor: no")\nsay("flor: 3 items skipped")\nwarn("fine")\n'
    assert len(_prefixed_messages("m", ast.parse(code))) == 2


def test_an_unreadable_database_is_said_in_one_place():
    """``cannot read/open the flor database`` is store.connection.unreadable's line, raised by every reader."""
    import re

    said = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Constant, ast.JoinedStr)) and re.search(
                    r"cannot (read|open|\{doing\})( from)? the (flor )?database", ast.unparse(node)):
                said.append(name)
    assert said == ["flor.store.connection"]


def _api_privates(name: str, tree: ast.AST) -> list[str]:
    """Underscore names of flor.api that ``name`` imports or reaches for (``api._overrides``)."""
    found = []
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.endswith("api") and (module in ("api", "flor.api") or node.level):
                found += [alias.name for alias in node.names if alias.name.startswith("_")]
            if (module in ("", "flor") or node.level) and any(a.name == "api" for a in node.names):
                aliases |= {a.asname or "api" for a in node.names if a.name == "api"}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "flor.api"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"{node.value.id}.{node.attr}")
    return [f"{name}: {what}" for what in found]


def test_no_module_reaches_into_api_privates():
    """What the integrations (and everything else) need of flor.api is public there: collecting_run,
    begin_run, overridden, record_settings."""
    assert _everywhere(_api_privates, but=("flor.api",)) == []


def test_the_api_rule_finds_a_private_reach():
    code = "from .. import api\nfrom ..api import _overrides\nrun = api._collecting()\nx = api.current_run()\n"
    assert _api_privates("m", ast.parse(code)) == ["m: _overrides", "m: api._collecting"]


# Definitions of a plain value other than flor/values.py's, each with its reason.
PLAIN_ELSEWHERE = {
    # The code version of a loop body reads the values of constants by name: bytes and complex
    # are plain data there too, and a subclass (an IntEnum) counts; changing that would change
    # every recorded fingerprint (incremental runs would redo their items).
    "flor.recording.fingerprint",
    # flor ui's JSON: what a browser can show as itself (a numpy float is a float there).
    "flor.ui.data",
}


def _plain_definitions(name: str, tree: ast.AST) -> list[str]:
    """Literal collections of the plain types (bool, int, float, str): a definition of "plain"."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.Set, ast.List)):
            names = {e.id for e in node.elts if isinstance(e, ast.Name)}
            if {"bool", "int", "float", "str"} <= names:
                found.append(f"{name}: {ast.unparse(node)}")
    return found


def test_one_definition_of_a_plain_value():
    assert _everywhere(_plain_definitions, but=("flor.values", *PLAIN_ELSEWHERE)) == []
    assert _plain_definitions("m", ast.parse("ok = value is None or type(value) in (bool, int, float, str)\n"))
# Store reads whose rows are typed records (flor/logged.py, store.CheckpointRow): outside
# flor/store/ they are read by field name, never by position or by unpacking in field order.
ROW_READS = frozenset({"logs", "contexts", "iterations", "checkpoints", "item_paths"})


def _row_source(node: ast.AST) -> str | None:
    """The row read ``node`` iterates (``store.logs(...)``, ``records.contexts``, a variable or
    parameter named ``contexts``, either branch of ``... if ... else ...``), or None."""
    if isinstance(node, ast.IfExp):
        return _row_source(node.body) or _row_source(node.orelse)
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and node.attr in ROW_READS:
        return node.attr
    if isinstance(node, ast.Name) and node.id == "contexts":  # (a variable named `logs` holds PlainLog rows)
        return node.id
    return None


def positional_row_reads(tree: ast.AST) -> list[str]:
    """Where ``tree`` reads a store row by position: a loop over a row read whose target is a tuple
    (``for ctx, it, name, *_ in store.logs(...)``), or whose row is subscripted with a number or a
    slice (``c[0]``, ``c[:4]``)."""
    found = []
    loops: list[tuple[ast.AST, ast.AST, list[ast.AST]]] = []  # (target, iterable, where the row is used)
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            loops.append((node.target, node.iter, node.body))
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            used = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for generator in node.generators:
                loops.append((generator.target, generator.iter, used + generator.ifs))
    for target, iterable, used in loops:
        source = _row_source(iterable)
        if source is None:
            continue
        if isinstance(target, (ast.Tuple, ast.List)):
            found.append(f"line {target.lineno}: rows of .{source} unpacked by position")
            continue
        if not isinstance(target, ast.Name):
            continue
        for part in used:
            for sub in ast.walk(part):
                if (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id == target.id
                        and (isinstance(sub.slice, ast.Slice)
                             or (isinstance(sub.slice, ast.Constant) and isinstance(sub.slice.value, int)))):
                    found.append(f"line {sub.lineno}: a row of .{source} read as {target.id}[...]")
    return found


def test_store_rows_are_read_by_field_name_outside_the_store():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("flor.store"):
            continue
        offenders += [f"{name}: {where}" for where in positional_row_reads(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_positional_read_check_finds_one():
    tree = ast.parse(
        "for ctx, it, *_ in store.logs(run_id): pass\n"
        "known = [c[0] for c in item.records.contexts]\n"
        "for row in self.store.checkpoints(1):\n    print(row[2])\n"
        "ok = [c.ctx_id for c in records.contexts]\n"
    )
    assert sorted(where.split(":")[0] for where in positional_row_reads(tree)) == ["line 1", "line 2", "line 4"]


def test_store_row_reads_return_records(tmp_path):
    """What ROW_READS name really are records with fields, so reading them by name is possible."""
    from flor.logged import IterationStart, LoggedValue, LoopInstance
    from flor.store import Store

    store = Store.open(tmp_path / "flor.db")
    run_id, _ = store.insert_run(tstamp="2026-01-01T00:00:00", projid="p", filename="t.py", argv=[], cwd=".",
                                 started=0.0, args=[])
    store.write_batch(run_id, [LoopInstance(1, None, None, "epoch", 0.0, 1.0, 1)], [("loss", 0.5, 1, 0)],
                      special=[LoggedValue("note", "{}", "json", None, None)], iterations=[IterationStart(1, 0, 0.0)])
    store.add_checkpoint(run_id, 0, "end", "objects/x.json", 1, 1, 0.0, 0.0)
    (instance,) = store.contexts(run_id)
    assert isinstance(instance, LoopInstance) and instance.loop_name == "epoch"
    assert all(isinstance(v, LoggedValue) for v in store.logs(run_id)) and len(store.logs(run_id)) == 2
    assert isinstance(store.iterations(run_id)[0], IterationStart)
    (checkpoint,) = store.checkpoints(run_id)
    assert checkpoint.point == "end" and checkpoint.iteration == 0
    store.close()


def test_the_worker_run_is_no_recording_run():
    """A replay worker's run shares loop-context tracking with a recording's (composition), and
    nothing that must never run in a worker: begin, store writes, lineage, resume."""
    from flor.recording.loopcontext import LoopContext
    from flor.replay.worker_run import ReplayRun
    from flor.recording.run import Run

    assert not issubclass(ReplayRun, Run)
    assert not any(hasattr(ReplayRun, name) for name in ("begin", "write", "_write_lineage", "_resumed_outer_loop"))
    assert isinstance(Run({}, []).loops, LoopContext)
# A replay's driver side flows one way (docs/architecture.md, "Replay: the one-way flow"): the
# planner makes each run's plan (report.RunPlan, frozen) and alone replaces one; execution and
# job write what they find into the run's outcome (outcome.RunOutcome) through its methods alone.
PLAN_MAKERS = ("flor.replay.planner",)
OUTCOME_WRITERS = ("flor.replay.execution", "flor.replay.job")
OUTCOME_METHODS = {"add_stored", "add_time", "fail", "retract_errors", "merge", "finish"}
_MUTATORS = {"append", "extend", "insert", "remove", "pop", "popitem", "clear", "update", "setdefault", "add",
             "discard", "sort", "reverse", "__setitem__", "__delitem__"}


def _chain(node: ast.AST) -> list[str]:
    """The names an assignment target or a call reaches through (``item.outcome.timings["x"]``
    -> ``["item", "outcome", "timings"]``), outermost first."""
    names: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, (ast.Subscript, ast.Starred)):
            node = node.value
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return names[::-1]


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        found = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    elif isinstance(node, ast.Delete):
        found = node.targets
    else:
        return []
    flat: list[ast.AST] = []
    for target in found:
        flat += target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
    return flat


def _into(chain: list[str], owner: str, names: set[str]) -> bool:
    """Whether ``chain`` reaches a field of ``owner`` (``outcome``, ``plan``) and goes on into it."""
    return any(a == owner and b in names for a, b in zip(chain, chain[1:]))


def _replay_record_writes(name: str, tree: ast.AST) -> list[str]:
    """Writes to a run's plan or outcome that the one-way flow does not allow in module ``name``."""
    from dataclasses import fields

    from flor.replay.outcome import RunOutcome
    from flor.replay.report import RunPlan

    plan_fields = {f.name for f in fields(RunPlan)}
    outcome_fields = {f.name for f in fields(RunOutcome)}
    # flor.checkpoints.gc has a RunPlan of its own (which checkpoints a collection drops).
    replays = any(isinstance(node, ast.ImportFrom) and (node.module or "").endswith("report")
                  and any(alias.name == "RunPlan" for alias in node.names) for node in ast.walk(tree))
    found = []
    for node in ast.walk(tree):
        for target in _targets(node):
            chain = _chain(target)
            if _into(chain, "plan", plan_fields):
                found.append(f"changes a frozen plan: {ast.unparse(target)}")
            elif _into(chain, "outcome", outcome_fields) and name != "flor.replay.outcome":
                found.append(f"writes an outcome's field: {ast.unparse(target)}")
            elif chain[-1:] == ["plan"] and len(chain) > 1 and name not in PLAN_MAKERS:
                found.append(f"replaces a plan outside the planner: {ast.unparse(target)}")
            elif chain[-1:] == ["outcome"] and len(chain) > 1 and name != "flor.replay.report":
                found.append(f"replaces an outcome: {ast.unparse(target)}")
        if not isinstance(node, ast.Call):
            continue
        chain = _chain(node.func)
        if chain[-1:] == ["RunPlan"] and replays and name not in PLAN_MAKERS:
            found.append(f"makes a plan outside the planner: {ast.unparse(node.func)}(...)")
        elif chain[-1:] == ["replace"] and node.args and "plan" in _chain(node.args[0]) and name not in PLAN_MAKERS:
            found.append(f"replaces a plan outside the planner: {ast.unparse(node)}")
        elif chain[-1:] == ["__setattr__"] and chain[:1] == ["object"] and name != "flor.replay.report":
            found.append(f"sets an attribute past its guard: {ast.unparse(node)}")
        elif len(chain) > 2 and chain[-1] in _MUTATORS and (_into(chain[:-1], "outcome", outcome_fields)
                                                            or _into(chain[:-1], "plan", plan_fields)):
            if name != "flor.replay.outcome":
                found.append(f"changes a record's field in place: {ast.unparse(node.func)}(...)")
        elif (len(chain) > 1 and chain[-2] == "outcome" and chain[-1] in OUTCOME_METHODS
              and name not in OUTCOME_WRITERS):
            found.append(f"writes an outcome outside execution: {ast.unparse(node.func)}(...)")
    return [f"{name}: {what}" for what in found]


def test_plan_and_outcome_are_written_where_the_flow_says():
    """The planner alone makes and replaces a RunPlan (frozen, so nothing changes one in place);
    execution and job alone write a RunOutcome, and only through its methods; the report reads."""
    assert _everywhere(_replay_record_writes) == []


def test_the_flow_rule_finds_each_kind_of_write():
    code = ("item.plan = replace(item.plan, status='refused')\n"
            "item.plan.segments.append(segment)\n"
            "plan.names[0] = 'loss'\n"
            "from .report import RunPlan\n"
            "p = RunPlan(status='planned')\n"
            "item.outcome.stored += 1\n"
            "state.item.outcome.timings['store_s'] = 0.5\n"
            "outcome.errors.append('failed')\n"
            "del item.outcome.errors[1:]\n"
            "item.outcome = None\n"
            "item.outcome.fail('x')\n"
            "object.__setattr__(item, 'stored', 3)\n")
    found = _replay_record_writes("flor.replay.session", ast.parse(code))
    assert len(found) == 12, found  # the first line both replaces the plan and calls replace
    assert _replay_record_writes("flor.replay.execution", ast.parse("item.outcome.fail('x')\n")) == []
    assert _replay_record_writes("flor.replay.planner", ast.parse("item.plan = replace(item.plan, slice=None)\n")) == []
    assert _replay_record_writes("flor.replay.report", ast.parse("x = item.plan.segments[0]\n")) == []
    assert _replay_record_writes("flor.checkpoints.gc", ast.parse("p = RunPlan(run_id=1)\n")) == []  # not replay's


def test_a_run_record_refuses_a_field_write():
    """The rule's runtime half: a write through the run's record (``item.stored = 3``, as the
    record held every field before it was split) raises, naming whose field it is."""
    from flor.replay.report import RunPlan, RunReplay

    item = RunReplay(None, RunPlan(names=["loss"]))
    assert item.names == ["loss"] and item.stored == 0 and item.status == "planned"
    with pytest.raises(AttributeError, match="outcome"):
        item.stored = 3
    with pytest.raises(AttributeError, match="planner"):
        item.segments = []
    with pytest.raises(TypeError):  # read through, a container is a view: no write behind the methods
        item.errors.append("lost")
    with pytest.raises(TypeError):
        item.timings["store_s"] = 1.0
    assert item.outcome.errors == [] and item.outcome.timings == {}
    item.outcome.finish([1], False, [], accept_drift=False)
    assert (item.status, item.outcome.rejected) == ("drifted", [1])


# What a command handler may do (docs/architecture.md, "The command line calls the library"):
# parse (argparse did), call one library function that does the work, print what it returned.
_MAX_HANDLER_STATEMENTS = 20
_PRINTING_MODULES = {"output", "messages", "errors"}


def _is_renderer(name: str) -> bool:
    """Names of the library's pure renderings of a record (rows, text lines): printing, not work."""
    return name.startswith("text_") or name.endswith(("_row", "_rows")) or name.isupper()


def _handler_breaches(source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.split(".")[0] in ("store", "sqlite3") or node.module.startswith("flor.store")):
            found.append(f"cli.py imports {node.module}: the store is read by library functions")
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3" for a in node.names):
            found.append("cli.py imports sqlite3")
        if isinstance(node, ast.Name) and node.id in ("open_for_reading", "project_store", "Store"):
            found.append(f"cli.py opens the store ({node.id})")
    for handler in tree.body:
        if not (isinstance(handler, ast.FunctionDef) and handler.name.startswith("_cmd_")):
            continue
        statements = [n for n in ast.walk(handler) if isinstance(n, ast.stmt) and n is not handler]
        if len(statements) > _MAX_HANDLER_STATEMENTS:
            found.append(f"{handler.name} has {len(statements)} statements (at most {_MAX_HANDLER_STATEMENTS})")
        if any(isinstance(n, (ast.Try, ast.While)) for n in statements):
            found.append(f"{handler.name} has a try or while: errors are main()'s, loops the library's")
        loops = [n for n in statements if isinstance(n, (ast.For, ast.AsyncFor))]
        if any(inner is not outer and isinstance(inner, ast.For) for outer in loops for inner in ast.walk(outer)):
            found.append(f"{handler.name} nests loops: that is the library's work")
        work = {alias.asname or alias.name for n in statements if isinstance(n, ast.ImportFrom)
                and (n.module or "").split(".")[0] not in _PRINTING_MODULES for alias in n.names}
        calls = {n.func.id for n in ast.walk(handler) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id in work and not _is_renderer(n.func.id)}
        if len(calls) > 1:
            found.append(f"{handler.name} calls {len(calls)} library functions ({', '.join(sorted(calls))}); call one")
    return found


def test_cli_handlers_parse_call_one_library_function_and_print():
    assert _handler_breaches((PACKAGE / "cli.py").read_text()) == []


def test_the_cli_rule_catches_a_handler_that_walks_the_store():
    fat = '''
def _cmd_runs(args):
    from .query import open_for_reading, dataframe
    from .console import lines
    store = open_for_reading()
    try:
        for run in store.runs():
            for line in lines(store, run.run_id):
                print(line)
    finally:
        store.close()
    dataframe()
'''
    breaches = _handler_breaches(fat)
    assert any("opens the store" in b for b in breaches)
    assert any("try or while" in b for b in breaches)
    assert any("nests loops" in b for b in breaches)
    assert any("calls 3 library functions" in b for b in breaches)


def _listed_modules(text: str) -> set[str]:
    """The module files docs/architecture.md's layout names, as paths under flor/ (folders by indentation)."""
    block = text.split("```\nflor/\n", 1)[1].split("```", 1)[0]
    stack: list[tuple[int, str]] = []
    listed: set[str] = set()
    for line in block.splitlines():
        entry = line.split()[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if not entry.endswith((".py", "/")):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([folder for _, folder in stack] + [entry.rstrip("/")])
        if entry.endswith("/"):
            stack.append((indent, entry.rstrip("/")))
        else:
            listed.add(path)
    return listed


def test_the_layout_in_the_docs_is_the_layout_on_disk():
    """Every module sits where docs/architecture.md says, and the docs name no module that is gone:
    a newcomer finds recording, reading, the environment, the store, checkpoints, replay and the UI
    by folder, and the top level holds only the public API and what every part shares."""
    on_disk = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    listed = _listed_modules((REPO / "docs" / "architecture.md").read_text())
    unlisted = {path for path in on_disk - listed if not path.endswith("/__init__.py")}  # a package's own line says it
    assert sorted(unlisted) == [], "modules the docs' layout does not list"
    assert sorted(listed - on_disk) == [], "modules the docs' layout lists that are not there"
    top = {path for path in on_disk if "/" not in path}
    assert top == {"__init__.py", "__main__.py", "api.py", "cli.py", "doctor.py", "errors.py", "logged.py",
                   "messages.py", "values.py"}


def test_the_layout_reader_follows_folders():
    text = "```\nflor/\n  api.py   x\n  store/   y\n    logs.py  z\n  cli.py  w\n```\n"
    assert _listed_modules(text) == {"api.py", "store/logs.py", "cli.py"}


def test_no_public_name_is_also_a_top_level_module():
    """Importing ``flor.X`` binds the module to ``flor.X``: when query.py sat at flor's top level,
    the first ``flor.dataframe()`` (which imports it) turned ``flor.query`` into the module, and
    ``flor.query("SELECT ...")`` then raised "'module' object is not callable". ``replay`` is the
    one deliberate case: the package is itself callable (flor/replay/__init__.py)."""
    import pkgutil

    modules = {info.name for info in pkgutil.iter_modules(flor.__path__)}
    assert sorted(set(flor.__all__) & modules) == ["replay"]

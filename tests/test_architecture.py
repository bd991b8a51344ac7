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
    """SQL strings and sqlite3 belong to flor/store/ (and doctor's raw recovery reader)."""
    import re

    statement = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|REPLACE)\s", re.I)
    offenders = []
    for name, path in _modules().items():
        if name.startswith("flor.store") or name == "flor.doctor":
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
    from flor.loopcontext import LoopContext
    from flor.replay.worker_run import ReplayRun
    from flor.run import Run

    assert not issubclass(ReplayRun, Run)
    assert not any(hasattr(ReplayRun, name) for name in ("begin", "write", "_write_lineage", "_resumed_outer_loop"))
    assert isinstance(Run({}, []).loops, LoopContext)

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

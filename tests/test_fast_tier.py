"""The fast tier (`pytest -m "not slow"`) covers every module of flor: each module is loaded by a
test file that has tests outside the slow tier, through the file's own imports and the imports
of the flor modules they reach (inside functions too), or through the `flor` command the file
launches. Read from the files' syntax (no collection), with the same rules as pytest's markers:
``@pytest.mark.slow`` on a test, ``pytestmark`` in a file, and the whole folders that
tests/conftest.py marks."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import OPTIONAL_PACKAGES, SLOW_FOLDERS, top_level_imports_of
from tests.test_architecture import _imports, _modules

TESTS = Path(__file__).resolve().parent
# Modules the fast tier may leave to the slow one, and why: importing the framework itself takes
# from 10 s to minutes on a loaded 2-core machine (tests/test_fast_modules.py's framework checks
# and tests/test_integrations.py cover them).
SLOW_ONLY = {
    "flor.integrations": "the framework integrations' package: only its two modules import it",
    "flor.integrations.lightning": "imports Lightning",
    "flor.integrations.transformers": "imports transformers",
}
FLOR = TESTS.parent / "flor"


def _flor_modules() -> set[str]:
    found = set()
    for path in FLOR.rglob("*.py"):
        parts = path.relative_to(FLOR.parent).with_suffix("").parts
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _is_slow_mark(node: ast.AST) -> bool:
    """``pytest.mark.slow`` or ``mark.slow`` (called or not), alone or in a list."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(item) for item in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "slow"


def _tests(body) -> list[ast.AST]:
    found = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found.append(node)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            if not any(_is_slow_mark(d) for d in node.decorator_list):
                found += _tests(node.body)
    return found


def has_fast_tests(text: str, folders: tuple[str, ...] = ()) -> bool:
    """Whether a test file (its text, and the folders under tests/ it sits in) holds a test
    outside the slow tier."""
    if set(folders) & set(SLOW_FOLDERS):
        return False
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if _is_slow_mark(node.value):
                return False
    return any(not any(_is_slow_mark(d) for d in test.decorator_list) for test in _tests(tree.body))


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The flor modules the file imports by name (``import flor.x``, ``from flor.x import y``,
    ``from flor import x`` where x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & known


def launches_flor(text: str) -> bool:
    """Whether a test file runs the `flor` command (``project.flor(...)``, ``-m flor``)."""
    return ".flor(" in text or '"-m", "flor"' in text or "'-m', 'flor'" in text


def reached(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, frontier = set(), set(start)
    while frontier:
        name = frontier.pop()
        if name not in seen:
            seen.add(name)
            frontier |= graph.get(name, set())
    return seen


def fast_tier_modules() -> set[str]:
    """The flor modules the fast tier loads (see the module docstring)."""
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    start: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        text = path.read_text()
        if has_fast_tests(text, path.relative_to(TESTS).parts[:-1]):
            start |= imported_modules(path, known)
            if launches_flor(text):
                start.add("flor.__main__")
    return reached(start, graph)


def test_every_flor_module_is_loaded_by_the_fast_tier():
    missing = sorted(set(_modules()) - fast_tier_modules() - set(SLOW_ONLY))
    assert not missing, (f"the fast tier loads no test of {', '.join(missing)}: add a test that needs no training and "
                         "no process, or keep a fast test of the module out of the slow tier")


def test_the_rules_read_marks_as_pytest_does():
    cases = {
        "import pytest\n@pytest.mark.slow\ndef test_a(): pass\n": False,
        "import pytest\n@pytest.mark.slow\ndef test_a(): pass\ndef test_b(): pass\n": True,
        "import pytest\npytestmark = pytest.mark.slow\ndef test_a(): pass\n": False,
        "import pytest\npytestmark = [pytest.mark.slow, pytest.mark.filterwarnings('x')]\ndef test_a(): pass\n": False,
        "import pytest\n@pytest.mark.parametrize('x', [1])\ndef test_a(x): pass\n": True,
        "def helper(): pass\n": False,
    }
    for text, fast in cases.items():
        assert has_fast_tests(text) is fast, text
    assert not has_fast_tests("def test_a(): pass\n", ("realworld",))
    assert "flor.checkpoints.variables" in imported_modules(TESTS / "test_frame_locals.py", _flor_modules())
    assert reached({"a"}, {"a": {"b"}, "b": {"c"}, "d": {"a"}}) == {"a", "b", "c"}
    assert launches_flor('project.flor("runs")') and not launches_flor("import flor")
    assert set(SLOW_ONLY) <= set(_modules()), "a module SLOW_ONLY names is gone: remove it there"


def unguarded_optional_imports(text: str, folders: tuple[str, ...] = ()) -> list[str]:
    """The fast tests of a file that import an optional package (torch, ...) inside their body
    while the file does not import it at its top: without the package, the file is collected and
    the test fails instead of skipping (CI's Python 3.10/3.13 leg runs the fast tier without
    torch). ``pytest.importorskip`` is the guard; it is a call, not an import, so it is not listed."""
    if set(folders) & set(SLOW_FOLDERS):
        return []
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if _is_slow_mark(node.value):
                return []
    at_top = top_level_imports_of(tree)
    found = []
    for test in _tests(tree.body):
        if any(_is_slow_mark(d) for d in test.decorator_list):
            continue
        for node in ast.walk(test):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            found += [f"{test.name} (line {node.lineno}): import {name}" for name in names
                      if name in OPTIONAL_PACKAGES and name not in at_top]
    return found


def test_a_fast_test_imports_an_optional_package_only_where_it_skips_without_it():
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        folders = path.relative_to(TESTS).parts[:-1]
        found += [f"{path.relative_to(TESTS.parent)}: {item}"
                  for item in unguarded_optional_imports(path.read_text(), folders)]
    assert not found, ("a fast test imports an optional package that CI's torch-less leg lacks; use "
                       "`pytest.importorskip(...)` or mark it slow:\n" + "\n".join(found))


def test_the_optional_import_rule_finds_one():
    bare = "def test_a():\n    import torch\n"
    assert unguarded_optional_imports(bare) == ["test_a (line 2): import torch"]
    assert not unguarded_optional_imports("import torch\n" + bare)
    assert not unguarded_optional_imports("import pytest\ndef test_a():\n    torch = pytest.importorskip('torch')\n")
    assert not unguarded_optional_imports("import pytest\n@pytest.mark.slow\n" + bare)
    assert not unguarded_optional_imports(bare, ("realworld",))

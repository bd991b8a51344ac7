"""Plain variables that a checkpointed loop assigns or mutates: part of the loop's effect.

When replay skips a nested loop and restores its checkpoint, the rest of the outer body may read
variables that the loop assigned (the last ``loss``, a running total) or changed in place (a list
it appended to, a dict it updated, an object whose attribute it set). At record time flor finds
them from the syntax tree of the ``for`` statement over ``flor.loop`` and keeps the small ones
with the checkpoint; replay writes them back into the frame, a mutated list, dict or set in
place (other names may refer to the same object). Values too large or not representable (an
object with attributes set, say) are listed as missing, and replay falls back to re-executing
when the rest of the body reads one of them. Mutations the syntax tree cannot show (a helper
function that changes a global) are caught by the fidelity check instead.
"""

from __future__ import annotations

import ast
import ctypes
import re
import sys
import types
from functools import lru_cache

from ..environment.imported import imported
from ..values import is_plain

MAX_VALUE_BYTES = 1 << 20
MAX_ITEMS = 10_000


@lru_cache(maxsize=64)
def _parse(filename: str, mtime_ns: int):
    try:
        text = _cell_text(filename)
        if text is None:
            with open(filename, encoding="utf-8") as handle:
                text = handle.read()
        return ast.parse(text, filename)
    except (OSError, SyntaxError, ValueError):
        return None


def _cell_text(filename: str) -> str | None:
    """The source of a notebook cell (IPython keeps it in linecache under a file name that is
    never written), else None."""
    import linecache

    entry = linecache.cache.get(filename)
    if entry is None or len(entry) < 3 or entry[1] is not None:  # a real file's entry has an mtime
        return None
    return "".join(entry[2])


def _stamp(filename: str) -> int | None:
    """What tells a changed source apart: a file's mtime, a notebook cell's hash (a cell's text
    never changes: a re-run cell gets a new name); None when there is no source."""
    import os

    try:
        return os.stat(filename).st_mtime_ns
    except OSError:
        text = _cell_text(filename)
        return None if text is None else hash(text)


def _tree(filename: str):
    stamp = _stamp(filename)
    return None if stamp is None else _parse(filename, stamp)


def for_loop_at(tree: ast.AST, lineno: int) -> ast.For | None:
    """The innermost ``for`` statement whose header covers ``lineno``."""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            header_end = node.body[0].lineno - 1 if node.body else node.end_lineno
            if node.lineno <= lineno <= max(node.lineno, header_end):
                if best is None or node.lineno >= best.lineno:
                    best = node
    return best


# Methods that change their object in place (lists, dicts, sets, deques).
MUTATORS = frozenset({
    "append", "extend", "insert", "pop", "remove", "clear", "update", "add", "discard", "setdefault",
    "popitem", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate",
})


def assigned_names(node: ast.For) -> list[str]:
    """Names bound by the loop's target and body (in order of first appearance)."""
    names: dict[str, None] = {}
    for part in [node.target, *node.body]:
        for sub in ast.walk(part):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.setdefault(sub.id, None)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.setdefault(sub.name, None)
    return list(names)


def _base_name(node: ast.AST) -> str | None:
    """``x`` of ``x.a.b``, ``x[i][j]``, ``x.a[i]``."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def mutated_names(node: ast.For) -> list[str]:
    """Names whose object the loop body changes in place: ``x.attr = ...``, ``x[k] = ...``,
    ``del x[k]``, ``x[k] += ...``, ``x.append(...)`` and the other :data:`MUTATORS`."""
    names: dict[str, None] = {}
    for part in node.body:
        for sub in ast.walk(part):
            targets = []
            if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            elif isinstance(sub, ast.Delete):
                targets = sub.targets
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                  and sub.func.attr in MUTATORS):
                targets = [sub.func]
            for target in targets:
                for element in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                    if isinstance(element, (ast.Attribute, ast.Subscript)):
                        name = _base_name(element)
                        if name is not None:
                            names.setdefault(name, None)
    return list(names)


@lru_cache(maxsize=256)
def _names_at(filename: str, lineno: int, mtime_key: int) -> tuple[tuple[str, ...], frozenset[str]] | None:
    tree = _tree(filename)
    if tree is None:
        return None
    node = for_loop_at(tree, lineno)
    if node is None:
        return None
    assigned = assigned_names(node)
    mutated = [name for name in mutated_names(node) if name not in assigned]
    return tuple(assigned + mutated), frozenset(mutated)


def loop_effect(frame) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """(names the for loop that ``frame`` is executing assigns or mutates, those only mutated),
    or None if unknown."""
    filename = frame.f_code.co_filename
    mtime = _stamp(filename)
    if mtime is None:
        return None
    return _names_at(filename, frame.f_lineno, mtime)


def loop_names(frame) -> tuple[str, ...] | None:
    """Names assigned or mutated by the for loop that ``frame`` is executing, or None if unknown."""
    effect = loop_effect(frame)
    return None if effect is None else effect[0]


def _small(value, depth: int = 0) -> bool:
    if is_plain(value):
        return type(value) is not str or len(value) <= MAX_VALUE_BYTES
    torch = imported("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() <= MAX_VALUE_BYTES and value.layout == torch.strided
    numpy = imported("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return value.dtype != object and value.nbytes <= MAX_VALUE_BYTES
        if isinstance(value, numpy.generic):
            return False  # kept as an array-free value below would change its type; skip
    if depth < 3 and type(value) in (list, tuple) and len(value) <= MAX_ITEMS:
        return all(_small(v, depth + 1) for v in value)
    if depth < 3 and type(value) is dict and len(value) <= MAX_ITEMS:
        return all(type(k) in (str, int) and _small(v, depth + 1) for k, v in value.items())
    return False


def capture(frame, names: tuple[str, ...], exclude: tuple = (), on_error=None) -> tuple[dict, list[str]]:
    """(small values by name, names that could not be kept) from ``frame``; objects in
    ``exclude`` (the registered ones, whose state the checkpoint holds) are left out. A value
    that cannot be inspected is not kept, and ``on_error(name, exc)`` hears of it."""
    scope = frame.f_locals
    kept, missing = {}, []
    for name in names:
        if name not in scope:
            continue
        value = scope[name]
        if any(value is obj for obj in exclude) or isinstance(value, types.ModuleType):
            continue
        try:
            small = _small(value)
        except Exception as exc:  # a user type whose len() or isinstance hooks raise
            small = False
            if on_error is not None:
                on_error(name, exc)
        if small:
            kept[name] = value
        else:
            missing.append(name)
    return kept, missing


def _in_place(live, saved) -> bool:
    """Put ``saved`` into the live list, dict or set ``live``; False when they are not the same kind."""
    if type(live) is not type(saved):
        return False
    if isinstance(live, list):
        live[:] = saved
    elif isinstance(live, dict):
        live.clear()
        live.update(saved)
    elif isinstance(live, set):
        live.clear()
        live.update(saved)
    else:
        return False
    return True


def restore(frame, values: dict, inplace: frozenset | set = frozenset()) -> None:
    """Write ``values`` into the variables of ``frame`` (module or function); the names in
    ``inplace`` (mutated, not rebound, by the loop) into their live objects where they can."""
    if inplace:
        scope = frame.f_locals
        values = {name: value for name, value in values.items()
                  if not (name in inplace and name in scope and _in_place(scope[name], value))}
    if not values:
        return
    if frame.f_locals is frame.f_globals:  # module level: the script's top-level loop
        frame.f_globals.update(values)
        return
    if sys.version_info >= (3, 13):
        for name, value in values.items():
            frame.f_locals[name] = value
        return
    local_vars = frame.f_locals
    local_vars.update(values)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


# -- module globals that functions change -------------------------------------------------------
#
# A helper called in the skipped loop may change module state through `global` (a global step
# counter, a best score). The syntax tree shows it: the names a function of the project declares
# `global` are kept with the checkpoint, per module, when small.


@lru_cache(maxsize=256)
def _declared_globals(filename: str, mtime_key: int) -> tuple[str, ...]:
    tree = _tree(filename)
    if tree is None:
        return ()
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(dict.fromkeys(node.names))
    return tuple(names)


_modules_cache: dict = {}


def _project_modules(root) -> list:
    """The imported modules whose file lies in the project (not in an environment inside it).

    Scanning ``sys.modules`` (thousands of entries once torch is imported) at every outer
    iteration would cost training a millisecond each time: the answer is kept until a module is
    imported."""
    import os

    root = str(root)
    key = (root, len(sys.modules))
    cached = _modules_cache.get("key")
    if cached == key:
        return _modules_cache["found"]
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py") or not os.path.isabs(path):
            continue  # a relative __file__ (torch.ops: "_ops.py") names no file of the project
        if path.startswith(root + os.sep) and "site-packages" not in path:
            found.append((name, module, path))
    _modules_cache.update(key=key, found=found)
    return found


def capture_globals(root, on_error=None) -> tuple[dict, list[str]]:
    """({module: {name: small value}}, 'module.name' of those too big to keep) for the names the
    project's functions declare global; one that cannot be inspected is listed as not kept, and
    ``on_error('module.name', exc)`` hears of it."""
    import os

    kept: dict[str, dict] = {}
    missing: list[str] = []
    for name, module, path in _project_modules(root):
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            continue
        scope = vars(module)
        for global_name in _declared_globals(path, mtime):
            if global_name not in scope:
                continue
            value = scope[global_name]
            try:
                if isinstance(value, types.ModuleType) or callable(value):
                    continue
                small = _small(value)
            except Exception as exc:  # a user type whose hooks raise
                small = False
                if on_error is not None:
                    on_error(f"{name}.{global_name}", exc)
            if small:
                kept.setdefault(name, {})[global_name] = value
            else:
                missing.append(f"{name}.{global_name}")
    return kept, missing


def restore_globals(kept: dict) -> None:
    """Put the module globals that :func:`capture_globals` kept back into their modules."""
    for name, values in (kept or {}).items():
        module = sys.modules.get(name)
        if module is not None:
            vars(module).update(values)


# -- what changed that flor does not keep ---------------------------------------------------------
#
# The syntax tree cannot see everything a loop changes: a helper may append to a list it was
# handed, or set an attribute of an object. So, at record time, a cheap fingerprint of the outer
# frame's variables and of the project modules' globals is taken where the nested loop starts and
# where it ends; what changed in between and is not kept with the checkpoint is listed as
# *unrestored*, and replay re-executes rather than memoize when the rest of the body may read it.

_FINGERPRINT_ITEMS = 32


def _print_of(value, depth: int = 0):
    """A cheap, comparable summary of a value: plain data itself (bounded), a tensor by identity
    and version counter (bumped by in-place changes), an object by its attributes' prints."""
    if is_plain(value) or type(value) is bytes:
        return value if type(value) is not str or len(value) <= 256 else (len(value), hash(value))
    torch = imported("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return ("tensor", id(value), value._version)
    numpy = imported("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return ("array", id(value), value.shape, hash(value.tobytes()) if value.nbytes <= 4096 else value.nbytes)
    if depth >= 2:
        return ("object", id(value))
    if type(value) in (list, tuple, set, frozenset, dict):
        # A container changes its length when appended to; only small ones are looked into,
        # so that a print stays cheap (a list of 500 batches would cost milliseconds).
        if len(value) > _FINGERPRINT_ITEMS:
            return (type(value).__name__, id(value), len(value))
        if type(value) is dict:
            return ("dict", id(value), len(value), tuple((repr(k), _print_of(v, depth + 1)) for k, v in value.items()))
        items = value if type(value) in (list, tuple) else sorted(map(repr, value))
        return (type(value).__name__, id(value), len(value), tuple(_print_of(v, depth + 1) for v in items))
    if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
        return ("code", id(value))
    attributes = getattr(value, "__dict__", None)
    if type(attributes) is dict and depth == 0 and len(attributes) <= 4 * _FINGERPRINT_ITEMS:
        return ("object", id(value), tuple((k, _print_of(v, depth + 1)) for k, v in attributes.items()))
    return ("object", id(value))


class _Unprintable:
    """The print of a value that could not be inspected: equal to nothing, so the value counts
    as changed (and, unless kept, as not restored)."""

    def __eq__(self, other) -> bool:
        return False

    __hash__ = object.__hash__


def _safe_print(name: str, value, on_error):
    try:
        return _print_of(value)
    except Exception as exc:  # a user type whose repr, len or attributes raise
        if on_error is not None:
            on_error(name, exc)
        return _Unprintable()


def fingerprint(frame, root, exclude: tuple = (), on_error=None) -> dict[str, object]:
    """Prints of the outer frame's variables and of the project modules' globals, by name
    (``module:name`` for a module's); a value that cannot be inspected gets a print equal to
    nothing, and ``on_error(name, exc)`` hears of it."""
    prints: dict[str, object] = {}
    if frame is not None:
        for name, value in list(frame.f_locals.items()):
            if not any(value is obj for obj in exclude):
                prints[name] = _safe_print(name, value, on_error)
    main = frame.f_globals if frame is not None else None
    for module_name, module, _path in _project_modules(root):
        scope = vars(module)
        if scope is main:
            continue
        for name, value in list(scope.items()):
            if not name.startswith("__") and not any(value is obj for obj in exclude):
                prints[f"{module_name}:{name}"] = _safe_print(f"{module_name}:{name}", value, on_error)
    return prints


def changed(before: dict, after: dict) -> set[str]:
    """Names whose print differs between two fingerprints (new names included)."""
    return {name for name in before.keys() | after.keys() if before.get(name, _ABSENT) != after.get(name, _ABSENT)}


_ABSENT = object()


def lookup(frame, name: str):
    """The value a fingerprint name refers to: a variable of ``frame``, or ``module:name``."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        return getattr(sys.modules.get(module_name), attribute, None)
    return frame.f_locals.get(name) if frame is not None else None


# -- whether the rest of the body reads gradients ------------------------------------------------
#
# Parameters' .grad are kept with a checkpoint so that an optimizer step after the skipped loop
# (gradient accumulation) finds them. They are as large as the model, so they are kept only
# where the syntax tree shows that something after the loop may read them: a step of a registered
# optimizer (or of a scaler), backward, clipping, unscaling, or `.grad` itself, in the rest of the
# outer body or in the script's functions it calls. Anything the tree cannot show here is caught
# by the fidelity check, as for any other state.

_GRAD_WORDS = re.compile(r"\.grad\b|backward\(|clip_grad|unscale_")


@lru_cache(maxsize=256)
def _rest_of_body(filename: str, mtime_key: int, outer_line: int, current_line: int) -> str:
    """The source of what the outer loop at ``outer_line`` runs after ``current_line``, with the
    bodies of the script's functions it calls by name."""
    tree = _tree(filename)
    if tree is None:
        return "?"
    outer = for_loop_at(tree, outer_line)
    if outer is None:
        return "?"
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # What runs after the statement now executing (the nested loop, or the call of the helper
    # that holds it), not what is inside it.
    now = [n for n in ast.walk(outer) if isinstance(n, ast.stmt) and n is not outer
           and n.lineno <= current_line <= n.end_lineno]
    after = max((n.end_lineno for n in now), default=current_line)
    rest = [n for n in ast.walk(outer) if isinstance(n, ast.stmt) and n.lineno > after and n is not outer]
    texts = [ast.unparse(n) for n in rest]
    for node in rest:
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in functions:
                texts.append(ast.unparse(functions[call.func.id]))
    return "\n".join(texts)


def gradients_needed(outer_frame, steppers: tuple[str, ...]) -> bool:
    """Whether what the outer loop runs after the current line may read parameters' gradients;
    ``steppers``: names of the registered optimizers (and scalers) whose ``.step(`` reads them."""
    import os

    if outer_frame is None:
        return True
    filename = outer_frame.f_code.co_filename
    try:
        mtime = os.stat(filename).st_mtime_ns
    except OSError:
        return True
    start = outer_frame.f_code.co_firstlineno
    loop = None
    tree = _tree(filename)
    if tree is not None:
        candidates = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor))
                      and n.lineno <= outer_frame.f_lineno <= n.end_lineno and n.lineno >= start]
        loop = min(candidates, key=lambda n: n.lineno) if candidates else None
    if loop is None:
        return True
    text = _rest_of_body(filename, mtime, loop.lineno, outer_frame.f_lineno)
    if text == "?" or _GRAD_WORDS.search(text):
        return True
    return any(re.search(rf"\b{re.escape(name)}\.step\(", text) for name in steppers)


@lru_cache(maxsize=64)
def _source(filename: str, mtime_key: int) -> str:
    try:
        with open(filename, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, ValueError):
        return ""


def script_mentions(frame, words: tuple[str, ...]) -> bool:
    """Whether the source file of ``frame`` contains any of ``words``."""
    import os

    filename = frame.f_code.co_filename
    try:
        mtime = os.stat(filename).st_mtime_ns
    except OSError:
        return False
    text = _source(filename, mtime)
    return any(word in text for word in words)

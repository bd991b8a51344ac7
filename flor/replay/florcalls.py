"""Which calls of a script are calls of flor, following the names its imports give flor.

A script may write ``flor.log(...)``, or ``import flor as fl`` and ``fl.log(...)``, or
``from flor import log, loop as floop`` and ``log(...)``, ``floop(...)``. Replay's analyses
(where a statement stands relative to the checkpointed loops, and which statements are new
hindsight logs) must all see the same calls, so they share this one test.

>>> names = flor_names(ast.parse("import flor as fl\\nfrom flor import loop as floop\\n"))
>>> sorted(names.modules), names.functions
(['fl', 'flor'], {'floop': 'loop'})
>>> [is_flor_call(ast.parse(text).body[0].value, "loop", names) for text in ("fl.loop(1)", "floop(1)", "loop(1)")]
[True, True, False]
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# Statement fields that hold nested statements: imports are statements, found by walking these.
_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


@dataclass
class FlorNames:
    """The names under which a script reaches flor.

    ``modules``: names bound to the flor module; ``flor`` itself is always one, as replay has
    always read ``flor.x(...)`` as a flor call. ``functions``: local name -> the flor attribute
    it was imported as (``from flor import loop as floop`` gives ``{"floop": "loop"}``).
    ``star``: the script has ``from flor import *``, so every bare name of flor is flor's.
    """

    modules: set[str] = field(default_factory=lambda: {"flor"})
    functions: dict[str, str] = field(default_factory=dict)
    star: bool = False


def flor_names(module: ast.Module) -> FlorNames:
    """The names that ``module``'s imports (at any depth of its statements) bind to flor."""
    names = FlorNames()
    stack: list[ast.AST] = list(module.body)
    while stack:  # imports are statements: no need to visit expressions
        node = stack.pop()
        for name in _BLOCK_FIELDS:
            stack.extend(getattr(node, name, ()))
        if isinstance(node, ast.Import):
            names.modules.update(a.asname or a.name for a in node.names if a.name == "flor")
        elif isinstance(node, ast.ImportFrom) and node.module == "flor" and not node.level:
            for alias in node.names:
                if alias.name == "*":
                    names.star = True
                else:
                    names.functions[alias.asname or alias.name] = alias.name
    return names


def is_flor_call(node: ast.AST, attribute: str, names: FlorNames) -> bool:
    """Whether ``node`` calls flor's ``attribute`` (``"log"``, ``"loop"``, ``"checkpointing"``):
    as ``M.attribute(...)`` with ``M`` a name of the flor module, or as a bare name imported from
    flor under any alias."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == attribute and isinstance(func.value, ast.Name) and func.value.id in names.modules
    if isinstance(func, ast.Name):
        if func.id in names.functions:
            return names.functions[func.id] == attribute
        return names.star and func.id == attribute
    return False


def logged_names(module: ast.Module) -> list[str]:
    """The constant names of every ``flor.log`` call in ``module``, in order of appearance.

    >>> logged_names(ast.parse("import flor as fl\\nfl.log('loss', 1)\\nfl.log(name, 2)\\n"))
    ['loss']
    """
    names = flor_names(module)
    found: dict[str, None] = {}
    for node in ast.walk(module):
        if is_flor_call(node, "log", names):
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.setdefault(arg.value)
    return sorted(found, key=list(found).index)

r"""Place hindsight statements into an old version of a training script (DESIGN §5).

A user adds ``flor.log(...)`` statements to today's script; replay must run them inside each past
run's own code. This package finds the new statements (:func:`find_new_statements`) and inserts
them into an old version (:func:`propagate`), or refuses with a one-line reason. Placing a statement
in the wrong place would silently log a wrong value, so every doubt is a refusal.

How it works, in three steps:

1. **Match** the statements of the two syntax trees (``trees``), GumTree-style (``matching``).
   Top-down: statements whose whole subtree is identical (``ast.dump`` without positions) and
   unique in both files are mapped, with their subtrees; then the same with variable names blanked
   out (renames), for larger statements. Bottom-up: a container (loop, ``with``, ``if``, function)
   is mapped to the old container that holds most of its mapped descendants, or a function to the
   old function of the same name, or a ``flor.loop`` loop to the old loop of the same name and
   iterable, whatever their bodies became. Recovery: inside each pair of mapped blocks, the
   remaining statements are aligned in order, by identity, by identity up to renaming, then by
   similarity; a block with the same header counts as similar however its body changed.
2. **Place** each new statement into the old counterpart of its enclosing block (``anchors``,
   ``placement``): every mapped sibling constrains the position (before it or after it; the
   adjacent ones weigh most), positions where a name that the statement reads is not yet assigned
   are ruled out (``scopes``), and the best position must be unique, or else follow the nearest
   anchor that sits right next to the statement today. A call of a helper function that one version has and the
   other has inline stands for that inline code (``inline``: today's ``train_epoch(net)`` for the
   old inline step loop, and the reverse).
3. **Rename and insert**: variables are renamed to their old names by majority vote over the
   mapped statements of the same scopes (``renaming``; through the arguments of such a helper call,
   too); the statement's text lines are inserted, re-indented, and nothing else in the old file
   changes (``splice``, ``text``). The result is compiled and checked: removing the inserted
   statements must give back exactly the old syntax tree.

Modules, each importing only those listed before it: ``results`` (what comes back), ``syntax``,
``scopes``, ``text``, ``trees``, ``matching``, ``inline``, ``renaming``, ``splice``, ``anchors``,
``placement``, ``propagator`` (the entry points).

>>> old = "import flor\nmodel = Net()\nfor e in flor.loop('epoch', range(5)):\n    train(model)\n"
>>> today = old.replace("model", "net") + "    flor.log('norm', net.norm())\n"
>>> placement = propagate(today, old)
>>> placement.ok, placement.confidence
(True, 1.0)
>>> print(placement.source, end="")
import flor
model = Net()
for e in flor.loop('epoch', range(5)):
    train(model)
    flor.log('norm', model.norm())
"""

from __future__ import annotations

from .propagator import DEFAULT_THRESHOLD, Propagator, find_new_statements, propagate
from .results import InsertedStatement, NewStatement, Placement

__all__ = [
    "DEFAULT_THRESHOLD",
    "InsertedStatement",
    "NewStatement",
    "Placement",
    "Propagator",
    "find_new_statements",
    "propagate",
]

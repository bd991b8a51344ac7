"""Modules already imported, as ``sys.modules`` lookups that never return one half-imported.

flor asks "does the script use numpy (torch)?" by looking in ``sys.modules`` instead of importing
it, so that a script without numpy never pays for it. But flor's own threads import numpy (the
flush thread builds columnar blocks with it), and a module is in ``sys.modules`` from the moment
its import *starts*: the training thread could find numpy there without ``ndarray`` or ``random``
yet ("partially initialized module 'numpy' has no attribute 'ndarray'", 4 runs in 10 of a script
that checkpoints a plain object). A module that another thread is still importing cannot have
made any value the caller holds, nor been seeded by the script, so it counts as not imported.

Importing numpy in the main thread before starting the flush thread would also close the race,
but only for that one thread, and at the cost of numpy's import in every run that logs nothing.

>>> imported("sys") is sys
True
"""

from __future__ import annotations

import sys


def imported(name: str):
    """The module ``name`` if its import has finished, else None (never imports it)."""
    module = sys.modules.get(name)
    if module is None:
        return None
    # importlib marks a module's spec as initialising until its code has run; CPython itself reads
    # this flag to say "partially initialized module".
    if getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module

"""The ground truth of a hindsight value: the statement run in a fresh run, inside ``observed()``.

A hindsight value is what the statement computes at that point of the recorded run, and the
recorded run never ran it. So the fresh run that the tests compare replays with runs each
statement here, which puts back everything the statement could change, by means that share no
code with flor's own isolation (``flor/replay/isolation.py``): ``torch.random.fork_rng`` for
torch, the python and numpy states, a deep copy of every top-level module's ``state_dict`` and the
train/eval flag of each submodule (found through the garbage collector, not through flor), and the
state of every DataLoader's and sampler's own generator.

The file is copied next to the fresh run's script, which calls
``with __import__("_flor_truth").observed():``.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import random


class _Kinds(dict):
    """type -> whether its objects are looked at, asked of ``test`` once per type."""

    def __init__(self, test) -> None:
        super().__init__()
        self.test = test

    def __missing__(self, kind) -> bool:
        self[kind] = answer = self.test(kind)
        return answer


def _found(torch) -> tuple[list, list]:
    """(root modules, the DataLoaders' and samplers' own generators), from one pass over the
    collector's objects (some 10^5 with torch loaded). The fresh run observes statements at every
    step, so this pass is most of its cost: two passes with ``isinstance`` in Python took about
    2.4 times as long. By ``type(o)``: a real module's or loader's type is its class, and no
    ``__class__`` property is called (torch's deprecated module proxies warn on each)."""
    holders = (torch.utils.data.DataLoader, torch.utils.data.Sampler)
    kept = _Kinds(lambda kind: issubclass(kind, (torch.nn.Module, *holders)))
    objects = gc.get_objects()
    # One pass, in C but for the first object of each type (the test runs in _Kinds.__missing__).
    found = list(itertools.compress(objects, map(kept.__getitem__, map(type, objects))))
    modules = [o for o in found if isinstance(o, torch.nn.Module)]
    loaders = [o for o in found if isinstance(o, holders)]
    children = {id(c) for m in modules for c in m.children()}
    generators = {}
    for o in loaders:
        for g in (getattr(o, "generator", None), getattr(getattr(o, "sampler", None), "generator", None)):
            if isinstance(g, torch.Generator):
                generators[id(g)] = g
    return [m for m in modules if id(m) not in children], list(generators.values())


@contextlib.contextmanager
def observed():
    import numpy
    import torch

    py, np_state = random.getstate(), numpy.random.get_state()
    roots, found_generators = _found(torch)
    states = [copy.deepcopy(m.state_dict()) for m in roots]
    modes = [(s, s.training) for m in roots for s in m.modules()]
    generators = [(g, g.get_state()) for g in found_generators]
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    numpy.random.set_state(np_state)
    with torch.no_grad():
        for module, state in zip(roots, states):
            # Only what changed is copied back: a load_state_dict would bump every parameter's
            # version and break the backward of a loss computed before the statement.
            for key, value in module.state_dict(keep_vars=True).items():
                if isinstance(value, torch.Tensor) and not torch.equal(value, state[key]):
                    value.copy_(state[key])
    for module, training in modes:
        module.training = training
    for g, state in generators:
        g.set_state(state)

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
import random


def _roots(torch) -> list:
    modules = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    children = {id(c) for m in modules for c in m.children()}
    return [m for m in modules if id(m) not in children]


def _generators(torch) -> list:
    found = {}
    for o in gc.get_objects():
        if isinstance(o, (torch.utils.data.DataLoader, torch.utils.data.Sampler)):
            for g in (getattr(o, "generator", None), getattr(getattr(o, "sampler", None), "generator", None)):
                if isinstance(g, torch.Generator):
                    found[id(g)] = g
    return list(found.values())


@contextlib.contextmanager
def observed():
    import numpy
    import torch

    py, np_state = random.getstate(), numpy.random.get_state()
    roots = _roots(torch)
    states = [copy.deepcopy(m.state_dict()) for m in roots]
    modes = [(s, s.training) for m in roots for s in m.modules()]
    generators = [(g, g.get_state()) for g in _generators(torch)]
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

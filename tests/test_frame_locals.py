"""Memoized variables written back into a running function (``flor/checkpoints/variables.py``
``restore``): through ``PyFrame_LocalsToFast`` before Python 3.13, through the write-through
``frame.f_locals`` view from 3.13 on. Plain Python objects only, so that CI's Python 3.10 and 3.13
legs (which install flor without torch) run both paths, not only the 3.11 one."""

from __future__ import annotations

import sys

from flor.checkpoints import variables


def test_restored_values_reach_the_fast_locals_of_the_running_function():
    def body():
        step, best, history = 0, None, [1.0]
        alias = history  # a mutated container is restored in place: other names see it
        variables.restore(sys._getframe(), {"step": 7, "best": 0.5, "history": [1.0, 2.0]}, frozenset({"history"}))
        return step, best, history, alias

    step, best, history, alias = body()
    assert (step, best, history) == (7, 0.5, [1.0, 2.0])
    assert alias is history


def test_a_variable_a_closure_reads_is_restored_in_its_cell():
    def body():
        count = 0

        def read():
            return count

        variables.restore(sys._getframe(), {"count": 3})
        return count, read()

    assert body() == (3, 3)


def test_a_local_not_yet_bound_is_bound():
    def body():
        if False:  # noqa: SIM108 - x is a local of body, unbound until restored
            x = 0
        variables.restore(sys._getframe(), {"x": 1})
        return x  # noqa: F821

    assert body() == 1


def test_the_callers_frame_is_written_from_a_helper():
    def helper(frame):
        variables.restore(frame, {"total": 5})

    def body():
        total = 1
        helper(sys._getframe())
        return total

    assert body() == 5


def test_module_level_variables_go_to_the_globals():
    namespace: dict = {"variables": variables, "sys": sys}
    exec("epoch = 0\nvariables.restore(sys._getframe(), {'epoch': 4})\n", namespace)
    assert namespace["epoch"] == 4

"""flor.replay.florcalls: the one test of "is this a flor call" that replay's analyses share."""

import ast

import pytest

from flor.replay.florcalls import flor_names, is_flor_call


def call(text: str) -> ast.Call:
    return ast.parse(text).body[0].value


def test_module_aliases_and_imported_names():
    names = flor_names(ast.parse("import flor as fl, numpy as np\nif True:\n    from flor import log, loop as floop\n"))
    assert names.modules == {"flor", "fl"} and names.functions == {"log": "log", "floop": "loop"}
    assert is_flor_call(call("fl.log('a', 1)"), "log", names)
    assert is_flor_call(call("flor.log('a', 1)"), "log", names)  # flor itself, always
    assert is_flor_call(call("log('a', 1)"), "log", names)
    assert is_flor_call(call("floop('e', x)"), "loop", names)
    assert not is_flor_call(call("loop('e', x)"), "loop", names)  # not imported from flor
    assert not is_flor_call(call("floop('e', x)"), "log", names)
    assert not is_flor_call(call("np.log(1)"), "log", names)
    assert not is_flor_call(call("fl.x.log(1)"), "log", names)
    assert not is_flor_call(ast.parse("fl.log").body[0].value, "log", names)  # not a call


@pytest.mark.slow
def test_imports_that_are_not_flor():
    names = flor_names(ast.parse("import florx as fl\nfrom .flor import log\nfrom flor.api import loop\n"))
    assert names.modules == {"flor"} and names.functions == {} and not names.star
    assert not is_flor_call(call("fl.log('a', 1)"), "log", names)
    assert not is_flor_call(call("log('a', 1)"), "log", names)


def test_star_import_makes_every_bare_name_of_flor_a_flor_call():
    names = flor_names(ast.parse("from flor import *\n"))
    assert is_flor_call(call("loop('e', x)"), "loop", names)
    assert not is_flor_call(call("loop('e', x)"), "log", names)


def test_docstring_examples_run():
    import doctest

    import flor.replay.florcalls as module

    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0

"""Tests of flor.replay.propagation: unit tests, and property tests over generated training scripts.

The hand-written corpus of real-looking version pairs is run by tests/propagation/test_corpus.py.
"""

from __future__ import annotations

import ast
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flor.errors import PropagationError
from flor.replay.propagation import (
    InsertedStatement,
    NewStatement,
    Placement,
    Propagator,
    find_new_statements,
    propagate,
)

OLD = textwrap.dedent(
    """\
    import flor
    import torch

    net = Net(flor.arg("hidden", 500))
    optimizer = torch.optim.Adam(net.parameters())

    with flor.checkpointing(model=net, optimizer=optimizer):
        for epoch in flor.loop("epoch", range(5)):
            for step, (x, y) in flor.loop("step", enumerate(loader)):
                loss = criterion(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                flor.log("loss", loss.item())
            acc = evaluate(net)
            flor.log("val_acc", acc)
    """
)
GRAD = '            flor.log("grad_norm", sum(p.grad.norm() for p in net.parameters()))\n'


def insert_after(src: str, anchor: str, text: str) -> str:
    lines = src.splitlines(keepends=True)
    [i] = [i for i, line in enumerate(lines) if line.strip() == anchor]
    return "".join(lines[: i + 1]) + text + "".join(lines[i + 1 :])


TODAY = insert_after(OLD, "loss.backward()", GRAD)


# -- find_new_statements ------------------------------------------------------------------------------


def test_find_new_statements_reports_the_hindsight_statement():
    [new] = find_new_statements(TODAY, OLD)
    assert isinstance(new, NewStatement)
    assert (new.lineno, new.end_lineno) == (13, 13)
    assert new.source == GRAD.strip()
    assert new.names == ["grad_norm"]


def test_find_new_statements_ignores_other_changes_and_old_log_names():
    today = OLD.replace("optimizer.step()", "optimizer.step()\n            scheduler.step()")
    today = today.replace('flor.log("val_acc", acc)', 'flor.log("val_acc", acc * 100)')
    assert find_new_statements(today, OLD) == []


@pytest.mark.slow
def test_find_new_statements_takes_a_new_block_whole():
    block = '            if step % 10 == 0:\n                flor.log("lr", optimizer.param_groups[0]["lr"])\n'
    [new] = find_new_statements(insert_after(OLD, "loss.backward()", block), OLD)
    assert new.source == 'if step % 10 == 0:\n    flor.log("lr", optimizer.param_groups[0]["lr"])'
    assert (new.lineno, new.end_lineno) == (13, 14)


@pytest.mark.slow
def test_find_new_statements_knows_log_imported_from_flor():
    today = TODAY.replace("import flor\n", "import flor\nfrom flor import log as flog\n").replace(
        'flor.log("grad_norm"', 'flog("grad_norm"'
    )
    assert [s.names for s in find_new_statements(today, OLD)] == [["grad_norm"]]


def spelled(src: str, header: str, module: str, loop: str, log: str) -> str:
    """``src`` with flor imported under ``header`` and its calls spelled ``module.x``, ``loop``, ``log``."""
    src = src.replace("import flor\n", header).replace("flor.loop(", loop + "(").replace("flor.log(", log + "(")
    return src.replace("flor.", module + ".")


ALIASES = [
    ("import flor as fl\n", "fl", "fl.loop", "fl.log"),
    ("import flor\nfrom flor import loop, log\n", "flor", "loop", "log"),
    ("import flor\nfrom flor import loop as floop, log as flog\n", "flor", "floop", "flog"),
    ("import flor\nfrom flor import *\n", "flor", "loop", "log"),
]


@pytest.mark.parametrize("aliases", ALIASES, ids=["as-fl", "from-import", "from-import-as", "star"])
def test_flor_under_other_names_is_found_and_placed_the_same(aliases):
    # A new validation loop: the statement inside is new, but never widened to its flor.loop.
    block = '        for v in flor.loop("val", range(2)):\n            flor.log("v", v)\n'
    today, old = insert_after(OLD, 'flor.log("val_acc", acc)', block), OLD
    expected = [(s.lineno, s.end_lineno, s.names) for s in find_new_statements(today, old)]
    assert expected == [(18, 18, ["v"])]
    today, old = spelled(today, *aliases), spelled(old, *aliases)
    shift = aliases[0].count("\n") - 1
    found = [(s.lineno - shift, s.end_lineno - shift, s.names) for s in find_new_statements(today, old)]
    assert found == expected
    grad = spelled(TODAY, *aliases)
    placement = propagate(grad, spelled(OLD, *aliases))
    assert placement.ok and placement.source == grad and placement.inserted[0].names == ["grad_norm"]


def test_find_new_statements_raises_on_unparsable_source():
    with pytest.raises(PropagationError, match="today's script does not parse"):
        find_new_statements("def (:\n", OLD)


# -- propagate: placements ------------------------------------------------------------------------------


@pytest.mark.slow
def test_propagate_into_the_same_version_gives_today():
    placement = propagate(TODAY, OLD)
    assert isinstance(placement, Placement)
    assert placement.ok and placement.source == TODAY
    assert placement.confidence == 1.0
    [ins] = placement.inserted
    assert isinstance(ins, InsertedStatement)
    assert (ins.lineno, ins.end_lineno, ins.names) == (13, 13, ["grad_norm"])
    assert ins.text == GRAD.rstrip("\n")
    assert "after `loss.backward()`" in placement.reason


@pytest.mark.slow
def test_propagate_renames_variables_but_not_strings_attributes_or_keywords():
    old = OLD.replace("net", "model").replace("Net(", "Model(")
    statement = '            flor.log("net", net.net_size(net=net), str(net))  # net\n'
    placement = propagate(insert_after(OLD, "loss.backward()", statement), old)
    assert placement.ok, placement.reason
    expected = '            flor.log("net", model.net_size(net=model), str(model))  # net\n'
    assert placement.source == insert_after(old, "loss.backward()", expected)
    assert placement.inserted[0].renames == {"net": "model"}


def test_propagate_keeps_crlf_and_adds_a_final_newline():
    old = "import flor\r\nnet = Net()\r\ntrain(net)"
    placement = propagate('import flor\nnet = Net()\ntrain(net)\nflor.log("n", len(net))\n', old)
    assert placement.ok
    assert placement.source == 'import flor\r\nnet = Net()\r\ntrain(net)\r\nflor.log("n", len(net))\r\n'


def test_propagate_never_reindents_inside_a_string():
    today = 'import flor\nfor e in flor.loop("e", range(3)):\n    train()\n    flor.log("note", """a\n  b""")\n'
    old = 'import flor\nfor e in flor.loop("e", range(3)):\n\ttrain()\n'
    placement = propagate(today, old)
    assert placement.ok
    assert placement.source == old + '\tflor.log("note", """a\n  b""")\n'


def test_propagate_with_explicit_statements_and_empty_list():
    [new] = find_new_statements(TODAY, OLD)
    assert propagate(TODAY, OLD, [new]).source == TODAY
    empty = propagate(TODAY, OLD, [])
    assert empty.ok and empty.source == OLD and empty.inserted == []


def test_propagate_reports_a_statement_already_present():
    [new] = find_new_statements(TODAY, OLD)
    placement = propagate(TODAY, TODAY, [new])
    assert placement.ok and placement.source == TODAY
    assert "already in this version" in placement.reason
    assert placement.inserted[0].lineno == 13


def test_diff_is_a_unified_diff_of_the_insertion():
    diff = propagate(TODAY, OLD).diff(OLD, filename="train.py")
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n")
    assert [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")] == [
        "+" + GRAD.rstrip("\n")
    ]


@pytest.mark.slow
def test_statement_moves_into_the_helper_function_of_the_old_version():
    old = textwrap.dedent(
        """\
        import flor

        def train_epoch(model, data):
            for x, y in flor.loop("step", data):
                loss = model.loss(x, y)
                loss.backward()
                model.update()

        net = Net()
        for epoch in flor.loop("epoch", range(5)):
            train_epoch(net, loader)
        """
    )
    today = textwrap.dedent(
        """\
        import flor

        net = Net()
        for epoch in flor.loop("epoch", range(5)):
            for x, y in flor.loop("step", loader):
                loss = net.loss(x, y)
                loss.backward()
                flor.log("gn", net.grad_norm())
                net.update()
        """
    )
    placement = propagate(today, old)
    assert placement.ok, placement.reason
    assert placement.source == insert_after(old, "loss.backward()", '        flor.log("gn", model.grad_norm())\n')


# -- propagate: refusals ------------------------------------------------------------------------------


def refused(today: str, old: str, **kw) -> str:
    placement = propagate(today, old, **kw)
    assert not placement.ok
    assert placement.source == old
    assert "\n" not in placement.reason
    return placement.reason


@pytest.mark.slow
def test_refuses_a_name_that_the_old_version_lacks():
    today = insert_after(OLD, "loss.backward()", '            flor.log("lr", scheduler.get_last_lr())\n')
    reason = refused(today, OLD)
    assert reason == "could not place flor.log('lr') (line 13): `scheduler` is not defined in this version"


def test_refuses_an_anchor_that_moved_into_a_conditional():
    today = OLD.replace('flor.log("val_acc", acc)', 'flor.log("val_acc", acc)\n        flor.log("err", 1 - acc)')
    old = OLD.replace(
        '        acc = evaluate(net)\n        flor.log("val_acc", acc)\n',
        '        if epoch % 2:\n            acc = evaluate(net)\n            flor.log("val_acc", acc)\n',
    )
    assert "ambiguous" in refused(today, old)


def test_refuses_a_place_inside_a_one_line_block():
    today = 'import flor\nfor x in data:\n    a(x)\n    flor.log("x", x)\n'
    assert "shares a line" in refused(today, "import flor\nfor x in data: a(x)\n")


def test_refuses_a_statement_that_wraps_an_old_one():
    today = OLD.replace("acc = evaluate(net)", 'acc = flor.log("raw_acc", evaluate(net))')
    assert "wraps `acc = evaluate(net)`" in refused(today, OLD)


@pytest.mark.slow
def test_refuses_a_statement_that_overwrites_an_old_variable():
    today = insert_after(OLD, "loss.backward()", '            loss = flor.log("l2", loss * 2)\n')
    assert "assigns `loss`" in refused(today, OLD)


def test_refuses_a_duplicated_anchor():
    head = 'import flor\nfor e in flor.loop("e", range(3)):\n    train()\n    ev()\n'
    today = head + '    flor.log("w", 1)\n    save()\n'
    old = head + "    report()\n    ev()\n    save()\n"
    assert "ambiguous" in refused(today, old)


@pytest.mark.slow
def test_threshold_decides_on_weaker_placements():
    old = insert_after(OLD, "loss.backward()", "            clip(net)\n")
    assert propagate(TODAY, old).confidence == pytest.approx(0.85)
    assert "confidence 0.85 < 0.90" in refused(TODAY, old, threshold=0.9)


def test_unparsable_old_version_is_refused_not_raised():
    assert refused(TODAY, "def (:\n") == "this version does not parse: line 1: invalid syntax"


def test_never_inserts_before_a_docstring():
    old = 'import flor\ndef f():\n    """Doc."""\n    work()\n'
    today = 'import flor\ndef f():\n    flor.log("x", 1)\n    """Doc."""\n    work()\n'
    assert refused(today, old).endswith("its place in this version is before the docstring")


def test_docstring_examples_run():
    import doctest
    import importlib
    import pkgutil

    import flor.replay.propagation as package

    attempted = 0
    for info in pkgutil.iter_modules(package.__path__):
        result = doctest.testmod(importlib.import_module(f"{package.__name__}.{info.name}"))
        assert result.failed == 0, info.name
        attempted += result.attempted
    result = doctest.testmod(package)
    assert result.failed == 0
    assert attempted + result.attempted >= 7


def test_propagator_object_reuses_one_matching():
    propagator = Propagator(TODAY, OLD)
    statements = propagator.new_statements()
    assert propagator.place(statements).source == TODAY


# -- property tests over generated scripts ------------------------------------------------------------

NAMES = ["net", "opt", "data", "crit"]
PRELUDE = ["import flor", "net = Net()", "opt = Opt(net)", "data = Data()", "crit = Crit()"]


@st.composite
def scripts(draw, depth: int = 0, counter=None):
    """A random training-script-like tree: ("stmt", text) and ("block", header, children, tail)."""
    counter = counter if counter is not None else iter(range(10_000))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        i = next(counter)
        a, b = draw(st.sampled_from(NAMES)), draw(st.sampled_from(NAMES))
        kinds = ["stmt", "stmt", "dup"] + (["for", "with", "if", "while", "try"] if depth < 3 else [])
        if depth == 0:
            kinds.append("def")
        kind = draw(st.sampled_from(kinds))
        if kind == "stmt":
            templates = [f"op{i}({a})", f"{a}.op{i}({b})", f"t{i} = {a}.op{i}({b}, {i})", f"{a}.op{i}()"]
            text = draw(st.sampled_from(templates))
            out.append(["stmt", text])
        elif kind == "dup":
            out.append(["stmt", draw(st.sampled_from(["sync()", f"{a}.step()", "t = tick()"]))])
        else:
            header = {
                "for": f"for i{i} in flor.loop('l{i}', range({a}.n)):",
                "with": f"with ctx{i}({a}):",
                "if": f"if {a}.flag{i}:",
                "while": f"while {a}.more{i}():",
                "try": "try:",
                "def": f"def helper{i}({a}):",
            }[kind]
            body = draw(scripts(depth + 1, counter))
            tail = None
            if kind == "try":
                tail = ("except Exception:", draw(scripts(depth + 1, counter)))
            elif kind == "if" and draw(st.booleans()):
                tail = ("else:", draw(scripts(depth + 1, counter)))
            out.append(["block", header, body, tail])
    return out


def render(tree, unit: str = "    ", level: int = 0) -> list[str]:
    lines = []
    for node in tree:
        if node[0] == "stmt":
            lines.append(unit * level + node[1])
        else:
            _, header, body, tail = node
            lines.append(unit * level + header)
            lines += render(body, unit, level + 1)
            if tail is not None:
                lines.append(unit * level + tail[0])
                lines += render(tail[1], unit, level + 1)
    return lines


def blocks(tree, out=None):
    """Every statement list of the tree (where a new statement can go)."""
    out = [] if out is None else out
    out.append(tree)
    for node in tree:
        if node[0] == "block":
            blocks(node[2], out)
            if node[3] is not None:
                blocks(node[3][1], out)
    return out


def source(tree, unit="    ", rename=None) -> str:
    text = "\n".join(PRELUDE + render(tree, unit)) + "\n"
    if rename:
        text = rename_variable(text, *rename)
    return text


def rename_variable(text: str, old: str, new: str) -> str:
    import io
    import tokenize

    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    out = []
    for i, tok in enumerate(tokens):
        is_attribute = i > 0 and tokens[i - 1].string == "."
        renamed = tok.type == tokenize.NAME and tok.string == old and not is_attribute
        out.append(tok._replace(string=new) if renamed else tok)
    return tokenize.untokenize(out)


@st.composite
def insertions(draw):
    tree = draw(scripts())
    statement_name = draw(st.sampled_from(NAMES))
    where = draw(st.sampled_from(blocks(tree)))
    index = draw(st.integers(0, len(where)))
    return tree, where, index, statement_name


# Kept small so that the whole file runs in a few seconds; raise max_examples to search harder.
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(insertions(), st.sampled_from(["    ", "  ", "\t"]))
def test_property_identical_version_gives_back_old_plus_statement(case, unit):
    tree, where, index, name = case
    old = source(tree, unit)
    where.insert(index, ["stmt", f'flor.log("hindsight", {name}.size + 1)'])
    today = source(tree, unit)
    placement = propagate(today, old)
    assert placement.ok, placement.reason
    assert placement.source == today


@pytest.mark.slow
def test_property_renamed_version_gets_the_renamed_statement_or_a_refusal():
    # A refusal is allowed and a wrong placement never is; but a propagator that refused every
    # renamed version would pass that alone, so most of the cases must also be placed (all of
    # several hundred generated cases were, when this was written).
    placed: list[bool] = []

    @PROPERTY_SETTINGS
    @given(insertions())
    def one_case(case):
        tree, where, index, name = case
        old = source(tree, rename=(name, "renamed_var"))
        where.insert(index, ["stmt", f'flor.log("hindsight", {name}.size + 1)'])
        today = source(tree)
        placement = propagate(today, old)
        if placement.ok:
            assert placement.source == source(tree, rename=(name, "renamed_var"))
        placed.append(placement.ok)

    one_case()
    assert placed and sum(placed) >= 0.75 * len(placed), f"placed {sum(placed)} of {len(placed)} renamed versions"


def edit(draw, text: str, extra: str) -> str:
    """``text`` with a few blank lines, comments and ``extra`` calls added at random places."""
    lines = text.splitlines()
    kinds = st.sampled_from(["blank", "comment", "extra"])
    edits = draw(st.lists(st.tuples(st.integers(len(PRELUDE), len(lines)), kinds), max_size=4))
    for at, what in sorted(edits, reverse=True):
        indent = lines[at - 1][: len(lines[at - 1]) - len(lines[at - 1].lstrip())]
        if lines[at - 1].rstrip().endswith(":"):
            indent += "    "
        lines.insert(at, {"blank": "", "comment": indent + "# note", "extra": indent + extra}[what])
    return "\n".join(lines) + "\n"


@st.composite
def edited_versions(draw):
    """(today, old): today has the statement; both have blank lines, comments and calls the other
    lacks (code added today, or deleted since the old version)."""
    tree, where, index, name = draw(insertions())
    old = edit(draw, source(tree), "old_only_call()")
    where.insert(index, ["stmt", f'flor.log("hindsight", {name}.size + 1)'])
    return edit(draw, source(tree), "added_call()"), old


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(edited_versions())
def test_property_only_inserted_lines_change_and_the_statement_keeps_its_neighbours(case):
    today, old = case
    placement = propagate(today, old)
    compile(placement.source, "<test>", "exec")
    if not placement.ok:
        assert placement.source == old
        return
    out = placement.source.splitlines(keepends=True)
    inserted = set()
    for ins in placement.inserted:
        inserted.update(range(ins.lineno - 1, ins.end_lineno))
    assert "".join(line for i, line in enumerate(out) if i not in inserted) == old
    assert all("hindsight" in out[i] for i in inserted)

    # Without the lines that only one side has, the result is today's script: the statement sits
    # between the same statements, in the same block.
    def common(text: str) -> list[str]:
        only = ("", "# note", "added_call()", "old_only_call()")
        return [line for line in text.splitlines() if line.strip() not in only]

    assert common(placement.source) == common(today)


@pytest.mark.slow
@settings(PROPERTY_SETTINGS, max_examples=25)
@given(scripts(), scripts())
def test_property_unrelated_versions_never_crash(a, b):
    today = source(a) + 'flor.log("hindsight", net.size)\n'
    placement = propagate(today, source(b))
    ast.parse(placement.source)
    assert 0.0 <= placement.confidence <= 1.0

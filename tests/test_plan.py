"""Plans: which iterations are memoized, executed, restored, and how segments split."""

import pytest

from flor.replay.analysis import AFTER, BEFORE, BODY, NESTED, Layout, strategy_for
from flor.replay.plan import Costs, Segment, chain, plan_independent, plan_run

ALL = {i: {"nested": f"c{i}"} for i in range(10)}
EVERY_OTHER = {i: {"nested": f"c{i}"} for i in range(1, 10, 2)}


def test_memo_uses_each_checkpoint():
    (segment,) = plan_run("memo", 10, ALL, workers=2)
    assert segment.actions == {i: "memo" for i in range(10)} and segment.store == list(range(10))
    assert segment.stop == 10 and not segment.run_post


def test_missing_checkpoints_are_covered_by_execution():
    actions = chain(list(range(10)), "memo", EVERY_OTHER, lambda i: True)
    assert actions == {0: "exec", 1: "memo", 2: "exec", 3: "memo", 4: "exec", 5: "memo",
                       6: "exec", 7: "memo", 8: "exec", 9: "memo"}


def test_memo_refused_by_missing_variables_falls_back_to_exec():
    actions = chain([5], "memo", ALL, lambda i: False)
    assert actions == {i: "exec" for i in range(6)}


def test_reexec_splits_into_segments_starting_at_checkpoints():
    costs = Costs([1.0] * 10, [0.9] * 10)
    first, second = plan_run("reexec", 10, ALL, workers=2, costs=costs)
    assert first.actions == {i: "exec" for i in range(5)} and first.store == [0, 1, 2, 3, 4]
    assert second.actions == {4: "memo", **{i: "exec" for i in range(5, 10)}}
    assert second.store == [5, 6, 7, 8, 9] and second.stop == 10
    assert "memo 4, exec 5-9" in second.describe()


def test_end_checkpoints_restore_without_running_the_iteration():
    ends = {3: {"end": "e3"}}
    assert chain([5], "reexec", ends, lambda i: True) == {3: "restore_end", 4: "exec", 5: "exec"}


def test_outside_restores_the_last_checkpoint_and_runs_the_rest():
    (segment,) = plan_run("outside", 10, ALL, places={AFTER})
    assert segment.actions == {9: "memo"} and segment.run_post and segment.store_after
    (only_before,) = plan_run("outside", 10, ALL, places={BEFORE})
    assert only_before.actions == {} and only_before.stop == 0 and only_before.store_before


def test_selected_iterations_only():
    (segment,) = plan_run("memo", 10, ALL, selected=[9])
    assert segment.actions == {9: "memo"} and segment.store == [9]
    (segment,) = plan_run("reexec", 10, EVERY_OTHER, selected=[4], workers=4)
    assert segment.actions == {3: "memo", 4: "exec"} and segment.store == [4]


def test_segment_describe_with_nothing():
    assert Segment({}, [], 0, False, True, False).describe() == "no loop iterations"


SOURCE = '''
import flor
def helper(x):
    flor.log("inside_helper", x)
model = make()
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            loss = step
            flor.log("in_step", loss)
        flor.log("in_body", loss)
        for v in flor.loop("val", range(2)):
            pass
flor.log("after", 1)
'''


def test_layout_classifies_lines():
    layout = Layout.of(SOURCE)
    lines = {text.strip().split("(")[1].split(",")[0].strip('"'): n
             for n, text in enumerate(SOURCE.splitlines(), 1) if "flor.log(" in text}
    assert layout.outer_name == "epoch"
    assert layout.where(lines["in_step"]) == NESTED
    assert layout.where(lines["in_body"]) == BODY
    assert layout.where(lines["after"]) == AFTER
    assert layout.where(lines["inside_helper"]) == NESTED  # a helper may run anywhere: re-execute
    assert layout.where(5) == BEFORE
    assert layout.live_after_first_nested({"loss", "step"}).rest == {"loss"}
    assert strategy_for([BODY, AFTER]) == "memo" and strategy_for([BODY, NESTED]) == "reexec"
    assert strategy_for([BEFORE]) == "outside"


ALIASED = '''
import flor as fl
from flor import checkpointing, loop as floop
model = make()
for other in fl.loop("warmup", range(2)):
    pass
with checkpointing(model=model):
    for epoch in fl.loop("epoch", range(3)):
        for step in floop("step", range(4)):
            loss = step
        fl.log("in_body", loss)
'''


@pytest.mark.slow
def test_layout_follows_aliases_of_flor():
    layout = Layout.of(ALIASED)
    lines = ALIASED.splitlines()
    # The checkpointed loop is the outer one, though the warm-up loop comes first.
    assert layout.outer_name == "epoch" and [n.iter.args[0].value for n in layout.nested] == ["step"]
    assert layout.where(lines.index('        fl.log("in_body", loss)') + 1) == BODY
    assert layout.where(lines.index("            loss = step") + 1) == NESTED
    # Without `with checkpointing(...)` (imported from flor), the first loop is.
    assert Layout.of(ALIASED.replace("with checkpointing(", "with open(")).outer_name == "warmup"


@pytest.mark.slow
def test_a_loop_named_loop_is_flor_only_when_imported_from_flor():
    source = "import flor\nfrom mylib import loop\nfor e in loop('epoch', range(3)):\n    pass\n"
    assert Layout.of(source).outer is None
    assert Layout.of(source.replace("mylib", "flor")).outer_name == "epoch"
    assert Layout.of(source.replace("from mylib import loop", "from flor import *")).outer_name == "epoch"


def _epoch_body_place(source: str, statement: str) -> str:
    lines = source.splitlines()
    return Layout.of(source).where(lines.index(statement) + 1)


def test_epoch_body_statement_is_memo_with_import_flor_as_fl():
    source = SOURCE.replace("import flor\n", "import flor as fl\n").replace("flor.", "fl.")
    layout = Layout.of(source)
    assert layout.outer_name == "epoch"
    place = _epoch_body_place(source, '        fl.log("in_body", loss)')
    assert place == BODY and strategy_for([place]) == "memo"
    assert _epoch_body_place(source, '            fl.log("in_step", loss)') == NESTED


def test_epoch_body_statement_is_memo_with_from_flor_import_loop_log():
    source = (
        SOURCE.replace("import flor\n", "import flor\nfrom flor import loop, log\n")
        .replace("flor.loop(", "loop(")
        .replace("flor.log(", "log(")
    )
    layout = Layout.of(source)
    assert layout.outer_name == "epoch" and len(layout.nested) == 2
    place = _epoch_body_place(source, '        log("in_body", loss)')
    assert place == BODY and strategy_for([place]) == "memo"


HELPERS_SCRIPT = '''
import flor

def evaluate(model):
    score = model.score()
    flor.log("score", score)          # line 6: called from the epoch body
    return score

def train_step(model, batch):
    model.fit(batch)
    flor.log("batch_loss", 1.0)       # line 11: called from the step loop

def both(model):
    flor.log("both", 1)               # line 14: called from the body and from the step loop

def unused():
    flor.log("never", 1)              # line 17: never called here

with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(10)):
        for batch in flor.loop("step", loader):
            train_step(model, batch)
            both(model)
        evaluate(model)
        both(model)
        if epoch % 5 == 0:
            val = evaluate(model)
            flor.log("val", val)
            flor.log("new_in_branch", 1)  # line 29
'''


def test_a_helper_is_planned_from_where_it_is_called():
    from flor.replay.analysis import BODY, NESTED, Layout

    layout = Layout.of(HELPERS_SCRIPT)
    assert layout.places(6) == {BODY}          # evaluate(): called in the epoch body (twice)
    assert layout.places(11) == {NESTED}       # train_step(): called in the step loop
    assert layout.where(14) == NESTED          # both(): called from both: re-executed
    assert layout.places(17) == {NESTED}       # never seen called: re-executed, always correct


def test_a_statement_under_an_if_is_marked_by_the_recorded_logs_of_its_branch():
    from flor.replay.analysis import Layout

    layout = Layout.of(HELPERS_SCRIPT)
    assert layout.guards(29) == [{"val", "new_in_branch"}]  # the planner keeps the recorded ones
    assert layout.guards(6) is None            # evaluate() is also called outside the branch
    only_in_branch = HELPERS_SCRIPT.replace("        evaluate(model)\n        both(model)\n", "        both(model)\n")
    assert Layout.of(only_in_branch).guards(6) == [{"val", "new_in_branch"}]


def test_branch_before_the_nested_loop_is_memoized_only_from_the_state_before_it():
    """An evaluation at the top of the body (before the nested loop) of iteration k needs the
    state at the end of k-1: k is memoized only once k-1's state is there (issue 25)."""
    from flor.replay.plan import chain

    checkpoints = {i: {"nested": f"c{i}"} for i in (194, 200, 207, 223, 250, 272, 280, 300)}
    plain = chain([200, 250, 300], "memo", checkpoints, lambda index: True)
    assert plain == {200: "memo", 250: "memo", 300: "memo"}  # a statement after the nested loop
    before = chain([200, 250, 300], "memo", checkpoints, lambda index: True, before_nested=True)
    assert before[194] == "memo" and all(before[k] == "exec" for k in range(195, 200)) and before[200] == "memo"
    assert before[223] == "memo" and all(before[k] == "exec" for k in range(224, 250)) and before[250] == "memo"
    assert before[280] == "memo" and before[300] == "memo" and 201 not in before
    ends = {199: {"end": "e199"}, 200: {"nested": "c200"}}
    assert chain([200], "memo", ends, lambda index: True, before_nested=True) == {199: "restore_end", 200: "memo"}


LOOP_IDIOMS = """
import flor
def report(x):
    return x + total_seen            # a helper reads a global
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(3)):
        model.train()
        for step, batch in flor.loop("step", enumerate(train_loader)):
            outputs = model(**batch)
            loss = outputs.loss
            running = running + loss  # read by the next iteration's step loop
            total_seen = step
            last = loss
        model.eval()
        for batch in eval_loader:
            outputs = model(**batch)
            correct = (outputs.logits == batch["labels"]).sum()
        if epoch % 2:
            summary = last
        flor.log("acc", correct)
print(report(1))
"""


def test_liveness_of_what_the_step_loop_assigns():
    layout = Layout.of(LOOP_IDIOMS)
    names = {"outputs", "batch", "loss", "step", "running", "total_seen", "last", "train_loader"}
    live = layout.live_after_first_nested(names)
    # Reassigned before any read (the eval loop, the next iteration's step loop): dead.
    assert not {"outputs", "batch", "loss", "step"} & (live.rest | live.nested)
    assert live.rest == {"total_seen", "last"}  # a global a helper reads; read in a branch after the loop
    assert live.nested == {"running", "train_loader"}  # only the step loop itself reads them again
    assert layout.nested_name == "step"


def test_liveness_is_conservative_where_the_body_may_be_cut_short_or_read_anything():
    after_loop = LOOP_IDIOMS.replace('print(report(1))', 'print(loss)')
    assert "loss" in Layout.of(after_loop).live_after_first_nested({"loss"}).rest
    cut = LOOP_IDIOMS.replace("        model.eval()", "        if epoch == 1:\n            continue\n        model.eval()")
    assert Layout.of(cut).live_after_first_nested({"outputs"}).rest == set()  # assigned before read either way
    dynamic = LOOP_IDIOMS.replace('        flor.log("acc", correct)', '        flor.log("acc", eval("correct"))')
    assert Layout.of(dynamic).live_after_first_nested({"outputs"}).reads("outputs")
    in_function = "def main():\n" + "".join("    " + line + "\n" for line in LOOP_IDIOMS.splitlines()
                                                if "def report" not in line and "return x +" not in line)
    live = Layout.of(in_function).live_after_first_nested({"total_seen", "last"})
    assert live.rest == {"last"}  # a module function cannot see main()'s locals


def test_a_memoized_iteration_followed_by_an_executed_one_is_found():
    from flor.replay.plan import runs_nested_after_memo

    assert not runs_nested_after_memo(plan_run("memo", 4, ALL))
    assert runs_nested_after_memo(plan_run("reexec", 10, EVERY_OTHER, selected=[4], workers=4))


def test_the_slice_runs_only_in_memoized_iterations_no_whole_body_reads_after():
    from flor.replay.plan import Segment, sliceable

    assert sliceable(Segment({0: "memo", 1: "memo", 2: "memo"}, [0, 1, 2], 3, False, False, False)) == [0, 1, 2]
    mixed = Segment({0: "memo", 1: "exec", 2: "memo", 3: "memo", 4: "memo"}, [0, 1, 2, 3, 4], 5, False, False, False)
    assert sliceable(mixed) == [3, 4]  # 0 is read by exec 1; 2 is verified by the values its whole body logs
    assert sliceable(Segment({0: "memo", 1: "memo"}, [0, 1], 2, True, False, True)) == []  # the code after the loop runs


@pytest.mark.parametrize("times", [[0.01] * 5 + [2.0], [2.0] + [0.01] * 5, [0.01] * 6, [0.0] * 6])
def test_items_that_share_no_state_are_split_across_every_worker_asked_for(times):
    """A heavy last item (timed with the loop's end) once let the first chunk take all six: a
    replay asked for 2 workers planned one segment (seen in test_dataflow on a quiet machine)."""
    segments = plan_independent(list(range(6)), 2, Costs(iteration_s=times, nested_s=[0.0] * 6), set())
    assert len(segments) == 2
    assert sorted(i for s in segments for i in s.store) == list(range(6))
    three = plan_independent(list(range(6)), 3, Costs(iteration_s=times, nested_s=[0.0] * 6), set())
    assert len(three) == 3 and all(s.store for s in three)

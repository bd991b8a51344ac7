"""A replayed run's record: the plan (frozen, the planner's), the outcome (execution's, through
its methods), and the status the report reads from both."""

import dataclasses

import pytest

from flor.replay.outcome import RunOutcome
from flor.replay.plan import Segment
from flor.replay.planner import follow, refuse, whole_body
from flor.replay.report import ReplayReport, RunPlan, RunReplay
from flor.replay.slice import Slice


def _segment(actions):
    return Segment(actions, sorted(actions), max(actions) + 1, False, False, False, 1.0)


def test_a_plan_cannot_be_changed_once_made():
    plan = RunPlan(names=["loss"], segments=[_segment({0: "memo"})])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.status = "refused"
    assert plan.seconds == 1.0 and not plan.memo_ok(0) and RunPlan(retry_ok=True).memo_ok(3)


def test_the_status_is_the_plans_until_execution_ends():
    item = RunReplay(None, RunPlan(status="skipped", reason="already holds loss"))
    assert (item.status, item.reason) == ("skipped", "already holds loss")
    item = RunReplay(None, RunPlan())
    assert (item.status, item.reason) == ("planned", "")
    item.outcome.fail("killed by signal 9")
    item.outcome.fail("killed by signal 9")
    item.outcome.finish([2], False, ["from the last checkpoint"], accept_drift=False)
    assert (item.status, item.reason) == ("failed", "killed by signal 9")  # failed before drifted; said once
    assert ReplayReport([item]).outcome == "failed"


def test_drift_left_unstored_is_the_outcome_unless_accepted():
    drifted, accepted = RunOutcome(), RunOutcome()
    drifted.finish([3, 1], False, [], accept_drift=False)
    accepted.finish([], True, [], accept_drift=True)
    assert (drifted.status, drifted.rejected) == ("drifted", [1, 3])
    assert (accepted.status, accepted.rejected_run_level) == ("done", True)


def test_the_outcome_merges_every_segments_result():
    outcome = RunOutcome()
    outcome.merge({"matched": 4, "drifted": 1, "drift": {"loss": {"count": 1, "max_difference": 0.5}},
                   "first_drift": {"outer": 3, "name": "loss"}, "verified": {"values": 2},
                   "observer": {"calls": 1, "drew": ["numpy"]}, "timings": {"exec_s": 1.0},
                   "slice": {"statements": 2, "sliced": [2, 3], "fell_back": {"iteration": 3, "why": "b"}},
                   "writes": [["/p/out.txt", 3]]}, True, None)
    outcome.merge({"matched": 2, "drift": {"loss": {"count": 2, "max_difference": 0.25}},
                   "first_drift": {"outer": 1, "name": "acc"}, "verified": {"values": 1, "memo": 2},
                   "observer": {"calls": 2, "drew": ["torch"]}, "timings": {"exec_s": 0.5, "memo_s": 0.25},
                   "slice": {"statements": 2, "sliced": [0, 1], "fell_back": {"iteration": 1, "why": "a"}},
                   "end_check": "values"}, False, "killed by signal 9")
    outcome.add_stored(6)
    outcome.add_time("store_s", 0.125)
    assert (outcome.matched, outcome.drifted, outcome.stored) == (6, 1, 6)
    assert outcome.drift == {"loss": {"count": 3, "max_difference": 0.5}}
    assert outcome.first_drift["name"] == "acc"  # the earliest outer iteration's
    assert outcome.verified == {"values": 3, "memo": 2} and outcome.end_check == "values"
    assert outcome.observer["calls"] == 3 and outcome.observer["drew"] == ["numpy", "torch"]
    assert outcome.timings == {"exec_s": 1.5, "memo_s": 0.25, "store_s": 0.125}
    assert outcome.slice_outcome["sliced"] == [0, 1, 2, 3] and outcome.slice_outcome["fell_back"]["why"] == "a"
    assert outcome.writes == {"/p/out.txt": 3} and outcome.errors == ["killed by signal 9"]
    outcome.retract_errors(0)  # a job's segment, tried again whole
    assert outcome.errors == []


def test_a_jobs_ranks_are_tied_by_replacing_their_plans():
    leader = RunReplay(None, RunPlan(names=["loss"], segments=[_segment({0: "memo", 1: "memo"})], slice=Slice()))
    quiet = RunReplay(None, RunPlan(status="skipped", reason="nothing to store", segments=[_segment({0: "exec"})]))
    before = quiet.plan
    follow(quiet, leader)
    assert (quiet.status, quiet.reason, quiet.names) == ("planned", "", ["loss"])
    assert [s.actions for s in quiet.segments] == [{0: "memo", 1: "memo"}]
    assert quiet.segments[0] is not leader.segments[0]  # a copy: no rank's plan shares another's
    assert before.status == "skipped"  # replaced, not changed
    whole_body(leader, "a distributed job")
    whole_body(quiet, "a distributed job")
    assert leader.slice.whole == "a distributed job" and quiet.slice is None  # only a slice there is
    refuse(quiet, "rank 1 checkpointed elsewhere")
    assert (quiet.status, quiet.reason, quiet.names) == ("refused", "rank 1 checkpointed elsewhere", ["loss"])

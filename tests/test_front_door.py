"""What a new user meets: the line a recorded run ends with, the opt-outs, the dry-run plan as
JSON, and how exported values find their step."""

from __future__ import annotations

import json

import pytest

from flor.export.points import TRACKER_STEP, _points
from flor.store.runs import RunRow
from tests.test_record import SMALL


def _row():
    return RunRow(1, "2026-01-01T00:00:00", "p", "t.py", [], ".", None, None, "finished", 0.0, 1.0,
                  None, None, None, None, None)


def test_points_take_the_trackers_step_and_an_epochs_last_step():
    rows = [((0, 0), "loss", 1.0), ((0, 0), TRACKER_STEP, 100), ((0, 1), "loss", 0.5), ((0, 1), TRACKER_STEP, 110),
            ((0,), "acc", 0.1), ((1, 0), "loss", 0.4), ((1, 0), TRACKER_STEP, 200), ((1,), "acc", 0.2),
            ((), "final", 3), ((1,), "note", "text")]
    found = _points(_row(), {}, rows, ["loss", "acc", "final", "note"])
    assert [(p.name, p.step, p.value) for p in found.points] == [
        ("loss", 100, 1.0), ("loss", 110, 0.5), ("acc", 110, 0.1), ("loss", 200, 0.4), ("acc", 200, 0.2),
        ("final", 200, 3.0)]
    assert found.skipped == 1  # the string


def test_points_without_tracker_steps_count_positions():
    rows = [((0, 0), "loss", 1.0), ((0, 1), "loss", 0.5), ((0,), "acc", 0.1), ((1, 0), "loss", 0.4),
            ((1,), "acc", 0.2), ((), "final", 3)]
    found = _points(_row(), {}, rows, ["loss", "acc", "final"])
    assert [(p.name, p.step) for p in found.points] == [
        ("loss", 0), ("loss", 1), ("acc", 0), ("loss", 2), ("acc", 1), ("final", 0)]


@pytest.mark.slow
def test_a_recorded_run_says_what_was_kept_unless_quiet(project):
    project.write("train.py", SMALL)
    project.commit_all("small")
    done = project.run("train.py", env={"FLOR_QUIET": "0"})
    (line,) = done.stderr.splitlines()
    tstamp = line.split()[3]
    assert line == (f"flor: finished run {tstamp} kept (16 value(s), 0 checkpoint(s), "
                    f"code {line.split('code ')[1][:10]}); see it with: flor show {tstamp}")
    assert project.run("train.py", env={"FLOR_QUIET": "1"}).stderr == ""
    bad = project.run("train.py", env={"FLOR_QUIET": "maybe"}, check=False)
    assert bad.returncode == 0 and bad.stderr == "flor: warning: FLOR_QUIET='maybe': expected 1 (on) or 0 (off)\n"


@pytest.mark.slow
def test_trackers_opt_out_and_replay_dry_run_json(project):
    pytest.importorskip("tensorboard")
    project.write("train.py", """\
        import flor
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter("tb")
        for epoch in flor.loop("epoch", range(2)):
            writer.add_scalar("x", epoch, epoch)
            # HINDSIGHT
        """)
    project.write(".gitignore", "tb/\n")
    project.commit_all("tb")
    project.run("train.py", env={"FLOR_TRACKERS": "0"})
    names = project.flor("query", "SELECT DISTINCT name FROM logs", "--csv").stdout
    assert names == "name\n"  # nothing recorded from the tracker
    text = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(text.replace("    # HINDSIGHT", '    flor.log("twice", epoch * 2)'))
    plan = [json.loads(line) for line in project.flor("replay", "--dry-run", "--json").stdout.splitlines()]
    assert [list(p) for p in plan] == [["tstamp", "filename", "status", "reason", "names", "plan", "seconds", "segments"]]
    assert plan[0]["status"] == "planned" and plan[0]["names"] == ["twice"] and plan[0]["segments"]

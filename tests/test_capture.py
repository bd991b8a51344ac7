"""What a run prints is kept (stdout, stderr, logging) and values are extracted from it."""

from __future__ import annotations

import json
import os
import re
import pty
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from flor.recording.capture import Lines, final_state
from flor.reading.extraction import matches, typed
from tests.conftest import TUTORIAL, clean_env

ARGPARSE_SCRIPT = """\
import argparse
import flor

def test(epoch, scale):
    loss = scale / (epoch + 1)
    print(f"\\nTest set: Average loss: {loss:.4f}, Accuracy: {9000 + epoch}/10000 ({90 + epoch}%)\\n")
    return loss

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    for epoch in flor.loop("epoch", range(1, args.epochs + 1)):
        for step in flor.loop("step", range(4)):
            flor.log("loss", args.scale * step)
            if step % 2 == 0:
                print(f"Train Epoch: {epoch} [{step * 64}/256]\\tLoss: {args.scale * step:.6f}")
        test(epoch, args.scale)

main()
"""

MIXED = """\
import sys
import flor
for epoch in flor.loop("epoch", range(2)):
    print("héllo", epoch, "ünïcode ✓")
    sys.stdout.write("part one, ")
    sys.stdout.write("part two\\n")
    sys.stderr.write("warn: epoch %d\\n" % epoch)
    sys.stdout.write("bar 10%\\rbar 50%\\rbar 100%\\n")
    print("crlf line", end="\\r\\n")
    flor.log("x", epoch)
print("tail without newline", end="")
"""


def _logs_json(project, run: str, *extra: str) -> list[dict]:
    done = project.flor("logs", run, "--json", *extra)
    return [json.loads(line) for line in done.stdout.splitlines()]


def _tstamps(project) -> list[str]:
    with sqlite3.connect(project.db) as db:
        return [r[0] for r in db.execute("SELECT tstamp FROM runs ORDER BY run_id")]


# -- units -------------------------------------------------------------------------------------


def test_lines_keep_the_final_state_of_redraws_and_the_context_at_the_newline():
    lines = Lines()
    chunks = [("e", "\r  0%|", 1.0, 3, 0), ("e", "\r 50%|#", 1.5, 3, 1), ("e", "\r100%|##", 2.0, 3, 2),
              ("o", "a\nb", 2.25, 1, 0), ("e", "\n", 2.5, 1, 0), ("o", "c\r\n", 2.75, 1, 1)]
    assert lines.feed(chunks, 1.0) == [
        ("o", 1.25, 1, 0, ["a"]), ("e", 1.5, 1, 0, ["100%|##"]), ("o", 1.75, 1, 1, ["bc"])]
    assert lines.feed([("o", "x\ny\r\nz\rw", 3.0, 2, 0), ("o", "\n", 3.5, 2, 0)], 1.0) == [
        ("o", 2.5, 2, 0, ["x", "y", "w"])]  # joined within one stream and context: the last chunk's time
    assert lines.rest() == []
    assert final_state("abcdef\rxy") == "xycdef" and final_state("plain") == "plain"


def test_typed_values_and_matches_within_lines():
    assert [typed(t) for t in ("42", "-3", "0.0331", "1e-4", "nan", "9893/10000", " 7 ")] == [
        42, -3, 0.0331, 1e-4, pytest.approx(float("nan"), nan_ok=True), "9893/10000", 7]
    text = "loss 1\nloss: 2\nno\nloss 3 loss 4"
    assert list(matches(re.compile(r"loss:? (\d)", re.M), text)) == [(0, "1"), (1, "2"), (3, "3"), (3, "4")]
    # A match that runs past its line is matched again within that line alone.
    assert list(matches(re.compile(r"a\s*(\w+)", re.M), "xa\nb a c\n")) == [(1, "c")]


# -- capture while recording ---------------------------------------------------------------------


@pytest.mark.slow
def test_output_passes_through_unchanged_and_is_kept_line_by_line(project):
    project.write("mixed.py", MIXED)
    project.commit_all()
    plain = project.run("mixed.py", env={"FLOR_CAPTURE": "0"})
    kept = project.run("mixed.py")
    assert (kept.stdout, kept.stderr) == (plain.stdout, plain.stderr)
    first, second = _tstamps(project)
    assert project.flor("logs", first).stdout == "" and "(none captured)" in project.flor("show", first).stdout
    lines = _logs_json(project, second)
    shown = [(line["stream"], line["context"], line["text"]) for line in lines]
    assert shown[:6] == [
        ("stdout", {"epoch": 0}, "héllo 0 ünïcode ✓"), ("stdout", {"epoch": 0}, "part one, part two"),
        ("stderr", {"epoch": 0}, "warn: epoch 0"), ("stdout", {"epoch": 0}, "bar 100%"),
        ("stdout", {"epoch": 0}, "crlf line"), ("stdout", {"epoch": 1}, "héllo 1 ünïcode ✓"),
    ]
    assert shown[-1] == ("stdout", {}, "tail without newline") and len(shown) == 11
    assert [line["line"] for line in lines] == list(range(11))
    assert project.flor("logs", second, "--stream", "stderr").stdout == "warn: epoch 0\nwarn: epoch 1\n"
    assert project.flor("logs", second, "--grep", "^bar").stdout == "bar 100%\nbar 100%\n"
    assert "11 line(s)" in project.flor("show", second).stdout
    bad = project.flor("logs", second, "--stream", "stdin", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown stream" in bad.stderr


@pytest.mark.slow
def test_logging_records_are_kept_once(project):
    project.write("logs.py", """\
        import logging, sys
        import flor
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")  # holds the real stderr
        log = logging.getLogger("trainer")
        to_file = logging.getLogger("quiet")
        to_file.addHandler(logging.FileHandler("out.log"))
        to_file.propagate = False
        for epoch in flor.loop("epoch", range(2)):
            if epoch == 1:
                late = logging.StreamHandler(sys.stdout)  # made while capturing: prints through flor
                late.setFormatter(logging.Formatter("late %(message)s"))
                log.addHandler(late)
            log.info("epoch %d done", epoch)
            to_file.warning("to the file %d", epoch)
        """)
    project.write(".gitignore", "out.log\n")
    project.commit_all()
    done = project.run("logs.py")
    assert done.stderr.splitlines() == ["INFO epoch 0 done", "INFO epoch 1 done"]
    assert done.stdout.splitlines() == ["late epoch 1 done"]
    (tstamp,) = _tstamps(project)
    shown = [(line["stream"], line["context"], line["text"]) for line in _logs_json(project, tstamp)]
    assert shown == [
        ("logging", {"epoch": 0}, "INFO epoch 0 done"),  # as basicConfig's handler printed it
        ("logging", {"epoch": 0}, "WARNING:quiet:to the file 0"),
        ("logging", {"epoch": 1}, "late epoch 1 done"),
        ("logging", {"epoch": 1}, "WARNING:quiet:to the file 1"),
    ]


@pytest.mark.slow
def test_tqdm_draws_its_bar_on_a_terminal_and_the_final_state_is_kept(project):
    pytest.importorskip("tqdm")
    project.write("bar.py", """\
        import sys, time
        import flor
        from tqdm import tqdm
        print("tty", sys.stdout.isatty(), sys.stderr.isatty())
        for epoch in flor.loop("epoch", range(2)):
            for step in flor.loop("step", tqdm(range(30), desc=f"epoch {epoch}", mininterval=0)):
                flor.log("loss", step)
                time.sleep(0.002)
        """)
    project.commit_all()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the script on a terminal of 30 x 100 (a bar needs a width)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "bar.py"], clean_env())
    out = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    text = out.decode()
    assert "tty True True" in text
    assert text.count("\r") > 10  # the bar was redrawn in place
    (tstamp,) = _tstamps(project)
    lines = _logs_json(project, tstamp)
    bars = [line for line in lines if line["stream"] == "stderr"]
    assert len(bars) == 2 and all("30/30" in line["text"] and "\r" not in line["text"] for line in bars)
    assert bars[0]["text"].startswith("epoch 0: 100%")


@pytest.mark.slow
def test_sigkill_keeps_what_was_printed_up_to_the_last_flush(project):
    project.write("slow.py", """\
        import sys, time
        import flor
        for epoch in flor.loop("epoch", range(1000)):
            print(f"epoch {epoch} printed", flush=True)
            time.sleep(0.05)
        """)
    project.commit_all()
    child = subprocess.Popen([sys.executable, "slow.py"], cwd=project.root, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    started = time.time()
    while time.time() - started < 4:
        seen.append(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait()
    (tstamp,) = _tstamps(project)
    kept = project.flor("logs", tstamp).stdout.splitlines()
    assert len(kept) >= 20 and kept == seen[:len(kept)]  # a prefix: all up to the last flush (1 s)
    assert len(seen) - len(kept) <= 40


@pytest.mark.slow
def test_a_run_keeps_output_up_to_the_cap_and_says_so(project):
    project.write("loud.py", """\
        import flor
        for epoch in flor.loop("epoch", range(100)):
            print(f"line {epoch:03d} " + "x" * 40)
        """)
    project.commit_all()
    done = project.run("loud.py", env={"FLOR_CAPTURE_MAX_BYTES": "1000"})
    assert len(done.stdout.splitlines()) == 100  # all of it shown
    (tstamp,) = _tstamps(project)
    kept = project.flor("logs", tstamp).stdout.splitlines()
    assert len(kept) == 1000 // 49 + 1 and kept[0].startswith("line 000")
    assert kept[-1].startswith("[flor: output capture stopped at")
    assert "stopped at the cap" in project.flor("show", tstamp).stdout
    bad = project.run("loud.py", env={"FLOR_CAPTURE_MAX_BYTES": "lots"}, check=False)
    assert bad.returncode != 0 and "FLOR_CAPTURE_MAX_BYTES" in bad.stderr


# -- extract ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_extract_reads_the_test_loss_per_epoch_of_an_argparse_script(project):
    project.write("main.py", ARGPARSE_SCRIPT)
    project.commit_all()
    printed = {}
    for scale in ("0.5", "0.8"):
        done = project.run("main.py", "--scale", scale)
        printed[scale] = [float(line.split("Average loss: ")[1].split(",")[0])
                          for line in done.stdout.splitlines() if "Average loss" in line]
    dry = project.flor("extract", "test_loss", "Average loss: ([0-9.]+)", "--dry-run")
    assert "dry run: 6 value(s)" in dry.stdout and "epoch=0" in dry.stdout and "0.25" in dry.stdout
    assert "test_loss" not in project.flor("dataframe").stdout  # a dry run stores nothing
    done = project.flor("extract", "test_loss", "Average loss: ([0-9.]+)")
    assert "6 value(s) stored" in done.stdout
    again = project.flor("extract", "test_loss", "Average loss: ([0-9.]+)")  # replaces, never doubles
    assert "6 value(s) stored" in again.stdout
    frame = json.loads("[" + ",".join(project.flor("dataframe", "scale", "test_loss", "--json").stdout.split()) + "]")
    rows = [(row["scale"], row["epoch"], row["test_loss"]) for row in frame]
    assert rows == [(float(s), e, v) for s in ("0.5", "0.8") for e, v in zip((0, 1, 2), printed[s])]  # positions
    with sqlite3.connect(project.db) as db:
        assert db.execute("SELECT COUNT(*), MIN(source), MIN(vtype) FROM logs WHERE name = 'test_loss'").fetchone() == (
            6, "extract", "float")
        assert db.execute("SELECT COUNT(*) FROM logs WHERE name = 'loss'").fetchone() == (24,)
    ints = project.flor("extract", "correct", r"Accuracy: (\d+)/")
    assert "6 value(s)" in ints.stdout
    with sqlite3.connect(project.db) as db:
        assert {r[0] for r in db.execute("SELECT vtype FROM logs WHERE name = 'correct'")} == {"int"}
    first = _tstamps(project)[0]
    only = project.flor("extract", "test_loss", "Average loss: ([0-9.]+)", "--runs", first)
    assert "3 value(s) stored" in only.stdout
    with sqlite3.connect(project.db) as db:
        assert db.execute("SELECT COUNT(*) FROM logs WHERE name = 'test_loss'").fetchone() == (6,)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("x", "Average loss"), "has no capture groups"),
    (("x", "(A)(v)"), "has 2 capture groups"),
    (("x", "("), "is not a regular expression"),
    (("x", "no such (line)"), "matched nothing in"),
    (("loss", r"Loss: ([0-9.]+)"), "'loss' is logged by flor.log"),
    (("x", "(a)", "--stream", "stdin"), "unknown stream"),
])
def test_extract_errors_are_one_line_and_store_nothing(project, args, message):
    project.write("main.py", ARGPARSE_SCRIPT)
    project.commit_all()
    project.run("main.py", "--epochs", "1")
    done = project.flor("extract", *args, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    with sqlite3.connect(project.db) as db:
        assert db.execute("SELECT COUNT(*) FROM logs WHERE source = 'extract'").fetchone() == (0,)


@pytest.mark.slow
def test_extract_beside_a_logged_name_with_force_and_from_the_library(project, monkeypatch):
    project.write("main.py", ARGPARSE_SCRIPT)
    project.commit_all()
    project.run("main.py", "--epochs", "2")
    forced = project.flor("extract", "loss", r"Loss: ([0-9.]+)", "--force", "--stream", "stdout")
    assert "4 value(s) stored" in forced.stdout
    import flor

    monkeypatch.chdir(project.root)
    report = flor.extract("test_loss", r"Average loss: ([0-9.]+)")
    assert report.stored == 2 and report.runs[0].count == 2
    assert [sample[:2] for sample in report.runs[0].samples] == [({"epoch": 0}, 0.25), ({"epoch": 1}, 0.1667)]


@pytest.mark.slow
def test_extract_on_the_tutorial_equals_what_it_printed(project):
    shutil.copy(TUTORIAL, project.root / "train.py")
    project.commit_all()
    done = project.run("train.py", "--kwargs", "epochs=1", "hidden=32")
    printed = float(done.stdout.strip().rsplit("accuracy=", 1)[1])
    project.flor("extract", "printed_accuracy", r"accuracy=([0-9.]+)")
    frame = [json.loads(line) for line in project.flor("dataframe", "printed_accuracy", "accuracy", "--json").stdout.split("\n") if line]
    assert frame[0]["printed_accuracy"] == printed and round(frame[0]["accuracy"], 4) == printed


@pytest.mark.slow
def test_replay_points_at_output_it_could_extract_from(project):
    project.write("main.py", ARGPARSE_SCRIPT)
    project.commit_all()
    project.run("main.py", "--epochs", "2")
    project.write("main.py", ARGPARSE_SCRIPT.replace("    return loss\n", "    flor.log(\"test_loss\", loss)\n    return loss\n"))
    done = project.flor("replay", "test_loss", "--dry-run")
    assert "flor extract test_loss PATTERN" in done.stderr and "Average loss" in done.stderr

"""`flor ui` on the command line: it serves on loopback, prints its address, and fails in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest

from tests.ui.conftest import clean_env

pytestmark = pytest.mark.slow  # every test trains or launches processes

pytest.importorskip("flask")


def test_serves_on_loopback_and_prints_the_address(recorded):
    process = subprocess.Popen(
        [sys.executable, "-m", "flor", "ui", "--no-browser"], cwd=recorded.root, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/api/version", timeout=10) as response:
            assert json.load(response)["runs"] == 4
        request = urllib.request.Request(f"http://127.0.0.1:{match.group(1)}/api/runs", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_outside_a_project_and_bad_port_are_one_line(tmp_path, recorded):
    done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("flor: error: no flor runs recorded under")
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser", "--port", "70000"],
                          cwd=recorded.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--port must be between 0 and 65535" in done.stderr


def test_port_in_use_is_one_line(recorded):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser", "--port", str(port)],
                              cwd=recorded.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_the_command():
    done = subprocess.run([sys.executable, "-m", "flor", "--help"], env=clean_env(), capture_output=True, text=True)
    assert " ui " in done.stdout or "ui " in done.stdout


def test_a_database_of_a_newer_flor_is_refused_like_every_other_command(recorded, tmp_path):
    # Issue 26: `flor ui` served it while every other command refused it.
    import shutil
    import sqlite3

    copy = tmp_path / "newer"
    shutil.copytree(recorded.root, copy)
    with sqlite3.connect(copy / ".flor" / "flor.db") as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser"], cwd=copy, env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "made by a newer flor" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_allow_edit_stays_on_loopback_and_a_bad_base_path_is_one_line(recorded):
    done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser", "--allow-edit", "--host", "0.0.0.0"],
                          cwd=recorded.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--allow-edit serves only on this machine" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "flor", "ui", "--no-browser", "--base-path", "/a/../b"],
                          cwd=recorded.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--base-path must be a URL path" in done.stderr and "Traceback" not in done.stderr

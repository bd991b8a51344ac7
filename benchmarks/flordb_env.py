"""A cached virtual environment with FlorDB 4.0.1 from PyPI, for side-by-side benchmarks.

    from flordb_env import flordb_python, run_flordb_script
    python = flordb_python()                       # builds benchmarks/.work/flordb-venv once
    seconds = run_flordb_script(Path("train.py"), ["--kwargs", "hidden=75"], cwd=repo)

The environment lives under ``benchmarks/.work/flordb-venv`` (git-ignored). It is built with
``pip install flordb==4.0.1 torch==2.13.0 scikit-learn``: torch is pinned so that pip takes the
local CPU wheel (an unpinned torch pulls a multi-GB GPU build), and scikit-learn is there for the
tutorial's data set; numpy and pandas come with FlorDB. A marker file is written last, so an
interrupted build is thrown away and redone on the next call. ``python benchmarks/flordb_env.py``
builds it and prints the interpreter's path.

How FlorDB 4.0.1 differs from flor (read from its source, ``flordb/api.py``, ``cli.py``,
``constants.py``, ``versions.py``, ``capture.py``, ``repl.py``, ``database.py``):

* Module and API. ``import flordb as flor``. It has ``flor.arg(name, default)``,
  ``flor.log(name, value)``, ``flor.loop(name, iterable)``, ``flor.checkpointing(**named)``,
  ``flor.commit()``, ``flor.dataframe(*names)``, ``flor.query(sql)``, and more
  (``flor.iteration``, ``flor.load_checkpoint``, ``flor.set_capture``, ``flor.replay``).
* Import has effects. ``import flordb`` asserts that the working directory is inside a git
  repository (``constants.CURRDIR``), creates ``.flor/``, ``.flor/runs/``, ``.flor/obj_store/`` and
  the database ``.flor/<project>.db`` at the repository root, parses ``sys.argv`` with argparse
  when it mentions ``--kwargs`` and the like, and, in a script (not ``python -c``), imports torch
  to patch ``torch.save``/``torch.load`` and tees stdout/stderr to record printed lines. flor's
  import does none of this and never imports torch.
* Git. FlorDB's first flor call runs ``git checkout -b flor.branch`` (it *moves HEAD* to a new
  shadow branch) and rewrites ``.gitignore`` (``.flor/*`` and ``!.flor/runs/``); at the end of the
  run it writes ``.<branch>.cmd`` into the repository and does ``git add -A`` and ``git commit``
  on that branch -- committing all of the user's untracked files too. It needs a branch (it
  asserts against a detached HEAD). flor never moves HEAD nor touches the index or working tree:
  it snapshots to ``refs/flor/...`` in a background thread at run start.
* Logging. ``flor.log`` appends a dataclass record to an in-memory list and *prints every value*
  through ``tqdm.write`` (which clears and redraws the loop progress bars on stderr); each
  ``flor.loop`` draws a tqdm bar. Nothing reaches disk before the end of the run: a killed run
  keeps nothing. flor appends a tuple to a deque and flushes it from a background thread at least
  every second and at every outer-loop boundary.
* End of run. ``flor.commit()`` (also registered with ``atexit``) serialises every record to
  ``.flor/runs/<tstamp>.jsonl`` with ``dataclasses.asdict`` + ``json.dumps``, inserts them into
  SQLite, and then runs the git commit; its cost grows with the number of logged values.
* Values. FlorDB stores values as JSON text and infers types when reading (``pd.to_numeric``,
  ``pd.to_datetime``); flor stores them typed. Hyper-parameters are ``--kwargs k=v`` in both.
* Run identity. FlorDB names runs by a microsecond ISO timestamp; SCRIPTNAME is
  ``basename(sys.argv[0])`` fixed at import.

So a benchmark runs FlorDB scripts in a fresh throw-away git repository (on a branch, with one
commit), from the repository root, with stdout and stderr redirected (they carry one line per
logged value plus progress bars); ``flor.commit()`` may be called explicitly to time the end of
the run separately.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLORDB_SPEC = "flordb==4.0.1"
TORCH_SPEC = "torch==2.13.0"  # pinned: takes the local CPU wheel, never the GPU build
EXTRA_SPECS = ("scikit-learn",)
VENV = Path(__file__).resolve().parent / ".work" / "flordb-venv"
_MARKER = VENV / ".flor-bench-complete"


def _venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _base_python() -> str:
    """An interpreter to create the venv with (the base of the current venv, if any)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def flordb_python(rebuild: bool = False, quiet: bool = True) -> Path:
    """Path to the python of the FlorDB 4.0.1 venv, building the venv first if needed.

    >>> flordb_python()                                   # doctest: +SKIP
    PosixPath('.../benchmarks/.work/flordb-venv/bin/python')
    """
    wanted = "\n".join((FLORDB_SPEC, TORCH_SPEC, *EXTRA_SPECS))
    if not rebuild and _MARKER.exists() and _MARKER.read_text() == wanted and _venv_python().exists():
        return _venv_python()
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.DEVNULL if quiet else None
    subprocess.run([_base_python(), "-m", "venv", str(VENV)], check=True, stdout=out)
    try:
        subprocess.run(
            [str(_venv_python()), "-m", "pip", "install", "--quiet", FLORDB_SPEC, TORCH_SPEC, *EXTRA_SPECS],
            check=True,
            stdout=out,
            stderr=subprocess.PIPE if quiet else None,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(VENV, ignore_errors=True)
        tail = (exc.stderr or "").strip().splitlines()[-5:]
        raise RuntimeError(f"cannot install {FLORDB_SPEC}: " + " | ".join(tail)) from exc
    check = subprocess.run(
        [str(_venv_python()), "-c", "import importlib.metadata as m; print(m.version('flordb'), m.version('torch'))"],
        check=True, capture_output=True, text=True,
    )
    flordb_version, torch_version = check.stdout.split()
    if flordb_version != "4.0.1" or not torch_version.startswith("2.13.0"):
        raise RuntimeError(f"unexpected versions in {VENV}: flordb {flordb_version}, torch {torch_version}")
    _MARKER.write_text(wanted)
    return _venv_python()


def flordb_version() -> str:
    """The installed FlorDB version string (``4.0.1``)."""
    out = subprocess.run(
        [str(flordb_python()), "-c", "import importlib.metadata as m; print(m.version('flordb'))"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def run_flordb_script(
    script: Path | str,
    args: list[str] | tuple[str, ...] = (),
    cwd: Path | str | None = None,
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> float:
    """Run ``script`` with FlorDB's python in ``cwd`` (a git repository); return its wall seconds.

    stdout and stderr are discarded (FlorDB prints each logged value and draws progress bars); a
    failure raises ``RuntimeError`` with the tail of stderr.

    >>> run_flordb_script("train.py", ["--kwargs", "epochs=1"], cwd=repo)   # doctest: +SKIP
    7.91
    """
    python = flordb_python()
    cwd = Path(cwd) if cwd is not None else Path(script).resolve().parent
    # stderr goes to a file, not a pipe: FlorDB redraws its progress bars at every flor.log.
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(
            [str(python), str(script), *args],
            cwd=cwd,
            env=env if env is not None else os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=timeout,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(max(0, err.seek(0, os.SEEK_END) - 2000))
            tail = err.read().decode(errors="replace")
            raise RuntimeError(f"FlorDB run of {script} failed with exit status {proc.returncode}:\n{tail}")
    return seconds


if __name__ == "__main__":
    print(flordb_python(quiet=False))

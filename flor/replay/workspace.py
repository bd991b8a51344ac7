"""Workspaces: a run's code version laid out where a replay worker can execute it.

The run's commit is extracted (its exact tree: ``Repo.extract``), submodules at the commits the run
recorded, with the script replaced by the version that holds the new statements. With a private
view of the file system (``confine.py``) that tree is laid over the project, and nothing else is
needed here but the list of today's code files the run did not have (:func:`files_to_hide`).

Without one (*copy* confinement, where the kernel allows no private mount namespace), the worker
runs inside the workspace instead: every other file of the user's project appears there, small
ones as copies and large ones (over :data:`COPY_LIMIT_BYTES`) as symlinks, and :func:`guard_writes`
sends Python-level writes aimed at the project into the workspace. A write through a symlink of a
large file, or to an absolute path outside the project, is not confined this way: see
docs/reliability.md.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

from ..environment.paths import FLOR_DIR
from ..environment.vcs import Repo

COPY_LIMIT_BYTES = 64 << 20  # copy mode: larger files are linked, not copied
_SKIP = {".git", FLOR_DIR}


def prepare(repo: Repo, commit: str, filename: str, source: str, destination: Path, *, copies: bool) -> Path:
    """Lay out ``commit`` with ``filename`` replaced by ``source`` in ``destination``; with
    ``copies``, also the user's other files (see the module docstring)."""
    destination.mkdir(parents=True, exist_ok=True)
    repo.extract(commit, destination, submodules=True)
    script = destination / filename
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(source)
    if copies:
        mirror(repo.root, destination)
    return destination


def files_to_hide(repo: Repo, commit: str, left_out=()) -> list[str]:
    """Today's code files (tracked, or untracked and neither ignored nor left out of snapshots as
    other tools' output) that the run's version lacks: in the run's view of the project they must
    not exist. Files that snapshots leave out (``runs/``, ``*.ckpt``, ``.florignore``'s, and
    ``left_out``: the run's own over the size cap) are data: the old code reads today's copy."""
    today = set(repo.work_tree_files()) - set(left_out)
    return sorted(today - set(repo.tree_files(commit)))


def mirror(source: Path, destination: Path) -> None:
    """Copy (small) or link (large) every file of ``source`` that ``destination`` lacks."""

    def walk(src: Path, dst: Path) -> None:
        try:
            entries = list(os.scandir(src))
        except OSError:
            return
        for entry in entries:
            if entry.name in _SKIP and src == source:
                continue
            target = dst / entry.name
            if entry.is_dir(follow_symlinks=False):
                if os.path.lexists(target) and not target.is_dir():
                    continue
                target.mkdir(exist_ok=True)
                walk(Path(entry.path), target)
                continue
            if os.path.lexists(target):
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size <= COPY_LIMIT_BYTES:
                shutil.copy2(entry.path, target)
            else:
                os.symlink(entry.path, target)

    walk(Path(source), Path(destination))


def guard_writes(workspace: Path, user_root: Path) -> None:
    """Make Python-level writes inside the replay land in the workspace, never on the user's files
    (copy confinement only)."""
    workspace = str(Path(workspace).resolve())
    user_root = str(Path(user_root).resolve())
    original_open, original_os_open = builtins.open, os.open

    def private_path(file):
        if not isinstance(file, (str, bytes, os.PathLike)):
            return file
        path = os.path.abspath(os.fsdecode(file))
        if path == user_root or path.startswith(user_root + os.sep):
            path = workspace + path[len(user_root):]
            os.makedirs(os.path.dirname(path), exist_ok=True)
        if path.startswith(workspace + os.sep) and os.path.islink(path):
            real = os.path.realpath(path)
            os.unlink(path)
            if os.path.exists(real):
                shutil.copyfile(real, path)  # appends and updates start from the user's content
        return path

    def open_privately(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            file = private_path(file)
        return original_open(file, mode, *args, **kwargs)

    def os_open_privately(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            path = private_path(path)
        return original_os_open(path, flags, *args, **kwargs)

    builtins.open = open_privately
    io.open = open_privately
    os.open = os_open_privately

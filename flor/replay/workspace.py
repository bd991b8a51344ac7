"""Workspaces: a run's code version laid out where a replay can execute it safely.

The run's commit is extracted into a temporary folder, with the script replaced by the version
that holds the new statements. Every other file of the user's project (data, caches) appears
there as a symlink, so relative paths read what the run read. Writes never reach the user's
files: :func:`guard_writes` makes ``open`` for writing replace a symlink with a private file, and
redirects writes aimed at the user's project folder into the workspace.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

from ..vcs import Repo

MIRROR_LIMIT = 50_000  # beyond this many entries, whole folders are linked instead of mirrored
_SKIP = {".git", ".flor"}


def prepare(repo: Repo, commit: str, filename: str, source: str, destination: Path) -> Path:
    """Lay out ``commit`` with ``filename`` replaced by ``source`` in ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    repo.extract(commit, destination)
    script = destination / filename
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(source)
    mirror(repo.root, destination)
    return destination


def mirror(source: Path, destination: Path) -> None:
    """Symlink every file of ``source`` that ``destination`` lacks (folders are recreated)."""
    budget = [MIRROR_LIMIT]

    def walk(src: Path, dst: Path) -> None:
        try:
            entries = list(os.scandir(src))
        except OSError:
            return
        for entry in entries:
            if entry.name in _SKIP and src == source:
                continue
            target = dst / entry.name
            if os.path.lexists(target):
                if entry.is_dir(follow_symlinks=False) and target.is_dir() and not target.is_symlink():
                    walk(Path(entry.path), target)
                continue
            budget[0] -= 1
            if entry.is_dir(follow_symlinks=False) and budget[0] > 0:
                target.mkdir()
                walk(Path(entry.path), target)
            else:
                os.symlink(entry.path, target)

    walk(Path(source), Path(destination))


def guard_writes(workspace: Path, user_root: Path) -> None:
    """Make writes inside the replay land in the workspace, never on the user's files."""
    workspace = str(Path(workspace).resolve())
    user_root = str(Path(user_root).resolve())
    original_open = builtins.open

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

    builtins.open = open_privately
    io.open = open_privately

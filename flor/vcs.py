"""git: snapshot the project's code under a hidden ref, and read a file or tree at a version.

A snapshot is a commit of the working tree — tracked files plus untracked files that git does not
ignore, without files over a size cap and without ``.flor/`` — built in a temporary index, so
HEAD, branches, the user's index, working tree, stash and ``.gitignore`` are never touched. It is
kept under ``refs/flor/runs/<tstamp>`` so that ``git gc`` keeps it.

>>> Repo.find(Path.cwd()).snapshot("2026-11-26T15:04:07", "train.py")   # doctest: +SKIP
Snapshot(commit='3f2a...', skipped=[])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import settings
from .errors import VersionControlError

_NICE = shutil.which("nice")
REF_PREFIX = "refs/flor/runs/"
# Variables that point git at another repository, index or object store than the work tree's
# own. flor always works on the repository that holds the project (the one `.flor/` is in), so
# that a run's database and its refs never end up in different repositories.
_LOCATING_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
)
_IDENTITY = {
    "GIT_AUTHOR_NAME": "flor",
    "GIT_AUTHOR_EMAIL": "flor@localhost",
    "GIT_COMMITTER_NAME": "flor",
    "GIT_COMMITTER_EMAIL": "flor@localhost",
}


def find_root(start: Path) -> tuple[Path, bool]:
    """(project root, is a git work tree) for a directory: the nearest ancestor holding ``.git``,
    else the nearest holding ``.flor``, else ``start`` itself."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder, True
    for folder in (start, *start.parents):
        if (folder / ".flor").is_dir():
            return folder, False
    return start, False


def ref_for(tstamp: str) -> str:
    """The hidden ref of a run's snapshot (git forbids ':' in ref names)."""
    return REF_PREFIX + tstamp.replace(":", "-")


@dataclass
class Snapshot:
    """The result of snapshotting the working tree."""

    commit: str
    skipped: list[str] = field(default_factory=list)
    head: str | None = None  # the user's HEAD commit, None in a repository without commits
    dirty: bool = False  # the versioned tree differs from HEAD's (uncommitted or untracked files)


class Repo:
    """A git work tree, driven through the git command line."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def find(cls, start: Path) -> "Repo":
        """The work tree that contains ``start``; VersionControlError when there is none."""
        root, is_git = find_root(start)
        if not is_git:
            raise VersionControlError(f"{start} is not inside a git repository")
        return cls(root)

    def git(self, *args: str, env: dict | None = None, input: bytes | None = None, background: bool = False) -> bytes:
        """Run git in the work tree and return its standard output.

        ``background``: run it at a lower CPU priority (the snapshot runs beside training).
        """
        inherited = {k: v for k, v in os.environ.items() if k not in _LOCATING_VARIABLES}
        full_env = {**inherited, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", **_IDENTITY, **(env or {})}
        command = ["git", "-C", str(self.root), *args]
        if background and _NICE:
            command = [_NICE, "-n", "10", *command]
        try:
            done = subprocess.run(
                command,
                input=input,
                capture_output=True,
                env=full_env,
                check=False,
            )
        except FileNotFoundError as exc:
            raise VersionControlError("git is not installed; install it to version runs") from exc
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise VersionControlError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def git_dir(self) -> Path:
        """The repository's git directory (``.git`` or, for worktrees, where ``.git`` points)."""
        path = Path(self.git("rev-parse", "--git-dir").decode().strip())
        return path if path.is_absolute() else self.root / path

    def head(self) -> str | None:
        """The commit HEAD points to, or None in a repository without commits."""
        try:
            return self.git("rev-parse", "--verify", "-q", "HEAD^{commit}").decode().strip() or None
        except VersionControlError:
            return None

    def exclude_flor_dir(self) -> None:
        """Add ``.flor/`` to ``.git/info/exclude`` once (never to the user's ``.gitignore``)."""
        exclude = self.git_dir() / "info" / "exclude"
        try:
            text = exclude.read_text() if exclude.exists() else ""
            if ".flor/" not in text.split():
                exclude.parent.mkdir(parents=True, exist_ok=True)
                with open(exclude, "a") as handle:
                    handle.write(("" if text.endswith("\n") or not text else "\n") + ".flor/\n")
        except OSError as exc:
            raise VersionControlError(f"cannot write {exclude}: {exc}") from exc

    def snapshot(self, tstamp: str, message: str, max_bytes: int | None = None) -> Snapshot:
        """Commit the working tree under the run's hidden ref without touching anything else."""
        max_bytes = settings.snapshot_max_bytes() if max_bytes is None else max_bytes
        git_dir = self.git_dir()
        self.exclude_flor_dir()
        untracked = [
            p for p in self.git("ls-files", "-z", "--others", "--exclude-standard", background=True).decode().split("\0") if p
        ]
        small, skipped = [], []
        for rel in untracked:
            if rel == ".flor" or rel.startswith(".flor/"):
                continue
            try:
                size = os.lstat(self.root / rel).st_size
            except OSError:
                continue
            (skipped if size > max_bytes else small).append(rel)
        # mkdtemp, not TemporaryDirectory: the latter's finalizer may delete the folder at
        # interpreter exit while this (background) snapshot still uses it.
        scratch = tempfile.mkdtemp(prefix="flor-index-")
        try:
            index = Path(scratch) / "index"
            real_index = git_dir / "index"
            if real_index.exists():
                # Starting from a copy of the user's index lets git reuse its stat cache. The
                # copy keeps the index's mtime: git trusts the cached stat of a file changed
                # in the same second only while the index is not newer ("racy git"), so a
                # fresh mtime would version a same-size edit made in that second as unchanged.
                shutil.copy2(real_index, index)
            env = {"GIT_INDEX_FILE": str(index)}
            self.git("add", "-u", "--", ".", env=env, background=True)
            if small:
                self.git(
                    "--literal-pathspecs", "add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul",
                    env=env, input="\0".join(small).encode(), background=True,
                )
            tree = self.git("write-tree", env=env, background=True).decode().strip()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        parent = self.head()
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args[2:2] = ["-p", parent]
        commit = self.git(*args).decode().strip()
        self.git("update-ref", ref_for(tstamp), commit)
        head_tree = self.git("rev-parse", f"{parent}^{{tree}}").decode().strip() if parent else None
        return Snapshot(commit=commit, skipped=skipped, head=parent, dirty=tree != head_tree)

    def read_file(self, commit: str, path: str) -> str:
        """The text of ``path`` (relative to the root) at ``commit``."""
        return self.git("show", f"{commit}:{path}").decode()

    def extract(self, commit: str, destination: Path, *, submodules: bool = False) -> None:
        """Write the exact tree of ``commit`` into ``destination`` (never into the work tree).

        Through a private index and ``git checkout-index``, not ``git archive``: an archive
        applies ``export-ignore`` and ``export-subst`` attributes, which would leave files out
        or rewrite them. Symlinks stay symlinks, as the run saw them. With ``submodules``, each
        submodule is extracted at the commit ``commit`` records for it, from its own repository.
        """
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="flor-extract-")
        try:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", commit, env=env)
            self.git("checkout-index", "--all", "--force", f"--prefix={destination.resolve()}{os.sep}", env=env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if submodules:
            for path, sub_commit in self.submodules(commit):
                sub = self._submodule(path, sub_commit)
                sub.extract(sub_commit, destination / path, submodules=True)

    def submodules(self, commit: str) -> list[tuple[str, str]]:
        """``(path, commit)`` of the submodules that ``commit`` records."""
        found = []
        for entry in self.git("ls-tree", "-r", "-z", commit).decode(errors="surrogateescape").split("\0"):
            meta, _, path = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "commit":
                found.append((path, parts[2]))
        return found

    def _submodule(self, path: str, commit: str) -> "Repo":
        sub = Repo(self.root / path)
        try:
            available = (self.root / path / ".git").exists() and bool(sub.git("cat-file", "-t", commit).strip())
        except VersionControlError:
            available = False
        if not available:
            raise VersionControlError(
                f"the submodule {path} at commit {commit[:10]}, which the run used, is not in its repository here; "
                f"run `git submodule update --init {path}` (or fetch that commit) and replay again"
            )
        return sub

    def missing_submodules(self, commit: str) -> list[str]:
        """Why each submodule of ``commit`` cannot be extracted (empty when all can)."""
        problems = []
        for path, sub_commit in self.submodules(commit):
            try:
                sub = self._submodule(path, sub_commit)
                problems += sub.missing_submodules(sub_commit)
            except VersionControlError as exc:
                problems.append(str(exc))
        return problems

    def tree_files(self, commit: str) -> list[str]:
        """The paths of every file (and submodule) in the tree of ``commit``."""
        out = self.git("ls-tree", "-r", "-z", "--name-only", commit).decode(errors="surrogateescape")
        return [p for p in out.split("\0") if p]

    def work_tree_files(self) -> list[str]:
        """The work tree's code files now: tracked, and untracked but not ignored."""
        out = self.git("ls-files", "-z", "--cached", "--others", "--exclude-standard").decode(errors="surrogateescape")
        return [p for p in out.split("\0") if p and not (p == ".flor" or p.startswith(".flor/"))]

    def diff(self, old: str, new: str, path: str | None = None) -> str:
        """Unified diff between two versions (optionally of one path)."""
        args = ["diff", old, new]
        if path:
            args += ["--", path]
        return self.git(*args).decode(errors="replace")

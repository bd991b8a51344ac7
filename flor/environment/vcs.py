"""git: snapshot the project's code under a hidden ref, and read a file or tree at a version.

A snapshot is a commit of the working tree — tracked files plus untracked files that git does not
ignore, without files over a size cap and without ``.flor/`` — built in a temporary index, so
HEAD, branches, the user's index, working tree, stash and ``.gitignore`` are never touched. It is
kept under ``refs/flor/runs/<tstamp>`` so that ``git gc`` keeps it.

Untracked output of other tools is left out too (:data:`DEFAULT_EXCLUDES`: TensorBoard's
``runs/``, Lightning's ``lightning_logs/`` with its ``.ckpt`` files, model weights...): it is
data that grows with every run, not code, and was committed into every run's ref. A
``.florignore`` at the project root (gitignore syntax) adds patterns, or re-includes one of the
defaults with ``!``; what was left out, and by which pattern, is kept with the run (``flor show``).
git itself matches the patterns (``git check-ignore``), so the syntax is exactly gitignore's.

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
from ..errors import VersionControlError
from .paths import GIT_EXCLUDE, ProjectPaths, in_flor_dir

_NICE = shutil.which("nice")
REF_PREFIX = "refs/flor/runs/"
# Variables that point git at another repository, index or object store than the work tree's
# own. flor always works on the repository that holds the project (the one `.flor/` is in), so
# that a run's database and its refs never end up in different repositories.
_LOCATING_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
)
# Untracked folders and files that other tools write beside the code: TensorBoard, Lightning,
# MLflow, Weights & Biases and Hydra's output folders, Jupyter's autosaved copies of notebooks,
# model weights and event files.
DEFAULT_EXCLUDES = (
    "runs/", "lightning_logs/", "mlruns/", "wandb/", "outputs/", ".ipynb_checkpoints/",
    "*.ckpt", "*.pt", "*.pth", "*.safetensors", "events.out.tfevents.*",
)
FLORIGNORE = ".florignore"
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
        if ProjectPaths(folder).flor_dir.is_dir():
            return folder, False
    return start, False


def ref_for(tstamp: str) -> str:
    """The hidden ref of a run's snapshot (git forbids ':' in ref names)."""
    return REF_PREFIX + tstamp.replace(":", "-")


@dataclass
class Excluded:
    """An untracked file or folder that a snapshot left out, and the pattern that did."""

    path: str  # relative to the root; a folder ends with "/"
    pattern: str
    source: str  # "default" or FLORIGNORE
    files: int = 1  # the untracked files under a folder
    scripts: int = 0  # how many of them are Python files (code, which the run's version then lacks)

    def as_json(self) -> dict:
        return {"path": self.path, "pattern": self.pattern, "source": self.source, "files": self.files,
                "scripts": self.scripts}

    @classmethod
    def from_json(cls, data: dict) -> "Excluded":
        return cls(data["path"], data["pattern"], data["source"], int(data.get("files", 1)), int(data.get("scripts", 0)))


@dataclass
class Snapshot:
    """The result of snapshotting the working tree."""

    commit: str
    skipped: list[str] = field(default_factory=list)  # over the size cap
    excluded: list[Excluded] = field(default_factory=list)  # by DEFAULT_EXCLUDES and .florignore
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

    def git(self, *args: str, env: dict | None = None, input: bytes | None = None, background: bool = False,
            ok: tuple[int, ...] = (0,)) -> bytes:
        """Run git in the work tree and return its standard output.

        ``background``: run it at a lower CPU priority (the snapshot runs beside training).
        ``ok``: the exit statuses that are not a failure.
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
        if done.returncode not in ok:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            command_name = next((a for a in args if not a.startswith("-") and "=" not in a), args[0])
            raise VersionControlError(f"git {command_name} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def git_dir(self) -> Path:
        """The repository's git directory (``.git`` or, for worktrees, where ``.git`` points)."""
        path = Path(self.git("rev-parse", "--git-dir").decode().strip())
        return path if path.is_absolute() else self.root / path

    def existing_commits(self, commits: list[str]) -> set[str]:
        """Which of ``commits`` git holds. A failed git call raises: it says nothing about the
        commits, and a caller that took it for "none" would mark every run unversioned."""
        if not commits:
            return set()
        out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)", input="\n".join(commits).encode() + b"\n")
        found = set()
        for line in out.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == "commit":
                found.add(parts[0])
        return found

    def flor_refs(self) -> dict[str, str]:
        """flor's refs (``refs/flor/runs/...``) and the commits they point to; a failed git call raises."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", REF_PREFIX)
        refs = {}
        for line in out.decode(errors="replace").splitlines():
            name, _, commit = line.partition(" ")
            refs[name] = commit
        return refs

    def rewrite_ref(self, ref: str, commit: str, aside_suffix: str) -> Path | None:
        """Point ``ref`` at ``commit`` again; a loose ref file there (damaged, or pointing
        elsewhere) is first moved to ``.git/flor-doctor/<name>.<aside_suffix>``, never overwritten.
        Returns where it was moved, or None."""
        loose = self.git_dir() / ref
        aside = None
        try:
            if loose.exists():
                folder = self.git_dir() / "flor-doctor"
                folder.mkdir(exist_ok=True)
                aside = folder / f"{loose.name}.{aside_suffix}"
                os.replace(loose, aside)
        except OSError as exc:
            raise VersionControlError(f"cannot move the ref file {loose} aside: {exc.strerror or exc}") from exc
        self.git("update-ref", ref, commit)
        return aside

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
            if GIT_EXCLUDE not in text.split():
                exclude.parent.mkdir(parents=True, exist_ok=True)
                with open(exclude, "a") as handle:
                    handle.write(("" if text.endswith("\n") or not text else "\n") + GIT_EXCLUDE + "\n")
        except OSError as exc:
            raise VersionControlError(f"cannot write {exclude}: {exc}") from exc

    def snapshot(self, tstamp: str, message: str, max_bytes: int | None = None,
                 extra: dict[str, str] | None = None) -> Snapshot:
        """Commit the working tree under the run's hidden ref without touching anything else;
        ``extra``: files (path -> text) the version holds that the working tree does not (a
        notebook run's cells, as a script)."""
        max_bytes = settings.snapshot_max_bytes() if max_bytes is None else max_bytes
        git_dir = self.git_dir()
        self.exclude_flor_dir()
        untracked, excluded = self.untracked_code()
        small, skipped = [], []
        for rel in untracked:
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
                    env=env, input="\0".join(small).encode(errors="surrogateescape"), background=True,
                )
            for rel, text in (extra or {}).items():
                blob = self.git("hash-object", "-w", "--stdin", input=text.encode()).decode().strip()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
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
        return Snapshot(commit=commit, skipped=skipped, excluded=excluded, head=parent, dirty=tree != head_tree)

    def untracked_code(self) -> tuple[list[str], list[Excluded]]:
        """The untracked files that git does not ignore, but for ``.flor/`` and what
        :data:`DEFAULT_EXCLUDES` and ``.florignore`` leave out; and what they left out."""
        out = self.git("ls-files", "-z", "--others", "--exclude-standard", background=True)
        untracked = [p for p in out.decode(errors="surrogateescape").split("\0")
                     if p and not in_flor_dir(p)]
        if not untracked:
            return [], []
        return self._leave_out(untracked)

    def _leave_out(self, untracked: list[str]) -> tuple[list[str], list[Excluded]]:
        try:
            own = (self.root / FLORIGNORE).read_text(errors="replace").splitlines()
        except OSError:
            own = []
        # Each file and each folder above it is asked: a file under a left-out folder is listed
        # once, as that (topmost) folder.
        folders = sorted({rel.rsplit("/", depth)[0] for rel in untracked for depth in range(1, rel.count("/") + 1)})
        scratch = tempfile.mkdtemp(prefix="flor-excludes-")
        try:
            patterns = Path(scratch) / "excludes"
            patterns.write_text("\n".join([*DEFAULT_EXCLUDES, *own]) + "\n", errors="surrogateescape")
            # As core.excludesFile, the lowest of git's sources: a .gitignore's own `!pattern` still wins.
            out = self.git(
                "-c", f"core.excludesFile={patterns}", "check-ignore", "--no-index", "--verbose",
                "-z", "--stdin", input="\0".join([*folders, *untracked]).encode(errors="surrogateescape"),
                background=True, ok=(0, 1),
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        fields = out.decode(errors="surrogateescape").split("\0")
        hits: dict[str, tuple[str, str]] = {}  # path -> (pattern, source) of the paths left out
        for at in range(0, len(fields) - 3, 4):
            source, line, pattern, path = fields[at:at + 4]
            if source == str(patterns) and not pattern.startswith("!"):
                number = int(line)
                hits[path] = (pattern, "default" if number <= len(DEFAULT_EXCLUDES) else FLORIGNORE)
        if not hits:
            return untracked, []
        kept: list[str] = []
        left_out: dict[str, Excluded] = {}
        for rel in untracked:
            parts = rel.split("/")
            above = next((f for f in ("/".join(parts[:n]) for n in range(1, len(parts))) if f in hits), None)
            key = rel if above is None else above
            if key not in hits:
                kept.append(rel)
                continue
            entry = left_out.get(key)
            if entry is None:
                pattern, source = hits[key]
                left_out[key] = entry = Excluded(key if above is None else key + "/", pattern, source, 0)
            entry.files += 1
            entry.scripts += rel.endswith(".py")
        return kept, sorted(left_out.values(), key=lambda e: e.path)

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

    def tree_id(self, commit: str) -> str:
        """The id of ``commit``'s tree: runs snapshotted from the same files share it, though
        each run's commit is its own (its time and message differ)."""
        return self.git("rev-parse", f"{commit}^{{tree}}").decode().strip()

    def tree_files(self, commit: str) -> list[str]:
        """The paths of every file (and submodule) in the tree of ``commit``."""
        out = self.git("ls-tree", "-r", "-z", "--name-only", commit).decode(errors="surrogateescape")
        return [p for p in out.split("\0") if p]

    def work_tree_files(self) -> list[str]:
        """The work tree's code files now, as a snapshot would see them (size aside): tracked, and
        untracked but neither ignored nor left out (:data:`DEFAULT_EXCLUDES`, ``.florignore``)."""
        tracked = self.git("ls-files", "-z", "--cached").decode(errors="surrogateescape")
        untracked, _excluded = self.untracked_code()
        return [p for p in tracked.split("\0") if p and not in_flor_dir(p)] + untracked

    def diff(self, old: str, new: str, path: str | None = None) -> str:
        """Unified diff between two versions (optionally of one path)."""
        args = ["diff", old, new]
        if path:
            args += ["--", path]
        return self.git(*args).decode(errors="replace")

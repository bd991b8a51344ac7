"""Where a project's records live: one ``.flor/`` folder at the root of its git work tree.

::

    .flor/flor.db                                   the SQLite store
    .flor/objects/<sha256>                          checkpoint arrays, stored once by content
    .flor/checkpoints/<run_id>/<iteration>-<point>.json   checkpoint manifests

Only this module builds these paths; everything else asks it. A checkpoint's *location*, as the
store lists it, is its manifest's path relative to ``.flor/``.

>>> paths = ProjectPaths(Path("/work/proj"))
>>> paths.db
PosixPath('/work/proj/.flor/flor.db')
"""

from __future__ import annotations

from pathlib import Path

FLOR_DIR = ".flor"
DB_NAME = "flor.db"
GIT_EXCLUDE = FLOR_DIR + "/"  # the line of .git/info/exclude that keeps .flor/ out of git's view


def in_flor_dir(relative: str) -> bool:
    """Whether a path relative to the project's root (as git lists it) lies in ``.flor/``."""
    return relative == FLOR_DIR or relative.startswith(GIT_EXCLUDE)


class ProjectPaths:
    """The paths of one project's records, from its root. (A plain class: ``dataclasses``
    imports ``inspect``, 10 ms that ``import flor`` must not pay.)"""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ProjectPaths({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ProjectPaths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @classmethod
    def of_flor_dir(cls, flor_dir: Path) -> "ProjectPaths":
        """The paths of the project whose ``.flor/`` folder is ``flor_dir``."""
        return cls(Path(flor_dir).parent)

    @classmethod
    def of_db(cls, db: Path) -> "ProjectPaths":
        """The paths of the project whose database is ``db``."""
        return cls(Path(db).parent.parent)

    @property
    def flor_dir(self) -> Path:
        """``.flor/``: everything flor keeps for the project."""
        return Path(self.root) / FLOR_DIR

    @property
    def db(self) -> Path:
        """The SQLite store."""
        return self.flor_dir / DB_NAME

    @property
    def objects(self) -> Path:
        """Content-addressed checkpoint arrays."""
        return self.flor_dir / "objects"

    def object(self, digest: str) -> Path:
        """One checkpoint array, by its sha256."""
        return self.objects / str(digest)

    @property
    def doctor(self) -> Path:
        """What ``flor doctor --repair`` moved aside or unlisted (kept, never deleted)."""
        return self.flor_dir / "doctor"

    def run_checkpoints(self, run_id: int) -> Path:
        """The folder of one run's checkpoint manifests."""
        return self.flor_dir / "checkpoints" / str(run_id)

    @property
    def all_checkpoints(self) -> Path:
        """The folder of every run's checkpoint manifests."""
        return self.flor_dir / "checkpoints"

    @property
    def locks(self) -> Path:
        """Lock files (a run's replay lock)."""
        return self.flor_dir / "locks"

    def replay_lock(self, run_id: int) -> Path:
        """The lock a `flor replay` holds while it replays run ``run_id``."""
        return self.locks / f"replay-{run_id}.lock"

    def manifest(self, run_id: int, iteration: int, point: str) -> Path:
        """The manifest of one checkpoint."""
        return self.run_checkpoints(run_id) / f"{iteration:08d}-{point}.json"

    def location(self, manifest: Path) -> str:
        """A manifest's location as the store lists it (relative to ``.flor/``)."""
        return str(Path(manifest).relative_to(self.flor_dir))

    def at(self, location: str) -> Path:
        """The manifest at a location the store lists."""
        return self.flor_dir / location

"""The store of the project that contains a folder: found from the git work tree's root, at the
path ``paths`` gives. Every command and library call that reads or writes a project opens it here.

Before a reader shows runs, the runs whose process is gone are marked ``killed``
(:func:`refresh_statuses`). That write is a nicety of the reader, not its purpose: a database that
cannot be written (a read-only copy, a writer holding the lock past the busy timeout) is still
read, with its statuses as stored, and a :class:`~flor.errors.FlorWarning` says so.

>>> store = open_for_reading()                          # doctest: +SKIP
>>> store = project_store(readonly=False)               # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import FlorWarning, StoreError
from ..environment.paths import ProjectPaths
from ..environment.vcs import find_root
from . import Store


def project_db(start: Path | None = None) -> Path:
    """The database of the project that contains ``start`` (default: the working directory);
    a :class:`StoreError` when nothing has been recorded there yet."""
    root, _ = find_root(Path.cwd() if start is None else start)
    path = ProjectPaths(root).db
    if not path.exists():
        raise StoreError(f"no flor runs recorded under {root} yet; run a script that imports flor first")
    return path


def project_store(start: Path | None = None, *, readonly: bool = True) -> Store:
    """The store of the project that contains ``start`` (default: the working directory)."""
    path = project_db(start)
    return Store.open(path, readonly=True) if readonly else Store.open(path, readonly=False, create=False)


def refresh_statuses(start: Path | None = None) -> None:
    """Mark runs whose process died as killed before showing them. Nothing recorded yet is left
    to the read that follows (it says so); a database that cannot be written is read as it is."""
    try:
        path = project_db(start)
    except StoreError:
        return  # the read that follows names it
    try:
        store = Store.open(path, readonly=False, create=False)
        try:
            store.reap_killed()
        finally:
            store.close()
    except StoreError as exc:
        warnings.warn(f"runs whose process is gone could not be marked killed, so their status is shown as "
                      f"stored ({' '.join(str(exc).split())})", FlorWarning, stacklevel=3)


def open_for_reading(start: Path | None = None) -> Store:
    """The project's store, read-only, after marking runs whose process died as killed."""
    refresh_statuses(start)
    return project_store(start)

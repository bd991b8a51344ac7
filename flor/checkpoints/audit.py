"""What ``flor doctor`` checks of checkpoints, and how it repairs them without destroying anything.

Every listed checkpoint is checked in ``.flor/`` (manifest JSON, its sha256 against the one the
store kept, each array present with its sha256) and, with ``FLOR_CHECKPOINT_STORE``, in the store
(downloaded and hashed, as a replay on another machine reads it). What is found is told apart:

- a file that is *missing* (local copies deleted to save space: the store's copy serves reads);
- a file that is *damaged* (corrupt, edited, or another checkpoint's manifest in its place);
- a file that is *unreadable* (permissions, a folder in its place): not damage, never unlisted;
- a store that does not answer: nothing is decided about the copies only it holds.

A checkpoint is unlisted only where no whole copy is left, and its row is kept first in
``.flor/doctor/unlisted-<time>.json``; a damaged local copy is moved to ``.flor/doctor/`` when
the store's copy is whole; a damaged or missing copy in the store is uploaded again from
``.flor/``, what it replaces kept under ``doctor/`` in the store; checkpoints the store holds for
listed runs that lost their row (an earlier repair) are listed again.

The functions take doctor's report (``add(what, fix) -> Problem``, ``notes``) and a ``Store``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..environment import settings
from ..errors import FlorError
from ..environment.paths import ProjectPaths
from .objects import DAMAGED, MISSING, UNREADABLE, ObjectError, Reader, stored
from .restore import unexpected_pickles


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")




def _local_state(flor_dir: Path, location: str, verified: dict, pickled: list[str] | None = None,
                 sha256: str | None = None) -> tuple[str, str] | None:
    """``(kind, what)`` is wrong with one checkpoint's files in ``.flor/``, or None. ``kind``:
    MISSING (a file is not there), DAMAGED (corrupt, edited, swapped), UNREADABLE (there but
    cannot be read: permissions, a folder in its place; never a reason to unlist). ``verified``
    caches per-blob answers; ``pickled``: the objects the store recorded as pickled in it;
    ``sha256``: of the manifest's bytes, as the store kept it."""
    paths = ProjectPaths.of_flor_dir(flor_dir)
    path = paths.at(location)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return MISSING, f"its manifest {path.name} is missing"
    except OSError as exc:
        return UNREADABLE, f"its manifest {path.name} cannot be read ({exc.strerror or exc})"
    wrong = _manifest_content(data, pickled)
    if wrong:
        return DAMAGED, f"its manifest {path.name} {wrong}"
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return DAMAGED, (f"its manifest {path.name} is not the one written (its sha256 differs from the store's): "
                         "it was edited or swapped")
    reader = Reader(ProjectPaths.of_flor_dir(flor_dir).objects)
    for digest in json.loads(data)["blobs"]:
        if digest not in verified:
            verified[digest] = _object_state(reader, str(digest))
        if verified[digest]:
            return verified[digest]
    return None


def _object_state(reader: Reader, digest: str) -> tuple[str, str] | None:
    """What is wrong with one object (decoded through its delta chain and hashed), or None."""
    try:
        reader.read(digest)
    except ObjectError as exc:
        if exc.kind == MISSING:
            return MISSING, f"object {digest[:12]} is missing"
        if exc.kind == UNREADABLE:
            return UNREADABLE, f"object {digest[:12]} cannot be read ({exc})"
        return DAMAGED, f"object {digest[:12]} is corrupt (sha256 differs): {exc}"
    finally:
        reader.cache.clear()  # one object's bytes at a time: doctor reads whole projects
    return None


def _manifest_content(data: bytes, pickled: list[str] | None) -> str | None:
    """What is wrong with a manifest's text (not JSON, no list of objects, smuggled pickles)."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        return f"is not valid JSON ({exc})"
    blobs = manifest.get("blobs") if isinstance(manifest, dict) else None
    if not isinstance(blobs, list) or "objects" not in manifest:
        return "lacks the list of objects"
    unexpected = unexpected_pickles(manifest, pickled)
    if unexpected:
        return (f"holds pickled code the run did not record ({', '.join(unexpected)}): it may have been "
                "tampered with; do not load it with trusted=True")
    return None


def _verify_manifest(flor_dir: Path, location: str, verified: dict, pickled: list[str] | None = None,
                     sha256: str | None = None) -> str | None:
    """What is wrong with one checkpoint in ``.flor/``, or None (see :func:`_local_state`)."""
    state = _local_state(flor_dir, location, verified, pickled, sha256)
    return None if state is None else state[1]


def _remote_state(remote, location: str, verified: dict, pickled: list[str] | None = None,
                  sha256: str | None = None) -> str | None:
    """What is wrong with one checkpoint's copy in the checkpoint store, or None (arrays
    downloaded and hashed, as a replay on another machine would). An unreachable store raises
    CheckpointError: that is not an answer about the checkpoint."""
    data = remote.fetch(location)
    if data is None:
        return "its manifest is not there"
    wrong = _manifest_content(data, pickled)
    if wrong:
        return f"its manifest {wrong}"
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return "its manifest is not the one written (its sha256 differs from the store's): it was edited or swapped"
    reader = Reader(None, remote)
    for digest in json.loads(data)["blobs"]:
        if digest not in verified:
            found = _object_state(reader, str(digest))
            verified[digest] = None if found is None else found[1]
        if verified[digest]:
            return verified[digest]
    return None


def _keep_rows(flor_dir: Path, store, keys: list[tuple]) -> Path:
    """Write the rows of checkpoints about to be unlisted to ``.flor/doctor/unlisted-<time>.json``
    (a repair keeps what it removes; ``flor doctor --repair`` can list them again from there)."""
    folder = ProjectPaths.of_flor_dir(flor_dir).doctor
    folder.mkdir(exist_ok=True)
    target = folder / f"unlisted-{_stamp()}-{os.getpid()}.json"
    target.write_text(json.dumps(store.checkpoint_rows(keys), indent=1))
    return target


def _move_local_aside(flor_dir: Path, location: str, verified: dict) -> list[str]:
    """Move a checkpoint's damaged local files to ``.flor/doctor/`` (reads then go to the
    checkpoint store, whose copy is whole); the paths they were moved to."""
    paths = ProjectPaths.of_flor_dir(flor_dir)
    folder = paths.doctor
    moved = []
    candidates = [paths.at(location)]
    candidates += [stored(paths.objects, d) or paths.object(d)
                   for d, wrong in verified.items() if wrong and wrong[0] == DAMAGED]
    for path in candidates:
        if path.is_file():
            target = folder / f"{path.relative_to(flor_dir)}.{_stamp()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(str(target.relative_to(flor_dir)))
    return moved


def _remote_for_doctor(report):
    """(the checkpoint store or None, why it cannot be reached or None)."""
    from .remote import remote_store

    try:
        remote = remote_store()
    except FlorError as exc:
        report.add(f"the checkpoint store cannot be used ({exc})",
                   "install what it needs or fix FLOR_CHECKPOINT_STORE; nothing is unlisted until its copies can be checked")
        return None, str(exc)
    if remote is None:
        return None, None
    return remote, remote.check(settings.store_check_s())


def check_checkpoints(report, store, flor_dir: Path, repair: bool, relist: bool) -> None:
    """Every listed checkpoint, in ``.flor/`` and (with FLOR_CHECKPOINT_STORE) in the store. A
    checkpoint is unlisted only where neither copy is whole and both could be checked."""
    remote, unreachable = _remote_for_doctor(report)
    if remote is None and unreachable is not None:
        remote = False  # configured but unusable: said above
    url = remote.url if remote else "FLOR_CHECKPOINT_STORE"
    verified: dict = {}
    far_verified: dict = {}
    unlist: list[tuple] = []
    only_remote = 0
    if remote and unreachable:
        report.add(f"the checkpoint store {url} does not answer ({unreachable}); checkpoints whose copy is only "
                   "there were not checked, and nothing is unlisted or uploaded",
                   "run `flor doctor` again when the store answers (endpoint, credentials)")
    for run_id, iteration, point, location, tstamp, pickled, sha, uploaded in store.all_checkpoints():
        key = (run_id, iteration, point)
        name = f"checkpoint .flor/{location} (run {tstamp or f'#{run_id}'}, iteration {iteration})"
        local = _local_state(flor_dir, location, verified, pickled, sha)
        if local is not None and local[0] == UNREADABLE:
            report.add(f"{name}: {local[1]}; this is not damage, and it stays listed",
                       "fix the file's permissions, then run `flor doctor` again; `--repair` leaves it alone")
            continue
        if remote is None:
            if local:
                unlist.append((report.add(f"{name}: {local[1]}", "run `flor doctor --repair` to unlist it (its files "
                                          "and its row are kept); replay then starts from an earlier checkpoint"), key))
            continue
        if remote is False or unreachable:
            continue  # said once above
        try:
            far = _remote_state(remote, location, far_verified, pickled, sha)
        except FlorError as exc:
            report.add(f"{name}: its copy in {url} cannot be checked ({exc}); not unlisted",
                       "run `flor doctor` again when the store answers")
            continue
        if local is None and far is None:
            if uploaded == 0 and repair:
                store.mark_uploaded(*key)  # a run that ended before the upload's mark was written
            continue
        if local is None:
            problem = report.add(f"{name}: {'it was not uploaded to ' + url if uploaded == 0 and far.startswith('its manifest is not there') else 'its copy in ' + url + ': ' + far}",
                                 "run `flor doctor --repair` to upload it from .flor/")
            if repair:
                stamp = _stamp()
                kept = [remote.keep_aside(location, stamp)] if not far.startswith("its manifest is not there") else []
                damaged = frozenset(d for d, wrong in far_verified.items() if wrong and "corrupt" in wrong)
                kept += [remote.keep_aside(f"objects/{d}", stamp) for d in sorted(damaged)]
                remote.upload_written(flor_dir, location, replace=damaged)
                for digest in damaged:
                    far_verified[digest] = None
                store.mark_uploaded(*key)
                problem.repaired = True
                kept = [k for k in kept if k]
                problem.note = "uploaded again from .flor/" + (f" (what it replaced is kept at {', '.join(kept)})" if kept else "")
            continue
        if far is None:
            if local[0] == MISSING:
                only_remote += 1  # local copies deleted to save space: the store's copy serves reads
                continue
            problem = report.add(f"{name}: {local[1]}; its copy in {url} is whole",
                                 "run `flor doctor --repair` to move the damaged local files aside (kept under "
                                 ".flor/doctor/); reads then use the copy in the store")
            if repair:
                moved = _move_local_aside(flor_dir, location, verified)
                problem.repaired = True
                problem.note = f"moved aside to .flor/{', .flor/'.join(moved)}" if moved else "nothing local to move"
            continue
        unlist.append((report.add(f"{name}: {local[1]}; its copy in {url}: {far}",
                                  "run `flor doctor --repair` to unlist it (its files and its row are kept); "
                                  "replay then starts from an earlier checkpoint"), key))
    if only_remote:
        report.notes.append(f"{only_remote} checkpoint(s) are only in {url} (no local copy): replay reads them from there")
    if repair and unlist:
        kept = _keep_rows(flor_dir, store, [key for _, key in unlist])
        store.unlist_checkpoints([key for _, key in unlist])
        for problem, _ in unlist:
            problem.repaired = True
            problem.note = f"unlisted; its files are kept, and its row in .flor/{kept.relative_to(flor_dir)}"
    if relist:
        _relist_manifests(report, store, flor_dir, verified)
    if remote and not unreachable:
        _relist_from_remote(report, store, flor_dir, remote, repair)


def _relist_manifests(report, store, flor_dir: Path, verified: dict) -> None:
    """After a recovery, list again the intact checkpoints of recovered runs that lost their row."""
    listed = {(r[0], r[1], r[2]) for r in store.all_checkpoints()}
    runs = {r.run_id for r in store.runs()}
    rows = []
    folder = ProjectPaths.of_flor_dir(flor_dir).all_checkpoints
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        location = str(path.relative_to(flor_dir))
        try:
            data = path.read_bytes()
            manifest = json.loads(data)
            key = (int(manifest["run_id"]), int(manifest["iteration"]), str(manifest["point"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if key in listed or key[0] not in runs or _verify_manifest(flor_dir, location, verified):
            continue
        size = int(manifest.get("bytes", 0))
        rows.append((*key, location, size, size, None, None, float(manifest.get("created", time.time())),
                     hashlib.sha256(data).hexdigest(), None))
    if rows:
        store.relist_checkpoints(rows)
        report.notes.append(f"listed again {len(rows)} intact checkpoint(s) found on disk")


def _kept_digests(flor_dir: Path) -> dict[tuple, str]:
    """(run_id, iteration, point) -> the manifest sha256 of rows an earlier repair unlisted."""
    kept: dict[tuple, str] = {}
    folder = ProjectPaths.of_flor_dir(flor_dir).doctor
    for path in sorted(folder.glob("unlisted-*.json")) if folder.is_dir() else []:
        try:
            for row in json.loads(path.read_text()):
                if row.get("manifest_sha256"):
                    kept[(row["run_id"], row["iteration"], row["point"])] = row["manifest_sha256"]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return kept


def _relist_from_remote(report, store, flor_dir: Path, remote, repair: bool) -> None:
    """List again the whole checkpoints the checkpoint store holds for listed runs that lost
    their row (an earlier repair that unlisted checkpoints whose local copies were deleted)."""
    listed = {(r[0], r[1], r[2]) for r in store.all_checkpoints()}
    runs = {r.run_id for r in store.runs()}
    kept = _kept_digests(flor_dir)
    verified: dict = {}
    rows = []
    try:
        locations = remote.manifests()
        for location in locations:
            data = remote.fetch(location)
            if data is None:
                continue
            try:
                manifest = json.loads(data)
                key = (int(manifest["run_id"]), int(manifest["iteration"]), str(manifest["point"]))
            except (ValueError, KeyError, TypeError):
                continue
            sha = hashlib.sha256(data).hexdigest()
            if key in listed or key[0] not in runs or kept.get(key, sha) != sha:
                continue
            if location != ProjectPaths.of_flor_dir(flor_dir).location(ProjectPaths.of_flor_dir(flor_dir).manifest(*key)):
                continue  # a manifest under another checkpoint's name
            if _remote_state(remote, location, verified, None, sha):
                continue
            size = int(manifest.get("bytes", 0))
            rows.append((*key, location, size, size, None, None, float(manifest.get("created", time.time())), sha, 1))
    except FlorError as exc:
        report.add(f"the checkpoints in {remote.url} cannot be listed ({exc})", "run `flor doctor` again when the store answers")
        return
    if not rows:
        return
    problem = report.add(f"{len(rows)} whole checkpoint(s) in {remote.url} are not listed (e.g. {rows[0][3]})",
                         "run `flor doctor --repair` to list them again")
    if repair:
        store.relist_checkpoints(rows)
        problem.repaired = True
        problem.note = "listed again"

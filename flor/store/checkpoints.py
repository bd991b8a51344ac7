"""The durable checkpoints of runs, as listed in the store (their files are in ``.flor/``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointRow:
    """One durable checkpoint of a run."""

    iteration: int
    point: str
    location: str
    bytes: int
    bytes_written: int
    snapshot_s: float | None
    write_s: float | None
    created: float
    pickled: list[str] | None = None  # registered objects held as pickles (None: listed before flor kept this)
    sha256: str | None = None  # of the manifest's bytes (None: listed before flor kept this)
    uploaded: int | None = None  # to FLOR_CHECKPOINT_STORE: None no store, 0 local only, 1 uploaded


class CheckpointsMixin:
    """What :class:`~flor.store.Store` reads and writes of checkpoints."""

    def add_checkpoint(
        self, run_id: int, iteration: int, point: str, location: str, nbytes: int, written: int,
        snapshot_s: float, write_s: float, pickled: list[str] = (), sha256: str | None = None,
        uploaded: int | None = None,
    ) -> None:
        """Record a durable checkpoint of outer iteration ``iteration`` taken at ``point``
        ('nested': where the first nested loop ended; 'end': the end of the iteration), which
        registered objects it holds as pickles, the sha256 of its manifest, and whether its copy
        is in the checkpoint store (see :class:`CheckpointRow`)."""
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO checkpoints(run_id, iteration, point, location, bytes, bytes_written, "
                "snapshot_s, write_s, created, pickled, manifest_sha256, uploaded) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, iteration, point, location, nbytes, written, snapshot_s, write_s, time.time(),
                 json.dumps(sorted(pickled)), sha256, uploaded),
            )
        )

    def mark_uploaded(self, run_id: int, iteration: int, point: str, uploaded: int = 1) -> None:
        """Note that a checkpoint's copy reached the checkpoint store (or, with 0, that it did not)."""
        self._write(lambda c: c.execute(
            "UPDATE checkpoints SET uploaded = ? WHERE run_id = ? AND iteration = ? AND point = ?",
            (uploaded, run_id, iteration, point),
        ))

    def checkpoints(self, run_id: int) -> list["CheckpointRow"]:
        """The run's durable checkpoints, by iteration."""
        return [
            CheckpointRow(*row[:8], None if row[8] is None else json.loads(row[8]), row[9], row[10])
            for row in self._read(
                "SELECT iteration, point, location, bytes, bytes_written, snapshot_s, write_s, created, pickled, "
                "manifest_sha256, uploaded FROM checkpoints WHERE run_id = ? ORDER BY iteration, point",
                (run_id,),
            )
        ]

    def all_checkpoints(self) -> list[tuple]:
        """``(run_id, iteration, point, location, tstamp, pickled, manifest_sha256, uploaded)`` of
        every listed checkpoint (tstamp None for a checkpoint whose run is not listed)."""
        return [
            (*row[:5], None if row[5] is None else json.loads(row[5]), row[6], row[7])
            for row in self._read(
                "SELECT c.run_id, c.iteration, c.point, c.location, r.tstamp, c.pickled, c.manifest_sha256, "
                "c.uploaded FROM checkpoints c LEFT JOIN runs r ON r.run_id = c.run_id "
                "ORDER BY c.run_id, c.iteration, c.point"
            )
        ]

    def checkpoint_rows(self, keys: list[tuple[int, int, str]]) -> list[dict]:
        """The full rows of checkpoints ``(run_id, iteration, point)``, as dicts (what a repair
        keeps before it unlists them)."""
        columns = ("run_id", "iteration", "point", "location", "bytes", "bytes_written", "snapshot_s", "write_s",
                   "created", "pickled", "manifest_sha256", "uploaded")
        found = []
        for key in keys:
            for row in self._read(f"SELECT {', '.join(columns)} FROM checkpoints "
                                  "WHERE run_id = ? AND iteration = ? AND point = ?", key):
                found.append(dict(zip(columns, row)))
        return found

    def unlist_checkpoints(self, keys: list[tuple[int, int, str]]) -> None:
        """Remove the listing of checkpoints ``(run_id, iteration, point)`` (their files stay)."""
        self._write(lambda c: c.executemany(
            "DELETE FROM checkpoints WHERE run_id = ? AND iteration = ? AND point = ?", keys
        ))

    def relist_checkpoints(self, rows: list[tuple]) -> None:
        """List checkpoints found on disk (or in the checkpoint store) again: ``(run_id, iteration,
        point, location, bytes, bytes_written, snapshot_s, write_s, created[, manifest_sha256,
        uploaded])``; a listed one is left as it is."""
        rows = [tuple(row) + (None,) * (11 - len(row)) for row in rows]
        self._write(lambda c: c.executemany(
            "INSERT OR IGNORE INTO checkpoints(run_id, iteration, point, location, bytes, bytes_written, "
            "snapshot_s, write_s, created, manifest_sha256, uploaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        ))

    def pin_checkpoint(self, run_id: int, iteration: int, reason: str) -> None:
        """Keep the checkpoints of ``run_id`` at ``iteration`` from ``flor gc`` (the model registry
        pins what ``flor.best`` names)."""
        self._write(lambda c: c.execute(
            "INSERT OR IGNORE INTO checkpoint_pins(run_id, iteration, reason, created) VALUES (?, ?, ?, ?)",
            (run_id, iteration, reason, time.time()),
        ))

    def checkpoint_pins(self) -> dict[int, set[int]]:
        """run_id -> the pinned iterations."""
        found: dict[int, set[int]] = {}
        for run_id, iteration in self._read("SELECT run_id, iteration FROM checkpoint_pins"):
            found.setdefault(run_id, set()).add(iteration)
        return found

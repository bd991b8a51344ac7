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


class CheckpointsMixin:
    """What :class:`~flor.store.Store` reads and writes of checkpoints."""

    def add_checkpoint(
        self, run_id: int, iteration: int, point: str, location: str, nbytes: int, written: int,
        snapshot_s: float, write_s: float, pickled: list[str] = (),
    ) -> None:
        """Record a durable checkpoint of outer iteration ``iteration`` taken at ``point``
        ('nested': where the first nested loop ended; 'end': the end of the iteration), and which
        registered objects it holds as pickles."""
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO checkpoints(run_id, iteration, point, location, bytes, bytes_written, "
                "snapshot_s, write_s, created, pickled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, iteration, point, location, nbytes, written, snapshot_s, write_s, time.time(),
                 json.dumps(sorted(pickled))),
            )
        )

    def checkpoints(self, run_id: int) -> list["CheckpointRow"]:
        """The run's durable checkpoints, by iteration."""
        return [
            CheckpointRow(*row[:8], None if row[8] is None else json.loads(row[8]))
            for row in self._read(
                "SELECT iteration, point, location, bytes, bytes_written, snapshot_s, write_s, created, pickled "
                "FROM checkpoints WHERE run_id = ? ORDER BY iteration, point",
                (run_id,),
            )
        ]

    def all_checkpoints(self) -> list[tuple]:
        """``(run_id, iteration, point, location, tstamp, pickled)`` of every listed checkpoint
        (tstamp None for a checkpoint whose run is not listed)."""
        return [
            (*row[:5], None if row[5] is None else json.loads(row[5]))
            for row in self._read(
                "SELECT c.run_id, c.iteration, c.point, c.location, r.tstamp, c.pickled FROM checkpoints c "
                "LEFT JOIN runs r ON r.run_id = c.run_id ORDER BY c.run_id, c.iteration, c.point"
            )
        ]

    def unlist_checkpoints(self, keys: list[tuple[int, int, str]]) -> None:
        """Remove the listing of checkpoints ``(run_id, iteration, point)`` (their files stay)."""
        self._write(lambda c: c.executemany(
            "DELETE FROM checkpoints WHERE run_id = ? AND iteration = ? AND point = ?", keys
        ))

    def relist_checkpoints(self, rows: list[tuple]) -> None:
        """List checkpoints found on disk again: ``(run_id, iteration, point, location, bytes,
        bytes_written, snapshot_s, write_s, created)``; a listed one is left as it is."""
        self._write(lambda c: c.executemany(
            "INSERT OR IGNORE INTO checkpoints(run_id, iteration, point, location, bytes, bytes_written, "
            "snapshot_s, write_s, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        ))

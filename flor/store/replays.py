"""Replayed values, with drift and progress marks.

The values of one (run, loop instance, iteration, name) arrive together (the replay worker sends
an outer iteration's values at once); storing them replaces what an earlier replay stored there,
so replaying again never doubles a value, and a name logged several times in one context keeps
every value, in order."""

from __future__ import annotations

import time
from typing import Sequence

from ..logged import Drift, LoggedValue, LoopInstance, ReplayDone
from .logs import ADD_LOOSE_SQL, count_names


class ReplaysMixin:
    """What :class:`~flor.store.Store` writes and reads for replay."""

    def write_replayed(
        self, run_id: int, contexts: Sequence[LoopInstance], logs: Sequence[LoggedValue], drift: Sequence[Drift] = (),
        done: Sequence[ReplayDone] = (),
    ) -> None:
        """Store replayed values (stored with source ``replay``, whatever theirs), replacing those
        an earlier replay stored in the same (loop, iteration, name); new loop instances (as in
        :meth:`write_batch`); what drifted; and finished outer iterations (-1: the statements
        outside the outer loop)."""
        now = time.time()
        rid = int(run_id)

        def body(cursor):
            if done:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO replay_done(run_id, name, iteration) VALUES ({rid}, ?, ?)", done
                )
            if contexts:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, "
                    f"t_start, t_end, iterations) VALUES ({rid}, ?, ?, ?, ?, ?, ?, ?)",
                    contexts,
                )
            if logs:
                # Insert before deleting what they replace: new rows then take rowids above every
                # existing one (SQLite reuses the rowids of deleted rows at the end of the table),
                # so readers that follow the rowid, such as flor ui, see them.
                before = cursor.execute("SELECT IFNULL(MAX(rowid), 0) FROM logs").fetchone()[0]
                cursor.executemany(
                    f"INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype, source) "
                    f"VALUES ({rid}, ?, ?, ?, ?, ?, 'replay')",
                    [(v.ctx_id, v.iteration, v.name, v.value, v.vtype) for v in logs],
                )
                keys = list(dict.fromkeys((-1 if v.ctx_id is None else v.ctx_id, -1 if v.iteration is None else v.iteration,
                                           v.name) for v in logs))
                cursor.executemany(
                    f"DELETE FROM logs INDEXED BY logs_replay_once WHERE run_id = {rid} AND IFNULL(ctx_id, -1) = ? "
                    f"AND IFNULL(iteration, -1) = ? AND name = ? AND source = 'replay' AND rowid <= {int(before)}",
                    keys,
                )
                cursor.executemany(ADD_LOOSE_SQL, count_names(v.name for v in logs).items())
            if drift:
                cursor.executemany(
                    f"INSERT INTO drift(run_id, ctx_id, iteration, name, recorded, replayed, difference, replayed_at) "
                    f"VALUES ({rid}, ?, ?, ?, ?, ?, ?, {now})",
                    drift,
                )

        self._write(body)

    def replay_done(self, run_id: int, name: str) -> set[int]:
        """Outer iterations (and -1 for outside the loop) whose replay of ``name`` finished."""
        return {r[0] for r in self._read("SELECT iteration FROM replay_done WHERE run_id = ? AND name = ?", (run_id, name))}

    def replay_done_all(self, run_id: int) -> dict[str, set[int]]:
        """Per name, the outer iterations (and -1 for outside the loop) whose replay finished."""
        done: dict[str, set[int]] = {}
        for name, iteration in self._read("SELECT name, iteration FROM replay_done WHERE run_id = ?", (run_id,)):
            done.setdefault(name, set()).add(iteration)
        return done

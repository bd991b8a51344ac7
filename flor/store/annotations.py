"""What people write about runs after the fact: a name, tags, a note, and whether it is archived.

Written only by ``flor ui --allow-edit`` (the page's edit form) and read by the UI's runs table.
One row per annotated run; a run never annotated has none. Recorded values are never touched:
these are the only rows the UI writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ..errors import UsageError

MAX_NAME = 200
MAX_TAG = 64
MAX_TAGS = 32
MAX_NOTE = 20_000


@dataclass(frozen=True)
class RunNote:
    """A run's annotations: ``name`` and ``note`` may be None, ``tags`` is a tuple of text."""

    run_id: int
    name: str | None = None
    tags: tuple[str, ...] = ()
    note: str | None = None
    archived: bool = False
    updated: float | None = None

    @classmethod
    def from_row(cls, row: tuple) -> "RunNote":
        """From ``(run_id, name, tags, note, archived, updated)`` as the table holds it."""
        run_id, name, tags, note, archived, updated = row
        try:
            parsed = json.loads(tags or "[]")
        except ValueError:
            parsed = []
        return cls(int(run_id), name, tuple(str(t) for t in parsed if isinstance(t, str)), note, bool(archived), updated)


_KEEP = object()


def checked_note(run_id: int, previous: RunNote | None, *, name=_KEEP, tags=_KEEP, note=_KEEP, archived=_KEEP) -> RunNote:
    """``previous`` with the given fields replaced, each checked (one UsageError line if wrong).

    >>> checked_note(1, None, name=" best ", tags=["a", "a", " b "]).tags
    ('a', 'b')
    """
    base = previous or RunNote(run_id)
    if name is not _KEEP:
        if name is not None and not isinstance(name, str):
            raise UsageError("a run's name must be text")
        name = (name or "").strip() or None
        if name is not None and len(name) > MAX_NAME:
            raise UsageError(f"a run's name must be at most {MAX_NAME} characters")
    else:
        name = base.name
    if tags is not _KEEP:
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise UsageError("tags must be a list of text")
        cleaned = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
        if len(cleaned) > MAX_TAGS or any(len(t) > MAX_TAG or "," in t for t in cleaned):
            raise UsageError(f"at most {MAX_TAGS} tags, each at most {MAX_TAG} characters and without commas")
        tags = tuple(cleaned)
    else:
        tags = base.tags
    if note is not _KEEP:
        if note is not None and not isinstance(note, str):
            raise UsageError("a note must be text")
        note = note or None
        if note is not None and len(note) > MAX_NOTE:
            raise UsageError(f"a note must be at most {MAX_NOTE} characters")
    else:
        note = base.note
    if archived is not _KEEP:
        if not isinstance(archived, bool):
            raise UsageError("archived must be true or false")
    else:
        archived = base.archived
    return RunNote(int(run_id), name, tags, note, archived, time.time())


class AnnotationsMixin:
    """What :class:`~flor.store.Store` writes and reads of run annotations."""

    def run_note(self, run_id: int) -> RunNote | None:
        """The annotations of one run, or None."""
        rows = self._read("SELECT run_id, name, tags, note, archived, updated FROM run_notes WHERE run_id = ?",
                          (int(run_id),))
        return RunNote.from_row(rows[0]) if rows else None

    def annotate_run(self, run_id: int, **fields) -> RunNote:
        """Replace some of a run's annotations (``name``, ``tags``, ``note``, ``archived``); the
        others keep their values. Returns what is stored now."""
        if not self._read("SELECT 1 FROM runs WHERE run_id = ?", (int(run_id),)):
            raise UsageError(f"no run with id {run_id}")
        stored: list[RunNote] = []

        def body(cursor):
            rows = cursor.execute(
                "SELECT run_id, name, tags, note, archived, updated FROM run_notes WHERE run_id = ?", (int(run_id),)
            ).fetchall()
            current = checked_note(run_id, RunNote.from_row(rows[0]) if rows else None, **fields)
            cursor.execute(
                "INSERT OR REPLACE INTO run_notes(run_id, name, tags, note, archived, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (current.run_id, current.name, json.dumps(list(current.tags)), current.note, int(current.archived),
                 current.updated),
            )
            stored.append(current)

        self._write(body)
        return stored[-1]

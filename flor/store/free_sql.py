"""Free SQL (``flor query``): one read-only statement over the store."""

from __future__ import annotations

import sqlite3
from typing import Sequence

from ..errors import StoreError


class FreeSQLMixin:
    """``flor query``'s statements, read-only."""

    def execute_readonly(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        """Run one read-only statement; return (column names, rows)."""
        try:
            cursor = self._retry(lambda: self.connection.execute(sql, params))
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "readonly" in text.replace(" ", "") or "query_only" in text:
                raise StoreError("flor query is read-only; use SELECT statements") from exc
            raise StoreError(f"query failed: {text}") from exc

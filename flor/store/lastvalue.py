"""The last value of a name in a run: the one definition that every surface reads through.

A run's last value of a name is its value at the run's last logged iteration, whatever stored it
(``record``, ``replay`` or ``extract``): values are ordered by their loop position, outermost loop
iteration first, then the iterations of the loops inside it, in loop order (loop instances by
creation, which is ``ctx_id`` order); a value logged at a loop level comes after every value of
the loops inside that iteration, so a run-level value comes after every iteration; among several
values in one identical context the last logged (greatest rowid) wins.

Storage order is not enough: a replay stores outer iterations as its workers finish them, and a
second replay over earlier iterations stores them after later ones.

The order is a text key per logs row, compared as text (so that SQL's MAX, and a caller that
merges partial results, both apply it)::

    run level:       '~'
    in a loop:       path(ctx) + enc(iteration) + '~'
    path(top loop):  enc(ctx_id)
    path(inner):     path(parent) + enc(parent_iteration) + enc(ctx_id)

``enc`` prints a number in a fixed width, so digit strings compare as numbers, and ``~`` sorts
after every digit, so a value at a level comes after everything nested in the same iteration (and
no key is a prefix of another). :func:`order_key` appends the rowid for the last-logged tie-break.
The paths come from a recursive walk up ``contexts`` (one primary-key lookup per level) for only
the loop instances the rows name.
"""

from __future__ import annotations

WIDTH = 12  # digits of enc(): ctx ids, iterations and rowids below 10**12


def _enc(expression: str) -> str:
    return f"printf('%0{WIDTH}d', {expression})"


def paths_ctes(instances: str) -> str:
    """Common table expressions (for a ``WITH RECURSIVE`` clause) defining ``lv_paths(run_id,
    ctx_id, path)`` for the loop instances ``(run_id, ctx_id)`` that the SELECT ``instances`` gives."""
    return (
        "lv_up(run_id, ctx_id, at, path) AS ("
        f"SELECT run_id, ctx_id, ctx_id, '' FROM ({instances}) "
        "UNION ALL "
        "SELECT u.run_id, u.ctx_id, c.parent_id, "
        f"CASE WHEN c.parent_id IS NULL THEN '' ELSE {_enc('c.parent_iteration')} END || {_enc('c.ctx_id')} || u.path "
        "FROM lv_up u JOIN contexts c ON c.run_id = u.run_id AND c.ctx_id = u.at), "
        "lv_paths(run_id, ctx_id, path) AS (SELECT run_id, ctx_id, path FROM lv_up WHERE at IS NULL) "
    )


def order_key(ctx: str = "l.ctx_id", iteration: str = "l.iteration", rowid: str = "l.rowid",
              path: str = "p.path") -> str:
    """The SQL text of a logs row's order key (position, then rowid), from SQL text for its
    ctx_id, iteration and rowid and for its ``lv_paths.path`` (LEFT JOINed on run_id and
    ctx_id). A loop instance whose context row is missing counts as a top-level loop."""
    position = (
        f"CASE WHEN {ctx} IS NULL THEN '~' ELSE IFNULL({path}, {_enc(ctx)}) || "
        f"{_enc(f'IFNULL({iteration}, -1)')} || '~' END"
    )
    return f"{position} || {_enc(rowid)}"


def rowid_of_key(key: str) -> str:
    """The SQL text of the rowid that an order key ``key`` (SQL text) ends with."""
    return f"CAST(substr({key}, -{WIDTH}) AS INTEGER)"


def last_rows_sql(where: str, instances: str) -> str:
    """One SELECT of ``(run_id, name, value, vtype, source)``: the last value of each (run, name)
    among the logs rows ``l`` that ``where`` (SQL text over ``l``) keeps; ``instances`` selects
    ``(run_id, ctx_id)`` of (at least) the loop instances those rows name."""
    return (
        "WITH RECURSIVE " + paths_ctes(instances)
        + "SELECT x.run_id, x.name, x.value, x.vtype, x.source FROM ("
        f"SELECT MAX({order_key()}) AS k FROM logs l LEFT JOIN lv_paths p ON p.run_id = l.run_id "
        f"AND p.ctx_id = l.ctx_id WHERE {where} GROUP BY l.run_id, l.name"
        f") g JOIN logs x ON x.rowid = {rowid_of_key('g.k')}"
    )

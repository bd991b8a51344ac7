"""The store's schema, and the ordered migrations that bring an older database up to it.

``SCHEMA`` creates every table of the current version (``CREATE ... IF NOT EXISTS``, so it also
adds the tables a newer version introduced). ``MIGRATIONS`` lists, in order, what each version
changed in tables that already existed; a database at version v runs ``SCHEMA``, then the entries
after v (a database without a version runs them all). So every step must be idempotent, and
``SCHEMA`` must not index a column that a step adds. A database whose version is newer than
:data:`SCHEMA_VERSION` was made by a newer flor and is refused, never rewritten.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs(
    run_id INTEGER PRIMARY KEY,
    tstamp TEXT NOT NULL UNIQUE,
    projid TEXT NOT NULL,
    filename TEXT NOT NULL,
    argv TEXT NOT NULL,
    cwd TEXT NOT NULL,
    code_commit TEXT,
    vcs_note TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
    started REAL NOT NULL,
    ended REAL,
    heartbeat REAL,
    pid INTEGER,
    host TEXT,
    python TEXT,
    error TEXT,
    resumed_from INTEGER REFERENCES runs(run_id),
    rng_state BLOB,
    git_head TEXT,
    git_dirty INTEGER,
    environment TEXT
);
CREATE TABLE IF NOT EXISTS args(
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value,
    vtype TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS contexts(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    parent_id INTEGER,
    parent_iteration INTEGER,
    loop_name TEXT NOT NULL,
    t_start REAL,
    t_end REAL,
    iterations INTEGER,
    PRIMARY KEY (run_id, ctx_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iterations(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    t REAL,
    PRIMARY KEY (run_id, ctx_id, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER,
    iteration INTEGER,
    name TEXT NOT NULL,
    value,
    vtype TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'record'
);
CREATE INDEX IF NOT EXISTS logs_replay_once ON logs(run_id, IFNULL(ctx_id, -1), IFNULL(iteration, -1), name)
    WHERE source = 'replay';
CREATE TABLE IF NOT EXISTS log_blocks(
    block_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    vtype TEXT NOT NULL CHECK (vtype IN ('int', 'float')),
    n INTEGER NOT NULL,
    ctx_ids BLOB NOT NULL,
    iterations BLOB NOT NULL,
    value_data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_blocks_by_name ON log_blocks(name, block_id);
CREATE TABLE IF NOT EXISTS log_names(
    name TEXT PRIMARY KEY,
    loose INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints(
    run_id INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    point TEXT NOT NULL DEFAULT 'nested' CHECK (point IN ('nested', 'end')),
    location TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    bytes_written INTEGER NOT NULL,
    snapshot_s REAL,
    write_s REAL,
    created REAL NOT NULL,
    pickled TEXT,
    manifest_sha256 TEXT,
    uploaded INTEGER,
    PRIMARY KEY (run_id, iteration, point)
);
CREATE TABLE IF NOT EXISTS replay_done(
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    PRIMARY KEY (run_id, name, iteration)
);
CREATE TABLE IF NOT EXISTS output_blocks(
    run_id INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    n INTEGER NOT NULL,
    streams TEXT NOT NULL,
    meta BLOB NOT NULL,
    text BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS output_blocks_by_run ON output_blocks(run_id, first_line);
CREATE TABLE IF NOT EXISTS run_notes(
    run_id INTEGER PRIMARY KEY REFERENCES runs(run_id),
    name TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    note TEXT,
    archived INTEGER NOT NULL DEFAULT 0,
    updated REAL
);
CREATE TABLE IF NOT EXISTS keyed_loops(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    loop_name TEXT NOT NULL,
    fingerprint TEXT,
    incremental INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, ctx_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item_keys(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER NOT NULL,
    iteration INTEGER,
    key,
    ktype TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('started', 'done', 'skipped')),
    by_run INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS item_keys_by_run ON item_keys(run_id, ctx_id, iteration);
CREATE INDEX IF NOT EXISTS item_keys_done ON item_keys(state, run_id);
CREATE TABLE IF NOT EXISTS lineage(
    reader INTEGER NOT NULL,
    source INTEGER NOT NULL,
    how TEXT NOT NULL,
    PRIMARY KEY (reader, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lineage_by_source ON lineage(source);
CREATE TABLE IF NOT EXISTS drift(
    run_id INTEGER NOT NULL,
    ctx_id INTEGER,
    iteration INTEGER,
    name TEXT NOT NULL,
    recorded,
    replayed,
    difference REAL,
    replayed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs(
    job_id INTEGER PRIMARY KEY,
    tstamp TEXT NOT NULL UNIQUE,
    launch_key TEXT NOT NULL UNIQUE,
    world_size INTEGER NOT NULL,
    launcher TEXT NOT NULL,
    started REAL NOT NULL,
    snapshot_run INTEGER,
    code_commit TEXT,
    vcs_note TEXT,
    git_head TEXT,
    git_dirty INTEGER
);
CREATE TABLE IF NOT EXISTS job_ranks(
    run_id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(job_id),
    rank INTEGER NOT NULL,
    local_rank INTEGER,
    group_rank INTEGER,
    world_size INTEGER NOT NULL,
    local_world_size INTEGER,
    host TEXT,
    identity TEXT NOT NULL,
    UNIQUE (job_id, rank)
);
CREATE TABLE IF NOT EXISTS job_checkpoints(
    job_id INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    point TEXT NOT NULL,
    take INTEGER NOT NULL,
    decided_by INTEGER NOT NULL,
    PRIMARY KEY (job_id, iteration, point)
) WITHOUT ROWID;
"""

# Tables rebuilt from others, which a recovery does not copy.
DERIVED_TABLES = ("log_blocks", "log_names")
# Rows already in ``logs`` when blocks arrive (an older database, a recovered one) are loose.
SEED_LOG_NAMES = (
    "INSERT OR REPLACE INTO log_names(name, loose) SELECT name, COUNT(*) FROM logs GROUP BY name"
)


def _columns(cursor, table: str) -> set[str]:
    return {row[1] for row in cursor.execute(f"PRAGMA table_info({table})").fetchall()}


def _v2_blocks(cursor) -> None:
    # Columnar log blocks (blocks.py; SCHEMA created the tables): the rows already in `logs` are
    # all loose.
    cursor.execute(SEED_LOG_NAMES)


def _v3_user_head(cursor) -> None:
    # The user's own HEAD commit at the time of a run, and whether the work tree differed from it.
    present = _columns(cursor, "runs")
    if "git_head" not in present:
        cursor.execute("ALTER TABLE runs ADD COLUMN git_head TEXT")
    if "git_dirty" not in present:
        cursor.execute("ALTER TABLE runs ADD COLUMN git_dirty INTEGER")


def _v4_environment(cursor) -> None:
    # What a replay needs to compute as the run did (JSON): its numeric environment (threads,
    # deterministic flags, dtype), how it was started (python -m), the files its code version left out.
    if "environment" not in _columns(cursor, "runs"):
        cursor.execute("ALTER TABLE runs ADD COLUMN environment TEXT")
    # Which registered objects a checkpoint holds as pickles (JSON list): a manifest that holds
    # others was tampered with. NULL for checkpoints listed before.
    if "pickled" not in _columns(cursor, "checkpoints"):
        cursor.execute("ALTER TABLE checkpoints ADD COLUMN pickled TEXT")
    # A replayed name may hold several values in one loop context (a log inside a plain Python
    # loop): the index of replayed values (same name: the UI reads through it) is no longer unique.
    cursor.execute("DROP INDEX IF EXISTS logs_replay_once")
    cursor.execute("CREATE INDEX logs_replay_once ON logs(run_id, IFNULL(ctx_id, -1), IFNULL(iteration, -1), name) "
                   "WHERE source = 'replay'")


def _v5_output(cursor) -> None:
    # What runs print, in blocks of lines (output.py; SCHEMA created the table): nothing to change
    # in the tables that existed, and runs recorded before have no output.
    pass


def _v6_dataflow(cursor) -> None:
    # Keyed loops, their items and the lineage between runs (keys.py, lineage; SCHEMA created the
    # tables): runs recorded before have none.
    pass


def _v7_checkpoint_binding(cursor) -> None:
    # A checkpoint's manifest is bound to its content: the sha256 of the manifest's bytes, kept
    # here when it is written, so an edited or swapped manifest (in .flor/ or in the bucket) is
    # refused. And whether its copy reached FLOR_CHECKPOINT_STORE (NULL: no store configured;
    # 0: local only, `flor doctor --repair` uploads it; 1: uploaded). NULL for earlier rows.
    present = _columns(cursor, "checkpoints")
    if "manifest_sha256" not in present:
        cursor.execute("ALTER TABLE checkpoints ADD COLUMN manifest_sha256 TEXT")
    if "uploaded" not in present:
        cursor.execute("ALTER TABLE checkpoints ADD COLUMN uploaded INTEGER")


def _v8_jobs(cursor) -> None:
    # Distributed jobs (flor/recording/job.py; SCHEMA created the tables): a job, its ranks' runs, and the
    # job's shared checkpoint decisions. Runs recorded before are no job's rank.
    pass


def _v9_checkpoint_pins(cursor) -> None:
    # Checkpoints the model registry pinned (flor.best names them), which `flor gc` keeps unless
    # asked; the table is new (SCHEMA creates it), earlier databases have no pins.
    cursor.execute("CREATE TABLE IF NOT EXISTS checkpoint_pins(run_id INTEGER NOT NULL, iteration INTEGER NOT NULL, "
                   "reason TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (run_id, iteration, reason))")


def _v10_run_notes(cursor) -> None:
    # Names, tags, notes and archiving of runs, written by `flor ui --allow-edit`
    # (store/annotations.py; SCHEMA created the table): runs recorded before have none.
    pass


def _v11_logs_by_run_name(cursor) -> None:
    # The logs of one run and name, found without scanning every run's rows: `flor ui` reads the
    # curves and last values of the runs on screen through it before (and without) its pass over
    # all logs (store/readpool.py), an IN over a page of runs. On (run_id, name, source) only, not
    # a covering index: covering the order key's columns nearly doubled a 49 MB store and did not
    # make the pass over all logs faster (SQLite still reads every row).
    cursor.execute("CREATE INDEX IF NOT EXISTS logs_by_run_name ON logs(run_id, name, source)")


# (version, what it changed): entry k brings a database from version k to version k + 1.
MIGRATIONS: list[tuple[int, Callable]] = [
    (2, _v2_blocks),
    (3, _v3_user_head),
    (4, _v4_environment),
    (5, _v5_output),
    (6, _v6_dataflow),
    (7, _v7_checkpoint_binding),
    (8, _v8_jobs),
    (9, _v9_checkpoint_pins),
    (10, _v10_run_notes),
    (11, _v11_logs_by_run_name),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# flor's tables, in the order the schema creates them (runs before the tables that refer to them).
TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))


def migrate(cursor, version: int | None) -> None:
    """Bring the database open in ``cursor``'s transaction from ``version`` (None: empty) to
    :data:`SCHEMA_VERSION`."""
    for statement in split_sql(SCHEMA):
        cursor.execute(statement)
    for target, step in MIGRATIONS:
        if version is None or target > version:
            step(cursor)
    cursor.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def split_sql(script: str) -> list[str]:
    """The statements of an SQL script, one by one (for running them inside our own transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]

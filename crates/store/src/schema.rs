//! The `shoal_*` tables that Shoal keeps beside the app's tables in the same file.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Result, StoreError};

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Creates Shoal's tables. Runs inside the caller's transaction.
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute(
        "INSERT INTO shoal_meta(key, value) VALUES ('schema', ?1)",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

/// Whether the file has Shoal's tables, and of a version this code can read.
pub(crate) fn check(conn: &Connection) -> Result<bool> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'shoal_meta')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(false);
    }
    let found: Option<i64> = conn
        .query_row(
            "SELECT value FROM shoal_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

const SCHEMA: &str = r#"
-- Settings of this replica: its device id, its clock, the schema version.
CREATE TABLE shoal_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;

-- Holds a row only while Shoal applies remote changes, so that the capture
-- triggers leave those writes alone. Other connections never see the row: it is
-- written and removed inside the applying transaction.
CREATE TABLE shoal_applying (on_ INTEGER);

-- Tracked tables. Triggers name a table by its id here.
CREATE TABLE shoal_tables (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_columns TEXT NOT NULL,     -- JSON array, key order
    columns TEXT NOT NULL,         -- JSON array of the other synced columns
    policy TEXT NOT NULL DEFAULT 'review',
    tracked INTEGER NOT NULL DEFAULT 1
);

-- What the capture triggers record: one row per insert, per delete, and per column an
-- update changed. Values are read from the table when sealing, so only keys are kept.
-- op: 1 insert, 2 update, 3 delete.
CREATE TABLE shoal_log (
    id INTEGER PRIMARY KEY,
    tbl INTEGER NOT NULL,
    op INTEGER NOT NULL,
    col TEXT,
    k0, k1, k2, k3, k4, k5, k6, k7
);

-- Every device whose commits this file holds; the row's id is a local shorthand.
CREATE TABLE shoal_authors (
    id INTEGER PRIMARY KEY,
    device BLOB NOT NULL UNIQUE,
    head_seq INTEGER NOT NULL DEFAULT 0,   -- highest contiguous seq applied
    head_hash BLOB,
    head_hlc INTEGER NOT NULL DEFAULT 0,
    forked INTEGER NOT NULL DEFAULT 0
);

-- Every commit held: applied, waiting for a gap to fill, or waiting for the local clock
-- to reach it. state: 0 applied, 1 waiting for earlier seqs, 2 stamped too far ahead.
CREATE TABLE shoal_commits (
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    hlc INTEGER NOT NULL,
    grp BLOB NOT NULL,
    changes INTEGER NOT NULL,
    state INTEGER NOT NULL,
    signed BLOB NOT NULL,
    PRIMARY KEY (author, seq)
) WITHOUT ROWID;
CREATE INDEX shoal_commits_waiting ON shoal_commits (state, author) WHERE state != 0;

-- Proof that an author signed two different commits for one place in its chain.
CREATE TABLE shoal_forks (
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    first BLOB NOT NULL,
    second BLOB NOT NULL,
    found_hlc INTEGER NOT NULL
);

-- Merge state of every row ever synced: causal length and per-column versions.
CREATE TABLE shoal_rows (
    tbl INTEGER NOT NULL,
    key BLOB NOT NULL,
    cl INTEGER NOT NULL,
    meta BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;

-- Remote changes that cannot be applied yet (unknown table or column, or an update
-- whose insert has not arrived), kept until they can.
CREATE TABLE shoal_held (
    id INTEGER PRIMARY KEY,
    tbl TEXT NOT NULL,
    reason TEXT NOT NULL,
    change BLOB NOT NULL
);

-- The conflict inbox.
CREATE TABLE shoal_conflicts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    tbl TEXT NOT NULL,
    key BLOB NOT NULL,
    cl INTEGER NOT NULL,
    columns TEXT NOT NULL,           -- JSON array
    winner TEXT NOT NULL,            -- 'local' or 'remote'
    local_values BLOB,
    remote_values BLOB,
    local_hlc INTEGER,
    local_device BLOB,
    remote_hlc INTEGER NOT NULL,
    remote_device BLOB NOT NULL,
    refused BLOB,                    -- a remote change refused by a constraint
    detail TEXT,                     -- what the constraint said
    status TEXT NOT NULL,            -- pending, auto, resolved, closed
    resolution TEXT,
    found_hlc INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX shoal_conflicts_row ON shoal_conflicts (tbl, key) WHERE status IN ('pending', 'auto');
"#;

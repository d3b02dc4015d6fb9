//! The `shoal_*` tables that Shoal keeps beside the app's tables in the same file.

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = 7;

/// Creates Shoal's tables. Runs inside the caller's transaction.
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(SCHEMA_V3)?;
    conn.execute_batch(SCHEMA_V4)?;
    conn.execute_batch(SCHEMA_V5)?;
    conn.execute_batch(SCHEMA_V6)?;
    conn.execute_batch(SCHEMA_V7)?;
    conn.execute(
        "INSERT INTO shoal_meta(key, value) VALUES ('schema', ?1)",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

/// The version of Shoal's tables in the file, or `None` when it has none.
pub(crate) fn version(conn: &Connection) -> Result<Option<i64>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'shoal_meta')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT value FROM shoal_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records that the file's tables are of this code's version.
pub(crate) fn set_current(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE shoal_meta SET value = ?1 WHERE key = 'schema'",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

const SCHEMA: &str = r#"
-- Settings of this replica: its device id, its clock, the schema version.
CREATE TABLE shoal_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;

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
-- op: 1 insert, 2 update, 3 delete. grp, when set, sends the entry to that group only
-- (a table newly shared with it); otherwise to every group that carries the table.
CREATE TABLE shoal_log (
    id INTEGER PRIMARY KEY,
    tbl INTEGER NOT NULL,
    op INTEGER NOT NULL,
    col TEXT,
    k0, k1, k2, k3, k4, k5, k6, k7,
    grp BLOB
);

-- Every device whose commits this file holds; the row's id is a local shorthand. A
-- device caught forking any of its chains is trusted no more, in any group.
CREATE TABLE shoal_authors (
    id INTEGER PRIMARY KEY,
    device BLOB NOT NULL UNIQUE,
    forked INTEGER NOT NULL DEFAULT 0
);

-- Where each author's chain in each group ends: its highest contiguous seq applied.
-- The local group (all zeroes) carries tables shared with no group, between files.
CREATE TABLE shoal_chains (
    grp BLOB NOT NULL,
    author INTEGER NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    head_hash BLOB,
    head_hlc INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, author)
) WITHOUT ROWID;

-- Every commit held. state: 0 applied; 1 waiting for earlier seqs, or for its author
-- to be made a member; 2 stamped too far ahead of the local clock; 3 refused for good
-- (its author was revoked before it, or may only read).
CREATE TABLE shoal_commits (
    grp BLOB NOT NULL,
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    hlc INTEGER NOT NULL,
    changes INTEGER NOT NULL,
    state INTEGER NOT NULL,
    signed BLOB NOT NULL,
    PRIMARY KEY (grp, author, seq)
) WITHOUT ROWID;
-- Queries for the commits not applied say `state != 0` as this does, so SQLite uses it.
CREATE INDEX shoal_commits_waiting ON shoal_commits (state, grp, author) WHERE state != 0;

-- Groups this file knows: it holds their creating commit.
CREATE TABLE shoal_groups (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL
) WITHOUT ROWID;

-- Every group operation in an applied commit, valid or not: the group's state is
-- evaluated from all of them, so an operation that arrives late still counts.
CREATE TABLE shoal_group_ops (
    grp BLOB NOT NULL,
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hlc INTEGER NOT NULL,
    op BLOB NOT NULL,
    PRIMARY KEY (grp, author, seq, idx)
) WITHOUT ROWID;

-- Proof that an author signed two different commits for one place in its chain.
CREATE TABLE shoal_forks (
    grp BLOB NOT NULL,
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

/// What version 3 added: invites and remembered peer addresses.
pub(crate) const SCHEMA_V3: &str = r#"
-- Invites this device made. The secret stays here and in the ticket; a joiner proves
-- it holds it without sending it.
CREATE TABLE shoal_invites (
    id BLOB PRIMARY KEY,
    grp BLOB NOT NULL,
    secret BLOB NOT NULL,
    role TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Where other devices were last reached, as the transport writes addresses.
CREATE TABLE shoal_peers (
    device BLOB PRIMARY KEY,
    addr TEXT NOT NULL,
    seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// What version 4 added: numbers for columns, so that `shoal_rows` need not repeat
/// their names for every row. (It also dropped `shoal_applying`, which triggers looked
/// at to leave Shoal's own writes alone.)
pub(crate) const SCHEMA_V4: &str = r#"
-- The number each tracked table's columns go by in shoal_rows. Never renumbered.
CREATE TABLE shoal_columns (
    tbl INTEGER NOT NULL,
    id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (tbl, id),
    UNIQUE (tbl, name)
) WITHOUT ROWID;
"#;

/// What version 5 added: which tables' rows each group was given, and rows too
/// large to seal.
pub(crate) const SCHEMA_V5: &str = r#"
-- A table whose rows this device gave a group: when the table was shared with the
-- group, or when the device could first write in a group that carries it (the rows it
-- held before joining). Rows are given once; later writes travel as changes.
CREATE TABLE shoal_shared (
    grp BLOB NOT NULL,
    tbl INTEGER NOT NULL,
    PRIMARY KEY (grp, tbl)
) WITHOUT ROWID;

-- Joins this device started and has not seen end: a crash in the middle of one is
-- resumed from here. ticket is the invite ticket as the joiner read it.
CREATE TABLE shoal_joins (
    grp BLOB PRIMARY KEY,
    ticket BLOB NOT NULL
) WITHOUT ROWID;

-- Rows too large for any commit, found by the last seal: their log entries stay in
-- shoal_log, everything else is sealed around them.
CREATE TABLE shoal_oversized (
    tbl INTEGER NOT NULL,
    key BLOB NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
"#;

/// What version 6 added: rows set aside by a constraint.
pub(crate) const SCHEMA_V6: &str = r#"
-- Rows the merge rules keep alive that a constraint of the app's schema keeps out of
-- its table, the same rows on every device (see `aside`): their values wait here,
-- with the conflict record that says why, until nothing refuses them.
CREATE TABLE shoal_aside (
    tbl INTEGER NOT NULL,
    key BLOB NOT NULL,
    row_values BLOB NOT NULL,
    conflict TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
"#;

/// What version 7 added: the inserts that lost their row's life, and the columns of
/// conflict records that are not tracked for now.
pub(crate) const SCHEMA_V7: &str = r#"
-- Each insert that lost its row's life to another insert of the same key, so that a
-- conflict record of any of its writes is an insert collision on every device,
-- whenever and in whatever order the device found it.
CREATE TABLE shoal_lost_inserts (
    tbl TEXT NOT NULL,
    key BLOB NOT NULL,
    hlc INTEGER NOT NULL,
    device BLOB NOT NULL,
    PRIMARY KEY (tbl, key, hlc, device)
) WITHOUT ROWID;

-- A write conflict's columns that are not tracked now (JSON array), kept with it
-- until they are again.
ALTER TABLE shoal_conflicts ADD COLUMN parked TEXT;
"#;

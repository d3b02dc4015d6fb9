//! The conflict inbox as people and apps read it: what a record is, where it stands,
//! how a person resolves it, and reading records back.
//!
//! The deterministic winner is always applied, so devices converge whatever the inbox
//! says. A record keeps both sides; resolving it is a new write that syncs, and a
//! record closes by itself wherever a write arrives from someone who had seen the
//! winner.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, Hlc, Value, Version};

use crate::error::{Result, StoreError};
use crate::sql::{key_from_blob, key_text};

/// What kind of conflict a record is. A write's conflict only moves down this list
/// as more is known: an insert found to have lost its row's life to another, a life
/// ended by a delete its author had not seen.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// A write lost to a concurrent write of the same column.
    ConcurrentWrite,
    /// Two devices inserted the same primary key.
    InsertCollision,
    /// An update lost to a concurrent delete of the row.
    UpdateDelete,
    /// A merged row broke a UNIQUE, CHECK, NOT NULL or FOREIGN KEY constraint and
    /// the remote change was not applied.
    Constraint,
}

/// One side of a conflict, as seen from this device.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// This device's version.
    Local,
    /// The other device's version.
    Remote,
}

/// Where a conflict record stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictStatus {
    /// Waiting for a person (the table's policy is `review`).
    Pending,
    /// The winner stands by policy (`lww`); kept for audit.
    Auto,
    /// A person resolved it here.
    Resolved,
    /// A later write that had seen the winner made it moot.
    Closed,
}

/// How a person resolves a conflict.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Keep one side's values.
    Keep(Side),
    /// Write these values instead.
    Set(Vec<(String, Value)>),
}

/// A conflict record.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    /// Stable id, the same on every device that finds the same conflict.
    pub id: String,
    /// What kind.
    pub kind: ConflictKind,
    /// The table.
    pub table: String,
    /// The row's primary key.
    #[serde(skip)]
    pub key: Vec<Value>,
    /// The key as SQL literals.
    pub key_text: String,
    /// The columns in dispute.
    pub columns: Vec<String>,
    /// Which side the merge rules chose.
    pub winner: Side,
    /// This device's values of those columns (absent when the row was deleted here).
    #[serde(skip)]
    pub local_values: Option<Vec<(String, Value)>>,
    /// The other device's values (absent for a delete).
    #[serde(skip)]
    pub remote_values: Option<Vec<(String, Value)>>,
    /// The clock and device of the local side.
    pub local: Option<(Hlc, DeviceId)>,
    /// The clock and device of the remote side.
    pub remote: (Hlc, DeviceId),
    /// What a constraint said, for constraint conflicts.
    pub detail: Option<String>,
    /// Where it stands.
    pub status: ConflictStatus,
    /// How it was resolved or closed.
    pub resolution: Option<String>,
}

impl ConflictKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConflictKind::ConcurrentWrite => "concurrent_write",
            ConflictKind::UpdateDelete => "update_delete",
            ConflictKind::InsertCollision => "insert_collision",
            ConflictKind::Constraint => "constraint",
        }
    }

    pub(crate) fn parse(s: &str) -> ConflictKind {
        match s {
            "update_delete" => ConflictKind::UpdateDelete,
            "insert_collision" => ConflictKind::InsertCollision,
            "constraint" => ConflictKind::Constraint,
            _ => ConflictKind::ConcurrentWrite,
        }
    }
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for ConflictStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictStatus::Pending => "pending",
            ConflictStatus::Auto => "auto",
            ConflictStatus::Resolved => "resolved",
            ConflictStatus::Closed => "closed",
        })
    }
}

impl ConflictStatus {
    pub(crate) fn parse(s: &str) -> ConflictStatus {
        match s {
            "pending" => ConflictStatus::Pending,
            "auto" => ConflictStatus::Auto,
            "resolved" => ConflictStatus::Resolved,
            _ => ConflictStatus::Closed,
        }
    }
}

/// A conflict's stored list of columns.
pub(crate) fn column_list(json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| StoreError::Damaged {
        what: "a conflict's column list".into(),
        detail: e.to_string(),
    })
}

pub(crate) fn version(hlc: Option<i64>, device: Option<Vec<u8>>) -> Option<Version> {
    Some(Version {
        hlc: Hlc(hlc? as u64),
        author: DeviceId(device?.try_into().ok()?),
    })
}

const SELECT: &str = "SELECT id, kind, tbl, key, columns, winner, local_values, remote_values, local_hlc, local_device, remote_hlc, remote_device, detail, status, resolution FROM shoal_conflicts";

fn row_to_conflict(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conflict> {
    let key: Vec<u8> = r.get(3)?;
    let key = crate::sql::in_row(3, key_from_blob(&key))?;
    let columns: String = r.get(4)?;
    let winner: String = r.get(5)?;
    let values =
        |b: Option<Vec<u8>>| b.and_then(|b| postcard::from_bytes::<Vec<(String, Value)>>(&b).ok());
    let local = version(r.get(8)?, r.get(9)?);
    let remote = version(r.get(10)?, r.get(11)?).unwrap_or(Version {
        hlc: Hlc(0),
        author: DeviceId([0; 32]),
    });
    let kind: String = r.get(1)?;
    let status: String = r.get(13)?;
    Ok(Conflict {
        id: r.get(0)?,
        kind: ConflictKind::parse(&kind),
        table: r.get(2)?,
        key_text: key_text(&key),
        key,
        columns: crate::sql::in_row(4, column_list(&columns))?,
        winner: if winner == "local" {
            Side::Local
        } else {
            Side::Remote
        },
        local_values: values(r.get(6)?),
        remote_values: values(r.get(7)?),
        local: local.map(|v| (v.hlc, v.author)),
        remote: (remote.hlc, remote.author),
        detail: r.get(12)?,
        status: ConflictStatus::parse(&status),
        resolution: r.get(14)?,
    })
}

pub(crate) fn list(conn: &Connection, all: bool) -> Result<Vec<Conflict>> {
    let filter = if all {
        ""
    } else {
        " WHERE status IN ('pending', 'auto')"
    };
    let mut stmt = conn.prepare(&format!("{SELECT}{filter} ORDER BY found_hlc DESC, id"))?;
    let rows = stmt.query_map([], row_to_conflict)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which records of the inbox to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InboxFilter {
    /// Those still open: [`ConflictStatus::Pending`] and [`ConflictStatus::Auto`].
    #[default]
    Open,
    /// Every record.
    All,
    /// Those of one status.
    Only(ConflictStatus),
}

/// A page of the inbox: which records, of which table, from where, how many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxQuery {
    /// Only this table's records (its name in any case).
    pub table: Option<String>,
    /// Which statuses.
    pub filter: InboxFilter,
    /// How many of the newest to skip.
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
}

/// A page of the inbox, newest first.
#[derive(Clone, Debug)]
pub struct InboxPage {
    /// The records on this page.
    pub items: Vec<Conflict>,
    /// How many records match the query, on every page.
    pub total: u64,
    /// How many records are open, by table, whatever the query.
    pub open_by_table: Vec<(String, u64)>,
}

const MATCHING: &str = " WHERE (?1 IS NULL OR tbl = ?1 COLLATE NOCASE)
      AND CASE ?2 WHEN 'open' THEN status IN ('pending', 'auto') WHEN 'all' THEN 1 ELSE status = ?2 END";

pub(crate) fn page(conn: &Connection, q: &InboxQuery) -> Result<InboxPage> {
    let filter = match q.filter {
        InboxFilter::Open => "open".to_owned(),
        InboxFilter::All => "all".to_owned(),
        InboxFilter::Only(status) => status.to_string(),
    };
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT}{MATCHING} ORDER BY found_hlc DESC, id LIMIT ?3 OFFSET ?4"
    ))?;
    let items = stmt
        .query_map(
            rusqlite::params![q.table, filter, limit, offset],
            row_to_conflict,
        )?
        .collect::<Result<_, _>>()?;
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM shoal_conflicts{MATCHING}"))?
        .query_row(rusqlite::params![q.table, filter], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT tbl, count(*) FROM shoal_conflicts WHERE status IN ('pending', 'auto') GROUP BY tbl ORDER BY tbl",
    )?;
    let open_by_table = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(InboxPage {
        items,
        total: total as u64,
        open_by_table,
    })
}

/// An open conflict in brief: enough to notice one appear or close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenConflict {
    /// Its id.
    pub id: String,
    /// What kind.
    pub kind: ConflictKind,
    /// The table.
    pub table: String,
    /// [`ConflictStatus::Pending`] or [`ConflictStatus::Auto`].
    pub status: ConflictStatus,
}

pub(crate) fn open(conn: &Connection) -> Result<Vec<OpenConflict>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, tbl, status FROM shoal_conflicts WHERE status IN ('pending', 'auto') ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OpenConflict {
            id: r.get(0)?,
            kind: ConflictKind::parse(&r.get::<_, String>(1)?),
            table: r.get(2)?,
            status: ConflictStatus::parse(&r.get::<_, String>(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The record whose id is `id` or starts with it: hex digits, in either case.
pub(crate) fn get(conn: &Connection, id: &str) -> Result<Conflict> {
    let none = || StoreError::NoSuchConflict { id: id.to_owned() };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(none());
    }
    let prefix = id.to_ascii_lowercase();
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT 2"
    ))?;
    let mut found: Vec<Conflict> = stmt
        .query_map([&prefix], row_to_conflict)?
        .collect::<Result<_, _>>()?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(none()),
        _ => Err(StoreError::AmbiguousConflict { id: id.to_owned() }),
    }
}

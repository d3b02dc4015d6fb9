//! What Shoal knows of each tracked table: its key, its columns, its conflict policy,
//! and the statements run against it, as `shoal_tables` keeps them.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::tables::follow;
use crate::tables::row_sql::TableSql;

/// How conflicts in a table are handled.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The deterministic winner stands; the conflict is kept for audit only.
    Lww,
    /// The conflict waits in the inbox until a person decides.
    Review,
}

/// A table Shoal tracks (or tracked once).
#[derive(Clone, Debug, Serialize)]
pub struct TrackedTable {
    /// Local id, used by the triggers.
    #[serde(skip)]
    pub id: i64,
    /// The table's name.
    pub name: String,
    /// Primary-key columns, in key order.
    pub key_columns: Vec<String>,
    /// The other columns synced.
    pub columns: Vec<String>,
    /// Conflict policy.
    pub policy: Policy,
    /// Whether writes are being captured now.
    pub tracked: bool,
    /// Statements used for every row, written once per load.
    #[serde(skip)]
    pub(crate) sql: TableSql,
}

impl TrackedTable {
    /// What schema-following compares with the file.
    pub(crate) fn as_tracked(&self) -> follow::Tracked<'_> {
        follow::Tracked {
            id: self.id,
            name: &self.name,
            key_columns: &self.key_columns,
            columns: &self.columns,
        }
    }
}

impl Policy {
    /// Parses `lww` or `review`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "lww" => Some(Policy::Lww),
            "review" => Some(Policy::Review),
            _ => None,
        }
    }

    /// Its name, as `shoal track --policy` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lww => "lww",
            Policy::Review => "review",
        }
    }
}

/// Every table in `shoal_tables`, tracked now or not.
pub(crate) fn load_all(conn: &Connection) -> Result<Vec<TrackedTable>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, key_columns, columns, policy, tracked FROM shoal_tables ORDER BY name",
    )?;
    let rows = stmt.query_map([], row_to_table)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One table by name (as SQLite matches names: without regard to ASCII case).
pub(crate) fn load_by_name(conn: &Connection, name: &str) -> Result<Option<TrackedTable>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, key_columns, columns, policy, tracked FROM shoal_tables WHERE name = ?1 COLLATE NOCASE",
        )?
        .query_row([name], row_to_table)
        .optional()?)
}

fn row_to_table(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrackedTable> {
    let keys: String = r.get(2)?;
    let cols: String = r.get(3)?;
    let policy: String = r.get(4)?;
    let name: String = r.get(1)?;
    let key_columns = crate::sql::in_row(2, parse_json_array(&keys))?;
    let columns = crate::sql::in_row(3, parse_json_array(&cols))?;
    Ok(TrackedTable {
        id: r.get(0)?,
        sql: TableSql::new(&name, &key_columns, &columns),
        name,
        key_columns,
        columns,
        policy: crate::sql::in_row(
            4,
            Policy::parse(&policy).ok_or_else(|| StoreError::Damaged {
                what: "a tracked table's conflict policy".into(),
                detail: format!("{policy:?} is neither lww nor review"),
            }),
        )?,
        tracked: r.get(5)?,
    })
}

pub(crate) fn json_array(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn parse_json_array(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Damaged {
        what: "a tracked table's column list".into(),
        detail: e.to_string(),
    })
}

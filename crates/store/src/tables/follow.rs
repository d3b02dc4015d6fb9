//! Following the app's schema: noticing when a tracked table is no longer the table
//! Shoal captures, and then either following the change or refusing to seal it.
//!
//! Capture triggers and sealing name columns as they were when the table was tracked.
//! The app may `ALTER` its tables from any client at any time, so before sealing and
//! before applying, every tracked table is compared with SQLite's schema. Added
//! columns are followed (the triggers are made anew and the values already written to
//! the new columns are sealed); any other change stops that table alone from being
//! sealed or applied to, with its captured changes kept, until the app's schema is
//! put back or the user says what to do (`shoal track`, `shoal untrack`).
//!
//! Shoal's connection turns off SQLite's double-quoted-string fallback, so a name that
//! names no column is an error, never read as text. Untracking keeps a table's values in
//! `shoal_shadow_<id>`; tracking it again logs every cell that differs from them.

use rusqlite::Connection;
use serde::Serialize;

use crate::error::Result;
use crate::sql::ident;

/// How a tracked table differs from what Shoal captures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SchemaChange {
    /// Columns were added (`ALTER TABLE … ADD COLUMN`): followed at the next seal.
    ColumnsAdded {
        /// The new columns, in table order.
        columns: Vec<String>,
    },
    /// One column has another name (`ALTER TABLE … RENAME COLUMN`).
    ColumnRenamed {
        /// The name Shoal captures and peers write.
        from: String,
        /// The name it has now.
        to: String,
    },
    /// Columns Shoal captures are gone from the table.
    ColumnsDropped {
        /// The missing columns.
        columns: Vec<String>,
    },
    /// The primary key is another one.
    KeyChanged {
        /// The key Shoal tracks.
        from: Vec<String>,
        /// The key the table has now.
        to: Vec<String>,
    },
    /// The table has another name (`ALTER TABLE … RENAME TO`).
    TableRenamed {
        /// Its name now.
        to: String,
    },
    /// The table is gone.
    TableDropped,
    /// The table is there but its capture triggers are not: it was dropped and made
    /// again (as some migration tools do to change a column), or they were dropped.
    TriggersGone,
}

/// A tracked table that Shoal does not seal or apply to until its schema is sorted out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    /// The table, by the name Shoal tracks.
    pub table: String,
    /// What changed.
    #[serde(flatten)]
    pub change: SchemaChange,
    /// What happened and what to do, in a sentence for a person.
    pub message: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl SchemaProblem {
    /// The problem of `table` in the database at `db`, with its advice.
    pub(crate) fn new(table: &str, change: SchemaChange, db: &str) -> SchemaProblem {
        let kept = "Shoal stopped sealing and applying changes to it; what was captured is kept";
        let message = match &change {
            SchemaChange::ColumnsAdded { columns } => format!(
                "columns {} were added to {table}; they are captured from the next seal",
                columns.join(", ")
            ),
            SchemaChange::ColumnRenamed { from, to } => format!(
                "column {table}.{from} was renamed to {to}, but peers still write {from}: {kept}. \
                 Rename it back (ALTER TABLE {table} RENAME COLUMN {to} TO {from}), \
                 or, to rename it on every device, run `shoal track {db} {table}` here and on each device once it has renamed it too"
            ),
            SchemaChange::ColumnsDropped { columns } => format!(
                "columns {} of {table} are gone: {kept}. \
                 Run `shoal track {db} {table}` to go on without them (other devices keep their values)",
                columns.join(", ")
            ),
            SchemaChange::KeyChanged { from, to } => format!(
                "the primary key of {table} changed from ({}) to ({}): {kept}. \
                 Rows synced under the old key cannot follow: put the old key back, or make a new table and track that",
                from.join(", "),
                to.join(", ")
            ),
            SchemaChange::TableRenamed { to } => format!(
                "table {table} was renamed to {to}, but peers still write {table}: {kept}. \
                 Rename it back (ALTER TABLE {} RENAME TO {}), or run `shoal untrack {db} {table}` and `shoal track {db} {to}` to sync it anew under its new name",
                ident(to),
                ident(table)
            ),
            SchemaChange::TableDropped => format!(
                "table {table} was dropped: {kept}, but it can no longer be read. \
                 Run `shoal untrack {db} {table}` to stop tracking it (other devices keep their rows)"
            ),
            SchemaChange::TriggersGone => format!(
                "the capture triggers of {table} are gone (was it dropped and made again, as some migration tools do?), \
                 so writes to it are not being captured: {kept}. \
                 Run `shoal track {db} {table}` to capture it again: every row is sealed anew"
            ),
        };
        SchemaProblem {
            table: table.to_owned(),
            change,
            message,
        }
    }

    /// Whether Shoal follows this change by itself.
    pub(crate) fn followed(&self) -> bool {
        matches!(self.change, SchemaChange::ColumnsAdded { .. })
    }
}

/// One column of a table as SQLite describes it.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) declared: String,
    /// Position in the primary key, 0 when not part of it.
    pub(crate) key: i64,
    /// 0 for an ordinary column; 1 hidden (virtual tables); 2 and 3 generated.
    pub(crate) hidden: i64,
    /// The default's SQL text, if any.
    pub(crate) default: Option<String>,
}

/// The columns of `table`, as `PRAGMA table_xinfo` lists them.
pub(crate) fn columns(conn: &Connection, table: &str) -> Result<Vec<Column>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_xinfo({})", ident(table)))?;
    let cols = stmt
        .query_map([], |r| {
            Ok(Column {
                name: r.get(1)?,
                declared: r.get(2)?,
                default: r.get(4)?,
                key: r.get(5)?,
                hidden: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(cols)
}

/// The primary-key columns in key order, and the stored columns that sync.
pub(crate) fn split(cols: &[Column]) -> (Vec<String>, Vec<String>) {
    let mut keys: Vec<&Column> = cols.iter().filter(|c| c.key > 0).collect();
    keys.sort_by_key(|c| c.key);
    (
        keys.iter().map(|c| c.name.clone()).collect(),
        // Generated columns (hidden 2 and 3) are computed, not stored: never synced.
        cols.iter()
            .filter(|c| c.key == 0 && c.hidden == 0)
            .map(|c| c.name.clone())
            .collect(),
    )
}

/// What Shoal tracks of a table: enough to compare it with the file.
pub(crate) struct Tracked<'a> {
    /// Local id, part of the triggers' names.
    pub(crate) id: i64,
    /// The name Shoal tracks.
    pub(crate) name: &'a str,
    /// Primary-key columns, in key order.
    pub(crate) key_columns: &'a [String],
    /// The other columns captured.
    pub(crate) columns: &'a [String],
}

/// Whether two lists name the same columns in the same order, as SQLite compares names.
pub(crate) fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// How the tracked table `t` differs from the table in the file, if it does.
pub(crate) fn change(conn: &Connection, t: &Tracked<'_>) -> Result<Option<SchemaChange>> {
    let triggers: Vec<String> = conn
        .prepare_cached(
            "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name IN (?1, ?2, ?3)",
        )?
        .query_map(
            [
                format!("shoal_ins_{}", t.id),
                format!("shoal_upd_{}", t.id),
                format!("shoal_del_{}", t.id),
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    // A renamed table takes its triggers along.
    if let Some(on) = triggers.first()
        && !on.eq_ignore_ascii_case(t.name)
    {
        return Ok(Some(SchemaChange::TableRenamed { to: on.clone() }));
    }
    if triggers.len() < 3 && exists(conn, t.name)? {
        return Ok(Some(SchemaChange::TriggersGone));
    }
    columns_change(conn, t)
}

/// How the table `t` names differs in its columns from what Shoal knows, or whether
/// it is gone; its triggers are not looked at (an untracked table has none).
pub(crate) fn columns_change(conn: &Connection, t: &Tracked<'_>) -> Result<Option<SchemaChange>> {
    if !exists(conn, t.name)? {
        return Ok(Some(SchemaChange::TableDropped));
    }
    let (keys, now) = split(&columns(conn, t.name)?);
    Ok(difference(t, &keys, &now))
}

/// Whether the file has a table of this name (as SQLite matches names).
pub(crate) fn exists(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        )?
        .exists([table])?)
}

/// How the columns Shoal tracks for `t` differ from `keys` and `now`, if they do.
pub(crate) fn difference(t: &Tracked<'_>, keys: &[String], now: &[String]) -> Option<SchemaChange> {
    if !same_names(t.key_columns, keys) {
        return Some(SchemaChange::KeyChanged {
            from: t.key_columns.to_vec(),
            to: keys.to_vec(),
        });
    }
    let has = |list: &[String], name: &String| list.iter().any(|c| c.eq_ignore_ascii_case(name));
    let missing: Vec<String> = t.columns.iter().filter(|c| !has(now, c)).cloned().collect();
    let added: Vec<String> = now.iter().filter(|c| !has(t.columns, c)).cloned().collect();
    match (missing.as_slice(), added.as_slice()) {
        // The same columns (an order of their own matters to no statement: each names
        // its columns).
        ([], []) => None,
        ([], _) => Some(SchemaChange::ColumnsAdded { columns: added }),
        ([from], [to]) => Some(SchemaChange::ColumnRenamed {
            from: from.clone(),
            to: to.clone(),
        }),
        _ => Some(SchemaChange::ColumnsDropped { columns: missing }),
    }
}

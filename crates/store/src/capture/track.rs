//! Tracking tables: checking they can be synced, and installing the capture triggers.
//!
//! The triggers are plain SQL, so a write from any SQLite client is captured in the
//! same transaction as the write itself. They record keys only (values are read when
//! sealing) and stay silent while Shoal applies remote changes.
//!
//! A table given to a group brings its rows: they are logged for that group alone
//! (`shoal_log.grp`) and sealed as inserts that keep their life, overwriting knowingly
//! the versions this device held, so that a device that holds both sees no clash. The
//! same happens once per group and table (`shoal_shared`) when a device can first write
//! in a group: at the end of the import that let it in, every live row whose insert is
//! not one of the group's commits (rows it held before joining) is logged for the group
//! and sealed in the same transaction.

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde::Serialize;
use shoal_core::commit::{MAX_KEY_COLUMNS, MAX_NAME_BYTES};

use crate::capture::sweep::{
    capture_all, capture_columns, capture_existing, capture_from_shadow, drop_shadow, make_shadow,
    shadow_exists,
};
use crate::capture::triggers;
use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::conflict;
use crate::tables::follow::{self, SchemaChange, SchemaProblem};
use crate::tables::row_sql::TableSql;
use crate::tables::table::{Policy, TrackedTable, json_array, load_all, load_by_name};

/// What tracking a table did.
#[derive(Clone, Debug, Serialize)]
pub struct TrackReport {
    /// The table as now tracked.
    pub table: TrackedTable,
    /// Rows already in the table that were captured to be synced.
    pub rows_captured: u64,
    /// Held remote changes applied because the table or its new columns now exist.
    pub held_applied: usize,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

pub(crate) fn track(
    tx: &Transaction,
    r: &mut Device,
    table: &str,
    policy: Option<Policy>,
) -> Result<TrackReport> {
    let report = refresh(tx, table, policy)?;
    // Tracking again may open records again (see `conflict::keep_columns`).
    r.open_conflicts = None;
    Ok(report)
}

/// Tracks `table` anew or again, capturing what was written to it while Shoal was not
/// capturing it: every row it has that Shoal does not know as alive, every row Shoal
/// knows that it no longer has, values written to columns Shoal did not capture, and
/// values changed while it was untracked.
fn refresh(tx: &Transaction, table: &str, policy: Option<Policy>) -> Result<TrackReport> {
    let mut shape = inspect(tx, table)?;
    let existing = load_by_name(tx, &shape.name)?;
    // How the rows already there are captured, decided before the triggers are made.
    let mut since = Since::New;
    if let Some(old) = &existing {
        let change = follow::change(tx, &old.as_tracked())?;
        if let Some(SchemaChange::KeyChanged { from, to }) = &change {
            return Err(StoreError::Untrackable {
                table: shape.name,
                reason: format!(
                    "its primary key changed from ({}) to ({}); rows synced under the old key cannot follow, so make a new table",
                    from.join(", "),
                    to.join(", ")
                ),
            });
        }
        let gone: Vec<&str> = old
            .columns
            .iter()
            .filter(|c| !shape.columns.iter().any(|n| n.eq_ignore_ascii_case(c)))
            .map(String::as_str)
            .collect();
        if !gone.is_empty() {
            shape.warnings.push(format!(
                "{} of {} are no longer captured: other devices keep their values, and changes to them from devices that still have them are held here",
                gone.join(", "),
                shape.name
            ));
        }
        since = if !old.tracked {
            if shadow_exists(tx, old.id)? {
                Since::Untracked(old.columns.clone())
            } else {
                Since::Unknown
            }
        } else if change == Some(SchemaChange::TriggersGone) {
            Since::Unknown
        } else {
            Since::Tracked(old.columns.clone())
        };
    }
    let policy = policy
        .or(existing.as_ref().map(|t| t.policy))
        .unwrap_or(Policy::Review);
    let keys_json = json_array(&shape.key_columns);
    let cols_json = json_array(&shape.columns);
    let id = match &existing {
        Some(t) => {
            tx.execute(
                "UPDATE shoal_tables SET name = ?2, key_columns = ?3, columns = ?4, policy = ?5, tracked = 1 WHERE id = ?1",
                rusqlite::params![t.id, shape.name, keys_json, cols_json, policy.as_str()],
            )?;
            conflict::keep_columns(tx, &shape.name, policy, &shape.columns)?;
            t.id
        }
        None => {
            tx.execute(
                "INSERT INTO shoal_tables(name, key_columns, columns, policy) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![shape.name, keys_json, cols_json, policy.as_str()],
            )?;
            tx.last_insert_rowid()
        }
    };
    let tracked = TrackedTable {
        id,
        sql: TableSql::new(&shape.name, &shape.key_columns, &shape.columns),
        name: shape.name,
        key_columns: shape.key_columns,
        columns: shape.columns,
        policy,
        tracked: true,
    };
    triggers::install(tx, &tracked)?;
    let mut rows_captured = capture_existing(tx, &tracked)?;
    rows_captured += match since {
        Since::New => 0,
        Since::Tracked(before) => capture_columns(tx, &tracked, &shape.defaults, &before)?,
        Since::Untracked(before) => {
            capture_from_shadow(tx, &tracked, &before)?
                + capture_columns(tx, &tracked, &shape.defaults, &before)?
        }
        Since::Unknown => capture_all(tx, &tracked)?,
    };
    drop_shadow(tx, id)?;
    Ok(TrackReport {
        table: tracked,
        rows_captured,
        held_applied: 0,
        warnings: shape.warnings,
    })
}

/// What Shoal knows of a table's rows when it is tracked (again).
enum Since {
    /// Nothing: it was never tracked.
    New,
    /// It is tracked, with these columns captured: the others are new.
    Tracked(Vec<String>),
    /// It was untracked with these columns, whose values then are in its shadow.
    Untracked(Vec<String>),
    /// Its writes went uncaptured and nothing says which: every value is sealed anew.
    Unknown,
}

/// Follows every tracked table's schema, before sealing: added columns are captured
/// from now on (their values so far sealed); the problems of tables that cannot be
/// followed are returned, and those tables are neither sealed nor applied to.
pub(crate) fn follow_schema(tx: &Transaction, r: &mut Device) -> Result<Vec<SchemaProblem>> {
    let db = r.path.display().to_string();
    let mut refused = Vec::new();
    for t in load_all(tx)?.into_iter().filter(|t| t.tracked) {
        let Some(change) = follow::change(tx, &t.as_tracked())? else {
            continue;
        };
        let problem = SchemaProblem::new(&t.name, change, &db);
        if problem.followed() {
            refresh(tx, &t.name, None)?;
            r.open_conflicts = None;
        } else {
            refused.push(problem);
        }
    }
    Ok(refused)
}

/// The schema problems of the tables tracked now, as they stand (nothing followed).
pub(crate) fn schema_problems(conn: &Connection, db: &str) -> Result<Vec<SchemaProblem>> {
    let mut out = Vec::new();
    for t in load_all(conn)?.into_iter().filter(|t| t.tracked) {
        if let Some(change) = follow::change(conn, &t.as_tracked())? {
            out.push(SchemaProblem::new(&t.name, change, db));
        }
    }
    Ok(out)
}

pub(crate) fn untrack(tx: &Transaction, table: &str) -> Result<()> {
    let t = load_by_name(tx, table)?.ok_or_else(|| StoreError::NotTracked {
        table: table.to_owned(),
    })?;
    let change = follow::change(tx, &t.as_tracked())?;
    triggers::remove(tx, t.id)?;
    match change {
        // The values as they stand, so that a later re-track can tell what changed
        // while nothing captured them.
        None | Some(SchemaChange::ColumnsAdded { .. }) if t.tracked => make_shadow(tx, &t)?,
        // What was captured of a table that is gone can no longer be read.
        Some(SchemaChange::TableDropped) => {
            tx.execute("DELETE FROM shoal_log WHERE tbl = ?1", [t.id])?;
        }
        _ => {}
    }
    tx.execute("UPDATE shoal_tables SET tracked = 0 WHERE id = ?1", [t.id])?;
    Ok(())
}

pub(crate) fn set_policy(tx: &Transaction, table: &str, policy: Policy) -> Result<()> {
    let t = load_by_name(tx, table)?.ok_or_else(|| StoreError::NotTracked {
        table: table.to_owned(),
    })?;
    tx.execute(
        "UPDATE shoal_tables SET policy = ?2 WHERE id = ?1",
        rusqlite::params![t.id, policy.as_str()],
    )?;
    Ok(())
}

struct Shape {
    name: String,
    key_columns: Vec<String>,
    columns: Vec<String>,
    /// Each synced column with its default's SQL text.
    defaults: Vec<(String, Option<String>)>,
    warnings: Vec<String>,
}

fn inspect(conn: &Connection, table: &str) -> Result<Shape> {
    let refuse = |reason: String| StoreError::Untrackable {
        table: table.to_owned(),
        reason,
    };
    let lower = table.to_ascii_lowercase();
    if lower.starts_with("shoal_") || lower.starts_with("sqlite_") {
        return Err(refuse(
            "tables named shoal_* and sqlite_* belong to Shoal and SQLite".into(),
        ));
    }
    if table.len() > MAX_NAME_BYTES {
        return Err(refuse(format!(
            "its name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    let found: Option<(String, String, Option<String>)> = conn
        .query_row(
            "SELECT name, type, sql FROM sqlite_schema WHERE name = ?1 COLLATE NOCASE AND type IN ('table', 'view')",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((name, kind, sql)) = found else {
        return Err(refuse("there is no such table in this database".into()));
    };
    if kind == "view" {
        return Err(refuse(
            "it is a view; track the tables it reads from instead".into(),
        ));
    }
    if sql
        .unwrap_or_default()
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("CREATE VIRTUAL")
    {
        return Err(refuse(
            "it is a virtual table, whose rows SQLite does not store itself".into(),
        ));
    }
    let cols = follow::columns(conn, &name)?;
    let mut keys: Vec<&follow::Column> = cols.iter().filter(|c| c.key > 0).collect();
    keys.sort_by_key(|c| c.key);
    if keys.is_empty() {
        return Err(refuse(
            "it has no primary key, and Shoal needs one to tell rows apart across devices; add one, for example a TEXT column holding a UUID".into(),
        ));
    }
    if keys.len() > MAX_KEY_COLUMNS {
        return Err(refuse(format!(
            "its primary key has {} columns; at most {MAX_KEY_COLUMNS} are supported",
            keys.len()
        )));
    }
    let mut warnings = Vec::new();
    if keys.len() == 1 && keys[0].declared.eq_ignore_ascii_case("INTEGER") {
        warnings.push(format!(
            "{name}.{} is an INTEGER PRIMARY KEY: ids that SQLite picks (max + 1, or AUTOINCREMENT) collide when two devices insert at once, and the rows then conflict; have the app choose keys unique everywhere, such as a TEXT UUID or a random 64-bit integer",
            keys[0].name
        ));
    }
    for c in &cols {
        if c.name.len() > MAX_NAME_BYTES {
            return Err(refuse(format!(
                "column {:?} has a name longer than {MAX_NAME_BYTES} bytes",
                c.name
            )));
        }
    }
    let (key_columns, columns) = follow::split(&cols);
    let defaults = cols
        .iter()
        .filter(|c| c.key == 0 && c.hidden == 0)
        .map(|c| (c.name.clone(), c.default.clone()))
        .collect();
    Ok(Shape {
        key_columns,
        columns,
        defaults,
        name,
        warnings,
    })
}

//! Tracking tables: checking they can be synced, and installing the capture triggers.
//!
//! The triggers are plain SQL, so a write from any SQLite client is captured in the
//! same transaction as the write itself. They record keys only (values are read when
//! sealing) and stay silent while Shoal applies remote changes.

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde::Serialize;
use shoal_core::commit::{MAX_KEY_COLUMNS, MAX_NAME_BYTES};
use shoal_core::{GroupId, Value};

use crate::error::{Result, StoreError};
use crate::follow::{self, SchemaChange, SchemaProblem};
use crate::sql::{ident, key_blob, value};
use crate::{Replica, import, rows};

pub(crate) use crate::follow::same_names;

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

/// The SQL Shoal runs against a tracked table, row after row.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableSql {
    /// Reads the non-key columns of one row (`SELECT 1` when there are none).
    pub(crate) select_row: String,
    /// Inserts a row with every column, or overwrites every column of an existing one.
    pub(crate) upsert_all: String,
    /// Deletes one row.
    pub(crate) delete: String,
}

impl TableSql {
    fn new(name: &str, key_columns: &[String], columns: &[String]) -> TableSql {
        let table = ident(name);
        let key_match = crate::sql::key_match(key_columns, 1);
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let keys: Vec<String> = key_columns.iter().map(|c| ident(c)).collect();
        let all: Vec<String> = keys.iter().chain(&cols).cloned().collect();
        let slots: Vec<String> = (1..=all.len()).map(|i| format!("?{i}")).collect();
        let action = if cols.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            format!("UPDATE SET {}", sets.join(", "))
        };
        TableSql {
            select_row: format!(
                "SELECT {} FROM {table} WHERE {key_match}",
                if cols.is_empty() {
                    "1".to_owned()
                } else {
                    cols.join(", ")
                }
            ),
            upsert_all: format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
                all.join(", "),
                slots.join(", "),
                keys.join(", ")
            ),
            delete: format!("DELETE FROM {table} WHERE {key_match}"),
        }
    }
}

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

    fn as_str(self) -> &'static str {
        match self {
            Policy::Lww => "lww",
            Policy::Review => "review",
        }
    }
}

pub(crate) fn track(
    tx: &Transaction,
    r: &mut Replica,
    table: &str,
    policy: Option<Policy>,
) -> Result<TrackReport> {
    let mut report = refresh(tx, table, policy)?;
    report.held_applied = import::import(tx, r, Vec::new())?.held_applied;
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
    drop_stray_triggers(tx, &tracked)?;
    drop_triggers(tx, id)?;
    tx.execute_batch(&triggers(&tracked))?;
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
pub(crate) fn follow_schema(tx: &Transaction, r: &mut Replica) -> Result<Vec<SchemaProblem>> {
    let db = r.path.display().to_string();
    let mut refused = Vec::new();
    for t in load_all(tx)?.into_iter().filter(|t| t.tracked) {
        let Some(change) = follow::change(tx, &t.as_tracked())? else {
            continue;
        };
        let problem = SchemaProblem::new(&t.name, change, &db);
        if problem.followed() {
            refresh(tx, &t.name, None)?;
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
    drop_triggers(tx, t.id)?;
    match change {
        // The values as they stand, so that a later re-track can tell what changed
        // while nothing captured them.
        None | Some(SchemaChange::ColumnsAdded { .. }) if t.tracked => {
            drop_shadow(tx, t.id)?;
            let cols: Vec<String> = t
                .key_columns
                .iter()
                .chain(&t.columns)
                .map(|c| ident(c))
                .collect();
            tx.execute_batch(&format!(
                "CREATE TABLE {} AS SELECT {} FROM {}",
                shadow(t.id),
                cols.join(", "),
                ident(&t.name)
            ))?;
        }
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

fn drop_triggers(conn: &Connection, id: i64) -> Result<()> {
    for op in ["ins", "upd", "del"] {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS shoal_{op}_{id};"))?;
    }
    Ok(())
}

/// Drops capture triggers of other tracked tables that sit on `t`'s table: a tracked
/// table renamed to this name took its triggers along.
fn drop_stray_triggers(conn: &Connection, t: &TrackedTable) -> Result<()> {
    let stray: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE
               AND (name GLOB 'shoal_ins_*' OR name GLOB 'shoal_upd_*' OR name GLOB 'shoal_del_*')",
        )?
        .query_map([&t.name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let own = [
        format!("shoal_ins_{}", t.id),
        format!("shoal_upd_{}", t.id),
        format!("shoal_del_{}", t.id),
    ];
    for name in stray.iter().filter(|n| !own.contains(n)) {
        conn.execute_batch(&format!("DROP TRIGGER {}", ident(name)))?;
    }
    Ok(())
}

/// The table that keeps an untracked table's values as they were when it was untracked.
fn shadow(id: i64) -> String {
    format!("shoal_shadow_{id}")
}

fn shadow_exists(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .exists([shadow(id)])?)
}

/// Whether the table `t` names is in the file.
pub(crate) fn still_there(conn: &Connection, t: &TrackedTable) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        )?
        .exists([&t.name])?)
}

/// Copies row `key` of the untracked table `t` into its shadow as it is now: Shoal
/// itself rewrote it (taking back a revoked device's commits), so it is no write of
/// the app's to capture when the table is tracked again.
pub(crate) fn refresh_shadow(conn: &Connection, t: &TrackedTable, key: &[Value]) -> Result<()> {
    if !shadow_exists(conn, t.id)? {
        return Ok(());
    }
    let binds: Vec<crate::sql::Bind<'_>> = key.iter().map(crate::sql::Bind).collect();
    let matching = crate::sql::key_match(&t.key_columns, 1);
    conn.execute(
        &format!("DELETE FROM {} WHERE {matching}", shadow(t.id)),
        rusqlite::params_from_iter(&binds),
    )?;
    let cols: Vec<String> = t
        .key_columns
        .iter()
        .chain(&t.columns)
        .map(|c| ident(c))
        .collect();
    conn.execute(
        &format!(
            "INSERT INTO {} SELECT {} FROM {} WHERE {matching}",
            shadow(t.id),
            cols.join(", "),
            ident(&t.name)
        ),
        rusqlite::params_from_iter(&binds),
    )?;
    Ok(())
}

fn drop_shadow(conn: &Connection, id: i64) -> Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", shadow(id)))?;
    Ok(())
}

/// Byte-exact change test between two expressions: `IS NOT` alone calls 1 and 1.0
/// equal and follows the column's collation.
fn differs(a: &str, b: &str) -> String {
    format!("({a} IS NOT {b} COLLATE BINARY OR typeof({a}) IS NOT typeof({b}))")
}

/// Logs an update of `column` for every row of `t` (aliased `t`, joined with what
/// `join` adds) that matches `condition`; returns how many rows.
fn log_updates(
    conn: &Connection,
    t: &TrackedTable,
    column: &str,
    join: &str,
    condition: &str,
) -> Result<u64> {
    let slots: String = (0..t.key_columns.len())
        .map(|i| format!(", k{i}"))
        .collect();
    let keys: String = t
        .key_columns
        .iter()
        .map(|c| format!(", t.{}", ident(c)))
        .collect();
    let n = conn.execute(
        &format!(
            "INSERT INTO shoal_log(tbl, op, col{slots}) SELECT ?1, 2, ?2{keys} FROM {} AS t {join} WHERE {condition}",
            ident(&t.name)
        ),
        rusqlite::params![t.id, column],
    )?;
    Ok(n as u64)
}

/// Logs the values of columns not in `before` that differ from the column's default:
/// written while Shoal did not capture the column (an `ADD COLUMN` followed later, or
/// a table whose writes went uncaptured). A device that adds the same column has its
/// default in every row, so only the other values need to travel. Returns the most
/// rows logged for one column.
fn capture_columns(
    conn: &Connection,
    t: &TrackedTable,
    defaults: &[(String, Option<String>)],
    before: &[String],
) -> Result<u64> {
    let mut logged = 0;
    for (name, default) in defaults {
        if before.iter().any(|b| b.eq_ignore_ascii_case(name)) {
            continue;
        }
        let column = format!("t.{}", ident(name));
        let condition = match default {
            None => format!("{column} IS NOT NULL"),
            Some(d) => differs(&column, &format!("({d})")),
        };
        logged = logged.max(log_updates(conn, t, name, "", &condition)?);
    }
    Ok(logged)
}

/// Logs every value of every row: nothing says which were written uncaptured.
fn capture_all(conn: &Connection, t: &TrackedTable) -> Result<u64> {
    let mut logged = 0;
    for name in &t.columns {
        logged = logged.max(log_updates(conn, t, name, "", "1")?);
    }
    Ok(logged)
}

/// Logs every value that changed while the table was untracked, by comparing it with
/// the table's shadow (its values when it was untracked), for the columns of `before`
/// it still has. Returns the most rows logged for one column.
fn capture_from_shadow(conn: &Connection, t: &TrackedTable, before: &[String]) -> Result<u64> {
    let on: Vec<String> = t
        .key_columns
        .iter()
        .map(|c| {
            let c = ident(c);
            format!("t.{c} = s.{c} AND typeof(t.{c}) = typeof(s.{c})")
        })
        .collect();
    let join = format!("JOIN {} AS s ON {}", shadow(t.id), on.join(" AND "));
    let mut logged = 0;
    for name in t
        .columns
        .iter()
        .filter(|c| before.iter().any(|b| b.eq_ignore_ascii_case(c)))
    {
        let c = ident(name);
        let changed = differs(&format!("t.{c}"), &format!("s.{c}"));
        logged = logged.max(log_updates(conn, t, name, &join, &changed)?);
    }
    Ok(logged)
}

/// Makes the capture triggers of every tracked table anew, as this version writes them.
pub(crate) fn remake_triggers(conn: &Connection) -> Result<()> {
    for t in load_all(conn)?.into_iter().filter(|t| t.tracked) {
        drop_triggers(conn, t.id)?;
        conn.execute_batch(&triggers(&t))?;
    }
    Ok(())
}

/// The three capture triggers of a table. They log every write, Shoal's own applying
/// of remote changes too: that removes what it logged before it commits
/// (`apply::uncaptured`). A condition in the trigger to skip those writes instead
/// would cost every write of the app's a lookup.
fn triggers(t: &TrackedTable) -> String {
    let id = t.id;
    let table = ident(&t.name);
    let slots: String = (0..t.key_columns.len())
        .map(|i| format!(", k{i}"))
        .collect();
    let keys = |row: &str| -> String {
        t.key_columns
            .iter()
            .map(|c| format!(", {row}.{}", ident(c)))
            .collect()
    };
    let differs = |c: &str| {
        let c = ident(c);
        differs(&format!("OLD.{c}"), &format!("NEW.{c}"))
    };
    let key_changed = t
        .key_columns
        .iter()
        .map(|c| differs(c))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut update = format!(
        "INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, 3, NULL{} WHERE {key_changed};\n\
         INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, 1, NULL{} WHERE {key_changed};\n",
        keys("OLD"),
        keys("NEW"),
    );
    for c in &t.columns {
        update.push_str(&format!(
            "INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, 2, '{}'{} WHERE NOT ({key_changed}) AND {};\n",
            c.replace('\'', "''"),
            keys("NEW"),
            differs(c)
        ));
    }
    format!(
        "CREATE TRIGGER shoal_ins_{id} AFTER INSERT ON {table} BEGIN\n\
           INSERT INTO shoal_log(tbl, op, col{slots}) VALUES ({id}, 1, NULL{});\n\
         END;\n\
         CREATE TRIGGER shoal_upd_{id} AFTER UPDATE ON {table} BEGIN\n{update}END;\n\
         CREATE TRIGGER shoal_del_{id} AFTER DELETE ON {table} BEGIN\n\
           INSERT INTO shoal_log(tbl, op, col{slots}) VALUES ({id}, 3, NULL{});\n\
         END;\n",
        keys("NEW"),
        keys("OLD"),
    )
}

/// Logs an insert for every row of the table that Shoal does not know as alive, so
/// that rows written before tracking (or while untracked) sync too.
/// Logs every row of `table` as an insert for `group` alone: a table newly shared with
/// a group brings the rows it already has.
pub(crate) fn log_snapshot(conn: &Connection, table: &str, group: &GroupId) -> Result<u64> {
    let t = load_by_name(conn, table)?.ok_or_else(|| StoreError::NotTracked {
        table: table.to_owned(),
    })?;
    mark_shared(conn, group, t.id)?;
    let keys: Vec<String> = t.key_columns.iter().map(|c| ident(c)).collect();
    let slots: String = (0..keys.len()).map(|i| format!(", k{i}")).collect();
    let n = conn.execute(
        &format!(
            "INSERT INTO shoal_log(tbl, op{slots}, grp) SELECT ?1, 1, {}, ?2 FROM {}",
            keys.join(", "),
            ident(&t.name)
        ),
        rusqlite::params![t.id, &group.0[..]],
    )?;
    Ok(n as u64)
}

/// Records that `group` was given the rows of table `tbl`.
fn mark_shared(conn: &Connection, group: &GroupId, tbl: i64) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO shoal_shared(grp, tbl) VALUES (?1, ?2)")?
        .execute(rusqlite::params![&group.0[..], tbl])?;
    Ok(())
}

/// Gives `group` the rows of table `tbl` that it was not given yet: once, when this
/// device can first write in a group that carries the table. Each live row whose
/// life did not start in one of the group's commits (rows this device held before it
/// joined) is logged as an insert for the group alone; rows that came from the group
/// are its already. Returns the rows logged, or `None` when the group had them.
pub(crate) fn give_rows(conn: &Connection, group: &GroupId, tbl: i64) -> Result<Option<u64>> {
    let given = conn
        .prepare_cached("SELECT 1 FROM shoal_shared WHERE grp = ?1 AND tbl = ?2")?
        .exists(rusqlite::params![&group.0[..], tbl])?;
    // A table not tracked now is given its rows once it is tracked again.
    let Some(t) = load_all(conn)?
        .into_iter()
        .find(|t| t.id == tbl && t.tracked)
    else {
        return Ok(None);
    };
    if given {
        return Ok(None);
    }
    mark_shared(conn, group, tbl)?;
    let in_group: std::collections::HashSet<(i64, i64)> = conn
        .prepare_cached("SELECT author, hlc FROM shoal_commits WHERE grp = ?1 AND state = 0")?
        .query_map([&group.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let slots: String = (0..t.key_columns.len())
        .map(|i| format!(", k{i}"))
        .collect();
    let params: String = (0..t.key_columns.len())
        .map(|i| format!(", ?{}", i + 3))
        .collect();
    let mut log = conn.prepare(&format!(
        "INSERT INTO shoal_log(tbl, op, grp{slots}) VALUES (?1, 1, ?2{params})"
    ))?;
    let grp = &group.0[..];
    let mut alive =
        conn.prepare("SELECT key, meta FROM shoal_rows WHERE tbl = ?1 AND cl % 2 = 1")?;
    let mut q = alive.query([tbl])?;
    let mut logged = 0;
    while let Some(row) = q.next()? {
        let event = rows::event(&row.get::<_, Vec<u8>>(1)?)?;
        if event.is_some_and(|e| in_group.contains(&(e.author, e.hlc as i64))) {
            continue;
        }
        let key = crate::sql::key_from_blob(&row.get::<_, Vec<u8>>(0)?)?;
        let binds: Vec<crate::sql::Bind<'_>> = key.iter().map(crate::sql::Bind).collect();
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&t.id, &grp];
        p.extend(binds.iter().map(|b| b as &dyn rusqlite::ToSql));
        log.execute(p.as_slice())?;
        logged += 1;
    }
    Ok(Some(logged))
}

fn capture_existing(conn: &Connection, t: &TrackedTable) -> Result<u64> {
    let keys: Vec<String> = t.key_columns.iter().map(|c| ident(c)).collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {}",
        keys.join(", "),
        ident(&t.name)
    ))?;
    let slots: String = (0..keys.len()).map(|i| format!(", k{i}")).collect();
    let params: String = (0..keys.len()).map(|i| format!(", ?{}", i + 2)).collect();
    let mut log = conn.prepare(&format!(
        "INSERT INTO shoal_log(tbl, op{slots}) VALUES (?1, 1{params})"
    ))?;
    let mut rows = stmt.query([])?;
    let mut captured = 0;
    while let Some(row) = rows.next()? {
        let key: Vec<_> = (0..keys.len())
            .map(|i| row.get_ref(i).map(value))
            .collect::<Result<_, _>>()?;
        if rows::cl(conn, t.id, &key_blob(&key))? % 2 == 1 {
            continue;
        }
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&t.id];
        let binds: Vec<crate::sql::Bind<'_>> = key.iter().map(crate::sql::Bind).collect();
        params.extend(binds.iter().map(|b| b as &dyn rusqlite::ToSql));
        log.execute(params.as_slice())?;
        captured += 1;
    }
    // Rows deleted while the table was not tracked: alive here, gone from the table.
    let mut alive =
        conn.prepare_cached("SELECT key FROM shoal_rows WHERE tbl = ?1 AND cl % 2 = 1")?;
    let mut exists = conn.prepare(&format!(
        "SELECT 1 FROM {} WHERE {}",
        ident(&t.name),
        crate::sql::key_match(&t.key_columns, 1)
    ))?;
    let mut log_delete = conn.prepare(&format!(
        "INSERT INTO shoal_log(tbl, op{slots}) VALUES (?1, 3{params})"
    ))?;
    let mut q = alive.query([t.id])?;
    while let Some(row) = q.next()? {
        let key = crate::sql::key_from_blob(&row.get::<_, Vec<u8>>(0)?)?;
        let binds: Vec<crate::sql::Bind<'_>> = key.iter().map(crate::sql::Bind).collect();
        let key_params: Vec<&dyn rusqlite::ToSql> =
            binds.iter().map(|b| b as &dyn rusqlite::ToSql).collect();
        if exists.exists(key_params.as_slice())? {
            continue;
        }
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&t.id];
        p.extend(key_params);
        log_delete.execute(p.as_slice())?;
        captured += 1;
    }
    Ok(captured)
}

fn json_array(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn parse_json_array(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Damaged {
        what: "a tracked table's column list".into(),
        detail: e.to_string(),
    })
}

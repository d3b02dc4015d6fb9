//! The capture triggers: plain SQL on each tracked table, so that a write from any
//! SQLite client is logged in the same transaction as the write itself. They log
//! keys only (values are read when sealing).
//!
//! The triggers have no `WHEN`: a condition that skipped Shoal's own writes would cost
//! every write of the app a lookup. Shoal's connection applies remote changes with
//! triggers off instead (`SQLITE_DBCONFIG_ENABLE_TRIGGER` is per connection, so the
//! app's connections keep theirs), which also saves a log write per applied change.
//! When the file has triggers of the app's own, which must see remote changes too,
//! triggers stay on and the applying transaction deletes what the capture triggers
//! logged after it began; it holds the write lock, so nothing else logged in between.

use rusqlite::Connection;

use crate::capture::sweep::differs;
use crate::error::Result;
use crate::sql::ident;
use crate::tables::log::LogOp;
use crate::tables::table::{TrackedTable, load_all};

/// Drops the capture triggers of the tracked table `id`.
pub(crate) fn remove(conn: &Connection, id: i64) -> Result<()> {
    for op in ["ins", "upd", "del"] {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS shoal_{op}_{id};"))?;
    }
    Ok(())
}

/// Drops capture triggers of other tracked tables that sit on `t`'s table: a tracked
/// table renamed to this name took its triggers along.
fn remove_stray(conn: &Connection, t: &TrackedTable) -> Result<()> {
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

/// Makes the capture triggers of every tracked table anew, as this version writes them.
pub(crate) fn remake_all(conn: &Connection) -> Result<()> {
    for t in load_all(conn)?.into_iter().filter(|t| t.tracked) {
        remove(conn, t.id)?;
        conn.execute_batch(&sql(&t))?;
    }
    Ok(())
}

/// Installs `t`'s capture triggers, in place of any it had and of other tables'
/// that sit on its table.
pub(crate) fn install(conn: &Connection, t: &TrackedTable) -> Result<()> {
    remove_stray(conn, t)?;
    remove(conn, t.id)?;
    conn.execute_batch(&sql(t))?;
    Ok(())
}

/// The three capture triggers of a table. They log every write, Shoal's own applying
/// of remote changes too: that removes what it logged before it commits
/// ([`crate::tables::log::uncaptured`]). A condition in the trigger to skip those writes instead
/// would cost every write of the app's a lookup.
fn sql(t: &TrackedTable) -> String {
    let id = t.id;
    let (ins, upd, del) = (
        LogOp::Insert.code(),
        LogOp::Update.code(),
        LogOp::Delete.code(),
    );
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
        "INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, {del}, NULL{} WHERE {key_changed};\n\
         INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, {ins}, NULL{} WHERE {key_changed};\n",
        keys("OLD"),
        keys("NEW"),
    );
    for c in &t.columns {
        update.push_str(&format!(
            "INSERT INTO shoal_log(tbl, op, col{slots}) SELECT {id}, {upd}, '{}'{} WHERE NOT ({key_changed}) AND {};\n",
            c.replace('\'', "''"),
            keys("NEW"),
            differs(c)
        ));
    }
    format!(
        "CREATE TRIGGER shoal_ins_{id} AFTER INSERT ON {table} BEGIN\n\
           INSERT INTO shoal_log(tbl, op, col{slots}) VALUES ({id}, {ins}, NULL{});\n\
         END;\n\
         CREATE TRIGGER shoal_upd_{id} AFTER UPDATE ON {table} BEGIN\n{update}END;\n\
         CREATE TRIGGER shoal_del_{id} AFTER DELETE ON {table} BEGIN\n\
           INSERT INTO shoal_log(tbl, op, col{slots}) VALUES ({id}, {del}, NULL{});\n\
         END;\n",
        keys("NEW"),
        keys("OLD"),
    )
}

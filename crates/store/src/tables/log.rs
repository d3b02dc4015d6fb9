//! `shoal_log`: the capture log, where the triggers note the key of every row the
//! app writes (and which column, for an update) until the next seal.

use rusqlite::Transaction;
use rusqlite::config::DbConfig;
use shoal_core::Value;

use crate::error::Result;
use crate::sql::Bind;

/// What a capture-log entry records, as the triggers write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogOp {
    Insert = 1,
    Update = 2,
    Delete = 3,
}

impl LogOp {
    /// The number the log holds, for SQL written around it.
    pub(crate) fn code(self) -> i64 {
        self as i64
    }

    /// The entry a stored number stands for.
    pub(crate) fn from_code(code: i64) -> Option<LogOp> {
        match code {
            1 => Some(LogOp::Insert),
            2 => Some(LogOp::Update),
            3 => Some(LogOp::Delete),
            _ => None,
        }
    }
}

/// Adds entries to the capture log by hand, as the triggers would: `(op, column)`,
/// the column for an update.
pub(crate) fn append(
    tx: &Transaction,
    table: i64,
    key: &[Value],
    ops: &[(LogOp, Option<&str>)],
) -> Result<()> {
    let slots: String = (0..key.len()).map(|i| format!(", k{i}")).collect();
    let params: String = (0..key.len()).map(|i| format!(", ?{}", i + 4)).collect();
    let sql = format!("INSERT INTO shoal_log(tbl, op, col{slots}) VALUES (?1, ?2, ?3{params})");
    let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
    for (op, col) in ops {
        let code = op.code();
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&table, &code, col];
        p.extend(binds.iter().map(|b| b as &dyn rusqlite::ToSql));
        tx.prepare_cached(&sql)?.execute(p.as_slice())?;
    }
    Ok(())
}

/// Runs `f`, which writes remote changes to the app's tables, so that a remote change
/// is never captured as a local one.
///
/// When every trigger in the file is one of Shoal's capture triggers, `f` runs with
/// triggers off on this connection alone (other connections, the app's included, keep
/// theirs): nothing is logged, and each applied change costs one write fewer. Otherwise
/// the app's own triggers must still see remote changes, so `f` runs with triggers on
/// and what the capture triggers logged meanwhile is deleted afterwards. The caller's
/// transaction holds the write lock: nothing else logs in between.
pub(crate) fn uncaptured<T>(tx: &Transaction, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let others: i64 = tx
        .prepare_cached(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'
             AND name NOT LIKE 'shoal!_ins!_%' ESCAPE '!'
             AND name NOT LIKE 'shoal!_upd!_%' ESCAPE '!'
             AND name NOT LIKE 'shoal!_del!_%' ESCAPE '!'",
        )?
        .query_row([], |r| r.get(0))?;
    if others == 0 {
        let _off = TriggersOff::new(tx)?;
        return f();
    }
    let mark: i64 = tx
        .prepare_cached("SELECT coalesce(max(id), 0) FROM shoal_log")?
        .query_row([], |r| r.get(0))?;
    let out = f()?;
    tx.prepare_cached("DELETE FROM shoal_log WHERE id > ?1")?
        .execute([mark])?;
    Ok(out)
}

/// Triggers off on one connection for as long as this lives, on again when it is
/// dropped, on any path out. Statements prepared meanwhile are prepared anew after.
struct TriggersOff<'a>(&'a rusqlite::Connection);

impl<'a> TriggersOff<'a> {
    fn new(conn: &'a rusqlite::Connection) -> Result<Self> {
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        Ok(TriggersOff(conn))
    }
}

impl Drop for TriggersOff<'_> {
    fn drop(&mut self) {
        // SQLite refuses this only for an option it does not know, and it knew it a
        // moment ago.
        let _ = self
            .0
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true);
    }
}

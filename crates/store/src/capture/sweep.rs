//! Capturing what was written while no trigger captured it, in one pass over a table:
//! rows new to Shoal or gone from the table, values of columns it did not capture,
//! values that changed while it was untracked (against its shadow), and the rows a
//! group is given when it first carries a table.

use rusqlite::Connection;
use shoal_core::{GroupId, Value};

use crate::error::{Result, StoreError};
use crate::sql::{ident, key_blob, value};
use crate::tables::commits::State;
use crate::tables::rows;
use crate::tables::table::{TrackedTable, load_all, load_by_name};

/// The table that keeps an untracked table's values as they were when it was untracked.
fn shadow(id: i64) -> String {
    format!("shoal_shadow_{id}")
}

pub(crate) fn shadow_exists(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .exists([shadow(id)])?)
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
    conn.execute(
        &format!(
            "INSERT INTO {} {} WHERE {matching}",
            shadow(t.id),
            shadowed(t)
        ),
        rusqlite::params_from_iter(&binds),
    )?;
    Ok(())
}

/// Keeps the values of `t` as they stand in its shadow, so that tracking it again
/// can tell what changed while nothing captured it.
pub(crate) fn make_shadow(conn: &Connection, t: &TrackedTable) -> Result<()> {
    drop_shadow(conn, t.id)?;
    conn.execute_batch(&format!("CREATE TABLE {} AS {}", shadow(t.id), shadowed(t)))?;
    Ok(())
}

/// The query of what a shadow keeps of `t`: its key and synced columns.
fn shadowed(t: &TrackedTable) -> String {
    let cols: Vec<String> = t
        .key_columns
        .iter()
        .chain(&t.columns)
        .map(|c| ident(c))
        .collect();
    format!("SELECT {} FROM {}", cols.join(", "), ident(&t.name))
}

pub(crate) fn drop_shadow(conn: &Connection, id: i64) -> Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", shadow(id)))?;
    Ok(())
}

/// Byte-exact change test between two expressions: `IS NOT` alone calls 1 and 1.0
/// equal and follows the column's collation.
pub(crate) fn differs(a: &str, b: &str) -> String {
    format!("({a} IS NOT {b} COLLATE BINARY OR typeof({a}) IS NOT typeof({b}))")
}

/// Logs an update of `column` for every row of `t` (aliased `t`, joined with what
/// `join` adds) that matches `condition`; returns how many rows.
pub(crate) fn log_updates(
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
pub(crate) fn capture_columns(
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
        // A column the merge state knows (tracked under this name before, renamed away
        // and back) holds what the app wrote to it while it went by another name: its
        // default no longer says that nothing was written.
        let known: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM shoal_columns WHERE tbl = ?1 AND name = ?2)",
            )?
            .query_row(rusqlite::params![t.id, name], |r| r.get(0))?;
        let column = format!("t.{}", ident(name));
        let condition = match default {
            _ if known => "1".to_owned(),
            None => format!("{column} IS NOT NULL"),
            Some(d) => differs(&column, &format!("({d})")),
        };
        logged = logged.max(log_updates(conn, t, name, "", &condition)?);
    }
    Ok(logged)
}

/// Logs every value of every row: nothing says which were written uncaptured.
pub(crate) fn capture_all(conn: &Connection, t: &TrackedTable) -> Result<u64> {
    let mut logged = 0;
    for name in &t.columns {
        logged = logged.max(log_updates(conn, t, name, "", "1")?);
    }
    Ok(logged)
}

/// Logs every value that changed while the table was untracked, by comparing it with
/// the table's shadow (its values when it was untracked), for the columns of `before`
/// it still has. Returns the most rows logged for one column.
pub(crate) fn capture_from_shadow(
    conn: &Connection,
    t: &TrackedTable,
    before: &[String],
) -> Result<u64> {
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
pub(crate) fn mark_shared(conn: &Connection, group: &GroupId, tbl: i64) -> Result<()> {
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
    // A table whose schema changed in a way Shoal does not follow is given its rows
    // once it is sorted out: its writes meanwhile wait in the log, unsealed, and a row
    // must not go to the group both as a change and as given.
    if crate::tables::follow::change(conn, &t.as_tracked())?.is_some() {
        return Ok(None);
    }
    // A live row's life started in an applied commit: when every applied commit is
    // the group's (a device that held nothing before joining), there is nothing to
    // give, and a first sync of a million rows need not read them all again.
    let elsewhere = conn
        .prepare_cached("SELECT 1 FROM shoal_commits WHERE grp != ?1 AND state = ?2 LIMIT 1")?
        .exists(rusqlite::params![&group.0[..], State::Applied])?;
    if !elsewhere {
        mark_shared(conn, group, tbl)?;
        return Ok(Some(0));
    }
    let in_group: std::collections::HashSet<(i64, i64)> = conn
        .prepare_cached("SELECT author, hlc FROM shoal_commits WHERE grp = ?1 AND state = ?2")?
        .query_map(rusqlite::params![&group.0[..], State::Applied], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
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
    // A row with writes still in the log (too large to seal) is given once they are
    // sealed: until then the table is not marked given, and a later import tries
    // again (rows given already are the group's by then, and are skipped).
    let mut pending = conn.prepare(&format!(
        "SELECT 1 FROM shoal_log WHERE tbl = ?1 AND grp IS NULL AND {}",
        (0..t.key_columns.len())
            .map(|i| format!("k{i} IS ?{}", i + 2))
            .collect::<Vec<_>>()
            .join(" AND ")
    ))?;
    let mut q = alive.query([tbl])?;
    let mut logged = 0;
    let mut skipped = false;
    while let Some(row) = q.next()? {
        let event = rows::event(&row.get::<_, Vec<u8>>(1)?)?;
        if event.is_some_and(|e| in_group.contains(&(e.author, e.hlc as i64))) {
            continue;
        }
        let key = crate::sql::key_from_blob(&row.get::<_, Vec<u8>>(0)?)?;
        let binds: Vec<crate::sql::Bind<'_>> = key.iter().map(crate::sql::Bind).collect();
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&t.id];
        p.extend(binds.iter().map(|b| b as &dyn rusqlite::ToSql));
        if pending.exists(p.as_slice())? {
            skipped = true;
            continue;
        }
        let mut p: Vec<&dyn rusqlite::ToSql> = vec![&t.id, &grp];
        p.extend(binds.iter().map(|b| b as &dyn rusqlite::ToSql));
        log.execute(p.as_slice())?;
        logged += 1;
    }
    if !skipped {
        mark_shared(conn, group, tbl)?;
    }
    Ok(Some(logged))
}

/// Logs an insert for every row of the table that Shoal does not know as alive, so
/// that rows written before tracking (or while untracked) sync too.
pub(crate) fn capture_existing(conn: &Connection, t: &TrackedTable) -> Result<u64> {
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
    // Rows deleted while the table was not tracked: alive here, gone from the table
    // (a row a constraint set aside is out of it on purpose).
    let mut alive = conn.prepare_cached(
        "SELECT key FROM shoal_rows r WHERE tbl = ?1 AND cl % 2 = 1
         AND NOT EXISTS (SELECT 1 FROM shoal_aside a WHERE a.tbl = r.tbl AND a.key = r.key)",
    )?;
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

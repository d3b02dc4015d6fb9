//! Rows set aside: alive by the merge rules, kept out of the app's table because a
//! constraint of its schema refuses them. Which row stands is decided from the commits
//! alone, so that every device, the writer's included, sets aside the same rows:
//!
//! - **UNIQUE** (a column, several, a unique index): of two rows that claim one value,
//!   the one that took it first stands: the newest version among its cells of the
//!   index's columns is the earlier (then the smaller key). The other is set aside.
//! - **CHECK, NOT NULL**: a row whose merged values break one is set aside.
//!
//! A row set aside keeps its merge state in `shoal_rows`, its values in
//! `shoal_aside`, and a pending conflict record with both rows' values, clocks and
//! devices, under the same id on every device. Later changes to it update the values
//! kept. After every import each row set aside is tried again; once nothing refuses
//! it, it goes back into its table and its record closes, on every device alike.

use rusqlite::{ErrorCode, OptionalExtension, Transaction};
use shoal_core::{DeviceId, Hlc, Value, Version};

use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::conflict::{self, NewConflict};
use crate::merge::inbox::Side;
use crate::report::ImportReport;
use crate::sql::{Bind, ident, key_blob, key_from_blob, key_match};
use crate::tables::rows;
use crate::tables::table::TrackedTable;

/// The values of a row, by column.
pub(crate) type RowValues = Vec<(String, Value)>;

/// How often a row's placing is tried before it is left aside: each round settles one
/// clash, and rows rarely clash on more than one index at once.
pub(crate) const ROUNDS: usize = 8;

/// What a failed write broke: a UNIQUE constraint (another row may hold the value),
/// or a constraint on the row alone.
enum Broken {
    Unique,
    Row,
}

/// The constraint a write broke, with SQLite's message; `None` for any other error.
fn broken(e: &rusqlite::Error) -> Option<(Broken, String)> {
    let rusqlite::Error::SqliteFailure(code, message) = e else {
        return None;
    };
    if code.code != ErrorCode::ConstraintViolation {
        return None;
    }
    let message = message.clone().unwrap_or_default();
    let what = match code.extended_code {
        2067 | 1555 => return Some((Broken::Unique, format!("UNIQUE: {message}"))),
        1299 => "NOT NULL",
        275 => "CHECK",
        787 => "FOREIGN KEY",
        _ => "constraint",
    };
    Some((Broken::Row, format!("{what}: {message}")))
}

/// The table and key of every row set aside, in that order.
pub(crate) fn keys(tx: &Transaction) -> Result<Vec<(i64, Vec<u8>)>> {
    Ok(tx
        .prepare_cached("SELECT tbl, key FROM shoal_aside ORDER BY tbl, key")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Whether any row is set aside.
pub(crate) fn any(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM shoal_aside)")?
        .query_row([], |r| r.get(0))?)
}

/// The values kept for a row set aside, and the id of the conflict that says why.
pub(crate) fn entry(
    tx: &Transaction,
    table: i64,
    key: &[u8],
) -> Result<Option<(RowValues, String)>> {
    let found: Option<(Vec<u8>, String)> = tx
        .prepare_cached("SELECT row_values, conflict FROM shoal_aside WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table, key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    found.map(|(b, id)| Ok((decode(&b)?, id))).transpose()
}

/// The values kept for a row set aside.
pub(crate) fn get(tx: &Transaction, table: i64, key: &[u8]) -> Result<Option<RowValues>> {
    let blob: Option<Vec<u8>> = tx
        .prepare_cached("SELECT row_values FROM shoal_aside WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table, key], |r| r.get(0))
        .optional()?;
    blob.map(|b| decode(&b)).transpose()
}

fn decode(blob: &[u8]) -> Result<RowValues> {
    postcard::from_bytes(blob).map_err(|e| StoreError::Damaged {
        what: "the values of a row set aside".into(),
        detail: e.to_string(),
    })
}

/// Writes `cells` into the values kept for a row set aside.
pub(crate) fn update(
    tx: &Transaction,
    table: i64,
    key: &[u8],
    mut values: RowValues,
    cells: &[(&str, &Value)],
) -> Result<()> {
    for (column, value) in cells {
        match values
            .iter_mut()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
        {
            Some((_, v)) => *v = (*value).clone(),
            None => values.push(((*column).to_owned(), (*value).clone())),
        }
    }
    tx.prepare_cached("UPDATE shoal_aside SET row_values = ?3 WHERE tbl = ?1 AND key = ?2")?
        .execute(rusqlite::params![
            table,
            key,
            postcard::to_stdvec(&values).unwrap_or_default()
        ])?;
    Ok(())
}

/// Forgets a row set aside (it was deleted, written anew, or is back in its table) and
/// closes its record, saying `why`.
pub(crate) fn release(tx: &Transaction, table: i64, key: &[u8], why: &str) -> Result<()> {
    let conflict: Option<String> = tx
        .prepare_cached("DELETE FROM shoal_aside WHERE tbl = ?1 AND key = ?2 RETURNING conflict")?
        .query_row(rusqlite::params![table, key], |r| r.get(0))
        .optional()?;
    if let Some(id) = conflict {
        close(tx, &id, why)?;
    }
    Ok(())
}

fn close(tx: &Transaction, id: &str, why: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE shoal_conflicts SET status = 'closed', resolution = ?2
         WHERE id = ?1 AND status IN ('pending', 'auto')",
    )?
    .execute(rusqlite::params![id, why])?;
    Ok(())
}

/// Forgets the rows set aside that the app has written into their table again: the
/// app's row is what stands here now, sealed as a write of every column, and later
/// changes go to the table. Run as a seal starts.
pub(crate) fn written_again(tx: &Transaction) -> Result<()> {
    if !any(tx)? {
        return Ok(());
    }
    let entries: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT tbl, key FROM shoal_aside")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let tables = crate::tables::table::load_all(tx)?;
    for (tbl, blob) in entries {
        let Some(table) = tables.iter().find(|t| t.id == tbl) else {
            continue;
        };
        if table.sql.read(tx, &key_from_blob(&blob)?)?.is_some() {
            release(tx, tbl, &blob, "the row was written again here")?;
        }
    }
    Ok(())
}

/// Puts a row whose merge state is saved into its table, by the rule every device
/// follows. `error` is how a write of it has just failed, if one was tried. Returns
/// whether the row is in the table; if not, it is set aside.
pub(crate) fn place(
    tx: &Transaction,
    r: &mut Device,
    table: &TrackedTable,
    key: &[Value],
    values: RowValues,
    mut error: Option<rusqlite::Error>,
    report: &mut ImportReport,
) -> Result<bool> {
    let blob = key_blob(key);
    let mut last = String::new();
    for _ in 0..ROUNDS {
        let e = match error.take() {
            Some(e) => e,
            None => {
                table.sql.delete(tx, key)?;
                match table.sql.insert(tx, key, &values) {
                    Ok(()) => return Ok(true),
                    Err(e) => e,
                }
            }
        };
        let Some((what, detail)) = broken(&e) else {
            return Err(e.into());
        };
        last = detail.clone();
        if let Broken::Row = what {
            let why = Reason::alone(tx, r, table, &blob, &values, &detail)?;
            set_aside(tx, r, table, key, &values, why, report)?;
            return Ok(false);
        }
        let mine_of = |tx: &Transaction, r: &mut Device, columns: &[String]| {
            ranked(tx, r, table, &blob, columns)
        };
        let mut losers = Vec::new();
        for columns in unique_indexes(tx, table)? {
            let Some(wanted) = columns
                .iter()
                .map(|c| value_of(&values, c))
                .collect::<Option<Vec<&Value>>>()
            else {
                continue;
            };
            // NULLs never clash in a UNIQUE index.
            if wanted.iter().any(|v| matches!(v, Value::Null)) {
                continue;
            }
            for other in holders(tx, table, key, &columns, &wanted)? {
                let mine = mine_of(tx, r, &columns)?;
                let theirs = ranked(tx, r, table, &key_blob(&other), &columns)?;
                let holder = Holder {
                    key: other,
                    columns: columns.clone(),
                    claim: theirs.0,
                };
                if mine < theirs {
                    losers.push((holder, mine.0));
                } else {
                    let why = Reason::held(&holder, mine.0, &values, &detail);
                    set_aside(tx, r, table, key, &values, why, report)?;
                    return Ok(false);
                }
            }
        }
        if losers.is_empty() {
            // Nothing found to blame (an index on an expression, a partial index): the
            // row is set aside on its own.
            let why = Reason::alone(tx, r, table, &blob, &values, &detail)?;
            set_aside(tx, r, table, key, &values, why, report)?;
            return Ok(false);
        }
        for (holder, mine) in losers {
            let theirs = row_values(tx, table, &holder.key)?;
            let this = Holder {
                key: key.to_vec(),
                columns: holder.columns.clone(),
                claim: mine,
            };
            let why = Reason::held(&this, holder.claim, &theirs, &detail);
            set_aside(tx, r, table, &holder.key, &theirs, why, report)?;
        }
    }
    let why = Reason::alone(tx, r, table, &blob, &values, &last)?;
    set_aside(tx, r, table, key, &values, why, report)?;
    Ok(false)
}

/// The row a set-aside one clashed with.
struct Holder {
    key: Vec<Value>,
    columns: Vec<String>,
    claim: Option<Version>,
}

/// Why a row is set aside, for its record: the columns in dispute, the row or delete
/// that stands against it (its values and version), the row's own version there.
pub(crate) struct Reason {
    pub(crate) columns: Vec<String>,
    pub(crate) local_values: Option<RowValues>,
    pub(crate) local: Option<Version>,
    pub(crate) remote: Option<Version>,
    pub(crate) detail: String,
}

impl Reason {
    /// A row another holds the UNIQUE value of.
    fn held(holder: &Holder, own: Option<Version>, values: &RowValues, detail: &str) -> Reason {
        let literal: Vec<String> = holder.key.iter().map(Value::to_sql_literal).collect();
        Reason {
            local_values: Some(
                holder
                    .columns
                    .iter()
                    .filter_map(|c| value_of(values, c).map(|v| (c.clone(), v.clone())))
                    .collect(),
            ),
            columns: holder.columns.clone(),
            local: holder.claim,
            remote: own,
            detail: format!(
                "{detail}; row ({}) took the value first, so this row is set aside on every device until the clash is gone (change either row, or resolve)",
                literal.join(", ")
            ),
        }
    }

    /// A row whose own merged values break a constraint.
    fn alone(
        tx: &Transaction,
        r: &mut Device,
        table: &TrackedTable,
        key: &[u8],
        values: &RowValues,
        detail: &str,
    ) -> Result<Reason> {
        let state = rows::load(tx, &mut r.columns, table.id, key)?;
        Ok(Reason {
            columns: values.iter().map(|(c, _)| c.clone()).collect(),
            local_values: None,
            local: None,
            remote: state.meta.newest(&mut r.authors, tx)?,
            detail: format!(
                "{detail}; the row's merged values break it, so it is set aside on every device until it is changed (or resolve)"
            ),
        })
    }
}

/// The version of nothing: for a record whose row has no version of its own.
pub(crate) fn no_version() -> Version {
    Version {
        hlc: Hlc(0),
        author: DeviceId([0; 32]),
    }
}

/// Takes a row out of its table, keeps its values, and records why, under an id
/// every device gives the same clash.
pub(crate) fn set_aside(
    tx: &Transaction,
    r: &mut Device,
    table: &TrackedTable,
    key: &[Value],
    values: &RowValues,
    why: Reason,
    report: &mut ImportReport,
) -> Result<()> {
    table.sql.delete(tx, key)?;
    let blob = key_blob(key);
    let c = NewConflict::constraint(
        key,
        rows::cl(tx, table.id, &blob)?,
        why.columns,
        Side::Local,
        why.local,
        why.remote.unwrap_or_else(no_version),
        why.detail,
    )
    .values(why.local_values, Some(values.clone()));
    let id = conflict::id_of(&table.name, &c);
    if conflict::record(tx, r, table, c)? {
        report.conflicts += 1;
    } else {
        // The same clash as once before, closed since: it is open again.
        let reopened = tx
            .prepare_cached(
                "UPDATE shoal_conflicts SET status = 'pending', resolution = NULL
                 WHERE id = ?1 AND status = 'closed'",
            )?
            .execute([&id])?;
        if reopened > 0 {
            r.open_conflicts = Some(true);
        }
    }
    let before: Option<String> = tx
        .prepare_cached("SELECT conflict FROM shoal_aside WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table.id, &blob], |r| r.get(0))
        .optional()?;
    if let Some(old) = before.filter(|old| *old != id) {
        close(tx, &old, &format!("set aside again: see conflict {id}"))?;
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO shoal_aside(tbl, key, row_values, conflict) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(rusqlite::params![
        table.id,
        &blob,
        postcard::to_stdvec(values).unwrap_or_default(),
        id
    ])?;
    Ok(())
}

/// When a row took the values of `columns`: the newest version among its cells of
/// them (a column not written since the row's insert counts from the insert).
pub(crate) fn claim(
    tx: &Transaction,
    r: &mut Device,
    table: &TrackedTable,
    key: &[u8],
    columns: &[String],
) -> Result<Option<Version>> {
    Ok(ranked(tx, r, table, key, columns)?.0)
}

/// A row's [`claim`], then its key, so that two rows never tie.
fn ranked(
    tx: &Transaction,
    r: &mut Device,
    table: &TrackedTable,
    key: &[u8],
    columns: &[String],
) -> Result<(Option<Version>, Vec<u8>)> {
    let state = rows::load(tx, &mut r.columns, table.id, key)?;
    let mut newest: Option<Version> = None;
    for c in columns {
        let v = match state.meta.cell(c) {
            Some(cell) => Some(cell.version),
            None => state.meta.event,
        };
        if let Some(v) = v {
            newest = newest.max(Some(v.resolve(&mut r.authors, tx)?));
        }
    }
    Ok((newest, key.to_vec()))
}

/// The columns of each UNIQUE constraint and unique index of `table` that names plain
/// columns and covers every row (not the primary key, not partial).
fn unique_indexes(tx: &Transaction, table: &TrackedTable) -> Result<Vec<Vec<String>>> {
    let list: Vec<(String, bool, String, bool)> = tx
        .prepare(&format!("PRAGMA index_list({})", ident(&table.name)))?
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (name, unique, origin, partial) in list {
        if !unique || origin == "pk" || partial {
            continue;
        }
        let columns: Vec<Option<String>> = tx
            .prepare(&format!("PRAGMA index_info({})", ident(&name)))?
            .query_map([], |r| r.get(2))?
            .collect::<rusqlite::Result<_>>()?;
        if let Some(columns) = columns.into_iter().collect::<Option<Vec<String>>>() {
            out.push(columns);
        }
    }
    Ok(out)
}

/// The keys of the rows other than `key` that hold `values` in `columns`.
fn holders(
    tx: &Transaction,
    table: &TrackedTable,
    key: &[Value],
    columns: &[String],
    values: &[&Value],
) -> Result<Vec<Vec<Value>>> {
    let keys: Vec<String> = table.key_columns.iter().map(|c| ident(c)).collect();
    let conditions: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} AND NOT ({})",
        keys.join(", "),
        ident(&table.name),
        conditions.join(" AND "),
        key_match(&table.key_columns, columns.len() + 1)
    );
    let binds: Vec<Bind<'_>> = values.iter().copied().chain(key).map(Bind).collect();
    let mut stmt = tx.prepare_cached(&sql)?;
    let found = stmt
        .query_map(rusqlite::params_from_iter(&binds), |row| {
            (0..keys.len())
                .map(|i| row.get_ref(i).map(crate::sql::value))
                .collect::<rusqlite::Result<Vec<Value>>>()
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(found)
}

/// A row of the table as it is there, by column.
fn row_values(tx: &Transaction, table: &TrackedTable, key: &[Value]) -> Result<RowValues> {
    let row = table.sql.read(tx, key)?.unwrap_or_default();
    Ok(table.columns.iter().cloned().zip(row).collect())
}

fn value_of<'a>(values: &'a RowValues, column: &str) -> Option<&'a Value> {
    values
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(column))
        .map(|(_, v)| v)
}

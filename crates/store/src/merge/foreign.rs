//! Foreign keys between tracked tables, checked once a batch is in, by rules that read
//! only the merged state, so that every device holds the same rows:
//!
//! - A child whose parent is not here (not arrived yet, or in a table this device
//!   does not track) stays, and is recorded: it becomes valid when the parent comes.
//! - A child whose parent the merge rules say is deleted (a delete concurrent with the
//!   child's insert or re-reference) is set aside on every device if the key says
//!   `ON DELETE CASCADE`, `SET NULL` or `SET DEFAULT`: the delete reaches it. It comes
//!   back if the parent lives again or the child refers elsewhere. Under `NO ACTION`
//!   or `RESTRICT` nothing is removed: the child stays, recorded alike everywhere.
//!
//! Checked are the rows the batch wrote and the children of the rows it deleted.
//!
//! Shoal's transactions run with enforcement off (the connection's setting is restored
//! after). `SET NULL` sets nothing to NULL: the child is set aside with its reference,
//! and `--set acct=NULL` puts it back. A key whose parent columns are not the parent's
//! primary key cannot find the children of a deleted parent: they are checked only when
//! written.

use rusqlite::Transaction;
use shoal_core::{Value, Version};

use crate::device::Device;
use crate::error::Result;
use crate::merge::aside::{self, Reason, RowValues};
use crate::merge::conflict::{self, NewConflict};
use crate::merge::inbox::Side;
use crate::merge::tables::Tables;
use crate::report::ImportReport;
use crate::sql::{Bind, ident, key_blob, key_match, key_text};
use crate::tables::foreign_keys::{ForeignKey, OnDelete};
use crate::tables::rows;
use crate::tables::table::TrackedTable;

/// Checks the rows written in this transaction and the children of the rows it
/// deleted, by the rules above.
pub(crate) fn check(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    report: &mut ImportReport,
) -> Result<()> {
    let (mut rows, deleted) = tables.take_touched();
    for (parent_id, key) in deleted {
        let Some(parent) = tables.by_id(parent_id) else {
            continue;
        };
        for (child, fk) in tables.children_of(&parent.name) {
            // Children are found by the parent's key; a key that names other columns
            // of the parent cannot be looked up once the parent is gone.
            let Some(refs) = in_order(&fk.to, &parent.key_columns, &key) else {
                continue;
            };
            for k in children(tx, child, fk, &refs)? {
                rows.push((child.id, k));
            }
        }
    }
    // In key order, each row once: the same rows are checked in the same order
    // whatever order the batch wrote them in.
    let mut rows: Vec<(i64, Vec<u8>, Vec<Value>)> = rows
        .into_iter()
        .map(|(t, k)| (t, key_blob(&k), k))
        .collect();
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    for (table_id, _, key) in rows {
        let Some(table) = tables.by_id(table_id) else {
            continue;
        };
        // A row deleted or set aside meanwhile refers to nothing.
        let Some(row) = table.sql.read(tx, &key)? else {
            continue;
        };
        let values: RowValues = table.columns.iter().cloned().zip(row).collect();
        for fk in tables.foreign_of(table_id) {
            let Some(refs) = references(fk, &values) else {
                continue;
            };
            if parent_here(tx, fk, &refs)? {
                continue;
            }
            let deleted = parent_deleted(tx, r, tables, fk, &refs)?;
            let claim = aside::claim(tx, r, table, &key_blob(&key), &fk.from)?;
            if let Some(why) = reached(table, fk, &refs, deleted, claim) {
                tables.note_aside();
                aside::set_aside(tx, r, table, &key, &values, why, report)?;
                break;
            }
            let described = describe(table, fk, &refs, deleted.is_some());
            let detail = if deleted.is_some() {
                format!(
                    "FOREIGN KEY: {described}; the key has no ON DELETE action, so the row is kept on every device (delete it, or make it refer to another)"
                )
            } else {
                format!(
                    "FOREIGN KEY: {described}; the row is kept and becomes valid when its parent arrives"
                )
            };
            let c = NewConflict::constraint(
                &key,
                rows::cl(tx, table.id, &key_blob(&key))?,
                fk.from.clone(),
                Side::Remote,
                deleted,
                claim.unwrap_or_else(aside::no_version),
                detail,
            )
            .values(
                None,
                Some(fk.from.iter().cloned().zip(refs.iter().cloned()).collect()),
            );
            if conflict::record(tx, r, table, c)? {
                report.conflicts += 1;
            }
        }
    }
    close_settled(tx, tables)
}

/// Why a row set aside with `values` is refused at once by a foreign key whose
/// parent is deleted and whose delete reaches it, if it is.
pub(crate) fn parent_gone(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    table: &TrackedTable,
    key: &[u8],
    values: &RowValues,
) -> Result<Option<Reason>> {
    for fk in tables.foreign_of(table.id) {
        if !matches!(fk.on_delete, OnDelete::Reach(_)) {
            continue;
        }
        let Some(refs) = references(fk, values) else {
            continue;
        };
        if parent_here(tx, fk, &refs)? {
            continue;
        }
        let deleted = parent_deleted(tx, r, tables, fk, &refs)?;
        let claim = aside::claim(tx, r, table, key, &fk.from)?;
        if let Some(why) = reached(table, fk, &refs, deleted, claim) {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// Closes the open records of rows kept with a missing parent that are valid now
/// (their parent arrived or lives again, they refer elsewhere or are gone), so that
/// a device that saw the child before the parent keeps no record that a device that
/// saw both at once never made.
pub(crate) fn close_settled(tx: &Transaction, tables: &Tables) -> Result<()> {
    let open: Vec<(String, String, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, tbl, key FROM shoal_conflicts c
             WHERE status IN ('pending', 'auto') AND kind = 'constraint'
               AND detail LIKE 'FOREIGN KEY:%'
               AND NOT EXISTS (SELECT 1 FROM shoal_aside a WHERE a.conflict = c.id)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, name, blob) in open {
        let Some(table) = tables.get(&name) else {
            continue;
        };
        let key = crate::sql::key_from_blob(&blob)?;
        let why = match table.sql.read(tx, &key)? {
            None => Some("the row is gone"),
            Some(row) => {
                let values: RowValues = table.columns.iter().cloned().zip(row).collect();
                let mut valid = true;
                for fk in tables.foreign_of(table.id) {
                    if let Some(refs) = references(fk, &values) {
                        valid &= parent_here(tx, fk, &refs)?;
                    }
                }
                valid.then_some("the row refers to a row that is here now")
            }
        };
        if let Some(why) = why {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET status = 'closed', resolution = ?2 WHERE id = ?1",
            )?
            .execute(rusqlite::params![id, why])?;
        }
    }
    Ok(())
}

/// The reason a child is set aside when its parent is deleted and the key's delete
/// reaches it; `None` when it does not.
fn reached(
    table: &TrackedTable,
    fk: &ForeignKey,
    refs: &[Value],
    deleted: Option<Version>,
    claim: Option<Version>,
) -> Option<Reason> {
    let (Some(gone), OnDelete::Reach(action)) = (deleted, fk.on_delete) else {
        return None;
    };
    let described = describe(table, fk, refs, true);
    Some(Reason {
        columns: fk.from.clone(),
        local_values: None,
        local: Some(gone),
        remote: claim,
        detail: format!(
            "FOREIGN KEY: {described} ({action}): the delete reaches it, so it is set aside on every device until its parent lives again or it refers to another (set one, or keep local to delete it)"
        ),
    })
}

fn describe(table: &TrackedTable, fk: &ForeignKey, refs: &[Value], deleted: bool) -> String {
    format!(
        "{}({}) refers to {}({}) {}",
        table.name,
        fk.from.join(", "),
        fk.parent,
        key_text(refs),
        if deleted {
            "whose row was deleted"
        } else {
            "that is not here"
        }
    )
}

/// The values a row refers to by `fk`; `None` when one is NULL (it refers to nothing)
/// or not known.
fn references(fk: &ForeignKey, values: &RowValues) -> Option<Vec<Value>> {
    let refs: Vec<Value> = fk
        .from
        .iter()
        .map(|c| {
            values
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(c))
                .map(|(_, v)| v.clone())
        })
        .collect::<Option<_>>()?;
    (!refs.contains(&Value::Null)).then_some(refs)
}

fn parent_here(tx: &Transaction, fk: &ForeignKey, refs: &[Value]) -> Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
        ident(&fk.parent),
        key_match(&fk.to, 1)
    );
    let binds: Vec<Bind<'_>> = refs.iter().map(Bind).collect();
    Ok(tx
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(&binds), |row| row.get(0))?)
}

/// The delete that ended the parent's life, when the merge rules say the parent `refs`
/// names (by its key) is deleted.
fn parent_deleted(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    fk: &ForeignKey,
    refs: &[Value],
) -> Result<Option<Version>> {
    let Some(parent) = tables.get(&fk.parent) else {
        return Ok(None);
    };
    let Some(key) = in_order(&parent.key_columns, &fk.to, refs) else {
        return Ok(None);
    };
    let state = rows::load(tx, &mut r.columns, parent.id, &key_blob(&key))?;
    if !state.stored || state.alive() {
        return Ok(None);
    }
    state
        .meta
        .event
        .map(|v| v.resolve(&mut r.authors, tx))
        .transpose()
}

/// `values`, given in the order of `names`, in the order of `wanted`; `None` unless
/// both name the same columns.
fn in_order(wanted: &[String], names: &[String], values: &[Value]) -> Option<Vec<Value>> {
    if wanted.len() != names.len() {
        return None;
    }
    wanted
        .iter()
        .map(|w| {
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(w))
                .and_then(|i| values.get(i).cloned())
        })
        .collect()
}

/// The keys of `child`'s rows that refer to `refs` by `fk`.
fn children(
    tx: &Transaction,
    child: &TrackedTable,
    fk: &ForeignKey,
    refs: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let keys: Vec<String> = child.key_columns.iter().map(|c| ident(c)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        keys.join(", "),
        ident(&child.name),
        key_match(&fk.from, 1)
    );
    let binds: Vec<Bind<'_>> = refs.iter().map(Bind).collect();
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

//! Resolving a conflict: a person's choice written as a new local write, through the
//! capture triggers like any of the app's, so that it syncs and closes the record on
//! every device.

use rusqlite::{OptionalExtension, Transaction};
use shoal_core::Value;

use crate::ImportReport;
use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::apply::{self, Incoming};
use crate::merge::aside;
use crate::merge::foreign;
use crate::merge::inbox::{Conflict, ConflictKind, ConflictStatus, Resolution, Side, get};
use crate::merge::tables::Tables;
use crate::sql::key_blob;
use crate::tables::log::{self, LogOp};
use crate::tables::rows;
use crate::tables::table::{self, TrackedTable};

/// Writes what the resolution asks for, through the capture triggers like any app write.
pub(crate) fn resolve(
    tx: &Transaction,
    r: &mut Device,
    id: &str,
    resolution: &Resolution,
) -> Result<()> {
    let c = get(tx, id)?;
    let cannot = |reason: String| StoreError::CannotResolve {
        id: c.id.clone(),
        reason,
    };
    if matches!(c.status, ConflictStatus::Resolved | ConflictStatus::Closed) {
        return Err(StoreError::AlreadySettled {
            id: c.id.clone(),
            status: c.status.to_string(),
            how: c.resolution.clone().unwrap_or_default(),
        });
    }
    let table = table::load_by_name(tx, &c.table)?
        .filter(|t| t.tracked)
        .ok_or_else(|| StoreError::NotTracked {
            table: c.table.clone(),
        })?;
    let side_values = |side: Side| match side {
        Side::Local => c.local_values.clone(),
        Side::Remote => c.remote_values.clone(),
    };
    let blob = key_blob(&c.key);
    let alive = rows::cl(tx, table.id, &blob)? % 2 == 1;
    if let Some((kept, _)) = aside::entry(tx, table.id, &blob)?.filter(|(_, id)| *id == c.id) {
        return resolve_aside(tx, &table, &c, kept, resolution);
    }
    match (c.kind, resolution) {
        (ConflictKind::Constraint, Resolution::Keep(Side::Local)) => Ok(()),
        (ConflictKind::Constraint, Resolution::Keep(Side::Remote)) => {
            let refused: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT refused FROM shoal_conflicts WHERE id = ?1",
                    [&c.id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            // A foreign-key record refused nothing: the row is in place already.
            let Some(refused) = refused else {
                return Ok(());
            };
            let report = reapply(tx, r, &refused)?;
            if report.conflicts > 0 || report.changes_applied == 0 {
                return Err(cannot(format!(
                    "the remote change still breaks a constraint ({}); change the clashing row first, or set other values",
                    c.detail.clone().unwrap_or_default()
                )));
            }
            Ok(())
        }
        (ConflictKind::UpdateDelete, Resolution::Keep(side)) if *side == c.winner && !alive => {
            // The delete stands: re-delete, so that devices holding the record see a
            // write that saw both sides.
            log::append(
                tx,
                table.id,
                &c.key,
                &[(LogOp::Insert, None), (LogOp::Delete, None)],
            )
        }
        (_, Resolution::Keep(side)) => {
            let values = side_values(*side).ok_or_else(|| {
                cannot(format!(
                    "the {} side deleted the row; keep the other side or set values",
                    side.as_str()
                ))
            })?;
            write(tx, &table, &c.key, &values, &c.columns, alive).map_err(|e| cannot(e.to_string()))
        }
        (_, Resolution::Set(values)) => {
            for (col, _) in values {
                if !table.columns.iter().any(|c| c.eq_ignore_ascii_case(col)) {
                    return Err(cannot(format!(
                        "{:?} has no column {col:?} to set",
                        table.name
                    )));
                }
            }
            write(tx, &table, &c.key, values, &c.columns, alive).map_err(|e| cannot(e.to_string()))
        }
    }
}

/// Settles a row set aside by a constraint with a write every device applies: keeping
/// the row that holds the value deletes the one set aside; keeping the one set aside,
/// or setting values, puts it back into its table, if nothing refuses it now.
fn resolve_aside(
    tx: &Transaction,
    table: &TrackedTable,
    c: &Conflict,
    mut kept: aside::RowValues,
    resolution: &Resolution,
) -> Result<()> {
    let blob = key_blob(&c.key);
    let set = match resolution {
        Resolution::Keep(Side::Local) => {
            log::append(tx, table.id, &c.key, &[(LogOp::Delete, None)])?;
            return aside::release(tx, table.id, &blob, "the row set aside was deleted");
        }
        Resolution::Keep(Side::Remote) => &[][..],
        Resolution::Set(values) => &values[..],
    };
    for (col, value) in set {
        let Some(name) = table.columns.iter().find(|n| n.eq_ignore_ascii_case(col)) else {
            return Err(StoreError::CannotResolve {
                id: c.id.clone(),
                reason: format!("{:?} has no column {col:?} to set", table.name),
            });
        };
        match kept.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, v)) => *v = value.clone(),
            None => kept.push((name.clone(), value.clone())),
        }
    }
    log::uncaptured(tx, || Ok(table.sql.insert(tx, &c.key, &kept)))?.map_err(|e| {
        StoreError::CannotResolve {
            id: c.id.clone(),
            reason: format!(
                "the row still breaks a constraint ({e}); change the row that holds the value first, or set other values"
            ),
        }
    })?;
    let ops: Vec<(LogOp, Option<&str>)> = kept
        .iter()
        .map(|(c, _)| (LogOp::Update, Some(c.as_str())))
        .collect();
    log::append(tx, table.id, &c.key, &ops)?;
    aside::release(tx, table.id, &blob, "put back into its table")
}

/// Writes `values` to the row (re-inserting it when it is deleted) and logs every
/// column, so that even a value equal to the current one goes out as a new write.
fn write(
    tx: &Transaction,
    table: &TrackedTable,
    key: &[Value],
    values: &[(String, Value)],
    disputed: &[String],
    alive: bool,
) -> Result<()> {
    if !alive {
        table.sql.insert(tx, key, values)?;
        return Ok(());
    }
    table
        .sql
        .update(tx, key, &values.iter().collect::<Vec<_>>())?;
    // Every disputed column is written, those not set with the value they hold:
    // a write that saw every losing value closes the record on every device.
    let mut ops: Vec<(LogOp, Option<&str>)> = values
        .iter()
        .map(|(c, _)| (LogOp::Update, Some(c.as_str())))
        .collect();
    for c in disputed {
        if !values.iter().any(|(v, _)| v.eq_ignore_ascii_case(c)) {
            ops.push((LogOp::Update, Some(c.as_str())));
        }
    }
    log::append(tx, table.id, key, &ops)
}

pub(crate) fn mark_resolved(tx: &Transaction, id: &str, resolution: &Resolution) -> Result<()> {
    let text = match resolution {
        Resolution::Keep(side) => format!("kept the {} side", side.as_str()),
        Resolution::Set(values) => {
            let parts: Vec<String> = values
                .iter()
                .map(|(c, v)| format!("{c} = {}", v.to_sql_literal()))
                .collect();
            format!("set {}", parts.join(", "))
        }
    };
    tx.execute(
        "UPDATE shoal_conflicts SET status = 'resolved', resolution = ?2 WHERE id = ?1",
        rusqlite::params![id, text],
    )?;
    Ok(())
}
/// Re-applies a change that a constraint refused, after a person asked for it.
fn reapply(tx: &Transaction, r: &mut Device, refused: &[u8]) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let inc = postcard::from_bytes::<Incoming>(refused).map_err(|e| StoreError::Damaged {
        what: "a refused change kept with a conflict".into(),
        detail: e.to_string(),
    })?;
    let tables = Tables::load(tx)?;
    log::uncaptured(tx, || {
        apply::apply(tx, r, &tables, inc, &mut report)?;
        foreign::check(tx, r, &tables, &mut report)
    })?;
    Ok(report)
}

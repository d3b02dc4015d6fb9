//! Trying the rows set aside again once a batch is in: a row whose clash is gone goes
//! back into its table, one whose parent is still deleted stays aside.

use rusqlite::Transaction;

use crate::ImportReport;
use crate::device::Device;
use crate::error::Result;
use crate::merge::tables::Tables;
use crate::merge::{aside, foreign};
use crate::sql::key_from_blob;
use crate::tables::rows;

/// Tries every row set aside again, as the import that may have removed its clash
/// ends; a row that nothing refuses any more goes back into its table.
pub(crate) fn settle(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    report: &mut ImportReport,
) -> Result<()> {
    if !aside::any(tx)? {
        return Ok(());
    }
    for _ in 0..aside::ROUNDS {
        let mut moved = false;
        for (tbl, blob) in aside::keys(tx)? {
            let Some(table) = tables.by_id(tbl) else {
                continue;
            };
            // An earlier row of this round may have placed or released it.
            let Some(values) = aside::get(tx, tbl, &blob)? else {
                continue;
            };
            let key = key_from_blob(&blob)?;
            if rows::cl(tx, tbl, &blob)? % 2 == 0 {
                aside::release(tx, tbl, &blob, "the row was deleted")?;
                moved = true;
            } else if table.sql.read(tx, &key)?.is_some() {
                aside::release(tx, tbl, &blob, "the row was written again here")?;
                moved = true;
            } else if let Some(why) = foreign::parent_gone(tx, r, tables, table, &blob, &values)? {
                // Its parent is still deleted: it stays aside, its record up to date
                // with what it holds now.
                aside::set_aside(tx, r, table, &key, &values, why, report)?;
            } else if aside::place(tx, r, table, &key, values, None, report)? {
                // Back in its table: its foreign keys are checked with the rest.
                tables.note_written(table, &key, aside::no_version());
                aside::release(
                    tx,
                    tbl,
                    &blob,
                    "nothing refuses the row any more: it is back in its table",
                )?;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    Ok(())
}

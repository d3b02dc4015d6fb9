//! Applying remote row changes to the app's tables by the merge rules, recording what
//! loses in the conflict inbox and holding what cannot be applied yet.

use std::collections::BTreeMap;
use std::rc::Rc;

use rusqlite::Transaction;
use serde::{Deserialize, Serialize};
use shoal_core::merge::{RowAction, concurrent, row_action};
use shoal_core::{Op, Value, Version};

use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::aside::{self, RowValues};
use crate::merge::conflict::{self, NewConflict};
use crate::merge::inbox::{ConflictKind, Side};
use crate::merge::tables::Tables;
use crate::report::ImportReport;
use crate::sql::key_blob;
use crate::tables::follow;
use crate::tables::held::{self, Held};
use crate::tables::row_sql::Cell;
use crate::tables::rows::{self, CellMeta, RowMeta, RowState, Ver};
use crate::tables::table::TrackedTable;

/// A row change with every version spelled out, independent of the commit it came in.
/// Held changes are stored in this form. Names are shared with the other changes of
/// the same commit, not copied for each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Incoming {
    pub(crate) table: Rc<str>,
    pub(crate) key_columns: Rc<[String]>,
    pub(crate) key: Vec<Value>,
    pub(crate) op: Op,
    pub(crate) cl: u64,
    pub(crate) version: Version,
    pub(crate) seen: Option<Version>,
    pub(crate) cells: Vec<IncomingCell>,
}

/// One column written by an incoming change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IncomingCell {
    pub(crate) column: Rc<str>,
    pub(crate) value: Value,
    pub(crate) overwrote: Option<Version>,
}

impl Cell for IncomingCell {
    fn column(&self) -> &str {
        &self.column
    }
    fn value(&self) -> &Value {
        &self.value
    }
}

/// Reads back a held change.
pub(crate) fn held_change(h: &Held) -> Result<Incoming> {
    postcard::from_bytes(&h.change).map_err(|e| StoreError::Damaged {
        what: format!("held change {} of table {:?}", h.id, h.table),
        detail: e.to_string(),
    })
}

/// Tries every held change again; those still not applicable are held anew.
pub(crate) fn retry_held(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    report: &mut ImportReport,
) -> Result<()> {
    for h in held::all(tx)? {
        if tables.get(&h.table).is_none() {
            continue;
        }
        let incoming = held_change(&h)?;
        held::remove(tx, h.id)?;
        let held_before = report.held;
        apply(tx, r, tables, incoming, report)?;
        if report.held == held_before {
            report.held_applied += 1;
        } else {
            report.held -= 1;
        }
    }
    Ok(())
}

/// Applies one remote row change: held if its table or columns are not here as it
/// names them, merged otherwise.
pub(crate) fn apply(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    inc: Incoming,
    report: &mut ImportReport,
) -> Result<()> {
    Merger {
        tx,
        r,
        tables,
        report,
    }
    .apply(inc)
}

/// One merge over a transaction: what every row action reads and adds to.
pub(crate) struct Merger<'m, 'c> {
    pub(crate) tx: &'m Transaction<'c>,
    pub(crate) r: &'m mut Device,
    pub(crate) tables: &'m Tables,
    pub(crate) report: &'m mut ImportReport,
}

/// A remote change to one row, as the row actions take it.
struct Change<'a> {
    table: &'a TrackedTable,
    inc: &'a Incoming,
    /// The row's key as `shoal_rows` keeps it.
    blob: Vec<u8>,
    /// The change's version, as `shoal_rows` numbers it.
    ver: Ver,
}

/// A write a constraint refused: the row's values, placed by the rule once its merge
/// state is saved.
type Clash = Option<(RowValues, rusqlite::Error)>;

impl Merger<'_, '_> {
    /// Applies one remote row change, as [`apply`] does.
    pub(crate) fn apply(&mut self, mut inc: Incoming) -> Result<()> {
        let tables = self.tables;
        let Some(table) = tables.get(&inc.table) else {
            let reason = if tables.refused.contains(&inc.table.to_lowercase()) {
                format!(
                    "the schema of table {:?} changed here in a way Shoal does not follow (see `shoal status`)",
                    &*inc.table
                )
            } else {
                format!("table {:?} is not tracked here", &*inc.table)
            };
            return self.hold(&inc, &reason);
        };
        let same_key = follow::same_names(&inc.key_columns, &table.key_columns);
        if !same_key {
            let reason = format!(
                "the primary key here is ({}), the change's is ({})",
                table.key_columns.join(", "),
                inc.key_columns.join(", ")
            );
            return self.hold(&inc, &reason);
        }
        let mut unknown = Vec::new();
        let mut known = Vec::new();
        for mut cell in std::mem::take(&mut inc.cells) {
            match table
                .columns
                .iter()
                .find(|c| c.eq_ignore_ascii_case(&cell.column))
            {
                Some(local) => {
                    if **local != *cell.column {
                        cell.column = Rc::from(local.as_str());
                    }
                    known.push(cell);
                }
                None => unknown.push(cell),
            }
        }
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|c| &*c.column).collect();
            let reason = format!("column(s) {} not in the local table", names.join(", "));
            let part = Incoming {
                op: Op::Update,
                cells: unknown,
                ..inc.clone()
            };
            self.hold(&part, &reason)?;
            if inc.op == Op::Update && known.is_empty() {
                return Ok(());
            }
        }
        inc.cells = known;
        self.merge(table, &inc)
    }

    /// Merges a change to a table that has its key and columns, by what the row's
    /// merge state says of it.
    fn merge(&mut self, table: &TrackedTable, inc: &Incoming) -> Result<()> {
        let row = Change {
            table,
            inc,
            blob: key_blob(&inc.key),
            ver: Ver::of(inc.version, &mut self.r.authors, self.tx)?,
        };
        if inc.op == Op::Insert && self.insert_new(&row)? {
            return Ok(());
        }
        let mut state = rows::load(self.tx, &mut self.r.columns, table.id, &row.blob)?;
        let clash = match row_action(state.cl, inc.op, inc.cl) {
            RowAction::Duplicate => return self.duplicate(&row, state),
            RowAction::Hold => {
                return self.hold(inc, "waiting for the insert that starts this row's life");
            }
            RowAction::Stale => return self.stale(&row, state),
            RowAction::Replace if inc.op == Op::Delete => {
                self.delete(&row, &mut state)?;
                None
            }
            RowAction::Replace => self.reinsert(&row, &mut state)?,
            RowAction::MergeCells => self.merge_cells(&row, &mut state)?,
        };
        rows::save(self.tx, &mut self.r.columns, table.id, &row.blob, &state)?;
        if let Some((values, e)) = clash {
            self.tables.aside.set(true);
            aside::place(
                self.tx,
                self.r,
                table,
                &inc.key,
                values,
                Some(e),
                self.report,
            )?;
        }
        self.applied(&row)
    }

    /// A delete of a life already deleted here.
    fn duplicate(&mut self, row: &Change<'_>, mut state: RowState) -> Result<()> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        // Two devices deleted the same life of a row: the later delete is the one
        // on record, whichever arrived first, so that every device agrees on it.
        // What the row's deleters had seen, together, is what lost to none of them:
        // a write one of them had seen lost to no delete.
        if inc.op == Op::Delete && state.stored && !state.alive() {
            let event = state
                .meta
                .event
                .map(|v| v.resolve(&mut self.r.authors, tx))
                .transpose()?;
            let seen = state
                .meta
                .seen
                .map(|v| v.resolve(&mut self.r.authors, tx))
                .transpose()?;
            let later = event.is_none_or(|e| inc.version > e);
            if later {
                state.meta.event = Some(ver);
            }
            if inc.seen > seen {
                state.meta.seen = inc
                    .seen
                    .map(|v| Ver::of(v, &mut self.r.authors, tx))
                    .transpose()?;
                conflict::deleter_saw(tx, self.r, &table.name, blob, state.cl, inc.seen)?;
            }
            if later || inc.seen > seen {
                rows::save(tx, &mut self.r.columns, table.id, blob, &state)?;
            }
        }
        Ok(())
    }

    /// A write of a life a later delete or insert has ended here.
    fn stale(&mut self, row: &Change<'_>, mut state: RowState) -> Result<()> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        // A write of the life a delete ended, that the deleter had not seen, lost to it.
        if inc.op != Op::Delete && !state.alive() && state.cl == inc.cl + 1 {
            let seen = state
                .meta
                .seen
                .map(|v| v.resolve(&mut self.r.authors, tx))
                .transpose()?;
            // A deleted row keeps, for each column, the newest version that any write
            // of its last life known here had seen: a write one of them had seen
            // stands in no conflict, whichever came first.
            let mut columns = Vec::new();
            let mut raised = false;
            for cell in &inc.cells {
                if !table
                    .columns
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(&cell.column))
                {
                    continue;
                }
                let known = state.meta.cell(&cell.column).map(|c| c.overwrote);
                let seen_here = known
                    .flatten()
                    .map(|o| o.resolve(&mut self.r.authors, tx))
                    .transpose()?;
                if concurrent(inc.version, seen_here) {
                    columns.push(cell.column.to_string());
                }
                if cell.overwrote > seen_here || known.is_none() {
                    let overwrote = cell.overwrote.max(seen_here);
                    let overwrote = overwrote
                        .map(|o| Ver::of(o, &mut self.r.authors, tx))
                        .transpose()?;
                    match state
                        .meta
                        .cells
                        .iter_mut()
                        .find(|c| c.column.eq_ignore_ascii_case(&cell.column))
                    {
                        Some(c) => c.overwrote = overwrote,
                        None => state.meta.cells.push(CellMeta {
                            column: cell.column.to_string(),
                            version: ver,
                            overwrote,
                        }),
                    }
                    raised = true;
                }
            }
            if raised {
                rows::save(tx, &mut self.r.columns, table.id, blob, &state)?;
            }
            if concurrent(inc.version, seen) && !columns.is_empty() {
                let local = state
                    .meta
                    .event
                    .map(|v| v.resolve(&mut self.r.authors, tx))
                    .transpose()?;
                self.record(
                    table,
                    NewConflict::write(
                        ConflictKind::UpdateDelete,
                        &inc.key,
                        state.cl,
                        columns,
                        Side::Local,
                        local,
                        inc.version,
                    )
                    .values(None, Some(pairs(&inc.cells))),
                )?;
            }
            // Its author had seen what it overwrote: a record of that write lost to
            // the same delete is moot, as where the two came in the other order.
            self.close_superseded(row)?;
        }
        Ok(())
    }

    /// A delete of the row's life here, or of a later one.
    fn delete(&mut self, row: &Change<'_>, state: &mut RowState) -> Result<()> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        if state.alive() {
            // A delete that ends this very life: each write of it the deleter had
            // not seen lost, with the columns it holds. (One that ends a later life,
            // unknown here, is no more in conflict with this one than where this
            // life's writes arrive after it.)
            let ends_this_life = inc.cl == state.cl + 1;
            if ends_this_life {
                conflict::life_ended(tx, self.r, &table.name, blob, inc.cl, inc.seen)?;
            }
            let mut lost: BTreeMap<Version, Vec<String>> = BTreeMap::new();
            // A column of the merge state not tracked here now (renamed, and the
            // table tracked under its new name) is kept aside in the record.
            for cell in state.meta.cells.iter().filter(|_| ends_this_life) {
                let v = cell.version.resolve(&mut self.r.authors, tx)?;
                if concurrent(v, inc.seen) {
                    lost.entry(v).or_default().push(cell.column.clone());
                }
            }
            let before = if lost.is_empty() {
                None
            } else {
                table.sql.read(tx, &inc.key)?
            };
            for (v, columns) in lost {
                self.record(
                    table,
                    NewConflict::write(
                        ConflictKind::UpdateDelete,
                        &inc.key,
                        inc.cl,
                        columns,
                        Side::Remote,
                        Some(v),
                        inc.version,
                    )
                    // The whole row, so that keeping this side brings it back.
                    .values(
                        before.as_ref().map(|row| {
                            table
                                .columns
                                .iter()
                                .cloned()
                                .zip(row.iter().cloned())
                                .collect()
                        }),
                        None,
                    ),
                )?;
            }
            table.sql.delete(tx, &inc.key)?;
            if self.tables.aside.get() {
                aside::release(tx, table.id, blob, "the row was deleted")?;
            }
        }
        // Its children are checked even when the row never lived here: one that
        // arrived before it is reached by its delete as on a device that saw both.
        self.tables.note_deleted(table, &inc.key);
        *state = RowState {
            stored: state.stored,
            cl: inc.cl,
            meta: RowMeta {
                event: Some(ver),
                seen: inc
                    .seen
                    .map(|v| Ver::of(v, &mut self.r.authors, tx))
                    .transpose()?,
                // What the life's writes had seen stays, for writes of it that
                // arrive late.
                cells: std::mem::take(&mut state.meta.cells),
            },
        };
        Ok(())
    }

    /// An insert that starts a life later than the row's here.
    fn reinsert(&mut self, row: &Change<'_>, state: &mut RowState) -> Result<Clash> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        let mut clash = None;
        if self.tables.aside.get() {
            aside::release(tx, table.id, blob, "a new insert of the row took its place")?;
        }
        if let Err(e) = table.sql.upsert(tx, &inc.key, &inc.cells) {
            clash = Some((pairs(&inc.cells), e));
        }
        *state = RowState {
            stored: state.stored,
            cl: inc.cl,
            meta: inserted_meta(tx, self.r, inc, ver)?,
        };
        Ok(clash)
    }

    /// A write of the row's life here: each column goes to the newer write.
    fn merge_cells(&mut self, row: &Change<'_>, state: &mut RowState) -> Result<Clash> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        let mut clash = None;
        let event = state
            .meta
            .event
            .map(|v| v.resolve(&mut self.r.authors, tx))
            .transpose()?;
        let collision = inc.op == Op::Insert && event != Some(inc.version);
        // The insert that loses a collision: the record of the collision is its.
        let losing_insert = collision.then(|| event.min(Some(inc.version))).flatten();
        let mut winners: Vec<(&IncomingCell, Option<Version>)> = Vec::new();
        // Each write that lost a column here to a write that had not seen it, with
        // those columns, and the write it lost to.
        let mut lost: BTreeMap<Version, (Vec<String>, Version)> = BTreeMap::new();
        // Cells whose newest version seen rises with a write that lost to them.
        let mut seen_rises: Vec<(String, Option<Version>)> = Vec::new();
        for cell in &inc.cells {
            let Some(local) = state.meta.cell(&cell.column) else {
                winners.push((cell, cell.overwrote));
                continue;
            };
            let lv = local.version.resolve(&mut self.r.authors, tx)?;
            if inc.version == lv {
                continue;
            }
            // The newest version of the cell that any write known here had seen.
            let lp = local
                .overwrote
                .map(|o| o.resolve(&mut self.r.authors, tx))
                .transpose()?;
            let seen = lp.max(cell.overwrote);
            if inc.version > lv {
                winners.push((cell, seen));
                if concurrent(lv, cell.overwrote) {
                    let e = lost.entry(lv).or_insert_with(|| (Vec::new(), inc.version));
                    e.0.push(cell.column.to_string());
                }
            } else {
                if concurrent(inc.version, seen) {
                    let e = lost.entry(inc.version).or_insert_with(|| (Vec::new(), lv));
                    e.0.push(cell.column.to_string());
                    e.1 = e.1.max(lv);
                }
                if seen > lp {
                    seen_rises.push((cell.column.to_string(), seen));
                }
            }
        }
        let before = if !lost.is_empty() {
            table.sql.read(tx, &inc.key)?
        } else {
            None
        };
        let kept = if self.tables.aside.get() {
            aside::get(tx, table.id, blob)?
        } else {
            None
        };
        // An entry for a row that is in its table after all is stale: the table
        // takes the change.
        let kept = match kept {
            Some(_) if table.sql.read(tx, &inc.key)?.is_some() => {
                aside::release(tx, table.id, blob, "the row is in its table again")?;
                None
            }
            kept => kept,
        };
        let winning: Vec<&IncomingCell> = winners.iter().map(|(c, _)| *c).collect();
        if let Some(values) = kept {
            // The row is set aside: its kept values take the change.
            let cells: Vec<(&str, &Value)> =
                winning.iter().map(|c| (&*c.column, &c.value)).collect();
            aside::update(tx, table.id, blob, values, &cells)?;
        } else if !winning.is_empty()
            && let Err(e) = table.sql.update(tx, &inc.key, &winning)
        {
            let mut values: RowValues = table
                .columns
                .iter()
                .cloned()
                .zip(table.sql.read(tx, &inc.key)?.unwrap_or_default())
                .collect();
            for cell in &winning {
                if let Some((_, v)) = values
                    .iter_mut()
                    .find(|(c, _)| c.eq_ignore_ascii_case(&cell.column))
                {
                    *v = cell.value.clone();
                }
            }
            clash = Some((values, e));
        }
        let local_values = |cols: &[String]| -> Option<Vec<(String, Value)>> {
            let before = before.as_ref()?;
            Some(
                table
                    .columns
                    .iter()
                    .zip(before)
                    .filter(|(c, _)| cols.iter().any(|x| x == *c))
                    .map(|(c, v)| (c.clone(), v.clone()))
                    .collect(),
            )
        };
        if let Some(loser) = losing_insert {
            conflict::lost_life(tx, self.r, &table.name, blob, inc.cl, loser)?;
        }
        for (loser, (columns, winner)) in lost {
            let (side, local, remote) = if loser == inc.version {
                (Side::Local, Some(winner), inc.version)
            } else {
                (Side::Remote, Some(loser), inc.version)
            };
            let kind = if Some(loser) == losing_insert {
                ConflictKind::InsertCollision
            } else {
                ConflictKind::ConcurrentWrite
            };
            let remote_values: Vec<(String, Value)> = pairs(&inc.cells)
                .into_iter()
                .filter(|(c, _)| columns.contains(c))
                .collect();
            let local_values = local_values(&columns);
            self.record(
                table,
                NewConflict::write(kind, &inc.key, inc.cl, columns, side, local, remote)
                    .values(local_values, Some(remote_values)),
            )?;
        }
        if collision {
            // The incarnation's creator is the winning insert, the same everywhere.
            let creator = event.max(Some(inc.version));
            state.meta.event = creator
                .map(|v| Ver::of(v, &mut self.r.authors, tx))
                .transpose()?;
        }
        for (cell, seen) in winners {
            let seen = seen
                .map(|o| Ver::of(o, &mut self.r.authors, tx))
                .transpose()?;
            state.meta.set_cell(&cell.column, ver, seen);
        }
        for (column, seen) in seen_rises {
            let seen = seen
                .map(|o| Ver::of(o, &mut self.r.authors, tx))
                .transpose()?;
            if let Some(c) = state
                .meta
                .cells
                .iter_mut()
                .find(|c| c.column.eq_ignore_ascii_case(&column))
            {
                c.overwrote = seen;
            }
        }
        Ok(clash)
    }

    /// An insert of a row this file has never seen, the bulk of a first sync, takes
    /// its place in `shoal_rows` in one statement instead of a lookup and a write.
    /// Returns false, having changed nothing, when the row is known after all.
    fn insert_new(&mut self, row: &Change<'_>) -> Result<bool> {
        let (tx, table, inc, blob, ver) = (self.tx, row.table, row.inc, &row.blob[..], row.ver);
        let state = RowState {
            stored: false,
            cl: inc.cl,
            meta: inserted_meta(tx, self.r, inc, ver)?,
        };
        if !rows::claim(tx, &mut self.r.columns, table.id, blob, &state)? {
            return Ok(false);
        }
        if let Err(e) = table.sql.upsert(tx, &inc.key, &inc.cells) {
            self.tables.aside.set(true);
            aside::place(
                tx,
                self.r,
                table,
                &inc.key,
                pairs(&inc.cells),
                Some(e),
                self.report,
            )?;
        }
        self.applied(row)?;
        Ok(true)
    }

    /// What follows every applied change: noting it for the foreign-key check,
    /// closing conflicts it settles, counting it.
    fn applied(&mut self, row: &Change<'_>) -> Result<()> {
        let (table, inc) = (row.table, row.inc);
        self.tables.note_written(table, &inc.key, inc.version);
        self.close_superseded(row)?;
        self.report.changes_applied += 1;
        Ok(())
    }

    /// Closes the open records on the row that `row` makes moot. An insert settles
    /// no column: one that starts a later life closes that life's records, and one
    /// that keeps its life is a row given to a group anew, nobody's new write.
    fn close_superseded(&mut self, row: &Change<'_>) -> Result<()> {
        if self.r.open_conflicts == Some(false) {
            return Ok(());
        }
        let inc = row.inc;
        let written: Vec<(&str, Option<Version>)> = match inc.op {
            Op::Insert => Vec::new(),
            Op::Update | Op::Delete => inc
                .cells
                .iter()
                .map(|c| (&*c.column, c.overwrote))
                .collect(),
        };
        conflict::close_superseded(
            self.tx,
            self.r,
            &row.table.name,
            &row.blob,
            inc.cl,
            &written,
            inc.version,
        )
    }

    fn record(&mut self, table: &TrackedTable, c: NewConflict<'_>) -> Result<()> {
        if conflict::record(self.tx, self.r, table, c)? {
            self.report.conflicts += 1;
        }
        Ok(())
    }

    fn hold(&mut self, inc: &Incoming, reason: &str) -> Result<()> {
        held::hold(
            self.tx,
            &inc.table,
            reason,
            &postcard::to_stdvec(inc).unwrap_or_default(),
        )?;
        self.report.held += 1;
        Ok(())
    }
}

/// The merge state of a row that an insert has just (re)started.
fn inserted_meta(tx: &Transaction, r: &mut Device, inc: &Incoming, ver: Ver) -> Result<RowMeta> {
    let mut cells = Vec::with_capacity(inc.cells.len());
    for c in &inc.cells {
        cells.push(CellMeta {
            column: c.column.to_string(),
            version: ver,
            overwrote: c
                .overwrote
                .map(|o| Ver::of(o, &mut r.authors, tx))
                .transpose()?,
        });
    }
    Ok(RowMeta {
        event: Some(ver),
        seen: None,
        cells,
    })
}

fn pairs(cells: &[IncomingCell]) -> Vec<(String, Value)> {
    cells
        .iter()
        .map(|c| (c.column.to_string(), c.value.clone()))
        .collect()
}

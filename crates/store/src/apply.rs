//! Applying remote row changes to the app's tables by the merge rules, recording what
//! loses in the conflict inbox and holding what cannot be applied yet.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use std::collections::BTreeMap;

use rusqlite::Transaction;
use rusqlite::config::DbConfig;
use serde::{Deserialize, Serialize};
use shoal_core::merge::{RowAction, concurrent, row_action};
use shoal_core::{Op, Value, Version};

use crate::Replica;
use crate::aside::{self, RowValues};
use crate::conflict::{self, ConflictKind, NewConflict, Side};
use crate::error::{Result, StoreError};
use crate::foreign::{self, ForeignKey};
use crate::import::ImportReport;
use crate::rows::{self, CellMeta, RowMeta, RowState, Ver};
use crate::seal::read_row;
use crate::sql::{Bind, ident, key_blob, key_match};
use crate::table::TrackedTable;

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

/// A row of a tracked table: the table's id and the row's key.
pub(crate) type RowRef = (i64, Vec<Value>);

/// The tracked tables by lower-cased name, loaded once per transaction, with the
/// foreign keys of each and the rows this transaction wrote to tables that have any.
pub(crate) struct Tables {
    by_name: HashMap<String, TrackedTable>,
    /// Tracked tables, by lower-cased name, whose schema changed here in a way Shoal
    /// does not follow by itself.
    refused: HashSet<String>,
    foreign: HashMap<i64, Vec<ForeignKey>>,
    /// Rows written to tables with foreign keys, checked once the whole batch is in,
    /// so that a child arriving before its parent in one batch is no violation.
    written: RefCell<Vec<(i64, Vec<Value>, Version)>>,
    /// Lower-cased names of the tables some foreign key refers to.
    referred: HashSet<String>,
    /// Rows deleted from those, whose children are checked with the rest.
    deleted: RefCell<Vec<RowRef>>,
    /// Whether any row may be set aside (`shoal_aside`): only then is it looked in.
    aside: Cell<bool>,
}

impl Tables {
    /// The tables tracked now, whose remote changes are applied.
    pub(crate) fn load(tx: &Transaction) -> Result<Tables> {
        Tables::load_some(tx, false)
    }

    /// The tables tracked now and those untracked for now whose columns are still
    /// the ones Shoal knows: taking back a revoked device's commits reaches both.
    pub(crate) fn load_with_untracked(tx: &Transaction) -> Result<Tables> {
        Tables::load_some(tx, true)
    }

    fn load_some(tx: &Transaction, untracked: bool) -> Result<Tables> {
        let mut by_name = HashMap::new();
        let mut foreign = HashMap::new();
        let mut refused = HashSet::new();
        for t in crate::table::load_all(tx)?
            .into_iter()
            .filter(|t| t.tracked || untracked)
        {
            // A table whose schema changed here in a way Shoal does not follow gets no
            // remote changes: they are held until it is sorted out. (An untracked
            // table has no triggers: only its columns are compared.)
            let change = if t.tracked {
                crate::follow::change(tx, &t.as_tracked())?
            } else {
                crate::follow::columns_change(tx, &t.as_tracked())?
            };
            if change.is_some() {
                refused.insert(t.name.to_lowercase());
                continue;
            }
            let keys = foreign::load(tx, &t.name)?;
            if !keys.is_empty() {
                foreign.insert(t.id, keys);
            }
            by_name.insert(t.name.to_lowercase(), t);
        }
        let referred = foreign
            .values()
            .flatten()
            .map(|fk: &ForeignKey| fk.parent.to_lowercase())
            .collect();
        Ok(Tables {
            by_name,
            refused,
            foreign,
            written: RefCell::new(Vec::new()),
            referred,
            deleted: RefCell::new(Vec::new()),
            aside: Cell::new(aside::any(tx)?),
        })
    }

    /// The tracked table with Shoal's id `id`.
    pub(crate) fn by_id(&self, id: i64) -> Option<&TrackedTable> {
        self.by_name.values().find(|t| t.id == id)
    }

    /// Whether the tracked table `name` changed here in a way Shoal does not follow.
    pub(crate) fn is_refused(&self, name: &str) -> bool {
        self.refused.contains(&name.to_lowercase())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&TrackedTable> {
        match self.by_name.get(name) {
            Some(t) => Some(t),
            None => self.by_name.get(&name.to_lowercase()),
        }
    }

    pub(crate) fn note_written(&self, table: &TrackedTable, key: &[Value], version: Version) {
        if self.foreign.contains_key(&table.id) {
            self.written
                .borrow_mut()
                .push((table.id, key.to_vec(), version));
        }
    }

    /// As [`Tables::note_written`], for a key as it is stored.
    pub(crate) fn note_written_blob(
        &self,
        table: &TrackedTable,
        key: &[u8],
        version: Version,
    ) -> Result<()> {
        if self.foreign.contains_key(&table.id) {
            self.written
                .borrow_mut()
                .push((table.id, crate::sql::key_from_blob(key)?, version));
        }
        Ok(())
    }

    /// Checks the rows of this transaction that a foreign key may refuse (see
    /// [`foreign::check`]).
    pub(crate) fn check_foreign_keys(
        &self,
        tx: &Transaction,
        r: &mut Replica,
        report: &mut ImportReport,
    ) -> Result<()> {
        foreign::check(tx, r, self, report)
    }

    /// The foreign keys of the tracked table `id`.
    pub(crate) fn foreign_of(&self, id: i64) -> &[ForeignKey] {
        self.foreign.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Every tracked table's foreign keys that refer to `parent`.
    pub(crate) fn children_of<'a>(
        &'a self,
        parent: &'a str,
    ) -> impl Iterator<Item = (&'a TrackedTable, &'a ForeignKey)> + 'a {
        self.foreign.iter().flat_map(move |(id, fks)| {
            let child = self.by_id(*id);
            fks.iter()
                .filter(move |fk| fk.parent.eq_ignore_ascii_case(parent))
                .filter_map(move |fk| child.map(|c| (c, fk)))
        })
    }

    /// Notes a row deleted in this transaction whose table other tables refer to:
    /// the delete may reach their rows.
    pub(crate) fn note_deleted(&self, table: &TrackedTable, key: &[Value]) {
        if self.referred.contains(&table.name.to_lowercase()) {
            self.deleted.borrow_mut().push((table.id, key.to_vec()));
        }
    }

    /// The rows written and deleted since the last check, taken.
    pub(crate) fn take_touched(&self) -> (Vec<RowRef>, Vec<RowRef>) {
        let written = std::mem::take(&mut *self.written.borrow_mut())
            .into_iter()
            .map(|(t, k, _)| (t, k))
            .collect();
        (written, std::mem::take(&mut *self.deleted.borrow_mut()))
    }

    /// Notes that a row may be set aside now.
    pub(crate) fn note_aside(&self) {
        self.aside.set(true);
    }
}

/// Reads back the held change `id` of `table`.
pub(crate) fn held_change(id: i64, table: &str, blob: &[u8]) -> Result<Incoming> {
    postcard::from_bytes(blob).map_err(|e| StoreError::Damaged {
        what: format!("held change {id} of table {table:?}"),
        detail: e.to_string(),
    })
}

/// Tries every held change again; those still not applicable are held anew.
pub(crate) fn retry_held(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    report: &mut ImportReport,
) -> Result<()> {
    let held: Vec<(i64, String, Vec<u8>)> = {
        let mut stmt = tx.prepare_cached("SELECT id, tbl, change FROM shoal_held ORDER BY id")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    for (id, table, blob) in held {
        if tables.get(&table).is_none() {
            continue;
        }
        let incoming = held_change(id, &table, &blob)?;
        tx.prepare_cached("DELETE FROM shoal_held WHERE id = ?1")?
            .execute([id])?;
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

pub(crate) fn apply(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    mut inc: Incoming,
    report: &mut ImportReport,
) -> Result<()> {
    let Some(table) = tables.get(&inc.table) else {
        let reason = if tables.refused.contains(&inc.table.to_lowercase()) {
            format!(
                "the schema of table {:?} changed here in a way Shoal does not follow (see `shoal status`)",
                &*inc.table
            )
        } else {
            format!("table {:?} is not tracked here", &*inc.table)
        };
        return hold(tx, &inc, &reason, report);
    };
    let same_key = crate::follow::same_names(&inc.key_columns, &table.key_columns);
    if !same_key {
        let reason = format!(
            "the primary key here is ({}), the change's is ({})",
            table.key_columns.join(", "),
            inc.key_columns.join(", ")
        );
        return hold(tx, &inc, &reason, report);
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
        hold(tx, &part, &reason, report)?;
        if inc.op == Op::Update && known.is_empty() {
            return Ok(());
        }
    }
    inc.cells = known;
    merge(tx, r, tables, table, inc, report)
}

fn merge(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    table: &TrackedTable,
    inc: Incoming,
    report: &mut ImportReport,
) -> Result<()> {
    let blob = key_blob(&inc.key);
    let ver = Ver::of(inc.version, &mut r.authors, tx)?;
    if inc.op == Op::Insert && insert_new(tx, r, tables, table, &inc, &blob, ver, report)? {
        return Ok(());
    }
    let mut state = rows::load(tx, &mut r.columns, table.id, &blob)?;
    // A write a constraint refused: the row's values, placed by the rule once its
    // merge state is saved.
    let mut clash: Option<(RowValues, rusqlite::Error)> = None;
    match row_action(state.cl, inc.op, inc.cl) {
        RowAction::Duplicate => {
            // Two devices deleted the same life of a row: the later delete is the one
            // on record, whichever arrived first, so that every device agrees on it.
            // What the row's deleters had seen, together, is what lost to none of them:
            // a write one of them had seen lost to no delete.
            if inc.op == Op::Delete && state.stored && !state.alive() {
                let event = state
                    .meta
                    .event
                    .map(|v| v.resolve(&mut r.authors, tx))
                    .transpose()?;
                let seen = state
                    .meta
                    .seen
                    .map(|v| v.resolve(&mut r.authors, tx))
                    .transpose()?;
                let later = event.is_none_or(|e| inc.version > e);
                if later {
                    state.meta.event = Some(ver);
                }
                if inc.seen > seen {
                    state.meta.seen = inc
                        .seen
                        .map(|v| Ver::of(v, &mut r.authors, tx))
                        .transpose()?;
                    conflict::deleter_saw(tx, r, &table.name, &blob, state.cl, inc.seen)?;
                }
                if later || inc.seen > seen {
                    rows::save(tx, &mut r.columns, table.id, &blob, &state)?;
                }
            }
            return Ok(());
        }
        RowAction::Hold => {
            return hold(
                tx,
                &inc,
                "waiting for the insert that starts this row's life",
                report,
            );
        }
        RowAction::Stale => {
            // A write of the life a delete ended, that the deleter had not seen, lost to it.
            if inc.op != Op::Delete && !state.alive() && state.cl == inc.cl + 1 {
                let seen = state
                    .meta
                    .seen
                    .map(|v| v.resolve(&mut r.authors, tx))
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
                        .map(|o| o.resolve(&mut r.authors, tx))
                        .transpose()?;
                    if concurrent(inc.version, seen_here) {
                        columns.push(cell.column.to_string());
                    }
                    if cell.overwrote > seen_here || known.is_none() {
                        let overwrote = cell.overwrote.max(seen_here);
                        let overwrote = overwrote
                            .map(|o| Ver::of(o, &mut r.authors, tx))
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
                    rows::save(tx, &mut r.columns, table.id, &blob, &state)?;
                }
                if concurrent(inc.version, seen) && !columns.is_empty() {
                    let local = state
                        .meta
                        .event
                        .map(|v| v.resolve(&mut r.authors, tx))
                        .transpose()?;
                    record(
                        tx,
                        r,
                        table,
                        report,
                        NewConflict {
                            kind: ConflictKind::UpdateDelete,
                            key: &inc.key,
                            cl: state.cl,
                            columns,
                            winner: Side::Local,
                            local_values: None,
                            remote_values: Some(pairs(&inc.cells)),
                            local,
                            remote: inc.version,
                            refused: None,
                            detail: None,
                        },
                    )?;
                }
                // Its author had seen what it overwrote: a record of that write lost to
                // the same delete is moot, as where the two came in the other order.
                if r.open_conflicts != Some(false) {
                    let written: Vec<(&str, Option<Version>)> = inc
                        .cells
                        .iter()
                        .map(|c| (&*c.column, c.overwrote))
                        .collect();
                    conflict::close_superseded(
                        tx,
                        r,
                        &table.name,
                        &blob,
                        inc.cl,
                        &written,
                        inc.version,
                    )?;
                }
            }
            return Ok(());
        }
        RowAction::Replace if inc.op == Op::Delete => {
            if state.alive() {
                // A delete that ends this very life: each write of it the deleter had
                // not seen lost, with the columns it holds. (One that ends a later life,
                // unknown here, is no more in conflict with this one than where this
                // life's writes arrive after it.)
                let ends_this_life = inc.cl == state.cl + 1;
                if ends_this_life {
                    conflict::life_ended(tx, r, &table.name, &blob, inc.cl, inc.seen)?;
                }
                let mut lost: BTreeMap<Version, Vec<String>> = BTreeMap::new();
                // A column of the merge state not tracked here now (renamed, and the
                // table tracked under its new name) is kept aside in the record.
                for cell in state.meta.cells.iter().filter(|_| ends_this_life) {
                    let v = cell.version.resolve(&mut r.authors, tx)?;
                    if concurrent(v, inc.seen) {
                        lost.entry(v).or_default().push(cell.column.clone());
                    }
                }
                let before = if lost.is_empty() {
                    None
                } else {
                    read_row(tx, table, &inc.key)?
                };
                for (v, columns) in lost {
                    record(
                        tx,
                        r,
                        table,
                        report,
                        NewConflict {
                            kind: ConflictKind::UpdateDelete,
                            key: &inc.key,
                            cl: inc.cl,
                            // The whole row, so that keeping this side brings it back.
                            local_values: before.as_ref().map(|row| {
                                table
                                    .columns
                                    .iter()
                                    .cloned()
                                    .zip(row.iter().cloned())
                                    .collect()
                            }),
                            columns,
                            winner: Side::Remote,
                            remote_values: None,
                            local: Some(v),
                            remote: inc.version,
                            refused: None,
                            detail: None,
                        },
                    )?;
                }
                delete_row(tx, table, &inc.key)?;
                if tables.aside.get() {
                    aside::release(tx, table.id, &blob, "the row was deleted")?;
                }
            }
            // Its children are checked even when the row never lived here: one that
            // arrived before it is reached by its delete as on a device that saw both.
            tables.note_deleted(table, &inc.key);
            state = RowState {
                stored: state.stored,
                cl: inc.cl,
                meta: RowMeta {
                    event: Some(ver),
                    seen: inc
                        .seen
                        .map(|v| Ver::of(v, &mut r.authors, tx))
                        .transpose()?,
                    // What the life's writes had seen stays, for writes of it that
                    // arrive late.
                    cells: std::mem::take(&mut state.meta.cells),
                },
            };
        }
        RowAction::Replace => {
            if tables.aside.get() {
                aside::release(
                    tx,
                    table.id,
                    &blob,
                    "a new insert of the row took its place",
                )?;
            }
            if let Err(e) = upsert_row(tx, table, &inc) {
                clash = Some((pairs(&inc.cells), e));
            }
            state = RowState {
                stored: state.stored,
                cl: inc.cl,
                meta: inserted_meta(tx, r, &inc, ver)?,
            };
        }
        RowAction::MergeCells => {
            let event = state
                .meta
                .event
                .map(|v| v.resolve(&mut r.authors, tx))
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
                let lv = local.version.resolve(&mut r.authors, tx)?;
                if inc.version == lv {
                    continue;
                }
                // The newest version of the cell that any write known here had seen.
                let lp = local
                    .overwrote
                    .map(|o| o.resolve(&mut r.authors, tx))
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
                read_row(tx, table, &inc.key)?
            } else {
                None
            };
            let kept = if tables.aside.get() {
                aside::get(tx, table.id, &blob)?
            } else {
                None
            };
            // An entry for a row that is in its table after all is stale: the table
            // takes the change.
            let kept = match kept {
                Some(_) if read_row(tx, table, &inc.key)?.is_some() => {
                    aside::release(tx, table.id, &blob, "the row is in its table again")?;
                    None
                }
                kept => kept,
            };
            let winning: Vec<&IncomingCell> = winners.iter().map(|(c, _)| *c).collect();
            if let Some(values) = kept {
                // The row is set aside: its kept values take the change.
                let cells: Vec<(&str, &Value)> =
                    winning.iter().map(|c| (&*c.column, &c.value)).collect();
                aside::update(tx, table.id, &blob, values, &cells)?;
            } else if !winning.is_empty()
                && let Err(e) = update_row(tx, table, &inc.key, &winning)
            {
                let mut values: RowValues = table
                    .columns
                    .iter()
                    .cloned()
                    .zip(read_row(tx, table, &inc.key)?.unwrap_or_default())
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
                conflict::lost_life(tx, r, &table.name, &blob, inc.cl, loser)?;
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
                record(
                    tx,
                    r,
                    table,
                    report,
                    NewConflict {
                        kind,
                        key: &inc.key,
                        cl: inc.cl,
                        winner: side,
                        local_values: local_values(&columns),
                        remote_values: Some(remote_values),
                        local,
                        remote,
                        columns,
                        refused: None,
                        detail: None,
                    },
                )?;
            }
            if collision {
                // The incarnation's creator is the winning insert, the same everywhere.
                let creator = event.max(Some(inc.version));
                state.meta.event = creator
                    .map(|v| Ver::of(v, &mut r.authors, tx))
                    .transpose()?;
            }
            for (cell, seen) in winners {
                let seen = seen.map(|o| Ver::of(o, &mut r.authors, tx)).transpose()?;
                state.meta.set_cell(&cell.column, ver, seen);
            }
            for (column, seen) in seen_rises {
                let seen = seen.map(|o| Ver::of(o, &mut r.authors, tx)).transpose()?;
                if let Some(c) = state
                    .meta
                    .cells
                    .iter_mut()
                    .find(|c| c.column.eq_ignore_ascii_case(&column))
                {
                    c.overwrote = seen;
                }
            }
        }
    }
    rows::save(tx, &mut r.columns, table.id, &blob, &state)?;
    if let Some((values, e)) = clash {
        tables.aside.set(true);
        aside::place(tx, r, table, &inc.key, values, Some(e), report)?;
    }
    applied(tx, r, tables, table, &inc, &blob, report)
}

/// An insert of a row this file has never seen, the bulk of a first sync, takes its
/// place in `shoal_rows` in one statement instead of a lookup and a write. Returns
/// false, having changed nothing, when the row is known after all.
#[allow(clippy::too_many_arguments)]
fn insert_new(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    table: &TrackedTable,
    inc: &Incoming,
    blob: &[u8],
    ver: Ver,
    report: &mut ImportReport,
) -> Result<bool> {
    let state = RowState {
        stored: false,
        cl: inc.cl,
        meta: inserted_meta(tx, r, inc, ver)?,
    };
    if !rows::claim(tx, &mut r.columns, table.id, blob, &state)? {
        return Ok(false);
    }
    if let Err(e) = upsert_row(tx, table, inc) {
        tables.aside.set(true);
        aside::place(tx, r, table, &inc.key, pairs(&inc.cells), Some(e), report)?;
    }
    applied(tx, r, tables, table, inc, blob, report)?;
    Ok(true)
}

/// The merge state of a row that an insert has just (re)started.
fn inserted_meta(tx: &Transaction, r: &mut Replica, inc: &Incoming, ver: Ver) -> Result<RowMeta> {
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

/// What follows every applied change: noting it for the foreign-key check, closing
/// conflicts it settles, counting it.
fn applied(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    table: &TrackedTable,
    inc: &Incoming,
    blob: &[u8],
    report: &mut ImportReport,
) -> Result<()> {
    tables.note_written(table, &inc.key, inc.version);
    if r.open_conflicts != Some(false) {
        let written: Vec<(&str, Option<Version>)> = inc
            .cells
            .iter()
            .map(|c| (&*c.column, c.overwrote))
            .collect();
        conflict::close_superseded(tx, r, &table.name, blob, inc.cl, &written, inc.version)?;
    }
    report.changes_applied += 1;
    Ok(())
}

fn pairs(cells: &[IncomingCell]) -> Vec<(String, Value)> {
    cells
        .iter()
        .map(|c| (c.column.to_string(), c.value.clone()))
        .collect()
}

fn record(
    tx: &Transaction,
    r: &mut Replica,
    table: &TrackedTable,
    report: &mut ImportReport,
    c: NewConflict<'_>,
) -> Result<()> {
    if conflict::record(tx, r, table, c)? {
        report.conflicts += 1;
    }
    Ok(())
}

fn hold(tx: &Transaction, inc: &Incoming, reason: &str, report: &mut ImportReport) -> Result<()> {
    tx.prepare_cached("INSERT INTO shoal_held(tbl, reason, change) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![
            &*inc.table,
            reason,
            postcard::to_stdvec(inc).unwrap_or_default()
        ])?;
    report.held += 1;
    Ok(())
}

/// Re-applies a change that a constraint refused, after a person asked for it.
pub(crate) fn reapply(tx: &Transaction, r: &mut Replica, refused: &[u8]) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let inc = postcard::from_bytes::<Incoming>(refused).map_err(|e| StoreError::Damaged {
        what: "a refused change kept with a conflict".into(),
        detail: e.to_string(),
    })?;
    let tables = Tables::load(tx)?;
    uncaptured(tx, || {
        apply(tx, r, &tables, inc, &mut report)?;
        tables.check_foreign_keys(tx, r, &mut report)
    })?;
    Ok(report)
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

fn upsert_row(tx: &Transaction, table: &TrackedTable, inc: &Incoming) -> rusqlite::Result<()> {
    let binds: Vec<Bind<'_>> = inc
        .key
        .iter()
        .chain(inc.cells.iter().map(|c| &c.value))
        .map(Bind)
        .collect();
    // Usually the change writes every local column in local order: the prepared
    // statement serves. Otherwise (a column the sender lacks) build one to fit.
    let in_order = inc.cells.len() == table.columns.len()
        && inc
            .cells
            .iter()
            .zip(&table.columns)
            .all(|(c, name)| *c.column == **name);
    if in_order {
        tx.prepare_cached(&table.sql.upsert_all)?
            .execute(rusqlite::params_from_iter(&binds))?;
        return Ok(());
    }
    let mut names: Vec<String> = table.key_columns.iter().map(|c| ident(c)).collect();
    names.extend(inc.cells.iter().map(|c| ident(&c.column)));
    let slots: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let keys: Vec<String> = table.key_columns.iter().map(|c| ident(c)).collect();
    // An insert starts a row's life anew: a column it does not carry (its sender
    // lacks it) takes its default, as in the `excluded` row, never what the row's
    // earlier life left there, which devices that deleted the row first do not have.
    let action = if table.columns.is_empty() {
        "NOTHING".to_owned()
    } else {
        let sets: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("{0} = excluded.{0}", ident(c)))
            .collect();
        format!("UPDATE SET {}", sets.join(", "))
    };
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
        ident(&table.name),
        names.join(", "),
        slots.join(", "),
        keys.join(", ")
    );
    tx.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(&binds))?;
    Ok(())
}

fn update_row(
    tx: &Transaction,
    table: &TrackedTable,
    key: &[Value],
    cells: &[&IncomingCell],
) -> rusqlite::Result<()> {
    let sets: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(&c.column), i + 1))
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE {}",
        ident(&table.name),
        sets.join(", "),
        key_match(&table.key_columns, cells.len() + 1)
    );
    let binds: Vec<Bind<'_>> = cells
        .iter()
        .map(|c| &c.value)
        .chain(key)
        .map(Bind)
        .collect();
    tx.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(&binds))?;
    Ok(())
}

pub(crate) fn delete_row(tx: &Transaction, table: &TrackedTable, key: &[Value]) -> Result<()> {
    let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
    tx.prepare_cached(&table.sql.delete)?
        .execute(rusqlite::params_from_iter(&binds))?;
    Ok(())
}

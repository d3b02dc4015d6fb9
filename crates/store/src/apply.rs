//! Applying remote row changes to the app's tables by the merge rules, recording what
//! loses in the conflict inbox and holding what cannot be applied yet.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::rc::Rc;

use rusqlite::config::DbConfig;
use rusqlite::{ErrorCode, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use shoal_core::merge::{RowAction, concurrent, row_action};
use shoal_core::{BodyView, DeviceId, Group, Op, RowChange, Value, Version, VersionRef};

use crate::Replica;
use crate::conflict::{self, ConflictKind, NewConflict, Side};
use crate::error::{Result, StoreError};
use crate::fresh::Fresh;
use crate::import::ImportReport;
use crate::rows::{self, CellMeta, RowMeta, RowState, Ver};
use crate::seal::read_row;
use crate::sql::{Bind, ident, key_blob, key_match};
use crate::track::{self, TrackedTable};

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

/// The tracked tables by lower-cased name, loaded once per transaction, with the
/// foreign keys of each and the rows this transaction wrote to tables that have any.
pub(crate) struct Tables {
    by_name: HashMap<String, TrackedTable>,
    foreign: HashMap<i64, Vec<ForeignKey>>,
    /// Rows written to tables with foreign keys, checked once the whole batch is in,
    /// so that a child arriving before its parent in one batch is no violation.
    written: RefCell<Vec<(i64, Vec<Value>, Version)>>,
}

/// One foreign key of a tracked table.
struct ForeignKey {
    parent: String,
    from: Vec<String>,
    to: Vec<String>,
}

impl Tables {
    pub(crate) fn load(tx: &Transaction) -> Result<Tables> {
        let mut by_name = HashMap::new();
        let mut foreign = HashMap::new();
        for t in track::load_all(tx)?.into_iter().filter(|t| t.tracked) {
            let keys = foreign_keys(tx, &t.name)?;
            if !keys.is_empty() {
                foreign.insert(t.id, keys);
            }
            by_name.insert(t.name.to_lowercase(), t);
        }
        Ok(Tables {
            by_name,
            foreign,
            written: RefCell::new(Vec::new()),
        })
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
    pub(crate) fn note_written_blob(&self, table: &TrackedTable, key: &[u8], version: Version) {
        if self.foreign.contains_key(&table.id) {
            self.written
                .borrow_mut()
                .push((table.id, crate::sql::key_from_blob(key), version));
        }
    }

    /// Records a conflict for every row written in this transaction whose parent row
    /// is missing. The row stays: it becomes valid when its parent arrives, and every
    /// device keeps the same rows.
    pub(crate) fn check_foreign_keys(
        &self,
        tx: &Transaction,
        r: &mut Replica,
        report: &mut ImportReport,
    ) -> Result<()> {
        let written = std::mem::take(&mut *self.written.borrow_mut());
        for (table_id, key, version) in written {
            let (Some(table), Some(fks)) = (
                self.by_name.values().find(|t| t.id == table_id),
                self.foreign.get(&table_id),
            ) else {
                continue;
            };
            for fk in fks {
                let cols: Vec<String> = fk.from.iter().map(|c| ident(c)).collect();
                let sql = format!(
                    "SELECT {} FROM {} WHERE {}",
                    cols.join(", "),
                    ident(&table.name),
                    key_match(&table.key_columns, 1)
                );
                let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
                let values: Option<Vec<Value>> = tx
                    .prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&binds), |row| {
                        (0..cols.len())
                            .map(|i| row.get_ref(i).map(crate::sql::value))
                            .collect()
                    })
                    .optional()?;
                // A deleted row, or a NULL in the reference, refers to nothing.
                let Some(values) = values.filter(|v| !v.contains(&Value::Null)) else {
                    continue;
                };
                let exists = format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
                    ident(&fk.parent),
                    key_match(&fk.to, 1)
                );
                let binds: Vec<Bind<'_>> = values.iter().map(Bind).collect();
                let found: bool = tx
                    .prepare_cached(&exists)?
                    .query_row(rusqlite::params_from_iter(&binds), |row| row.get(0))?;
                if found {
                    continue;
                }
                record(
                    tx,
                    r,
                    table,
                    report,
                    NewConflict {
                        kind: ConflictKind::Constraint,
                        key: &key,
                        cl: rows::cl(tx, table.id, &key_blob(&key))?,
                        columns: fk.from.clone(),
                        winner: Side::Remote,
                        local_values: None,
                        remote_values: Some(fk.from.iter().cloned().zip(values).collect()),
                        local: None,
                        remote: version,
                        refused: None,
                        detail: Some(format!(
                            "FOREIGN KEY: {}({}) refers to a row of {}({}) that is not here; the row is kept and becomes valid when its parent arrives",
                            table.name,
                            fk.from.join(", "),
                            fk.parent,
                            fk.to.join(", ")
                        )),
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// The foreign keys declared on `table`, with the parent's key filled in where the
/// declaration leaves it implicit.
fn foreign_keys(tx: &Transaction, table: &str) -> Result<Vec<ForeignKey>> {
    let mut stmt = tx.prepare(&format!("PRAGMA foreign_key_list({})", ident(table)))?;
    // (id, parent, from, to)
    let rows: Vec<(i64, String, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<Result<_, _>>()?;
    let mut keys: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, parent, from, to) in rows {
        if keys.last().is_none_or(|(last, _)| *last != id) {
            keys.push((
                id,
                ForeignKey {
                    parent: parent.clone(),
                    from: Vec::new(),
                    to: Vec::new(),
                },
            ));
        }
        if let Some((_, fk)) = keys.last_mut() {
            fk.from.push(from);
            if let Some(to) = to {
                fk.to.push(to);
            }
        }
    }
    let mut out = Vec::new();
    for (_, mut fk) in keys {
        if fk.to.is_empty() {
            let mut stmt = tx.prepare(&format!("PRAGMA table_info({})", ident(&fk.parent)))?;
            let mut pk: Vec<(i64, String)> = stmt
                .query_map([], |r| Ok((r.get(5)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|(pos, _)| *pos > 0)
                .collect();
            pk.sort();
            fk.to = pk.into_iter().map(|(_, c)| c).collect();
        }
        if fk.to.len() == fk.from.len() {
            out.push(fk);
        }
    }
    Ok(out)
}

/// Row changes of accepted commits, gathered so that they are applied in key order,
/// all of an import's commits at a time.
///
/// Changes to different rows do not depend on each other, and the keys of a first
/// sync are as good as random: applied commit by commit, every commit walks the whole
/// of the app's table and `shoal_rows`, and each page of them is written out once per
/// commit. Sorted across all the commits of an import, an empty table is filled from
/// one end to the other, each page written once. A stable sort keeps the changes to
/// one row in the order their commits were accepted.
///
/// Changes wait encoded, about 60 bytes each. Past [`PENDING_BYTES`] they are sorted
/// and written to a temporary file as a run; applying merges the runs, so an import's
/// memory stays small however many changes it brings.
pub(crate) struct Pending {
    /// How many bytes of changes are kept in memory before they are written out.
    spill_at: usize,
    /// Lower-cased names of the tables changes are for; changes sort by the index
    /// here, then by key.
    tables: Vec<String>,
    parts: Vec<Part>,
    /// Each change's key blob, then the change itself.
    bytes: Vec<u8>,
    rows: Vec<PendingRow>,
    /// Sorted runs written out so far.
    runs: Option<Runs>,
    /// Whether inserts of rows new to the file are written many to a statement (see
    /// [`Fresh`]); off only to check that the outcome is the same either way.
    gather: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            spill_at: PENDING_BYTES,
            tables: Vec::new(),
            parts: Vec::new(),
            bytes: Vec::new(),
            rows: Vec::new(),
            runs: None,
            gather: true,
        }
    }
}

/// Where one waiting change is in [`Pending::bytes`].
struct PendingRow {
    part: u32,
    start: u32,
    key_end: u32,
    end: u32,
}

/// What the row changes of one commit to one table share.
pub(crate) struct Part {
    /// Which of [`Pending::tables`] the changes are for.
    pub(crate) order: u32,
    pub(crate) table: Rc<str>,
    pub(crate) key_columns: Rc<[String]>,
    pub(crate) columns: Vec<Rc<str>>,
    /// Which of `columns` the commit's group carries.
    pub(crate) kept: Vec<bool>,
    pub(crate) version: Version,
    /// The commit's author list, against which version references resolve.
    authors: Rc<[DeviceId]>,
}

/// Part `index` of `parts`; a run that names another does not read back as written.
pub(crate) fn part(parts: &[Part], index: u32) -> Result<&Part> {
    parts
        .get(index as usize)
        .ok_or_else(|| torn("a run names a change that was not kept"))
}

impl Part {
    pub(crate) fn resolve(&self, r: VersionRef) -> Option<Version> {
        r.resolve(self.version.author, &self.authors)
    }

    /// The change as the merge takes it, with the columns the group does not carry
    /// left out; `None` for an update left with nothing to write.
    pub(crate) fn incoming_of(&self, change: RowChange) -> Option<Incoming> {
        let incoming = Incoming {
            table: self.table.clone(),
            key_columns: self.key_columns.clone(),
            key: change.key,
            op: change.op,
            cl: change.cl,
            version: self.version,
            seen: change.seen.and_then(|s| self.resolve(s)),
            cells: change
                .cells
                .into_iter()
                .filter(|c| self.kept.get(c.column as usize) == Some(&true))
                .filter_map(|c| {
                    Some(IncomingCell {
                        column: self.columns.get(c.column as usize)?.clone(),
                        value: c.value,
                        overwrote: c.overwrote.and_then(|o| self.resolve(o)),
                    })
                })
                .collect(),
        };
        (incoming.op != Op::Update || !incoming.cells.is_empty()).then_some(incoming)
    }
}

/// Encoded changes kept in memory before they are sorted and written out as a run.
const PENDING_BYTES: usize = 4 << 20;

/// Memory for reading the runs back, shared among them.
const MERGE_BYTES: usize = 2 << 20;

impl Pending {
    /// Gathers every row change of a commit whose chain position and author have been
    /// checked, those for which `wanted(table, key)` holds (the table's name lower-cased,
    /// the key as stored). A commit of a group (`carried`) changes only the tables and
    /// columns the group carries; anything else in it is left out, so no member can
    /// reach a table the group does not share. Changes are copied as they were signed,
    /// not decoded.
    pub(crate) fn add(
        &mut self,
        carried: Option<&Group>,
        body: &BodyView,
        mut wanted: impl FnMut(&str, &[u8]) -> bool,
        report: &mut ImportReport,
    ) -> Result<()> {
        let head = &body.head;
        let version = head.version();
        let mut authors: Option<Rc<[DeviceId]>> = None;
        for t in body.tables() {
            let t = t?;
            let share = match carried {
                None => None,
                Some(g) => match g.share(t.table) {
                    Some(share) => Some(share),
                    None => {
                        report.refused.push(format!(
                            "commit {} by {}: {} row change(s) to table {:?}, which group {} does not carry, left out",
                            head.seq, head.author, t.row_count, t.table, g.name
                        ));
                        continue;
                    }
                },
            };
            let lower = t.table.to_lowercase();
            let part = self.parts.len() as u32;
            let mut added = false;
            for row in t.rows() {
                let row = row?;
                if !wanted(&lower, row.key) {
                    continue;
                }
                added = true;
                let start = self.bytes.len() as u32;
                self.bytes.extend_from_slice(row.key);
                let key_end = self.bytes.len() as u32;
                self.bytes.extend_from_slice(row.bytes);
                self.rows.push(PendingRow {
                    part,
                    start,
                    key_end,
                    end: self.bytes.len() as u32,
                });
            }
            if !added {
                continue;
            }
            let order = match self.tables.iter().position(|n| *n == lower) {
                Some(i) => i,
                None => {
                    self.tables.push(lower);
                    self.tables.len() - 1
                }
            } as u32;
            self.parts.push(Part {
                order,
                kept: t
                    .columns
                    .iter()
                    .map(|c| share.is_none_or(|s| s.carries(c)))
                    .collect(),
                table: Rc::from(t.table),
                key_columns: t.key_columns.iter().map(|c| c.to_string()).collect(),
                columns: t.columns.iter().map(|c| Rc::from(*c)).collect(),
                version,
                authors: authors
                    .get_or_insert_with(|| Rc::from(head.authors.as_slice()))
                    .clone(),
            });
        }
        if self.bytes.len() >= self.spill_at {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts what is in memory by table and key.
    fn sort(&mut self) {
        let (parts, bytes) = (&self.parts, &self.bytes);
        let key = |row: &PendingRow| {
            (
                parts[row.part as usize].order,
                &bytes[row.start as usize..row.key_end as usize],
            )
        };
        self.rows.sort_by(|a, b| key(a).cmp(&key(b)));
    }

    /// Writes what is in memory out as one sorted run.
    fn spill(&mut self) -> Result<()> {
        self.sort();
        let runs = match &mut self.runs {
            Some(runs) => runs,
            None => self.runs.insert(Runs::new()?),
        };
        let start = runs.len;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &runs.file);
        for row in &self.rows {
            let key = &self.bytes[row.start as usize..row.key_end as usize];
            let change = &self.bytes[row.key_end as usize..row.end as usize];
            let mut head = [0u8; RECORD_HEAD];
            head[..4].copy_from_slice(&row.part.to_le_bytes());
            head[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            head[8..].copy_from_slice(&(change.len() as u32).to_le_bytes());
            out.write_all(&head)
                .and_then(|()| out.write_all(key))
                .and_then(|()| out.write_all(change))
                .map_err(StoreError::Spill)?;
            runs.len += (RECORD_HEAD + key.len() + change.len()) as u64;
        }
        out.flush().map_err(StoreError::Spill)?;
        drop(out);
        runs.spans.push((start, runs.len));
        self.rows.clear();
        self.bytes.clear();
        Ok(())
    }

    /// Applies every gathered row change, in key order.
    pub(crate) fn apply(
        &mut self,
        tx: &Transaction,
        r: &mut Replica,
        tables: &Tables,
        report: &mut ImportReport,
    ) -> Result<()> {
        if self.runs.is_none() {
            self.sort();
            let this = std::mem::take(self);
            let mut fresh = Fresh::new(this.parts.len(), this.gather);
            for row in &this.rows {
                let key = &this.bytes[row.start as usize..row.key_end as usize];
                let change = &this.bytes[row.key_end as usize..row.end as usize];
                fresh.change(tx, r, tables, &this.parts, row.part, key, change, report)?;
            }
            return fresh.flush(tx, r, tables, &this.parts, report);
        }
        self.spill()?;
        let this = std::mem::take(self);
        let runs = this.runs.expect("spilled");
        let window = (MERGE_BYTES / runs.spans.len()).clamp(4 << 10, 1 << 20);
        let mut readers = Vec::with_capacity(runs.spans.len());
        let mut heap = BinaryHeap::with_capacity(runs.spans.len());
        for (i, &(start, end)) in runs.spans.iter().enumerate() {
            let mut reader = RunReader::new(start, end, window);
            let mut key = Vec::new();
            if reader.next(&runs.file, &mut key)? {
                let order = part(&this.parts, reader.part)?.order;
                heap.push(Reverse(Head { order, key, run: i }));
            }
            readers.push(reader);
        }
        let mut fresh = Fresh::new(this.parts.len(), this.gather);
        while let Some(Reverse(mut head)) = heap.pop() {
            let reader = &mut readers[head.run];
            fresh.change(
                tx,
                r,
                tables,
                &this.parts,
                reader.part,
                &head.key,
                &reader.change,
                report,
            )?;
            if reader.next(&runs.file, &mut head.key)? {
                head.order = part(&this.parts, reader.part)?.order;
                heap.push(Reverse(head));
            }
        }
        fresh.flush(tx, r, tables, &this.parts, report)
    }
}

/// A run that does not read back as it was written.
fn torn(what: &str) -> StoreError {
    StoreError::Spill(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

/// Each record of a run: the part (`u32`), the key's length and the change's (`u32`
/// each, little-endian), then the key and the change.
const RECORD_HEAD: usize = 12;

/// Sorted runs in one temporary file, which the system deletes when it is closed.
struct Runs {
    file: std::fs::File,
    len: u64,
    /// Where each run starts and ends, in the order they were written.
    spans: Vec<(u64, u64)>,
}

impl Runs {
    fn new() -> Result<Runs> {
        Ok(Runs {
            file: tempfile::tempfile().map_err(StoreError::Spill)?,
            len: 0,
            spans: Vec::new(),
        })
    }
}

/// The smallest change at the front of a run, in a merge. Ties go to the earlier run,
/// which holds earlier commits: the merge is as stable as the sort.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    order: u32,
    key: Vec<u8>,
    run: usize,
}

/// Reads one run back, a window at a time.
struct RunReader {
    next_at: u64,
    end: u64,
    window: Vec<u8>,
    /// How much of `window` has been taken.
    taken: usize,
    /// The record read last: its part and its change.
    part: u32,
    change: Vec<u8>,
}

impl RunReader {
    fn new(start: u64, end: u64, window: usize) -> RunReader {
        RunReader {
            next_at: start,
            end,
            window: Vec::with_capacity(window),
            taken: 0,
            part: 0,
            change: Vec::new(),
        }
    }

    /// Reads the next record: its key into `key`, the rest into `self`. False at the
    /// run's end.
    fn next(&mut self, file: &std::fs::File, key: &mut Vec<u8>) -> Result<bool> {
        let Some(head) = self.take(file, RECORD_HEAD)? else {
            return Ok(false);
        };
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (part, key_len, change_len) = (word(0), word(4) as usize, word(8) as usize);
        self.part = part;
        let short = || torn("a run ends inside a record");
        key.clear();
        key.extend_from_slice(self.take(file, key_len)?.ok_or_else(short)?);
        let mut change = std::mem::take(&mut self.change);
        change.clear();
        change.extend_from_slice(self.take(file, change_len)?.ok_or_else(short)?);
        self.change = change;
        Ok(true)
    }

    /// The next `n` bytes of the run, reading more of it when the window runs out;
    /// `None` at its end.
    fn take(&mut self, file: &std::fs::File, n: usize) -> Result<Option<&[u8]>> {
        use std::os::unix::fs::FileExt;
        if self.window.len() - self.taken < n {
            self.window.drain(..self.taken);
            self.taken = 0;
            let want = (self.window.capacity().max(n) - self.window.len()) as u64;
            let more = want.min(self.end - self.next_at) as usize;
            let have = self.window.len();
            self.window.resize(have + more, 0);
            file.read_exact_at(&mut self.window[have..], self.next_at)
                .map_err(StoreError::Spill)?;
            self.next_at += more as u64;
            if self.window.len() < n {
                return Ok(None);
            }
        }
        let out = &self.window[self.taken..self.taken + n];
        self.taken += n;
        Ok(Some(out))
    }
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
        let Ok(incoming) = postcard::from_bytes::<Incoming>(&blob) else {
            continue;
        };
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
        let reason = format!("table {:?} is not tracked here", &*inc.table);
        return hold(tx, &inc, &reason, report);
    };
    let same_key = track::same_names(&inc.key_columns, &table.key_columns);
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
    match row_action(state.cl, inc.op, inc.cl) {
        RowAction::Duplicate => return Ok(()),
        RowAction::Hold => {
            return hold(
                tx,
                &inc,
                "waiting for the insert that starts this row's life",
                report,
            );
        }
        RowAction::Stale => {
            if inc.op == Op::Update && !state.alive() && state.cl == inc.cl + 1 {
                let seen = state
                    .meta
                    .seen
                    .map(|v| v.resolve(&mut r.authors, tx))
                    .transpose()?;
                if concurrent(inc.version, seen) {
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
                            columns: inc.cells.iter().map(|c| c.column.to_string()).collect(),
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
            }
            return Ok(());
        }
        RowAction::Replace if inc.op == Op::Delete => {
            if state.alive() {
                let mut lost = Vec::new();
                let mut newest_lost: Option<Version> = None;
                for cell in &state.meta.cells {
                    let v = cell.version.resolve(&mut r.authors, tx)?;
                    if concurrent(v, inc.seen) {
                        lost.push(cell.column.clone());
                        newest_lost = newest_lost.max(Some(v));
                    }
                }
                if !lost.is_empty() {
                    let before = read_row(tx, table, &inc.key)?;
                    record(
                        tx,
                        r,
                        table,
                        report,
                        NewConflict {
                            kind: ConflictKind::UpdateDelete,
                            key: &inc.key,
                            cl: inc.cl,
                            columns: lost,
                            winner: Side::Remote,
                            local_values: before
                                .map(|v| table.columns.iter().cloned().zip(v).collect()),
                            remote_values: None,
                            local: newest_lost,
                            remote: inc.version,
                            refused: None,
                            detail: None,
                        },
                    )?;
                }
                delete_row(tx, table, &inc.key)?;
            }
            state = RowState {
                stored: state.stored,
                cl: inc.cl,
                meta: RowMeta {
                    event: Some(ver),
                    seen: inc
                        .seen
                        .map(|v| Ver::of(v, &mut r.authors, tx))
                        .transpose()?,
                    cells: Vec::new(),
                },
            };
        }
        RowAction::Replace => {
            if let Err(e) = upsert_row(tx, table, &inc) {
                return refuse(tx, r, table, report, &inc, e);
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
            let mut winners: Vec<&IncomingCell> = Vec::new();
            let mut remote_won: Vec<(String, Version)> = Vec::new();
            let mut local_won: Vec<(String, Version)> = Vec::new();
            for cell in &inc.cells {
                let Some(local) = state.meta.cell(&cell.column) else {
                    winners.push(cell);
                    continue;
                };
                let lv = local.version.resolve(&mut r.authors, tx)?;
                if inc.version == lv {
                    continue;
                }
                if inc.version > lv {
                    winners.push(cell);
                    if !collision && concurrent(lv, cell.overwrote) {
                        remote_won.push((cell.column.to_string(), lv));
                    }
                } else {
                    let lp = local
                        .overwrote
                        .map(|o| o.resolve(&mut r.authors, tx))
                        .transpose()?;
                    if !collision && concurrent(inc.version, lp) {
                        local_won.push((cell.column.to_string(), lv));
                    }
                }
            }
            let before = if collision || !remote_won.is_empty() || !local_won.is_empty() {
                read_row(tx, table, &inc.key)?
            } else {
                None
            };
            if !winners.is_empty()
                && let Err(e) = update_row(tx, table, &inc.key, &winners)
            {
                return refuse(tx, r, table, report, &inc, e);
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
            if collision {
                let cols = table.columns.clone();
                record(
                    tx,
                    r,
                    table,
                    report,
                    NewConflict {
                        kind: ConflictKind::InsertCollision,
                        key: &inc.key,
                        cl: inc.cl,
                        winner: if event.is_none_or(|e| inc.version > e) {
                            Side::Remote
                        } else {
                            Side::Local
                        },
                        local_values: local_values(&cols),
                        remote_values: Some(pairs(&inc.cells)),
                        local: event,
                        remote: inc.version,
                        columns: cols,
                        refused: None,
                        detail: None,
                    },
                )?;
            }
            for (won, side) in [(&remote_won, Side::Remote), (&local_won, Side::Local)] {
                if won.is_empty() {
                    continue;
                }
                let cols: Vec<String> = won.iter().map(|(c, _)| c.clone()).collect();
                let remote_values: Vec<(String, Value)> = pairs(&inc.cells)
                    .into_iter()
                    .filter(|(c, _)| cols.contains(c))
                    .collect();
                record(
                    tx,
                    r,
                    table,
                    report,
                    NewConflict {
                        kind: ConflictKind::ConcurrentWrite,
                        key: &inc.key,
                        cl: inc.cl,
                        winner: side,
                        local_values: local_values(&cols),
                        remote_values: Some(remote_values),
                        local: won.iter().map(|(_, v)| *v).max(),
                        remote: inc.version,
                        columns: cols,
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
            for cell in winners {
                let overwrote = cell
                    .overwrote
                    .map(|o| Ver::of(o, &mut r.authors, tx))
                    .transpose()?;
                state.meta.set_cell(&cell.column, ver, overwrote);
            }
        }
    }
    rows::save(tx, &mut r.columns, table.id, &blob, &state)?;
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
        rows::forget(tx, table.id, blob)?;
        refuse(tx, r, table, report, inc, e)?;
        return Ok(true);
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

/// Keeps a change that a constraint of the local schema refused in the inbox, or
/// passes on any other error.
fn refuse(
    tx: &Transaction,
    r: &mut Replica,
    table: &TrackedTable,
    report: &mut ImportReport,
    inc: &Incoming,
    error: rusqlite::Error,
) -> Result<()> {
    let rusqlite::Error::SqliteFailure(code, message) = &error else {
        return Err(error.into());
    };
    if code.code != ErrorCode::ConstraintViolation {
        return Err(error.into());
    }
    let what = match code.extended_code {
        2067 | 1555 => "UNIQUE",
        1299 => "NOT NULL",
        275 => "CHECK",
        787 => "FOREIGN KEY",
        _ => "constraint",
    };
    let detail = format!("{what}: {}", message.clone().unwrap_or_default());
    record(
        tx,
        r,
        table,
        report,
        NewConflict {
            kind: ConflictKind::Constraint,
            key: &inc.key,
            cl: inc.cl,
            columns: inc.cells.iter().map(|c| c.column.to_string()).collect(),
            winner: Side::Local,
            local_values: None,
            remote_values: Some(pairs(&inc.cells)),
            local: None,
            remote: inc.version,
            refused: Some(postcard::to_stdvec(inc).unwrap_or_default()),
            detail: Some(detail),
        },
    )
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
    let Ok(inc) = postcard::from_bytes::<Incoming>(refused) else {
        return Ok(report);
    };
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
    let action = if inc.cells.is_empty() {
        "NOTHING".to_owned()
    } else {
        let sets: Vec<String> = inc
            .cells
            .iter()
            .map(|c| format!("{0} = excluded.{0}", ident(&c.column)))
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

#[cfg(test)]
mod tests {
    use shoal_core::GroupId;

    use super::*;
    use crate::{Store, StoreOptions};

    fn replica(dir: &std::path::Path, name: &str) -> Store {
        let path = dir.join(format!("{name}.db"));
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, n INTEGER);")
            .expect("schema");
        let mut store = Store::init(&path, StoreOptions::new(dir.join("data"))).expect("init");
        store.track("notes", None).expect("track");
        store
    }

    fn notes(store: &Store) -> Vec<(String, String, i64)> {
        let conn = store.connection();
        let mut stmt = conn
            .prepare("SELECT id, body, n FROM notes ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Every commit's changes go out to a run of their own; merging the runs must
    /// still apply the changes to one row in the order of their commits.
    #[test]
    fn changes_written_out_in_runs_apply_in_the_order_of_their_commits() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut a = replica(dir.path(), "a");
        for sql in [
            "INSERT INTO notes VALUES ('x', 'one', 1), ('a', 'first', 0), ('z', 'last', 0);",
            "UPDATE notes SET body = 'two' WHERE id = 'x';",
            "DELETE FROM notes WHERE id = 'x'; UPDATE notes SET n = 5 WHERE id = 'a';",
            "INSERT INTO notes VALUES ('x', 'three', 3);",
            "UPDATE notes SET n = 4 WHERE id = 'x'; DELETE FROM notes WHERE id = 'z';",
        ] {
            a.connection().execute_batch(sql).expect(sql);
            a.seal().expect("seal");
        }
        let commits = a
            .export(&GroupId::DEFAULT, &Default::default())
            .expect("export");
        assert_eq!(commits.len(), 5);
        let mut b = replica(dir.path(), "b");
        let runs = b
            .write(|tx, r| {
                let tables = Tables::load(tx)?;
                let mut pending = Pending {
                    spill_at: 1,
                    ..Pending::default()
                };
                let mut report = ImportReport::default();
                for c in commits {
                    let c = c.verify()?;
                    let body = BodyView::read(&c.signed.body)?;
                    pending.add(None, &body, |_, _| true, &mut report)?;
                }
                let runs = pending.runs.as_ref().map_or(0, |r| r.spans.len());
                uncaptured(tx, || pending.apply(tx, r, &tables, &mut report))?;
                Ok(runs)
            })
            .expect("apply");
        assert_eq!(runs, 5);
        assert_eq!(
            notes(&b),
            [
                ("a".to_owned(), "first".to_owned(), 5),
                ("x".to_owned(), "three".to_owned(), 4)
            ]
        );
        assert_eq!(notes(&b), notes(&a));
    }
}

/// Inserts of new rows written many to a statement end exactly as applied one by one.
#[cfg(test)]
mod gathered {
    use proptest::prelude::*;
    use shoal_core::{GroupId, SignedCommit};

    use super::*;
    use crate::{Store, StoreOptions};

    /// A replica of `notes`, with `check` added to the table's definition.
    fn replica(dir: &std::path::Path, name: &str, check: &str) -> Store {
        let path = dir.join(format!("{name}.db"));
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch(&format!(
                "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, n INTEGER{check});"
            ))
            .expect("schema");
        let mut store = Store::init(&path, StoreOptions::new(dir.join("data"))).expect("init");
        store.track("notes", None).expect("track");
        store
    }

    /// Everything the merge writes: the rows, their merge state, the conflicts and
    /// the held changes, each as text.
    fn outcome(store: &Store) -> Vec<String> {
        let conn = store.connection();
        let mut out = Vec::new();
        for sql in [
            "SELECT id, body, n FROM notes ORDER BY id",
            "SELECT tbl, hex(key), cl, hex(meta) FROM shoal_rows ORDER BY tbl, key",
            "SELECT kind, tbl, hex(key), cl, columns, winner, hex(local_values), hex(remote_values),
                    local_hlc, hex(local_device), remote_hlc, hex(remote_device), hex(refused),
                    detail, status
             FROM shoal_conflicts ORDER BY tbl, key, remote_hlc, remote_device, kind",
            "SELECT tbl, reason, hex(change) FROM shoal_held ORDER BY id",
        ] {
            let mut stmt = conn.prepare(sql).expect(sql);
            let width = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..width)
                        .map(|i| {
                            r.get_ref(i)
                                .map(|v| Value::to_sql_literal(&crate::sql::value(v)))
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .expect(sql);
            for row in rows {
                out.push(row.expect("row").join("|"));
            }
            out.push("--".to_owned());
        }
        out
    }

    fn apply_all(store: &mut Store, commits: &[SignedCommit], spill_at: usize, gather: bool) {
        store
            .write(|tx, r| {
                let tables = Tables::load(tx)?;
                let mut pending = Pending {
                    spill_at,
                    gather,
                    ..Pending::default()
                };
                let mut report = ImportReport::default();
                for c in commits {
                    let c = c.clone().verify()?;
                    let body = BodyView::read(&c.signed.body)?;
                    pending.add(None, &body, |_, _| true, &mut report)?;
                }
                uncaptured(tx, || {
                    pending.apply(tx, r, &tables, &mut report)?;
                    tables.check_foreign_keys(tx, r, &mut report)
                })
            })
            .expect("apply");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Two authors insert, update and delete a few keys, some of the same ones at
        /// once; the receiving file has rows of its own and a CHECK that refuses some
        /// values, and imports one author's commits, then the other's. Applied with
        /// inserts gathered or one by one, in memory or through runs, the file ends the
        /// same.
        #[test]
        fn gathered_inserts_end_as_applied_one_by_one(
            writes in prop::collection::vec((0..2usize, 0..4u8, 0..24u8, 0..1100i64), 1..80),
            local in prop::collection::vec((0..24u8, 0..900i64), 0..6),
            spill in any::<bool>(),
        ) {
            let dir = tempfile::TempDir::new().expect("temp dir");
            let mut authors = [replica(dir.path(), "a", ""), replica(dir.path(), "b", "")];
            for (who, what, key, n) in writes {
                let a = &mut authors[who];
                let id = format!("k{key:02}");
                match what {
                    0 => a.connection().execute(
                        "INSERT INTO notes VALUES (?1, 'by ' || ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body, n = excluded.n",
                        rusqlite::params![id, who as i64, n],
                    ),
                    1 => a.connection().execute(
                        "UPDATE notes SET n = ?2 WHERE id = ?1",
                        rusqlite::params![id, n],
                    ),
                    2 => a.connection().execute("DELETE FROM notes WHERE id = ?1", [id]),
                    _ => a.seal().map(|_| 0).map_err(|_| rusqlite::Error::InvalidQuery),
                }
                .expect("write");
            }
            let mut imports = Vec::new();
            for a in &mut authors {
                a.seal().expect("seal");
                imports.push(a.export(&GroupId::DEFAULT, &Default::default()).expect("export"));
            }
            // The second import finds the conflicts the first recorded open.
            imports.reverse();

            let mut t = replica(dir.path(), "t", " CHECK (n < 1000)");
            for (key, n) in local {
                t.connection()
                    .execute(
                        "INSERT OR REPLACE INTO notes VALUES (?1, 'here', ?2)",
                        rusqlite::params![format!("k{key:02}"), n],
                    )
                    .expect("local");
            }
            t.seal().expect("seal");
            drop(t);
            let spill_at = if spill { 64 } else { PENDING_BYTES };
            let mut ends = Vec::new();
            for (name, gather) in [("one", false), ("many", true)] {
                let path = dir.path().join(format!("{name}.db"));
                std::fs::copy(dir.path().join("t.db"), &path).expect("copy");
                let mut store = Store::open(&path, StoreOptions::new(dir.path().join("data")))
                    .expect("open");
                for commits in &imports {
                    apply_all(&mut store, commits, spill_at, gather);
                }
                ends.push(outcome(&store));
            }
            prop_assert_eq!(&ends[0], &ends[1]);
        }
    }
}

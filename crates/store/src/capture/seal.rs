//! Sealing: turning captured writes into signed, hash-chained commits.
//!
//! The capture log holds keys only. Sealing folds a row's logged operations into one
//! row change, reads the row's current values, stamps every write with the commit's
//! clock and records what each write overwrote, so that peers can tell a concurrent
//! write from a later one.
//!
//! A change to a table goes to every group that carries the table and lets this device
//! write, without the columns that group leaves out; a table in no such group goes to
//! the local group, which has no membership and which only `shoal merge` carries. One
//! sealing pass gives all its commits one clock, so a row change sent to two groups has
//! one version and is applied once by a device in both. The log is read in chunks of
//! 50,000 entries, sorted by table and key (stably, so a row's operations keep their
//! order), so the app's table and `shoal_rows` are walked in order, not at random.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Transaction;
use shoal_core::commit::{Checked, FORMAT, MAX_COMMIT_BYTES};
use shoal_core::{
    Cell, CommitBody, CommitHead, DeviceId, GroupId, GroupOp, Hlc, Op, Role, RowChange, Seq,
    TableChanges, Value, Version, commit::VersionRef,
};

use crate::capture::{sweep, track};
use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::tables::Tables;
use crate::merge::{aside, conflict, foreign, settle};
use crate::report::{ImportReport, KeptHere, OversizedRow, SealReport};
use crate::sql::{key_blob, key_from_blob, key_text, value};
use crate::tables::authors::{self, Head};
use crate::tables::commits::{self, State};
use crate::tables::follow::{self, SchemaChange};
use crate::tables::groups;
use crate::tables::log::{self, LogOp};
use crate::tables::meta::{load_hlc, save_hlc};
use crate::tables::rows::{self, RowMeta, Ver};
use crate::tables::table::{self, TrackedTable};

/// Log entries folded at a time; bounds memory whatever the backlog.
const LOG_CHUNK: i64 = 50_000;
/// A commit is closed once its rows reach about this many bytes.
const COMMIT_TARGET_BYTES: usize = 1 << 20;

/// A row's logged operations: (table id, key blob, the one group they go to if any,
/// ops, their ids in the log).
type Fold = (i64, Vec<u8>, Option<GroupId>, Vec<Logged>, Vec<i64>);

/// A log entry: (table id, key blob, the one group it goes to if any, operation, id).
type Entry = (i64, Vec<u8>, Option<GroupId>, Logged, i64);

/// Log entries sorted by row, folded a row at a time.
struct Folds(std::iter::Peekable<std::vec::IntoIter<Entry>>);

impl Iterator for Folds {
    type Item = Fold;

    fn next(&mut self) -> Option<Fold> {
        let (tbl, blob, only, op, id) = self.0.next()?;
        let (mut ops, mut ids) = (vec![op], vec![id]);
        while let Some((_, _, _, op, id)) = self
            .0
            .next_if(|(t, b, o, _, _)| (*t, b, *o) == (tbl, &blob, only))
        {
            ops.push(op);
            ids.push(id);
        }
        Some((tbl, blob, only, ops, ids))
    }
}

/// A logged operation, as the triggers write it.
#[derive(Clone, Debug)]
enum Logged {
    Insert,
    Update(String),
    Delete,
}

pub(crate) fn seal(tx: &Transaction, r: &mut Device) -> Result<SealReport> {
    // A table whose schema changed in a way Shoal cannot follow is not sealed: its log
    // entries stay for when it is sorted out. An untracked table the app has dropped
    // has nothing left to seal: its log entries go.
    let problems = track::follow_schema(tx, r)?;
    aside::written_again(tx)?;
    let mut refused: Vec<i64> = Vec::new();
    let mut tables: HashMap<i64, TrackedTable> = HashMap::new();
    for t in table::load_all(tx)? {
        // An untracked table's entries captured before it was untracked are sealed
        // as long as its columns are still the ones they name; those of one that is
        // gone are dropped below.
        let change = if t.tracked {
            problems
                .iter()
                .find(|p| p.table == t.name)
                .map(|p| p.change.clone())
        } else {
            follow::columns_change(tx, &t.as_tracked())?
        };
        match change {
            Some(SchemaChange::TableDropped) if !t.tracked => {}
            Some(_) => refused.push(t.id),
            None => {
                tables.insert(t.id, t);
            }
        }
    }
    let refused_json = serde_json::to_string(&refused).unwrap_or_else(|_| "[]".into());
    let me = r.authors.id(tx, &r.device)?;
    let targets = Destinations::load(tx, r)?;
    let mut report = SealReport {
        schema_problems: problems,
        ..SealReport::default()
    };
    let mut last_id = 0i64;
    // Log entries of rows too large to seal, kept for a later seal.
    let mut kept: Vec<i64> = Vec::new();
    // Which rows are too large is found anew by every seal, which reads every entry.
    tx.execute_batch("DELETE FROM shoal_oversized")?;
    loop {
        let mut entries: Vec<Entry> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, tbl, op, col, k0, k1, k2, k3, k4, k5, k6, k7, grp FROM shoal_log
                 WHERE id > ?1 AND tbl NOT IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT ?2",
            )?;
            let mut q = stmt.query(rusqlite::params![last_id, LOG_CHUNK, &refused_json])?;
            while let Some(row) = q.next()? {
                last_id = row.get(0)?;
                let id = last_id;
                let tbl: i64 = row.get(1)?;
                let Some(table) = tables.get(&tbl) else {
                    continue;
                };
                let key: Vec<Value> = (0..table.key_columns.len())
                    .map(|i| row.get_ref(4 + i).map(value))
                    .collect::<Result<_, _>>()?;
                let op = match LogOp::from_code(row.get(2)?) {
                    Some(LogOp::Insert) => Logged::Insert,
                    Some(LogOp::Update) => {
                        Logged::Update(row.get::<_, Option<String>>(3)?.unwrap_or_default())
                    }
                    Some(LogOp::Delete) | None => Logged::Delete,
                };
                let only: Option<Vec<u8>> = row.get(12)?;
                let only = only.and_then(|g| g.try_into().ok()).map(GroupId);
                entries.push((tbl, key_blob(&key), only, op, id));
            }
        }
        if entries.is_empty() {
            break;
        }
        // Each row is folded once per chunk, so the rows' order is free: in key order
        // the table and shoal_rows are walked once, not at random. The sort is stable:
        // a row's operations keep the order they were logged in.
        entries.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        let mut folds = Folds(entries.into_iter().peekable()).peekable();
        while folds.peek().is_some() {
            let mut builder = Builder::start(tx, r, me)?;
            while builder.size < COMMIT_TARGET_BYTES {
                let Some((tbl, blob, only, ops, ids)) = folds.next() else {
                    break;
                };
                let to = targets.of(tbl, only);
                if to.is_empty() {
                    continue;
                }
                let table = &tables[&tbl];
                if only.is_none() {
                    targets.note_kept_here(table, &mut report);
                }
                let key = key_from_blob(&blob)?;
                let row = Folded {
                    table,
                    blob: &blob,
                    key: &key,
                    ops: &ops,
                    snapshot: only.is_some(),
                };
                if let Some(size) = builder.add(tx, r, row, &to)? {
                    // One row too large for any commit stops nothing else: its log
                    // entries stay for when it is smaller, and it is reported.
                    kept.extend(ids);
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO shoal_oversized(tbl, key, size) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![tbl, blob, size as i64])?;
                    report.oversized.push(OversizedRow {
                        table: table.name.clone(),
                        key: key_text(&key),
                        size: size as u64,
                    });
                }
            }
            builder.finish(tx, r, &mut report)?;
        }
        let kept_json = serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into());
        tx.prepare_cached(
            "DELETE FROM shoal_log WHERE id <= ?1 AND tbl NOT IN (SELECT value FROM json_each(?2))
               AND id NOT IN (SELECT value FROM json_each(?3))",
        )?
        .execute(rusqlite::params![last_id, &refused_json, &kept_json])?;
        kept.clear();
    }
    // A local write may have ended a clash: rows set aside by it go back at once.
    if aside::any(tx)? {
        let tables = Tables::load(tx)?;
        let mut settled = ImportReport::default();
        log::uncaptured(tx, || {
            settle::settle(tx, r, &tables, &mut settled)?;
            foreign::check(tx, r, &tables, &mut settled)
        })?;
    }
    Ok(report)
}

/// Where each table's changes go: every group that carries the table and lets this
/// device write, with the columns it leaves out; the local group when there is none.
struct Destinations {
    /// By table id.
    carried: HashMap<i64, Vec<Destination>>,
    /// The groups that carry a table where this device only reads, by table id.
    read_only: HashMap<i64, Vec<String>>,
    /// Groups this device may write in, by id, with their shares by table id.
    writable: HashMap<GroupId, HashMap<i64, Destination>>,
}

/// One group a table's changes go to.
#[derive(Clone)]
pub(crate) struct Destination {
    group: GroupId,
    /// For each column of the table, its index in the commit's column list, `None`
    /// for a column the group leaves out; `None` as a whole when it carries them all.
    columns: Option<Vec<Option<u32>>>,
}

impl Destination {
    fn column(&self, i: usize) -> Option<u32> {
        match &self.columns {
            None => Some(i as u32),
            Some(map) => map.get(i).copied().flatten(),
        }
    }
}

impl Destinations {
    fn load(tx: &Transaction, r: &mut Device) -> Result<Destinations> {
        let tables = table::load_all(tx)?;
        let mut carried: HashMap<i64, Vec<Destination>> = HashMap::new();
        let mut read_only: HashMap<i64, Vec<String>> = HashMap::new();
        let mut writable = HashMap::new();
        for id in groups::known(tx)? {
            let Some(g) = groups::load(tx, &mut r.authors, &id)? else {
                continue;
            };
            if !g.role(&r.device).is_some_and(Role::may_write) {
                if g.role(&r.device).is_some() {
                    for t in tables.iter().filter(|t| g.share(&t.name).is_some()) {
                        read_only.entry(t.id).or_default().push(g.name.clone());
                    }
                }
                continue;
            }
            let mut shares = HashMap::new();
            for t in &tables {
                if let Some(share) = g.share(&t.name) {
                    let mut next = 0;
                    let columns = t
                        .columns
                        .iter()
                        .map(|c| {
                            share.carries(c).then(|| {
                                next += 1;
                                next - 1
                            })
                        })
                        .collect();
                    let target = Destination {
                        group: id,
                        columns: Some(columns),
                    };
                    carried.entry(t.id).or_default().push(target.clone());
                    shares.insert(t.id, target);
                }
            }
            writable.insert(id, shares);
        }
        Ok(Destinations {
            carried,
            read_only,
            writable,
        })
    }

    /// Counts a row of `table` written here in `report`, if groups carry the table
    /// where this device only reads (and none where it writes): it stays here.
    fn note_kept_here(&self, table: &TrackedTable, report: &mut SealReport) {
        if self.carried.contains_key(&table.id) {
            return;
        }
        let Some(groups) = self.read_only.get(&table.id) else {
            return;
        };
        match report.kept_here.iter_mut().find(|k| k.table == table.name) {
            Some(k) => k.rows += 1,
            None => report.kept_here.push(KeptHere {
                table: table.name.clone(),
                groups: groups.clone(),
                rows: 1,
            }),
        }
    }

    /// The targets of a log entry: `only` one group (a table newly shared), or all.
    fn of(&self, table: i64, only: Option<GroupId>) -> Vec<Destination> {
        match only {
            Some(g) => self
                .writable
                .get(&g)
                .and_then(|shares| shares.get(&table))
                .cloned()
                .into_iter()
                .collect(),
            None => self.carried.get(&table).cloned().unwrap_or_else(|| {
                vec![Destination {
                    group: GroupId::DEFAULT,
                    columns: None,
                }]
            }),
        }
    }
}

/// A row's logged operations, folded, on their way into a commit.
#[derive(Clone, Copy)]
struct Folded<'a> {
    table: &'a TrackedTable,
    /// The row's key, as `shoal_rows` keeps it and as values.
    blob: &'a [u8],
    key: &'a [Value],
    ops: &'a [Logged],
    /// Whether the entries give a group the row as it is (a table newly shared).
    snapshot: bool,
}

/// The commits of one sealing pass, one per group, all with one clock: a row change
/// sent to two groups has the same version in both, so a device that gets it twice
/// applies it once.
struct Builder {
    me: i64,
    hlc: Hlc,
    ver: Ver,
    parts: BTreeMap<GroupId, Draft>,
    size: usize,
}

/// One commit of a pass being put together.
struct Draft {
    head: Head,
    authors: Vec<DeviceId>,
    author_index: HashMap<DeviceId, u32>,
    ops: Vec<GroupOp>,
    tables: Vec<TableChanges>,
    table_index: HashMap<i64, usize>,
}

impl Draft {
    /// A version as this commit names it: its author by index into the author list.
    fn reference(&mut self, me: DeviceId, version: Version) -> VersionRef {
        let author = if version.author == me {
            0
        } else {
            *self.author_index.entry(version.author).or_insert_with(|| {
                self.authors.push(version.author);
                self.authors.len() as u32
            })
        };
        VersionRef {
            hlc: version.hlc,
            author,
        }
    }
}

impl Builder {
    fn start(tx: &Transaction, r: &mut Device, me: i64) -> Result<Builder> {
        // Never behind any of this device's chains.
        let newest: i64 = tx
            .prepare_cached(
                "SELECT coalesce(max(head_hlc), 0) FROM shoal_chains WHERE author = ?1",
            )?
            .query_row([me], |r| r.get(0))?;
        let hlc = load_hlc(tx)?.max(Hlc(newest as u64)).tick(r.now_ms());
        save_hlc(tx, hlc)?;
        Ok(Builder {
            me,
            hlc,
            ver: Ver {
                hlc: hlc.0,
                author: me,
            },
            parts: BTreeMap::new(),
            size: 0,
        })
    }

    fn part(&mut self, tx: &Transaction, group: GroupId) -> Result<&mut Draft> {
        if !self.parts.contains_key(&group) {
            let head = authors::head(tx, &group, self.me)?;
            self.parts.insert(
                group,
                Draft {
                    head,
                    authors: Vec::new(),
                    author_index: HashMap::new(),
                    ops: Vec::new(),
                    tables: Vec::new(),
                    table_index: HashMap::new(),
                },
            );
        }
        Ok(self.parts.get_mut(&group).expect("inserted above"))
    }

    /// Adds a row's change; returns its size, having added nothing, when it is too
    /// large for any commit.
    fn add(
        &mut self,
        tx: &Transaction,
        r: &mut Device,
        row: Folded<'_>,
        targets: &[Destination],
    ) -> Result<Option<usize>> {
        let Folded {
            table,
            blob,
            key,
            ops,
            snapshot,
        } = row;
        let mut state = rows::load(tx, &mut r.columns, table.id, blob)?;
        let before = state.cl;
        let (mut cl, mut alive) = (state.cl, state.alive());
        let mut all = false;
        let mut changed: Vec<&str> = Vec::new();
        for op in ops {
            match op {
                Logged::Insert | Logged::Update(_) if !alive => {
                    cl += 1;
                    alive = true;
                    all = true;
                }
                // An insert over a live row is a REPLACE: every column is rewritten.
                Logged::Insert => all = true,
                Logged::Update(col) => {
                    if !changed.iter().any(|c| c.eq_ignore_ascii_case(col)) {
                        changed.push(col);
                    }
                }
                Logged::Delete if alive => {
                    cl += 1;
                    alive = false;
                    all = false;
                    changed.clear();
                }
                Logged::Delete => {}
            }
        }
        let current = table.sql.read(tx, key)?;
        // The table is the truth: a row can vanish without a trigger firing (REPLACE
        // deleting another row on a UNIQUE clash), or appear while untracked.
        match (&current, alive) {
            (Some(_), false) => {
                cl += 1;
                alive = true;
                all = true;
            }
            // A row set aside by a constraint is out of its table on purpose: it is
            // not deleted.
            (None, true) if aside::get(tx, table.id, blob)?.is_some() => {
                return Ok(None);
            }
            (None, true) => {
                cl += 1;
                alive = false;
            }
            _ => {}
        }
        let op = match (cl > before, alive) {
            (true, true) => Op::Insert,
            // A row shared with a group anew starts its life there.
            (false, true) if snapshot => Op::Insert,
            (true, false) => Op::Delete,
            (false, true) if all || !changed.is_empty() => Op::Update,
            _ => return Ok(None),
        };
        let columns: Vec<usize> = match op {
            Op::Insert => (0..table.columns.len()).collect(),
            Op::Update if all => (0..table.columns.len()).collect(),
            Op::Update => (0..table.columns.len())
                .filter(|&i| {
                    changed
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&table.columns[i]))
                })
                .collect(),
            Op::Delete => Vec::new(),
        };
        if op == Op::Update && columns.is_empty() {
            return Ok(None);
        }
        let mut size = blob.len() + 16;
        let mut cells: Vec<(usize, Value, Option<Version>)> = Vec::with_capacity(columns.len());
        let mut written = Vec::with_capacity(columns.len());
        let mut seen = None;
        let values = current.unwrap_or_default();
        // A row given to a group anew keeps its life: its insert overwrites, knowingly,
        // the versions this device held, so that a device that holds both sees no
        // clash between them.
        let kept_life = op == Op::Insert && cl == before;
        let kept = kept_life.then(|| state.meta.clone());
        match op {
            Op::Insert => {
                state.meta = RowMeta {
                    event: Some(self.ver),
                    ..RowMeta::default()
                };
            }
            Op::Delete => {
                let newest = state.meta.newest(&mut r.authors, tx)?;
                seen = newest;
                // What the life's writes had seen stays, for writes of it that arrive
                // late, as on every device that applies this delete.
                state.meta = RowMeta {
                    event: Some(self.ver),
                    seen: newest.map(|v| Ver::of(v, &mut r.authors, tx)).transpose()?,
                    cells: std::mem::take(&mut state.meta.cells),
                };
            }
            Op::Update => {}
        }
        for &i in &columns {
            let name = &table.columns[i];
            let overwrote = match (op, &kept) {
                (Op::Update, _) => state.meta.cell(name).map(|c| c.version),
                (Op::Insert, Some(kept)) => kept.cell(name).map(|c| c.version),
                _ => None,
            };
            let overwrote_version = overwrote
                .map(|o| o.resolve(&mut r.authors, tx))
                .transpose()?;
            let v = values.get(i).cloned().unwrap_or(Value::Null);
            size += value_size(&v) + 12;
            cells.push((i, v, overwrote_version));
            written.push((name.as_str(), overwrote_version));
            state.meta.set_cell(name, self.ver, overwrote);
        }
        if size > MAX_COMMIT_BYTES - 4096 {
            return Ok(Some(size));
        }
        state.cl = cl;
        rows::save(tx, &mut r.columns, table.id, blob, &state)?;
        let by = Version {
            hlc: self.hlc,
            author: r.device,
        };
        // A row given to a group anew is nobody's new write: it settles nothing.
        if !kept_life {
            conflict::close_superseded(tx, r, &table.name, blob, cl, &written, by)?;
        }
        for target in targets {
            let part = self.part(tx, target.group)?;
            let slot = match part.table_index.get(&table.id) {
                Some(slot) => *slot,
                None => {
                    // Cells name columns by index into this list, which leaves out the
                    // group's excluded columns.
                    part.tables.push(TableChanges {
                        table: table.name.clone(),
                        key_columns: table.key_columns.clone(),
                        columns: (0..table.columns.len())
                            .filter(|&i| target.column(i).is_some())
                            .map(|i| table.columns[i].clone())
                            .collect(),
                        rows: Vec::new(),
                    });
                    part.table_index.insert(table.id, part.tables.len() - 1);
                    part.tables.len() - 1
                }
            };
            let mut row_cells = Vec::with_capacity(cells.len());
            for (i, v, overwrote) in &cells {
                let Some(column) = target.column(*i) else {
                    continue;
                };
                row_cells.push(Cell {
                    column,
                    value: v.clone(),
                    overwrote: overwrote.map(|o| part.reference(r.device, o)),
                });
            }
            if op == Op::Update && row_cells.is_empty() {
                continue;
            }
            let seen = seen.map(|v| part.reference(r.device, v));
            part.tables[slot].rows.push(RowChange {
                op,
                key: key.to_vec(),
                cl,
                seen,
                cells: row_cells,
            });
        }
        self.size += size;
        Ok(None)
    }

    /// Adds group operations to this pass's commit in `group`.
    fn add_ops(&mut self, tx: &Transaction, group: GroupId, ops: Vec<GroupOp>) -> Result<()> {
        self.part(tx, group)?.ops.extend(ops);
        Ok(())
    }

    fn finish(self, tx: &Transaction, r: &mut Device, report: &mut SealReport) -> Result<()> {
        for (group, part) in self.parts {
            if part.tables.is_empty() && part.ops.is_empty() {
                continue;
            }
            if let Some(original) = &r.copy_of {
                return Err(StoreError::Copied {
                    path: r.path.clone(),
                    original: original.clone(),
                    device: r.device,
                });
            }
            let seq = Seq(part.head.seq.0 + 1);
            let body = CommitBody {
                head: CommitHead {
                    format: FORMAT,
                    group,
                    author: r.device,
                    seq,
                    prev: part.head.hash,
                    hlc: self.hlc,
                    authors: part.authors,
                    ops: part.ops,
                },
                tables: part.tables,
            };
            let changes = body.change_count();
            let commit = body.seal(&r.key)?;
            let checked = Checked {
                hash: commit.hash,
                head: commit.body.head.clone(),
                changes,
            };
            commits::store_commit(tx, part.head.id, &checked, &commit.signed, State::Applied)?;
            groups::record_ops(tx, part.head.id, &checked.head)?;
            authors::advance(tx, &part.head, seq, commit.hash, self.hlc)?;
            report.commits += 1;
            report.changes += changes;
            report.last_seq = Some(seq.0);
            report.last_clock = Some(self.hlc);
        }
        Ok(())
    }
}

/// Gives every group this device can write in, once, the rows it holds of each table
/// the group carries that did not come from the group (those it had before it joined),
/// and seals them. Runs at the end of an import, which is where a device is first
/// let write in a group: the log then holds nothing else, so no row is sealed twice in
/// one commit.
pub(crate) fn give_rows(tx: &Transaction, r: &mut Device) -> Result<SealReport> {
    let targets = Destinations::load(tx, r)?;
    let mut logged = 0;
    for (group, shares) in &targets.writable {
        for tbl in shares.keys() {
            logged += sweep::give_rows(tx, group, *tbl)?.unwrap_or(0);
        }
    }
    if logged == 0 {
        return Ok(SealReport::default());
    }
    seal(tx, r)
}

/// Seals group operations into a commit of `group` of their own, after sealing what
/// was captured before them.
pub(crate) fn seal_ops(
    tx: &Transaction,
    r: &mut Device,
    group: GroupId,
    ops: Vec<GroupOp>,
) -> Result<SealReport> {
    let mut report = seal(tx, r)?;
    let me = r.authors.id(tx, &r.device)?;
    let mut builder = Builder::start(tx, r, me)?;
    builder.add_ops(tx, group, ops)?;
    builder.finish(tx, r, &mut report)?;
    Ok(report)
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Text(b) | Value::Blob(b) => b.len() + 5,
        _ => 9,
    }
}

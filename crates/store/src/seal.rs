//! Sealing: turning captured writes into signed, hash-chained commits.
//!
//! The capture log holds keys only. Sealing folds a row's logged operations into one
//! row change, reads the row's current values, stamps every write with the commit's
//! clock and records what each write overwrote, so that peers can tell a concurrent
//! write from a later one.

use std::collections::{HashMap, HashSet};

use rusqlite::Transaction;
use serde::Serialize;
use shoal_core::commit::{FORMAT, MAX_COMMIT_BYTES};
use shoal_core::{
    Cell, CommitBody, DeviceId, GroupId, Hlc, Op, RowChange, Seq, TableChanges, Value, Version,
    commit::VersionRef,
};

use crate::authors::{self, Head};
use crate::error::{Result, StoreError};
use crate::rows::{self, RowMeta, Ver};
use crate::sql::{Bind, key_blob, value};
use crate::track::{self, TrackedTable};
use crate::{Replica, conflict, import, load_hlc, save_hlc};

/// What sealing did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SealReport {
    /// Commits made.
    pub commits: usize,
    /// Row changes they carry.
    pub changes: usize,
    /// The sequence number of the last commit made.
    pub last_seq: Option<u64>,
    /// The clock of the last commit made: the version of every write it carries.
    pub last_clock: Option<Hlc>,
}

/// Log entries folded at a time; bounds memory whatever the backlog.
const LOG_CHUNK: i64 = 20_000;
/// A commit is closed once its rows reach about this many bytes.
const COMMIT_TARGET_BYTES: usize = 1 << 20;

/// A logged operation, as the triggers write it.
#[derive(Clone, Debug)]
enum Logged {
    Insert,
    Update(String),
    Delete,
}

pub(crate) fn seal(tx: &Transaction, r: &mut Replica) -> Result<SealReport> {
    // A table the app has dropped has nothing left to seal: its log entries go.
    let existing: HashSet<String> = tx
        .prepare_cached("SELECT lower(name) FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let tables: HashMap<i64, TrackedTable> = track::load_all(tx)?
        .into_iter()
        .filter(|t| existing.contains(&t.name.to_lowercase()))
        .map(|t| (t.id, t))
        .collect();
    let me = r.authors.id(tx, &r.device)?;
    let mut report = SealReport::default();
    let mut last_id = 0i64;
    loop {
        let mut folds: Vec<(i64, Vec<Value>, Vec<Logged>)> = Vec::new();
        let mut index: HashMap<(i64, Vec<u8>), usize> = HashMap::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, tbl, op, col, k0, k1, k2, k3, k4, k5, k6, k7 FROM shoal_log WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut q = stmt.query([last_id, LOG_CHUNK])?;
            while let Some(row) = q.next()? {
                last_id = row.get(0)?;
                let tbl: i64 = row.get(1)?;
                let Some(table) = tables.get(&tbl) else {
                    continue;
                };
                let key: Vec<Value> = (0..table.key_columns.len())
                    .map(|i| row.get_ref(4 + i).map(value))
                    .collect::<Result<_, _>>()?;
                let op = match row.get::<_, i64>(2)? {
                    1 => Logged::Insert,
                    2 => Logged::Update(row.get::<_, Option<String>>(3)?.unwrap_or_default()),
                    _ => Logged::Delete,
                };
                let slot = *index.entry((tbl, key_blob(&key))).or_insert_with(|| {
                    folds.push((tbl, key, Vec::new()));
                    folds.len() - 1
                });
                folds[slot].2.push(op);
            }
        }
        if folds.is_empty() {
            break;
        }
        let mut folds = folds.into_iter().peekable();
        while folds.peek().is_some() {
            let mut builder = Builder::start(tx, r, me)?;
            while builder.size < COMMIT_TARGET_BYTES {
                let Some((tbl, key, ops)) = folds.next() else {
                    break;
                };
                builder.add(tx, r, &tables[&tbl], key, &ops)?;
            }
            builder.finish(tx, r, &mut report)?;
        }
        tx.prepare_cached("DELETE FROM shoal_log WHERE id <= ?1")?
            .execute([last_id])?;
    }
    Ok(report)
}

/// One commit being put together.
struct Builder {
    head: Head,
    hlc: Hlc,
    ver: Ver,
    authors: Vec<DeviceId>,
    author_index: HashMap<DeviceId, u32>,
    tables: Vec<TableChanges>,
    table_index: HashMap<i64, usize>,
    size: usize,
}

impl Builder {
    fn start(tx: &Transaction, r: &mut Replica, me: i64) -> Result<Builder> {
        let head = authors::head(tx, me)?;
        let hlc = load_hlc(tx)?.max(head.hlc).tick(r.now_ms());
        save_hlc(tx, hlc)?;
        Ok(Builder {
            head,
            hlc,
            ver: Ver {
                hlc: hlc.0,
                author: me,
            },
            authors: Vec::new(),
            author_index: HashMap::new(),
            tables: Vec::new(),
            table_index: HashMap::new(),
            size: 0,
        })
    }

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

    fn add(
        &mut self,
        tx: &Transaction,
        r: &mut Replica,
        table: &TrackedTable,
        key: Vec<Value>,
        ops: &[Logged],
    ) -> Result<()> {
        let blob = key_blob(&key);
        let mut state = rows::load(tx, table.id, &blob)?;
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
        let current = read_row(tx, table, &key)?;
        // The table is the truth: a row can vanish without a trigger firing (REPLACE
        // deleting another row on a UNIQUE clash), or appear while untracked.
        match (&current, alive) {
            (Some(_), false) => {
                cl += 1;
                alive = true;
                all = true;
            }
            (None, true) => {
                cl += 1;
                alive = false;
            }
            _ => {}
        }
        let op = match (cl > before, alive) {
            (true, true) => Op::Insert,
            (true, false) => Op::Delete,
            (false, true) if all || !changed.is_empty() => Op::Update,
            _ => return Ok(()),
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
            return Ok(());
        }
        let mut size = blob.len() + 16;
        let mut cells = Vec::with_capacity(columns.len());
        let mut written = Vec::with_capacity(columns.len());
        let mut seen = None;
        let values = current.unwrap_or_default();
        match op {
            Op::Insert => {
                state.meta = RowMeta {
                    event: Some(self.ver),
                    ..RowMeta::default()
                };
            }
            Op::Delete => {
                let newest = state.meta.newest(&mut r.authors, tx)?;
                seen = newest.map(|v| self.reference(r.device, v));
                state.meta = RowMeta {
                    event: Some(self.ver),
                    seen: newest.map(|v| Ver::of(v, &mut r.authors, tx)).transpose()?,
                    cells: Vec::new(),
                };
            }
            Op::Update => {}
        }
        for &i in &columns {
            let name = &table.columns[i];
            let overwrote = match op {
                Op::Update => state.meta.cell(name).map(|c| c.version),
                _ => None,
            };
            let overwrote_version = overwrote
                .map(|o| o.resolve(&mut r.authors, tx))
                .transpose()?;
            let overwrote_ref = overwrote_version.map(|v| self.reference(r.device, v));
            let v = values.get(i).cloned().unwrap_or(Value::Null);
            size += value_size(&v) + 12;
            cells.push(Cell {
                column: i as u32,
                value: v,
                overwrote: overwrote_ref,
            });
            written.push((name.as_str(), overwrote_version));
            state.meta.set_cell(name, self.ver, overwrote);
        }
        if size > MAX_COMMIT_BYTES - 4096 {
            return Err(StoreError::RowTooLarge {
                table: table.name.clone(),
                size,
                limit: MAX_COMMIT_BYTES,
            });
        }
        state.cl = cl;
        rows::save(tx, table.id, &blob, &state)?;
        let by = Version {
            hlc: self.hlc,
            author: r.device,
        };
        conflict::close_superseded(tx, r, &table.name, &blob, cl, &written, by)?;
        let slot = *self.table_index.entry(table.id).or_insert_with(|| {
            self.tables.push(TableChanges {
                table: table.name.clone(),
                key_columns: table.key_columns.clone(),
                columns: table.columns.clone(),
                rows: Vec::new(),
            });
            self.tables.len() - 1
        });
        self.tables[slot].rows.push(RowChange {
            op,
            key,
            cl,
            seen,
            cells,
        });
        self.size += size;
        Ok(())
    }

    fn finish(self, tx: &Transaction, r: &mut Replica, report: &mut SealReport) -> Result<()> {
        if self.tables.is_empty() {
            return Ok(());
        }
        let seq = Seq(self.head.seq.0 + 1);
        let body = CommitBody {
            format: FORMAT,
            group: GroupId::DEFAULT,
            author: r.device,
            seq,
            prev: self.head.hash,
            hlc: self.hlc,
            authors: self.authors,
            tables: self.tables,
        };
        let changes = body.change_count();
        let commit = body.seal(&r.key)?;
        import::store_commit(tx, self.head.id, &commit, import::State::Applied)?;
        authors::advance(tx, self.head.id, seq, commit.hash, self.hlc)?;
        report.commits += 1;
        report.changes += changes;
        report.last_seq = Some(seq.0);
        report.last_clock = Some(self.hlc);
        Ok(())
    }
}

/// The row's non-key columns as they are now, or `None` when it does not exist.
pub(crate) fn read_row(
    tx: &Transaction,
    table: &TrackedTable,
    key: &[Value],
) -> Result<Option<Vec<Value>>> {
    let mut stmt = tx.prepare_cached(&table.sql.select_row)?;
    let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
    let mut q = stmt.query(rusqlite::params_from_iter(&binds))?;
    match q.next()? {
        Some(row) => Ok(Some(
            (0..table.columns.len())
                .map(|i| row.get_ref(i).map(value))
                .collect::<Result<_, _>>()?,
        )),
        None => Ok(None),
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Text(b) | Value::Blob(b) => b.len() + 5,
        _ => 9,
    }
}

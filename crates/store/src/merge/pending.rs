//! Row changes of accepted commits waiting to be applied, sorted by table and key, and
//! read back in that order.
//!
//! Sorting, and reading sorted runs back, is work that needs no database: while the
//! merge writes one batch of changes, a second thread reads and prepares the next.
//!
//! The row changes of every commit an import accepts wait as they were signed (about 45
//! bytes each, with their keys); past 4 MiB they are sorted by table and key and written
//! to a temporary file as a run, and the runs are merged (2 MiB of read buffers among
//! them) into one pass over the tables in key order. The sort is stable and the merge
//! takes ties from the earlier run, so the changes to one row keep the order their
//! commits were accepted in. Past 4096 changes, or once runs were written, a second
//! thread reads the sorted changes back, checks each, and finds the values of every
//! insert that may go in with others, 1024 at a time and at most two batches ahead; the
//! connection's thread only decides and writes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::rc::Rc;

use rusqlite::Transaction;
use shoal_core::{BodyView, DeviceId, Group, Op, RowView};

use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::merge::apply::Merger;
use crate::merge::batch::{Batch, Bound, Insert, Item, Part, torn};
use crate::merge::fresh::{self, Fresh};
use crate::merge::tables::Tables;
use crate::report::ImportReport;

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
    ///
    /// A large import is read back on a second thread, a [`Batch`] at a time, while
    /// this one writes the batch before: reading sorted runs and checking each change
    /// costs about as much as writing it.
    pub(crate) fn apply(
        &mut self,
        tx: &Transaction,
        r: &mut Device,
        tables: &Tables,
        report: &mut ImportReport,
    ) -> Result<()> {
        let mut this = std::mem::take(self);
        match this.runs {
            Some(_) => this.spill()?,
            None => this.sort(),
        }
        let Pending {
            parts,
            rows,
            bytes,
            runs,
            gather,
            ..
        } = &this;
        let shapes = parts
            .iter()
            .map(|p| gather.then(|| fresh::shape(tables, p)).flatten())
            .collect();
        let orders = parts.iter().map(|p| p.order).collect();
        let mut feed = Feed::new(rows, bytes, runs.as_ref(), orders, shapes)?;
        let mut fresh = Fresh::new();
        let mut m = Merger {
            tx,
            r,
            tables,
            report,
        };
        if runs.is_none() && rows.len() < READ_AHEAD_FROM {
            while let Some(batch) = feed.next()? {
                fresh.take(&mut m, parts, &batch)?;
            }
        } else {
            std::thread::scope(|s| {
                let (send, batches) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
                let reading = s.spawn(move || -> Result<()> {
                    while let Some(batch) = feed.next()? {
                        // Gone only when the writing side failed, with its own error.
                        if send.send(batch).is_err() {
                            break;
                        }
                    }
                    Ok(())
                });
                for batch in &batches {
                    fresh.take(&mut m, parts, &batch)?;
                }
                reading
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })?;
        }
        fresh.flush(&mut m, parts)
    }
}

/// Below this many changes held in memory, reading them back is not worth a thread.
const READ_AHEAD_FROM: usize = 4096;

/// How many batches the reading thread may be ahead of the writing one.
const BATCHES_AHEAD: usize = 2;

/// How many changes a batch holds at most.
const BATCH_CHANGES: usize = 1024;

/// Reads the waiting changes back in key order, a [`Batch`] at a time: from memory,
/// or merged from the runs. It needs no database, so it can run on its own thread.
struct Feed<'a> {
    sorted: Sorted<'a>,
    batcher: Batcher,
}

/// Where sorted changes come from.
enum Sorted<'a> {
    Memory {
        rows: std::slice::Iter<'a, PendingRow>,
        bytes: &'a [u8],
    },
    Runs {
        file: &'a std::fs::File,
        readers: Vec<RunReader>,
        heap: BinaryHeap<Reverse<Head>>,
    },
}

/// Puts sorted changes into batches, reading each that may be an [`Insert`].
struct Batcher {
    /// Per part: its table's place in the sort order.
    orders: Vec<u32>,
    /// Per part: the number of key values and of cells its inserts have when they
    /// can be an [`Insert`] (see [`fresh::shape`]).
    shapes: Vec<Option<(usize, usize)>>,
    /// The previous change's table and key.
    last: Option<(u32, Vec<u8>)>,
}

impl<'a> Feed<'a> {
    fn new(
        rows: &'a [PendingRow],
        bytes: &'a [u8],
        runs: Option<&'a Runs>,
        orders: Vec<u32>,
        shapes: Vec<Option<(usize, usize)>>,
    ) -> Result<Feed<'a>> {
        let batcher = Batcher {
            orders,
            shapes,
            last: None,
        };
        let sorted = match runs {
            None => Sorted::Memory {
                rows: rows.iter(),
                bytes,
            },
            Some(runs) => {
                let window = (MERGE_BYTES / runs.spans.len().max(1)).clamp(4 << 10, 1 << 20);
                let mut readers = Vec::with_capacity(runs.spans.len());
                let mut heap = BinaryHeap::with_capacity(runs.spans.len());
                for (i, &(start, end)) in runs.spans.iter().enumerate() {
                    let mut reader = RunReader::new(start, end, window);
                    let mut key = Vec::new();
                    if reader.next(&runs.file, &mut key)? {
                        let order = batcher.order(reader.part)?;
                        heap.push(Reverse(Head { order, key, run: i }));
                    }
                    readers.push(reader);
                }
                Sorted::Runs {
                    file: &runs.file,
                    readers,
                    heap,
                }
            }
        };
        Ok(Feed { sorted, batcher })
    }

    /// The next batch of changes; `None` once all are read.
    fn next(&mut self) -> Result<Option<Batch>> {
        let mut batch = Batch::default();
        while batch.items.len() < BATCH_CHANGES {
            match &mut self.sorted {
                Sorted::Memory { rows, bytes } => {
                    let Some(row) = rows.next() else {
                        break;
                    };
                    let key = &bytes[row.start as usize..row.key_end as usize];
                    let change = &bytes[row.key_end as usize..row.end as usize];
                    self.batcher.push(&mut batch, row.part, key, change)?;
                }
                Sorted::Runs {
                    file,
                    readers,
                    heap,
                } => {
                    let Some(Reverse(mut head)) = heap.pop() else {
                        break;
                    };
                    let reader = &mut readers[head.run];
                    self.batcher
                        .push(&mut batch, reader.part, &head.key, &reader.change)?;
                    if reader.next(file, &mut head.key)? {
                        head.order = self.batcher.order(reader.part)?;
                        heap.push(Reverse(head));
                    }
                }
            }
        }
        Ok((!batch.items.is_empty()).then_some(batch))
    }
}

impl Batcher {
    /// The place in the sort order of part `part`'s table.
    fn order(&self, part: u32) -> Result<u32> {
        self.orders
            .get(part as usize)
            .copied()
            .ok_or_else(|| torn("a run names a change that was not kept"))
    }

    /// Adds one change to `batch`, read as an [`Insert`] when it can be one.
    fn push(&mut self, batch: &mut Batch, part: u32, key: &[u8], change: &[u8]) -> Result<()> {
        let order = self.order(part)?;
        let again = match &mut self.last {
            Some((o, k)) if *o == order && k.as_slice() == key => true,
            Some((o, k)) => {
                *o = order;
                k.clear();
                k.extend_from_slice(key);
                false
            }
            None => {
                self.last = Some((order, key.to_vec()));
                false
            }
        };
        let key_at = batch.bytes.len();
        batch.bytes.extend_from_slice(key);
        let at = batch.bytes.len();
        batch.bytes.extend_from_slice(change);
        let insert = match self.shapes.get(part as usize).copied().flatten() {
            Some(shape) if !again => read_insert(batch, at, shape)?,
            _ => None,
        };
        batch.items.push(Item {
            part,
            key: key_at..at,
            change: at..batch.bytes.len(),
            insert,
        });
        Ok(())
    }
}

/// Reads the change at `at` in `batch` as an [`Insert`] of `shape` (key values,
/// cells), if it is one.
fn read_insert(batch: &mut Batch, at: usize, shape: (usize, usize)) -> Result<Option<Insert>> {
    let change = &batch.bytes[at..];
    let view = RowView::read(change)?;
    if view.op != Op::Insert || (view.key_len, view.cell_count) != shape {
        return Ok(None);
    }
    let (values, overwrote) = (batch.values.len(), batch.overwrote.len());
    batch
        .values
        .extend(view.key_values().map(|v| Bound::of(v, change)));
    for (i, cell) in view.cells().enumerate() {
        if cell.column as usize != i {
            batch.values.truncate(values);
            batch.overwrote.truncate(overwrote);
            return Ok(None);
        }
        batch.values.push(Bound::of(cell.value, change));
        batch.overwrote.push(cell.overwrote);
    }
    Ok(Some(Insert {
        key: view.key_span(),
        cl: view.cl,
        values: values..batch.values.len(),
        overwrote: overwrote..batch.overwrote.len(),
    }))
}

/// A run that does not read back as it was written.
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

#[cfg(test)]
mod tests {
    use shoal_core::GroupId;

    use super::*;
    use crate::tables::log::uncaptured;
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
    use shoal_core::{GroupId, SignedCommit, Value};

    use super::*;
    use crate::tables::log::uncaptured;
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
                    crate::merge::foreign::check(tx, r, &tables, &mut report)
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

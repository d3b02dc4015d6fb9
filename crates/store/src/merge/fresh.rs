//! Inserts of rows new to this file, the bulk of a first sync, written many rows to a
//! statement.
//!
//! An import's changes reach the merge sorted by table and key (see
//! [`Pending`](crate::merge::pending::Pending)). An insert of a key that `shoal_rows` does not
//! hold and that has no conflict open needs nothing of the merge: its row and its
//! merge state are written as they come. Such inserts are gathered and written up to
//! [`ROWS`] to a statement, into the app's table and into `shoal_rows`, which costs
//! SQLite much less per row than a statement each. Any other change, a later change to
//! a gathered key included, is applied on its own, after what was gathered before it.
//! The outcome is the same, row for row and byte for byte, as applying every change on
//! its own.

use std::ops::Range;

use rusqlite::{ErrorCode, Transaction};

use crate::error::Result;
use crate::merge::apply::Merger;
use crate::merge::batch::{self, Batch, Bound, Insert, Part};
use crate::merge::conflict;
use crate::merge::tables::Tables;
use crate::sql::BindRef;
use crate::tables::rows::{self, Ver};
use crate::tables::table::TrackedTable;

/// The most rows one statement writes. Fewer are written with statements for the
/// powers of two below it, so that every statement is prepared once per import.
const ROWS: usize = 64;

/// How many gathered inserts wait before they are written.
const GATHER: usize = 16 * ROWS;

/// How many keys of `shoal_rows`, or of open conflicts, are read ahead at a time.
const READ_AHEAD: usize = 16;

/// Sorted changes on their way into the file, inserts of new rows gathered.
pub(crate) struct Fresh {
    /// Per part: the version its changes write, numbered as `shoal_rows` keeps it.
    events: Vec<Option<Ver>>,
    /// The table inserts are gathered for.
    target: Option<Target>,
    gathered: Vec<Gathered>,
    /// The gathered changes, as they were signed, one after another.
    changes: Vec<u8>,
    /// Every value of the gathered rows, key first, in the table's column order.
    values: Vec<Bound>,
    /// The merge states of the gathered rows, one after another.
    states: Vec<u8>,
    /// Room to work out one row's cells.
    cells: Vec<(u32, Option<Ver>)>,
    /// Which keys `shoal_rows` holds.
    stored: Known,
    /// Which keys have a conflict open, which a write to the row may settle.
    disputed: Known,
}

/// A table inserts are gathered for, with what writing them needs.
struct Target {
    table: TrackedTable,
    /// The number each of the table's columns goes by in `shoal_rows`.
    columns: Vec<u32>,
    /// The statements writing 1, 2, 4 … [`ROWS`] rows, into the table and into
    /// `shoal_rows`, made when first needed.
    sql: Vec<Option<(String, String)>>,
}

/// An insert waiting to be written.
struct Gathered {
    part: u32,
    /// Where the encoded change is in [`Fresh::changes`], and its key.
    change: Range<usize>,
    key: Range<usize>,
    /// Where its values are in [`Fresh::values`].
    values: Range<usize>,
    cl: u64,
    /// Where the row's merge state, encoded as `shoal_rows` keeps it, is in
    /// [`Fresh::states`].
    state: Range<usize>,
}

impl Fresh {
    pub(crate) fn new() -> Fresh {
        Fresh {
            events: Vec::new(),
            target: None,
            gathered: Vec::new(),
            changes: Vec::new(),
            values: Vec::new(),
            states: Vec::new(),
            cells: Vec::new(),
            stored: Known::new(Keys::Stored),
            disputed: Known::new(Keys::Disputed),
        }
    }

    /// Takes the next changes in order.
    pub(crate) fn take(
        &mut self,
        m: &mut Merger<'_, '_>,
        parts: &[Part],
        batch: &Batch,
    ) -> Result<()> {
        for item in &batch.items {
            let key = &batch.bytes[item.key.clone()];
            let change = &batch.bytes[item.change.clone()];
            if let Some(insert) = &item.insert
                && self.new_row(m, parts, item.part, key)?
            {
                self.gather(m, parts, item.part, insert, change, batch)?;
                continue;
            }
            self.flush(m, parts)?;
            let p = batch::part(parts, item.part)?;
            if let Some(incoming) = p.incoming_of(postcard::from_bytes(change)?) {
                m.apply(incoming)?;
            }
        }
        Ok(())
    }

    /// Whether an [`Insert`] of part `part` makes a row new to the file, which no
    /// open conflict is about; if so, its table is made the target, what was gathered
    /// for another written first.
    fn new_row(
        &mut self,
        m: &mut Merger<'_, '_>,
        parts: &[Part],
        part: u32,
        key: &[u8],
    ) -> Result<bool> {
        let (tx, tables) = (m.tx, m.tables);
        let p = batch::part(parts, part)?;
        let Some(table) = tables.get(&p.table) else {
            return Ok(false);
        };
        if self.target.as_ref().map(|t| t.table.id) != Some(table.id) {
            self.flush(m, parts)?;
            let mut columns = Vec::with_capacity(table.columns.len());
            for name in &table.columns {
                columns.push(m.r.columns.id(tx, table.id, name)?);
            }
            self.target = Some(Target {
                table: table.clone(),
                columns,
                sql: vec![None; ROWS.ilog2() as usize + 1],
            });
        }
        if self.stored.holds(tx, table, key)? {
            return Ok(false);
        }
        Ok(!conflict::any_open(tx, m.r)? || !self.disputed.holds(tx, table, key)?)
    }

    /// Gathers an insert that [`Fresh::new_row`] found to make a new row of the
    /// target table, writing what was gathered when there is enough.
    fn gather(
        &mut self,
        m: &mut Merger<'_, '_>,
        parts: &[Part],
        part: u32,
        insert: &Insert,
        change: &[u8],
        batch: &Batch,
    ) -> Result<()> {
        let tx = m.tx;
        let p = batch::part(parts, part)?;
        let Some(target) = &self.target else {
            return Ok(());
        };
        if self.events.len() <= part as usize {
            self.events.resize(part as usize + 1, None);
        }
        let event = match self.events[part as usize] {
            Some(event) => event,
            None => *self.events[part as usize].insert(Ver::of(p.version, &mut m.r.authors, tx)?),
        };
        self.cells.clear();
        for (overwrote, &column) in batch.overwrote[insert.overwrote.clone()]
            .iter()
            .zip(&target.columns)
        {
            let overwrote = overwrote
                .and_then(|o| p.resolve(o))
                .map(|o| Ver::of(o, &mut m.r.authors, tx))
                .transpose()?;
            self.cells.push((column, overwrote));
        }
        let start = self.states.len();
        let states = std::mem::take(&mut self.states);
        self.states = rows::encode_inserted(event, &self.cells, states)?;
        let at = self.changes.len();
        self.changes.extend_from_slice(change);
        let first = self.values.len();
        self.values.extend(
            batch.values[insert.values.clone()]
                .iter()
                .map(|v| v.shifted(at)),
        );
        self.gathered.push(Gathered {
            part,
            change: at..self.changes.len(),
            key: at + insert.key.start..at + insert.key.end,
            values: first..self.values.len(),
            cl: insert.cl,
            state: start..self.states.len(),
        });
        if self.gathered.len() >= GATHER {
            self.flush(m, parts)?;
        }
        Ok(())
    }

    /// Writes what was gathered.
    pub(crate) fn flush(&mut self, m: &mut Merger<'_, '_>, parts: &[Part]) -> Result<()> {
        let (tx, tables) = (m.tx, m.tables);
        if self.gathered.is_empty() {
            return Ok(());
        }
        let Some(Target { table, sql, .. }) = &mut self.target else {
            return Ok(());
        };
        let gathered = std::mem::take(&mut self.gathered);
        let mut rest = &gathered[..];
        while !rest.is_empty() {
            let size = ROWS.min(1 << rest.len().ilog2());
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let (rows_sql, states_sql) = statements(table, sql, size);
            match write_rows(tx, rows_sql, chunk, &self.changes, &self.values) {
                Ok(()) => {
                    write_states(tx, states_sql, table.id, chunk, &self.changes, &self.states)?;
                    for g in chunk {
                        let version = batch::part(parts, g.part)?.version;
                        tables.note_written_blob(table, &self.changes[g.key.clone()], version)?;
                    }
                    m.report.changes_applied += chunk.len();
                }
                // A row breaks a constraint of the local schema: the statement
                // changed nothing. One by one, only that row is refused.
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    for g in chunk {
                        let p = batch::part(parts, g.part)?;
                        let change = postcard::from_bytes(&self.changes[g.change.clone()])?;
                        if let Some(incoming) = p.incoming_of(change) {
                            m.apply(incoming)?;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.gathered = gathered;
        self.gathered.clear();
        self.changes.clear();
        self.values.clear();
        self.states.clear();
        Ok(())
    }
}

/// The number of key values and cells an insert of part `p` has when it names the
/// local table's key and columns in the local order, each carried by the part's
/// group; `None` when its table is not here or it names them otherwise.
pub(crate) fn shape(tables: &Tables, p: &Part) -> Option<(usize, usize)> {
    let table = tables.get(&p.table)?;
    let direct = p.kept.iter().all(|k| *k)
        && crate::tables::follow::same_names(&p.key_columns, &table.key_columns)
        && crate::tables::follow::same_names(
            &p.columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            &table.columns,
        );
    direct.then_some((table.key_columns.len(), table.columns.len()))
}

/// The statements writing `size` rows of `t`, a power of two up to [`ROWS`], made once.
fn statements<'a>(
    t: &TrackedTable,
    made: &'a mut [Option<(String, String)>],
    size: usize,
) -> (&'a str, &'a str) {
    let (rows, states) = made[size.ilog2() as usize].get_or_insert_with(|| {
        let rows = t.sql.upsert_rows(size);
        let states: Vec<String> = (0..size)
            .map(|i| format!("(?1, ?{}, ?{}, ?{})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
            .collect();
        // `OR FAIL`: these keys are known to be new, so nothing here can break a
        // constraint, and SQLite need not keep a journal to take the statement back,
        // as it must for a multi-row statement that may abort. Were one broken, the
        // error would take the whole import back.
        let states = format!(
            "INSERT OR FAIL INTO shoal_rows(tbl, key, cl, meta) VALUES {}",
            states.join(", ")
        );
        (rows, states)
    });
    (rows, states)
}

/// Inserts or overwrites the rows of `chunk` in the app's table, every column.
fn write_rows(
    tx: &Transaction,
    sql: &str,
    chunk: &[Gathered],
    changes: &[u8],
    values: &[Bound],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    let mut at = 1;
    for g in chunk {
        for value in &values[g.values.clone()] {
            stmt.raw_bind_parameter(at, BindRef(value.get(changes)))?;
            at += 1;
        }
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Stores the merge state of the rows of `chunk`, which `shoal_rows` does not hold.
fn write_states(
    tx: &Transaction,
    sql: &str,
    table: i64,
    chunk: &[Gathered],
    changes: &[u8],
    states: &[u8],
) -> Result<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    stmt.raw_bind_parameter(1, table)?;
    for (i, g) in chunk.iter().enumerate() {
        stmt.raw_bind_parameter(3 * i + 2, &changes[g.key.clone()])?;
        stmt.raw_bind_parameter(3 * i + 3, g.cl as i64)?;
        stmt.raw_bind_parameter(3 * i + 4, &states[g.state.clone()])?;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Which keys of a table `shoal_rows` holds, or have an open conflict, read ahead in
/// key order a page at a time. Keys are asked in rising order; the changes applied
/// meanwhile write rows and record conflicts only for keys already asked, so a page
/// read stays true for the keys after them.
struct Known {
    keys_of: Keys,
    table: i64,
    /// Every key from where the page was read up to its last, or to the table's end
    /// when `to_end`.
    keys: Vec<Vec<u8>>,
    /// How many of `keys` are below the keys still to be asked.
    passed: usize,
    to_end: bool,
    read: bool,
}

/// What a [`Known`] reads ahead.
#[derive(Clone, Copy)]
enum Keys {
    /// The keys of rows in `shoal_rows`.
    Stored,
    /// The keys with a conflict open in the inbox.
    Disputed,
}

impl Keys {
    /// The query for the keys from `?2` on, of table `?1`, at most `?3`, each using
    /// its index.
    fn sql(self) -> &'static str {
        match self {
            Keys::Stored => {
                "SELECT key FROM shoal_rows WHERE tbl = ?1 AND key >= ?2 ORDER BY key LIMIT ?3"
            }
            Keys::Disputed => {
                "SELECT key FROM shoal_conflicts
                 WHERE tbl = ?1 AND key >= ?2 AND status IN ('pending', 'auto')
                 ORDER BY key LIMIT ?3"
            }
        }
    }
}

impl Known {
    fn new(keys_of: Keys) -> Known {
        Known {
            keys_of,
            table: 0,
            keys: Vec::new(),
            passed: 0,
            to_end: false,
            read: false,
        }
    }

    fn holds(&mut self, tx: &Transaction, table: &TrackedTable, key: &[u8]) -> Result<bool> {
        if !self.read || self.table != table.id {
            self.read_from(tx, table, key)?;
        }
        loop {
            while self
                .keys
                .get(self.passed)
                .is_some_and(|k| k.as_slice() < key)
            {
                self.passed += 1;
            }
            if let Some(next) = self.keys.get(self.passed) {
                return Ok(next.as_slice() == key);
            }
            if self.to_end {
                return Ok(false);
            }
            self.read_from(tx, table, key)?;
        }
    }

    fn read_from(&mut self, tx: &Transaction, table: &TrackedTable, key: &[u8]) -> Result<()> {
        let mut stmt = tx.prepare_cached(self.keys_of.sql())?;
        let limit = READ_AHEAD as i64;
        let table_is: &dyn rusqlite::ToSql = match self.keys_of {
            Keys::Stored => &table.id,
            Keys::Disputed => &table.name,
        };
        let rows = stmt.query_map(rusqlite::params![table_is, key, limit], |r| r.get(0))?;
        self.keys = rows.collect::<rusqlite::Result<_>>()?;
        self.to_end = self.keys.len() < READ_AHEAD;
        self.passed = 0;
        self.table = table.id;
        self.read = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};

    /// Keys asked in rising order, present and absent, over more than a page: the
    /// read-aheads answer as a lookup of each would, and only open conflicts count.
    #[test]
    fn reading_keys_ahead_answers_as_a_lookup_would() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, body);"))
            .expect("schema");
        let mut store =
            Store::init(&path, StoreOptions::new(dir.path().join("keys"))).expect("init");
        store.track("notes", None).expect("track");
        let key = |id: &str| crate::sql::key_blob(&[shoal_core::Value::Text(id.into())]);
        // Every third of k00..k59 is a row; k07 and k31 have open conflicts, k13 a
        // resolved one.
        for i in (0..60).step_by(3) {
            store
                .connection()
                .execute("INSERT INTO notes VALUES (?1, 'x')", [format!("k{i:02}")])
                .expect("insert");
        }
        store.seal().expect("seal");
        for (id, status) in [("k07", "pending"), ("k13", "resolved"), ("k31", "auto")] {
            store
                .connection()
                .execute(
                    "INSERT INTO shoal_conflicts (id, kind, tbl, key, cl, columns, winner,
                     remote_hlc, remote_device, status, found_hlc)
                     VALUES (?1, 'constraint', 'notes', ?2, 1, '[]', 'local', 1, x'00', ?3, 1)",
                    rusqlite::params![id, key(id), status],
                )
                .expect("conflict");
        }
        let (stored, disputed) = store
            .write(|tx, _| {
                let table = crate::tables::table::load_by_name(tx, "notes")?.expect("tracked");
                let (mut rows, mut open) = (Known::new(Keys::Stored), Known::new(Keys::Disputed));
                // Asked in the order of their blobs, as sorted changes come.
                let mut ids: Vec<String> = (0..60)
                    .flat_map(|i| [format!("k{i:02}"), format!("k{i:02}a")])
                    .collect();
                ids.sort_by_key(|id| key(id));
                let (mut stored, mut disputed) = (Vec::new(), Vec::new());
                for id in ids {
                    if rows.holds(tx, &table, &key(&id))? {
                        stored.push(id.clone());
                    }
                    if open.holds(tx, &table, &key(&id))? {
                        disputed.push(id);
                    }
                }
                Ok((stored, disputed))
            })
            .expect("ask");
        let every_third: Vec<String> = (0..60).step_by(3).map(|i| format!("k{i:02}")).collect();
        assert_eq!(stored, every_third);
        assert_eq!(disputed, ["k07", "k31"]);
    }

    /// Both read-aheads go through an index, not a scan of every row or conflict.
    #[test]
    fn reading_keys_ahead_uses_an_index() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, body);"))
            .expect("schema");
        let store = Store::init(&path, StoreOptions::new(dir.path().join("keys"))).expect("init");
        for (keys, index) in [
            (Keys::Stored, "PRIMARY KEY"),
            (Keys::Disputed, "shoal_conflicts_row"),
        ] {
            let plan: Vec<String> = store
                .connection()
                .prepare(&format!("EXPLAIN QUERY PLAN {}", keys.sql()))
                .and_then(|mut s| {
                    s.query_map(rusqlite::params![1, b"k".as_slice(), 16], |r| r.get(3))?
                        .collect()
                })
                .expect("plan");
            assert!(
                plan.iter().any(|step| step.contains(index))
                    && !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{plan:?}"
            );
        }
    }
}

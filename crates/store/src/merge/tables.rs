//! The tracked tables a merge writes to, loaded once per transaction, with what the
//! merge needs to know of them as it goes.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use rusqlite::Transaction;
use shoal_core::{Value, Version};

use crate::error::Result;
use crate::merge::aside;
use crate::tables::follow;
use crate::tables::foreign_keys::{self, ForeignKey};
use crate::tables::table::{self, TrackedTable};

/// A row of a tracked table: the table's id and the row's key.
pub(crate) type RowRef = (i64, Vec<Value>);

/// The tracked tables by lower-cased name, loaded once per transaction, with the
/// foreign keys of each and the rows this transaction wrote to tables that have any.
pub(crate) struct Tables {
    by_name: HashMap<String, TrackedTable>,
    /// Tracked tables, by lower-cased name, whose schema changed here in a way Shoal
    /// does not follow by itself.
    pub(crate) refused: HashSet<String>,
    foreign: HashMap<i64, Vec<ForeignKey>>,
    /// Rows written to tables with foreign keys, checked once the whole batch is in,
    /// so that a child arriving before its parent in one batch is no violation.
    written: RefCell<Vec<(i64, Vec<Value>, Version)>>,
    /// Lower-cased names of the tables some foreign key refers to.
    referred: HashSet<String>,
    /// Rows deleted from those, whose children are checked with the rest.
    deleted: RefCell<Vec<RowRef>>,
    /// Whether any row may be set aside (`shoal_aside`): only then is it looked in.
    pub(crate) aside: Cell<bool>,
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
        for t in table::load_all(tx)?
            .into_iter()
            .filter(|t| t.tracked || untracked)
        {
            // A table whose schema changed here in a way Shoal does not follow gets no
            // remote changes: they are held until it is sorted out. (An untracked
            // table has no triggers: only its columns are compared.)
            let change = if t.tracked {
                follow::change(tx, &t.as_tracked())?
            } else {
                follow::columns_change(tx, &t.as_tracked())?
            };
            if change.is_some() {
                refused.insert(t.name.to_lowercase());
                continue;
            }
            let keys = foreign_keys::load(tx, &t.name)?;
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

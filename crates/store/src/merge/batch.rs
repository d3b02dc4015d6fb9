//! Row changes as the merge takes them from the changes waiting: what the changes of
//! one commit to one table share ([`Part`]), and a run of changes in key order read
//! back and checked ([`Batch`]).

use std::ops::Range;
use std::rc::Rc;

use shoal_core::{DeviceId, Op, RowChange, ValueRef, Version, VersionRef};

use crate::error::{Result, StoreError};
use crate::merge::apply::{Incoming, IncomingCell};

/// What the row changes of one commit to one table share.
pub(crate) struct Part {
    /// Which of the tables of the changes waiting the changes are for: they sort by it.
    pub(crate) order: u32,
    pub(crate) table: Rc<str>,
    pub(crate) key_columns: Rc<[String]>,
    pub(crate) columns: Vec<Rc<str>>,
    /// Which of `columns` the commit's group carries.
    pub(crate) kept: Vec<bool>,
    pub(crate) version: Version,
    /// The commit's author list, against which version references resolve.
    pub(crate) authors: Rc<[DeviceId]>,
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

/// Changes in key order, read back and checked, ready for
/// [`Fresh`](crate::merge::fresh::Fresh).
#[derive(Default)]
pub(crate) struct Batch {
    /// Each change's key, then the change, one after another.
    pub(crate) bytes: Vec<u8>,
    pub(crate) items: Vec<Item>,
    /// The values of the [`Insert`]s, key first.
    pub(crate) values: Vec<Bound>,
    /// What the cells of the [`Insert`]s overwrote.
    pub(crate) overwrote: Vec<Option<VersionRef>>,
}

/// One change of a [`Batch`].
pub(crate) struct Item {
    pub(crate) part: u32,
    /// Where its key and the change are in [`Batch::bytes`].
    pub(crate) key: Range<usize>,
    pub(crate) change: Range<usize>,
    /// Set when the change may insert a new row in one go: see [`Insert`].
    pub(crate) insert: Option<Insert>,
}

/// An insert that names the local table's key and every column, in the local order,
/// each carried by its group, and that is not a later change to the key of the change
/// before it (what came before decides what that one does).
pub(crate) struct Insert {
    /// Where its key is in the change.
    pub(crate) key: Range<usize>,
    pub(crate) cl: u64,
    /// Where its values are in [`Batch::values`], its cells' in [`Batch::overwrote`].
    pub(crate) values: Range<usize>,
    pub(crate) overwrote: Range<usize>,
}

/// One value of an encoded change, found once: numbers as they are, text and blobs
/// as where their bytes lie in the change. Binding it needs no second reading.
#[derive(Clone, Debug)]
pub(crate) enum Bound {
    Null,
    Integer(i64),
    Real(f64),
    Text(Range<usize>),
    Blob(Range<usize>),
}

impl Bound {
    /// `value`, borrowed from `change`.
    pub(crate) fn of(value: ValueRef, change: &[u8]) -> Bound {
        // Where `bytes` starts in `change`, which it was read from.
        let at = |bytes: &[u8]| {
            let start = bytes.as_ptr().addr() - change.as_ptr().addr();
            start..start + bytes.len()
        };
        match value {
            ValueRef::Null => Bound::Null,
            ValueRef::Integer(i) => Bound::Integer(i),
            ValueRef::Real(r) => Bound::Real(r),
            ValueRef::Text(t) => Bound::Text(at(t)),
            ValueRef::Blob(b) => Bound::Blob(at(b)),
        }
    }

    /// The same value, its change moved `by` bytes on.
    pub(crate) fn shifted(&self, by: usize) -> Bound {
        match self {
            Bound::Text(r) => Bound::Text(r.start + by..r.end + by),
            Bound::Blob(r) => Bound::Blob(r.start + by..r.end + by),
            other => other.clone(),
        }
    }

    /// The value, read from the bytes its offsets are into.
    pub(crate) fn get<'a>(&self, bytes: &'a [u8]) -> ValueRef<'a> {
        match self {
            Bound::Null => ValueRef::Null,
            Bound::Integer(i) => ValueRef::Integer(*i),
            Bound::Real(r) => ValueRef::Real(*r),
            Bound::Text(r) => ValueRef::Text(&bytes[r.clone()]),
            Bound::Blob(r) => ValueRef::Blob(&bytes[r.clone()]),
        }
    }
}

/// A run that does not read back as it was written.
pub(crate) fn torn(what: &str) -> StoreError {
    StoreError::Spill(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

//! Commits read in place: the head of a body decoded, its row changes left as the bytes
//! they were signed as.
//!
//! A first sync brings millions of row changes. Decoding each into owned values costs
//! a dozen small allocations, and the store only moves most of them on: into a sorted
//! run, then into a multi-row statement. The views here find each change's bytes, its
//! key's bytes and its values without copying any, and check every length and tag as
//! they go, so bytes that do not hold a change are an error, never a panic.
//!
//! The encoding is postcard's, as [`CommitBody`](crate::CommitBody) and
//! [`RowChange`](crate::RowChange) derive it: the fields in order, integers as
//! LEB128 varints (signed ones zigzagged), lengths before sequences and bytes, enum
//! variants by index, `Option` as a 0 or 1 byte, floats as 8 little-endian bytes.

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;
use crate::error::CoreError;
use crate::group::GroupOp;
use crate::identity::{DeviceId, GroupId, Seq};
use crate::version::{CommitHash, Op, Version, VersionRef};

/// Every field of a [`CommitBody`](crate::CommitBody) before its tables, in its order:
/// the part of a commit that chain, clock and membership checks read.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CommitHead {
    /// The encoding format.
    pub format: u8,
    /// The group whose log the commit belongs to.
    pub group: GroupId,
    /// The device that sealed and signed it.
    pub author: DeviceId,
    /// Its place in the author's chain.
    pub seq: Seq,
    /// The hash of the author's previous commit.
    pub prev: CommitHash,
    /// The author's clock when sealing.
    pub hlc: Hlc,
    /// Other devices named by the versions in the commit.
    pub authors: Vec<DeviceId>,
    /// Operations on the group itself.
    pub ops: Vec<GroupOp>,
}

impl CommitHead {
    /// The version of every write the commit makes.
    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            author: self.author,
        }
    }

    /// Resolves a version reference against the commit's author list.
    pub fn resolve(&self, r: VersionRef) -> Option<Version> {
        r.resolve(self.author, &self.authors)
    }
}

/// A commit body read in place.
#[derive(Clone, Debug)]
pub struct BodyView<'a> {
    /// Its head, decoded.
    pub head: CommitHead,
    /// The encoded table list: its length, then each table.
    tables: &'a [u8],
}

impl<'a> BodyView<'a> {
    /// Reads a body's head. The tables are read as [`BodyView::tables`] reaches them,
    /// each checked to be well formed, and bytes left after the last are an error
    /// then. The signature and the format's rules are not checked here; that is
    /// [`SignedCommit::verify`](crate::SignedCommit::verify)'s work.
    pub fn read(body: &'a [u8]) -> Result<BodyView<'a>, CoreError> {
        let (head, tables): (CommitHead, _) =
            postcard::take_from_bytes(body).map_err(|e| malformed(e.to_string()))?;
        Ok(BodyView { head, tables })
    }

    /// How many bytes of the body the table list takes, from the end.
    pub fn tables_len(&self) -> usize {
        self.tables.len()
    }

    /// The tables the commit changes, in order.
    pub fn tables(&self) -> Tables<'a> {
        let mut r = Reader(self.tables);
        let (left, failed) = match r.len() {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e.error())),
        };
        Tables { r, left, failed }
    }

    /// Reads every table and row, as [`BodyView::tables`] would: whether the body is
    /// well formed to its end.
    pub fn check(&self) -> Result<(), CoreError> {
        for t in self.tables() {
            t?;
        }
        Ok(())
    }

    /// Whether the commit changes any row.
    pub fn writes(&self) -> bool {
        self.tables.first().is_some_and(|n| *n != 0)
    }
}

/// The tables of a [`BodyView`], each read as it is reached.
pub struct Tables<'a> {
    r: Reader<'a>,
    left: usize,
    /// An error to report next, after which there is nothing more.
    failed: Option<CoreError>,
}

impl<'a> Iterator for Tables<'a> {
    type Item = Result<TableView<'a>, CoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.r.0 = &[];
            return Some(Err(e));
        }
        if self.left == 0 {
            if self.r.0.is_empty() {
                return None;
            }
            let stray = self.r.0.len();
            self.r.0 = &[];
            return Some(Err(malformed(format!(
                "{stray} stray bytes after the body"
            ))));
        }
        self.left -= 1;
        let table = TableView::read(&mut self.r).map_err(Bad::error);
        if table.is_err() {
            self.left = 0;
            self.r.0 = &[];
        }
        Some(table)
    }
}

/// The changes of one commit to one table, read in place.
#[derive(Clone, Debug)]
pub struct TableView<'a> {
    /// The table's name.
    pub table: &'a str,
    /// Its primary-key columns, in key order.
    pub key_columns: Vec<&'a str>,
    /// The columns cells refer to by index.
    pub columns: Vec<&'a str>,
    /// How many rows it changes.
    pub row_count: usize,
    /// The encoded row changes, one after another.
    rows: &'a [u8],
}

impl<'a> TableView<'a> {
    /// Reads one table, every row change checked, leaving `r` after it.
    fn read(r: &mut Reader<'a>) -> Result<TableView<'a>, Bad> {
        let table = r.name()?;
        let key_columns = r.names()?;
        let columns = r.names()?;
        let row_count = r.len()?;
        let start = r.0;
        for _ in 0..row_count {
            RowView::read_from(r)?;
        }
        Ok(TableView {
            table,
            key_columns,
            columns,
            row_count,
            rows: &start[..start.len() - r.0.len()],
        })
    }

    /// Its row changes, in order.
    pub fn rows(&self) -> Rows<'a> {
        Rows {
            r: Reader(self.rows),
            left: self.row_count,
        }
    }
}

/// The row changes of a [`TableView`].
pub struct Rows<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Result<RowView<'a>, CoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let row = RowView::read_from(&mut self.r).map_err(Bad::error);
        if row.is_err() {
            self.left = 0;
        }
        Some(row)
    }
}

/// One row change, read in place.
#[derive(Clone, Copy, Debug)]
pub struct RowView<'a> {
    /// What the change does.
    pub op: Op,
    /// The row's causal length after the change.
    pub cl: u64,
    /// For a delete: the newest write to the row its author had seen.
    pub seen: Option<VersionRef>,
    /// The whole change, as `RowChange` encodes it.
    pub bytes: &'a [u8],
    /// The key, as a `Vec<Value>` encodes it: the form a primary key is stored in.
    pub key: &'a [u8],
    /// How many values the key has.
    pub key_len: usize,
    /// How many cells the change writes.
    pub cell_count: usize,
    /// The encoded cells, one after another.
    cells: &'a [u8],
    /// Where `key` starts in `bytes`.
    key_at: usize,
}

impl<'a> RowView<'a> {
    /// Reads a change that is all of `bytes`.
    pub fn read(bytes: &'a [u8]) -> Result<RowView<'a>, CoreError> {
        let mut r = Reader(bytes);
        let row = RowView::read_from(&mut r).map_err(Bad::error)?;
        if !r.0.is_empty() {
            return Err(malformed(format!(
                "{} stray bytes after a row change",
                r.0.len()
            )));
        }
        Ok(row)
    }

    #[inline]
    fn read_from(r: &mut Reader<'a>) -> Result<RowView<'a>, Bad> {
        let start = r.0;
        let op = match r.varint(u32::MAX.into())? {
            0 => Op::Insert,
            1 => Op::Update,
            2 => Op::Delete,
            _ => return Err(Bad::Op),
        };
        let key_start = r.0;
        let key_len = r.len()?;
        for _ in 0..key_len {
            r.value()?;
        }
        let key = &key_start[..key_start.len() - r.0.len()];
        let cl = r.varint(u64::MAX)?;
        let seen = r.version_ref()?;
        let cell_count = r.len()?;
        let cells = r.0;
        for _ in 0..cell_count {
            CellView::read_from(r)?;
        }
        let cells = &cells[..cells.len() - r.0.len()];
        Ok(RowView {
            op,
            cl,
            seen,
            bytes: &start[..start.len() - r.0.len()],
            key,
            key_len,
            cell_count,
            cells,
            key_at: start.len() - key_start.len(),
        })
    }

    /// Where [`RowView::key`] lies in [`RowView::bytes`].
    pub fn key_span(&self) -> std::ops::Range<usize> {
        self.key_at..self.key_at + self.key.len()
    }

    /// The key's values, in key order.
    pub fn key_values(&self) -> impl Iterator<Item = ValueRef<'a>> + use<'a> {
        let mut r = Reader(self.key);
        let n = r.len().unwrap_or(0);
        // Read once already: each value reads again as it did.
        (0..n).map_while(move |_| r.value().ok())
    }

    /// The cells, in order.
    pub fn cells(&self) -> impl Iterator<Item = CellView<'a>> + use<'a> {
        let mut r = Reader(self.cells);
        (0..self.cell_count).map_while(move |_| CellView::read_from(&mut r).ok())
    }
}

/// One cell of a [`RowView`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellView<'a> {
    /// Index into the table's columns.
    pub column: u32,
    /// The value written.
    pub value: ValueRef<'a>,
    /// The version the author overwrote, if the cell had one.
    pub overwrote: Option<VersionRef>,
}

impl<'a> CellView<'a> {
    #[inline]
    fn read_from(r: &mut Reader<'a>) -> Result<CellView<'a>, Bad> {
        Ok(CellView {
            column: r.varint(u32::MAX.into())? as u32,
            value: r.value()?,
            overwrote: r.version_ref()?,
        })
    }
}

/// A [`Value`](crate::Value) borrowed from the bytes it was encoded in.
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text, as raw bytes.
    Text(&'a [u8]),
    /// A blob.
    Blob(&'a [u8]),
}

/// Identity, as for [`Value`](crate::Value): floats compare by their bits.
impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueRef::Null, ValueRef::Null) => true,
            (ValueRef::Integer(a), ValueRef::Integer(b)) => a == b,
            (ValueRef::Real(a), ValueRef::Real(b)) => a.to_bits() == b.to_bits(),
            (ValueRef::Text(a), ValueRef::Text(b)) | (ValueRef::Blob(a), ValueRef::Blob(b)) => {
                a == b
            }
            _ => false,
        }
    }
}

impl ValueRef<'_> {
    /// An owned copy.
    pub fn to_value(self) -> crate::Value {
        match self {
            ValueRef::Null => crate::Value::Null,
            ValueRef::Integer(i) => crate::Value::Integer(i),
            ValueRef::Real(f) => crate::Value::Real(f),
            ValueRef::Text(t) => crate::Value::Text(t.to_vec()),
            ValueRef::Blob(b) => crate::Value::Blob(b.to_vec()),
        }
    }
}

fn malformed(reason: String) -> CoreError {
    CoreError::Malformed {
        what: "commit",
        reason,
    }
}

/// What is wrong with bytes that do not hold a commit: small, so that reading each
/// number and value returns in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    End,
    Range,
    Long,
    Op,
    Kind,
    Tag,
    Utf8,
}

impl Bad {
    fn error(self) -> CoreError {
        malformed(
            match self {
                Bad::End => "the bytes end inside a value",
                Bad::Range => "a number is out of range",
                Bad::Long => "a number is not in its shortest form",
                Bad::Op => "a row operation is unknown",
                Bad::Kind => "a value kind is unknown",
                Bad::Tag => "an option tag is neither 0 nor 1",
                Bad::Utf8 => "a name is not UTF-8",
            }
            .into(),
        )
    }
}

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.0.len() {
            return Err(Bad::End);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    /// A varint no larger than `max`.
    #[inline]
    fn varint(&mut self, max: u64) -> Result<u64, Bad> {
        if let [byte @ 0..0x80, rest @ ..] = self.0 {
            self.0 = rest;
            return match u64::from(*byte) {
                v if v <= max => Ok(v),
                _ => Err(Bad::Range),
            };
        }
        self.long_varint(max)
    }

    fn long_varint(&mut self, max: u64) -> Result<u64, Bad> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let [byte, rest @ ..] = self.0 else {
                return Err(Bad::End);
            };
            self.0 = rest;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                break;
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if *byte == 0 && i > 0 {
                    return Err(Bad::Long);
                }
                if value > max {
                    break;
                }
                return Ok(value);
            }
        }
        Err(Bad::Range)
    }

    /// A length, which cannot exceed what is left: every element takes a byte.
    #[inline]
    fn len(&mut self) -> Result<usize, Bad> {
        let n = self.varint(u64::MAX)?;
        if n > self.0.len() as u64 {
            return Err(Bad::End);
        }
        Ok(n as usize)
    }

    /// A string, which must be UTF-8.
    fn name(&mut self) -> Result<&'a str, Bad> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| Bad::Utf8)
    }

    fn names(&mut self) -> Result<Vec<&'a str>, Bad> {
        let n = self.len()?;
        (0..n).map(|_| self.name()).collect()
    }

    #[inline]
    fn value(&mut self) -> Result<ValueRef<'a>, Bad> {
        Ok(match self.varint(u32::MAX.into())? {
            0 => ValueRef::Null,
            1 => {
                let z = self.varint(u64::MAX)?;
                ValueRef::Integer((z >> 1) as i64 ^ -((z & 1) as i64))
            }
            2 => {
                let bytes = self.take(8)?;
                let bits = u64::from_le_bytes(bytes.try_into().map_err(|_| Bad::End)?);
                ValueRef::Real(f64::from_bits(bits))
            }
            3 => {
                let n = self.len()?;
                ValueRef::Text(self.take(n)?)
            }
            4 => {
                let n = self.len()?;
                ValueRef::Blob(self.take(n)?)
            }
            _ => return Err(Bad::Kind),
        })
    }

    #[inline]
    fn version_ref(&mut self) -> Result<Option<VersionRef>, Bad> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(VersionRef {
                hlc: Hlc(self.varint(u64::MAX)?),
                author: self.varint(u32::MAX.into())? as u32,
            })),
            _ => Err(Bad::Tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{Cell, CommitBody, FORMAT, RowChange, TableChanges};
    use crate::identity::DeviceKey;
    use crate::value::Value;
    use crate::value::tests::any_value;
    use proptest::prelude::*;

    fn any_ref() -> impl Strategy<Value = Option<VersionRef>> {
        proptest::option::of((any::<u64>(), 0u32..3).prop_map(|(h, author)| VersionRef {
            hlc: Hlc(h),
            author,
        }))
    }

    fn any_row() -> impl Strategy<Value = RowChange> {
        (
            0..3u8,
            prop::collection::vec(any_value(), 0..3),
            any::<u64>(),
            any_ref(),
            prop::collection::vec(
                (any::<u32>(), any_value(), any_ref()).prop_map(|(column, value, overwrote)| {
                    Cell {
                        column,
                        value,
                        overwrote,
                    }
                }),
                0..4,
            ),
        )
            .prop_map(|(op, key, cl, seen, cells)| RowChange {
                op: [Op::Insert, Op::Update, Op::Delete][op as usize],
                key,
                cl,
                seen,
                cells,
            })
    }

    fn any_body() -> impl Strategy<Value = CommitBody> {
        let table = (
            "[a-z]{1,6}",
            prop::collection::vec("[a-z]{1,4}", 0..3),
            prop::collection::vec("[a-z]{1,4}", 0..3),
            prop::collection::vec(any_row(), 0..5),
        )
            .prop_map(|(table, key_columns, columns, rows)| TableChanges {
                table,
                key_columns,
                columns,
                rows,
            });
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(table, 0..3),
        )
            .prop_map(|(seq, hlc, tables)| CommitBody {
                head: CommitHead {
                    format: FORMAT,
                    group: GroupId::DEFAULT,
                    author: DeviceKey::from_seed([7; 32]).id(),
                    seq: Seq(seq),
                    prev: CommitHash([seq as u8; 32]),
                    hlc: Hlc(hlc),
                    authors: vec![DeviceKey::from_seed([8; 32]).id()],
                    ops: vec![],
                },
                tables,
            })
    }

    proptest! {
        /// Read in place, a body shows what decoding it shows, and each change's
        /// bytes and key bytes are exactly their encodings.
        #[test]
        fn a_view_shows_what_decoding_shows(body in any_body()) {
            let bytes = postcard::to_stdvec(&body).expect("encode");
            let view = BodyView::read(&bytes).expect("read");
            view.check().expect("well formed");
            prop_assert_eq!(&view.head, &body.head);
            prop_assert_eq!(view.writes(), !body.tables.is_empty());
            let tables: Vec<TableView> = view.tables().collect::<Result<_, _>>().expect("tables");
            prop_assert_eq!(tables.len(), body.tables.len());
            for (t, want) in tables.iter().zip(&body.tables) {
                prop_assert_eq!(t.table, want.table.as_str());
                prop_assert_eq!(&t.key_columns, &want.key_columns);
                prop_assert_eq!(&t.columns, &want.columns);
                prop_assert_eq!(t.row_count, want.rows.len());
                let rows: Vec<RowView> = t.rows().collect::<Result<_, _>>().expect("rows");
                prop_assert_eq!(rows.len(), want.rows.len());
                for (row, want) in rows.iter().zip(&want.rows) {
                    let (bytes, key) = (postcard::to_stdvec(want).expect("row"), postcard::to_stdvec(&want.key).expect("key"));
                    prop_assert_eq!(row.bytes, bytes.as_slice());
                    prop_assert_eq!(row.key, key.as_slice());
                    prop_assert_eq!(row.op, want.op);
                    prop_assert_eq!(row.cl, want.cl);
                    prop_assert_eq!(row.seen, want.seen);
                    prop_assert_eq!(row.key_len, want.key.len());
                    let key: Vec<Value> = row.key_values().map(ValueRef::to_value).collect();
                    prop_assert_eq!(&key, &want.key);
                    prop_assert_eq!(row.cell_count, want.cells.len());
                    let cells: Vec<Cell> = row
                        .cells()
                        .map(|c| Cell { column: c.column, value: c.value.to_value(), overwrote: c.overwrote })
                        .collect();
                    prop_assert_eq!(&cells, &want.cells);
                    let alone = RowView::read(row.bytes).expect("alone");
                    prop_assert_eq!(alone.bytes, row.bytes);
                    prop_assert_eq!(&alone.bytes[alone.key_span()], row.key);
                }
            }
        }

        /// A body cut short anywhere, or with a byte added, is an error, not a panic
        /// and not a shorter commit.
        #[test]
        fn a_cut_or_padded_body_is_refused(body in any_body(), cut in any::<prop::sample::Index>()) {
            let bytes = postcard::to_stdvec(&body).expect("encode");
            let at = cut.index(bytes.len());
            prop_assert!(BodyView::read(&bytes[..at]).and_then(|v| v.check()).is_err());
            let mut padded = bytes.clone();
            padded.push(0);
            let padded = BodyView::read(&padded).expect("the head reads");
            prop_assert!(padded.check().is_err());
            prop_assert!(padded.tables().last().expect("an error at the end").is_err());
        }

        /// Whatever the bytes, reading them gives a view or an error.
        #[test]
        fn any_bytes_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(view) = BodyView::read(&bytes) {
                for t in view.tables().filter_map(Result::ok) {
                    for row in t.rows() {
                        let row = row.expect("read once");
                        let _ = row.key_values().count();
                        let _ = row.cells().count();
                    }
                }
            }
            let _ = RowView::read(&bytes);
        }
    }

    #[test]
    fn numbers_past_their_type_are_refused() {
        // A value kind of 2^32 and a ten-byte varint past 64 bits.
        let too_wide = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(Reader(&too_wide).varint(u32::MAX.into()).is_err());
        let past_64 = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader(&past_64).varint(u64::MAX).is_err());
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader(&max).varint(u64::MAX).expect("max"), u64::MAX);
        // Zero in two bytes: not the canonical encoding.
        assert!(Reader(&[0x80, 0x00]).varint(u64::MAX).is_err());
        assert_eq!(Reader(&[0x80, 0x01]).varint(u64::MAX).expect("128"), 128);
        // A key claiming more values than there are bytes.
        assert!(RowView::read(&[0, 0xff, 0x01]).is_err());
    }
}

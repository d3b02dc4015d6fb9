//! Commits: the signed, hash-chained unit of replication, and its canonical encoding.
//!
//! A commit holds the row changes one device sealed at once. Its body is encoded with
//! postcard; the BLAKE3 hash of those bytes is the commit's identity and what its
//! author signs. Each author's commits form a chain: seq `n + 1` names the hash of
//! seq `n`. Verification here covers everything one commit can prove about itself;
//! chain and membership checks need the store and happen there.
//!
//! Commits are canonical: the head is decoded, re-encoded and compared; the tables are
//! read in place with every number required in its shortest form and every tag 0 or 1,
//! so one commit has one byte string and one hash. Signatures cover a domain-separated
//! hash.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
pub use crate::group::MAX_NAME_BYTES;
use crate::group::{GroupOp, MAX_OPS_PER_COMMIT, check_plain_name, check_table_name};
pub use crate::identity::Seq;
use crate::identity::{DeviceKey, GroupId};
use crate::value::Value;
pub use crate::version::{CommitHash, Op, Version, VersionRef};
use crate::view::{BodyView, CommitHead};

/// The commit format this code writes and the only one it reads.
pub const FORMAT: u8 = 1;
/// The largest encoded commit accepted, signature included.
pub const MAX_COMMIT_BYTES: usize = 16 << 20;
/// The most primary-key columns a tracked table may have.
pub const MAX_KEY_COLUMNS: usize = 8;
const SIGNATURE_CONTEXT: &[u8] = b"shoal commit v1\0";

/// The body of a commit: everything that is hashed and signed. It encodes as its
/// head's fields, then its tables: a struct within a struct adds no bytes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CommitBody {
    /// Every field before the tables: the group, the author's place in its chain,
    /// the clock, and operations on the group itself.
    pub head: CommitHead,
    /// The changes, table by table.
    pub tables: Vec<TableChanges>,
}

/// The changes a commit makes to one table.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct TableChanges {
    /// The table's name.
    pub table: String,
    /// Its primary-key columns, in key order.
    pub key_columns: Vec<String>,
    /// The other columns that cells below refer to by index.
    pub columns: Vec<String>,
    /// The row changes.
    pub rows: Vec<RowChange>,
}

/// A change to one row.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RowChange {
    /// What the change does.
    pub op: Op,
    /// The primary-key values, in key order.
    pub key: Vec<Value>,
    /// The row's causal length after the change: odd is alive, even is deleted.
    pub cl: u64,
    /// For a delete: the newest write to the row that its author had seen.
    pub seen: Option<VersionRef>,
    /// The columns written (every column for an insert, none for a delete).
    pub cells: Vec<Cell>,
}

/// One column written by a row change.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Index into [`TableChanges::columns`].
    pub column: u32,
    /// The value written.
    pub value: Value,
    /// The version the author overwrote, if the cell had one.
    pub overwrote: Option<VersionRef>,
}

/// A commit as stored and sent: its encoded body and its author's signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedCommit {
    /// The postcard encoding of a [`CommitBody`].
    pub body: Vec<u8>,
    /// The author's Ed25519 signature over the body's hash.
    pub signature: [u8; 64],
}

/// A commit whose encoding, signature and structure have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedCommit {
    /// The hash of the body.
    pub hash: CommitHash,
    /// The decoded body.
    pub body: CommitBody,
    /// The bytes it was decoded from.
    pub signed: SignedCommit,
}

/// What [`SignedCommit::check`] found in a commit that passed.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The hash of the body.
    pub hash: CommitHash,
    /// Every field before the tables.
    pub head: CommitHead,
    /// How many row changes it carries.
    pub changes: usize,
}

impl CommitBody {
    /// Encodes, hashes and signs the body. The key must be the author's.
    pub fn seal(self, key: &DeviceKey) -> Result<VerifiedCommit, CoreError> {
        debug_assert_eq!(key.id(), self.head.author);
        let body = postcard::to_stdvec(&self).map_err(|e| CoreError::Malformed {
            what: "commit",
            reason: e.to_string(),
        })?;
        let size = body.len() + 64;
        if size > MAX_COMMIT_BYTES {
            return Err(CoreError::TooLarge {
                what: "commit",
                size,
                limit: MAX_COMMIT_BYTES,
            });
        }
        let hash = CommitHash(*blake3::hash(&body).as_bytes());
        let signature = key.sign(&signing_message(&hash));
        Ok(VerifiedCommit {
            hash,
            body: self,
            signed: SignedCommit { body, signature },
        })
    }

    /// Resolves a version reference against this commit's author list.
    pub fn resolve(&self, r: VersionRef) -> Option<Version> {
        self.head.resolve(r)
    }

    /// The version of every write this commit makes.
    pub fn version(&self) -> Version {
        self.head.version()
    }

    /// The number of row changes in the commit.
    pub fn change_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

/// Checks the format's rules on a body read in place, each row change read once;
/// returns how many there are. Bytes that do not hold a body are
/// [`CoreError::Malformed`], a rule broken is [`CoreError::InvalidCommit`].
fn rules(view: &BodyView) -> Result<usize, CoreError> {
    let head = &view.head;
    let invalid = |reason: String| CoreError::InvalidCommit {
        author: head.author,
        seq: head.seq,
        reason,
    };
    head_rules(head).map_err(invalid)?;
    let check_ref = |r: &VersionRef, what: &str| -> Result<(), CoreError> {
        if r.author as usize > head.authors.len() {
            return Err(invalid(format!(
                "{what} names an author index out of range"
            )));
        }
        if r.hlc >= head.hlc {
            return Err(invalid(format!(
                "{what} is not older than the commit itself"
            )));
        }
        Ok(())
    };
    let mut tables = HashSet::new();
    let mut changes = 0;
    let mut keys = HashSet::new();
    let mut written = Vec::new();
    for t in view.tables() {
        let t = t?;
        check_table_name(t.table).map_err(invalid)?;
        if !tables.insert(t.table) {
            return Err(invalid(format!("table {:?} appears twice", t.table)));
        }
        if t.key_columns.is_empty() || t.key_columns.len() > MAX_KEY_COLUMNS {
            return Err(invalid(format!(
                "table {:?} has {} key columns; 1 to {MAX_KEY_COLUMNS} are allowed",
                t.table,
                t.key_columns.len()
            )));
        }
        let mut names = HashSet::new();
        for c in t.key_columns.iter().chain(&t.columns) {
            check_plain_name(c).map_err(invalid)?;
            if !names.insert(c.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "table {:?} names column {c:?} twice",
                    t.table
                )));
            }
        }
        keys.clear();
        keys.reserve(t.row_count);
        written.clear();
        written.resize(t.columns.len(), false);
        for row in t.rows() {
            let row = row?;
            changes += 1;
            if row.key_len != t.key_columns.len() {
                return Err(invalid(format!(
                    "a key in {:?} has the wrong width",
                    t.table
                )));
            }
            if !keys.insert(row.key) {
                return Err(invalid(format!("a row of {:?} changes twice", t.table)));
            }
            let alive = row.cl % 2 == 1;
            let rule = match row.op {
                Op::Insert | Op::Update if !alive => "an insert or update must leave the row alive",
                Op::Delete if alive || row.cl == 0 || row.cell_count != 0 => {
                    "a delete must leave the row deleted and write nothing"
                }
                Op::Insert if row.cell_count != t.columns.len() => {
                    "an insert must write every column"
                }
                Op::Update if row.cell_count == 0 => "an update must write a column",
                _ => "",
            };
            if !rule.is_empty() {
                return Err(invalid(rule.into()));
            }
            if let Some(seen) = &row.seen {
                check_ref(seen, "a delete's seen version")?;
            }
            written.fill(false);
            for cell in row.cells() {
                match written.get_mut(cell.column as usize) {
                    Some(w) if !*w => *w = true,
                    _ => return Err(invalid("a cell names a missing or repeated column".into())),
                }
                if let Some(o) = &cell.overwrote {
                    check_ref(o, "an overwritten version")?;
                }
            }
        }
    }
    Ok(changes)
}

/// The rules on the fields before the tables.
fn head_rules(head: &CommitHead) -> Result<(), String> {
    if head.format != FORMAT {
        return Err(format!(
            "format {} is not the supported format {FORMAT}",
            head.format
        ));
    }
    if head.seq.0 == 0 {
        return Err("sequence numbers start at 1".into());
    }
    if (head.seq.0 == 1) != (head.prev == CommitHash::default()) {
        return Err("only the first commit may (and must) have no previous hash".into());
    }
    let mut authors = HashSet::new();
    for a in &head.authors {
        if *a == head.author || !authors.insert(*a) {
            return Err("the author list repeats a device".into());
        }
    }
    if head.ops.len() > MAX_OPS_PER_COMMIT {
        return Err(format!(
            "{} group operations; at most {MAX_OPS_PER_COMMIT} are allowed",
            head.ops.len()
        ));
    }
    if head.group == GroupId::DEFAULT
        && head
            .ops
            .iter()
            .any(|o| !matches!(o, GroupOp::Withdraw { .. }))
    {
        return Err("the local group has no operations but withdrawals".into());
    }
    if head
        .ops
        .iter()
        .filter(|o| matches!(o, GroupOp::Withdraw { .. }))
        .count()
        > 1
    {
        return Err("a commit withdraws at most once".into());
    }
    for op in &head.ops {
        op.check(&head.group, &head.author, head.seq)?;
    }
    Ok(())
}

fn signing_message(hash: &CommitHash) -> Vec<u8> {
    [SIGNATURE_CONTEXT, &hash.0].concat()
}

impl SignedCommit {
    /// The stored form: the 64-byte signature followed by the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.signature[..], &self.body].concat()
    }

    /// Reads the stored form back.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCommit, CoreError> {
        if bytes.len() > MAX_COMMIT_BYTES {
            return Err(CoreError::TooLarge {
                what: "commit",
                size: bytes.len(),
                limit: MAX_COMMIT_BYTES,
            });
        }
        let (signature, body) =
            bytes
                .split_first_chunk::<64>()
                .ok_or_else(|| CoreError::Malformed {
                    what: "commit",
                    reason: "shorter than a signature".into(),
                })?;
        Ok(SignedCommit {
            body: body.to_vec(),
            signature: *signature,
        })
    }

    /// The hash of the body: the commit's identity.
    pub fn hash(&self) -> CommitHash {
        CommitHash(*blake3::hash(&self.body).as_bytes())
    }

    /// Checks the commit where it lies, decoding only its head: the encoding is
    /// canonical, the signature is the claimed author's and the body follows the
    /// format's rules. What storing a received commit needs, without the cost of
    /// decoding every value.
    pub fn check(&self) -> Result<Checked, CoreError> {
        let size = self.body.len() + 64;
        if size > MAX_COMMIT_BYTES {
            return Err(CoreError::TooLarge {
                what: "commit",
                size,
                limit: MAX_COMMIT_BYTES,
            });
        }
        let view = BodyView::read(&self.body)?;
        let head = &view.head;
        let head_len = self.body.len() - view.tables_len();
        if postcard::to_stdvec(head).ok().as_deref() != Some(&self.body[..head_len]) {
            return Err(CoreError::Malformed {
                what: "commit",
                reason: "the encoding is not canonical".into(),
            });
        }
        let hash = self.hash();
        if !head.author.verify(&signing_message(&hash), &self.signature) {
            return Err(CoreError::BadSignature {
                author: head.author,
                seq: head.seq,
            });
        }
        let changes = rules(&view)?;
        Ok(Checked {
            hash,
            head: view.head,
            changes,
        })
    }

    /// [`SignedCommit::check`]s the commit, then decodes it whole.
    pub fn verify(self) -> Result<VerifiedCommit, CoreError> {
        let checked = self.check()?;
        let body = postcard::from_bytes(&self.body).map_err(|e| CoreError::Malformed {
            what: "commit",
            reason: e.to_string(),
        })?;
        Ok(VerifiedCommit {
            hash: checked.hash,
            body,
            signed: self,
        })
    }

    /// Decodes the body without checking it: for a commit this file checked when it
    /// stored it, read back in bulk. What it gives is a body, not a
    /// [`VerifiedCommit`]: only [`SignedCommit::verify`] makes one.
    pub fn decode(&self) -> Result<CommitBody, CoreError> {
        postcard::from_bytes(&self.body).map_err(|e| CoreError::Malformed {
            what: "commit",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;

    fn body(key: &DeviceKey) -> CommitBody {
        CommitBody {
            head: CommitHead {
                format: FORMAT,
                group: GroupId::DEFAULT,
                author: key.id(),
                seq: Seq(1),
                prev: CommitHash::default(),
                hlc: Hlc::new(1_000, 0),
                authors: vec![],
                ops: vec![],
            },
            tables: vec![TableChanges {
                table: "notes".into(),
                key_columns: vec!["id".into()],
                columns: vec!["body".into()],
                rows: vec![RowChange {
                    op: Op::Insert,
                    key: vec![Value::Text(b"n1".to_vec())],
                    cl: 1,
                    seen: None,
                    cells: vec![Cell {
                        column: 0,
                        value: Value::Real(-0.0),
                        overwrote: None,
                    }],
                }],
            }],
        }
    }

    #[test]
    fn sealed_commits_verify_and_round_trip() {
        let key = DeviceKey::from_seed([3; 32]);
        let sealed = body(&key).seal(&key).expect("seal");
        let bytes = sealed.signed.to_bytes();
        let back = SignedCommit::from_bytes(&bytes)
            .expect("split")
            .verify()
            .expect("verify");
        assert_eq!(back.hash, sealed.hash);
        assert_eq!(back.body, sealed.body);
        // Read back after it was stored: the same body, decoded once.
        let stored = SignedCommit::from_bytes(&bytes)
            .expect("split")
            .decode()
            .expect("decode");
        assert_eq!(stored, sealed.body);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let key = DeviceKey::from_seed([3; 32]);
        let bytes = body(&key).seal(&key).expect("seal").signed.to_bytes();
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            let result = SignedCommit::from_bytes(&tampered).and_then(SignedCommit::verify);
            assert!(result.is_err(), "flipping byte {i} went unnoticed");
        }
    }

    /// Two encodings of one body would be two commits with one meaning: a number
    /// written longer than it needs is refused, even when it is signed.
    #[test]
    fn a_long_form_number_is_refused_though_signed() {
        let key = DeviceKey::from_seed([3; 32]);
        let sealed = body(&key).seal(&key).expect("seal");
        let bytes = &sealed.signed.body;
        let view = BodyView::read(bytes).expect("read");
        let table = view.tables().next().expect("a table").expect("read");
        let row = table.rows().next().expect("a row").expect("read");
        // The causal length follows the operation's byte and the key.
        let at = row.bytes.as_ptr() as usize - bytes.as_ptr() as usize + 1 + row.key.len();
        assert_eq!(bytes[at], 1);
        let mut long = bytes[..at].to_vec();
        long.extend_from_slice(&[0x81, 0x00]);
        long.extend_from_slice(&bytes[at + 1..]);
        let hash = CommitHash(*blake3::hash(&long).as_bytes());
        let forged = SignedCommit {
            signature: key.sign(&signing_message(&hash)),
            body: long,
        };
        let err = forged.verify().expect_err("refused");
        assert!(err.to_string().contains("shortest form"), "{err}");
    }

    #[test]
    fn a_withdrawal_starts_at_its_own_seq_once_in_any_group() {
        let key = DeviceKey::from_seed([3; 32]);
        let with = |ops: Vec<GroupOp>| {
            let mut b = body(&key);
            b.head.ops = ops;
            b.seal(&key).and_then(|c| c.signed.verify())
        };
        let withdraw = |from: u64, upto: u64| GroupOp::Withdraw {
            from: Seq(from),
            upto: Seq(upto),
            since: Hlc::new(5_000, 0),
        };
        // The local group takes it, though no other operation.
        with(vec![withdraw(1, 3)]).expect("a withdrawal at its own seq");
        let refused = |r: Result<VerifiedCommit, CoreError>, expect: &str| {
            let err = r.expect_err("should be refused").to_string();
            assert!(err.contains(expect), "{err} lacks {expect:?}");
        };
        refused(with(vec![withdraw(2, 3)]), "must start at the seq");
        refused(with(vec![withdraw(1, 0)]), "must start at the seq");
        refused(with(vec![withdraw(1, 2), withdraw(1, 3)]), "at most once");
        refused(
            with(vec![GroupOp::Unshare {
                table: "notes".into(),
            }]),
            "no operations but withdrawals",
        );
    }

    #[test]
    fn structural_rules_are_enforced() {
        let key = DeviceKey::from_seed([3; 32]);
        let check = |edit: fn(&mut CommitBody), expect: &str| {
            let mut b = body(&key);
            edit(&mut b);
            let err = b
                .seal(&key)
                .and_then(|c| c.signed.verify())
                .expect_err("should be refused");
            assert!(err.to_string().contains(expect), "{err} lacks {expect:?}");
        };
        check(|b| b.head.seq = Seq(0), "start at 1");
        check(|b| b.head.seq = Seq(2), "previous hash");
        check(|b| b.head.format = 9, "format 9");
        check(|b| b.tables[0].rows[0].cl = 2, "alive");
        check(|b| b.tables[0].rows[0].cells.clear(), "every column");
        check(|b| b.tables[0].key_columns.clear(), "key columns");
        check(
            |b| b.tables[0].table = "shoal_log".into(),
            "belongs to Shoal",
        );
        check(
            |b| b.tables[0].table = "SQLITE_schema".into(),
            "belongs to Shoal",
        );
        check(
            |b| b.tables[0].rows[0].cells[0].column = 5,
            "missing or repeated",
        );
        check(
            |b| {
                b.tables[0].rows[0].cells[0].overwrote = Some(VersionRef {
                    hlc: Hlc::new(2_000, 0),
                    author: 0,
                })
            },
            "not older",
        );
        check(
            |b| {
                let row = b.tables[0].rows[0].clone();
                b.tables[0].rows.push(row);
            },
            "changes twice",
        );
        check(
            |b| {
                let row = &mut b.tables[0].rows[0];
                row.op = Op::Update;
                let cell = row.cells[0].clone();
                row.cells.push(cell);
            },
            "missing or repeated",
        );
    }
}

#[cfg(test)]
mod golden {
    //! The bytes and hash of one commit, as this format has always encoded it: a
    //! change to how a body is laid out in Rust must not change either.

    use super::*;
    use crate::clock::Hlc;
    use crate::group::{GroupOp, Role};

    #[test]
    fn a_commit_encodes_and_hashes_as_it_always_has() {
        let key = DeviceKey::from_seed([5; 32]);
        let other = DeviceKey::from_seed([6; 32]).id();
        let body = CommitBody {
            head: CommitHead {
                format: FORMAT,
                group: GroupId([9; 32]),
                author: key.id(),
                seq: Seq(3),
                prev: CommitHash([4; 32]),
                hlc: Hlc::new(1_700_000_000_000, 2),
                authors: vec![other],
                ops: vec![
                    GroupOp::SetRole {
                        device: other,
                        role: Role::Member,
                        from: Seq(0),
                    },
                    GroupOp::Share {
                        table: "notes".into(),
                        excluded: vec!["secret".into()],
                    },
                ],
            },
            tables: vec![
                TableChanges {
                    table: "notes".into(),
                    key_columns: vec!["id".into()],
                    columns: vec!["title".into(), "body".into()],
                    rows: vec![
                        RowChange {
                            op: Op::Insert,
                            key: vec![Value::Integer(1)],
                            cl: 1,
                            seen: None,
                            cells: vec![
                                Cell {
                                    column: 0,
                                    value: Value::Text(b"hi".to_vec()),
                                    overwrote: None,
                                },
                                Cell {
                                    column: 1,
                                    value: Value::Null,
                                    overwrote: Some(VersionRef {
                                        hlc: Hlc::new(1_600_000_000_000, 0),
                                        author: 1,
                                    }),
                                },
                            ],
                        },
                        RowChange {
                            op: Op::Delete,
                            key: vec![Value::Integer(2)],
                            cl: 2,
                            seen: Some(VersionRef {
                                hlc: Hlc::new(1_650_000_000_000, 1),
                                author: 0,
                            }),
                            cells: vec![],
                        },
                    ],
                },
                TableChanges {
                    table: "tags".into(),
                    key_columns: vec!["note".into(), "tag".into()],
                    columns: vec![],
                    rows: vec![RowChange {
                        op: Op::Insert,
                        key: vec![Value::Integer(1), Value::Blob(vec![0, 255])],
                        cl: 1,
                        seen: None,
                        cells: vec![],
                    }],
                },
            ],
        };
        let sealed = body.seal(&key).expect("seal");
        let bytes = sealed.signed.to_bytes();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&bytes), GOLDEN, "the encoding changed");
        assert_eq!(
            hex(&sealed.hash.0),
            "e2d2c1955a5dce3e40f964b41fb30c89cd2a8a9b2f9eb1b3b1050725451364b7",
            "the hash changed"
        );
        // And it reads back, checked, as the same body.
        let back = SignedCommit::from_bytes(&bytes)
            .expect("split")
            .verify()
            .expect("verify");
        assert_eq!(back.body, sealed.body);
    }

    /// Sealed when the body still spelled out its head's fields one by one (Ed25519
    /// signatures are deterministic, so sealing again gives the same bytes).
    const GOLDEN: &str = concat!(
        "9f8823720c8056b99e0d69e64f948afc583fffb340768015a21a827028613db7",
        "b51ffbc3a4999945d654ab9f9b1efed84c07f0afe30d87d46063e48060533e0d",
        "0109090909090909090909090909090909090909090909090909090909090909",
        "096e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505b",
        "f103040404040404040404040404040404040404040404040404040404040404",
        "0404828080c0d6fcf3c501018a875fff1eb38451577acd5afee405456568dd7c",
        "89e090863a0557bc7af49f1702018a875fff1eb38451577acd5afee405456568",
        "dd7c89e090863a0557bc7af49f17010003056e6f746573010673656372657402",
        "056e6f7465730102696402057469746c6504626f647902000101020100020003",
        "0268690001000180808080e8eda1ba0101020101040201818080a09ff58ac001",
        "0000047461677302046e6f746503746167000100020102040200ff010000",
    );
}

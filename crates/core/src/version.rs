//! Versions: what orders writes. A commit's hash, the version a write carries (its
//! commit's clock and author) and that version as a commit body names it, and what a
//! row change does to its row.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;
use crate::identity::DeviceId;

/// The BLAKE3 hash of a commit body.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct CommitHash(pub [u8; 32]);

/// Who wrote a value, and when: the total order that last-writer-wins follows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The clock of the commit that carried the write.
    pub hlc: Hlc,
    /// The device that wrote it; breaks ties between equal clocks.
    pub author: DeviceId,
}

/// A [`Version`] inside a commit body, its author given as an index: 0 is the commit's
/// author, `i > 0` is `CommitBody::authors[i - 1]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionRef {
    /// The clock of the write.
    pub hlc: Hlc,
    /// Index of its author, as above.
    pub author: u32,
}

impl VersionRef {
    /// The version this names in a commit by `author` whose author list is `authors`.
    pub fn resolve(self, author: DeviceId, authors: &[DeviceId]) -> Option<Version> {
        let author = match self.author {
            0 => author,
            i => *authors.get(i as usize - 1)?,
        };
        Some(Version {
            hlc: self.hlc,
            author,
        })
    }
}

/// What a row change does to its row.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Creates the row (or brings it back): every column is written.
    Insert,
    /// Writes some columns of a live row.
    Update,
    /// Deletes the row.
    Delete,
}

impl fmt::Display for CommitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CommitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitHash({})", &hex::encode(self.0)[..10])
    }
}

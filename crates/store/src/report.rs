//! What sealing and importing did, as they report it to callers: counts, and what
//! was kept back and why.

use serde::Serialize;
use shoal_core::Hlc;

use crate::tables::follow::SchemaProblem;

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
    /// Rows not sealed because they are too large for any commit; everything else
    /// was sealed, and their captured changes are kept for when they are smaller.
    pub oversized: Vec<OversizedRow>,
    /// Tracked tables not sealed because their schema changed in a way Shoal cannot
    /// follow by itself; their captured changes are kept.
    pub schema_problems: Vec<SchemaProblem>,
    /// Writes to tables that groups carry but this device only reads there: sealed,
    /// and kept on this device alone.
    pub kept_here: Vec<KeptHere>,
}

/// Rows written to a table that groups carry, where this device is a reader: the
/// writes stay on this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeptHere {
    /// The table.
    pub table: String,
    /// The groups that carry it, where this device may only read.
    pub groups: Vec<String>,
    /// How many rows this seal wrote.
    pub rows: u64,
}

impl std::fmt::Display for KeptHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row(s) written to {} stay on this device: it is a reader in group {}, whose members refuse its writes; an admin can make it a member (`shoal group DB add GROUP DEVICE --role member`)",
            self.rows,
            self.table,
            self.groups.join(", ")
        )
    }
}

/// A row too large for any commit: not sealed, the rest sealed around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OversizedRow {
    /// The table.
    pub table: String,
    /// Its primary key, as SQL literals.
    pub key: String,
    /// Its encoded size in bytes.
    pub size: u64,
}

impl std::fmt::Display for OversizedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row {} of {} is {} bytes, over the {} a commit can carry: it is not synced until it is smaller (keep large files outside the database); everything else syncs",
            self.key,
            self.table,
            self.size,
            shoal_core::commit::MAX_COMMIT_BYTES
        )
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Local writes sealed first, so that no unsealed write is overwritten.
    pub sealed: SealReport,
    /// Commits applied, including ones that had been waiting.
    pub commits_applied: usize,
    /// Row changes applied.
    pub changes_applied: usize,
    /// Commits already held, ignored.
    pub duplicates: usize,
    /// Commits now waiting for an earlier commit of their author (a gap).
    pub waiting: usize,
    /// Commits held because their clock is too far ahead.
    pub future: usize,
    /// Commits held unapplied that their author withdrew for commits stamped again.
    pub withdrawn: usize,
    /// Authors caught signing two different commits for one place in their chain.
    pub forks: Vec<ForkReport>,
    /// Commits refused, and why.
    pub refused: Vec<String>,
    /// Conflicts found.
    pub conflicts: usize,
    /// Row changes held because they cannot be applied yet.
    pub held: usize,
    /// Held row changes applied at last.
    pub held_applied: usize,
}

/// An author caught forking its chain.
#[derive(Clone, Debug, Serialize)]
pub struct ForkReport {
    /// The author.
    pub author: String,
    /// The place in its chain that has two commits.
    pub seq: u64,
}

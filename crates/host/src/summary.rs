//! [`GroupSync`]: what one group's session did, as either side counts it.

use serde::{Deserialize, Serialize};
use shoal_core::{GroupId, VersionVector};
use shoal_store::ImportReport;

/// What one group's session did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupSync {
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// Commits sent.
    pub pushed: u64,
    /// Commits received.
    pub pulled: u64,
    /// Commits applied here (received ones, and ones they let go on).
    pub applied: u64,
    /// Row changes applied here.
    pub changes: u64,
    /// Conflicts found here.
    pub conflicts: u64,
    /// Row changes held here (unknown table or column, missing insert).
    pub held: u64,
    /// Commits held here because they are stamped too far ahead of this device's
    /// clock, once the session ended (of any author: the sender's clock, or one it
    /// relayed, ran ahead).
    #[serde(default)]
    pub future: u64,
    /// Commits held here unapplied that their author withdrew for commits stamped
    /// again (`shoal restamp`), dropped in this session.
    #[serde(default)]
    pub withdrawn: u64,
    /// Commits refused here, and why.
    pub refused: Vec<String>,
    /// Whether the peer's schema of the group's tables differs.
    pub schema_differs: bool,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// What the peer holds now, as far as this side knows: what it said it held,
    /// and everything sent to it.
    #[serde(skip)]
    pub peer_has: VersionVector,
}

impl GroupSync {
    pub(crate) fn add(&mut self, r: &ImportReport) {
        self.applied += r.commits_applied as u64;
        self.changes += r.changes_applied as u64;
        self.conflicts += r.conflicts as u64;
        self.held += r.held as u64;
        // A count of what is held now, not of what this session did.
        self.future = r.future as u64;
        self.withdrawn += r.withdrawn as u64;
        self.refused.extend(r.refused.iter().cloned());
        for f in &r.forks {
            self.refused.push(format!(
                "author {} forked its chain at seq {}",
                f.author, f.seq
            ));
        }
    }
}

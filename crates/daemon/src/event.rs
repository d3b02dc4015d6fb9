//! What a running daemon tells whoever listens: [`Handle::subscribe`] in Rust,
//! `shoal up` on its output, `shoal events` over the control socket.
//!
//! [`Handle::subscribe`]: crate::Handle::subscribe

use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, GroupId};
use shoal_net::PathKind;
use shoal_store::{ConflictKind, ConflictStatus};

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A connection to a member is up.
    PeerConnected {
        /// The member's device id.
        peer: DeviceId,
        /// Direct or through a relay.
        path: Option<PathKind>,
    },
    /// A connection to a member went away.
    PeerLost {
        /// The member's device id.
        peer: DeviceId,
        /// Why, as far as is known.
        reason: String,
    },
    /// Writes made here were sealed into commits (and go out to connected members).
    LocalCommits {
        /// Commits sealed.
        commits: u64,
        /// Row changes in them.
        changes: u64,
    },
    /// Commits from a member were applied here.
    ChangesApplied {
        /// The member they came from.
        peer: DeviceId,
        /// The group.
        group: GroupId,
        /// Its name.
        name: String,
        /// Commits applied.
        commits: u64,
        /// Row changes applied.
        changes: u64,
    },
    /// A transfer under way with a member.
    SyncProgress {
        /// The member.
        peer: DeviceId,
        /// The group.
        group: GroupId,
        /// Commits sent so far.
        pushed: u64,
        /// Commits received so far.
        pulled: u64,
        /// Bytes both ways so far.
        bytes: u64,
        /// Commits to move both ways in all, as both sides' holdings said at the
        /// start (fewer go when some are not the member's to have).
        #[serde(default)]
        total: u64,
    },
    /// A round of sync with a member ended.
    Synced {
        /// The member.
        peer: DeviceId,
        /// Commits sent.
        pushed: u64,
        /// Commits received.
        pulled: u64,
        /// Bytes both ways.
        bytes: u64,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// A conflict entered the inbox.
    ConflictFound {
        /// Its id (`shoal conflicts DB show ID`).
        id: String,
        /// The table.
        table: String,
        /// What kind.
        kind: ConflictKind,
        /// Pending (waits for a person) or auto (resolved by policy).
        status: ConflictStatus,
    },
    /// A conflict closed: resolved here or elsewhere, or overtaken by a write that
    /// saw both sides.
    ConflictClosed {
        /// Its id.
        id: String,
    },
    /// Something captured here is not sealed, and is kept until it can be: a table
    /// whose schema changed in a way Shoal does not follow by itself, or a row too
    /// large for any commit. Reported once, when it starts.
    NotSealed {
        /// The table.
        table: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// This device's newest commit is stamped further ahead of its clock than members
    /// accept: its clock ran ahead once, and members hold its commits until then.
    /// Reported once, when it starts; `shoal restamp` ends it.
    ClockAhead {
        /// How far ahead, in milliseconds.
        ahead_ms: u64,
    },
    /// Commits this device received are held, stamped too far ahead of its clock:
    /// the sender's clock (or that of an author it relayed) ran ahead.
    HeldForClock {
        /// The member they came from.
        peer: DeviceId,
        /// The group.
        group: GroupId,
        /// Its name.
        name: String,
        /// Commits held so, of any author.
        commits: u64,
    },
    /// A member refused this device, or this device refused a member's commits.
    Refused {
        /// The member.
        peer: DeviceId,
        /// Why.
        reason: String,
    },
}

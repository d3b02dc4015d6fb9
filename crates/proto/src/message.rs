//! The messages a session exchanges, and the limits on each.

use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_core::commit::MAX_COMMIT_BYTES;
use shoal_core::identity::{DeviceId, GroupId};
pub use shoal_core::invite::{InviteProblem, invite_proof};
use shoal_core::vv::VersionVector;

/// The protocol version this code speaks: 2 added head tags to hello and welcome.
pub const VERSION: u16 = 2;

/// A batch is closed once its commits reach this many (uncompressed) bytes.
pub const TARGET_BATCH_BYTES: usize = 1 << 20;

/// The most a batch may decompress to: room for one commit of the largest size.
pub const MAX_BATCH_BYTES: usize = MAX_COMMIT_BYTES + (1 << 20);

/// The largest batch frame: a batch's compressed form may exceed its raw size a little.
pub(crate) const MAX_BATCH_FRAME: usize =
    BATCH_HEADER + MAX_BATCH_BYTES + (MAX_BATCH_BYTES >> 7) + 1024;

/// Batches a sender may have unacknowledged at once, whatever its configured window:
/// a receiver refuses a peer that goes past it, which bounds what it buffers.
pub const MAX_WINDOW: usize = 16;

/// The most authors a version vector in a hello or welcome may name.
pub const MAX_VECTOR_AUTHORS: usize = 16_384;

/// The largest hello or welcome body (a version vector of the most authors).
pub(crate) const MAX_HELLO_BYTES: usize = 256 + MAX_VECTOR_AUTHORS * 48;

/// The longest explanation a refusal may carry.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// The bytes before a batch's compressed commits: its number, its count of commits
/// and their raw length.
pub(crate) const BATCH_HEADER: usize = 16;

/// A hash of the columns a device has of a group's tables: equal fingerprints mean
/// both sides can apply every change the other sends.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

/// The initiator's opening.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version; always the first field, so any version can read it.
    pub version: u16,
    /// The group to reconcile.
    pub group: GroupId,
    /// The initiator's device; must be the device the transport authenticated.
    pub device: DeviceId,
    /// The initiator's schema fingerprint of the group's tables.
    pub schema: Fingerprint,
    /// What the initiator holds of the group's log.
    pub have: VersionVector,
    /// The head of each author's chain it holds, as [`Heads`].
    pub heads: Heads,
    /// An invite being redeemed, when the initiator is not yet a member.
    pub invite: Option<InviteClaim>,
}

/// Proof that the initiator holds an invite's secret.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InviteClaim {
    /// The invite's id.
    pub invite: [u8; 16],
    /// [`invite_proof`] of the secret for this group, joiner and inviter.
    pub proof: [u8; 32],
}

/// The responder's acceptance.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version.
    pub version: u16,
    /// The responder's device.
    pub device: DeviceId,
    /// The responder's schema fingerprint of the group's tables.
    pub schema: Fingerprint,
    /// What the responder holds of the group's log.
    pub have: VersionVector,
    /// The head of each author's chain it holds, as [`Heads`].
    pub heads: Heads,
}

/// The first eight bytes of the hash of each author's last commit held, one per
/// author of the version vector beside it, in its order. Two sides at one seq of an
/// author with other tags hold two histories of it: each sends its own commit there,
/// and the other finds the fork.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Heads(pub Vec<[u8; 8]>);

impl Heads {
    /// What to send a peer that holds `peer_have` with `peer_heads`, when this side
    /// holds `have` with `heads`: `peer_have`, one seq back for every author whose
    /// head differs at the same seq, so that this side's commit there goes out.
    pub fn to_send(
        have: &VersionVector,
        heads: &Heads,
        peer_have: &VersionVector,
        peer_heads: &Heads,
    ) -> VersionVector {
        let mut out = peer_have.clone();
        let tags = |vv: &VersionVector,
                    h: &Heads|
         -> std::collections::BTreeMap<shoal_core::DeviceId, [u8; 8]> {
            vv.0.keys().copied().zip(h.0.iter().copied()).collect()
        };
        let (ours, theirs) = (tags(have, heads), tags(peer_have, peer_heads));
        for (author, seq) in &peer_have.0 {
            if seq.0 > 0
                && have.get(author) == *seq
                && ours
                    .get(author)
                    .is_some_and(|t| theirs.get(author) != Some(t))
            {
                out.set(*author, shoal_core::Seq(seq.0 - 1));
            }
        }
        out
    }
}

/// Why a session was refused.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Refusal {
    /// The reason, for programs.
    pub reason: Reason,
    /// An explanation, for people.
    pub detail: String,
}

/// The reasons a session can be refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Reason {
    /// Another protocol version.
    Version {
        /// The version the refusing side speaks.
        supported: u16,
    },
    /// The responder does not know the group.
    UnknownGroup,
    /// The device is not a member of the group.
    NotMember,
    /// The device's membership was revoked.
    Revoked,
    /// The invite was not accepted.
    Invite(InviteProblem),
    /// The peer broke the protocol.
    Protocol,
    /// The device could not take part just now (its database failed).
    Unavailable,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Version { supported } => write!(f, "protocol version {supported} is needed"),
            Reason::UnknownGroup => write!(f, "the device does not know this group"),
            Reason::NotMember => write!(f, "not a member of the group"),
            Reason::Revoked => write!(f, "membership in the group was revoked"),
            Reason::Invite(p) => write!(f, "invite not accepted: {p}"),
            Reason::Protocol => write!(f, "protocol violation"),
            Reason::Unavailable => write!(f, "the device cannot sync just now"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{} ({})", self.reason, self.detail)
        }
    }
}

/// An acknowledgement: the receiver has imported batch `batch`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ack {
    /// The batch, numbered from 0 in the order sent.
    pub batch: u64,
}

/// The sender has sent everything the peer lacked, in `batches` batches.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Done {
    /// How many batches were sent in all.
    pub batches: u64,
}

//! What can go wrong in a session.

use thiserror::Error;

use crate::message::Refusal;

/// A protocol failure. The session is over once one is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// A frame announced a body larger than its kind allows.
    #[error("peer sent a {kind} frame of {size} bytes; the limit is {limit}")]
    OversizedFrame {
        /// The frame's kind.
        kind: &'static str,
        /// The announced size.
        size: usize,
        /// The limit for that kind.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended in the middle of a message ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received of the frame.
        have: usize,
        /// Bytes the frame needed.
        need: usize,
    },
    /// A frame of a kind this version does not know.
    #[error("peer sent a message of unknown type {0}")]
    UnknownMessage(u8),
    /// The peer speaks another protocol version.
    #[error(
        "peer speaks protocol version {theirs}, this device speaks {ours}; update Shoal on the older device"
    )]
    Version {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A message's body did not decode, or a field failed its check.
    #[error("peer sent a malformed {what}: {reason}")]
    Malformed {
        /// The message.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A message that is not allowed at this point of the session.
    #[error("peer sent {what} while {state}")]
    Unexpected {
        /// The message.
        what: &'static str,
        /// The session's state.
        state: &'static str,
    },
    /// A batch that decompresses to more than it announced or than the limit.
    #[error("peer sent a batch that decompresses past {limit} bytes")]
    Bomb {
        /// The limit that was hit.
        limit: usize,
    },
    /// The peer claims to be a device other than the one the transport authenticated.
    #[error("peer says it is device {claimed} but authenticated as {actual}")]
    Impostor {
        /// The device in the hello.
        claimed: String,
        /// The device the transport authenticated.
        actual: String,
    },
    /// The peer refused the session.
    #[error("peer refused: {0}")]
    Refused(Refusal),
    /// This side refused the session.
    #[error("refused the peer: {0}")]
    RefusedPeer(Refusal),
    /// Nothing heard from the peer for too long.
    #[error("peer silent for {0} ms; giving up")]
    Timeout(u64),
    /// A call that does not fit the session's state (a bug in the caller).
    #[error("session misuse: {0}")]
    Misuse(&'static str),
}

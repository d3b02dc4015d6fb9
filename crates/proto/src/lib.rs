//! Shoal's sync protocol, without I/O.
//!
//! Two devices that share a group reconcile its log over one ordered byte stream.
//! [`Session`] is the whole protocol as a state machine: the caller feeds it the
//! bytes it read and the time, and takes out the bytes to write and the
//! [`Event`]s to act on (commits to import, a hello to authorize). It opens no
//! socket, starts no task, reads no clock and touches no database, so the same code
//! runs over iroh QUIC and inside the deterministic simulation.
//!
//! A session, from the side that connects (the initiator):
//!
//! ```text
//! initiator                                   responder
//!   Hello {version, group, device, schema, have, invite?} ──▶
//!                                              authorize (member? invite?)
//!   ◀── Welcome {version, device, schema, have}   or   ◀── Refuse {reason}
//!   Batch* (what the responder lacks) ──▶     ◀── Batch* (what the initiator lacks)
//!   ◀── Ack per batch, once imported          Ack per batch, once imported ──▶
//!   Done {batches} ──▶                        ◀── Done {batches}
//! ```
//!
//! Each side streams commits in per-author order, packed into zstd-compressed batches
//! of about [`TARGET_BATCH_BYTES`], with at most [`Config::window`] batches
//! unacknowledged. Every frame has a kind and a length that is checked against the
//! kind's limit before its body is read; every field is checked before an event
//! reaches the caller.

mod codec;
mod error;
mod frame;
mod message;
mod session;

pub use codec::{pack_commits, unpack_commits};
pub use error::ProtoError;
pub use frame::{Decoder, HEADER_LEN, Kind, encode_frame};
pub use message::{
    Ack, Done, Fingerprint, Heads, Hello, InviteClaim, InviteProblem, MAX_BATCH_BYTES,
    MAX_DETAIL_BYTES, MAX_VECTOR_AUTHORS, MAX_WINDOW, Reason, Refusal, TARGET_BATCH_BYTES, VERSION,
    Welcome, invite_proof,
};
pub use session::{Config, End, Event, Local, Session, Stats};

//! Shoal over the network: an iroh QUIC endpoint whose key is the device key, and
//! the glue between [`shoal_proto::Session`] and a [`shoal_store::Store`].
//!
//! A [`Node`] dials out ([`Node::sync`], [`Node::join`]) and accepts
//! ([`Node::serve`]) on one ALPN, [`ALPN`]. Each group is reconciled on its own
//! bidirectional stream of one connection; the session decides what is sent and
//! checked, this crate only moves its bytes and runs the database work it asks for
//! on blocking threads.

mod admit;
mod drive;
mod error;
pub mod fault;
mod node;
mod peer;
mod ticket;

pub use admit::{Admission, admit};
pub use drive::{SharedStore, with_store};
pub use error::NetError;
pub use node::{GroupSync, JoinSummary, Node, NodeConfig, PeerSync, Progress, Relay};
pub use peer::PeerSpec;
pub use ticket::InviteTicket;

/// The one application protocol Shoal speaks on an iroh connection.
pub const ALPN: &[u8] = b"shoal/sync/1";

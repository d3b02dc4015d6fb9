//! Shoal over the network: an iroh QUIC endpoint whose key is the device key, and
//! the glue between [`shoal_proto::Session`] and a [`shoal_store::Store`].
//!
//! A [`Node`] dials out ([`Node::sync`], [`Node::join`]) and accepts
//! ([`Node::serve`]) on one ALPN, [`ALPN`]. Each group is reconciled on its own
//! bidirectional stream of one connection; the session decides what is sent and
//! checked, its [`shoal_host::Host`] what the database does, and this crate only
//! moves the bytes and runs the host's work on blocking threads.

mod drive;
mod error;
pub mod fault;
mod node;
mod peer;
mod ticket;

pub use drive::{Progress, SharedStore, with_store};
pub use error::NetError;
pub use node::{ALPN, JoinSummary, Node, NodeConfig, PeerSync, Relay};
pub use peer::PeerSpec;
pub use shoal_host::GroupSync;
pub use ticket::InviteTicket;

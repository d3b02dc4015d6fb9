//! Shoal over the network: an iroh QUIC endpoint whose key is the device key, and
//! the glue between [`shoal_proto::Session`] and a [`shoal_store::Store`].
//!
//! A [`Node`] dials out ([`Node::sync`], [`Node::join`]) and accepts
//! ([`Node::serve`], [`Node::listen`], through iroh's router) on one ALPN, [`ALPN`],
//! and hands out a connection only as a [`PeerLink`]. Each group is reconciled on its own
//! bidirectional stream of one connection; the session decides what is sent and
//! checked, its [`shoal_host::Host`] what the database does, and this crate only
//! moves the bytes and runs the host's work on blocking threads.

mod accept;
mod drive;
mod error;
pub mod fault;
mod link;
mod node;
mod peer;
mod ticket;

pub use accept::{Quiet, Welcome};
pub use drive::{Progress, SharedStore, with_store};
pub use error::NetError;
pub use link::{CloseReason, LinkPath, PathKind, PeerLink};
pub use node::{ALPN, JoinSummary, Node, NodeConfig, PeerSync, Relay};
pub use peer::PeerSpec;
pub use shoal_host::GroupSync;
pub use ticket::InviteTicket;

//! Network errors, each saying what went wrong and what to do.

use shoal_proto::ProtoError;
use shoal_store::StoreError;
use thiserror::Error;

/// What can go wrong between two devices.
#[derive(Debug, Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum NetError {
    /// The database said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The protocol failed: the peer broke it, refused us, or we refused it.
    #[error(transparent)]
    Protocol(#[from] ProtoError),
    /// The endpoint could not be made.
    #[error("could not open a network endpoint: {0}")]
    Bind(String),
    /// A peer could not be reached.
    #[error(
        "could not reach device {peer}: {reason}. Check that it runs `shoal serve` (or `shoal invite`) and that an address for it is right"
    )]
    Connect {
        /// The device.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The connection broke during a session.
    #[error("the connection to {peer} broke: {reason}")]
    Stream {
        /// The device.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A ticket that cannot be read or trusted.
    #[error("bad ticket: {0}")]
    Ticket(String),
    /// A peer given on the command line that cannot be understood or found.
    #[error("bad peer {input:?}: {reason}")]
    Peer {
        /// What was given.
        input: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No peer could be reached at all.
    #[error("no peer to sync with: {0}")]
    NoPeers(String),
    /// A blocking database task died.
    #[error("a database task failed: {0}")]
    Task(String),
}

impl NetError {
    /// A stable name for the kind of error, for programs: the store's own for one of
    /// its errors, else this one's (`connect`, `stream`, `protocol`, …).
    pub fn code(&self) -> &'static str {
        match self {
            NetError::Store(e) => e.code(),
            e => e.into(),
        }
    }

    /// Whether trying again later may go otherwise: the peer could not be reached or
    /// the connection broke, rather than a refusal or a bad ticket.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NetError::Connect { .. }
                | NetError::Stream { .. }
                | NetError::NoPeers(_)
                | NetError::Task(_)
                | NetError::Bind(_)
        )
    }
}

impl From<shoal_host::HostError> for NetError {
    fn from(e: shoal_host::HostError) -> Self {
        match e {
            shoal_host::HostError::Store(e) => NetError::Store(e),
            shoal_host::HostError::Protocol(e) => NetError::Protocol(e),
            e => NetError::Task(e.to_string()),
        }
    }
}

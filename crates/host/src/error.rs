//! Why a hosted session ended early.

use shoal_proto::ProtoError;
use shoal_store::StoreError;
use thiserror::Error;

/// What ends a hosted session.
#[derive(Debug, Error)]
pub enum HostError {
    /// The database said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The protocol failed: the peer broke it, refused us, or we refused it.
    #[error(transparent)]
    Protocol(#[from] ProtoError),
    /// A result was handed back with no task out.
    #[error("a task's result came back, but no task was out")]
    NoTask,
    /// A result was handed back for another task than the one out.
    #[error("the result of another task came back while a {0} task was out")]
    Mismatch(&'static str),
}

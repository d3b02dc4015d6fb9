//! What can go wrong running a daemon or talking to one, each saying what to do.

use std::path::PathBuf;

use shoal_net::NetError;
use shoal_store::StoreError;
use thiserror::Error;

/// A daemon's errors.
#[derive(Debug, Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DaemonError {
    /// The database said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The network said no.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The configuration file cannot be read.
    #[error(
        "the configuration in {path} is not valid: {reason}. Fix it, or change it with `shoal config set`"
    )]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The auto-sync setting kept for the device cannot be read or written.
    #[error("the auto-sync setting kept in {path} cannot be read or written: {reason}")]
    AutoSyncFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting given a value it cannot take.
    #[error("setting {key}: {reason}")]
    Value {
        /// The setting.
        key: String,
        /// Why.
        reason: String,
    },
    /// A daemon already serves this database.
    #[error(
        "a daemon already runs for this database (its control socket is {0}); stop it first, or let the other commands work through it"
    )]
    AlreadyRunning(PathBuf),
    /// Talking to a running daemon failed.
    #[error("the daemon did not answer: {0}. If it was killed, start it again with `shoal up`")]
    Control(String),
    /// A device asked for is no member of any group this device is in.
    #[error(
        "device {0} is no member of a group this device is in: `shoal peers DB` lists the members"
    )]
    NoSuchMember(shoal_core::DeviceId),
    /// This device was named where another was wanted (to sync with).
    #[error("device {0} is this device: name another member (`shoal peers DB` lists them)")]
    OwnDevice(shoal_core::DeviceId),
    /// The daemon answered with an error.
    #[error("{0}")]
    Remote(String),
    /// Something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DaemonError {
    /// A stable name for the kind of error, for programs: the store's or the
    /// network's own for one of theirs, else this one's (`config`, `no_such_member`,
    /// …).
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Store(e) => e.code(),
            DaemonError::Net(e) => e.code(),
            e => e.into(),
        }
    }

    /// Whether trying again later may go otherwise (a peer out of reach, a broken
    /// connection), rather than a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, DaemonError::Net(e) if e.is_transient())
    }
}

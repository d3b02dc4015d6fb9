//! The errors of the core layer: malformed, forged or inconsistent data.

use crate::identity::{BadId, DeviceId, Seq};

/// What went wrong while decoding, verifying or building core data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// Bytes that should hold a commit or another record could not be decoded.
    #[error("malformed {what}: {reason}; the sender is not speaking Shoal's format")]
    Malformed {
        /// The kind of record being decoded.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A record is larger than Shoal accepts.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The kind of record.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The largest size accepted.
        limit: usize,
    },
    /// A commit's signature does not match its author's key.
    #[error(
        "commit {seq} by {author} has an invalid signature: it was forged or altered in transit"
    )]
    BadSignature {
        /// The claimed author.
        author: DeviceId,
        /// The claimed sequence number.
        seq: Seq,
    },
    /// A commit breaks one of the format's structural rules.
    #[error("commit {seq} by {author} is invalid: {reason}")]
    InvalidCommit {
        /// The claimed author.
        author: DeviceId,
        /// The claimed sequence number.
        seq: Seq,
        /// Which rule it breaks.
        reason: String,
    },
    /// A peer's clock reading lies too far in the future to be trusted now.
    #[error(
        "clock {remote_ms} ms is {ahead_ms} ms ahead of local wall time, more than the allowed drift of {max_drift_ms} ms"
    )]
    ClockTooFarAhead {
        /// The remote physical time in milliseconds since the Unix epoch.
        remote_ms: u64,
        /// How far ahead of local wall time it is.
        ahead_ms: u64,
        /// The largest drift accepted.
        max_drift_ms: u64,
    },
    /// A device or group id was not valid hexadecimal of the right length.
    #[error(transparent)]
    BadId(#[from] BadId),
    /// The operating system could not supply randomness for a new key.
    #[error("could not get randomness from the operating system: {reason}")]
    NoRandomness {
        /// The system's explanation.
        reason: String,
    },
}

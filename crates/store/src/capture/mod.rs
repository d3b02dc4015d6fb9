//! The capture layer: the app's own writes, from any client, logged by triggers and
//! sealed into signed, hash-chained commits of this device.
//!
//! Capture never applies a remote change. It uses the merge layer only to keep the
//! records a local write settles (a conflict it overwrites, a row set aside it frees)
//! in step with that write.

pub(crate) mod restamp;
pub(crate) mod seal;
pub(crate) mod sweep;
pub(crate) mod track;
pub(crate) mod triggers;

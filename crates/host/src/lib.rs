//! The database side of a Shoal session, free of I/O.
//!
//! A [`shoal_proto::Session`] decides what goes over the wire; a [`Host`] decides
//! what the database does about it: admit a hello ([`admit()`]), verify and keep the
//! batches that arrive and acknowledge them, export what the peer lacks, and apply
//! what was kept once the session ends, well or not. It hands that work out as
//! [`Task`]s, so the network driver (`shoal-net`), the simulation (`shoal-sim`) and
//! `shoal merge` ([`exchange`]) all run the very same decisions, each with its own
//! way of moving bytes and of running work.

mod admit;
mod error;
mod host;
mod local;
mod summary;

pub use admit::{Admission, Trust, admit};
pub use error::HostError;
pub use host::{Done, EXPORT_CHUNK, Host, Task, local_side};
pub use local::{Exchange, exchange};
pub use summary::GroupSync;

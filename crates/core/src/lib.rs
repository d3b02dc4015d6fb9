//! Shoal's core: the vocabulary every other crate speaks.
//!
//! Device identity, hybrid logical clocks, SQLite-shaped values, version vectors,
//! signed hash-chained commits, groups and their membership rules, and the merge rules
//! as pure functions. This crate
//! knows nothing of SQLite, async code, the network or the wall clock: time comes in
//! as an argument.

pub mod clock;
pub mod commit;
pub mod error;
pub mod group;
pub mod identity;
pub mod invite;
pub mod merge;
pub mod value;
pub mod version;
pub mod view;
pub mod vv;

pub use clock::{Hlc, MAX_DRIFT_MS};
pub use commit::{
    Cell, Checked, CommitBody, CommitHash, Op, RowChange, Seq, SignedCommit, TableChanges,
    VerifiedCommit, Version, VersionRef,
};
pub use error::CoreError;
pub use group::{Group, GroupOp, Role};
pub use identity::{BadId, DeviceId, DeviceKey, GroupId};
pub use value::Value;
pub use view::{BodyView, CommitHead, RowView, ValueRef};
pub use vv::VersionVector;

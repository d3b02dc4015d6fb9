//! The import layer: other devices' commits checked against their chains and their
//! group, merged, taken back when a revocation arrives late, and handed out to peers.
//!
//! It is the only layer that reads a commit's signature or its author's standing:
//! below it, a change is a change.

mod chain;
mod export;
mod retract;
mod standing;

pub(crate) use chain::{import, receive};
pub(crate) use export::{export_chunk, export_each};

use rusqlite::Connection;

use crate::error::Result;
use crate::merge::aside;
use crate::tables::{commits, held};

/// Whether any commit waits (for an earlier one, or for its clock), any row change is
/// held or any row is set aside: what [`crate::Store::apply_waiting`] may apply.
pub(crate) fn anything_waiting(conn: &Connection) -> Result<bool> {
    Ok(commits::any_waiting(conn)? || held::any(conn)? || aside::any(conn)?)
}

//! The merge layer: remote row changes applied to the app's tables by the merge
//! rules (column-level last-writer-wins, causal-length deletes), with what loses kept
//! as conflict records, rows a constraint refuses set aside, and foreign keys checked
//! once a batch is in.
//!
//! The merge knows nothing of commits' signatures, chains or groups: a change comes
//! with its versions spelled out and is applied, held or set aside by what the file
//! holds alone, so that every device ends with the same rows.

pub(crate) mod apply;
pub(crate) mod aside;
pub(crate) mod batch;
pub(crate) mod conflict;
pub(crate) mod foreign;
pub(crate) mod fresh;
pub(crate) mod inbox;
pub(crate) mod pending;
pub(crate) mod resolve;
pub(crate) mod settle;
pub(crate) mod tables;

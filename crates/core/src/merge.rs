//! The merge rules, as pure functions over causal lengths and versions.
//!
//! A row's existence follows its causal length `cl`: odd is alive, even is deleted,
//! and every delete or re-insert moves it up by one, so the highest `cl` seen wins and a
//! delete beats an update made to the incarnation it ended. Within one incarnation each
//! column is last-writer-wins by [`Version`], a total order. Both are maxima over the
//! set of writes, which is what makes applying idempotent, commutative and associative.
//!
//! An update whose incarnation's insert has not arrived is held, never applied to a row
//! half-empty. An insert starts a row's life anew: over a live row it writes every
//! column, those its sender lacks taking their default, never what the row's earlier
//! life left, which a device that applied the delete first does not have.

use crate::version::{Op, Version};

/// What applying a row change should do, given the local causal length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RowAction {
    /// The change belongs to an incarnation that has already ended here: no effect.
    Stale,
    /// The change starts a newer incarnation (insert) or ends the row (delete).
    Replace,
    /// Same incarnation: merge the written columns one by one.
    MergeCells,
    /// A delete of the incarnation already deleted here.
    Duplicate,
    /// An update to an incarnation whose insert has not arrived yet: keep it until then.
    Hold,
}

/// Decides how a change with causal length `cl` meets a row whose local causal length
/// is `local_cl` (0 when the row was never seen).
pub fn row_action(local_cl: u64, op: Op, cl: u64) -> RowAction {
    use std::cmp::Ordering::*;
    match (cl.cmp(&local_cl), op) {
        (Less, _) => RowAction::Stale,
        (Greater, Op::Insert | Op::Delete) => RowAction::Replace,
        (Greater, Op::Update) => RowAction::Hold,
        (Equal, Op::Delete) => RowAction::Duplicate,
        (Equal, Op::Insert | Op::Update) => RowAction::MergeCells,
    }
}

/// Whether a losing write was concurrent with the write that beat it: true when the
/// winner's author had not seen the loser. `winner_saw` is the newest version the
/// winner's author held for the same cell (or row, for a delete) when writing.
///
/// Every device's view of a cell only moves up, so an author that had seen the loser
/// saw a version at least as new.
pub fn concurrent(loser: Version, winner_saw: Option<Version>) -> bool {
    winner_saw.is_none_or(|saw| loser > saw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceId, Hlc};

    fn v(ms: u64, who: u8) -> Version {
        Version {
            hlc: Hlc::new(ms, 0),
            author: DeviceId([who; 32]),
        }
    }

    #[test]
    fn causal_length_decides_row_actions() {
        assert_eq!(row_action(2, Op::Update, 1), RowAction::Stale);
        assert_eq!(row_action(1, Op::Delete, 2), RowAction::Replace);
        assert_eq!(row_action(0, Op::Insert, 1), RowAction::Replace);
        assert_eq!(row_action(1, Op::Update, 3), RowAction::Hold);
        assert_eq!(row_action(2, Op::Delete, 2), RowAction::Duplicate);
        assert_eq!(row_action(3, Op::Insert, 3), RowAction::MergeCells);
    }

    #[test]
    fn versions_order_by_clock_then_author() {
        assert!(v(2, 0) > v(1, 9));
        assert!(v(1, 2) > v(1, 1));
    }

    #[test]
    fn concurrency_is_judged_by_what_the_winner_saw() {
        assert!(concurrent(v(5, 1), None));
        assert!(concurrent(v(5, 1), Some(v(4, 1))));
        assert!(!concurrent(v(5, 1), Some(v(5, 1))));
        assert!(!concurrent(v(3, 1), Some(v(5, 2))));
    }
}

//! When a member is owed a round of sync: pure decisions over what each side holds,
//! with no clock, no connection and no lock, so that they are tested on their own.

use std::collections::HashMap;
use std::time::Duration;

use shoal_core::{DeviceId, GroupId, VersionVector};

/// What a member lacks of this device's holdings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lack {
    Nothing,
    /// Commits this device made (or nothing is known of the member yet): sent at once.
    Own,
    /// Only other devices' commits, which the member may have had from them.
    Relayed,
}

/// How long a round that only passes on others' commits waits: the member has most
/// likely had them from their author already, so the round that checks carries what
/// arrived meanwhile too.
pub(crate) const FORWARD_DELAY: Duration = Duration::from_millis(250);

/// What a member that shares `groups` with this device, and held `known` at the end
/// of the last session, lacks of `have`: commits by `me`, or only commits this device
/// would pass on.
pub(crate) fn lack(
    groups: &[GroupId],
    known: &HashMap<GroupId, VersionVector>,
    have: &HashMap<GroupId, VersionVector>,
    me: &DeviceId,
) -> Lack {
    let mut lack = Lack::Nothing;
    for g in groups {
        let Some(h) = have.get(g) else { continue };
        match known.get(g) {
            None => return Lack::Own,
            Some(k) if h.get(me) > k.get(me) => return Lack::Own,
            Some(k) if !k.covers(h) => lack = Lack::Relayed,
            Some(_) => {}
        }
    }
    lack
}

/// Whether `have` holds anything the member lacks in a group both are in: a wake-up
/// for a round that already ran finds nothing.
pub(crate) fn behind(
    groups: &[GroupId],
    known: &HashMap<GroupId, VersionVector>,
    have: &HashMap<GroupId, VersionVector>,
) -> bool {
    groups.iter().any(|g| match (have.get(g), known.get(g)) {
        (Some(h), Some(k)) => !k.covers(h),
        (Some(_), None) => true,
        (None, _) => false,
    })
}

/// Of two devices that start together, the one with the lower id dials first, so
/// that usually one connection serves both: whether `me` waits a backoff first.
pub(crate) fn waits_to_dial(me: &DeviceId, peer: &DeviceId) -> bool {
    peer < me
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Seq;

    fn device(n: u8) -> DeviceId {
        DeviceId([n; 32])
    }

    fn vv(entries: &[(u8, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for (d, s) in entries {
            v.set(device(*d), Seq(*s));
        }
        v
    }

    fn holdings(entries: &[(GroupId, VersionVector)]) -> HashMap<GroupId, VersionVector> {
        entries.iter().cloned().collect()
    }

    const G: GroupId = GroupId([7; 32]);
    const H: GroupId = GroupId([8; 32]);

    #[test]
    fn a_member_never_heard_from_lacks_our_own() {
        let have = holdings(&[(G, vv(&[(1, 3)]))]);
        assert_eq!(lack(&[G], &HashMap::new(), &have, &device(1)), Lack::Own);
    }

    #[test]
    fn our_new_commits_go_at_once_and_relayed_ones_wait() {
        let me = device(1);
        let have = holdings(&[(G, vv(&[(1, 3), (2, 5)]))]);
        let knows_all = holdings(&[(G, vv(&[(1, 3), (2, 5)]))]);
        let lacks_ours = holdings(&[(G, vv(&[(1, 2), (2, 5)]))]);
        let lacks_relayed = holdings(&[(G, vv(&[(1, 3), (2, 4)]))]);
        assert_eq!(lack(&[G], &knows_all, &have, &me), Lack::Nothing);
        assert_eq!(lack(&[G], &lacks_ours, &have, &me), Lack::Own);
        assert_eq!(lack(&[G], &lacks_relayed, &have, &me), Lack::Relayed);
    }

    #[test]
    fn our_own_lack_in_any_group_outranks_a_relayed_one() {
        let me = device(1);
        let have = holdings(&[(G, vv(&[(2, 5)])), (H, vv(&[(1, 1)]))]);
        let known = holdings(&[(G, vv(&[(2, 4)])), (H, vv(&[]))]);
        assert_eq!(lack(&[G, H], &known, &have, &me), Lack::Own);
        assert_eq!(lack(&[G], &known, &have, &me), Lack::Relayed);
    }

    #[test]
    fn groups_not_shared_are_no_reason_for_a_round() {
        let me = device(1);
        let have = holdings(&[(G, vv(&[(1, 9)])), (H, vv(&[(1, 1)]))]);
        let known = holdings(&[(H, vv(&[(1, 1)]))]);
        assert_eq!(lack(&[H], &known, &have, &me), Lack::Nothing);
        assert!(!behind(&[H], &known, &have));
        assert!(behind(&[G, H], &known, &have));
    }

    #[test]
    fn a_member_ahead_of_us_is_not_behind() {
        let have = holdings(&[(G, vv(&[(1, 3)]))]);
        let known = holdings(&[(G, vv(&[(1, 3), (2, 8)]))]);
        assert!(!behind(&[G], &known, &have));
        assert_eq!(lack(&[G], &known, &have, &device(1)), Lack::Nothing);
    }

    #[test]
    fn of_two_devices_exactly_one_waits_to_dial() {
        let (a, b) = (device(1), device(2));
        assert!(waits_to_dial(&b, &a));
        assert!(!waits_to_dial(&a, &b));
        assert_ne!(waits_to_dial(&a, &b), waits_to_dial(&b, &a));
    }
}

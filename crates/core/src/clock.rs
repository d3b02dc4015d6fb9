//! Hybrid logical clocks: wall time in milliseconds plus a counter, never going back.
//!
//! An [`Hlc`] packs 48 bits of physical time (milliseconds since the Unix epoch) above
//! a 16-bit logical counter, so that clocks compare as plain integers. Time is always
//! passed in; this module never reads the wall clock itself.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// How far ahead of local wall time a peer's clock may be before its commits are held.
pub const MAX_DRIFT_MS: u64 = 60_000;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical clock reading.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The reading for `physical_ms` with logical counter `logical`.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// Milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The counter that orders readings within one millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The next reading for a local event at wall time `now_ms`: strictly greater than
    /// `self`, and at least `now_ms`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        let wall = Hlc::new(now_ms, 0);
        if wall > self { wall } else { Hlc(self.0 + 1) }
    }

    /// Takes in a reading seen from a peer. The local clock moves up to it, unless it
    /// lies more than `max_drift_ms` past `now_ms`: then it is refused and the local
    /// clock stays where it is.
    pub fn observe(self, remote: Hlc, now_ms: u64, max_drift_ms: u64) -> Result<Hlc, CoreError> {
        check_drift(remote, now_ms, max_drift_ms)?;
        Ok(self.max(remote))
    }
}

/// Refuses a reading more than `max_drift_ms` ahead of `now_ms`.
pub fn check_drift(remote: Hlc, now_ms: u64, max_drift_ms: u64) -> Result<(), CoreError> {
    let ahead_ms = remote.physical_ms().saturating_sub(now_ms);
    if ahead_ms > max_drift_ms {
        return Err(CoreError::ClockTooFarAhead {
            remote_ms: remote.physical_ms(),
            ahead_ms,
            max_drift_ms,
        });
    }
    Ok(())
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.physical_ms(), self.logical())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tick_follows_wall_time_and_counts_within_a_millisecond() {
        let a = Hlc::default().tick(1_000);
        assert_eq!((a.physical_ms(), a.logical()), (1_000, 0));
        let b = a.tick(1_000);
        assert_eq!((b.physical_ms(), b.logical()), (1_000, 1));
        // The wall clock stepping back does not move the clock back.
        let c = b.tick(500);
        assert!(c > b);
        assert_eq!(c.physical_ms(), 1_000);
    }

    #[test]
    fn observe_refuses_readings_beyond_the_drift() {
        let local = Hlc::new(1_000, 0);
        let near = Hlc::new(1_000 + MAX_DRIFT_MS, 3);
        assert_eq!(local.observe(near, 1_000, MAX_DRIFT_MS), Ok(near));
        let far = Hlc::new(1_001 + MAX_DRIFT_MS, 0);
        assert!(matches!(
            local.observe(far, 1_000, MAX_DRIFT_MS),
            Err(CoreError::ClockTooFarAhead { ahead_ms, .. }) if ahead_ms == MAX_DRIFT_MS + 1
        ));
    }

    proptest! {
        #[test]
        fn ticks_are_strictly_increasing(start in 0u64..1 << 40, walls in prop::collection::vec(0u64..1 << 40, 1..50)) {
            let mut clock = Hlc::new(start, 0);
            for now in walls {
                let next = clock.tick(now);
                prop_assert!(next > clock);
                prop_assert!(next.physical_ms() >= now);
                clock = next;
            }
        }
    }
}

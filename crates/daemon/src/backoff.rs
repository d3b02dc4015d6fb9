//! How long to wait before trying a member again: doubling from a minimum to a cap,
//! each wait drawn between half and all of its step, so that devices that lost each
//! other at the same moment do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits start at `min` and never exceed `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The step after `failures` failed attempts: `min · 2^failures`, at most `max`.
    pub fn step(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next attempt, after one more failure.
    pub fn fail(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.step();
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + Duration::from_micros(rng.random_range(0..=(step - half).as_micros() as u64))
    }

    /// An attempt succeeded: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_reset_after_success() {
        let mut rng = StdRng::seed_from_u64(7);
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut b = Backoff::new(min, max);
        let mut seen = Vec::new();
        for i in 0..12u32 {
            let step = (min * 2u32.pow(i.min(10))).min(max);
            let wait = b.fail(&mut rng);
            assert!(
                wait >= step / 2 && wait <= step,
                "wait {i}: {wait:?} for step {step:?}"
            );
            seen.push(wait);
        }
        // Jitter: the capped waits are not all the same.
        assert!(seen[6..].windows(2).any(|w| w[0] != w[1]), "{seen:?}");
        b.reset();
        assert!(b.fail(&mut rng) <= min);
    }

    #[test]
    fn a_huge_number_of_failures_stays_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            assert!(b.fail(&mut rng) <= Duration::from_secs(300));
        }
        assert_eq!(b.step(), Duration::from_secs(300));
    }
}

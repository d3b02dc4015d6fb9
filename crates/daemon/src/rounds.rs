//! When to dial a member and when to run a round of sync with it: a state machine
//! over what happened, with the clock passed in and no connection, lock or task, so
//! that each timing rule is tested on its own. `supervise` drives it.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::backoff::Backoff;

/// What the supervisor does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No connection is up: dial at this moment, unless the member connects first.
    Dial { at: Instant },
    /// A round is owed: run it now.
    Round,
    /// Connected, with nothing owed: wait for a wake-up or a close, or until this
    /// moment, when the periodic round is owed.
    Wait { until: Instant },
    /// Automatic sync is off: neither dial nor run a round until it is on again
    /// (members may still dial in, and a sync asked for runs on its own).
    Paused,
}

/// What happened since the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Happened {
    /// A connection came up: dialed by this side or by the member.
    Connected,
    /// A dial that started at `started` reached no address.
    DialFailed { started: Instant },
    /// A round finished.
    RoundRan,
    /// A round failed; its connection is closed.
    RoundFailed,
    /// The connection closed.
    Closed,
    /// Something here changed; `behind` says whether the member lacks any of it (a
    /// wake-up may be stale: the round it asked for already ran).
    Woken { behind: bool },
}

/// The timing of one member's dials and rounds.
#[derive(Debug)]
pub(crate) struct Rounds<R> {
    backoff: Backoff,
    rng: R,
    /// Whether rounds run by themselves.
    on: bool,
    interval: Duration,
    /// When the last round ended.
    last_round: Option<Instant>,
    /// When the next dial may start, while no connection is up.
    dial_at: Instant,
    /// When the periodic round is owed on a connection that has had nothing new.
    round_at: Instant,
    /// Whether a round is owed at once: on every new connection, and when this
    /// device holds something the member lacks.
    owed: bool,
}

impl<R: Rng> Rounds<R> {
    /// A member first seen at `now`. Of two devices that start together one dials
    /// at once and the other (`waits`) a backoff later, so that usually one
    /// connection serves both.
    pub(crate) fn new(
        now: Instant,
        waits: bool,
        mut backoff: Backoff,
        interval: Duration,
        mut rng: R,
    ) -> Rounds<R> {
        let dial_at = if waits {
            let wait = backoff.fail(&mut rng);
            backoff.reset();
            now + wait
        } else {
            now
        };
        Rounds {
            backoff,
            rng,
            on: true,
            interval,
            last_round: None,
            dial_at,
            round_at: now,
            owed: true,
        }
    }

    /// What to do at `now`, given whether a connection is up.
    pub(crate) fn next(&self, now: Instant, connected: bool) -> Step {
        if !self.on {
            Step::Paused
        } else if !connected {
            Step::Dial { at: self.dial_at }
        } else if self.owed || now >= self.round_at {
            Step::Round
        } else {
            Step::Wait {
                until: self.round_at,
            }
        }
    }

    /// Takes in what happened at `now`.
    pub(crate) fn on(&mut self, now: Instant, what: Happened) {
        match what {
            // A connection alone does not reset the backoff: a member that takes the
            // connection and then refuses this device (it was revoked) would be
            // dialed again at the shortest wait for ever. A round that ran does.
            Happened::Connected => self.owed = true,
            Happened::DialFailed { started } => {
                self.dial_at = started + self.backoff.fail(&mut self.rng);
            }
            Happened::RoundRan => {
                self.backoff.reset();
                self.owed = false;
                self.last_round = Some(now);
                self.round_at = now + self.interval;
            }
            Happened::RoundFailed | Happened::Closed => {
                self.owed = true;
                self.dial_at = now + self.backoff.fail(&mut self.rng);
            }
            Happened::Woken { behind } => self.owed |= behind,
        }
    }

    /// Whether rounds run by themselves.
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// Automatic sync turned on or off, or its interval changed. Turned on again, a
    /// round is owed at once: something may have changed meanwhile.
    pub(crate) fn set(&mut self, now: Instant, on: bool, interval: Duration) {
        if on && !self.on {
            self.owed = true;
            self.dial_at = self.dial_at.min(now);
        }
        self.on = on;
        self.interval = interval;
        if let Some(last) = self.last_round {
            self.round_at = last + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    const INTERVAL: Duration = Duration::from_secs(30);

    fn rounds(now: Instant, waits: bool) -> Rounds<StdRng> {
        Rounds::new(
            now,
            waits,
            Backoff::new(MIN, MAX),
            INTERVAL,
            StdRng::seed_from_u64(9),
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_new_member_is_dialed_at_once_unless_it_dials_first() {
        let t0 = Instant::now();
        assert_eq!(rounds(t0, false).next(t0, false), Step::Dial { at: t0 });
        let Step::Dial { at } = rounds(t0, true).next(t0, false) else {
            panic!("no dial");
        };
        assert!(at >= t0 + MIN / 2 && at <= t0 + MIN, "{:?}", at - t0);
    }

    #[test]
    fn failed_dials_back_off_from_when_they_started_and_a_round_resets_it() {
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        let mut started = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            // Each dial takes a second to fail; the wait counts from its start.
            r.on(started + ms(1000), Happened::DialFailed { started });
            let Step::Dial { at } = r.next(started + ms(1000), false) else {
                panic!("no dial");
            };
            waits.push(at - started);
            started = at;
        }
        assert!(waits[0] <= MIN, "{waits:?}");
        assert!(waits[9] >= MAX / 2 && waits[9] <= MAX, "{waits:?}");
        assert!(waits.windows(2).take(5).all(|w| w[1] > w[0]), "{waits:?}");
        r.on(started, Happened::Connected);
        r.on(started, Happened::RoundRan);
        r.on(started, Happened::Closed);
        let Step::Dial { at } = r.next(started, false) else {
            panic!("no dial");
        };
        assert!(at - started <= MIN, "{:?}", at - started);
    }

    #[test]
    fn connections_closed_before_a_round_runs_back_off_further_each_time() {
        // A member that takes every connection and refuses this device.
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            r.on(now, Happened::Connected);
            assert_eq!(r.next(now, true), Step::Round);
            r.on(now + ms(5), Happened::RoundFailed);
            let Step::Dial { at } = r.next(now + ms(5), false) else {
                panic!("no dial");
            };
            waits.push(at - (now + ms(5)));
            now = at;
        }
        assert!(waits[9] >= MAX / 2, "the waits did not grow: {waits:?}");
        assert!(waits.windows(2).take(5).all(|w| w[1] > w[0]), "{waits:?}");
    }

    #[test]
    fn a_connection_is_owed_a_round_then_one_each_interval() {
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        r.on(t0, Happened::Connected);
        assert_eq!(r.next(t0, true), Step::Round);
        r.on(t0 + ms(5), Happened::RoundRan);
        let until = t0 + ms(5) + INTERVAL;
        assert_eq!(r.next(t0 + ms(6), true), Step::Wait { until });
        assert_eq!(r.next(until, true), Step::Round);
    }

    #[test]
    fn a_stale_wake_up_runs_no_round_and_does_not_put_off_the_periodic_one() {
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        r.on(t0, Happened::Connected);
        r.on(t0, Happened::RoundRan);
        let until = t0 + INTERVAL;
        for i in 1..20 {
            let now = t0 + ms(i * 1000);
            r.on(now, Happened::Woken { behind: false });
            assert_eq!(r.next(now, true), Step::Wait { until });
        }
        r.on(t0 + ms(20_000), Happened::Woken { behind: true });
        assert_eq!(r.next(t0 + ms(20_000), true), Step::Round);
    }

    #[test]
    fn a_wake_up_without_a_connection_changes_nothing() {
        let t0 = Instant::now();
        let mut r = rounds(t0, true);
        let before = r.next(t0, false);
        r.on(t0, Happened::Woken { behind: true });
        assert_eq!(r.next(t0, false), before);
    }

    #[test]
    fn paused_nothing_is_dialed_or_run_and_on_again_a_round_is_owed_at_once() {
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        r.set(t0, false, INTERVAL);
        assert_eq!(r.next(t0, false), Step::Paused);
        r.on(t0, Happened::Connected);
        r.on(t0, Happened::Woken { behind: true });
        assert_eq!(r.next(t0 + INTERVAL * 3, true), Step::Paused);
        r.set(t0 + ms(10), true, INTERVAL);
        assert_eq!(r.next(t0 + ms(10), true), Step::Round);
        // Off while disconnected and backing off: on again, it dials at once.
        let mut r = rounds(t0, false);
        r.on(t0, Happened::DialFailed { started: t0 });
        r.on(t0, Happened::DialFailed { started: t0 });
        r.set(t0, false, INTERVAL);
        r.set(t0 + ms(1), true, INTERVAL);
        assert_eq!(r.next(t0 + ms(1), false), Step::Dial { at: t0 + ms(1) });
    }

    #[test]
    fn a_new_interval_counts_from_the_last_round() {
        let t0 = Instant::now();
        let mut r = rounds(t0, false);
        r.on(t0, Happened::Connected);
        r.on(t0, Happened::RoundRan);
        r.set(t0 + ms(100), true, Duration::from_secs(5));
        assert_eq!(
            r.next(t0 + ms(100), true),
            Step::Wait {
                until: t0 + Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn a_close_or_a_failed_round_backs_off_and_owes_a_round_on_the_next_connection() {
        for lost in [Happened::Closed, Happened::RoundFailed] {
            let t0 = Instant::now();
            let mut r = rounds(t0, false);
            r.on(t0, Happened::Connected);
            r.on(t0, Happened::RoundRan);
            let t1 = t0 + ms(50);
            r.on(t1, lost);
            let Step::Dial { at } = r.next(t1, false) else {
                panic!("no dial after {lost:?}");
            };
            assert!(at > t1 && at <= t1 + MIN, "{lost:?}: {:?}", at - t1);
            // The member dials in before the backoff ends.
            r.on(t1 + ms(10), Happened::Connected);
            assert_eq!(r.next(t1 + ms(10), true), Step::Round, "{lost:?}");
        }
    }
}

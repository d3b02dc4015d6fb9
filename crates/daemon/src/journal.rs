//! The daemon's events, numbered densely as they happen, the latest of them kept: a
//! listener that lost its connection asks for what came after the last one it saw,
//! and learns how many are no longer kept.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::debug;

use crate::event::Event;
use crate::mutex::lock;

/// How many of the latest events are kept for listeners that come back.
pub const EVENTS_KEPT: usize = 1024;

/// An event and its number: 1 for the daemon's first, then one more each time. In
/// JSON, the event's own fields and `event_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Numbered {
    /// Its number.
    #[serde(rename = "event_id")]
    pub id: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// What came after an event, as far as it is still kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Since {
    /// The events kept after it, oldest first.
    pub events: Vec<Numbered>,
    /// How many events after it are no longer kept: the listener missed them.
    pub missed: u64,
}

/// Where every event goes out, and the latest ones are kept.
pub(crate) struct Journal {
    kept: Mutex<Kept>,
    out: broadcast::Sender<Numbered>,
}

struct Kept {
    next: u64,
    events: VecDeque<Numbered>,
}

impl Journal {
    pub(crate) fn new() -> Journal {
        Journal {
            kept: Mutex::new(Kept {
                next: 1,
                events: VecDeque::with_capacity(EVENTS_KEPT),
            }),
            out: broadcast::channel(4096).0,
        }
    }

    /// Numbers `event`, keeps it and tells every listener; returns its number.
    pub(crate) fn emit(&self, event: Event) -> u64 {
        debug!(?event, "event");
        // Numbered and sent under one lock, so that listeners get them in order.
        let mut kept = lock(&self.kept);
        let numbered = Numbered {
            id: kept.next,
            event,
        };
        kept.next += 1;
        if kept.events.len() == EVENTS_KEPT {
            kept.events.pop_front();
        }
        kept.events.push_back(numbered.clone());
        let id = numbered.id;
        let _ = self.out.send(numbered);
        id
    }

    /// Events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.out.subscribe()
    }

    /// The kept events after number `after` (0 for all).
    pub(crate) fn since(&self, after: u64) -> Since {
        let kept = lock(&self.kept);
        let first = kept.events.front().map_or(kept.next, |e| e.id);
        Since {
            events: kept
                .events
                .iter()
                .filter(|e| e.id > after)
                .cloned()
                .collect(),
            missed: first.saturating_sub(after.saturating_add(1)),
        }
    }

    /// The number of the latest event (0 before the first).
    pub(crate) fn latest(&self) -> u64 {
        lock(&self.kept).next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(n: u64) -> Event {
        Event::ConflictClosed { id: n.to_string() }
    }

    #[test]
    fn events_are_numbered_densely_and_a_listener_resumes_after_the_last_it_saw() {
        let j = Journal::new();
        let mut rx = j.subscribe();
        for n in 1..=5 {
            assert_eq!(j.emit(closed(n)), n);
        }
        assert_eq!(rx.try_recv().map(|e| e.id).ok(), Some(1));
        let since = j.since(3);
        assert_eq!(since.missed, 0);
        assert_eq!(
            since.events.iter().map(|e| e.id).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(j.since(5).events, []);
        assert_eq!(j.since(0).events.len(), 5);
        assert_eq!(j.latest(), 5);
    }

    #[test]
    fn a_listener_that_was_away_too_long_learns_how_many_it_missed() {
        let j = Journal::new();
        let total = EVENTS_KEPT as u64 + 10;
        for n in 1..=total {
            j.emit(closed(n));
        }
        let since = j.since(4);
        assert_eq!(since.missed, 6, "events 5 to 10 are gone");
        assert_eq!(since.events.first().map(|e| e.id), Some(11));
        assert_eq!(since.events.len(), EVENTS_KEPT);
        assert_eq!(j.since(10).missed, 0);
    }

    #[test]
    fn a_numbered_event_is_its_event_with_an_id_in_json() {
        let n = Numbered {
            id: 7,
            event: closed(3),
        };
        let json = serde_json::to_value(&n).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"event_id": 7, "event": "conflict_closed", "id": "3"})
        );
        assert_eq!(serde_json::from_value::<Numbered>(json).expect("back"), n);
    }
}

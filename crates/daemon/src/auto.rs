//! Whether a daemon syncs by itself: a setting people change while it runs (the
//! page's switch), which every member's supervisor follows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether the daemon syncs by itself, and how often it does with nothing new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoSync {
    /// Rounds run by themselves: on every connection, every change, every interval.
    /// Off, this device dials no one and starts no round (members may still sync
    /// with it, and a sync asked for runs).
    pub on: bool,
    /// How often to sync with each member even when nothing changed.
    #[serde(with = "crate::config::text")]
    pub interval: Duration,
}

//! What a running daemon reports about itself, its peers and its groups: the
//! answer to `shoal status` and `shoal peers` while it runs.

use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, GroupId, Role};
use shoal_net::PathKind;

/// A running daemon, as `shoal status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// This device.
    pub device: DeviceId,
    /// Its name for people: the configuration's `name`, or the machine's.
    #[serde(default)]
    pub name: Option<String>,
    /// Where others reach it (an endpoint ticket).
    pub addr: String,
    /// The daemon's process.
    pub pid: u32,
    /// How long it has run.
    pub uptime_ms: u64,
    /// Every member it knows of.
    pub peers: Vec<PeerStatus>,
    /// Every group this device is in.
    pub groups: Vec<GroupStatus>,
}

/// One member, as this daemon sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its device id.
    pub device: DeviceId,
    /// Whether a connection is up now.
    pub connected: bool,
    /// Direct or through a relay, while connected.
    pub path: Option<PathKind>,
    /// Round-trip time on the connection's path, while connected.
    pub rtt_ms: Option<f64>,
    /// When a sync with it last succeeded (ms since the epoch).
    pub last_sync_ms: Option<u64>,
    /// Commits this device holds that the member lacks, as of the last sync.
    pub pending_out: u64,
    /// Commits the member holds that this device lacks (or refused), as of the last
    /// sync.
    pub pending_in: u64,
    /// Commits sent to it since the daemon started.
    pub commits_sent: u64,
    /// Commits received from it since the daemon started.
    pub commits_received: u64,
    /// Row changes from it applied here since the daemon started.
    pub changes_applied: u64,
    /// Bytes of session data sent to it.
    pub bytes_sent: u64,
    /// Bytes of session data received from it.
    pub bytes_received: u64,
    /// Rounds of sync completed with it.
    pub rounds: u64,
    /// Where it is reached, if known.
    pub addr: Option<String>,
    /// When the latest attempts to connect to it began (ms since the epoch), oldest
    /// first; at most the last 32.
    pub attempts: Vec<u64>,
    /// When the next attempt is due (ms since the epoch), while disconnected.
    pub next_attempt_ms: Option<u64>,
    /// The last error with it.
    pub last_error: Option<String>,
}

impl PeerStatus {
    /// A member nothing has happened with yet.
    pub fn new(device: DeviceId) -> PeerStatus {
        PeerStatus {
            device,
            connected: false,
            path: None,
            rtt_ms: None,
            last_sync_ms: None,
            pending_out: 0,
            pending_in: 0,
            commits_sent: 0,
            commits_received: 0,
            changes_applied: 0,
            bytes_sent: 0,
            bytes_received: 0,
            rounds: 0,
            addr: None,
            attempts: Vec::new(),
            next_attempt_ms: None,
            last_error: None,
        }
    }
}

/// One group, as `shoal status` shows it while a daemon runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Its members and their roles.
    pub members: Vec<(DeviceId, Role)>,
    /// Conflicts in its tables waiting for a person.
    pub pending_conflicts: u64,
    /// Remote changes to its tables held until they can be applied.
    pub held_changes: u64,
}

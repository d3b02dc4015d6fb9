//! What every part of a running daemon shares: its node, its database, its members,
//! what it last saw of its own file, and the channel its events go out on.
//!
//! Locks are taken one at a time, except `peers` then `strangers`, never the other
//! way round; a member's own `state` is never held while taking one of these.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_core::{DeviceId, Group, GroupId, VersionVector};
use shoal_net::{Node, PeerLink, PeerSpec, SharedStore, with_store};
use shoal_store::{OpenConflict, system_now_ms};
use tokio::sync::{Notify, broadcast, watch};

use crate::auto::AutoSync;
use crate::config::Config;
use crate::error::DaemonError;
use crate::event::Event;
use crate::journal::{Journal, Numbered};
use crate::mutex::lock;
use crate::peer::Peer;

/// How many attempt times a peer's status keeps.
pub(crate) const ATTEMPTS_KEPT: usize = 32;

/// A running daemon's shared state, behind one `Arc` that every task holds.
pub(crate) struct Inner {
    pub(crate) node: Arc<Node>,
    pub(crate) store: SharedStore,
    pub(crate) config: Config,
    pub(crate) me: DeviceId,
    pub(crate) journal: Arc<Journal>,
    /// Whether rounds run by themselves; every supervisor follows it.
    pub(crate) auto: watch::Sender<AutoSync>,
    /// Where a change to [`Inner::auto`] is kept for the next start.
    pub(crate) auto_file: std::path::PathBuf,
    pub(crate) peers: Mutex<HashMap<DeviceId, Arc<Peer>>>,
    /// Connections from devices not known as members when they came: a device that
    /// was just added may dial before this side has applied its membership. The
    /// connection is adopted once it is. Locked after `peers`, never before.
    pub(crate) strangers: Mutex<HashMap<DeviceId, PeerLink>>,
    pub(crate) local: Mutex<LocalState>,
    pub(crate) changed: Arc<Notify>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) statics: Vec<PeerSpec>,
    pub(crate) started: Instant,
    /// Every log line of this daemon names its device.
    pub(crate) span: tracing::Span,
}

/// What the daemon last saw of its own database.
#[derive(Default)]
pub(crate) struct LocalState {
    pub(crate) have: HashMap<GroupId, VersionVector>,
    pub(crate) conflicts: BTreeMap<String, OpenConflict>,
    pub(crate) groups: Vec<Group>,
    /// What the last seal left unsealed, by table and reason: each is reported once.
    pub(crate) not_sealed: BTreeSet<(String, String)>,
    /// Whether this device's commits were last seen stamped too far ahead.
    pub(crate) clock_ahead: bool,
}

impl Inner {
    /// Tells every listener.
    pub(crate) fn emit(&self, event: Event) {
        self.journal.emit(event);
    }

    /// Resolves once the daemon stops.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The member `device`, if it is one.
    pub(crate) fn peer(&self, device: &DeviceId) -> Option<Arc<Peer>> {
        lock(&self.peers).get(device).cloned()
    }

    /// Events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.journal.subscribe()
    }

    /// A group by name or id prefix.
    pub(crate) async fn group_id(&self, which: String) -> Result<GroupId, DaemonError> {
        Ok(with_store(&self.store, move |s| Ok(s.group(&which)?.id)).await?)
    }

    /// Where others reach this device, as `shoal` commands print it.
    pub(crate) async fn addr(&self) -> String {
        PeerSpec::remembered(&self.node.addr().await)
    }
}

/// A moment `after` from now, in ms since the epoch.
pub(crate) fn wall_ms(after: Duration) -> u64 {
    system_now_ms() + after.as_millis() as u64
}

//! One member this daemon keeps in touch with: the connection its rounds run on,
//! what it is known to hold, and its status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use shoal_core::{DeviceId, GroupId, VersionVector};
use shoal_net::{GroupSync, PeerLink};
use shoal_store::system_now_ms;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::mutex::lock;
use crate::schedule::{self, Lack};
use crate::status::PeerStatus;

/// One member and the task that keeps in touch with it.
pub(crate) struct Peer {
    pub(crate) device: DeviceId,
    /// The connection rounds run on, while one is up; the newest wins.
    pub(crate) conn: watch::Sender<Option<PeerLink>>,
    /// Something here is new, or a new way to reach it is known: act now.
    pub(crate) dirty: Notify,
    pub(crate) state: Mutex<PeerState>,
    pub(crate) task: Mutex<Option<JoinHandle<()>>>,
    /// A round to pass on others' commits is already scheduled.
    pub(crate) forwarding: AtomicBool,
}

/// What is known of a member.
pub(crate) struct PeerState {
    pub(crate) status: PeerStatus,
    /// What it holds of each group, as of the last session.
    pub(crate) known: HashMap<GroupId, VersionVector>,
    /// The groups both are members of.
    pub(crate) groups: Vec<GroupId>,
    /// Found on the local network.
    pub(crate) discovered: bool,
}

impl PeerState {
    /// A member that shares `groups` with this device, not yet heard from.
    pub(crate) fn new(device: DeviceId, groups: Vec<GroupId>) -> PeerState {
        PeerState {
            status: PeerStatus::new(device),
            known: HashMap::new(),
            groups,
            discovered: false,
        }
    }
}

impl Peer {
    /// The connection its rounds run on, while it is up.
    pub(crate) fn connection(&self) -> Option<PeerLink> {
        self.conn.borrow().clone().filter(PeerLink::is_open)
    }

    /// What the member lacks of `have` (see [`schedule::lack`]).
    pub(crate) fn lacks(&self, have: &HashMap<GroupId, VersionVector>, me: &DeviceId) -> Lack {
        let st = lock(&self.state);
        schedule::lack(&st.groups, &st.known, have, me)
    }

    /// Whether `have` holds something the member lacks (see [`schedule::behind`]).
    pub(crate) fn behind(&self, have: &HashMap<GroupId, VersionVector>) -> bool {
        let st = lock(&self.state);
        schedule::behind(&st.groups, &st.known, have)
    }

    pub(crate) fn record(&self, sync: &GroupSync) {
        let mut st = lock(&self.state);
        st.known.insert(sync.group, sync.peer_has.clone());
        let s = &mut st.status;
        s.commits_sent += sync.pushed;
        s.commits_received += sync.pulled;
        s.changes_applied += sync.changes;
        s.bytes_sent += sync.bytes_out;
        s.bytes_received += sync.bytes_in;
        s.last_sync_ms = Some(system_now_ms());
    }
}

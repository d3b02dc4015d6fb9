//! The members this daemon keeps in touch with: a supervisor each, started when a
//! device becomes a member and stopped when it is one no more, and the connection
//! each one's rounds run on, dialled or accepted, whichever came last.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use shoal_core::{DeviceId, Group, GroupId};
use shoal_net::{CloseReason, GroupSync, PeerLink, Welcome};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, info};

use crate::event::Event;
use crate::inner::Inner;
use crate::mutex::lock;
use crate::peer::{Peer, PeerState};

impl Inner {
    /// Starts a supervisor for every new member and stops the one of every device
    /// that is no longer a member of any group shared with this device.
    pub(crate) fn members(self: Arc<Self>, groups: &[Group]) {
        let mut wanted: HashMap<DeviceId, Vec<GroupId>> = HashMap::new();
        for g in groups.iter().filter(|g| g.role(&self.me).is_some()) {
            for m in g.members() {
                if m.role.is_some() && m.device != self.me {
                    wanted.entry(m.device).or_default().push(g.id);
                }
            }
        }
        let mut gone = Vec::new();
        let mut known_now = Vec::new();
        {
            let mut peers = lock(&self.peers);
            peers.retain(|d, p| {
                let keep = wanted.contains_key(d);
                if !keep {
                    gone.push(p.clone());
                }
                keep
            });
            for (device, shared) in wanted {
                if let Some(p) = peers.get(&device) {
                    lock(&p.state).groups = shared;
                    continue;
                }
                let peer = Arc::new(Peer {
                    device,
                    conn: watch::channel(None).0,
                    dirty: Notify::new(),
                    forwarding: AtomicBool::new(false),
                    state: Mutex::new(PeerState::new(device, shared)),
                    task: Mutex::new(None),
                });
                debug!(peer = %device.short(), "a member to keep in touch with");
                let span =
                    tracing::debug_span!(parent: &self.span, "member", peer = %device.short());
                let task = tokio::spawn(self.clone().supervise(peer.clone()).instrument(span));
                *lock(&peer.task) = Some(task);
                if let Some(conn) = lock(&self.strangers).remove(&device)
                    && conn.is_open()
                {
                    known_now.push((peer.clone(), conn));
                }
                peers.insert(device, peer);
            }
        }
        for (peer, conn) in known_now {
            let inner = self.clone();
            tokio::spawn(async move { inner.welcome(&peer, conn).await });
        }
        for p in gone {
            info!(peer = %p.device.short(), "no longer a member: disconnecting");
            if let Some(t) = lock(&p.task).take() {
                t.abort();
            }
            if let Some(c) = p.connection() {
                c.close(CloseReason::NotAMember);
            }
            self.emit(Event::PeerLost {
                peer: p.device,
                reason: "no longer a member".into(),
            });
        }
    }

    /// A member's incoming connection: where it came from is remembered, and it
    /// becomes the one its rounds run on.
    async fn welcome(self: &Arc<Self>, peer: &Arc<Peer>, conn: PeerLink) {
        if let Some(addr) = conn.observed_addr() {
            let _ = self.node.remember(peer.device, &addr).await;
        }
        self.adopt(peer, conn);
    }

    /// Makes `conn` the connection `peer`'s rounds run on, and trades addresses of
    /// other members over it.
    pub(crate) fn adopt(self: &Arc<Self>, peer: &Peer, conn: PeerLink) {
        let was = peer.connection().is_some();
        let path = conn.path().map(|p| p.kind);
        {
            let mut st = lock(&peer.state);
            st.status.connected = true;
            st.status.next_attempt_ms = None;
        }
        peer.conn.send_replace(Some(conn.clone()));
        tokio::spawn(self.clone().hear(peer.device, conn));
        // Everyone connected hears where the newcomer is, and the newcomer hears
        // where everyone is.
        let connected: Vec<Arc<Peer>> = lock(&self.peers)
            .values()
            .filter(|p| p.connection().is_some())
            .cloned()
            .collect();
        for p in connected {
            tokio::spawn(self.clone().tell(p));
        }
        if !was {
            info!(peer = %peer.device.short(), path = %path.map_or("?".to_owned(), |p| p.to_string()), "connected");
            self.emit(Event::PeerConnected {
                peer: peer.device,
                path,
            });
        }
    }

    /// `conn` to `peer` is gone (unless a newer one already replaced it).
    pub(crate) fn lost(&self, peer: &Peer, conn: &PeerLink, reason: String) {
        let current = peer.conn.send_if_modified(|c| {
            if c.as_ref().is_some_and(|c| c.is(conn)) {
                *c = None;
                true
            } else {
                false
            }
        });
        if current && peer.connection().is_none() {
            {
                let mut st = lock(&peer.state);
                st.status.connected = false;
                st.status.path = None;
                st.status.rtt_ms = None;
            }
            info!(peer = %peer.device.short(), %reason, "connection lost");
            self.emit(Event::PeerLost {
                peer: peer.device,
                reason,
            });
        }
    }

    /// Answers the sessions a peer opens on `conn`, until it closes.
    pub(crate) async fn serve(self: &Arc<Self>, conn: PeerLink) {
        let inner = self.clone();
        let result = self
            .node
            .serve_connection(conn, move |device, sync| inner.finished(device, sync))
            .await;
        if let Err(e) = result {
            debug!("serving a connection ended: {e}");
        }
    }

    /// A session with `device` finished, on either side: its record, its events.
    pub(crate) fn finished(&self, device: DeviceId, sync: &GroupSync) {
        if let Some(p) = self.peer(&device) {
            p.record(sync);
        }
        if sync.applied > 0 {
            self.emit(Event::ChangesApplied {
                peer: device,
                group: sync.group,
                name: sync.name.clone(),
                commits: sync.applied,
                changes: sync.changes,
            });
        }
        if sync.future > 0 {
            self.emit(Event::HeldForClock {
                peer: device,
                group: sync.group,
                name: sync.name.clone(),
                commits: sync.future,
            });
        }
        for why in &sync.refused {
            self.emit(Event::Refused {
                peer: device,
                reason: why.clone(),
            });
        }
    }
}

/// The daemon's side of the connections members open: iroh's router accepts them and
/// answers their sessions, and tells the daemon who came and went.
pub(crate) struct Door(pub(crate) Arc<Inner>);

impl Welcome for Door {
    async fn arrived(&self, link: &PeerLink) {
        let inner = &self.0;
        let device = link.device();
        let peer = {
            let peers = lock(&inner.peers);
            let peer = peers.get(&device).cloned();
            if peer.is_none() {
                lock(&inner.strangers).insert(device, link.clone());
            }
            peer
        };
        if let Some(peer) = peer {
            inner.welcome(&peer, link.clone()).await;
        }
    }

    fn finished(&self, peer: DeviceId, sync: &GroupSync) {
        self.0.finished(peer, sync);
    }

    fn left(&self, link: &PeerLink) {
        let mut strangers = lock(&self.0.strangers);
        if strangers.get(&link.device()).is_some_and(|s| s.is(link)) {
            strangers.remove(&link.device());
        }
    }
}

//! The daemon's report on itself: its members and how each is reached, its groups,
//! what is pending and held (`shoal status`, the control socket).

use std::collections::HashMap;

use shoal_core::DeviceId;
use shoal_net::with_store;
use shoal_store::{ConflictStatus, KnownPeer, OpenConflict};

use crate::error::DaemonError;
use crate::inner::Inner;
use crate::mutex::lock;
use crate::status::{DaemonStatus, GroupStatus, PeerStatus};

impl Inner {
    pub(crate) async fn status(&self) -> Result<DaemonStatus, DaemonError> {
        let addr = self.addr().await;
        let (status, groups, remembered) =
            with_store(&self.store, |s| Ok((s.status()?, s.groups()?, s.peers()?))).await?;
        let addrs: HashMap<DeviceId, KnownPeer> =
            remembered.into_iter().map(|p| (p.device, p)).collect();
        let have = lock(&self.local).have.clone();
        let conflicts: Vec<OpenConflict> = lock(&self.local).conflicts.values().cloned().collect();
        let mut peers: Vec<PeerStatus> = lock(&self.peers)
            .values()
            .map(|p| {
                let conn = p.connection();
                let st = lock(&p.state);
                let mut s = st.status.clone();
                s.connected = conn.is_some();
                if let Some(c) = &conn {
                    let path = c.path();
                    s.path = path.map(|p| p.kind);
                    s.rtt_ms = path.map(|p| p.rtt_ms);
                }
                s.pending_out = st
                    .groups
                    .iter()
                    .filter_map(|g| Some(have.get(g)?.ahead_of(st.known.get(g)?)))
                    .sum();
                s.pending_in = st
                    .groups
                    .iter()
                    .filter_map(|g| Some(st.known.get(g)?.ahead_of(have.get(g)?)))
                    .sum();
                if let Some(known) = addrs.get(&p.device) {
                    s.addr = Some(known.addr.clone());
                    s.last_sync_ms = s.last_sync_ms.or(Some(known.seen_ms));
                }
                s
            })
            .collect();
        peers.sort_by_key(|p| p.device);
        let groups = groups
            .into_iter()
            .filter(|g| g.role(&self.me).is_some())
            .map(|g| {
                let tables: Vec<String> = status
                    .groups
                    .iter()
                    .find(|s| s.id == g.id.to_string())
                    .map(|s| s.tables.clone())
                    .unwrap_or_default();
                let mine = |t: &str| tables.iter().any(|x| x.eq_ignore_ascii_case(t));
                GroupStatus {
                    id: g.id,
                    name: g.name.clone(),
                    members: g
                        .members()
                        .into_iter()
                        .filter_map(|m| Some((m.device, m.role?)))
                        .collect(),
                    pending_conflicts: conflicts
                        .iter()
                        .filter(|c| c.status == ConflictStatus::Pending && mine(&c.table))
                        .count() as u64,
                    held_changes: status
                        .held
                        .iter()
                        .filter(|h| mine(&h.table))
                        .map(|h| h.count)
                        .sum(),
                }
            })
            .collect();
        Ok(DaemonStatus {
            device: self.me,
            name: self.config.device_name(),
            addr,
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            peers,
            groups,
        })
    }
}

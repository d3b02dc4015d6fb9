//! Telling members where the other members are: whenever one connects, everyone
//! connected hears where it is and it hears where they are, so that devices that
//! only ever met a third still reach each other.
//!
//! On every connection it keeps, a daemon sends, on a unidirectional stream beside the
//! sessions, the remembered addresses of the members of the groups both sides are in (at
//! most 256, 64 KiB). The receiver keeps only addresses of members of a group it shares
//! with the teller, under the member's own key, and never over that of a member
//! connected now; a wrong address costs a failed dial, since the transport checks the key.

use std::collections::HashSet;
use std::sync::Arc;

use shoal_core::DeviceId;
use shoal_net::{PeerLink, PeerSpec, with_store};
use tracing::debug;

use crate::addresses::{AddressBook, MAX_BYTES, MAX_ENTRIES};
use crate::inner::Inner;
use crate::mutex::lock;
use crate::peer::Peer;

impl Inner {
    /// Tells `peer` where the other members of the groups both are in can be
    /// reached.
    pub(crate) async fn tell(self: Arc<Self>, peer: Arc<Peer>) {
        let Some(conn) = peer.connection() else {
            return;
        };
        let shared = lock(&peer.state).groups.clone();
        let members: HashSet<DeviceId> = lock(&self.local)
            .groups
            .iter()
            .filter(|g| shared.contains(&g.id))
            .flat_map(|g| g.members())
            .filter(|m| m.role.is_some() && m.device != peer.device && m.device != self.me)
            .map(|m| m.device)
            .collect();
        if members.is_empty() {
            return;
        }
        let Ok(known) = with_store(&self.store, |s| s.peers()).await else {
            return;
        };
        let entries: Vec<(DeviceId, String)> = known
            .into_iter()
            .filter(|p| members.contains(&p.device))
            .map(|p| (p.device, p.addr))
            .take(MAX_ENTRIES)
            .collect();
        if entries.is_empty() {
            return;
        }
        let bytes = AddressBook { entries }.encode();
        if !conn.send_note(&bytes).await {
            debug!(peer = %peer.device.short(), "could not send the address list");
        }
    }

    /// Reads what `from` says about where other members are, and keeps what checks
    /// out: addresses of members of a group both are in, under the member's own key,
    /// for members not connected now.
    pub(crate) async fn hear(self: Arc<Self>, from: DeviceId, conn: PeerLink) {
        while let Some(note) = conn.next_note(MAX_BYTES).await {
            let Some(bytes) = note else {
                continue;
            };
            let Some(book) = AddressBook::decode(&bytes) else {
                debug!(peer = %from.short(), "an address list that cannot be read");
                continue;
            };
            let Some(teller) = self.peer(&from) else {
                return;
            };
            let theirs = lock(&teller.state).groups.clone();
            let mut learned = Vec::new();
            for (device, text) in book.entries {
                if device == self.me || device == from {
                    continue;
                }
                let Some(p) = self.peer(&device) else {
                    continue;
                };
                let shared = lock(&p.state).groups.iter().any(|g| theirs.contains(g));
                if !shared || p.connection().is_some() {
                    continue;
                }
                match text.parse::<PeerSpec>() {
                    Ok(PeerSpec::Addr(addr)) if *addr.id.as_bytes() == device.0 => {
                        learned.push((p, addr))
                    }
                    _ => {}
                }
            }
            for (p, addr) in learned {
                debug!(peer = %p.device.short(), from = %from.short(), "learned an address");
                if self.node.remember(p.device, &addr).await.is_ok() {
                    p.dirty.notify_one();
                }
            }
        }
    }
}

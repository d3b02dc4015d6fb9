//! A connection to one peer, as the rest of Shoal holds it: who is at the other end,
//! whether it is still up, which way it goes, and short notes sent beside the sync
//! sessions. The QUIC connection itself stays in this crate.

use iroh::EndpointAddr;
use iroh::endpoint::Connection;
use serde::{Deserialize, Serialize};
use shoal_core::DeviceId;

/// Why this side closed a connection, as the peer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// What this side came for is done.
    Done,
    /// This device is stopping.
    ShuttingDown,
    /// The peer is no longer a member of any group shared with this device.
    NotAMember,
    /// A round of sync with the peer failed; it is tried again later.
    SyncFailed,
}

impl CloseReason {
    /// The application close code the peer sees.
    fn code(self) -> u32 {
        match self {
            CloseReason::Done | CloseReason::ShuttingDown => 0,
            CloseReason::NotAMember => 1,
            CloseReason::SyncFailed => 2,
        }
    }

    fn text(self) -> &'static [u8] {
        match self {
            CloseReason::Done => b"done",
            CloseReason::ShuttingDown => b"shutting down",
            CloseReason::NotAMember => b"not a member",
            CloseReason::SyncFailed => b"sync failed",
        }
    }
}

/// Which way a connection's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Straight between the two devices.
    Direct,
    /// Through a relay server.
    Relay,
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        })
    }
}

/// The path a connection uses now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkPath {
    /// Direct or through a relay.
    pub kind: PathKind,
    /// Round-trip time on it, in milliseconds.
    pub rtt_ms: f64,
}

/// An open (or lately open) connection to one peer.
#[derive(Clone, Debug)]
pub struct PeerLink {
    conn: Connection,
}

impl PeerLink {
    pub(crate) fn new(conn: Connection) -> PeerLink {
        PeerLink { conn }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The device at the other end, as its key proved.
    pub fn device(&self) -> DeviceId {
        DeviceId(*self.conn.remote_id().as_bytes())
    }

    /// Whether it is still up.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Whether `other` is this very connection (and not another to the same peer).
    pub fn is(&self, other: &PeerLink) -> bool {
        self.conn.stable_id() == other.conn.stable_id()
    }

    /// The path in use, when one is chosen.
    pub fn path(&self) -> Option<LinkPath> {
        let paths = self.conn.paths();
        let p = paths.iter().find(|p| p.is_selected())?;
        Some(LinkPath {
            kind: if p.is_relay() {
                PathKind::Relay
            } else {
                PathKind::Direct
            },
            rtt_ms: p.rtt().as_secs_f64() * 1000.0,
        })
    }

    /// The address the peer's packets came from, when any came directly: where it
    /// can be reached again.
    pub fn observed_addr(&self) -> Option<EndpointAddr> {
        let paths = self.conn.paths();
        let ip = paths.iter().find_map(|p| match p.remote_addr() {
            iroh::TransportAddr::Ip(sock) => Some(*sock),
            _ => None,
        })?;
        Some(EndpointAddr::new(self.conn.remote_id()).with_ip_addr(ip))
    }

    /// Closes it, telling the peer why.
    pub fn close(&self, why: CloseReason) {
        self.conn.close(why.code().into(), why.text());
    }

    /// Waits until it closes, from either side; says why.
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }

    /// Sends a short note beside the sessions, on a stream of its own.
    pub async fn send_note(&self, bytes: &[u8]) -> bool {
        match self.conn.open_uni().await {
            Ok(mut send) => send.write_all(bytes).await.is_ok() && send.finish().is_ok(),
            Err(_) => false,
        }
    }

    /// The next note the peer sends, up to `max` bytes; `Some(None)` for one that
    /// cannot be read whole, `None` once the connection is gone.
    pub async fn next_note(&self, max: usize) -> Option<Option<Vec<u8>>> {
        let mut recv = self.conn.accept_uni().await.ok()?;
        Some(recv.read_to_end(max).await.ok())
    }
}

//! Keeping in touch with one member: dial it while no connection is up (with
//! backoff and jitter), and run a round of sync whenever one is owed.
//!
//! A connection stays up and sessions are rounds on it: QUIC keep-alives are the
//! heartbeat, and the ordinary one-shot session runs on a new stream whenever a round is
//! owed ([`Rounds`] decides when). A round is owed on every new
//! connection, every `sync_interval`, and when this device holds something the member is
//! not known to hold (what it said it held at the last round, plus what was sent), so a
//! change does not echo back to where it came from. Of two devices that start together
//! the one with the lower id dials first; when both dial anyway, the newer connection
//! carries the rounds.

use std::sync::Arc;
use std::time::Instant;

use iroh::EndpointAddr;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_core::DeviceId;
use shoal_net::{CloseReason, PeerLink, PeerSpec, PeerSync, Progress, with_store};
use shoal_store::system_now_ms;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::auto::AutoSync;
use crate::backoff::Backoff;
use crate::error::DaemonError;
use crate::event::Event;
use crate::inner::{ATTEMPTS_KEPT, Inner, wall_ms};
use crate::mutex::lock;
use crate::peer::Peer;
use crate::rounds::{Happened, Rounds, Step};
use crate::schedule;

impl Inner {
    /// Where `device` may be reached: its remembered address, the static peers, and
    /// (found on the local network) its id alone.
    pub(crate) async fn candidates(&self, device: DeviceId) -> Vec<EndpointAddr> {
        let Ok(id) = iroh::PublicKey::from_bytes(&device.0) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(Some(text)) = with_store(&self.store, move |s| s.peer_addr(&device)).await
            && let Ok(PeerSpec::Addr(a)) = text.parse::<PeerSpec>()
        {
            out.push(a);
        }
        for s in &self.statics {
            match s {
                PeerSpec::Addr(a) if a.id == id && !out.contains(a) => out.push(a.clone()),
                PeerSpec::Socket(sock) => out.push(EndpointAddr::new(id).with_ip_addr(*sock)),
                _ => {}
            }
        }
        if self
            .peer(&device)
            .is_some_and(|p| lock(&p.state).discovered)
        {
            out.push(EndpointAddr::new(id));
        }
        out
    }

    /// Keeps in touch with one member until it stops being one: the timing is
    /// [`Rounds`]'s, this only carries it out.
    pub(crate) async fn supervise(self: Arc<Self>, peer: Arc<Peer>) {
        let mut rounds = Rounds::new(
            Instant::now(),
            schedule::waits_to_dial(&self.me, &peer.device),
            Backoff::new(self.config.backoff_min, self.config.backoff_max),
            self.config.sync_interval,
            StdRng::from_os_rng(),
        );
        let mut conns = peer.conn.subscribe();
        let mut auto = self.auto.subscribe();
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            conns.borrow_and_update();
            if auto.has_changed().unwrap_or(false) || auto.borrow().on != rounds.is_on() {
                let AutoSync { on, interval } = *auto.borrow_and_update();
                rounds.set(Instant::now(), on, interval);
            }
            let conn = peer.connection();
            let happened = match (rounds.next(Instant::now(), conn.is_some()), conn) {
                (Step::Dial { at }, _) => {
                    let candidates = self.candidates(peer.device).await;
                    let due = (!candidates.is_empty()).then_some(at);
                    lock(&peer.state).status.next_attempt_ms =
                        due.map(|d| wall_ms(d.saturating_duration_since(Instant::now())));
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()), if due.is_some() => {
                            self.connect(&peer, &candidates, &mut conns).await
                        }
                        r = conns.changed() => match r {
                            Ok(()) => peer.connection().map(|_| Happened::Connected),
                            Err(_) => return,
                        },
                        () = peer.dirty.notified() => None,
                        () = &mut stopped => return,
                    }
                }
                (Step::Round, Some(conn)) => Some(match self.round(&peer, &conn).await {
                    Ok(_) => Happened::RoundRan,
                    Err(e) => {
                        self.failed(&peer, &conn, e);
                        Happened::RoundFailed
                    }
                }),
                (Step::Wait { until }, Some(conn)) => tokio::select! {
                    () = peer.dirty.notified() => Some(Happened::Woken {
                        behind: peer.behind(&lock(&self.local).have),
                    }),
                    () = tokio::time::sleep_until(until.into()) => None,
                    closed = conn.closed() => {
                        self.lost(&peer, &conn, closed.to_string());
                        Some(Happened::Closed)
                    }
                    // Another connection replaced this one, or it was dropped.
                    r = conns.changed() => match (r, peer.connection()) {
                        (Err(_), _) => return,
                        (Ok(()), Some(_)) => Some(Happened::Connected),
                        (Ok(()), None) => Some(Happened::Closed),
                    },
                    () = &mut stopped => return,
                },
                (Step::Paused, conn) => tokio::select! {
                    r = auto.changed() => if r.is_err() { return } else { None },
                    r = conns.changed() => match r {
                        Ok(()) => peer.connection().map(|_| Happened::Connected),
                        Err(_) => return,
                    },
                    closed = async { match &conn { Some(c) => c.closed().await, None => std::future::pending().await } } => {
                        if let Some(c) = &conn {
                            self.lost(&peer, c, closed.to_string());
                        }
                        Some(Happened::Closed)
                    }
                    () = &mut stopped => return,
                },
                (Step::Round | Step::Wait { .. }, None) => None,
            };
            if let Some(what) = happened {
                rounds.on(Instant::now(), what);
            }
        }
    }

    /// One dial of every way to reach `peer`, ended early by a connection from the
    /// member itself; `None` once the member is gone.
    async fn connect(
        self: &Arc<Self>,
        peer: &Peer,
        candidates: &[EndpointAddr],
        conns: &mut watch::Receiver<Option<PeerLink>>,
    ) -> Option<Happened> {
        let started = Instant::now();
        debug!(peer = %peer.device.short(), ways = candidates.len(), "connecting");
        self.note_attempt(peer);
        let dialed = tokio::select! {
            r = self.dial(candidates) => r,
            r = conns.changed() => {
                return r.ok().and(peer.connection()).map(|_| Happened::Connected);
            }
        };
        Some(match dialed {
            Ok(conn) => {
                self.adopt(peer, conn.clone());
                let inner = self.clone();
                tokio::spawn(async move { inner.serve(conn).await });
                Happened::Connected
            }
            Err(e) => {
                debug!(peer = %peer.device.short(), "could not connect: {e}");
                lock(&peer.state).status.last_error = Some(e);
                Happened::DialFailed { started }
            }
        })
    }

    /// A round with `peer` failed: say so, and drop its connection.
    fn failed(&self, peer: &Peer, conn: &PeerLink, e: DaemonError) {
        warn!(peer = %peer.device.short(), "sync failed: {e}");
        lock(&peer.state).status.last_error = Some(e.to_string());
        if let DaemonError::Net(shoal_net::NetError::Protocol(p)) = &e {
            self.emit(Event::Refused {
                peer: peer.device,
                reason: p.to_string(),
            });
        }
        conn.close(CloseReason::SyncFailed);
        self.lost(peer, conn, e.to_string());
    }

    fn note_attempt(&self, peer: &Peer) {
        let mut st = lock(&peer.state);
        let a = &mut st.status.attempts;
        a.push(system_now_ms());
        if a.len() > ATTEMPTS_KEPT {
            a.remove(0);
        }
    }

    /// Tries each way to reach a member in turn.
    pub(crate) async fn dial(&self, candidates: &[EndpointAddr]) -> Result<PeerLink, String> {
        let mut last = String::from("no address known");
        for addr in candidates {
            match tokio::time::timeout(self.config.connect_timeout, self.node.dial(addr.clone()))
                .await
            {
                Ok(Ok(c)) => {
                    if !addr.is_empty() {
                        let _ = self
                            .node
                            .remember(DeviceId(*addr.id.as_bytes()), addr)
                            .await;
                    }
                    return Ok(c);
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => {
                    last = format!(
                        "no answer within {}",
                        crate::config::format_duration(self.config.connect_timeout)
                    )
                }
            }
        }
        Err(last)
    }

    /// One round of sync with `peer` over `conn`: every group both are in.
    pub(crate) async fn round(
        &self,
        peer: &Peer,
        conn: &PeerLink,
    ) -> Result<PeerSync, DaemonError> {
        let journal = self.journal.clone();
        let progress = move |p: Progress| {
            journal.emit(Event::SyncProgress {
                peer: p.peer,
                group: p.group,
                pushed: p.pushed,
                pulled: p.pulled,
                bytes: p.bytes,
                total: p.total,
            });
        };
        let sync = self.node.sync_connection(conn, None, &progress).await?;
        let path = conn.path();
        {
            let mut st = lock(&peer.state);
            st.status.rounds += 1;
            st.status.path = path.map(|p| p.kind);
            st.status.rtt_ms = path.map(|p| p.rtt_ms);
            st.status.last_error = None;
        }
        for g in &sync.groups {
            self.finished(peer.device, g);
        }
        let (pushed, pulled, bytes) = sync.groups.iter().fold((0, 0, 0), |(a, b, c), g| {
            (a + g.pushed, b + g.pulled, c + g.bytes_in + g.bytes_out)
        });
        if pushed + pulled > 0 {
            self.emit(Event::Synced {
                peer: peer.device,
                pushed,
                pulled,
                bytes,
                elapsed_ms: sync.elapsed_ms,
            });
        }
        Ok(sync)
    }
}

//! Keeping in touch with one member: dial it while no connection is up (with
//! backoff and jitter), and run a round of sync whenever one is owed.

use std::sync::Arc;
use std::time::Instant;

use iroh::EndpointAddr;
use shoal_core::DeviceId;
use shoal_net::{CloseReason, PeerLink, PeerSpec, PeerSync, Progress, with_store};
use shoal_store::system_now_ms;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::error::DaemonError;
use crate::event::Event;
use crate::inner::{ATTEMPTS_KEPT, Inner, wall_ms};
use crate::mutex::lock;
use crate::peer::Peer;
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

    /// Keeps in touch with one member until it stops being one.
    pub(crate) async fn supervise(self: Arc<Self>, peer: Arc<Peer>) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut conns = peer.conn.subscribe();
        let mut next = Instant::now();
        if schedule::waits_to_dial(&self.me, &peer.device) {
            next += backoff.fail(&mut *lock(&self.rng));
            backoff.reset();
        }
        let stopped = self.stopped();
        tokio::pin!(stopped);
        // Whether a round is owed: on every new connection, after every interval, and
        // when this device holds something the member lacks.
        let mut owed = true;
        loop {
            conns.borrow_and_update();
            let Some(conn) = peer.connection() else {
                let candidates = self.candidates(peer.device).await;
                let due = (!candidates.is_empty()).then_some(next);
                lock(&peer.state).status.next_attempt_ms =
                    due.map(|d| wall_ms(d.saturating_duration_since(Instant::now())));
                tokio::select! {
                    () = tokio::time::sleep_until(due.unwrap_or(next).into()), if due.is_some() => {
                        let started = Instant::now();
                        debug!(peer = %peer.device.short(), ways = candidates.len(), "connecting");
                        self.note_attempt(&peer);
                        // A connection from the member itself ends the attempt.
                        let dialed = tokio::select! {
                            r = self.dial(&candidates) => r,
                            r = conns.changed() => {
                                if r.is_err() {
                                    return;
                                }
                                owed = true;
                                backoff.reset();
                                continue;
                            }
                        };
                        match dialed {
                            Ok(conn) => {
                                owed = true;
                                backoff.reset();
                                self.adopt(&peer, conn.clone());
                                let inner = self.clone();
                                tokio::spawn(async move { inner.serve(conn).await });
                            }
                            Err(e) => {
                                debug!(peer = %peer.device.short(), "could not connect: {e}");
                                lock(&peer.state).status.last_error = Some(e);
                                next = started + backoff.fail(&mut *lock(&self.rng));
                            }
                        }
                    }
                    r = conns.changed() => if r.is_err() { return } else { owed = true },
                    () = peer.dirty.notified() => {}
                    () = &mut stopped => return,
                }
                continue;
            };
            if !owed {
                // Woken for nothing new: wait again.
            } else if let Err(e) = self.round(&peer, &conn).await {
                warn!(peer = %peer.device.short(), "sync failed: {e}");
                lock(&peer.state).status.last_error = Some(e.to_string());
                if let DaemonError::Net(shoal_net::NetError::Protocol(p)) = &e {
                    self.emit(Event::Refused {
                        peer: peer.device.to_string(),
                        reason: p.to_string(),
                    });
                }
                conn.close(CloseReason::SyncFailed);
                self.lost(&peer, &conn, e.to_string());
                next = Instant::now() + backoff.fail(&mut *lock(&self.rng));
                continue;
            }
            owed = tokio::select! {
                // A wake-up may be stale: the round it asked for already ran.
                () = peer.dirty.notified() => peer.behind(&lock(&self.local).have),
                () = tokio::time::sleep(self.config.sync_interval) => true,
                closed = conn.closed() => {
                    let reason = closed.to_string();
                    self.lost(&peer, &conn, reason);
                    next = Instant::now() + backoff.fail(&mut *lock(&self.rng));
                    true
                }
                r = conns.changed() => if r.is_err() { return } else { true },
                () = &mut stopped => return,
            };
        }
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
        let events = self.events.clone();
        let progress = move |p: Progress| {
            let _ = events.send(Event::SyncProgress {
                peer: p.peer.to_string(),
                group: p.group.to_string(),
                pushed: p.pushed,
                pulled: p.pulled,
                bytes: p.bytes,
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
                peer: peer.device.to_string(),
                pushed,
                pulled,
                bytes,
                elapsed_ms: sync.elapsed_ms,
            });
        }
        Ok(sync)
    }
}

//! What other `shoal` commands and the embedding app ask of a running daemon: a round
//! now, a join, and the answers on the control socket.

use std::sync::Arc;
use std::time::Instant;

use shoal_core::{DeviceId, GroupId};
use shoal_net::{InviteTicket, JoinSummary, PeerSpec, PeerSync, with_store};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::control::{self, Request};
use crate::error::DaemonError;
use crate::inner::Inner;
use crate::journal::Numbered;
use crate::mutex::lock;
use crate::peer::Peer;

impl Inner {
    /// A round now with `peers` (or every member this device can reach, or the member
    /// `only`), in `group` or every group.
    pub(crate) async fn sync_now(
        self: &Arc<Self>,
        group: Option<GroupId>,
        peers: &[PeerSpec],
        only: Option<DeviceId>,
    ) -> Result<Vec<PeerSync>, DaemonError> {
        if only == Some(self.me) {
            return Err(DaemonError::OwnDevice(self.me));
        }
        self.clone().look(false).await?;
        if !peers.is_empty() {
            return Ok(self.node.sync(group, peers, &|_| {}).await?);
        }
        let all: Vec<Arc<Peer>> = lock(&self.peers)
            .values()
            .filter(|p| only.is_none_or(|d| p.device == d))
            .cloned()
            .collect();
        if let Some(d) = only
            && all.is_empty()
        {
            return Err(DaemonError::NoSuchMember(d));
        }
        // Every member at once: one that cannot be reached costs its connect timeout
        // once, not once for each member after it.
        let mut rounds = tokio::task::JoinSet::new();
        for p in all {
            if group.is_none_or(|g| lock(&p.state).groups.contains(&g)) {
                rounds.spawn(self.clone().round_now(p));
            }
        }
        let mut out = Vec::new();
        while let Some(done) = rounds.join_next().await {
            out.push(done.map_err(|e| DaemonError::Internal(e.to_string()))?);
        }
        out.sort_by_key(|r| r.peer);
        if out.is_empty() {
            return Err(DaemonError::Remote(
                "no member of these groups is known yet; join a group or add a peer".into(),
            ));
        }
        Ok(out)
    }

    /// A round now with the member `p`, dialing it first if no connection is up; a
    /// failure is the round's `error`.
    async fn round_now(self: Arc<Self>, p: Arc<Peer>) -> PeerSync {
        let start = Instant::now();
        let result = match p.connection() {
            Some(conn) => self.round(&p, &conn).await,
            None => match self.dial(&self.candidates(p.device).await).await {
                Ok(conn) => {
                    self.adopt(&p, conn.clone());
                    let inner = self.clone();
                    let serving = conn.clone();
                    tokio::spawn(async move { inner.serve(serving).await });
                    p.dirty.notify_one();
                    self.round(&p, &conn).await
                }
                Err(e) => Err(DaemonError::Remote(e)),
            },
        };
        result.unwrap_or_else(|e| PeerSync {
            peer: p.device,
            groups: Vec::new(),
            error: Some(e.to_string()),
            elapsed_ms: start.elapsed().as_millis() as u64,
        })
    }

    /// Goes on with a join that a crash interrupted: done already if what the session
    /// brought was kept and is now applied; otherwise the inviter is asked again, with
    /// backoff while it cannot be reached, until it lets this device in or refuses.
    pub(crate) async fn resume_join(self: Arc<Self>, group: GroupId, ticket: Vec<u8>) {
        let me = self.me;
        let joined = with_store(&self.store, move |s| {
            Ok(s.group_by_id(&group)?.and_then(|g| g.role(&me)).is_some())
        })
        .await;
        let ticket = match (
            joined,
            postcard::from_bytes::<shoal_net::InviteTicket>(&ticket),
        ) {
            (Ok(true), _) | (_, Err(_)) => {
                if let Err(e) = with_store(&self.store, move |s| s.end_join(&group)).await {
                    warn!("could not record the end of an interrupted join: {e}");
                }
                return;
            }
            (_, Ok(ticket)) => ticket,
        };
        info!(group = %group.short(), "resuming an interrupted join");
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut stop = self.stop.subscribe();
        loop {
            match self.join(&ticket).await {
                Ok(summary) => {
                    info!(group = %summary.name, "the interrupted join is done");
                    return;
                }
                Err(e) if !e.is_transient() => {
                    warn!(group = %group.short(), "the interrupted join was refused: {e}");
                    return;
                }
                Err(e) => {
                    debug!(group = %group.short(), "the interrupted join waits for the inviter: {e}");
                }
            }
            let wait = backoff.fail(&mut rand::rng());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    pub(crate) async fn join(
        self: &Arc<Self>,
        ticket: &shoal_net::InviteTicket,
    ) -> Result<JoinSummary, DaemonError> {
        let summary = self.node.join(ticket, &|_| {}).await?;
        self.clone().look(false).await?;
        Ok(summary)
    }
}

impl control::Answer for Inner {
    fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        Inner::subscribe(self)
    }

    async fn answer(self: Arc<Self>, request: Request) -> Result<serde_json::Value, DaemonError> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| DaemonError::Internal(e.to_string()))
        };
        match request {
            Request::Status => json(serde_json::to_value(self.status().await?)),
            Request::Addr => Ok(serde_json::Value::String(self.addr().await)),
            Request::Sync { group, peers } => {
                let group = match group {
                    Some(g) => Some(self.group_id(g).await?),
                    None => None,
                };
                let peers = peers
                    .iter()
                    .map(|p| p.parse::<PeerSpec>())
                    .collect::<Result<Vec<_>, _>>()?;
                json(serde_json::to_value(
                    self.sync_now(group, &peers, None).await?,
                ))
            }
            Request::Join { ticket } => {
                let ticket: InviteTicket = ticket.parse()?;
                json(serde_json::to_value(self.join(&ticket).await?))
            }
            Request::Events => Err(DaemonError::Internal("events are streamed".into())),
        }
    }
}

//! A device on the network: its endpoint, and serving, syncing and joining.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, QuicTransportConfig, presets};
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, RelayMode, RelayUrl, SecretKey, Watcher};
use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, GroupId, Role};
use shoal_host::GroupSync;
use shoal_proto::{Config, InviteClaim, Local, Session, invite_proof};
use shoal_store::{Store, StoreOptions};
use tracing::{info, warn};

use crate::drive::{Progress, SharedStore, drive, with_store};
use crate::error::NetError;
use crate::link::{CloseReason, PeerLink};
use crate::peer::PeerSpec;
use crate::ticket::InviteTicket;

/// The one application protocol Shoal speaks on an iroh connection.
pub const ALPN: &[u8] = b"shoal/sync/1";

/// Which relays to use: what lets devices behind NATs reach each other when no
/// direct path works.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Relay {
    /// iroh's public relays.
    #[default]
    Default,
    /// None: direct addresses only (a LAN, a Tailscale network).
    Disabled,
    /// A relay of your own.
    Custom(RelayUrl),
}

/// How a node binds.
#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    /// Relays.
    pub relay: Relay,
    /// The UDP port to listen on; any free port when `None`.
    pub port: Option<u16>,
    /// Session tunables.
    pub session: Config,
    /// How often an idle connection sends a keep-alive; a connection that hears
    /// nothing for three of them is given up. iroh's default (5 s) when `None`.
    pub heartbeat: Option<Duration>,
    /// How to check relays' certificates, when not by the usual roots (a relay
    /// started by a test has a self-signed one).
    #[doc(hidden)]
    pub relay_tls: Option<iroh::tls::CaTlsConfig>,
    /// Use no direct paths at all, only the relay (tests of the relay path).
    #[doc(hidden)]
    pub relay_only: bool,
}

/// What a sync with one peer did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSync {
    /// The peer.
    pub peer: DeviceId,
    /// Each group reconciled.
    pub groups: Vec<GroupSync>,
    /// Why the sync with this peer failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// What joining a group did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinSummary {
    /// The group joined.
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// The role received.
    pub role: Option<Role>,
    /// The first sync with the inviter.
    pub sync: GroupSync,
}

struct Db {
    path: PathBuf,
    options: StoreOptions,
}

/// A device on the network.
pub struct Node {
    endpoint: Endpoint,
    db: Arc<Db>,
    device: DeviceId,
    config: NodeConfig,
    active: Arc<AtomicUsize>,
    /// Database connections given back by finished tasks.
    idle: Arc<Mutex<Vec<SharedStore>>>,
    /// The accept loop, while this node listens.
    pub(crate) router: Mutex<Option<Router>>,
    /// Set once the node is closed.
    pub(crate) closed: tokio::sync::watch::Sender<bool>,
}

/// How many database connections a node keeps for reuse.
const IDLE_STORES: usize = 4;

/// How long an initiator waits, once a session is finished, for the responder to end
/// its side: the responder applies what it received first.
const RESPONDER_END: Duration = Duration::from_secs(30);

/// A database connection lent to one task; given back to its node when dropped.
struct Lease {
    store: Option<SharedStore>,
    idle: Arc<Mutex<Vec<SharedStore>>>,
}

impl std::ops::Deref for Lease {
    type Target = SharedStore;

    fn deref(&self) -> &SharedStore {
        self.store
            .as_ref()
            .expect("a lease holds its store until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            let mut idle = lock(&self.idle);
            if idle.len() < IDLE_STORES {
                idle.push(s);
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// Opens the database and binds an endpoint whose key is the device's.
    pub async fn bind(
        db: impl AsRef<Path>,
        options: StoreOptions,
        config: NodeConfig,
    ) -> Result<Node, NetError> {
        let path = db.as_ref().to_owned();
        let store = Store::open(&path, options.clone())?;
        let device = store.device();
        let secret = SecretKey::from_bytes(&store.device_key().seed());
        drop(store);
        let relay = match &config.relay {
            Relay::Default => RelayMode::Default,
            Relay::Disabled => RelayMode::Disabled,
            Relay::Custom(url) => RelayMode::custom([url.clone()]),
        };
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(relay);
        if let Some(beat) = config.heartbeat {
            let idle = (beat * 3)
                .try_into()
                .map_err(|e| NetError::Bind(format!("heartbeat {beat:?} is too long: {e}")))?;
            builder = builder.transport_config(
                QuicTransportConfig::builder()
                    .keep_alive_interval(beat)
                    .max_idle_timeout(Some(idle))
                    .build(),
            );
        }
        if let Some(tls) = &config.relay_tls {
            builder = builder.ca_tls_config(tls.clone());
        }
        if config.relay_only {
            builder = builder.clear_ip_transports();
        } else if let Some(port) = config.port {
            builder = builder
                .bind_addr(std::net::SocketAddr::from(([0, 0, 0, 0], port)))
                .map_err(|e| NetError::Bind(e.to_string()))?;
        }
        let endpoint = builder
            .bind()
            .await
            .map_err(|e| NetError::Bind(e.to_string()))?;
        Ok(Node {
            endpoint,
            db: Arc::new(Db { path, options }),
            device,
            config,
            active: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(Mutex::new(Vec::new())),
            router: Mutex::new(None),
            closed: tokio::sync::watch::channel(false).0,
        })
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The iroh endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sessions running now.
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Where others can reach this device: waits (briefly) until the endpoint knows
    /// an address, direct or through a relay.
    pub async fn addr(&self) -> EndpointAddr {
        let mut watch = self.endpoint.watch_addr();
        let wanted = |a: &EndpointAddr| {
            if self.config.relay_only {
                a.relay_urls().next().is_some()
            } else {
                a.ip_addrs().next().is_some()
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if wanted(&watch.get()) {
                    return;
                }
                if watch.updated().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.endpoint.addr()
    }

    /// A connection to the database for one task: one that an earlier task gave
    /// back, or a new one. Opening costs more than a round of sync on a kept
    /// connection, so a daemon's rounds reuse them.
    fn open_store(&self) -> Result<Lease, NetError> {
        let idle = lock(&self.idle).pop();
        let store = match idle {
            Some(s) => s,
            None => Arc::new(Mutex::new(Store::open(
                &self.db.path,
                self.db.options.clone(),
            )?)),
        };
        Ok(Lease {
            store: Some(store),
            idle: self.idle.clone(),
        })
    }

    /// Records this device's own address in its database, where `shoal invite`
    /// finds it for a ticket.
    pub async fn remember_own_addr(&self) -> Result<EndpointAddr, NetError> {
        let addr = self.addr().await;
        let store = self.open_store()?;
        let text = PeerSpec::remembered(&addr);
        let me = self.device;
        with_store(&store, move |s| s.remember_peer(&me, &text)).await?;
        Ok(addr)
    }

    /// Serves one connection: a responder session for each stream the peer opens,
    /// until the connection closes. `on_session` hears each finished session.
    pub async fn serve_connection(
        &self,
        link: PeerLink,
        on_session: impl Fn(DeviceId, &GroupSync) + Send + Sync,
    ) -> Result<(), NetError> {
        let remote = link.device();
        let conn = link.connection();
        info!(peer = %remote.short(), "connection accepted");
        let store = self.open_store()?;
        let start = Instant::now();
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            let session = Session::responder(
                self.config.session,
                self.device,
                remote,
                start.elapsed().as_millis() as u64,
            );
            self.active.fetch_add(1, Ordering::SeqCst);
            let result = drive(session, store.clone(), &mut send, &mut recv, start, &|_| {}).await;
            self.active.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(s) => {
                    info!(
                        peer = %remote.short(),
                        group = %s.name,
                        pushed = s.pushed,
                        pulled = s.pulled,
                        "session finished"
                    );
                    on_session(remote, &s);
                }
                Err(e) => {
                    warn!(peer = %remote.short(), "session failed: {e}");
                    // Give the refusal time to reach the peer before the connection goes.
                    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                    return Err(e);
                }
            }
        }
    }

    /// Stops accepting and closes the endpoint; `serve` returns.
    pub async fn close(&self) {
        let router = lock(&self.router).take();
        match router {
            Some(r) => {
                if let Err(e) = r.shutdown().await {
                    warn!("the accept loop ended badly: {e}");
                }
            }
            None => self.endpoint.close().await,
        }
        self.closed.send_replace(true);
    }

    /// Syncs with `peers` (or, when empty, with every member whose address is
    /// remembered), in `group` or every group both are members of.
    pub async fn sync(
        &self,
        group: Option<GroupId>,
        peers: &[PeerSpec],
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Vec<PeerSync>, NetError> {
        let store = self.open_store()?;
        let targets = self.targets(&store, group, peers).await?;
        if targets.is_empty() {
            return Err(NetError::NoPeers(
                "no member of these groups has a known address; give one with --peer".into(),
            ));
        }
        let mut out = Vec::new();
        for candidates in targets {
            let start = Instant::now();
            let mut last_err = None;
            let mut done = None;
            for addr in &candidates {
                match self.sync_addr(addr.clone(), group, progress).await {
                    Ok(s) => {
                        done = Some(s);
                        break;
                    }
                    Err(e) => last_err = Some((DeviceId(*addr.id.as_bytes()), e)),
                }
            }
            out.push(match (done, last_err) {
                (Some(s), _) => s,
                (None, Some((peer, e))) => PeerSync {
                    peer,
                    groups: Vec::new(),
                    error: Some(e.to_string()),
                    elapsed_ms: start.elapsed().as_millis() as u64,
                },
                (None, None) => continue,
            });
        }
        Ok(out)
    }

    /// The address sets to try, one set per peer (a static `host:port` gives one
    /// candidate per member).
    async fn targets(
        &self,
        store: &SharedStore,
        group: Option<GroupId>,
        peers: &[PeerSpec],
    ) -> Result<Vec<Vec<EndpointAddr>>, NetError> {
        let me = self.device;
        let peers = peers.to_vec();
        with_store(store, move |s| {
            let groups = match group {
                Some(g) => s.group_by_id(&g)?.into_iter().collect(),
                None => s.groups()?,
            };
            let members: Vec<DeviceId> = {
                let mut m: Vec<DeviceId> = groups
                    .iter()
                    .flat_map(|g| g.members())
                    .filter(|m| m.revoked_after.is_none() && m.device != me)
                    .map(|m| m.device)
                    .collect();
                m.sort();
                m.dedup();
                m
            };
            let remembered = |d: &DeviceId| -> Option<EndpointAddr> {
                let text = s.peer_addr(d).ok()??;
                match text.parse::<PeerSpec>() {
                    Ok(PeerSpec::Addr(a)) => Some(a),
                    _ => None,
                }
            };
            let mut out = Vec::new();
            if peers.is_empty() {
                for m in &members {
                    if let Some(a) = remembered(m) {
                        out.push(vec![a]);
                    }
                }
                return Ok(Ok(out));
            }
            for p in peers {
                match p {
                    PeerSpec::Addr(a) => out.push(vec![a]),
                    PeerSpec::Device(prefix) => {
                        let found: Vec<&DeviceId> = members
                            .iter()
                            .filter(|m| m.to_string().starts_with(&prefix))
                            .collect();
                        match found.as_slice() {
                            [d] => match remembered(d) {
                                Some(a) => out.push(vec![a]),
                                None => {
                                    return Ok(Err(format!(
                                        "no address is known for device {prefix}; give it as DEVICE@HOST:PORT"
                                    )));
                                }
                            },
                            [] => {
                                return Ok(Err(format!(
                                    "no member of these groups has a device id starting with {prefix}"
                                )));
                            }
                            _ => {
                                return Ok(Err(format!(
                                    "{prefix} names more than one member; give more of the id"
                                )));
                            }
                        }
                    }
                    PeerSpec::Socket(sock) => out.push(
                        members
                            .iter()
                            .filter_map(|m| iroh::PublicKey::from_bytes(&m.0).ok())
                            .map(|id| EndpointAddr::new(id).with_ip_addr(sock))
                            .collect(),
                    ),
                }
            }
            Ok(Ok(out))
        })
        .await?
        .map_err(NetError::NoPeers)
    }

    /// Connects to one address and reconciles every group both sides are members of
    /// (or just `group`).
    pub async fn sync_addr(
        &self,
        addr: EndpointAddr,
        group: Option<GroupId>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PeerSync, NetError> {
        let start = Instant::now();
        let peer = DeviceId(*addr.id.as_bytes());
        let groups = self.shared_groups(peer, group).await?;
        let link = self.dial(addr.clone()).await?;
        let result = self
            .sync_groups(link.connection(), groups, start, progress)
            .await;
        link.close(CloseReason::Done);
        let results = result?;
        self.remember(peer, &addr).await?;
        Ok(PeerSync {
            peer,
            groups: results,
            error: None,
            elapsed_ms: start.elapsed().as_millis() as u64,
        })
    }

    /// Reconciles every group both sides are members of (or just `group`) over a
    /// connection that is already open, and leaves it open.
    pub async fn sync_connection(
        &self,
        link: &PeerLink,
        group: Option<GroupId>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PeerSync, NetError> {
        let start = Instant::now();
        let peer = link.device();
        let groups = self.shared_groups(peer, group).await?;
        let results = self
            .sync_groups(link.connection(), groups, start, progress)
            .await?;
        Ok(PeerSync {
            peer,
            groups: results,
            error: None,
            elapsed_ms: start.elapsed().as_millis() as u64,
        })
    }

    /// The groups this device and `peer` are both members of (or just `group`).
    async fn shared_groups(
        &self,
        peer: DeviceId,
        group: Option<GroupId>,
    ) -> Result<Vec<(GroupId, String)>, NetError> {
        let store = self.open_store()?;
        let me = self.device;
        let groups: Vec<(GroupId, String)> = with_store(&store, move |s| {
            let all = match group {
                Some(g) => s.group_by_id(&g)?.into_iter().collect(),
                None => s.groups()?,
            };
            Ok(all
                .into_iter()
                .filter(|g| g.role(&me).is_some() && g.role(&peer).is_some())
                .map(|g| (g.id, g.name))
                .collect())
        })
        .await?;
        if groups.is_empty() {
            return Err(NetError::NoPeers(format!(
                "device {} shares no group with this device (or was revoked)",
                peer.short()
            )));
        }
        Ok(groups)
    }

    async fn sync_groups(
        &self,
        conn: &Connection,
        groups: Vec<(GroupId, String)>,
        start: Instant,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Vec<GroupSync>, NetError> {
        let peer = DeviceId(*conn.remote_id().as_bytes());
        let store = self.open_store()?;
        let mut results = Vec::new();
        for (g, name) in groups {
            let local = local_side(&store, g, None).await?;
            let session = Session::initiator(
                self.config.session,
                local,
                peer,
                start.elapsed().as_millis() as u64,
            );
            let mut sync = self
                .run_initiator(conn, session, &store, start, progress)
                .await?;
            sync.name = name;
            results.push(sync);
        }
        Ok(results)
    }

    /// Joins the group of `ticket`: proves the invite to the inviter, is added by it,
    /// and receives the group's history.
    pub async fn join(
        &self,
        ticket: &InviteTicket,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<JoinSummary, NetError> {
        let now = (self.db.options.wall_clock)();
        let start = Instant::now();
        let store = self.open_store()?;
        // A join is recorded before it starts, so that a crash in the middle of it
        // is resumed (`Daemon::start`); a resumed join may have been let in already,
        // which the inviter knows, so its expiry is the inviter's to judge.
        let group = ticket.group;
        let resuming = with_store(&store, move |s| s.pending_join(&group))
            .await?
            .is_some();
        if !resuming && ticket.expired(now) {
            return Err(NetError::Ticket(
                "the invite has expired; ask for a new one".into(),
            ));
        }
        let record = postcard::to_stdvec(ticket).map_err(|e| NetError::Ticket(e.to_string()))?;
        let (inviter, text) = (ticket.inviter, PeerSpec::remembered(&ticket.addr));
        with_store(&store, move |s| {
            s.begin_join(&group, &record)?;
            s.remember_peer(&inviter, &text)
        })
        .await?;
        crate::fault::point("join-before-session");
        let joined = self.join_session(ticket, &store, start, progress).await;
        if joined.as_ref().is_ok() || joined.as_ref().is_err_and(|e| !e.is_transient()) {
            with_store(&store, move |s| s.end_join(&group)).await?;
        }
        joined
    }

    /// The session of a join, once it is recorded.
    async fn join_session(
        &self,
        ticket: &InviteTicket,
        store: &SharedStore,
        start: Instant,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<JoinSummary, NetError> {
        let store = store.clone();
        let claim = InviteClaim {
            invite: ticket.invite,
            proof: invite_proof(&ticket.secret, &ticket.group, &self.device, &ticket.inviter),
        };
        let local = local_side(&store, ticket.group, Some(claim)).await?;
        let link = self.dial(ticket.addr.clone()).await?;
        let conn = link.connection();
        let session = Session::initiator(
            self.config.session,
            local,
            ticket.inviter,
            start.elapsed().as_millis() as u64,
        );
        let mut sync = self
            .run_initiator(conn, session, &store, start, progress)
            .await?;
        link.close(CloseReason::Done);
        let (group, me) = (ticket.group, self.device);
        let g = with_store(&store, move |s| s.group_by_id(&group)).await?;
        sync.name = g.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        Ok(JoinSummary {
            group: ticket.group,
            name: sync.name.clone(),
            role: g.and_then(|g| g.role(&me)),
            sync,
        })
    }

    /// Remembers where `peer` was reached, for the next sync.
    pub async fn remember(&self, peer: DeviceId, addr: &EndpointAddr) -> Result<(), NetError> {
        let store = self.open_store()?;
        let text = PeerSpec::remembered(addr);
        with_store(&store, move |s| s.remember_peer(&peer, &text)).await
    }

    /// Opens a connection to `addr`, giving up after 15 s.
    pub async fn dial(&self, addr: EndpointAddr) -> Result<PeerLink, NetError> {
        let peer = addr.id.to_string();
        match tokio::time::timeout(Duration::from_secs(15), self.endpoint.connect(addr, ALPN)).await
        {
            Ok(Ok(c)) => Ok(PeerLink::new(c)),
            Ok(Err(e)) => Err(NetError::Connect {
                peer,
                reason: e.to_string(),
            }),
            Err(_) => Err(NetError::Connect {
                peer,
                reason: "no answer within 15 s".into(),
            }),
        }
    }

    async fn run_initiator(
        &self,
        conn: &Connection,
        session: Session,
        store: &SharedStore,
        start: Instant,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<shoal_host::GroupSync, NetError> {
        let peer = session.remote();
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| NetError::Stream {
            peer: peer.to_string(),
            reason: e.to_string(),
        })?;
        self.active.fetch_add(1, Ordering::SeqCst);
        let result = drive(
            session,
            store.clone(),
            &mut send,
            &mut recv,
            start,
            progress,
        )
        .await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        let out = result?;
        // Wait for the responder to finish its side, so closing loses nothing. It
        // applies what it was sent first, which for a long history takes a while.
        let _ = tokio::time::timeout(RESPONDER_END, recv.read_to_end(1 << 16)).await;
        Ok(out)
    }
}

/// This device's side of a group, sealed first so that fresh writes go out too.
async fn local_side(
    store: &SharedStore,
    group: GroupId,
    invite: Option<InviteClaim>,
) -> Result<Local, NetError> {
    with_store(store, move |s| shoal_host::local_side(s, group, invite)).await
}

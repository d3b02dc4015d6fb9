//! The running daemon: one endpoint, a supervisor per member that keeps a
//! connection up and runs a round of sync whenever one side has something new, and
//! a loop that seals local writes as soon as the database says it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointAddr;
use iroh::endpoint::Connection;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_core::{DeviceId, Group, GroupId, VersionVector};
use shoal_net::{
    GroupSync, InviteTicket, JoinSummary, Node, NodeConfig, PeerSpec, PeerSync, Progress, Relay,
    SharedStore, with_store,
};
use shoal_store::{KnownPeer, OpenConflict, Store, StoreError, StoreOptions, system_now_ms};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::addresses::{AddressBook, MAX_BYTES, MAX_ENTRIES};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::control::{self, Request};
use crate::error::DaemonError;
use crate::event::Event;
use crate::status::{DaemonStatus, GroupStatus, PeerStatus};
use crate::watch::Watcher;

/// How many attempt times a peer's status keeps.
const ATTEMPTS_KEPT: usize = 32;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Always-on sync for one database.
///
/// [`Daemon::start`] binds the device's endpoint and returns at once; the work runs
/// on the current tokio runtime until [`Daemon::shutdown`].
pub struct Daemon {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    watcher: Option<Watcher>,
    socket: Option<PathBuf>,
}

pub(crate) struct Inner {
    node: Arc<Node>,
    store: SharedStore,
    config: Config,
    me: DeviceId,
    events: broadcast::Sender<Event>,
    peers: Mutex<HashMap<DeviceId, Arc<Peer>>>,
    /// Connections from devices not known as members when they came: a device that
    /// was just added may dial before this side has applied its membership. The
    /// connection is adopted once it is. Locked after `peers`, never before.
    strangers: Mutex<HashMap<DeviceId, Connection>>,
    local: Mutex<LocalState>,
    changed: Arc<Notify>,
    stop: watch::Sender<bool>,
    rng: Mutex<StdRng>,
    statics: Vec<PeerSpec>,
    started: Instant,
    /// Every log line of this daemon names its device.
    span: tracing::Span,
}

/// What the daemon last saw of its own database.
#[derive(Default)]
struct LocalState {
    have: HashMap<GroupId, VersionVector>,
    conflicts: BTreeMap<String, OpenConflict>,
    groups: Vec<Group>,
    /// What the last seal left unsealed, by table and reason: each is reported once.
    not_sealed: BTreeSet<(String, String)>,
    /// Whether this device's commits were last seen stamped too far ahead.
    clock_ahead: bool,
}

/// One member and the task that keeps in touch with it.
struct Peer {
    device: DeviceId,
    /// The connection rounds run on, while one is up; the newest wins.
    conn: watch::Sender<Option<Connection>>,
    /// Something here is new, or a new way to reach it is known: act now.
    dirty: Notify,
    state: Mutex<PeerState>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// A round to pass on others' commits is already scheduled.
    forwarding: AtomicBool,
}

/// What a member lacks of this device's holdings.
enum Lack {
    Nothing,
    /// Commits this device made (or nothing is known of the member yet): sent at once.
    Own,
    /// Only other devices' commits, which the member may have had from them.
    Relayed,
}

/// How long a round that only passes on others' commits waits.
const FORWARD_DELAY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct PeerState {
    status: PeerStatus,
    /// What it holds of each group, as of the last session.
    known: HashMap<GroupId, VersionVector>,
    /// The groups both are members of.
    groups: Vec<GroupId>,
    /// Found on the local network.
    discovered: bool,
}

impl Peer {
    fn connection(&self) -> Option<Connection> {
        self.conn
            .borrow()
            .clone()
            .filter(|c| c.close_reason().is_none())
    }

    /// What the member lacks of `have`, in the groups both are in: commits by `me`,
    /// or only commits this device would pass on.
    fn lacks(&self, have: &HashMap<GroupId, VersionVector>, me: &DeviceId) -> Lack {
        let st = lock(&self.state);
        let mut lack = Lack::Nothing;
        for g in &st.groups {
            let Some(h) = have.get(g) else { continue };
            match st.known.get(g) {
                None => return Lack::Own,
                Some(k) if h.get(me) > k.get(me) => return Lack::Own,
                Some(k) if !k.covers(h) => lack = Lack::Relayed,
                Some(_) => {}
            }
        }
        lack
    }

    /// Whether `have` holds something the member lacks in a group both are in.
    fn behind(&self, have: &HashMap<GroupId, VersionVector>) -> bool {
        let st = lock(&self.state);
        st.groups
            .iter()
            .any(|g| match (have.get(g), st.known.get(g)) {
                (Some(h), Some(k)) => !k.covers(h),
                (Some(_), None) => true,
                (None, _) => false,
            })
    }

    fn record(&self, sync: &GroupSync) {
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

impl Daemon {
    /// Opens the database, binds its device's endpoint, and starts keeping in touch
    /// with every member. With `control` set, other `shoal` commands reach it through
    /// a socket in `data_dir`.
    pub async fn start(
        db: impl AsRef<Path>,
        options: StoreOptions,
        config: Config,
        control: bool,
    ) -> Result<Daemon, DaemonError> {
        let db = db.as_ref().to_owned();
        let data_dir = options.data_dir.clone();
        let mut store = Store::open(&db, options.clone())?;
        let me = store.device();
        let listener = if control {
            Some(control::claim(&data_dir, &me)?)
        } else {
            None
        };
        let socket = listener
            .is_some()
            .then(|| control::socket_path(&data_dir, &me));
        store.seal()?;
        // What a session kept before the process died (a join's commits among them)
        // is applied before anything else looks at the groups.
        store.apply_waiting()?;
        let joins = store.pending_joins()?;
        let statics = config
            .peers
            .iter()
            .map(|p| p.parse::<PeerSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let node = Arc::new(Node::bind(&db, options, node_config(&config)?).await?);
        let addr = node.remember_own_addr().await?;
        info!(device = %me, addr = %PeerSpec::remembered(&addr), "daemon up");
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            node,
            store: Arc::new(Mutex::new(store)),
            config: config.clone(),
            me,
            events: broadcast::channel(4096).0,
            peers: Mutex::new(HashMap::new()),
            strangers: Mutex::new(HashMap::new()),
            local: Mutex::new(LocalState::default()),
            changed: Arc::new(Notify::new()),
            stop,
            rng: Mutex::new(StdRng::from_os_rng()),
            statics,
            started: Instant::now(),
            span: tracing::info_span!("daemon", device = %me.short()),
        });
        inner.clone().look(true).await?;
        let watcher = Watcher::start(&db, config.watch_interval, inner.changed.clone())
            .map_err(StoreError::from)?;
        let span = inner.span.clone();
        let mut tasks = vec![
            tokio::spawn(inner.clone().accept_loop().instrument(span.clone())),
            tokio::spawn(inner.clone().local_loop().instrument(span.clone())),
            tokio::spawn(inner.clone().tick_loop().instrument(span.clone())),
        ];
        // A join the process died in the middle of goes on.
        for (group, ticket) in joins {
            tasks.push(tokio::spawn(
                inner
                    .clone()
                    .resume_join(group, ticket)
                    .instrument(span.clone()),
            ));
        }
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(control::serve(listener, inner.clone())));
        }
        if config.mdns
            && let Some(t) = inner.clone().discover()
        {
            tasks.push(t);
        }
        Ok(Daemon {
            inner,
            tasks,
            watcher: Some(watcher),
            socket,
        })
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.inner.me
    }

    /// Where others reach this device.
    pub async fn addr(&self) -> EndpointAddr {
        self.inner.node.addr().await
    }

    /// Events from now on: changes applied, conflicts found or closed, peers
    /// connected or lost, sync progress.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.subscribe()
    }

    /// The daemon, its peers and its groups.
    pub async fn status(&self) -> Result<DaemonStatus, DaemonError> {
        self.inner.status().await
    }

    /// One round now with every member it can reach (or `peers`), in `group` or
    /// every group.
    pub async fn sync_now(
        &self,
        group: Option<GroupId>,
        peers: &[PeerSpec],
    ) -> Result<Vec<PeerSync>, DaemonError> {
        self.inner.sync_now(group, peers).await
    }

    /// Joins a group with an invite ticket, then keeps in touch with its members.
    pub async fn join(&self, ticket: &shoal_net::InviteTicket) -> Result<JoinSummary, DaemonError> {
        self.inner.join(ticket).await
    }

    /// Stops everything: connections close, the control socket goes.
    pub async fn shutdown(mut self) {
        let _ = self.inner.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let peers: Vec<Arc<Peer>> = lock(&self.inner.peers).drain().map(|(_, p)| p).collect();
        for p in peers {
            if let Some(t) = lock(&p.task).take() {
                t.abort();
            }
            if let Some(c) = p.connection() {
                c.close(0u32.into(), b"shutting down");
            }
        }
        self.inner.node.close().await;
        self.watcher.take();
        if let Some(s) = self.socket.take() {
            let _ = std::fs::remove_file(s);
        }
        info!("daemon stopped");
    }
}

/// The endpoint settings a configuration asks for.
pub fn node_config(config: &Config) -> Result<NodeConfig, DaemonError> {
    let relay = match config.relay.as_str() {
        "default" => Relay::Default,
        "none" | "off" | "disabled" => Relay::Disabled,
        url => Relay::Custom(url.parse().map_err(|_| DaemonError::Value {
            key: "relay".into(),
            reason: format!("{url:?} is not `default`, `none` or a relay URL"),
        })?),
    };
    Ok(NodeConfig {
        relay,
        port: (config.port != 0).then_some(config.port),
        heartbeat: Some(config.heartbeat),
        ..NodeConfig::default()
    })
}

impl Inner {
    fn emit(&self, event: Event) {
        debug!(?event, "event");
        let _ = self.events.send(event);
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn peer(&self, device: &DeviceId) -> Option<Arc<Peer>> {
        lock(&self.peers).get(device).cloned()
    }

    /// Seals what was written here, notices new conflicts and membership changes,
    /// and wakes every member that now lacks something. `first` records what is
    /// there without announcing it.
    async fn look(self: Arc<Self>, first: bool) -> Result<(), DaemonError> {
        let (sealed, groups, have, conflicts, ahead) = with_store(&self.store, |s| {
            let sealed = s.seal()?;
            let groups = s.groups()?;
            let mut have = HashMap::new();
            for g in &groups {
                have.insert(g.id, s.version_vector(&g.id)?);
            }
            Ok((
                sealed,
                groups,
                have,
                s.open_conflicts()?,
                s.clock_ahead_ms()?,
            ))
        })
        .await?;
        if sealed.commits > 0 {
            self.emit(Event::LocalCommits {
                commits: sealed.commits as u64,
                changes: sealed.changes as u64,
            });
        }
        let conflicts: BTreeMap<String, OpenConflict> =
            conflicts.into_iter().map(|c| (c.id.clone(), c)).collect();
        let events = {
            let mut local = lock(&self.local);
            let mut events = Vec::new();
            if !first {
                for (id, c) in &conflicts {
                    if local
                        .conflicts
                        .get(id)
                        .is_none_or(|old| old.status != c.status)
                    {
                        events.push(Event::ConflictFound {
                            id: id.clone(),
                            table: c.table.clone(),
                            kind: c.kind.clone(),
                            status: c.status.clone(),
                        });
                    }
                }
                for id in local.conflicts.keys() {
                    if !conflicts.contains_key(id) {
                        events.push(Event::ConflictClosed { id: id.clone() });
                    }
                }
            }
            let not_sealed: BTreeSet<(String, String)> = sealed
                .schema_problems
                .iter()
                .map(|p| (p.table.clone(), p.message.clone()))
                .chain(
                    sealed
                        .oversized
                        .iter()
                        .map(|o| (o.table.clone(), o.to_string())),
                )
                .collect();
            for (table, reason) in not_sealed.difference(&local.not_sealed) {
                warn!(%table, "{reason}");
                events.push(Event::NotSealed {
                    table: table.clone(),
                    reason: reason.clone(),
                });
            }
            local.not_sealed = not_sealed;
            if let Some(ahead_ms) = ahead.filter(|_| !local.clock_ahead) {
                events.push(Event::ClockAhead { ahead_ms });
            }
            local.clock_ahead = ahead.is_some();
            local.conflicts = conflicts;
            local.have = have.clone();
            local.groups = groups.clone();
            events
        };
        for e in events {
            self.emit(e);
        }
        self.clone().members(&groups);
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        for p in peers {
            if p.connection().is_none() {
                // Look again for ways to reach it: an address may have just been
                // remembered.
                p.dirty.notify_one();
                continue;
            }
            match p.lacks(&have, &self.me) {
                Lack::Nothing => {}
                Lack::Own => p.dirty.notify_one(),
                // Commits this device passes on: the member has most likely had them
                // from their author already, so the round that checks waits a moment
                // and carries what arrived meanwhile.
                Lack::Relayed => {
                    if !p.forwarding.swap(true, Ordering::SeqCst) {
                        let p = p.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(FORWARD_DELAY).await;
                            p.forwarding.store(false, Ordering::SeqCst);
                            p.dirty.notify_one();
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a supervisor for every new member and stops the one of every device
    /// that is no longer a member of any group shared with this device.
    fn members(self: Arc<Self>, groups: &[Group]) {
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
                    state: Mutex::new(PeerState {
                        status: PeerStatus {
                            device: device.to_string(),
                            ..PeerStatus::default()
                        },
                        groups: shared,
                        ..PeerState::default()
                    }),
                    task: Mutex::new(None),
                });
                debug!(peer = %device.short(), "a member to keep in touch with");
                let span =
                    tracing::debug_span!(parent: &self.span, "member", peer = %device.short());
                let task = tokio::spawn(self.clone().supervise(peer.clone()).instrument(span));
                *lock(&peer.task) = Some(task);
                if let Some(conn) = lock(&self.strangers).remove(&device)
                    && conn.close_reason().is_none()
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
                c.close(1u32.into(), b"not a member");
            }
            self.emit(Event::PeerLost {
                peer: p.device.to_string(),
                reason: "no longer a member".into(),
            });
        }
    }

    /// Waits for the database to change, and looks.
    async fn local_loop(self: Arc<Self>) {
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = self.changed.notified() => {}
                () = &mut stopped => return,
            }
            if let Err(e) = self.clone().look(false).await {
                warn!("could not read local changes: {e}");
            }
        }
    }

    /// Now and then: applies commits held for a clock that has now been reached.
    async fn tick_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.sync_interval);
        every.tick().await;
        loop {
            every.tick().await;
            match with_store(&self.store, |s| s.apply_waiting()).await {
                Ok(r) if r.commits_applied + r.held_applied > 0 => {
                    info!(
                        commits = r.commits_applied,
                        changes = r.held_applied,
                        "applied held commits"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!("could not retry held commits: {e}"),
            }
        }
    }

    /// Accepts connections; a member's becomes the one its supervisor uses.
    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.node.accept().await {
            let inner = self.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        debug!("an incoming connection failed: {e}");
                        return;
                    }
                };
                let device = DeviceId(*conn.remote_id().as_bytes());
                let peer = {
                    let peers = lock(&inner.peers);
                    let peer = peers.get(&device).cloned();
                    if peer.is_none() {
                        lock(&inner.strangers).insert(device, conn.clone());
                    }
                    peer
                };
                if let Some(peer) = peer {
                    inner.welcome(&peer, conn.clone()).await;
                }
                inner.serve(conn.clone()).await;
                let mut strangers = lock(&inner.strangers);
                if strangers
                    .get(&device)
                    .is_some_and(|c| c.stable_id() == conn.stable_id())
                {
                    strangers.remove(&device);
                }
            });
        }
    }

    /// A member's incoming connection: where it came from is remembered, and it
    /// becomes the one its rounds run on.
    async fn welcome(self: &Arc<Self>, peer: &Arc<Peer>, conn: Connection) {
        if let Some(addr) = observed_addr(&conn) {
            let _ = self.node.remember(peer.device, &addr).await;
        }
        self.adopt(peer, conn);
    }

    /// Makes `conn` the connection `peer`'s rounds run on, and trades addresses of
    /// other members over it.
    fn adopt(self: &Arc<Self>, peer: &Peer, conn: Connection) {
        let was = peer.connection().is_some();
        let path = path_of(&conn).0;
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
            info!(peer = %peer.device.short(), path = path.as_deref().unwrap_or("?"), "connected");
            self.emit(Event::PeerConnected {
                peer: peer.device.to_string(),
                path,
            });
        }
    }

    /// Tells `peer` where the other members of the groups both are in can be
    /// reached.
    async fn tell(self: Arc<Self>, peer: Arc<Peer>) {
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
        if let Ok(mut send) = conn.open_uni().await
            && send.write_all(&bytes).await.is_ok()
        {
            let _ = send.finish();
        }
    }

    /// Reads what `from` says about where other members are, and keeps what checks
    /// out: addresses of members of a group both are in, under the member's own key,
    /// for members not connected now.
    async fn hear(self: Arc<Self>, from: DeviceId, conn: Connection) {
        while let Ok(mut recv) = conn.accept_uni().await {
            let Ok(bytes) = recv.read_to_end(MAX_BYTES).await else {
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

    /// Answers the sessions a peer opens on `conn`, until it closes.
    async fn serve(self: &Arc<Self>, conn: Connection) {
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
    fn finished(&self, device: DeviceId, sync: &GroupSync) {
        if let Some(p) = self.peer(&device) {
            p.record(sync);
        }
        if sync.applied > 0 {
            self.emit(Event::ChangesApplied {
                peer: device.to_string(),
                group: sync.name.clone(),
                commits: sync.applied,
                changes: sync.changes,
            });
        }
        if sync.future > 0 {
            self.emit(Event::HeldForClock {
                peer: device.to_string(),
                group: sync.name.clone(),
                commits: sync.future,
            });
        }
        for why in &sync.refused {
            self.emit(Event::Refused {
                peer: device.to_string(),
                reason: why.clone(),
            });
        }
    }

    /// Where `device` may be reached: its remembered address, the static peers, and
    /// (found on the local network) its id alone.
    async fn candidates(&self, device: DeviceId) -> Vec<EndpointAddr> {
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
    async fn supervise(self: Arc<Self>, peer: Arc<Peer>) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut conns = peer.conn.subscribe();
        // Of two devices that start together, the one with the lower id dials first,
        // so that usually one connection serves both.
        let mut next = Instant::now();
        if peer.device < self.me {
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
                conn.close(2u32.into(), b"sync failed");
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

    /// `conn` to `peer` is gone (unless a newer one already replaced it).
    fn lost(&self, peer: &Peer, conn: &Connection, reason: String) {
        let current = peer.conn.send_if_modified(|c| {
            if c.as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
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
                peer: peer.device.to_string(),
                reason,
            });
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
    async fn dial(&self, candidates: &[EndpointAddr]) -> Result<Connection, String> {
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
    async fn round(&self, peer: &Peer, conn: &Connection) -> Result<PeerSync, DaemonError> {
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
        let (path, rtt) = path_of(conn);
        {
            let mut st = lock(&peer.state);
            st.status.rounds += 1;
            st.status.path = path;
            st.status.rtt_ms = rtt;
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

    pub(crate) async fn sync_now(
        self: &Arc<Self>,
        group: Option<GroupId>,
        peers: &[PeerSpec],
    ) -> Result<Vec<PeerSync>, DaemonError> {
        self.clone().look(false).await?;
        if !peers.is_empty() {
            return Ok(self.node.sync(group, peers, &|_| {}).await?);
        }
        let all: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        let mut out = Vec::new();
        for p in all {
            let wanted = group.is_none_or(|g| lock(&p.state).groups.contains(&g));
            if !wanted {
                continue;
            }
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
            out.push(result.unwrap_or_else(|e| PeerSync {
                peer: p.device,
                groups: Vec::new(),
                error: Some(e.to_string()),
                elapsed_ms: start.elapsed().as_millis() as u64,
            }));
        }
        if out.is_empty() {
            return Err(DaemonError::Remote(
                "no member of these groups is known yet; join a group or add a peer".into(),
            ));
        }
        Ok(out)
    }

    /// Goes on with a join that a crash interrupted: done already if what the session
    /// brought was kept and is now applied; otherwise the inviter is asked again, with
    /// backoff while it cannot be reached, until it lets this device in or refuses.
    async fn resume_join(self: Arc<Self>, group: GroupId, ticket: Vec<u8>) {
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
            let wait = backoff.fail(&mut *lock(&self.rng));
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

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) async fn group_id(&self, which: String) -> Result<GroupId, DaemonError> {
        Ok(with_store(&self.store, move |s| Ok(s.group(&which)?.id)).await?)
    }

    pub(crate) async fn addr(&self) -> String {
        PeerSpec::remembered(&self.node.addr().await)
    }

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
                    (s.path, s.rtt_ms) = path_of(c);
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
        peers.sort_by(|a, b| a.device.cmp(&b.device));
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
                    id: g.id.to_string(),
                    name: g.name.clone(),
                    members: g
                        .members()
                        .into_iter()
                        .filter_map(|m| Some((m.device.to_string(), m.role?.as_str().to_owned())))
                        .collect(),
                    pending_conflicts: conflicts
                        .iter()
                        .filter(|c| c.status == "pending" && mine(&c.table))
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
            device: self.me.to_string(),
            addr,
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            peers,
            groups,
        })
    }

    /// Finds members on the local network; each one found is tried at once.
    #[cfg(feature = "mdns")]
    fn discover(self: Arc<Self>) -> Option<JoinHandle<()>> {
        use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
        use n0_future::StreamExt;
        let endpoint = self.node.endpoint();
        let mdns = match MdnsAddressLookup::builder()
            .service_name("shoal")
            .build(endpoint.id())
        {
            Ok(m) => m,
            Err(e) => {
                warn!("local-network discovery is off: {e}");
                return None;
            }
        };
        match endpoint.address_lookup() {
            Ok(services) => services.add(mdns.clone()),
            Err(e) => {
                warn!("local-network discovery is off: {e}");
                return None;
            }
        }
        Some(tokio::spawn(async move {
            let mut events = mdns.subscribe().await;
            while let Some(event) = events.next().await {
                if let DiscoveryEvent::Discovered { endpoint_info, .. } = event {
                    let device = DeviceId(*endpoint_info.endpoint_id.as_bytes());
                    if let Some(p) = self.peer(&device) {
                        debug!(peer = %device.short(), "found on the local network");
                        lock(&p.state).discovered = true;
                        p.dirty.notify_one();
                    }
                }
            }
        }))
    }

    #[cfg(not(feature = "mdns"))]
    fn discover(self: Arc<Self>) -> Option<JoinHandle<()>> {
        None
    }
}

/// The connection's path in use: `direct` or `relay`, and its round-trip time.
fn path_of(conn: &Connection) -> (Option<String>, Option<f64>) {
    let paths = conn.paths();
    let selected = paths.iter().find(|p| p.is_selected());
    match selected {
        Some(p) => (
            Some(if p.is_relay() { "relay" } else { "direct" }.to_string()),
            Some(p.rtt().as_secs_f64() * 1000.0),
        ),
        None => (None, None),
    }
}

/// The address a peer's connection came from, when it is a direct one.
fn observed_addr(conn: &Connection) -> Option<EndpointAddr> {
    let paths = conn.paths();
    let ip = paths.iter().find_map(|p| match p.remote_addr() {
        iroh::TransportAddr::Ip(sock) => Some(*sock),
        _ => None,
    })?;
    Some(EndpointAddr::new(conn.remote_id()).with_ip_addr(ip))
}

/// A moment `after` from now, in ms since the epoch.
fn wall_ms(after: Duration) -> u64 {
    system_now_ms() + after.as_millis() as u64
}

impl control::Answer for Inner {
    fn subscribe(&self) -> broadcast::Receiver<Event> {
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
                json(serde_json::to_value(self.sync_now(group, &peers).await?))
            }
            Request::Join { ticket } => {
                let ticket: InviteTicket = ticket.parse()?;
                json(serde_json::to_value(self.join(&ticket).await?))
            }
            Request::Events => Err(DaemonError::Internal("events are streamed".into())),
        }
    }
}

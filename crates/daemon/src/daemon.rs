//! The running daemon: one endpoint, a supervisor per member that keeps a
//! connection up and runs a round of sync whenever one side has something new, and
//! a loop that seals local writes as soon as the database says it changed.
//!
//! This is the public face; the parts work on the shared [`Inner`]: `members` and
//! `supervisor` keep in touch with each member, `schedule` decides when a round is
//! owed, `gossip` trades members' addresses, `local` watches the file, `report` and
//! `requests` answer what is asked, `discovery` finds members nearby.
//!
//! One daemon serves one database: a database is a device, its key is the endpoint's
//! key, its groups are what the daemon serves, its file is what the watcher watches, so
//! a bad file, a crash or a restart touches one device. A second `shoal up` for the same
//! database is refused while the first answers on its control socket, and the other
//! commands work through the running one, so no second endpoint with the same key ever
//! binds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointAddr;
use shoal_core::{DeviceId, GroupId, Role};
use shoal_net::{CloseReason, JoinSummary, Node, NodeConfig, PeerSpec, PeerSync};
use shoal_store::{
    CommitSummary, Conflict, InboxPage, InboxQuery, Resolution, Store, StoreError, StoreOptions,
    TrackedTable,
};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info};

use crate::auto::AutoSync;
use crate::config::Config;
use crate::control;
use crate::error::DaemonError;
use crate::inner::{Inner, LocalState};
use crate::journal::{Journal, Numbered, Since};
use crate::members::Door;
use crate::mutex::lock;
use crate::peer::Peer;
use crate::status::DaemonStatus;
use crate::steer::IssuedInvite;
use crate::watch::Watcher;

/// Always-on sync for one database.
///
/// [`Daemon::start`] binds the device's endpoint and returns at once; the work runs
/// on the current tokio runtime until [`Daemon::shutdown`].
pub struct Daemon {
    inner: Arc<Inner>,
    handle: Handle,
    tasks: Vec<JoinHandle<()>>,
    watcher: Option<Watcher>,
    socket: Option<PathBuf>,
}

/// What a running daemon is asked and told, from this process: a daemon derefs to
/// it, and [`Daemon::handle`] gives one that can be kept.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::ops::Deref for Daemon {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Handle {
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
    pub fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.inner.subscribe()
    }

    /// The kept events after number `after`, and how many after it are gone.
    pub fn events_since(&self, after: u64) -> Since {
        self.inner.journal.since(after)
    }

    /// The number of the latest event (0 before the first).
    pub fn latest_event(&self) -> u64 {
        self.inner.journal.latest()
    }

    /// The conflict records, open ones only unless `all`.
    pub async fn conflicts(&self, all: bool) -> Result<Vec<Conflict>, DaemonError> {
        self.inner.conflicts(all).await
    }

    /// A page of the conflict inbox, newest first.
    pub async fn inbox(&self, query: InboxQuery) -> Result<InboxPage, DaemonError> {
        self.inner.inbox(query).await
    }

    /// One conflict record, by id or a unique prefix of it.
    pub async fn conflict(&self, id: &str) -> Result<Conflict, DaemonError> {
        self.inner.conflict(id.to_owned()).await
    }

    /// Resolves a conflict with a write that goes out to the members at once.
    pub async fn resolve(&self, id: &str, resolution: Resolution) -> Result<Conflict, DaemonError> {
        self.inner.resolve(id.to_owned(), resolution).await
    }

    /// Whether the daemon syncs by itself, and how often with nothing new.
    pub fn auto_sync(&self) -> AutoSync {
        *self.inner.auto.borrow()
    }

    /// Turns automatic sync on or off, or changes its interval (at least 1 s), and
    /// keeps the setting for the next start (see [`AutoSync`]).
    pub fn set_auto_sync(&self, auto: AutoSync) -> Result<AutoSync, DaemonError> {
        self.inner.set_auto_sync(auto)
    }

    /// `limit` commits this device holds, newest first, after the `offset` newest.
    pub async fn log(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<CommitSummary>, DaemonError> {
        self.inner.log(offset, limit).await
    }

    /// The tables this device tracks.
    pub async fn tables(&self) -> Result<Vec<TrackedTable>, DaemonError> {
        self.inner.tables().await
    }

    /// An invite to `group` (name or id) for `uses` devices as `role`, valid for
    /// `valid`; this daemon lets the joiners in.
    pub async fn invite(
        &self,
        group: &str,
        role: Role,
        valid: Duration,
        uses: u32,
    ) -> Result<IssuedInvite, DaemonError> {
        self.inner.invite(group.to_owned(), role, valid, uses).await
    }

    /// Revokes `device` from `group`, and tells the members.
    pub async fn revoke(&self, group: GroupId, device: DeviceId) -> Result<(), DaemonError> {
        self.inner.revoke(group, device).await
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
        self.inner.sync_now(group, peers, None).await
    }

    /// One round now with the member `device`, in `group` or every group both are in.
    pub async fn sync_with(
        &self,
        group: Option<GroupId>,
        device: DeviceId,
    ) -> Result<Vec<PeerSync>, DaemonError> {
        self.inner.sync_now(group, &[], Some(device)).await
    }

    /// Joins a group with an invite ticket, then keeps in touch with its members.
    pub async fn join(&self, ticket: &shoal_net::InviteTicket) -> Result<JoinSummary, DaemonError> {
        self.inner.join(ticket).await
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
        let statics = config.static_peers()?;
        let node = Arc::new(Node::bind(&db, options, node_config(&config)?).await?);
        let addr = node.remember_own_addr().await?;
        info!(device = %me, addr = %PeerSpec::remembered(&addr), "daemon up");
        let (stop, _) = watch::channel(false);
        let auto_file = AutoSync::path(&data_dir, &me);
        let auto = AutoSync::load(&auto_file)?.unwrap_or(AutoSync {
            on: true,
            interval: config.sync_interval,
        });
        let inner = Arc::new(Inner {
            node,
            store: Arc::new(Mutex::new(store)),
            config: config.clone(),
            me,
            journal: Arc::new(Journal::new()),
            auto: watch::channel(auto).0,
            auto_file,
            peers: Mutex::new(HashMap::new()),
            strangers: Mutex::new(HashMap::new()),
            local: Mutex::new(LocalState::default()),
            changed: Arc::new(Notify::new()),
            stop,
            statics,
            started: Instant::now(),
            span: tracing::info_span!("daemon", device = %me.short()),
        });
        inner.clone().look(true).await?;
        let watcher = Watcher::start(&db, config.watch_interval, inner.changed.clone())
            .map_err(StoreError::from)?;
        let span = inner.span.clone();
        inner.node.listen(Arc::new(Door(inner.clone())));
        let mut tasks = vec![
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
            handle: Handle {
                inner: inner.clone(),
            },
            inner,
            tasks,
            watcher: Some(watcher),
            socket,
        })
    }

    /// A handle on this daemon, for tasks that outlive this borrow (an HTTP server).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
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
                c.close(CloseReason::ShuttingDown);
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
    let relay = config.relay_mode().map_err(|reason| DaemonError::Value {
        key: "relay".into(),
        reason,
    })?;
    Ok(NodeConfig {
        relay,
        port: (config.port != 0).then_some(config.port),
        heartbeat: Some(config.heartbeat),
        ..NodeConfig::default()
    })
}

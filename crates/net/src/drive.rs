//! Runs one [`Session`] over one QUIC stream: moves its bytes, and runs the database
//! work its [`Host`] hands out (admit a hello, keep, export, apply) on blocking
//! threads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::{RecvStream, SendStream};
use shoal_core::{DeviceId, GroupId};
use shoal_host::{Done, GroupSync, Host, HostError, Trust};
use shoal_proto::Session;
use shoal_store::{Store, StoreError};
use tracing::{debug, warn};

use crate::error::NetError;

/// How far a session has got, reported while it runs.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The peer.
    pub peer: DeviceId,
    /// The group.
    pub group: GroupId,
    /// Commits sent so far.
    pub pushed: u64,
    /// Commits received so far.
    pub pulled: u64,
    /// Bytes both ways so far.
    pub bytes: u64,
    /// Commits to move both ways in all, as both sides' holdings said at the start
    /// (0 until they have; fewer go when some are not the peer's to have).
    pub total: u64,
}

/// A database connection shared by tasks.
pub type SharedStore = Arc<Mutex<Store>>;

/// Runs `f` on the store on a blocking thread.
pub async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, NetError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| NetError::Task(e.to_string()))?
    .map_err(NetError::Store)
}

/// Milliseconds on a monotonic clock, for session timeouts.
fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// A host's task running on a blocking thread.
type Running = tokio::task::JoinHandle<Done>;

/// Drives `session` to its end, its database work done by a [`Host`] on blocking
/// threads while the stream is read.
///
/// Batches are verified and kept as they arrive, and acknowledged once kept; what
/// they bring is applied when the session ends, in one pass in key order, before
/// this side closes its stream (so a peer that waits for that knows it is applied),
/// or as the session breaks.
pub(crate) async fn drive(
    session: Session,
    store: SharedStore,
    send: &mut SendStream,
    recv: &mut RecvStream,
    start: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<GroupSync, NetError> {
    let mut host = Host::new(session, Trust::Network);
    let mut running: Option<Running> = None;
    let result = run(&mut host, &mut running, &store, send, recv, start, progress).await;
    if result.is_err() {
        // A task still running (a batch being kept) ends first; then what the session
        // kept is applied.
        if let Some(task) = running.take()
            && let Ok(done) = task.await
        {
            let _ = host.complete(done);
        }
        if let Some(task) = host.salvage() {
            match with_store(&store, move |s| Ok(task.run(s))).await {
                Ok(done) => {
                    if let Err(e) = host.complete(done) {
                        warn!(peer = %host.remote().short(), "could not apply what the broken session brought: {e}");
                    }
                }
                Err(e) => {
                    warn!(peer = %host.remote().short(), "could not apply what the broken session brought: {e}")
                }
            }
        }
    }
    result
}

/// The session itself.
async fn run(
    host: &mut Host,
    running: &mut Option<Running>,
    store: &SharedStore,
    send: &mut SendStream,
    recv: &mut RecvStream,
    start: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<GroupSync, NetError> {
    let peer = host.remote();
    let mut last_progress = Instant::now();
    let mut outgoing = Outgoing::default();
    let mut was_ready = false;
    loop {
        if !was_ready && host.is_ready() {
            was_ready = true;
            crate::fault::point("session-ready");
        }
        if running.is_none()
            && let Some(task) = host.next_task()
        {
            if task.is_apply() {
                crate::fault::point("session-before-apply");
            }
            let store = store.clone();
            *running = Some(tokio::task::spawn_blocking(move || {
                let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
                task.run(&mut guard)
            }));
        }
        outgoing.take_from(host);
        if last_progress.elapsed() > Duration::from_millis(100) {
            last_progress = Instant::now();
            let s = host.summary();
            let stats = host.stats();
            progress(Progress {
                peer,
                group: s.group,
                pushed: s.pushed,
                pulled: s.pulled,
                bytes: s.bytes_in + s.bytes_out,
                total: stats.owed_out + stats.owed_in,
            });
        }
        if host.is_finished() {
            outgoing.write_all(send, &peer).await?;
            let _ = send.finish();
            debug!(peer = %peer.short(), stats = ?host.stats(), "session finished");
            return Ok(host.summary());
        }
        let deadline = host.poll_timeout().unwrap_or(u64::MAX);
        let wait = Duration::from_millis(deadline.saturating_sub(now_ms(start)).min(3_600_000));
        // Writing and reading race each other: a side blocked on a full stream keeps
        // reading, so two large backlogs in opposite directions cannot deadlock.
        let front = outgoing.front();
        let failed = tokio::select! {
            done = finished(running), if running.is_some() => {
                *running = None;
                host.complete(done.map_err(|e| NetError::Task(e.to_string()))?).err()
            }
            n = send.write(front), if !front.is_empty() => {
                outgoing.advance(n.map_err(|e| stream_error(&peer, e))?);
                None
            }
            chunk = recv.read_chunk(256 << 10) => match chunk {
                Ok(Some(chunk)) => host.receive(&chunk, now_ms(start)).err().map(HostError::from),
                Ok(None) => host.end_of_stream().err().map(HostError::from),
                Err(e) => return Err(stream_error(&peer, e)),
            },
            () = tokio::time::sleep(wait) => host.handle_timeout(now_ms(start)).err().map(HostError::from),
        };
        if let Some(e) = failed {
            // The refusal goes out after whatever was already queued.
            outgoing.take_from(host);
            let _ = outgoing.write_all(send, &peer).await;
            let _ = send.finish();
            return Err(e.into());
        }
    }
}

/// Waits for the running task; call only while one runs.
async fn finished(running: &mut Option<Running>) -> Result<Done, tokio::task::JoinError> {
    match running.as_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Bytes the session produced that the stream has not yet taken.
#[derive(Default)]
struct Outgoing {
    queue: VecDeque<Vec<u8>>,
    /// How much of the first buffer is already written.
    written: usize,
}

impl Outgoing {
    fn take_from(&mut self, host: &mut Host) {
        while let Some(bytes) = host.poll_transmit() {
            self.queue.push_back(bytes);
        }
    }

    /// What to write next; empty when nothing is queued.
    fn front(&self) -> &[u8] {
        self.queue.front().map_or(&[], |b| &b[self.written..])
    }

    fn advance(&mut self, n: usize) {
        self.written += n;
        if self.queue.front().is_some_and(|b| self.written == b.len()) {
            self.queue.pop_front();
            self.written = 0;
        }
    }

    /// Writes everything queued, waiting as long as the stream needs.
    async fn write_all(&mut self, send: &mut SendStream, peer: &DeviceId) -> Result<(), NetError> {
        while !self.front().is_empty() {
            let n = send
                .write(self.front())
                .await
                .map_err(|e| stream_error(peer, e))?;
            self.advance(n);
        }
        Ok(())
    }
}

fn stream_error(peer: &DeviceId, e: impl std::fmt::Display) -> NetError {
    NetError::Stream {
        peer: peer.to_string(),
        reason: e.to_string(),
    }
}

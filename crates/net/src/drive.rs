//! Runs one [`Session`] over one QUIC stream: moves its bytes, and does the database
//! work its events ask for (authorize a hello, export, import) on blocking threads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::{RecvStream, SendStream};
use shoal_core::{DeviceId, SignedCommit, VersionVector};
use shoal_proto::{Event, ProtoError, Reason, Refusal, Session};
use shoal_store::{ImportReport, Store, StoreError};
use tracing::{debug, info, warn};

use crate::admit::{Admission, admit};
use crate::error::NetError;
use crate::node::{GroupSync, Progress};

/// A database connection shared by tasks.
pub type SharedStore = Arc<Mutex<Store>>;

/// How many bytes of commits to read from the database at a time.
const EXPORT_CHUNK: usize = 1 << 20;

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

/// Drives `session` to its end. The responder's hello is authorized here.
///
/// Batches are verified and kept as they arrive, and acknowledged once kept; what
/// they bring is applied when the session ends, in one pass in key order, before
/// this side closes its stream (so a peer that waits for that knows it is applied),
/// or as the session breaks. A long history (a first sync) is so written into the
/// tables once, from one end to the other, instead of once per batch at random
/// places.
pub(crate) async fn drive(
    session: Session,
    store: SharedStore,
    send: &mut SendStream,
    recv: &mut RecvStream,
    start: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<GroupSync, NetError> {
    let peer = session.remote();
    let mut kept = false;
    let result = run(session, &store, send, recv, start, progress, &mut kept).await;
    if result.is_err()
        && kept
        && let Err(e) = with_store(&store, |s| s.apply_waiting()).await
    {
        warn!(peer = %peer.short(), "could not apply what the broken session brought: {e}");
    }
    result
}

/// The session itself; `kept` says whether batches were kept and not yet applied.
async fn run(
    mut session: Session,
    store: &SharedStore,
    send: &mut SendStream,
    recv: &mut RecvStream,
    start: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
    kept: &mut bool,
) -> Result<GroupSync, NetError> {
    let peer = session.remote();
    let mut out = GroupSync {
        group: session.group(),
        ..GroupSync::default()
    };
    let mut export: Option<VersionVector> = None;
    let mut exhausted = false;
    let mut last_progress = Instant::now();
    let mut outgoing = Outgoing::default();
    let mut imports = Imports::default();
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Hello(hello) => {
                    out.group = hello.group;
                    let asked = hello.clone();
                    match with_store(store, move |s| admit(s, &asked)).await? {
                        Ok(Admission {
                            schema,
                            have,
                            heads,
                            name,
                        }) => {
                            out.name = name;
                            session.accept(schema, have, heads)?;
                            info!(peer = %peer.short(), group = %hello.group.short(), "accepted a session");
                        }
                        Err(refusal) => {
                            warn!(peer = %peer.short(), group = %hello.group.short(), %refusal, "refused a session");
                            let err = session.refuse(refusal);
                            outgoing.take_from(&mut session);
                            outgoing.write_all(send, &peer).await?;
                            let _ = send.finish();
                            return Err(err.into());
                        }
                    }
                }
                Event::Ready {
                    peer_have,
                    schema_differs,
                    ..
                } => {
                    crate::fault::point("session-ready");
                    out.schema_differs = schema_differs;
                    if schema_differs {
                        info!(peer = %peer.short(), "the peer's schema of this group's tables differs; changes to columns one side lacks are held");
                    }
                    export = Some(peer_have);
                }
                Event::Commits { batch, commits } => imports.waiting.push((batch, commits)),
                Event::Finished => {}
            }
        }
        imports.start(store);
        if let Some(have) = export.as_mut() {
            while !exhausted && session.wants_commits() {
                let group = out.group;
                let mut cursor = std::mem::take(have);
                let (chunk, cursor) = with_store(store, move |s| {
                    let chunk = s.export_chunk(&group, &mut cursor, EXPORT_CHUNK)?;
                    Ok((chunk, cursor))
                })
                .await?;
                *have = cursor;
                if chunk.is_empty() {
                    session.finish_sending()?;
                    exhausted = true;
                } else {
                    for c in &chunk {
                        session.send(c)?;
                    }
                }
            }
        }
        outgoing.take_from(&mut session);
        let stats = session.stats();
        out.pushed = stats.commits_out;
        out.pulled = stats.commits_in;
        out.bytes_out = stats.bytes_out;
        out.bytes_in = stats.bytes_in;
        if last_progress.elapsed() > Duration::from_millis(100) {
            last_progress = Instant::now();
            progress(Progress {
                peer,
                group: out.group,
                pushed: out.pushed,
                pulled: out.pulled,
                bytes: out.bytes_in + out.bytes_out,
            });
        }
        if session.is_finished() {
            if let Some(have) = export.take() {
                out.peer_has = have;
            }
            if *kept {
                crate::fault::point("session-before-apply");
                let applying = Instant::now();
                let report = with_store(store, |s| s.apply_waiting()).await?;
                debug!(peer = %peer.short(), changes = report.changes_applied, elapsed = ?applying.elapsed(), "applied what the session brought");
                out.add(&report);
                *kept = false;
            }
            outgoing.write_all(send, &peer).await?;
            let _ = send.finish();
            debug!(peer = %peer.short(), ?stats, "session finished");
            return Ok(out);
        }
        let deadline = session.poll_timeout().unwrap_or(u64::MAX);
        let wait = Duration::from_millis(deadline.saturating_sub(now_ms(start)).min(3_600_000));
        // Writing and reading race each other: a side blocked on a full stream keeps
        // reading, so two large backlogs in opposite directions cannot deadlock.
        let front = outgoing.front();
        tokio::select! {
            done = imports.finished(), if imports.running.is_some() => {
                let (batches, _) = imports.running.take().expect("an import was running");
                match done {
                    Ok(report) => {
                        *kept = true;
                        out.add(&report);
                        for batch in batches {
                            session.applied(batch)?;
                        }
                    }
                    // The peer sent what no honest member would: it hears why.
                    Err(NetError::Protocol(e)) => {
                        warn!(peer = %peer.short(), "refused a batch: {e}");
                        let err = session.refuse(Refusal {
                            reason: Reason::Protocol,
                            detail: e.to_string(),
                        });
                        outgoing.take_from(&mut session);
                        outgoing.write_all(send, &peer).await?;
                        let _ = send.finish();
                        return Err(err.into());
                    }
                    Err(e) => return Err(e),
                }
            }
            n = send.write(front), if !front.is_empty() => {
                outgoing.advance(n.map_err(|e| stream_error(&peer, e))?);
            }
            chunk = recv.read_chunk(256 << 10) => match chunk {
                Ok(Some(chunk)) => {
                    if let Err(e) = session.receive(&chunk, now_ms(start)) {
                        // The refusal goes out after whatever was already queued.
                        outgoing.take_from(&mut session);
                        let _ = outgoing.write_all(send, &peer).await;
                        let _ = send.finish();
                        return Err(e.into());
                    }
                }
                Ok(None) => {
                    session.end_of_stream()?;
                }
                Err(e) => {
                    return Err(stream_error(&peer, e));
                }
            },
            () = tokio::time::sleep(wait) => {
                session.handle_timeout(now_ms(start))?;
            }
        }
    }
}

/// Batches received and not yet kept, and the keeping under way. The stream is read
/// while a batch is verified and stored, so the batches that arrive meanwhile (at
/// most the window) are kept together: fewer, larger transactions.
#[derive(Default)]
struct Imports {
    waiting: Vec<(u64, Vec<SignedCommit>)>,
    /// The batches being imported, and the task importing them.
    running: Option<(Vec<u64>, Importing)>,
}

/// An import running on its own task.
type Importing = tokio::task::JoinHandle<Result<ImportReport, NetError>>;

impl Imports {
    /// Starts importing everything waiting, unless an import is under way.
    fn start(&mut self, store: &SharedStore) {
        if self.running.is_some() || self.waiting.is_empty() {
            return;
        }
        let batches = self.waiting.iter().map(|(b, _)| *b).collect();
        let commits = self.waiting.drain(..).flat_map(|(_, c)| c).collect();
        let store = store.clone();
        let task = tokio::spawn(async move { receive(&store, commits).await });
        self.running = Some((batches, task));
    }

    /// Waits for the running import; call only while one runs.
    async fn finished(&mut self) -> Result<ImportReport, NetError> {
        match self.running.as_mut() {
            Some((_, task)) => task.await.map_err(|e| NetError::Task(e.to_string()))?,
            None => std::future::pending().await,
        }
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
    fn take_from(&mut self, session: &mut Session) {
        while let Some(bytes) = session.poll_transmit() {
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

async fn receive(
    store: &SharedStore,
    commits: Vec<SignedCommit>,
) -> Result<ImportReport, NetError> {
    match with_store(store, move |s| s.receive(commits)).await {
        Ok(r) => Ok(r),
        // A batch that fails verification changes nothing and ends the session: the
        // peer sent something no honest member would.
        Err(NetError::Store(StoreError::Core(e))) => Err(ProtoError::Malformed {
            what: "batch",
            reason: format!("a commit failed verification: {e}"),
        }
        .into()),
        Err(e) => Err(e),
    }
}

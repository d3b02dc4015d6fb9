//! [`Host`]: one [`Session`] and the database work its events ask for, as tasks a
//! caller runs against its [`Store`] when and where it likes.
//!
//! The host owns the session. The caller moves bytes in and out of it and runs the
//! [`Task`] the host hands out, one at a time, giving the result back with
//! [`Host::complete`]. A network driver runs tasks on a blocking thread while it keeps
//! reading the stream; the simulation and `shoal merge` run them at once. What is
//! decided (admit, keep, acknowledge, export, apply) is decided here, once, for all
//! of them.

use shoal_core::{GroupId, SignedCommit, VersionVector};
use shoal_proto::{Event, Hello, Local, ProtoError, Reason, Refusal, Session, Stats};
use shoal_store::{ImportReport, Store, StoreError};
use tracing::{debug, info, warn};

use crate::admit::{Admission, Trust, admit};
use crate::error::HostError;
use crate::summary::GroupSync;

/// How many bytes of commits an export task reads at most, by default.
pub const EXPORT_CHUNK: usize = 1 << 20;

/// This device's side of `group` for a session it opens: what it holds, sealed first
/// so that fresh writes go out too.
pub fn local_side(
    store: &mut Store,
    group: GroupId,
    invite: Option<shoal_proto::InviteClaim>,
) -> Result<Local, StoreError> {
    store.seal()?;
    Ok(Local {
        device: store.device(),
        group,
        schema: shoal_proto::Fingerprint(store.schema_fingerprint(&group)?),
        have: store.version_vector(&group)?,
        heads: shoal_proto::Heads(store.head_tags(&group)?),
        invite,
    })
}

/// Database work a session needs, to be run with [`Task::run`] and handed back.
#[derive(Debug)]
pub struct Task(Work);

#[derive(Debug)]
enum Work {
    /// Decide on a hello.
    Admit(Box<Hello>, Trust),
    /// Verify and keep batches (all or nothing).
    Keep(Vec<SignedCommit>),
    /// Read the next commits the peer lacks.
    Export {
        group: GroupId,
        cursor: VersionVector,
        budget: usize,
    },
    /// Apply what was kept.
    Apply,
}

/// What a task found, for [`Host::complete`].
#[derive(Debug)]
pub struct Done(Outcome);

#[derive(Debug)]
enum Outcome {
    Admitted(Result<Result<Admission, Refusal>, StoreError>),
    Kept(Result<ImportReport, StoreError>),
    Exported(Result<(Vec<SignedCommit>, VersionVector), StoreError>),
    Applied(Result<ImportReport, StoreError>),
}

impl Task {
    /// Does the work against `store`. Nothing here touches the session.
    pub fn run(self, store: &mut Store) -> Done {
        Done(match self.0 {
            Work::Admit(hello, trust) => Outcome::Admitted(admit(store, &hello, trust)),
            Work::Keep(commits) => Outcome::Kept(store.receive(commits)),
            Work::Export {
                group,
                mut cursor,
                budget,
            } => Outcome::Exported(
                store
                    .export_chunk(&group, &mut cursor, budget)
                    .map(|chunk| (chunk, cursor)),
            ),
            Work::Apply => Outcome::Applied(store.apply_waiting()),
        })
    }

    /// Whether this task applies what the session brought (the last one a session
    /// that went well asks for).
    pub fn is_apply(&self) -> bool {
        matches!(self.0, Work::Apply)
    }
}

/// Where the export to the peer stands.
#[derive(Debug)]
enum Export {
    /// The peer's holdings are not known yet.
    Unknown,
    /// Next commits from here.
    From(VersionVector),
    /// Everything the peer lacks is sent.
    Done,
}

/// Which task is out, so that its result is matched to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Admit,
    Keep,
    Export,
    Apply,
}

/// One session and its database side.
#[derive(Debug)]
pub struct Host {
    session: Session,
    trust: Trust,
    budget: usize,
    export: Export,
    /// Hellos to decide on (at most one).
    hello: Option<Hello>,
    /// Batches received, not yet handed out to keep.
    waiting: Vec<(u64, Vec<SignedCommit>)>,
    /// The task out, and for a keep, its batches.
    out: Option<(Out, Vec<u64>)>,
    /// Batches kept and not yet applied.
    kept: bool,
    /// The apply at the session's end is done.
    ended: bool,
    /// The peer's holdings were heard.
    ready: bool,
    refusal: Option<Refusal>,
    sync: GroupSync,
}

impl Host {
    /// Hosts `session`; hellos are decided on as `trust` says.
    pub fn new(session: Session, trust: Trust) -> Host {
        let sync = GroupSync {
            group: session.group(),
            ..GroupSync::default()
        };
        Host {
            session,
            trust,
            budget: EXPORT_CHUNK,
            export: Export::Unknown,
            hello: None,
            waiting: Vec::new(),
            out: None,
            kept: false,
            ended: false,
            ready: false,
            refusal: None,
            sync,
        }
    }

    /// Reads at most `bytes` of commits per export task.
    pub fn with_export_chunk(mut self, bytes: usize) -> Host {
        self.budget = bytes.max(1);
        self
    }

    /// The next task to run, if one is due and none is out. Call it again after each
    /// [`Host::complete`] and after feeding bytes in.
    pub fn next_task(&mut self) -> Option<Task> {
        self.take_events();
        if self.out.is_some() {
            return None;
        }
        if let Some(hello) = self.hello.take() {
            self.out = Some((Out::Admit, Vec::new()));
            return Some(Task(Work::Admit(Box::new(hello), self.trust)));
        }
        if !self.waiting.is_empty() {
            // Batches that arrived while the last was kept go together: fewer,
            // larger transactions.
            let batches = self.waiting.iter().map(|(b, _)| *b).collect();
            let commits = self.waiting.drain(..).flat_map(|(_, c)| c).collect();
            self.out = Some((Out::Keep, batches));
            return Some(Task(Work::Keep(commits)));
        }
        if let Export::From(cursor) = &mut self.export
            && self.session.wants_commits()
        {
            let cursor = std::mem::take(cursor);
            self.out = Some((Out::Export, Vec::new()));
            return Some(Task(Work::Export {
                group: self.sync.group,
                cursor,
                budget: self.budget,
            }));
        }
        // A session that went well ends by applying whatever can be applied now:
        // what it kept, and what was held here for a schema the app has since caught
        // up with.
        if !self.ended && self.session.is_finished() {
            self.out = Some((Out::Apply, Vec::new()));
            return Some(Task(Work::Apply));
        }
        None
    }

    /// Takes a task's result. An error ends the session; whatever the session queued
    /// for the peer (a refusal) is still to be sent.
    pub fn complete(&mut self, done: Done) -> Result<(), HostError> {
        let (out, batches) = self.out.take().ok_or(HostError::NoTask)?;
        match (out, done.0) {
            (Out::Admit, Outcome::Admitted(result)) => match result? {
                Ok(Admission {
                    schema,
                    have,
                    heads,
                    name,
                }) => {
                    self.sync.name = name;
                    self.session.accept(schema, have, heads)?;
                    info!(peer = %self.session.remote().short(), group = %self.sync.group.short(), "accepted a session");
                }
                Err(refusal) => {
                    warn!(peer = %self.session.remote().short(), group = %self.sync.group.short(), %refusal, "refused a session");
                    self.refusal = Some(refusal.clone());
                    return Err(self.session.refuse(refusal).into());
                }
            },
            (Out::Keep, Outcome::Kept(result)) => match result {
                Ok(report) => {
                    self.kept = true;
                    self.sync.add(&report);
                    for batch in batches {
                        self.session.applied(batch)?;
                    }
                }
                // A batch that fails verification changes nothing and ends the
                // session: the peer sent what no honest member would, and hears why.
                Err(StoreError::Core(e)) => {
                    warn!(peer = %self.session.remote().short(), "refused a batch: {e}");
                    let detail = format!("a commit failed verification: {e}");
                    return Err(self
                        .session
                        .refuse(Refusal {
                            reason: Reason::Protocol,
                            detail,
                        })
                        .into());
                }
                Err(e) => return Err(e.into()),
            },
            (Out::Export, Outcome::Exported(result)) => {
                let (chunk, cursor) = result?;
                // What the peer holds once this is sent.
                self.sync.peer_has = cursor.clone();
                if chunk.is_empty() {
                    self.export = Export::Done;
                    self.session.finish_sending()?;
                } else {
                    self.export = Export::From(cursor);
                    for c in &chunk {
                        self.session.send(c)?;
                    }
                }
            }
            (Out::Apply, Outcome::Applied(result)) => {
                let report = result?;
                debug!(peer = %self.session.remote().short(), changes = report.changes_applied, "applied what the session brought");
                self.sync.add(&report);
                self.kept = false;
                self.ended = true;
            }
            (out, _) => return Err(HostError::Mismatch(out_name(out))),
        }
        Ok(())
    }

    /// Moves the session's events into the host's own queues.
    fn take_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Hello(hello) => {
                    self.sync.group = hello.group;
                    self.hello = Some(hello);
                }
                Event::Ready {
                    peer_have,
                    schema_differs,
                    ..
                } => {
                    self.ready = true;
                    self.sync.schema_differs = schema_differs;
                    if schema_differs {
                        info!(peer = %self.session.remote().short(), "the peer's schema of this group's tables differs; changes to columns one side lacks are held");
                    }
                    self.sync.peer_has = peer_have.clone();
                    self.export = Export::From(peer_have);
                }
                Event::Commits { batch, commits } => self.waiting.push((batch, commits)),
                Event::Finished => {}
            }
        }
    }

    /// After the session broke: the task that applies what it kept, if anything was
    /// kept and no task is out. Run it and hand its result back.
    pub fn salvage(&mut self) -> Option<Task> {
        if self.kept && self.out.is_none() {
            self.out = Some((Out::Apply, Vec::new()));
            return Some(Task(Work::Apply));
        }
        None
    }

    /// Whether a task is out.
    pub fn is_busy(&self) -> bool {
        self.out.is_some()
    }

    /// Whether the session went well and everything it brought is applied: the
    /// stream can be finished once what is queued is written.
    pub fn is_finished(&mut self) -> bool {
        self.take_events();
        self.session.is_finished() && self.ended && self.out.is_none()
    }

    /// Whether the session has ended, well or not.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Whether the peer's holdings are known (the session is streaming).
    pub fn is_ready(&mut self) -> bool {
        self.take_events();
        self.ready
    }

    /// Bytes from the peer.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) -> Result<(), ProtoError> {
        self.session.receive(bytes, now_ms)
    }

    /// The peer closed its stream.
    pub fn end_of_stream(&mut self) -> Result<(), ProtoError> {
        self.session.end_of_stream()
    }

    /// Bytes for the peer, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.session.poll_transmit()
    }

    /// When [`Host::handle_timeout`] is due, in the session's milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.session.poll_timeout()
    }

    /// The session's clock reached `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), ProtoError> {
        self.session.handle_timeout(now_ms)
    }

    /// The peer's device.
    pub fn remote(&self) -> shoal_core::DeviceId {
        self.session.remote()
    }

    /// Counters of the session.
    pub fn stats(&self) -> Stats {
        self.session.stats()
    }

    /// How a hello was refused here, if it was.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// What the session did so far.
    pub fn summary(&self) -> GroupSync {
        let stats = self.session.stats();
        let mut sync = self.sync.clone();
        sync.pushed = stats.commits_out;
        sync.pulled = stats.commits_in;
        sync.bytes_out = stats.bytes_out;
        sync.bytes_in = stats.bytes_in;
        sync
    }
}

fn out_name(out: Out) -> &'static str {
    match out {
        Out::Admit => "admit",
        Out::Keep => "keep",
        Out::Export => "export",
        Out::Apply => "apply",
    }
}

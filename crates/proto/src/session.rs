//! The session state machine.
//!
//! A connection between two devices carries a bidirectional stream for each group both
//! are members of, one session each. The initiator's hello holds its version vector, so
//! the responder starts streaming at once with its welcome: a reconnect with nothing to
//! send is one round trip and a few hundred bytes. Hello and welcome also carry the
//! first eight bytes of each author's head hash (`Heads`): where both sides hold one seq
//! of an author with other heads, each sends its own commit at that seq and the other
//! records the fork, so two histories of one device never pass unseen because their
//! vectors agree.
//!
//! The responder authorizes the initiator at hello, on its own view of the group: a
//! device that is not a member (or was revoked) is refused with a reason before anything
//! is exchanged. Membership is checked again for every commit on import, so a relayed
//! commit from a revoked or read-only author is refused wherever it arrives.
//!
//! Each side sends what the other lacks in per-author order, in batches closed at 1 MiB
//! (uncompressed) with at most eight unacknowledged; a receiver refuses a peer past
//! [`MAX_WINDOW`], whatever it configured. The host stores a batch (verified, kept
//! waiting) before it is acknowledged, so a crash loses nothing acknowledged, and
//! applies what the session kept when it ends, in one transaction. Kept commits are not
//! in the version vector until applied, so a session that breaks early may be sent some
//! again: they are recognised as duplicates. The session ends when both sides have sent
//! `Done` and every batch is acknowledged; the initiator then waits for the responder to
//! end its side, so the last acknowledgement is never cut off and, when a sync returns,
//! the responder has applied what it was sent.

use std::collections::VecDeque;

use shoal_core::commit::SignedCommit;
use shoal_core::identity::{DeviceId, GroupId};
use shoal_core::vv::VersionVector;

use crate::codec::{
    check_heads, check_vector, decode, decode_batch, encode, encode_batch, leading_version,
    pack_one,
};
use crate::error::ProtoError;
use crate::frame::{Decoder, Kind, encode_frame};
use crate::message::{
    Ack, Done, Fingerprint, Heads, Hello, InviteClaim, MAX_DETAIL_BYTES, MAX_WINDOW, Reason,
    Refusal, TARGET_BATCH_BYTES, VERSION, Welcome,
};

/// Which end of the stream this session is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum End {
    /// Opened the stream and speaks first.
    Initiator,
    /// Accepted it.
    Responder,
}

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Batches that may be sent and not yet acknowledged (at most [`MAX_WINDOW`]).
    pub window: usize,
    /// How long the peer may stay silent while the session waits on it.
    pub idle_timeout_ms: u64,
    /// Uncompressed bytes after which a batch is closed.
    pub target_batch_bytes: usize,
    /// Whether the local group may be carried: only between two files on one
    /// machine (`shoal merge`), never over the network.
    pub carries_local_group: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 8,
            idle_timeout_ms: 60_000,
            target_batch_bytes: TARGET_BATCH_BYTES,
            carries_local_group: false,
        }
    }
}

/// What this device brings to a session.
#[derive(Clone, Debug)]
pub struct Local {
    /// This device.
    pub device: DeviceId,
    /// The group (for a responder, filled in once the hello names it).
    pub group: GroupId,
    /// This device's schema fingerprint of the group's tables.
    pub schema: Fingerprint,
    /// What this device holds of the group's log.
    pub have: VersionVector,
    /// The head of each author's chain it holds, in the order of `have`.
    pub heads: Heads,
    /// An invite to redeem (initiator only).
    pub invite: Option<InviteClaim>,
}

/// What the caller must act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// (Responder) A peer asks to sync a group. Answer with [`Session::accept`] or
    /// [`Session::refuse`]. The hello's device is the authenticated one.
    Hello(Hello),
    /// The peer's holdings are known: stream what it lacks with [`Session::send`],
    /// then [`Session::finish_sending`].
    Ready {
        /// The peer's device.
        peer: DeviceId,
        /// What the peer holds.
        peer_have: VersionVector,
        /// Whether the peer's schema of the group's tables differs from ours.
        schema_differs: bool,
    },
    /// Commits to import, all or nothing; then call [`Session::applied`].
    Commits {
        /// The batch's number.
        batch: u64,
        /// Its commits, in the order sent (per-author order).
        commits: Vec<SignedCommit>,
    },
    /// Both sides have sent and acknowledged everything: the session is complete.
    Finished,
}

/// Counters for a session.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed to [`Session::receive`].
    pub bytes_in: u64,
    /// Bytes taken from [`Session::poll_transmit`].
    pub bytes_out: u64,
    /// Commits received.
    pub commits_in: u64,
    /// Commits sent.
    pub commits_out: u64,
    /// Batches received.
    pub batches_in: u64,
    /// Batches sent.
    pub batches_out: u64,
    /// Commits the peer lacks, as both sides' holdings said at the start: what this
    /// side sends if the peer may have them all.
    pub owed_out: u64,
    /// Commits this side lacks, as both sides' holdings said at the start.
    pub owed_in: u64,
}

/// How many commits `from` holds past what `to` holds, author by author.
fn owed(from: &VersionVector, to: &VersionVector) -> u64 {
    from.0
        .iter()
        .map(|(author, seq)| seq.0.saturating_sub(to.get(author).0))
        .sum()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    AwaitHello,
    Deciding,
    AwaitWelcome,
    Streaming,
    Finished,
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::AwaitHello => "waiting for a hello",
            State::Deciding => "deciding on the hello",
            State::AwaitWelcome => "waiting for a welcome",
            State::Streaming => "streaming",
            State::Finished => "finished",
            State::Failed => "failed",
        }
    }
}

/// One side of one group's reconciliation over one stream.
#[derive(Debug)]
pub struct Session {
    side: End,
    config: Config,
    state: State,
    local: Local,
    /// The device the transport authenticated on the other end.
    remote: DeviceId,
    decoder: Decoder,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    last_heard_ms: u64,
    // Sending.
    pending: Vec<u8>,
    pending_count: u32,
    sent_batches: u64,
    acked_by_peer: u64,
    sent_done: bool,
    // Receiving.
    received_batches: u64,
    applied_batches: u64,
    peer_done: Option<u64>,
    /// (Responder) The hello being decided on.
    hello: Option<Hello>,
    stats: Stats,
}

impl Session {
    /// Opens a session as the side that connected to `remote`; the hello is queued.
    pub fn initiator(config: Config, local: Local, remote: DeviceId, now_ms: u64) -> Session {
        let mut s = Session::new(End::Initiator, config, local, remote, now_ms);
        let hello = Hello {
            version: VERSION,
            group: s.local.group,
            device: s.local.device,
            schema: s.local.schema,
            have: s.local.have.clone(),
            heads: s.local.heads.clone(),
            invite: s.local.invite.clone(),
        };
        s.queue(Kind::Hello, &encode(&hello));
        s.state = State::AwaitWelcome;
        s
    }

    /// Opens a session as the side that accepted a stream from `remote`.
    pub fn responder(config: Config, device: DeviceId, remote: DeviceId, now_ms: u64) -> Session {
        let local = Local {
            device,
            group: GroupId::DEFAULT,
            schema: Fingerprint::default(),
            have: VersionVector::default(),
            heads: Heads::default(),
            invite: None,
        };
        Session::new(End::Responder, config, local, remote, now_ms)
    }

    fn new(side: End, mut config: Config, local: Local, remote: DeviceId, now_ms: u64) -> Session {
        config.window = config.window.clamp(1, MAX_WINDOW);
        Session {
            side,
            config,
            state: State::AwaitHello,
            local,
            remote,
            decoder: Decoder::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            last_heard_ms: now_ms,
            pending: Vec::new(),
            pending_count: 0,
            sent_batches: 0,
            acked_by_peer: 0,
            sent_done: false,
            received_batches: 0,
            applied_batches: 0,
            peer_done: None,
            hello: None,
            stats: Stats::default(),
        }
    }

    /// Which end this is.
    pub fn side(&self) -> End {
        self.side
    }

    /// The group, once known.
    pub fn group(&self) -> GroupId {
        self.local.group
    }

    /// The device on the other end.
    pub fn remote(&self) -> DeviceId {
        self.remote
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the session completed.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Whether the session is over, completed or not.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Finished | State::Failed)
    }

    /// Feeds bytes read from the stream. An error ends the session; a refusal telling
    /// the peer why is queued first, so flush [`Session::poll_transmit`] before closing.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) -> Result<(), ProtoError> {
        if self.state == State::Failed {
            return Err(ProtoError::Misuse("receive after failure"));
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_heard_ms = now_ms;
        self.decoder.push(bytes);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            if let Err(e) = self.handle(frame.0, &frame.1) {
                return Err(self.fail(e));
            }
            if self.state == State::Failed {
                return Ok(());
            }
        }
    }

    /// Tells the session the stream has ended. Ending in the middle of a frame, or
    /// before the session finished, is an error.
    pub fn end_of_stream(&mut self) -> Result<(), ProtoError> {
        self.decoder.finish()?;
        match self.state {
            State::Finished | State::Failed => Ok(()),
            s => Err(ProtoError::Unexpected {
                what: "the end of the stream",
                state: s.name(),
            }),
        }
    }

    fn fail(&mut self, e: ProtoError) -> ProtoError {
        let reason = match &e {
            ProtoError::Version { .. } => Some(Reason::Version { supported: VERSION }),
            ProtoError::Refused(_) | ProtoError::RefusedPeer(_) | ProtoError::Timeout(_) => None,
            _ => Some(Reason::Protocol),
        };
        if let Some(reason) = reason {
            self.push_refusal(Refusal {
                reason,
                detail: e.to_string(),
            });
        }
        self.state = State::Failed;
        e
    }

    fn push_refusal(&mut self, mut refusal: Refusal) {
        truncate_detail(&mut refusal.detail);
        self.queue(Kind::Refuse, &encode(&refusal));
    }

    fn unexpected(&self, what: &'static str) -> ProtoError {
        ProtoError::Unexpected {
            what,
            state: self.state.name(),
        }
    }

    fn handle(&mut self, kind: Kind, body: &[u8]) -> Result<(), ProtoError> {
        match kind {
            Kind::Hello => {
                if self.state != State::AwaitHello {
                    return Err(self.unexpected("a hello"));
                }
                let theirs = leading_version("hello", body)?;
                if theirs != VERSION {
                    return Err(ProtoError::Version {
                        ours: VERSION,
                        theirs,
                    });
                }
                let hello: Hello = decode("hello", body)?;
                check_vector("hello", &hello.have)?;
                check_heads("hello", &hello.have, &hello.heads)?;
                if hello.device != self.remote {
                    return Err(ProtoError::Impostor {
                        claimed: hello.device.to_string(),
                        actual: self.remote.to_string(),
                    });
                }
                if hello.group == GroupId::DEFAULT && !self.config.carries_local_group {
                    return Err(ProtoError::Malformed {
                        what: "hello",
                        reason: "the local group never leaves a device".into(),
                    });
                }
                self.local.group = hello.group;
                self.state = State::Deciding;
                self.hello = Some(hello.clone());
                self.events.push_back(Event::Hello(hello));
            }
            Kind::Welcome => {
                if self.state != State::AwaitWelcome {
                    return Err(self.unexpected("a welcome"));
                }
                let theirs = leading_version("welcome", body)?;
                if theirs != VERSION {
                    return Err(ProtoError::Version {
                        ours: VERSION,
                        theirs,
                    });
                }
                let welcome: Welcome = decode("welcome", body)?;
                check_vector("welcome", &welcome.have)?;
                check_heads("welcome", &welcome.have, &welcome.heads)?;
                if welcome.device != self.remote {
                    return Err(ProtoError::Impostor {
                        claimed: welcome.device.to_string(),
                        actual: self.remote.to_string(),
                    });
                }
                self.state = State::Streaming;
                let peer_have = Heads::to_send(
                    &self.local.have,
                    &self.local.heads,
                    &welcome.have,
                    &welcome.heads,
                );
                self.stats.owed_out = owed(&self.local.have, &peer_have);
                self.stats.owed_in = owed(&welcome.have, &self.local.have);
                self.events.push_back(Event::Ready {
                    peer: self.remote,
                    peer_have,
                    schema_differs: welcome.schema != self.local.schema,
                });
            }
            Kind::Refuse => {
                let refusal: Refusal = decode("refusal", body)?;
                self.state = State::Failed;
                return Err(ProtoError::Refused(refusal));
            }
            Kind::Batch => {
                if self.state != State::Streaming || self.peer_done.is_some() {
                    return Err(self.unexpected("a batch"));
                }
                if (self.received_batches - self.applied_batches) as usize >= MAX_WINDOW {
                    return Err(ProtoError::Malformed {
                        what: "batch",
                        reason: format!(
                            "more than {MAX_WINDOW} batches sent without waiting for acknowledgement"
                        ),
                    });
                }
                let (id, commits) = decode_batch(body)?;
                if id != self.received_batches {
                    return Err(ProtoError::Malformed {
                        what: "batch",
                        reason: format!("numbered {id}, expected {}", self.received_batches),
                    });
                }
                self.received_batches += 1;
                self.stats.batches_in += 1;
                self.stats.commits_in += commits.len() as u64;
                self.events.push_back(Event::Commits { batch: id, commits });
            }
            Kind::Ack => {
                let ack: Ack = decode("ack", body)?;
                if self.state != State::Streaming && self.state != State::Finished {
                    return Err(self.unexpected("an ack"));
                }
                if ack.batch != self.acked_by_peer || ack.batch >= self.sent_batches {
                    return Err(ProtoError::Malformed {
                        what: "ack",
                        reason: format!(
                            "for batch {}, expected {} of {} sent",
                            ack.batch, self.acked_by_peer, self.sent_batches
                        ),
                    });
                }
                self.acked_by_peer += 1;
                self.check_finished();
            }
            Kind::Done => {
                let done: Done = decode("done", body)?;
                if self.state != State::Streaming || self.peer_done.is_some() {
                    return Err(self.unexpected("done"));
                }
                if done.batches != self.received_batches {
                    return Err(ProtoError::Malformed {
                        what: "done",
                        reason: format!(
                            "says {} batches, {} arrived",
                            done.batches, self.received_batches
                        ),
                    });
                }
                self.peer_done = Some(done.batches);
                self.check_finished();
            }
        }
        Ok(())
    }

    /// (Responder) Accepts the hello with this device's schema fingerprint and
    /// holdings of the group (with the head of each author's chain, in the order of
    /// `have`); [`Event::Ready`] follows.
    pub fn accept(
        &mut self,
        schema: Fingerprint,
        have: VersionVector,
        heads: Heads,
    ) -> Result<(), ProtoError> {
        let (State::Deciding, Some(hello)) = (self.state, self.hello.take()) else {
            return Err(ProtoError::Misuse("accept without a hello"));
        };
        if heads.0.len() != have.0.len() {
            return Err(ProtoError::Misuse("one head tag per author of the vector"));
        }
        let peer_have = Heads::to_send(&have, &heads, &hello.have, &hello.heads);
        self.stats.owed_out = owed(&have, &peer_have);
        self.stats.owed_in = owed(&hello.have, &have);
        self.events.push_back(Event::Ready {
            peer: self.remote,
            peer_have,
            schema_differs: hello.schema != schema,
        });
        self.local.schema = schema;
        self.local.have = have;
        self.local.heads = heads;
        let welcome = Welcome {
            version: VERSION,
            device: self.local.device,
            schema,
            have: self.local.have.clone(),
            heads: self.local.heads.clone(),
        };
        self.queue(Kind::Welcome, &encode(&welcome));
        self.state = State::Streaming;
        Ok(())
    }

    /// Refuses the hello (responder), or ends the session for a reason the caller
    /// found (a batch whose commits fail verification); the refusal is queued and the
    /// session is over.
    pub fn refuse(&mut self, refusal: Refusal) -> ProtoError {
        self.push_refusal(refusal.clone());
        self.state = State::Failed;
        ProtoError::RefusedPeer(refusal)
    }

    /// Whether the session wants more commits now (streaming, not done, window open).
    pub fn wants_commits(&self) -> bool {
        self.state == State::Streaming
            && !self.sent_done
            && ((self.sent_batches - self.acked_by_peer) as usize) < self.config.window
    }

    /// Queues one commit for the peer. Commits must come in per-author order.
    pub fn send(&mut self, commit: &SignedCommit) -> Result<(), ProtoError> {
        if self.state != State::Streaming || self.sent_done {
            return Err(ProtoError::Misuse("send outside streaming"));
        }
        let before = self.pending.len();
        pack_one(&mut self.pending, commit);
        if self.pending.len() > crate::message::MAX_BATCH_BYTES {
            // Close the batch before this commit, then start the next with it.
            let last = self.pending.split_off(before);
            self.close_batch();
            self.pending = last;
        }
        self.pending_count += 1;
        self.stats.commits_out += 1;
        if self.pending.len() >= self.config.target_batch_bytes {
            self.close_batch();
        }
        Ok(())
    }

    fn close_batch(&mut self) {
        if self.pending_count == 0 {
            return;
        }
        let body = encode_batch(self.sent_batches, self.pending_count, &self.pending);
        self.queue(Kind::Batch, &body);
        self.pending.clear();
        self.pending_count = 0;
        self.sent_batches += 1;
        self.stats.batches_out += 1;
    }

    /// Says that everything the peer lacks has been sent.
    pub fn finish_sending(&mut self) -> Result<(), ProtoError> {
        if self.state != State::Streaming || self.sent_done {
            return Err(ProtoError::Misuse("finish_sending outside streaming"));
        }
        self.close_batch();
        let done = Done {
            batches: self.sent_batches,
        };
        self.queue(Kind::Done, &encode(&done));
        self.sent_done = true;
        self.check_finished();
        Ok(())
    }

    /// Says that batch `batch` was imported; the acknowledgement is queued.
    pub fn applied(&mut self, batch: u64) -> Result<(), ProtoError> {
        if batch != self.applied_batches || batch >= self.received_batches {
            return Err(ProtoError::Misuse("applied out of order"));
        }
        self.applied_batches += 1;
        self.queue(Kind::Ack, &encode(&Ack { batch }));
        self.check_finished();
        Ok(())
    }

    fn check_finished(&mut self) {
        if self.state == State::Streaming
            && self.sent_done
            && self.acked_by_peer == self.sent_batches
            && self.peer_done == Some(self.received_batches)
            && self.applied_batches == self.received_batches
        {
            self.state = State::Finished;
            self.events.push_back(Event::Finished);
        }
    }

    /// The next bytes to write to the stream.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let bytes = self.outbox.pop_front()?;
        self.stats.bytes_out += bytes.len() as u64;
        Some(bytes)
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called, if the session is
    /// waiting on the peer.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::AwaitHello | State::AwaitWelcome | State::Streaming => {
                Some(self.last_heard_ms + self.config.idle_timeout_ms)
            }
            State::Deciding | State::Finished | State::Failed => None,
        }
    }

    /// Lets time pass: a peer silent past the idle timeout ends the session.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), ProtoError> {
        match self.poll_timeout() {
            Some(at) if now_ms >= at => {
                self.state = State::Failed;
                Err(ProtoError::Timeout(now_ms - self.last_heard_ms))
            }
            _ => Ok(()),
        }
    }

    fn queue(&mut self, kind: Kind, body: &[u8]) {
        self.outbox.push_back(encode_frame(kind, body));
    }
}

fn truncate_detail(s: &mut String) {
    if s.len() > MAX_DETAIL_BYTES {
        let mut cut = MAX_DETAIL_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

//! Two sessions wired back to back, without any network: whole exchanges, flow
//! control, and every malformed input the protocol must refuse.

use proptest::prelude::*;
use shoal_core::commit::{Seq, SignedCommit};
use shoal_core::identity::{DeviceId, GroupId};
use shoal_core::vv::VersionVector;
use shoal_proto::{
    Config, Event, Fingerprint, HEADER_LEN, Heads, Hello, Kind, Local, MAX_WINDOW, ProtoError,
    Reason, Refusal, Session, VERSION, encode_frame, pack_commits,
};

const A: DeviceId = DeviceId([1; 32]);
const B: DeviceId = DeviceId([2; 32]);
const G: GroupId = GroupId([7; 32]);

fn commit(n: usize, size: usize) -> SignedCommit {
    SignedCommit {
        body: (0..size).map(|i| (i * 31 + n) as u8).collect(),
        signature: [n as u8; 64],
    }
}

fn vector(authors: u8) -> VersionVector {
    let mut vv = VersionVector::default();
    for a in 0..authors {
        vv.set(DeviceId([a; 32]), Seq(1000 + a as u64));
    }
    vv
}

/// One side: its session, the commits it will send, and those it received.
struct Side {
    session: Session,
    to_send: Vec<SignedCommit>,
    sent: usize,
    received: Vec<SignedCommit>,
    ready: bool,
    events: Vec<&'static str>,
}

impl Side {
    fn new(session: Session, to_send: Vec<SignedCommit>) -> Side {
        Side {
            session,
            to_send,
            sent: 0,
            received: Vec::new(),
            ready: false,
            events: Vec::new(),
        }
    }

    /// Handles events and feeds commits while the window allows.
    fn act(&mut self) {
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::Hello(_) => {
                    self.events.push("hello");
                    self.session
                        .accept(
                            Fingerprint([1; 32]),
                            VersionVector::default(),
                            Heads::default(),
                        )
                        .expect("accept");
                }
                Event::Ready { .. } => {
                    self.events.push("ready");
                    self.ready = true;
                }
                Event::Commits { batch, commits } => {
                    self.received.extend(commits);
                    self.session.applied(batch).expect("applied");
                }
                Event::Finished => self.events.push("finished"),
            }
        }
        if self.ready {
            while self.session.wants_commits() {
                if self.sent == self.to_send.len() {
                    self.session.finish_sending().expect("finish");
                    break;
                }
                self.session.send(&self.to_send[self.sent]).expect("send");
                self.sent += 1;
            }
        }
    }
}

/// Runs both sessions until neither has anything to say; returns the round trips
/// (times the initiator's side had to wait for the responder's answer).
fn pump(a: &mut Side, b: &mut Side, chunk: usize) -> usize {
    let mut trips = 0;
    for _ in 0..10_000 {
        a.act();
        let mut moved = false;
        while let Some(bytes) = a.session.poll_transmit() {
            for piece in bytes.chunks(chunk.max(1)) {
                b.session.receive(piece, 0).expect("b receives");
            }
            moved = true;
        }
        b.act();
        let mut answered = false;
        while let Some(bytes) = b.session.poll_transmit() {
            for piece in bytes.chunks(chunk.max(1)) {
                a.session.receive(piece, 0).expect("a receives");
            }
            answered = true;
        }
        if answered {
            trips += 1;
        }
        if !moved && !answered {
            break;
        }
    }
    trips
}

fn pair(config: Config, a_sends: Vec<SignedCommit>, b_sends: Vec<SignedCommit>) -> (Side, Side) {
    let local = Local {
        device: A,
        group: G,
        schema: Fingerprint([1; 32]),
        have: vector(10),
        heads: Heads(vec![[0; 8]; vector(10).0.len()]),
        invite: None,
    };
    let a = Session::initiator(config, local, B, 0);
    let b = Session::responder(config, B, A, 0);
    (Side::new(a, a_sends), Side::new(b, b_sends))
}

#[test]
fn both_sides_stream_what_the_other_lacks_and_finish() {
    let a_sends: Vec<_> = (0..500).map(|n| commit(n, 3000)).collect();
    let b_sends: Vec<_> = (0..200).map(|n| commit(n + 7, 5000)).collect();
    let config = Config {
        target_batch_bytes: 64 << 10,
        ..Config::default()
    };
    let (mut a, mut b) = pair(config, a_sends.clone(), b_sends.clone());
    pump(&mut a, &mut b, 1500);
    assert_eq!(b.received, a_sends);
    assert_eq!(a.received, b_sends);
    assert!(a.session.is_finished() && b.session.is_finished());
    assert_eq!(a.events, ["ready", "finished"]);
    assert_eq!(b.events, ["hello", "ready", "finished"]);
    let (sa, sb) = (a.session.stats(), b.session.stats());
    assert_eq!((sa.commits_out, sb.commits_in), (500, 500));
    // Both knew from the start what A's holdings (ten authors at seqs 1000 to 1009)
    // owe an empty B.
    let owed = (0..10).map(|a| 1000 + a).sum::<u64>();
    assert_eq!((sa.owed_out, sa.owed_in), (owed, 0));
    assert_eq!((sb.owed_out, sb.owed_in), (0, owed));
    assert!(sa.batches_out >= 20, "batches are bounded: {sa:?}");
    assert_eq!(sa.bytes_out, sb.bytes_in);
    // The bodies repeat a pattern, so compression must have paid off.
    assert!(sa.bytes_out < 500 * 3000 / 2, "compressed: {sa:?}");
}

#[test]
fn a_reconnect_in_sync_is_one_round_trip_under_a_kilobyte_with_ten_authors() {
    let (mut a, mut b) = pair(Config::default(), vec![], vec![]);
    let trips = pump(&mut a, &mut b, usize::MAX);
    assert!(a.session.is_finished() && b.session.is_finished());
    // The initiator's hello is answered by welcome and done together; the
    // initiator's own done needs no answer.
    assert_eq!(trips, 1);
    let s = a.session.stats();
    assert!(
        s.bytes_in + s.bytes_out <= 1024,
        "{} bytes",
        s.bytes_in + s.bytes_out
    );
}

#[test]
fn no_more_batches_are_in_flight_than_the_window() {
    let config = Config {
        window: 2,
        target_batch_bytes: 1000,
        ..Config::default()
    };
    let commits: Vec<_> = (0..50).map(|n| commit(n, 900)).collect();
    let (mut a, mut b) = pair(config, commits.clone(), vec![]);
    // Let a send without ever delivering acks: it must stop at the window.
    a.act();
    while let Some(bytes) = a.session.poll_transmit() {
        b.session.receive(&bytes, 0).expect("hello");
    }
    b.act();
    while let Some(bytes) = b.session.poll_transmit() {
        a.session.receive(&bytes, 0).expect("welcome");
    }
    a.act();
    assert_eq!(a.session.stats().batches_out, 2);
    assert!(!a.session.wants_commits());
    // Delivering everything lets the rest through.
    pump(&mut a, &mut b, usize::MAX);
    assert!(b.received == commits, "everything arrives");
}

fn responder() -> Session {
    Session::responder(Config::default(), B, A, 0)
}

fn hello_bytes(version: u16, device: DeviceId) -> Vec<u8> {
    let hello = Hello {
        version,
        group: G,
        device,
        schema: Fingerprint::default(),
        have: VersionVector::default(),
        heads: Heads::default(),
        invite: None,
    };
    encode_frame(Kind::Hello, &postcard::to_stdvec(&hello).expect("encode"))
}

/// The refusal a failing session queued for its peer.
fn refusal_sent(s: &mut Session) -> Refusal {
    let bytes = s.poll_transmit().expect("a refusal is queued");
    assert_eq!(bytes[0], Kind::Refuse as u8);
    postcard::from_bytes(&bytes[HEADER_LEN..]).expect("refusal decodes")
}

#[test]
fn another_protocol_version_is_refused_with_ours() {
    let mut s = responder();
    let err = s
        .receive(&hello_bytes(VERSION + 1, A), 0)
        .expect_err("refused");
    assert_eq!(
        err,
        ProtoError::Version {
            ours: VERSION,
            theirs: VERSION + 1
        }
    );
    assert!(err.to_string().contains("update Shoal"));
    assert_eq!(
        refusal_sent(&mut s).reason,
        Reason::Version { supported: VERSION }
    );
    assert!(s.poll_event().is_none());
}

#[test]
fn a_hello_naming_another_device_is_an_impostor() {
    let mut s = responder();
    let err = s.receive(&hello_bytes(VERSION, B), 0).expect_err("refused");
    assert!(matches!(err, ProtoError::Impostor { .. }), "{err}");
    assert_eq!(refusal_sent(&mut s).reason, Reason::Protocol);
}

#[test]
fn an_oversized_frame_is_refused() {
    let mut s = responder();
    let err = s
        .receive(&[Kind::Hello as u8, 0x7f, 0xff, 0xff, 0xff], 0)
        .expect_err("refused");
    assert!(
        matches!(err, ProtoError::OversizedFrame { kind: "hello", .. }),
        "{err}"
    );
}

#[test]
fn a_truncated_message_is_refused() {
    let mut s = responder();
    let full = hello_bytes(VERSION, A);
    // A frame whose announced length cuts the hello short.
    let body = &full[HEADER_LEN..full.len() - 10];
    let err = s
        .receive(&encode_frame(Kind::Hello, body), 0)
        .expect_err("refused");
    assert!(
        matches!(&err, ProtoError::Malformed { what: "hello", reason } if reason == "truncated"),
        "{err}"
    );
    // And a stream that stops inside a frame.
    let mut s = responder();
    s.receive(&full[..full.len() - 1], 0)
        .expect("partial frame waits");
    assert!(matches!(
        s.end_of_stream(),
        Err(ProtoError::Truncated { .. })
    ));
}

#[test]
fn an_unknown_message_type_is_refused() {
    let mut s = responder();
    let err = s.receive(&[42, 0, 0, 0, 0], 0).expect_err("refused");
    assert_eq!(err, ProtoError::UnknownMessage(42));
    assert_eq!(refusal_sent(&mut s).reason, Reason::Protocol);
}

#[test]
fn a_batch_before_the_welcome_is_refused() {
    let local = Local {
        device: A,
        group: G,
        schema: Fingerprint::default(),
        have: VersionVector::default(),
        heads: Heads::default(),
        invite: None,
    };
    let mut s = Session::initiator(Config::default(), local, B, 0);
    let raw = pack_commits(&[commit(1, 10)]);
    let err = s
        .receive(&batch_frame(0, 1, raw.len() as u32, &raw), 0)
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ProtoError::Unexpected {
                what: "a batch",
                ..
            }
        ),
        "{err}"
    );
}

fn batch_frame(id: u64, count: u32, raw_len: u32, raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    body.extend_from_slice(&raw_len.to_be_bytes());
    body.extend_from_slice(&zstd::bulk::compress(raw, 3).expect("compress"));
    encode_frame(Kind::Batch, &body)
}

/// A responder that has accepted, ready for batches.
fn streaming() -> Session {
    let mut s = responder();
    s.receive(&hello_bytes(VERSION, A), 0).expect("hello");
    assert!(matches!(s.poll_event(), Some(Event::Hello(_))));
    s.accept(
        Fingerprint::default(),
        VersionVector::default(),
        Heads::default(),
    )
    .expect("accept");
    assert!(matches!(s.poll_event(), Some(Event::Ready { .. })));
    s
}

#[test]
fn a_decompression_bomb_is_refused() {
    // 64 MiB of zeroes compress to a few kilobytes; the batch claims 1 KiB.
    let zeroes = vec![0u8; 64 << 20];
    let mut s = streaming();
    let err = s
        .receive(&batch_frame(0, 1, 1024, &zeroes), 0)
        .expect_err("refused");
    assert!(matches!(err, ProtoError::Bomb { limit: 1024 }), "{err}");
    // And one that announces more than any batch may hold.
    let mut s = streaming();
    let err = s
        .receive(&batch_frame(0, 1, u32::MAX, &[0; 10]), 0)
        .expect_err("refused");
    assert!(matches!(err, ProtoError::Bomb { .. }), "{err}");
    assert!(s.poll_event().is_none(), "no event for a refused batch");
}

#[test]
fn a_batch_that_lies_about_its_contents_is_refused() {
    let raw = pack_commits(&[commit(1, 100), commit(2, 100)]);
    let mut s = streaming();
    let err = s
        .receive(&batch_frame(0, 3, raw.len() as u32, &raw), 0)
        .expect_err("refused");
    assert!(err.to_string().contains("announced 3 commits"), "{err}");
    let mut s = streaming();
    let err = s
        .receive(&batch_frame(5, 2, raw.len() as u32, &raw), 0)
        .expect_err("refused");
    assert!(err.to_string().contains("numbered 5"), "{err}");
}

#[test]
fn a_peer_that_ignores_the_window_is_refused() {
    let raw = pack_commits(&[commit(1, 100)]);
    let mut s = streaming();
    for id in 0..MAX_WINDOW as u64 {
        s.receive(&batch_frame(id, 1, raw.len() as u32, &raw), 0)
            .expect("within the window");
    }
    let err = s
        .receive(
            &batch_frame(MAX_WINDOW as u64, 1, raw.len() as u32, &raw),
            0,
        )
        .expect_err("refused");
    assert!(err.to_string().contains("without waiting"), "{err}");
    // Acknowledging one opens room for exactly one more.
    let mut s = streaming();
    for id in 0..MAX_WINDOW as u64 {
        s.receive(&batch_frame(id, 1, raw.len() as u32, &raw), 0)
            .expect("within the window");
    }
    s.applied(0).expect("applied");
    s.receive(
        &batch_frame(MAX_WINDOW as u64, 1, raw.len() as u32, &raw),
        0,
    )
    .expect("room for one more");
}

#[test]
fn a_refusal_reaches_the_initiator_as_an_error() {
    let (mut a, mut b) = pair(Config::default(), vec![], vec![]);
    while let Some(bytes) = a.session.poll_transmit() {
        b.session.receive(&bytes, 0).expect("hello");
    }
    assert!(matches!(b.session.poll_event(), Some(Event::Hello(_))));
    let refused = Refusal {
        reason: Reason::NotMember,
        detail: "ask an admin for an invite".into(),
    };
    let err = b.session.refuse(refused.clone());
    assert_eq!(err, ProtoError::RefusedPeer(refused.clone()));
    let bytes = b.session.poll_transmit().expect("refusal");
    assert_eq!(
        a.session.receive(&bytes, 0),
        Err(ProtoError::Refused(refused))
    );
    assert!(a.session.is_closed() && !a.session.is_finished());
}

#[test]
fn a_silent_peer_times_out() {
    let mut s = responder();
    let at = s.poll_timeout().expect("waiting on the hello");
    assert_eq!(s.handle_timeout(at - 1), Ok(()));
    assert!(matches!(s.handle_timeout(at), Err(ProtoError::Timeout(_))));
    assert!(s.is_closed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// However the streams are cut and whatever the sizes, everything arrives once,
    /// in order, and both sides finish.
    #[test]
    fn any_split_and_sizes_deliver_everything(
        sizes_a in prop::collection::vec(1usize..20_000, 0..60),
        sizes_b in prop::collection::vec(1usize..20_000, 0..60),
        chunk in 1usize..5000,
        window in 1usize..6,
        target in 100usize..50_000,
    ) {
        let a_sends: Vec<_> = sizes_a.iter().enumerate().map(|(n, s)| commit(n, *s)).collect();
        let b_sends: Vec<_> = sizes_b.iter().enumerate().map(|(n, s)| commit(n + 100, *s)).collect();
        let config = Config { window, target_batch_bytes: target, ..Config::default() };
        let (mut a, mut b) = pair(config, a_sends.clone(), b_sends.clone());
        pump(&mut a, &mut b, chunk);
        prop_assert_eq!(&b.received, &a_sends);
        prop_assert_eq!(&a.received, &b_sends);
        prop_assert!(a.session.is_finished() && b.session.is_finished());
    }
}

#[test]
fn an_author_at_one_seq_with_other_heads_is_sent_again_from_there() {
    let (x, y) = (DeviceId([7; 32]), DeviceId([8; 32]));
    let mut have = VersionVector::default();
    have.set(x, Seq(5));
    have.set(y, Seq(3));
    let ours = Heads(vec![[1; 8], [2; 8]]);
    // The peer holds x's seq 5 with another head, and y's seq 3 with the same one.
    let peer = have.clone();
    let theirs = Heads(vec![[9; 8], [2; 8]]);
    let send = Heads::to_send(&have, &ours, &peer, &theirs);
    assert_eq!(send.get(&x), Seq(4), "x's fork is sent");
    assert_eq!(send.get(&y), Seq(3));
    // Where the seqs differ the chain itself tells: nothing changes.
    let mut behind = peer.clone();
    behind.set(x, Seq(4));
    assert_eq!(Heads::to_send(&have, &ours, &behind, &theirs), behind);
}

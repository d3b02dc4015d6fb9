//! Hostile peers over real QUIC: a device with a member's key (or none) speaks the
//! protocol correctly but sends commits no honest member would. Each is refused with a
//! specific error, or kept without being applied, and the serving database's tables
//! do not change.

use std::path::PathBuf;
use std::sync::Arc;

use iroh::endpoint::{RelayMode, presets};
use iroh::{Endpoint, EndpointAddr, SecretKey};
use shoal_core::commit::{Cell, CommitHash, FORMAT, Op, RowChange, Seq, TableChanges};
use shoal_core::{
    CommitBody, CommitHead, DeviceId, DeviceKey, GroupId, Hlc, Role, SignedCommit, Value,
};
use shoal_net::{ALPN, InviteTicket, Node, NodeConfig, Relay};
use shoal_proto::{
    Config, Event, Fingerprint, InviteClaim, Local, ProtoError, Reason, Refusal, Session,
};
use shoal_store::{Store, StoreOptions, system_now_ms};
use tempfile::TempDir;

const DESK: &str =
    "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, note TEXT);";

/// An admin serving a group, a member and a reader that joined it by ticket.
struct Scene {
    _dir: TempDir,
    a: Store,
    node: Arc<Node>,
    server: tokio::task::JoinHandle<()>,
    group: GroupId,
    member: DeviceKey,
    reader: DeviceKey,
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn quiet(_: shoal_net::Progress) {}

impl Scene {
    async fn new() -> Scene {
        let dir = TempDir::new_in("/dev/shm")
            .or_else(|_| TempDir::new())
            .expect("temp dir");
        let options = StoreOptions::new(dir.path().join("data"));
        let path = |n: &str| -> PathBuf { dir.path().join(format!("{n}.db")) };
        let replica = |n: &str| {
            rusqlite::Connection::open(path(n))
                .expect("open")
                .execute_batch(DESK)
                .expect("schema");
            let mut s = Store::init(path(n), options.clone()).expect("init");
            s.track("trades", None).expect("track");
            s
        };
        let mut a = replica("a");
        a.connection()
            .execute_batch("INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'first');")
            .expect("write");
        let group = a
            .create_group("desk", &[("trades".into(), vec![])])
            .expect("group")
            .id;
        let config = || NodeConfig {
            relay: Relay::Disabled,
            ..NodeConfig::default()
        };
        let node = Arc::new(
            Node::bind(path("a"), options.clone(), config())
                .await
                .expect("bind"),
        );
        let serving = node.clone();
        let server = tokio::spawn(async move {
            let _ = serving.serve().await;
        });
        let mut keys = Vec::new();
        for (name, role) in [("b", Role::Member), ("e", Role::Reader)] {
            let joiner = replica(name);
            let invite = a.create_invite("desk", role, 60_000, 1).expect("invite");
            let ticket = InviteTicket::new(&invite, a.device(), node.addr().await);
            let ticket: InviteTicket = ticket.encode(a.device_key()).parse().expect("ticket");
            let n = Node::bind(path(name), options.clone(), config())
                .await
                .expect("bind");
            n.join(&ticket, &quiet).await.expect("join");
            n.close().await;
            keys.push(DeviceKey::from_seed(joiner.device_key().seed()));
        }
        let reader = keys.pop().expect("reader");
        let member = keys.pop().expect("member");
        Scene {
            _dir: dir,
            a,
            node,
            server,
            group,
            member,
            reader,
        }
    }

    fn trades(&self) -> Vec<String> {
        let mut stmt = self
            .a
            .connection()
            .prepare(
                "SELECT id || ':' || coalesce(symbol, '-') || ':' || coalesce(qty, '-') FROM trades ORDER BY id",
            )
            .expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// A commit by `key` next in its chain (`prev` its last, if any) writing `tables`.
    fn commit(
        &self,
        key: &DeviceKey,
        prev: Option<&shoal_core::VerifiedCommit>,
        hlc: Hlc,
        tables: Vec<TableChanges>,
    ) -> shoal_core::VerifiedCommit {
        CommitBody {
            head: CommitHead {
                format: FORMAT,
                group: self.group,
                author: key.id(),
                seq: Seq(prev.map_or(1, |p| p.body.head.seq.0 + 1)),
                prev: prev.map_or(CommitHash([0; 32]), |p| p.hash),
                hlc,
                authors: vec![],
                ops: vec![],
            },
            tables,
        }
        .seal(key)
        .expect("seal")
    }

    /// Connects as `key`, says hello with the admin's own holdings (so nothing comes
    /// back), sends `commits` and reports how the session ended.
    async fn push(&self, key: &DeviceKey, commits: &[SignedCommit]) -> Result<(), ProtoError> {
        let have = self.a.version_vector(&self.group).expect("vv");
        push(key, self.node.addr().await, self.group, have, commits, None).await
    }

    /// Like [`Scene::push`], but claiming to hold nothing of `key`'s own chain, so
    /// that commits the admin has already seen go out again.
    async fn push_again(
        &self,
        key: &DeviceKey,
        commits: &[SignedCommit],
    ) -> Result<(), ProtoError> {
        let mut have = self.a.version_vector(&self.group).expect("vv");
        have.set(key.id(), Seq(0));
        push(key, self.node.addr().await, self.group, have, commits, None).await
    }
}

/// An insert of one trade.
fn insert(table: &str, column: &str, id: &str) -> Vec<TableChanges> {
    vec![TableChanges {
        table: table.into(),
        key_columns: vec!["id".into()],
        columns: vec![column.into()],
        rows: vec![RowChange {
            op: Op::Insert,
            key: vec![Value::Text(id.as_bytes().to_vec())],
            cl: 1,
            seen: None,
            cells: vec![Cell {
                column: 0,
                value: Value::Text(b"EVIL".to_vec()),
                overwrote: None,
            }],
        }],
    }]
}

fn now() -> Hlc {
    Hlc::new(system_now_ms(), 0)
}

async fn push(
    key: &DeviceKey,
    to: EndpointAddr,
    group: GroupId,
    have: shoal_core::VersionVector,
    commits: &[SignedCommit],
    invite: Option<InviteClaim>,
) -> Result<(), ProtoError> {
    let endpoint = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.seed()))
        .alpns(vec![ALPN.to_vec()])
        .relay_mode(RelayMode::Disabled)
        .bind()
        .await
        .expect("endpoint");
    let conn = endpoint.connect(to, ALPN).await.expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let remote = DeviceId(*conn.remote_id().as_bytes());
    let local = Local {
        device: key.id(),
        group,
        schema: Fingerprint::default(),
        // No history of its own to tag: any tag the admin holds differs, and the
        // admin sends its commit at that seq along.
        heads: shoal_proto::Heads(vec![[0; 8]; have.0.len()]),
        have,
        invite,
    };
    let mut s = Session::initiator(Config::default(), local, remote, 0);
    let mut sent = false;
    let result = loop {
        while let Some(event) = s.poll_event() {
            match event {
                Event::Ready { .. } if !sent => {
                    for c in commits {
                        s.send(c)?;
                    }
                    s.finish_sending()?;
                    sent = true;
                }
                Event::Commits { batch, .. } => s.applied(batch)?,
                _ => {}
            }
        }
        while let Some(bytes) = s.poll_transmit() {
            // A peer that refused stops reading; its refusal is read below.
            if send.write_all(&bytes).await.is_err() {
                break;
            }
        }
        if s.is_finished() {
            // The admin applies what the session brought when the session ends on
            // its side, then closes its stream: wait for that, so that what the
            // tests read next is what the session did.
            let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                while let Ok(Some(_)) = recv.read_chunk(1 << 16).await {}
            })
            .await;
            assert!(closed.is_ok(), "the admin never closed its stream");
            break Ok(());
        }
        match recv.read_chunk(1 << 16).await {
            Ok(Some(bytes)) => {
                if let Err(e) = s.receive(&bytes, 0) {
                    break Err(e);
                }
            }
            Ok(None) => break s.end_of_stream(),
            Err(e) => panic!("stream failed: {e}"),
        }
    };
    endpoint.close().await;
    result
}

fn refused_for(result: Result<(), ProtoError>, reason: Reason, detail: &str) -> Refusal {
    match result {
        Err(ProtoError::Refused(r)) => {
            assert_eq!(r.reason, reason, "{r:?}");
            assert!(r.detail.contains(detail), "{:?} lacks {detail:?}", r.detail);
            r
        }
        other => panic!("expected a refusal ({reason:?}), got {other:?}"),
    }
}

const BEFORE: [&str; 1] = ["t1:AAPL:10"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused() {
    let scene = Scene::new().await;
    let mut signed = scene
        .commit(&scene.member, None, now(), insert("trades", "symbol", "x"))
        .signed;
    signed.signature[0] ^= 1;
    let r = scene.push(&scene.member, &[signed]).await;
    refused_for(r, Reason::Protocol, "signature");
    assert_eq!(scene.trades(), BEFORE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_by_an_unknown_author_is_kept_not_applied() {
    let scene = Scene::new().await;
    let stranger = DeviceKey::from_seed([7; 32]);
    let c = scene.commit(&stranger, None, now(), insert("trades", "symbol", "x"));
    // Relayed by a member: stored until (if ever) its author is made a member.
    scene
        .push(&scene.member, &[c.signed])
        .await
        .expect("session");
    assert_eq!(scene.trades(), BEFORE);
    assert_eq!(scene.a.status().expect("status").waiting_commits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_is_not_a_member_is_refused_at_hello() {
    let scene = Scene::new().await;
    let stranger = DeviceKey::from_seed([8; 32]);
    let r = scene.push(&stranger, &[]).await;
    refused_for(r, Reason::NotMember, "not a member");
    // And a made-up invite claim gets it nowhere either.
    let claim = InviteClaim {
        invite: [1; 16],
        proof: [2; 32],
    };
    let have = scene.a.version_vector(&scene.group).expect("vv");
    let r = push(
        &stranger,
        scene.node.addr().await,
        scene.group,
        have,
        &[],
        Some(claim),
    )
    .await;
    refused_for(
        r,
        Reason::Invite(shoal_core::invite::InviteProblem::Unknown),
        "",
    );
    assert_eq!(scene.trades(), BEFORE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_authors_commit_relayed_by_a_member_is_refused() {
    let mut scene = Scene::new().await;
    let revoked = DeviceKey::from_seed(scene.member.seed());
    scene.a.revoke("desk", &revoked.id()).expect("revoke");
    let c = scene.commit(&revoked, None, now(), insert("trades", "symbol", "x"));
    // The revoked device itself cannot even connect.
    let r = scene.push(&revoked, std::slice::from_ref(&c.signed)).await;
    refused_for(r, Reason::Revoked, "revoked");
    // Relayed by another member (here the reader), it is refused on import.
    let reader = DeviceKey::from_seed(scene.reader.seed());
    scene.push(&reader, &[c.signed]).await.expect("session");
    assert_eq!(scene.a.status().expect("status").refused_commits, 1);
    assert_eq!(scene.trades(), BEFORE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_commit_is_refused() {
    let scene = Scene::new().await;
    let c = scene.commit(&scene.reader, None, now(), insert("trades", "symbol", "x"));
    scene
        .push(&scene.reader, &[c.signed])
        .await
        .expect("session");
    assert_eq!(scene.trades(), BEFORE);
    assert_eq!(scene.a.status().expect("status").refused_commits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_commit_is_a_no_op() {
    let scene = Scene::new().await;
    let c = scene.commit(&scene.member, None, now(), insert("trades", "symbol", "x"));
    scene
        .push(&scene.member, std::slice::from_ref(&c.signed))
        .await
        .expect("session");
    let after_first = scene.trades();
    assert_eq!(after_first, ["t1:AAPL:10", "x:EVIL:-"]);
    let vv = scene.a.version_vector(&scene.group).expect("vv");
    // The same commit again: nothing changes.
    scene
        .push_again(&scene.member, &[c.signed])
        .await
        .expect("session");
    assert_eq!(scene.trades(), after_first);
    assert_eq!(scene.a.version_vector(&scene.group).expect("vv"), vv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_recorded_and_its_author_trusted_no_more() {
    let scene = Scene::new().await;
    let first = scene.commit(&scene.member, None, now(), insert("trades", "symbol", "x"));
    scene
        .push(&scene.member, &[first.signed])
        .await
        .expect("session");
    let before = scene.trades();
    // A second, different commit for the same place in the chain.
    let second = scene.commit(&scene.member, None, now(), insert("trades", "symbol", "y"));
    scene
        .push_again(&scene.member, &[second.signed])
        .await
        .expect("session");
    assert_eq!(scene.trades(), before);
    let status = scene.a.status().expect("status");
    assert_eq!(status.forked_authors, [scene.member.id().to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_clock_is_held() {
    let scene = Scene::new().await;
    let tomorrow = Hlc::new(system_now_ms() + 86_400_000, 0);
    let c = scene.commit(
        &scene.member,
        None,
        tomorrow,
        insert("trades", "symbol", "x"),
    );
    scene
        .push(&scene.member, &[c.signed])
        .await
        .expect("session");
    assert_eq!(scene.trades(), BEFORE);
    assert_eq!(scene.a.status().expect("status").future_commits, 1);
}

/// The tables of a's file, to show that nothing was created or dropped.
fn schema(store: &Store) -> Vec<String> {
    let mut stmt = store
        .connection()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_an_unknown_column_are_held_and_to_an_unknown_table_left_out() {
    let scene = Scene::new().await;
    let tables = schema(&scene.a);
    let column = scene.commit(&scene.member, None, now(), insert("trades", "colour", "x"));
    let table = scene.commit(
        &scene.member,
        Some(&column),
        now().tick(system_now_ms()),
        insert("ghosts", "symbol", "y"),
    );
    scene
        .push(&scene.member, &[column.signed, table.signed])
        .await
        .expect("session");
    // The row is there (a newer schema's insert), its unknown column's value waits
    // until the column exists here; the table no group carries is left out.
    assert_eq!(scene.trades(), ["t1:AAPL:10", "x:-:-"]);
    let held = scene.a.status().expect("status").held;
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].reason.contains("colour"), "{held:?}");
    assert_eq!(schema(&scene.a), tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_reach_no_sql() {
    // Names are only ever matched against the tables and columns tracked here, and
    // quoted when used: one with quotes and SQL in it names nothing and runs nothing.
    let scene = Scene::new().await;
    let tables = schema(&scene.a);
    let evil_table = scene.commit(
        &scene.member,
        None,
        now(),
        insert("trades\"; DROP TABLE trades; --", "symbol", "x"),
    );
    let evil_column = scene.commit(
        &scene.member,
        Some(&evil_table),
        now().tick(system_now_ms()),
        insert("trades", "symbol\" = 'pwned'; --", "y"),
    );
    scene
        .push(&scene.member, &[evil_table.signed, evil_column.signed])
        .await
        .expect("session");
    assert_eq!(schema(&scene.a), tables);
    assert_eq!(scene.trades(), ["t1:AAPL:10", "y:-:-"]);
    let held = scene.a.status().expect("status").held;
    assert!(
        held.iter().any(|h| h.reason.contains("pwned")),
        "the hostile column's value waits as an unknown column: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_aimed_at_shoals_own_tables_are_refused() {
    let scene = Scene::new().await;
    let c = scene.commit(
        &scene.member,
        None,
        now(),
        insert("shoal_meta", "value", "device"),
    );
    let r = scene.push(&scene.member, &[c.signed]).await;
    refused_for(r, Reason::Protocol, "shoal_");
    assert_eq!(scene.trades(), BEFORE);
}

//! Real iroh QUIC on loopback between nodes in one process: joining by ticket,
//! syncing both ways, refusals, and the relay path through a relay started here.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::{GroupId, Role};
use shoal_net::{InviteTicket, NetError, Node, NodeConfig, Relay};
use shoal_proto::{InviteProblem, ProtoError, Reason};
use shoal_store::{Store, StoreOptions};
use shoal_testkit::World;

const DESK: &str = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, note TEXT);
                    CREATE TABLE moods (id TEXT PRIMARY KEY, feeling TEXT);";

/// A replica with the desk's tables, tracked.
fn desk(w: &World, name: &str) -> Store {
    w.replica(name, DESK, &["trades", "moods"])
}

async fn node(w: &World, name: &str, config: NodeConfig) -> Node {
    node_with(w, name, config, w.options()).await
}

async fn node_with(w: &World, name: &str, config: NodeConfig, options: StoreOptions) -> Node {
    Node::bind(w.path(name), options, config)
        .await
        .expect("bind")
}

fn direct() -> NodeConfig {
    NodeConfig {
        relay: Relay::Disabled,
        ..NodeConfig::default()
    }
}

fn rows(store: &Store, sql: &str) -> Vec<String> {
    let mut stmt = store.connection().prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Serves `node` in the background; the returned handle stops it when dropped.
fn serve(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = node.serve().await;
    })
}

fn quiet(_: shoal_net::Progress) {}

/// a makes group "desk" carrying trades and serves it; b joins by ticket.
async fn paired(w: &World, a: &mut Store, config: fn() -> NodeConfig) -> Pair {
    let group = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("group")
        .id;
    let node_a = Arc::new(node(w, "a", config()).await);
    let t = ticket(a, &node_a, Role::Member, 60_000, 1).await;
    let server = serve(node_a.clone());
    let node_b = node(w, "b", config()).await;
    let joined = node_b.join(&t, &quiet).await.expect("join");
    Pair {
        group,
        node_a,
        node_b,
        server,
        joined,
    }
}

struct Pair {
    group: GroupId,
    node_a: Arc<Node>,
    node_b: Node,
    server: tokio::task::JoinHandle<()>,
    joined: shoal_net::JoinSummary,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn ticket(
    store: &mut Store,
    node: &Node,
    role: Role,
    ttl_ms: u64,
    uses: u32,
) -> InviteTicket {
    let invite = store
        .create_invite("desk", role, ttl_ms, uses)
        .expect("invite");
    let t = InviteTicket::new(&invite, store.device(), node.addr().await);
    // Through text and back, as a person would pass it on.
    t.encode(store.device_key()).parse().expect("ticket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_joins_by_ticket_and_both_sync_without_the_private_parts() {
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let b = desk(&w, "b");
    a.connection()
        .execute_batch(
            "INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'private note');
             INSERT INTO moods VALUES ('m1', 'private mood');",
        )
        .expect("write");
    let g = a
        .create_group("desk", &[("trades".into(), vec!["note".into()])])
        .expect("group");
    let node_a = Arc::new(node(&w, "a", direct()).await);
    let t = ticket(&mut a, &node_a, Role::Member, 60_000, 1).await;
    let server = serve(node_a.clone());

    let node_b = node(&w, "b", direct()).await;
    let joined = node_b.join(&t, &quiet).await.expect("join");
    assert_eq!(joined.name, "desk");
    assert_eq!(joined.role, Some(Role::Member));
    assert!(joined.sync.pulled >= 2, "{:?}", joined.sync);
    assert_eq!(rows(&b, "SELECT symbol FROM trades"), ["AAPL"]);
    assert_eq!(
        rows(&b, "SELECT coalesce(note, 'none') FROM trades"),
        ["none"],
        "an excluded column never reaches the peer"
    );
    assert!(
        rows(&b, "SELECT feeling FROM moods").is_empty(),
        "a table in no group never reaches the peer"
    );

    // b writes; a sync to a (address remembered from the ticket) carries it over.
    b.connection()
        .execute_batch("INSERT INTO trades VALUES ('t2', 'MSFT', 5, 'b private');")
        .expect("write");
    a.connection()
        .execute_batch("UPDATE trades SET qty = 11 WHERE id = 't1';")
        .expect("write");
    let report = node_b.sync(Some(g.id), &[], &quiet).await.expect("sync");
    assert_eq!(report.len(), 1);
    assert!(report[0].error.is_none(), "{report:?}");
    let s = &report[0].groups[0];
    assert!(s.pushed >= 1 && s.pulled >= 1, "{s:?}");
    assert_eq!(
        rows(
            &a,
            "SELECT id || ':' || qty || ':' || coalesce(note, '-') FROM trades ORDER BY id"
        ),
        ["t1:11:private note", "t2:5:-"]
    );
    assert_eq!(
        rows(&b, "SELECT id || ':' || qty FROM trades ORDER BY id"),
        ["t1:11", "t2:5"]
    );

    // In sync: a second sync moves nothing and stays small.
    let again = node_b.sync(Some(g.id), &[], &quiet).await.expect("sync");
    let s = &again[0].groups[0];
    assert_eq!((s.pushed, s.pulled), (0, 0));
    assert!(s.bytes_in + s.bytes_out <= 1024, "{s:?}");

    // The used-up ticket is refused on the joiner's side with a clear reason.
    desk(&w, "c");
    let node_c = node(&w, "c", direct()).await;
    match node_c.join(&t, &quiet).await {
        Err(NetError::Protocol(ProtoError::Refused(r))) => {
            assert_eq!(r.reason, Reason::Invite(InviteProblem::UsedUp))
        }
        other => panic!("expected a used-up refusal, got {other:?}"),
    }
    // c knows no group, so it has nothing to ask a for.
    match node_c
        .sync_addr(node_a.addr().await, Some(g.id), &quiet)
        .await
    {
        Err(NetError::NoPeers(_)) => {}
        other => panic!("c knows no group, so it has nothing to sync: {other:?}"),
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backlogs_in_both_directions_cross_without_stalling() {
    // Incompressible rows, several times QUIC's stream window each way: both sides
    // must keep reading while their own writes wait.
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let b = desk(&w, "b");
    let p = paired(&w, &mut a, direct).await;
    // 40 transactions of 10 rows of 32 KiB: many commits, many batches.
    let fill = |s: &Store, prefix: &str| {
        for t in 0..40 {
            s.connection()
                .execute_batch(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
                     INSERT INTO trades SELECT '{prefix}{t}.' || i, 'X', i, randomblob(32768) FROM n;"
                ))
                .expect("write");
        }
    };
    fill(&a, "a");
    fill(&b, "b");
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        p.node_b.sync(Some(p.group), &[], &quiet),
    )
    .await
    .expect("the sync finishes")
    .expect("sync");
    let s = &report[0].groups[0];
    assert_eq!(s.name, "desk");
    assert!(
        s.pushed > 4 && s.pulled > 4,
        "more commits than the window: {s:?}"
    );
    assert!(s.bytes_out > 12 << 20 && s.bytes_in > 12 << 20, "{s:?}");
    let sum = |s: &Store| {
        rows(
            s,
            "SELECT count(*) || ':' || sum(length(note)) || ':' ||
                    group_concat(id || hex(substr(note, 1, 8)), ',' ORDER BY id) FROM trades",
        )
    };
    assert!(
        sum(&a)[0].starts_with("800:26214400:"),
        "{:?}",
        &sum(&a)[0][..20]
    );
    assert_eq!(sum(&a), sum(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_relays_out_of_reach_do_not_stall_a_direct_sync() {
    // Public relays are unreachable here (and may be reachable elsewhere): either way
    // the direct addresses in the ticket carry the session, promptly.
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let b = desk(&w, "b");
    a.connection()
        .execute_batch("INSERT INTO trades VALUES ('t1', 'AAPL', 10, NULL);")
        .expect("write");
    let p = tokio::time::timeout(
        Duration::from_secs(60),
        paired(&w, &mut a, NodeConfig::default),
    )
    .await
    .expect("joined without waiting on relays");
    assert!(p.joined.sync.pulled > 0);
    assert_eq!(rows(&b, "SELECT symbol FROM trades"), ["AAPL"]);
    b.connection()
        .execute_batch("INSERT INTO trades VALUES ('t2', 'MSFT', 5, NULL);")
        .expect("write");
    tokio::time::timeout(
        Duration::from_secs(60),
        p.node_b.sync(Some(p.group), &[], &quiet),
    )
    .await
    .expect("synced without waiting on relays")
    .expect("sync");
    assert_eq!(rows(&a, "SELECT id FROM trades ORDER BY id"), ["t1", "t2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_at_hello() {
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let _b = desk(&w, "b");
    let p = paired(&w, &mut a, direct).await;
    a.revoke("desk", &p.node_b.device()).expect("revoke");
    // b still believes it is a member; a refuses it.
    match p
        .node_b
        .sync_addr(p.node_a.addr().await, Some(p.group), &quiet)
        .await
    {
        Err(NetError::Protocol(ProtoError::Refused(r))) => assert_eq!(r.reason, Reason::Revoked),
        other => panic!("expected a revoked refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused_by_the_joiner_and_the_inviter() {
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let _b = desk(&w, "b");
    a.create_group("desk", &[("trades".into(), vec![])])
        .expect("group");
    // The invite is made by the system clock; both nodes' clocks are past its
    // expiry, as they would be a while later.
    let node_a = Arc::new(node_with(&w, "a", direct(), w.options_ahead(1_000)).await);
    let t = ticket(&mut a, &node_a, Role::Member, 300, 5).await;
    let node_b = node_with(&w, "b", direct(), w.options_ahead(1_000)).await;
    match node_b.join(&t, &quiet).await {
        Err(NetError::Ticket(msg)) => assert!(msg.contains("expired"), "{msg}"),
        other => panic!("expected an expired ticket, got {other:?}"),
    }
    // A joiner whose clock says otherwise still meets the inviter's refusal.
    let server = serve(node_a.clone());
    let mut late = t.clone();
    late.expires_ms = u64::MAX;
    match node_b.join(&late, &quiet).await {
        Err(NetError::Protocol(ProtoError::Refused(r))) => {
            assert_eq!(r.reason, Reason::Invite(InviteProblem::Expired))
        }
        other => panic!("expected the inviter to refuse, got {other:?}"),
    }
    // And a made-up invite is unknown to the inviter.
    let mut forged = t.clone();
    forged.expires_ms = u64::MAX;
    forged.invite = [0xee; 16];
    match node_b.join(&forged, &quiet).await {
        Err(NetError::Protocol(ProtoError::Refused(r))) => {
            assert_eq!(r.reason, Reason::Invite(InviteProblem::Unknown))
        }
        other => panic!("expected an unknown invite, got {other:?}"),
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_sync_through_a_relay_alone() {
    let (_map, url, _server) = iroh::test_utils::run_relay_server().await.expect("relay");
    let config = || NodeConfig {
        relay: Relay::Custom(url.clone()),
        relay_tls: Some(iroh::tls::CaTlsConfig::insecure_skip_verify()),
        relay_only: true,
        ..NodeConfig::default()
    };
    let w = World::on_system_clock();
    let mut a = desk(&w, "a");
    let b = desk(&w, "b");
    a.connection()
        .execute_batch("INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'n');")
        .expect("write");
    a.create_group("desk", &[("trades".into(), vec![])])
        .expect("group");
    let node_a = Arc::new(node(&w, "a", config()).await);
    let t = ticket(&mut a, &node_a, Role::Member, 60_000, 1).await;
    assert!(
        t.addr.ip_addrs().next().is_none() && t.addr.relay_urls().next().is_some(),
        "the ticket offers the relay only: {:?}",
        t.addr
    );
    let server = serve(node_a.clone());
    let node_b = node(&w, "b", config()).await;
    node_b
        .join(&t, &quiet)
        .await
        .expect("join through the relay");
    assert_eq!(rows(&b, "SELECT symbol FROM trades"), ["AAPL"]);
    server.abort();
}

//! The daemon as a library: two daemons in one process on loopback QUIC, a join by
//! ticket, and the events an embedding app sees.

use std::time::Duration;

use shoal_core::Role;
use shoal_daemon::{Config, Daemon, Event, Numbered};
use shoal_net::InviteTicket;
use shoal_store::{Resolution, Side};
use shoal_testkit::{World, write};
use tokio::sync::broadcast::Receiver;

const TRADES: &str =
    "PRAGMA journal_mode = WAL; CREATE TABLE trades (id TEXT PRIMARY KEY, qty INTEGER);";

/// The first event that `matches`, within 30 s.
async fn expect(
    events: &mut Receiver<Numbered>,
    what: &str,
    matches: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(e) if matches(&e.event) => return e.event,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} event within 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_app_joins_by_ticket_and_hears_changes_and_conflicts() {
    let w = World::on_system_clock();
    let options = w.options();
    let (a, b) = (w.path("a"), w.path("b"));
    let mut store_a = w.replica("a", TRADES, &["trades"]);
    let group = store_a
        .create_group("desk", &[("trades".into(), Vec::new())])
        .expect("group");
    drop(w.replica("b", TRADES, &["trades"]));

    let daemon_a = Daemon::start(&a, options.clone(), Config::loopback(), false)
        .await
        .expect("A starts");
    let invite = store_a
        .create_invite(&group.id.to_string(), Role::Member, 3_600_000, 1)
        .expect("invite");
    let ticket = InviteTicket::new(&invite, store_a.device(), daemon_a.addr().await)
        .encode(store_a.device_key());
    let ticket: InviteTicket = ticket.parse().expect("ticket");

    let daemon_b = Daemon::start(&b, options.clone(), Config::loopback(), false)
        .await
        .expect("B starts");
    let mut events_b = daemon_b.subscribe();
    let joined = daemon_b.join(&ticket).await.expect("join");
    assert_eq!(joined.role, Some(Role::Member));
    assert_eq!(joined.name, "desk");
    let a_id = daemon_a.device();
    expect(
        &mut events_b,
        "peer connected",
        |e| matches!(e, Event::PeerConnected { peer, .. } if *peer == a_id),
    )
    .await;

    write(&a, "INSERT INTO trades VALUES ('t1', 1)");
    let applied = expect(&mut events_b, "changes applied", |e| {
        matches!(e, Event::ChangesApplied { .. })
    })
    .await;
    assert_eq!(
        applied,
        Event::ChangesApplied {
            peer: a_id,
            group: group.id,
            name: "desk".into(),
            commits: 1,
            changes: 1,
        }
    );
    // The join's own connection closes as the member's takes over: the status
    // settles on one connection up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = daemon_b.status().await.expect("status");
        if status.peers.iter().all(|p| p.connected) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never connected: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.groups[0].members.len(), 2);

    // Apart, both edit t1; together again, the conflict is found, and resolving it
    // closes it.
    daemon_b.shutdown().await;
    write(&a, "UPDATE trades SET qty = 10 WHERE id = 't1'");
    write(&b, "UPDATE trades SET qty = 20 WHERE id = 't1'");
    let mut events_a = daemon_a.subscribe();
    let daemon_b = Daemon::start(&b, options.clone(), Config::loopback(), false)
        .await
        .expect("B starts again");
    let Event::ConflictFound { id, table, .. } = expect(&mut events_a, "conflict found", |e| {
        matches!(e, Event::ConflictFound { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(table, "trades");
    let open_on_b = daemon_b.conflicts(false).await.expect("b's inbox");
    assert_eq!(open_on_b.iter().map(|c| &c.id).collect::<Vec<_>>(), [&id]);
    // Resolved through the running daemon, it closes here and then on B.
    let resolved = daemon_a
        .resolve(&id[..8], Resolution::Keep(Side::Local))
        .await
        .expect("resolve");
    assert_eq!(resolved.id, id);
    expect(
        &mut events_a,
        "conflict closed",
        |e| matches!(e, Event::ConflictClosed { id: closed } if *closed == id),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !daemon_b
        .conflicts(false)
        .await
        .expect("b's inbox")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the resolution never closed B's record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        daemon_a.resolve(&id, Resolution::Keep(Side::Local)).await,
        Err(e) if e.to_string().contains("resolved")
    ));
    // Every event A told is kept, numbered one after another.
    let kept = daemon_a.events_since(0);
    assert_eq!(kept.missed, 0);
    let ids: Vec<u64> = kept.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=daemon_a.latest_event()).collect::<Vec<_>>());
    assert!(
        kept.events
            .iter()
            .any(|e| matches!(&e.event, Event::ConflictClosed { id: closed } if *closed == id))
    );
    daemon_b.shutdown().await;
    daemon_a.shutdown().await;
}

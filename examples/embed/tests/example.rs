//! The example as a user runs it: a separate process that joins a group from a
//! ticket and prints the changes a member makes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shoal_core::Role;
use shoal_daemon::{Config, Daemon};
use shoal_net::InviteTicket;
use shoal_store::{Store, StoreOptions};

/// A child process killed when dropped, also when the test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_joins_by_ticket_and_prints_a_members_change() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    Config::set(&data, "relay", "none").expect("config");
    Config::set(&data, "mdns", "false").expect("config");
    let options = StoreOptions::new(&data);
    let journal = dir.path().join("journal.db");
    rusqlite::Connection::open(&journal)
        .expect("open")
        .execute_batch(
            "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT NOT NULL, qty INTEGER NOT NULL, price REAL)",
        )
        .expect("schema");
    let mut store = Store::init(&journal, options.clone()).expect("init");
    store.track("trades", None).expect("track");
    let group = store
        .create_group("desk", &[("trades".into(), Vec::new())])
        .expect("group");
    let daemon = Daemon::start(
        &journal,
        options,
        Config::load(&data).expect("config"),
        false,
    )
    .await
    .expect("daemon");
    let invite = store
        .create_invite(&group.id.to_string(), Role::Member, 3_600_000, 1)
        .expect("invite");
    let ticket =
        InviteTicket::new(&invite, store.device(), daemon.addr().await).encode(store.device_key());

    let app = dir.path().join("app.db");
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_shoal-embed-example"))
            .arg(&app)
            .arg(&ticket)
            .env("SHOAL_DATA_DIR", &data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the example starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("the example never printed {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let joined = wait_for("joined");
    assert!(joined.contains("\"desk\""), "{joined}");
    wait_for("in sync");
    wait_for("PeerConnected");

    store
        .connection()
        .execute("INSERT INTO trades VALUES ('t1', 'AAPL', 10, 189.5)", [])
        .expect("write");
    let applied = wait_for("ChangesApplied");
    assert!(applied.contains("changes: 1"), "{applied}");
    drop(child);
    let qty: i64 = rusqlite::Connection::open(&app)
        .expect("open")
        .query_row("SELECT qty FROM trades WHERE id = 't1'", [], |r| r.get(0))
        .expect("the row arrived");
    assert_eq!(qty, 10);
    daemon.shutdown().await;
}

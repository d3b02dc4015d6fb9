//! `shoal up` as people run it: real daemon processes on loopback QUIC, written to by
//! separate Python processes, with nobody running a sync command.

use std::io::BufRead;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Shoal, count, python};

/// A directory of databases whose configuration keeps everything on loopback and
/// quick.
struct Env {
    sh: Shoal,
}

impl std::ops::Deref for Env {
    type Target = Shoal;

    fn deref(&self) -> &Shoal {
        &self.sh
    }
}

impl Env {
    fn new() -> Env {
        let env = Env { sh: Shoal::new() };
        for (k, v) in [
            ("relay", "none"),
            ("mdns", "false"),
            ("heartbeat", "1s"),
            ("backoff_min", "200ms"),
            ("backoff_max", "2s"),
            ("connect_timeout", "2s"),
        ] {
            env.ok(&["config", "set", k, v]);
        }
        env
    }

    /// A replica with a `trades` table, tracked.
    fn replica(&self, name: &str) -> String {
        let db = self.db(name);
        python(
            &db,
            "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER)",
        );
        self.ok(&["init", &db]);
        self.ok(&["track", &db, "trades"]);
        db
    }

    fn device(&self, db: &str) -> String {
        self.json(&["status", db])["device"]
            .as_str()
            .expect("device")
            .to_owned()
    }

    /// An invite through `db`'s running daemon: the command prints and exits.
    fn invite(&self, db: &str, role: &str) -> String {
        self.json(&["invite", db, "--role", role, "--no-qr"])["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    }
}

/// Waits up to `secs` for `what` to hold.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {secs} s: {what}");
}

/// A running `shoal up`, killed when dropped.
struct Daemon {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Daemon {
    fn up(env: &Env, db: &str) -> Daemon {
        Daemon::up_to_die_at(env, db, "")
    }

    /// A daemon that dies at fault point `fault` (none when empty), as if killed there.
    fn up_to_die_at(env: &Env, db: &str, fault: &str) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["up", db, "--json"])
            .env("SHOAL_DATA_DIR", env.path("data"))
            .env("SHOAL_FAULT", fault)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shoal up starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut d = Daemon {
            child,
            lines: std::io::BufReader::new(stdout).lines(),
        };
        let first = d.line();
        assert_eq!(first["event"], "up", "{first}");
        d
    }

    fn line(&mut self) -> serde_json::Value {
        let line = self.lines.next().expect("a line").expect("readable");
        serde_json::from_str(&line).expect("json line")
    }

    /// Waits (up to 30 s) for the process to end by itself.
    fn died(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not die at its fault point");
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("sh")
                .args(["-c", &format!("kill -TERM {pid}")])
                .status()
                .expect("kill")
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not stop on SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(db: &str, id: &str) -> bool {
    count(
        db,
        &format!("SELECT count(*) FROM trades WHERE id = '{id}'"),
    ) == 1
}

/// A, B and C in one group, A its admin, each with its daemon running. B and C
/// join through A's daemon, which serves them.
fn trio(env: &Env) -> ([String; 3], [Daemon; 3]) {
    let (a, b, c) = (
        env.replica("a.db"),
        env.replica("b.db"),
        env.replica("c.db"),
    );
    env.ok(&["group", &a, "create", "desk", "--table", "trades"]);
    let daemon_a = Daemon::up(env, &a);
    for db in [&b, &c] {
        let ticket = env.invite(&a, "member");
        env.ok(&["join", db, &ticket]);
    }
    let (daemon_b, daemon_c) = (Daemon::up(env, &b), Daemon::up(env, &c));
    ([a, b, c], [daemon_a, daemon_b, daemon_c])
}

#[test]
fn three_daemons_carry_writes_from_python_processes_without_a_sync_command() {
    let env = Env::new();
    let ([a, b, c], [daemon_a, daemon_b, daemon_c]) = trio(&env);

    python(&a, "INSERT INTO trades VALUES ('from-a', 'AAPL', 1)");
    python(&b, "INSERT INTO trades VALUES ('from-b', 'MSFT', 2)");
    python(&c, "INSERT INTO trades VALUES ('from-c', 'NVDA', 3)");
    for db in [&a, &b, &c] {
        eventually(30, &format!("{db} has every write"), || {
            ["from-a", "from-b", "from-c"].iter().all(|id| has(db, id))
        });
    }
    // An update and a delete travel too.
    python(
        &b,
        "UPDATE trades SET qty = 20 WHERE id = 'from-a'; DELETE FROM trades WHERE id = 'from-c';",
    );
    for db in [&a, &c] {
        eventually(30, &format!("{db} has B's update and delete"), || {
            count(db, "SELECT qty FROM trades WHERE id = 'from-a'") == 20 && !has(db, "from-c")
        });
    }

    // B and C were both invited by A and never given each other's address: A tells
    // each where the other is, and they connect.
    for db in [&b, &c] {
        eventually(30, &format!("{db} is connected to both others"), || {
            env.json(&["peers", db])
                .as_array()
                .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["connected"] == true))
        });
    }

    // Status while running: A sees both members connected, with nothing pending.
    let peers = env.json(&["peers", &a, "-v"]);
    let peers = peers.as_array().expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    for p in peers {
        assert_eq!(p["connected"], true, "{p}");
        assert_eq!(p["path"], "direct", "{p}");
        assert!(p["rtt_ms"].as_f64().is_some(), "{p}");
        assert!(p["last_sync_ms"].as_u64().is_some(), "{p}");
        assert!(p["commits_received"].as_u64() >= Some(1), "{p}");
        assert!(p["bytes_sent"].as_u64() > Some(0), "{p}");
    }
    eventually(10, "nothing pending either way", || {
        env.json(&["peers", &a])
            .as_array()
            .expect("peers")
            .iter()
            .all(|p| p["pending_out"] == 0 && p["pending_in"] == 0)
    });
    let status = env.json(&["status", &a]);
    assert_eq!(status["daemon"]["groups"][0]["name"], "desk", "{status}");
    assert_eq!(
        status["daemon"]["groups"][0]["members"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    // A one-shot sync works through the daemon instead of binding a second endpoint.
    let synced = env.json(&["sync", &b]);
    assert!(
        synced["peers"].as_array().is_some_and(|p| !p.is_empty()),
        "{synced}"
    );
    // B reaches A (and C, whose address it learned from A).
    let a_id = env.device(&a);
    let with_a = synced["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["peer"] == a_id.as_str()))
        .expect("a sync with A");
    assert!(
        with_a["error"].is_null(),
        "sync through the daemon failed: {synced}"
    );

    // SIGTERM stops a daemon cleanly; its control socket goes with it.
    assert!(daemon_c.stop().success());
    let out = env.shoal(&["peers", &c, "--json"]);
    assert!(out.status.success());
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        offline[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no daemon")),
        "{offline}"
    );
    drop(daemon_b);
    drop(daemon_a);
}

#[test]
fn a_device_revoked_while_everything_runs_is_cut_off() {
    let env = Env::new();
    let ([a, b, c], [_daemon_a, _daemon_b, mut daemon_c]) = trio(&env);
    python(&c, "INSERT INTO trades VALUES ('c-before', 'AAPL', 1)");
    for db in [&a, &b] {
        eventually(30, &format!("{db} has C's write"), || has(db, "c-before"));
    }

    // The admin revokes C with the daemons running.
    let device_c = env.device(&c);
    env.ok(&["revoke", &a, "--group", "desk", &device_c]);
    eventually(30, "B learns of the revocation", || {
        env.json(&["members", &b, "--group", "desk"])
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["device"] == device_c.as_str() && m["revoked_after"].is_u64())
    });
    // C's daemon hears that it lost its peers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "C was never cut off");
        let e = daemon_c.line();
        if e["event"] == "peer_lost" || e["event"] == "refused" {
            break;
        }
    }
    python(&c, "INSERT INTO trades VALUES ('c-after', 'MSFT', 2)");
    // Whatever C does now reaches no one, while A's writes still reach B.
    python(&a, "INSERT INTO trades VALUES ('a-after', 'NVDA', 3)");
    eventually(30, "B has A's later write", || has(&b, "a-after"));
    env.shoal(&["sync", &c]);
    python(&a, "INSERT INTO trades VALUES ('a-later', 'NVDA', 4)");
    eventually(30, "B has A's next write", || has(&b, "a-later"));
    for db in [&a, &b] {
        assert!(
            !has(db, "c-after"),
            "{db} took C's write after its revocation"
        );
        assert!(has(db, "c-before"), "{db} lost C's write from before");
    }
    let peers = env.json(&["peers", &a]);
    assert!(
        peers
            .as_array()
            .expect("peers")
            .iter()
            .all(|p| p["device"] != device_c.as_str()),
        "A still lists C: {peers}"
    );
}

/// The gaps between one member's connection attempts, from the daemon's own record.
fn attempt_gaps(env: &Env, db: &str, wanted: usize) -> Vec<u64> {
    let mut attempts = Vec::new();
    eventually(60, "enough connection attempts", || {
        let peers = env.json(&["peers", db]);
        attempts = peers[0]["attempts"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_u64()).collect())
            .unwrap_or_default();
        attempts.len() >= wanted
    });
    attempts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn attempts_to_reach_a_member_that_is_down_back_off_as_configured() {
    let env = Env::new();
    env.ok(&["config", "set", "backoff_min", "400ms"]);
    env.ok(&["config", "set", "backoff_max", "1600ms"]);
    env.ok(&["config", "set", "connect_timeout", "150ms"]);
    let a = env.replica("a.db");
    let b = env.replica("b.db");
    env.ok(&["group", &a, "create", "desk", "--table", "trades"]);
    let device_b = env.device(&b);
    env.ok(&["group", &a, "add", "desk", &device_b]);
    // B is a member that never comes up, at a static address where nothing listens.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    env.ok(&["config", "set", "peers", &format!("127.0.0.1:{port}")]);
    let _daemon = Daemon::up(&env, &a);
    let gaps = attempt_gaps(&env, &a, 8);
    // Each wait is drawn from [step / 2, step], the step doubling from 400 ms up to
    // 1600 ms; the slack above covers a busy machine.
    let mut step = 400u64;
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap + 5 >= step / 2 && *gap <= step + 600,
            "gap {i} was {gap} ms for a step of {step} ms: {gaps:?}"
        );
        step = (step * 2).min(1600);
    }
    assert!(
        gaps[4..].iter().sum::<u64>() > gaps[..2].iter().sum::<u64>() * 2,
        "the waits did not grow: {gaps:?}"
    );
}

/// A and B, members of one group, with A's daemon running and B joined.
fn pair(env: &Env) -> (String, String, Daemon) {
    let (a, b) = (env.replica("a.db"), env.replica("b.db"));
    env.ok(&["group", &a, "create", "desk", "--table", "trades"]);
    let daemon_a = Daemon::up(env, &a);
    let ticket = env.invite(&a, "member");
    env.ok(&["join", &b, &ticket]);
    (a, b, daemon_a)
}

#[test]
fn a_daemon_stopped_for_a_while_catches_up_after_restart() {
    let env = Env::new();
    let (a, b, _daemon_a) = pair(&env);
    let daemon_b = Daemon::up(&env, &b);
    python(&a, "INSERT INTO trades VALUES ('t1', 'AAPL', 1)");
    eventually(30, "B has t1", || has(&b, "t1"));
    assert!(daemon_b.stop().success());
    // Apart: both sides write, including the same row.
    python(
        &a,
        "INSERT INTO trades VALUES ('a-apart', 'MSFT', 2); UPDATE trades SET qty = 10 WHERE id = 't1';",
    );
    python(
        &b,
        "INSERT INTO trades VALUES ('b-apart', 'NVDA', 3); UPDATE trades SET symbol = 'AAPL.O' WHERE id = 't1';",
    );
    let _daemon_b = Daemon::up(&env, &b);
    for db in [&a, &b] {
        eventually(30, &format!("{db} caught up"), || {
            has(db, "a-apart")
                && has(db, "b-apart")
                && count(
                    db,
                    "SELECT count(*) FROM trades WHERE id = 't1' AND qty = 10 AND symbol = 'AAPL.O'",
                ) == 1
        });
    }
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_large_sync_loses_nothing() {
    let env = Env::new();
    let (a, b, _daemon_a) = pair(&env);
    const ROWS: i64 = 100_000;
    python(
        &a,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO trades SELECT 'big-' || i, hex(randomblob(150)), i FROM n;"
        ),
    );
    // B writes while no daemon of its own runs; then its daemon starts pulling.
    python(&b, "INSERT INTO trades VALUES ('b-1', 'MSFT', 1)");
    let mut daemon_b = Daemon::up(&env, &b);
    // A write that lands while the daemon is busy pulling.
    python(&b, "INSERT INTO trades VALUES ('b-2', 'NVDA', 2)");
    // A session keeps batches as they arrive and applies them when it ends: pulling
    // has started once a commit waits or a row is in.
    const PULLED: &str = "SELECT (SELECT count(*) FROM trades WHERE id LIKE 'big-%')
                               + (SELECT count(*) FROM shoal_commits WHERE state = 1)";
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let n = count(&b, PULLED);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "B never started pulling");
        std::thread::sleep(Duration::from_millis(2));
    };
    daemon_b.child.kill().expect("SIGKILL");
    daemon_b.child.wait().expect("reaped");
    let at_kill = count(&b, "SELECT count(*) FROM trades WHERE id LIKE 'big-%'");
    assert!(
        at_kill < ROWS,
        "the sync finished before the kill ({seen} then {at_kill} rows); nothing was cut"
    );
    // Whatever B imported is whole: rows arrive commit by commit, never half a row.
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM trades WHERE id LIKE 'big-%' AND symbol IS NULL"
        ),
        0
    );
    python(&b, "INSERT INTO trades VALUES ('b-3', 'TSLA', 3)");
    let _daemon_b = Daemon::up(&env, &b);
    eventually(120, "B has every row of A", || {
        count(&b, "SELECT count(*) FROM trades WHERE id LIKE 'big-%'") == ROWS
    });
    eventually(60, "A has every write B made around the kill", || {
        ["b-1", "b-2", "b-3"].iter().all(|id| has(&a, id))
    });
    assert_eq!(
        count(&a, "SELECT count(*) FROM trades"),
        count(&b, "SELECT count(*) FROM trades")
    );
}

#[test]
fn one_daemon_per_database_and_the_other_commands_go_through_it() {
    let env = Env::new();
    let (a, _b, _daemon_a) = pair(&env);
    // A second daemon for the same database is refused while the first answers.
    let out = env.shoal(&["up", &a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs"), "{err}");
    // So is a second endpoint with the same key.
    let out = env.shoal(&["serve", &a]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already accepts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Status says a daemon runs, and which.
    let status = env.json(&["status", &a]);
    assert!(status["daemon"]["pid"].as_u64().is_some(), "{status}");
}

#[test]
fn settings_are_read_and_changed_from_the_command_line() {
    let env = Env::new();
    assert_eq!(env.ok(&["config", "get", "sync_interval"]).trim(), "1m");
    env.ok(&["config", "set", "sync_interval", "90s"]);
    assert_eq!(env.ok(&["config", "get", "sync_interval"]).trim(), "90s");
    assert_eq!(env.ok(&["config", "get", "relay"]).trim(), "none");
    let all = env.json(&["config", "list"]);
    assert_eq!(all["sync_interval"], "90s");
    assert_eq!(all["mdns"], false);
    let out = env.shoal(&["config", "set", "sync_interval", "often"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    let out = env.shoal(&["config", "set", "colour", "blue"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the settings are"));
    assert_eq!(env.ok(&["config", "get", "sync_interval"]).trim(), "90s");
    // Completions for a shell name every command.
    let bash = env.ok(&["completions", "bash"]);
    for command in ["up", "peers", "events", "config", "sync", "invite"] {
        assert!(bash.contains(command), "{command} missing from completions");
    }
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_join_it_runs_resumes_it_after_restart() {
    // Before the inviter was reached; once it had let the joiner in; once its commits
    // were kept but not yet applied.
    for fault in [
        "join-before-session",
        "session-ready",
        "session-before-apply",
    ] {
        let env = Env::new();
        let (a, b) = (env.replica("a.db"), env.replica("b.db"));
        env.ok(&["group", &a, "create", "desk", "--table", "trades"]);
        python(&a, "INSERT INTO trades VALUES ('a1', 'AAPL', 1)");
        let _daemon_a = Daemon::up(&env, &a);
        let ticket = env.invite(&a, "member");
        let daemon_b = Daemon::up_to_die_at(&env, &b, fault);
        let out = env.shoal(&["join", &b, &ticket]);
        assert!(!out.status.success(), "{fault}: the join went through");
        assert!(!daemon_b.died().success(), "{fault}");
        python(&b, "INSERT INTO trades VALUES ('b1', 'MSFT', 2)");
        let _daemon_b = Daemon::up(&env, &b);
        eventually(
            30,
            &format!("{fault}: B is in the group with A's rows"),
            || has(&b, "a1"),
        );
        eventually(30, &format!("{fault}: A has B's row"), || has(&a, "b1"));
        let status = env.json(&["status", &b]);
        assert_eq!(status["groups"][0]["role"], "member", "{fault}: {status}");
    }
}

#[test]
fn a_running_daemon_says_when_a_table_stops_being_sealed() {
    let env = Env::new();
    let a = env.replica("a.db");
    let mut daemon = Daemon::up(&env, &a);
    python(&a, "INSERT INTO trades VALUES ('t1', 'AAPL', 1)");
    python(
        &a,
        "ALTER TABLE trades RENAME COLUMN qty TO quantity; UPDATE trades SET quantity = 2",
    );
    // The daemon's lines are read on a thread that owns it, so that a missing event
    // fails the test instead of hanging it; the daemon lives until `stop` is dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        loop {
            let line = daemon.line();
            let done = line["event"] == "not_sealed";
            if tx.send(line).is_err() || done {
                break;
            }
        }
        let _ = stopped.recv();
        drop(daemon);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a not_sealed event within 30 s");
        if line["event"] == "not_sealed" {
            assert_eq!(line["table"], "trades", "{line}");
            let reason = line["reason"].as_str().expect("reason");
            assert!(reason.contains("renamed to quantity"), "{reason}");
            break;
        }
    }
    // Nothing captured was lost: renamed back, the write made meanwhile is sealed.
    python(&a, "ALTER TABLE trades RENAME COLUMN quantity TO qty");
    eventually(30, "the write is sealed", || {
        count(&a, "SELECT count(*) FROM shoal_log") == 0
    });
    drop(stop);
    reader.join().expect("reader");
}

//! The `shoal` binary as people and scripts use it: real processes, real files.

use std::path::Path;
use std::process::Command;

mod common;

use common::{Shoal as Env, count};

#[test]
fn the_demo_converges() {
    let env = Env::new();
    let out = env.ok(&["demo"]);
    assert!(out.contains("identical journals: true"), "{out}");
    assert!(
        out.contains("ConcurrentWrite") && out.contains("UpdateDelete"),
        "{out}"
    );
    assert!(out.contains("emotional states on the phone: 0"), "{out}");
    assert!(out.contains("reached 0 of the other devices"), "{out}");
    let json = env.json(&["demo"]);
    assert_eq!(json["identical"], true);
    assert_eq!(json["revoked_write_reached"], 0);
    assert_eq!(json["steps"].as_array().map(Vec::len), Some(8), "{json}");
    // The daemons are gone: nothing is left running on the demo's files.
    let running = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" up ") && c.contains("laptop.db"))
        .count();
    assert_eq!(running, 0, "a demo daemon is still running");
}

#[test]
fn init_track_merge_and_inspect_from_the_command_line() {
    let env = Env::new();
    let (a, b) = (env.db("a.db"), env.db("b.db"));
    for db in ["a.db", "b.db"] {
        env.sql(db, "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);");
    }
    env.ok(&["init", &a]);
    env.ok(&["init", &b]);
    let tracked = env.json(&["track", &a, "notes"]);
    assert_eq!(tracked[0]["table"]["key_columns"][0], "id");
    env.ok(&["track", &b, "notes", "--policy", "review"]);
    env.sql(
        "a.db",
        "INSERT INTO notes VALUES ('1', 'one'), ('2', 'two');",
    );
    let status = env.json(&["status", &a]);
    assert_eq!(status["unsealed_changes"], 2);
    let merged = env.json(&["merge", &a, &b]);
    assert_eq!(merged["a_to_b"]["changes"], 2);
    assert_eq!(count(env.path("b.db"), "SELECT count(*) FROM notes"), 2);
    let log = env.json(&["log", &b]);
    assert_eq!(log[0]["changes"], 2);
    assert_eq!(log[0]["state"], "applied");
    // A concurrent edit, seen from the command line.
    env.sql("a.db", "UPDATE notes SET body = 'a' WHERE id = '1';");
    env.ok(&["seal", &a]);
    env.sql("b.db", "UPDATE notes SET body = 'b' WHERE id = '1';");
    env.ok_later(&["seal", &b]);
    env.ok(&["merge", &a, &b]);
    let conflicts = env.json(&["conflicts", &a, "list"]);
    let id = conflicts[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(conflicts[0]["kind"], "concurrent_write");
    let shown = env.ok(&["conflicts", &a, "show", &id[..6]]);
    assert!(shown.contains("'a'") && shown.contains("'b'"), "{shown}");
    let resolved = env.json(&["conflicts", &a, "resolve", &id, "--set", "body='both'"]);
    assert_eq!(resolved["status"], "resolved");
    env.ok(&["merge", &a, &b]);
    let on_b = env.json(&["conflicts", &b, "show", &id]);
    assert_eq!(on_b["status"], "closed");
    assert_eq!(
        count(
            env.path("b.db"),
            "SELECT count(*) FROM notes WHERE body = 'both'"
        ),
        1
    );
}

#[test]
fn groups_from_the_command_line() {
    let env = Env::new();
    let (a, b) = (env.db("a.db"), env.db("b.db"));
    for db in ["a.db", "b.db"] {
        env.sql(
            db,
            "CREATE TABLE trades (id TEXT PRIMARY KEY, qty INTEGER, note TEXT);",
        );
    }
    env.ok(&["init", &a]);
    let b_id = env.json(&["init", &b])["device"]
        .as_str()
        .expect("device")
        .to_owned();
    env.ok(&["track", &a, "trades"]);
    env.ok(&["track", &b, "trades"]);
    let g = env.json(&[
        "group",
        &a,
        "create",
        "desk",
        "--table",
        "trades",
        "--exclude",
        "trades.note",
    ]);
    env.sql("a.db", "INSERT INTO trades VALUES ('t1', 5, 'private');");
    assert_eq!(g["name"], "desk");
    assert_eq!(g["tables"][0]["excluded"][0], "note");
    assert_eq!(g["members"][0]["role"], "admin");
    let added = env.json(&["group", &a, "add", "desk", &b_id, "--role", "member"]);
    assert_eq!(added["members"].as_array().expect("members").len(), 2);
    env.ok(&["merge", &a, &b]);
    assert_eq!(
        count(
            env.path("b.db"),
            "SELECT count(*) FROM trades WHERE qty = 5 AND note IS NULL"
        ),
        1
    );
    let listed = env.json(&["group", &b, "list"]);
    assert_eq!(listed[0]["name"], "desk");
    // Only an admin changes the group; b is a member.
    let err = env.fails(&["revoke", &b, &b_id]);
    assert!(err.contains("not an admin"), "{err}");
    let members = env.json(&["revoke", &a, "--group", "desk", &b_id]);
    let revoked = members
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["device"] == b_id.as_str())
        .expect("b listed");
    assert!(revoked["role"].is_null());
    assert_eq!(revoked["revoked_after"], 0);
    let shown = env.ok(&["members", &a]);
    assert!(shown.contains("revoked"), "{shown}");
}

#[test]
fn mistakes_get_clear_errors() {
    let env = Env::new();
    let a = env.db("a.db");
    env.sql("a.db", "CREATE TABLE loose (x, y);");
    assert!(env.fails(&["status", &a]).contains("shoal init"));
    env.ok(&["init", &a]);
    assert!(env.fails(&["init", &a]).contains("already initialised"));
    assert!(
        env.fails(&["track", &a, "loose"])
            .contains("no primary key")
    );
    assert!(
        env.fails(&["conflicts", &a, "resolve", "abc"])
            .contains("--keep")
    );
    assert!(env.fails(&["merge", &a, &a]).contains("same file"));
    // A copy on another machine (another data directory) must be adopted.
    std::fs::copy(env.path("a.db"), env.path("copy.db")).expect("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["status", &env.db("copy.db")])
        .env("SHOAL_DATA_DIR", env.path("elsewhere"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("shoal adopt"),
        "{err}"
    );
}

#[test]
fn an_import_killed_midway_leaves_the_database_whole() {
    let env = Env::new();
    let (src, dst) = (env.db("src.db"), env.db("dst.db"));
    let schema = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, note TEXT);";
    env.sql("src.db", schema);
    env.sql("dst.db", schema);
    env.ok(&["init", &src]);
    env.ok(&["init", &dst]);
    env.ok(&["track", &src, "trades"]);
    env.ok(&["track", &dst, "trades"]);
    env.sql(
        "src.db",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
         INSERT INTO trades SELECT printf('t%08d', i), 'AAPL', i, 'a note of some length' FROM n;",
    );
    env.ok(&["seal", &src]);
    let journal = env.path("dst.db-journal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["merge", &src, &dst])
        .env("SHOAL_DATA_DIR", env.path("data"))
        .spawn()
        .expect("merge runs");
    // The rollback journal exists while the import's transaction is open.
    let mut killed = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if journal.exists() && count_journal(&journal) {
            child.kill().expect("SIGKILL");
            killed = true;
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::yield_now();
    }
    child.wait().expect("reaped");
    assert!(killed, "the import finished before it could be killed");
    let integrity: String = rusqlite::Connection::open(env.path("dst.db"))
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(integrity, "ok");
    // Whatever was applied is whole: every applied commit's rows, nothing else.
    let rows = count(env.path("dst.db"), "SELECT count(*) FROM trades");
    let applied = count(
        env.path("dst.db"),
        "SELECT coalesce(sum(changes), 0) FROM shoal_commits WHERE state = 0",
    );
    assert_eq!(rows, applied);
    // And syncing again completes it.
    env.ok(&["merge", &src, &dst]);
    assert_eq!(
        count(env.path("dst.db"), "SELECT count(*) FROM trades"),
        60_000
    );
}

/// Whether a journal file has content yet (the import has started writing).
fn count_journal(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
}

/// A `shoal` process running in the background, killed when dropped.
struct Background {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Background {
    fn start(env: &Env, args: &[&str]) -> Background {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_DATA_DIR", env.path("data"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("shoal starts");
        let stdout = child.stdout.take().expect("stdout");
        use std::io::BufRead;
        Background {
            child,
            lines: std::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next line the process prints, as JSON.
    fn json_line(&mut self) -> serde_json::Value {
        let line = self.lines.next().expect("a line").expect("readable");
        serde_json::from_str(&line).expect("json line")
    }

    /// Waits (up to 60 s) for the process to exit by itself.
    fn wait(mut self) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the process did not exit");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
        .to_string()
}

#[test]
fn three_processes_pair_by_ticket_and_changes_cross_a_mesh() {
    let env = Env::new();
    let schema = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, note TEXT);
                  CREATE TABLE moods (id TEXT PRIMARY KEY, feeling TEXT);";
    for name in ["a.db", "b.db", "c.db"] {
        env.sql(name, schema);
        env.ok(&["init", &env.db(name)]);
        env.ok(&["track", &env.db(name), "trades", "moods"]);
    }
    let (a, b, c) = (env.db("a.db"), env.db("b.db"), env.db("c.db"));
    env.sql(
        "a.db",
        "INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'a secret');
         INSERT INTO moods VALUES ('m1', 'a private mood');",
    );
    env.ok(&[
        "group",
        &a,
        "create",
        "desk",
        "--table",
        "trades",
        "--exclude",
        "trades.note",
    ]);

    // A invites B as an admin; B joins with the printed ticket; the inviter exits
    // once its one use is spent.
    let mut inviting = Background::start(
        &env,
        &["invite", &a, "--role", "admin", "--relay", "none", "--json"],
    );
    let ticket = inviting.json_line()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let joined = env.json(&["join", &b, &ticket, "--relay", "none"]);
    assert_eq!(joined["role"], "admin");
    assert!(inviting.wait().success());
    let port_b = free_udp_port();
    let mut serving_b = Background::start(
        &env,
        &["serve", &b, "--relay", "none", "--port", &port_b, "--json"],
    );
    let b_addr = serving_b.json_line()["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    drop(serving_b);
    // The inviter has stopped: the spent ticket cannot even reach it, and says so.
    let err = env.fails(&["join", &c, &ticket, "--relay", "none"]);
    assert!(err.contains("could not reach"), "{err}");

    // B invites C (on the port B will serve on), so A and C never meet.
    let mut inviting = Background::start(
        &env,
        &[
            "invite", &b, "--relay", "none", "--port", &port_b, "--json", "--no-qr",
        ],
    );
    let ticket = inviting.json_line()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    env.ok(&["join", &c, &ticket, "--relay", "none"]);
    assert!(inviting.wait().success());
    assert_eq!(
        count(
            env.path("c.db"),
            "SELECT count(*) FROM trades WHERE symbol = 'AAPL' AND note IS NULL"
        ),
        1,
        "A's row reached C through B, without the excluded column"
    );

    // B serves; A and C each sync with B only.
    let _serving_b = Background::start(
        &env,
        &["serve", &b, "--relay", "none", "--port", &port_b, "--json"],
    );
    env.sql(
        "a.db",
        "INSERT INTO trades VALUES ('t2', 'MSFT', 5, 'a secret 2');",
    );
    env.sql(
        "c.db",
        "INSERT INTO trades VALUES ('t3', 'NVDA', 7, 'c secret');",
    );
    let pushed = env.json(&["sync", &a, "--peer", &b_addr, "--relay", "none"]);
    assert_eq!(pushed["pushed"], 1, "{pushed}");
    // C syncs with no --peer: B's address was remembered from the ticket.
    let both = env.json(&["sync", &c, "--relay", "none"]);
    assert!(
        both["pulled"].as_u64() >= Some(1) && both["pushed"] == 1,
        "{both}"
    );
    env.ok(&["sync", &a, "--peer", &b_addr, "--relay", "none"]);
    for db in ["a.db", "b.db", "c.db"] {
        assert_eq!(
            count(
                env.path(db),
                "SELECT count(*) FROM trades WHERE id IN ('t1', 't2', 't3')"
            ),
            3,
            "{db} has every trade"
        );
    }
    for db in ["b.db", "c.db"] {
        assert_eq!(
            count(env.path(db), "SELECT count(*) FROM moods"),
            0,
            "{db}: moods stay on A"
        );
        assert_eq!(
            count(
                env.path(db),
                "SELECT count(*) FROM trades WHERE note IS NOT NULL AND id != 't3'"
            ),
            0,
            "{db}: notes stay home"
        );
    }
    assert_eq!(
        count(
            env.path("a.db"),
            "SELECT count(*) FROM trades WHERE id = 't3' AND note IS NULL"
        ),
        1,
        "C's note stayed on C"
    );
}

#[test]
fn rows_a_device_held_before_it_joined_reach_the_group() {
    let env = Env::new();
    let schema = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER);";
    for name in ["a.db", "b.db"] {
        env.sql(name, schema);
        env.ok(&["init", &env.db(name)]);
        env.ok(&["track", &env.db(name), "trades"]);
    }
    let (a, b) = (env.db("a.db"), env.db("b.db"));
    env.sql("a.db", "INSERT INTO trades VALUES ('a1', 'AAPL', 1);");
    env.ok(&["group", &a, "create", "desk", "--table", "trades"]);
    // B has used Shoal on its own for a while: its rows are sealed, in no group.
    env.sql(
        "b.db",
        "INSERT INTO trades VALUES ('b1', 'MSFT', 2), ('b2', 'NVDA', 3);",
    );
    env.ok(&["seal", &b]);
    let port_a = free_udp_port();
    let mut inviting = Background::start(
        &env,
        &[
            "invite", &a, "--relay", "none", "--port", &port_a, "--json", "--no-qr",
        ],
    );
    let ticket = inviting.json_line()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    env.ok(&["join", &b, &ticket, "--relay", "none"]);
    assert!(inviting.wait().success());
    // One of B's old rows is written again; both reach A, as does a new one.
    env.sql(
        "b.db",
        "UPDATE trades SET qty = 20 WHERE id = 'b1'; INSERT INTO trades VALUES ('b3', 'TSLA', 4);",
    );
    let mut serving_a = Background::start(
        &env,
        &["serve", &a, "--relay", "none", "--port", &port_a, "--json"],
    );
    let a_addr = serving_a.json_line()["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    env.ok(&["sync", &b, "--peer", &a_addr, "--relay", "none"]);
    let rows = |db: &str| {
        count(
            env.path(db),
            "SELECT count(*) FROM trades WHERE (id, qty) IN (VALUES ('a1', 1), ('b1', 20), ('b2', 3), ('b3', 4))",
        )
    };
    assert_eq!(rows("a.db"), 4, "A has every row B held, as B has it");
    assert_eq!(rows("b.db"), 4);
    let status = env.json(&["status", &a]);
    assert_eq!(status["held"], serde_json::json!([]), "{status}");
}

/// Two devices' files written by the code before the store's layers and before a
/// commit body was built on its head (made with the release of that code: writes,
/// a merge, a concurrent edit that left a conflict on both, a group made on one, a
/// write in it), with their devices' keys. Read, merged and joined by a file made
/// now, they converge, and every commit they hold verifies as it did.
#[test]
fn files_written_before_open_merge_and_converge_with_a_file_written_now() {
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/two-devices");
    for db in ["a.db", "b.db"] {
        std::fs::copy(fixture.join(db), env.path(db)).expect("copy the file");
    }
    let keys = env.path("data/devices");
    std::fs::create_dir_all(&keys).expect("data dir");
    for entry in std::fs::read_dir(fixture.join("data/devices")).expect("keys") {
        let entry = entry.expect("key");
        let to = keys.join(entry.file_name());
        std::fs::copy(entry.path(), &to).expect("copy the key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("mode");
        }
    }
    let (a, b, c) = (env.db("a.db"), env.db("b.db"), env.db("c.db"));
    // They open as they were: their commits, their conflict records, their group.
    assert_eq!(env.json(&["log", &a]).as_array().map(Vec::len), Some(6));
    assert_eq!(env.json(&["log", &b]).as_array().map(Vec::len), Some(3));
    assert_eq!(env.json(&["status", &b])["conflicts_pending"], 1);
    let records = env.json(&["conflicts", &b, "list"]);
    assert_eq!(records[0]["kind"], "concurrent_write", "{records}");
    assert_eq!(env.json(&["group", &a, "list"])[0]["name"], "desk");
    // A file made now takes every commit of the local log from both, each verified
    // on the way in: a signature or a hash computed otherwise would refuse it.
    env.sql(
        "c.db",
        "CREATE TABLE notes (id TEXT PRIMARY KEY, title TEXT, body TEXT, n INTEGER);
         CREATE TABLE tags (note TEXT, tag TEXT, PRIMARY KEY (note, tag));",
    );
    env.ok(&["init", &c]);
    env.ok(&["track", &c, "notes", "tags"]);
    env.ok(&["merge", &a, &c]);
    env.ok(&["merge", &b, &c]);
    // The local log's three commits and the group's three, all applied.
    let log = env.json(&["log", &c]);
    assert_eq!(log.as_array().map(Vec::len), Some(6), "{log}");
    assert!(
        log.as_array()
            .into_iter()
            .flatten()
            .all(|c| c["state"] == "applied"),
        "{log}"
    );
    let rows = |db: &str, table: &str| -> Vec<String> {
        let sql = match table {
            "notes" => {
                "SELECT id || '|' || quote(title) || '|' || quote(body) || '|' || quote(n) FROM notes ORDER BY id"
            }
            _ => "SELECT note || '|' || quote(tag) FROM tags ORDER BY note, tag",
        };
        let conn = rusqlite::Connection::open(env.path(db)).expect("open");
        let mut stmt = conn.prepare(sql).expect("select");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    for db in ["a.db", "b.db"] {
        for table in ["notes", "tags"] {
            assert_eq!(rows(db, table), rows("c.db", table), "{db} {table}");
        }
    }
    assert_eq!(
        rows("c.db", "notes"),
        [
            "n1|'from b'|'hello'|10",
            "n3|'third'|'after the group'|3",
            "n4|'fourth'|'a only'|4"
        ]
    );
    // A write made now reaches the files written before, and theirs reach it.
    env.sql("c.db", "INSERT INTO notes VALUES ('n5', 'now', NULL, 5);");
    env.sql("b.db", "UPDATE notes SET n = 11 WHERE id = 'n4';");
    env.ok(&["merge", &c, &a]);
    env.ok(&["merge", &b, &c]);
    env.ok(&["merge", &c, &a]);
    for db in ["a.db", "b.db"] {
        assert_eq!(
            count(env.path(db), "SELECT count(*) FROM notes WHERE id = 'n5'"),
            1,
            "{db}"
        );
    }
    assert_eq!(
        count(env.path("a.db"), "SELECT n FROM notes WHERE id = 'n4'"),
        11
    );
    for db in ["a.db", "b.db"] {
        for table in ["notes", "tags"] {
            assert_eq!(rows(db, table), rows("c.db", table), "{db} {table}");
        }
    }
}

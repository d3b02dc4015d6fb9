//! Devices converge and nothing is lost on the paths a user walks that are not the
//! happy one: the app's schema changing under Shoal, tables untracked and tracked
//! again, copied files. Real files, writes by Python's `sqlite3` in a process of its
//! own, and the `shoal` binary.

use std::process::Command;

mod common;

use common::Shoal;

/// Two replicas `a.db` and `b.db` of one table `t (id TEXT PRIMARY KEY, v TEXT)`,
/// with the rows given already merged.
struct Pair {
    sh: Shoal,
}

impl std::ops::Deref for Pair {
    type Target = Shoal;

    fn deref(&self) -> &Shoal {
        &self.sh
    }
}

impl Pair {
    fn new(rows: &str) -> Pair {
        let pair = Pair { sh: Shoal::new() };
        for db in ["a.db", "b.db"] {
            pair.python(db, "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT);");
            pair.ok(&["init", &pair.db(db)]);
            pair.ok(&["track", &pair.db(db), "t"]);
        }
        if !rows.is_empty() {
            pair.python("a.db", &format!("INSERT INTO t VALUES {rows};"));
            pair.merge();
        }
        pair
    }

    /// Runs shoal, expecting success; returns stdout and stderr.
    fn ok(&self, args: &[&str]) -> (String, String) {
        self.sh.ok_with_stderr(args)
    }

    /// `shoal merge a.db b.db`; returns what it printed on stderr.
    fn merge(&self) -> String {
        self.ok(&["merge", &self.db("a.db"), &self.db("b.db")]).1
    }

    /// The rows of `t` in `db`, every column, in key order, as text.
    fn rows(&self, db: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.path(db)).expect("open");
        let mut stmt = conn.prepare("SELECT * FROM t ORDER BY id").expect("select");
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get_ref(i).map(|v| match v {
                        rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        rusqlite::types::ValueRef::Text(t) => {
                            format!("'{}'", String::from_utf8_lossy(t))
                        }
                        rusqlite::types::ValueRef::Blob(b) => format!("x{}", b.len()),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|cells| cells.join("|"))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }
}

#[test]
fn a_renamed_column_stops_its_table_from_sealing_and_nothing_is_corrupted() {
    let p = Pair::new("('1', 'one'), ('2', 'two')");
    p.python(
        "a.db",
        "ALTER TABLE t RENAME COLUMN v TO vv; UPDATE t SET vv = 'renamed' WHERE id = '1';",
    );
    let warned = p.merge();
    assert!(
        warned.contains("renamed to vv") && warned.contains("RENAME COLUMN vv TO v"),
        "{warned}"
    );
    // b holds what it held: never the old column's name as a value.
    assert_eq!(p.rows("b.db"), ["'1'|'one'", "'2'|'two'"]);
    let status = p.json(&["status", &p.db("a.db")]);
    assert_eq!(
        status["tables"][0]["schema_problem"]["change"], "column_renamed",
        "{status}"
    );
    assert!(status["unsealed_changes"].as_u64() >= Some(1), "{status}");
    // Renamed back, the change made meanwhile is sealed and reaches b.
    p.python("a.db", "ALTER TABLE t RENAME COLUMN vv TO v;");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'renamed'", "'2'|'two'"]);
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
    let status = p.json(&["status", &p.db("a.db")]);
    assert!(status["tables"][0]["schema_problem"].is_null(), "{status}");
    assert_eq!(status["unsealed_changes"], 0);
}

#[test]
fn a_column_renamed_on_every_device_and_tracked_again_goes_on_syncing() {
    let p = Pair::new("('1', 'one')");
    for db in ["a.db", "b.db"] {
        p.python(db, "ALTER TABLE t RENAME COLUMN v TO w;");
        let (out, _) = p.ok(&["track", &p.db(db), "t"]);
        assert!(out.contains("no longer captured"), "{out}");
    }
    p.python("a.db", "UPDATE t SET w = 'new' WHERE id = '1';");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'new'"]);
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
}

#[test]
fn values_written_to_an_added_column_sync_once_the_peer_has_it() {
    let p = Pair::new("('1', 'one'), ('2', 'two')");
    p.python(
        "a.db",
        "ALTER TABLE t ADD COLUMN x TEXT;
         UPDATE t SET x = 'X' WHERE id = '1';
         INSERT INTO t VALUES ('3', 'three', 'x3');",
    );
    // b has not added the column: the new row arrives without it, and the values for
    // it are held.
    p.merge();
    let status = p.json(&["status", &p.db("b.db")]);
    let held: u64 = status["held"]
        .as_array()
        .expect("held")
        .iter()
        .map(|h| h["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(held, 2, "{status}");
    assert_eq!(p.rows("b.db"), ["'1'|'one'", "'2'|'two'", "'3'|'three'"]);
    // Once b adds it too (no `shoal track` anywhere), everything arrives.
    p.python("b.db", "ALTER TABLE t ADD COLUMN x TEXT;");
    p.merge();
    assert_eq!(
        p.rows("b.db"),
        ["'1'|'one'|'X'", "'2'|'two'|NULL", "'3'|'three'|'x3'"]
    );
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
    // And the new column syncs both ways from then on.
    p.python("b.db", "UPDATE t SET x = 'from b' WHERE id = '2';");
    p.merge();
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
    assert_eq!(p.rows("a.db")[1], "'2'|'two'|'from b'");
}

#[test]
fn an_added_column_with_a_default_sends_only_the_values_that_differ() {
    let p = Pair::new("('1', 'one'), ('2', 'two'), ('3', 'three')");
    for db in ["a.db", "b.db"] {
        p.python(db, "ALTER TABLE t ADD COLUMN n INTEGER NOT NULL DEFAULT 7;");
    }
    p.python("a.db", "UPDATE t SET n = 8 WHERE id = '2';");
    let sealed = p.json(&["seal", &p.db("a.db")]);
    assert_eq!(sealed["changes"], 1, "{sealed}");
    p.merge();
    assert_eq!(
        p.rows("b.db"),
        ["'1'|'one'|7", "'2'|'two'|8", "'3'|'three'|7"]
    );
}

#[test]
fn updates_made_while_untracked_are_caught_when_tracked_again() {
    let p = Pair::new("('1', 'one'), ('2', 'two'), ('3', 'three')");
    p.ok(&["untrack", &p.db("a.db"), "t"]);
    p.python(
        "a.db",
        "UPDATE t SET v = 'changed' WHERE id = '1';
         DELETE FROM t WHERE id = '2';
         INSERT INTO t VALUES ('4', 'four');",
    );
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'one'", "'2'|'two'", "'3'|'three'"]);
    p.ok(&["track", &p.db("a.db"), "t"]);
    p.merge();
    assert_eq!(
        p.rows("b.db"),
        ["'1'|'changed'", "'3'|'three'", "'4'|'four'"]
    );
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
    // Only what changed was sent: row 3 kept the version it had.
    let log = p.json(&["log", &p.db("a.db")]);
    assert_eq!(log[0]["changes"], 3, "{log}");
}

#[test]
fn a_renamed_table_is_reported_and_its_changes_wait_until_it_is_renamed_back() {
    let p = Pair::new("('1', 'one')");
    p.python(
        "a.db",
        "INSERT INTO t VALUES ('2', 'two'); ALTER TABLE t RENAME TO t2;",
    );
    let warned = p.merge();
    assert!(warned.contains("renamed to t2"), "{warned}");
    let status = p.json(&["status", &p.db("a.db")]);
    assert_eq!(
        status["tables"][0]["schema_problem"]["change"],
        "table_renamed"
    );
    assert_eq!(status["unsealed_changes"], 1, "{status}");
    p.python(
        "a.db",
        "UPDATE t2 SET v = 'uno' WHERE id = '1'; ALTER TABLE t2 RENAME TO t;",
    );
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'uno'", "'2'|'two'"]);
}

#[test]
fn a_dropped_table_is_reported_until_it_is_untracked() {
    let p = Pair::new("('1', 'one')");
    p.python("a.db", "INSERT INTO t VALUES ('2', 'two'); DROP TABLE t;");
    let warned = p.merge();
    assert!(
        warned.contains("was dropped") && warned.contains("shoal untrack"),
        "{warned}"
    );
    // Nothing was sent for it: b keeps its rows.
    assert_eq!(p.rows("b.db"), ["'1'|'one'"]);
    p.ok(&["untrack", &p.db("a.db"), "t"]);
    let status = p.json(&["status", &p.db("a.db")]);
    assert_eq!(status["unsealed_changes"], 0, "{status}");
    assert!(status["tables"][0]["schema_problem"].is_null(), "{status}");
    assert!(p.merge().is_empty());
}

#[test]
fn a_table_made_again_by_a_migration_tool_is_captured_again_when_tracked() {
    let p = Pair::new("('1', 'one'), ('2', 'two')");
    // The twelve-step ALTER of SQLite's documentation: a new table, the rows copied
    // (changed on the way), the old table dropped, the new one renamed.
    p.python(
        "a.db",
        "CREATE TABLE t_new (id TEXT PRIMARY KEY, v TEXT NOT NULL);
         INSERT INTO t_new SELECT id, upper(v) FROM t;
         DROP TABLE t;
         ALTER TABLE t_new RENAME TO t;
         UPDATE t SET v = 'TWO!' WHERE id = '2';",
    );
    let warned = p.merge();
    assert!(
        warned.contains("capture triggers of t are gone"),
        "{warned}"
    );
    assert_eq!(p.rows("b.db"), ["'1'|'one'", "'2'|'two'"]);
    p.ok(&["track", &p.db("a.db"), "t"]);
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'ONE'", "'2'|'TWO!'"]);
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
}

#[test]
fn a_column_dropped_between_untrack_and_track_leaves_the_rest_syncing() {
    let p = Pair::new("('1', 'one')");
    for db in ["a.db", "b.db"] {
        p.python(db, "ALTER TABLE t ADD COLUMN extra TEXT;");
    }
    p.merge();
    p.ok(&["untrack", &p.db("a.db"), "t"]);
    p.python(
        "a.db",
        "ALTER TABLE t DROP COLUMN extra; UPDATE t SET v = 'uno' WHERE id = '1';",
    );
    let (out, _) = p.ok(&["track", &p.db("a.db"), "t"]);
    assert!(out.contains("extra of t are no longer captured"), "{out}");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'uno'|NULL"]);
    assert!(p.path("b.db").exists());
}

#[test]
fn a_copied_file_that_was_not_adopted_refuses_to_sign_and_says_so() {
    let p = Pair::new("('1', 'one')");
    std::fs::copy(p.path("a.db"), p.path("c.db")).expect("copy");
    p.python("c.db", "INSERT INTO t VALUES ('c', 'from the copy');");
    p.python("a.db", "INSERT INTO t VALUES ('a', 'from the original');");
    let out = p.shoal(&["seal", &p.db("c.db")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the copy sealed");
    assert!(
        err.contains("is a copy of") && err.contains("shoal adopt"),
        "{err}"
    );
    let (status, _) = p.ok(&["status", &p.db("c.db")]);
    assert!(status.contains("copy of"), "{status}");
    // The original goes on; the copy, adopted, seals what was written to it.
    p.ok(&["seal", &p.db("a.db")]);
    p.ok(&["adopt", &p.db("c.db")]);
    p.ok(&["merge", &p.db("a.db"), &p.db("c.db")]);
    assert_eq!(p.rows("a.db"), p.rows("c.db"));
    assert_eq!(p.rows("a.db").len(), 3);
}

#[test]
fn one_row_too_large_for_a_commit_stops_nothing_else() {
    let p = Pair::new("('1', 'one')");
    p.python(
        "a.db",
        "INSERT INTO t VALUES ('big', printf('%.*c', 17000000, 'x'));
         INSERT INTO t VALUES ('2', 'two');
         UPDATE t SET v = 'uno' WHERE id = '1';",
    );
    let (_, warned) = p.ok(&["seal", &p.db("a.db")]);
    assert!(warned.contains("row ('big') of t is"), "{warned}");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'uno'", "'2'|'two'"]);
    let status = p.json(&["status", &p.db("a.db")]);
    assert_eq!(status["oversized"][0]["key"], "('big')", "{status}");
    assert_eq!(status["unsealed_changes"], 1, "{status}");
    // Later writes go on syncing, and once the row is smaller it syncs too.
    p.python("a.db", "INSERT INTO t VALUES ('3', 'three');");
    p.merge();
    assert_eq!(p.rows("b.db").len(), 3);
    p.python("a.db", "UPDATE t SET v = 'small now' WHERE id = 'big';");
    p.merge();
    assert_eq!(p.rows("a.db"), p.rows("b.db"));
    assert_eq!(p.rows("b.db").len(), 4);
    let status = p.json(&["status", &p.db("a.db")]);
    assert_eq!(status["oversized"], serde_json::json!([]), "{status}");
    assert_eq!(status["unsealed_changes"], 0, "{status}");
}

#[test]
fn a_write_made_while_untracked_does_not_leak_through_a_change_captured_before() {
    let p = Pair::new("('1', 'one')");
    // Captured, not yet sealed, when the table is untracked.
    p.python("a.db", "UPDATE t SET v = 'before untrack' WHERE id = '1';");
    p.ok(&["untrack", &p.db("a.db"), "t"]);
    p.python("a.db", "UPDATE t SET v = 'while untracked' WHERE id = '1';");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'before untrack'"]);
    p.ok(&["track", &p.db("a.db"), "t"]);
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'while untracked'"]);
}

#[test]
fn a_fork_at_the_same_seq_is_found_by_both_sides_of_a_merge() {
    let p = Pair::new("('1', 'one')");
    // A whole machine cloned: the file and its data directory, key included, so the
    // clone signs as a's device where nothing can tell it is a copy.
    std::fs::copy(p.path("a.db"), p.path("clone.db")).expect("copy");
    let cloned = p.path("cloned-data");
    std::fs::create_dir_all(cloned.join("devices")).expect("mkdir");
    for entry in std::fs::read_dir(p.path("data/devices")).expect("devices") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") {
            std::fs::copy(entry.path(), cloned.join("devices").join(&name)).expect("key");
        }
    }
    let clone = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_DATA_DIR", &cloned)
            .output()
            .expect("shoal runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Both write and seal: the same author, the same seq, two commits.
    p.python("a.db", "UPDATE t SET v = 'by a' WHERE id = '1';");
    p.python(
        "clone.db",
        "UPDATE t SET v = 'by the clone' WHERE id = '1';",
    );
    p.ok(&["seal", &p.db("a.db")]);
    clone(&["seal", &p.db("clone.db")]);
    p.merge();
    // b and the clone hold one seq of a's device each, with other heads.
    clone(&["merge", &p.db("clone.db"), &p.db("b.db")]);
    for (db, status) in [
        ("b.db", p.json(&["status", &p.db("b.db")])),
        (
            "clone.db",
            serde_json::from_str(&clone(&["status", &p.db("clone.db"), "--json"])).expect("json"),
        ),
    ] {
        let forked = status["forked_authors"].as_array().expect("forked").len();
        assert_eq!(forked, 1, "{db} did not find the fork: {status}");
    }
}

#[test]
fn a_table_untracked_after_its_column_was_renamed_blocks_nothing_else() {
    let p = Pair::new("('1', 'one')");
    p.python(
        "a.db",
        "CREATE TABLE other (id TEXT PRIMARY KEY, w TEXT);
         ALTER TABLE t RENAME COLUMN v TO vv; UPDATE t SET vv = 'renamed' WHERE id = '1';",
    );
    p.ok(&["untrack", &p.db("a.db"), "t"]);
    p.ok(&["track", &p.db("a.db"), "other"]);
    p.python("a.db", "INSERT INTO other VALUES ('o', 'still syncs');");
    p.ok(&["seal", &p.db("a.db")]);
    p.python("b.db", "CREATE TABLE other (id TEXT PRIMARY KEY, w TEXT);");
    p.ok(&["track", &p.db("b.db"), "other"]);
    p.merge();
    let conn = rusqlite::Connection::open(p.path("b.db")).expect("open");
    let w: String = conn
        .query_row("SELECT w FROM other WHERE id = 'o'", [], |r| r.get(0))
        .expect("o reached b");
    assert_eq!(w, "still syncs");
    assert_eq!(p.rows("b.db"), ["'1'|'one'"]);
}

#[test]
fn a_unique_clash_leaves_both_devices_alike_with_one_record_that_a_resolution_closes() {
    for policy in ["review", "lww"] {
        let p = Pair::new("");
        for db in ["a.db", "b.db"] {
            p.python(db, "CREATE UNIQUE INDEX t_v ON t (v);");
            p.ok(&["track", &p.db(db), "t", "--policy", policy]);
        }
        p.python("a.db", "INSERT INTO t VALUES ('u1', 'same@example.com');");
        p.ok(&["seal", &p.db("a.db")]);
        p.python("b.db", "INSERT INTO t VALUES ('u2', 'same@example.com');");
        p.ok_later(&["seal", &p.db("b.db")]);
        p.merge();
        // The row that took the address first stands on both, b's own included.
        assert_eq!(p.rows("a.db"), ["'u1'|'same@example.com'"], "{policy}");
        assert_eq!(p.rows("b.db"), ["'u1'|'same@example.com'"], "{policy}");
        let open = |db: &str| p.json(&["conflicts", &p.db(db), "list"]);
        let (ca, cb) = (open("a.db"), open("b.db"));
        assert_eq!(ca.as_array().map(Vec::len), Some(1), "{ca}");
        assert_eq!(ca[0]["id"], cb[0]["id"]);
        assert_eq!(ca[0]["status"], "pending");
        let status = p.json(&["status", &p.db("b.db")]);
        assert_eq!(status["set_aside"][0]["key"], "('u2')", "{status}");
        // b gives its row another address: it comes back on both, and the record
        // closes on a too.
        let id = cb[0]["id"].as_str().expect("id").to_owned();
        p.ok(&[
            "conflicts",
            &p.db("b.db"),
            "resolve",
            &id,
            "--set",
            "v='bob@example.com'",
        ]);
        p.merge();
        let both = ["'u1'|'same@example.com'", "'u2'|'bob@example.com'"];
        assert_eq!(p.rows("a.db"), both, "{policy}");
        assert_eq!(p.rows("b.db"), both, "{policy}");
        assert_eq!(open("a.db"), serde_json::json!([]));
        assert_eq!(open("b.db"), serde_json::json!([]));
    }
}

#[test]
fn a_cascading_delete_reaches_a_loan_made_meanwhile_on_both_devices() {
    let p = Pair::new("");
    for db in ["a.db", "b.db"] {
        p.python(
            db,
            "CREATE TABLE accts (id TEXT PRIMARY KEY, owner TEXT);
             CREATE TABLE loans (id TEXT PRIMARY KEY, acct TEXT REFERENCES accts(id) ON DELETE CASCADE, amount INTEGER);",
        );
        p.ok(&["track", &p.db(db), "accts", "loans"]);
    }
    p.python("a.db", "INSERT INTO accts VALUES ('x', 'Ann');");
    p.merge();
    p.python(
        "a.db",
        "PRAGMA foreign_keys = ON; DELETE FROM accts WHERE id = 'x';",
    );
    p.ok(&["seal", &p.db("a.db")]);
    p.python(
        "b.db",
        "PRAGMA foreign_keys = ON; INSERT INTO loans VALUES ('l1', 'x', 7);",
    );
    p.ok_later(&["seal", &p.db("b.db")]);
    p.merge();
    let loans = |db: &str| {
        let conn = rusqlite::Connection::open(p.path(db)).expect("open");
        conn.query_row("SELECT count(*) FROM loans", [], |r| r.get::<_, i64>(0))
            .expect("count")
    };
    assert_eq!(loans("a.db"), 0);
    assert_eq!(loans("b.db"), 0);
    let open = |db: &str| p.json(&["conflicts", &p.db(db), "list"]);
    let (ca, cb) = (open("a.db"), open("b.db"));
    assert_eq!(ca.as_array().map(Vec::len), Some(1), "{ca}");
    assert_eq!(ca[0]["id"], cb[0]["id"]);
}

#[test]
fn a_device_whose_clock_ran_ahead_is_told_and_so_is_its_peer() {
    let p = Pair::new("('1', 'one')");
    // a's clock once ran a year ahead: its hybrid clock remembers it.
    let year_ms: i64 = 365 * 86_400_000;
    let conn = rusqlite::Connection::open(p.path("a.db")).expect("open");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    conn.execute(
        "UPDATE shoal_meta SET value = ?1 WHERE key = 'hlc'",
        [(now_ms + year_ms) << 16],
    )
    .expect("clock");
    drop(conn);
    p.python("a.db", "UPDATE t SET v = 'from the future' WHERE id = '1';");
    let (_, err) = p.ok(&["seal", &p.db("a.db")]);
    assert!(err.contains("days ahead"), "{err}");
    let out = p.shoal(&["merge", &p.db("a.db"), &p.db("b.db")]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // b holds the commit and says so; a hears that its clock is the cause.
    assert!(stdout.contains("1 commit(s) there are held"), "{stdout}");
    assert!(stderr.contains("days ahead"), "{stderr}");
    assert_eq!(p.rows("b.db"), ["'1'|'one'"]);
    let status = p.json(&["status", &p.db("b.db")]);
    assert_eq!(status["future_commits"], 1, "{status}");
    // The advice works: a stamps the commit again, b drops the old one for it, and
    // a's later writes are not held either.
    assert!(
        stderr.contains(&format!("shoal restamp {}", p.db("a.db"))),
        "{stderr}"
    );
    let (out, _) = p.ok(&["restamp", &p.db("a.db")]);
    assert!(
        out.contains("stamped again 1 commit(s) in 1 group(s)"),
        "{out}"
    );
    let (out, err) = p.ok(&["merge", &p.db("a.db"), &p.db("b.db")]);
    assert!(
        out.contains("1 commit(s) held there were withdrawn"),
        "{out}"
    );
    assert!(!err.contains("days ahead"), "{err}");
    assert_eq!(p.rows("b.db"), ["'1'|'from the future'"]);
    p.python("a.db", "UPDATE t SET v = 'from now' WHERE id = '1';");
    p.merge();
    assert_eq!(p.rows("b.db"), ["'1'|'from now'"]);
    let status = p.json(&["status", &p.db("b.db")]);
    assert_eq!(status["future_commits"], 0, "{status}");
    assert_eq!(status["waiting_commits"], 0, "{status}");
}

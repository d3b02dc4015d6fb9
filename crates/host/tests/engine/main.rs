//! The engine's behaviour end to end: real SQLite files, real triggers, real commits,
//! replicas synced through the session host.

use rusqlite::types::ValueRef;
use shoal_core::{GroupId, Value};
use shoal_store::{ConflictKind, ConflictStatus, Policy, Resolution, Side, Store, StoreError};
use shoal_testkit::{World, exec};

mod constraints;
mod convergence;
mod groups;
mod inbox;
mod processes;

const NOTES: &str = "CREATE TABLE notes (id TEXT PRIMARY KEY, title, body, n INTEGER);";

/// Syncs two replicas as `shoal merge` does: a session per log either holds, run by
/// the same host the network and the simulation run.
fn sync(a: &mut Store, b: &mut Store) {
    let mut groups = a.group_ids().expect("groups");
    for g in b.group_ids().expect("groups") {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for g in groups {
        shoal_host::exchange(a, b, g, shoal_proto::Config::default()).expect("exchange");
    }
}

/// Every row of a table, ordered by its key, with each value as SQLite holds it.
fn dump(store: &Store, table: &str) -> Vec<Vec<Value>> {
    let conn = store.connection();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
        .expect("dump");
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..n)
            .map(|i| match row.get_ref(i).expect("value") {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(r) => Value::Real(r),
                ValueRef::Text(t) => Value::Text(t.to_vec()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            })
            .collect())
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn text(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec())
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .connection()
        .query_row(sql, [], |r| r.get(0))
        .expect(sql)
}

#[test]
fn writes_from_sql_reach_the_other_replica() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(
        &a,
        "INSERT INTO notes VALUES ('n1', 'first', 'hello', 1), ('n2', 'second', 'x', 2), ('n3', 'third', 'y', 3);",
    );
    exec(
        &a,
        "UPDATE notes SET body = 'hello, world' WHERE id = 'n1'; DELETE FROM notes WHERE id = 'n2';",
    );
    exec(&a, "UPDATE notes SET id = 'n4' WHERE id = 'n3';");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
    assert_eq!(
        dump(&b, "notes"),
        vec![
            vec![
                text("n1"),
                text("first"),
                text("hello, world"),
                Value::Integer(1)
            ],
            vec![text("n4"), text("third"), text("y"), Value::Integer(3)],
        ]
    );
    // Applying remote changes is never captured again.
    assert_eq!(count(&b, "SELECT count(*) FROM shoal_log"), 0);
    assert_eq!(b.status().expect("status").own_commits, 0);
    // And the other way.
    exec(&b, "UPDATE notes SET n = 40 WHERE id = 'n4';");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "notes")[1][3], Value::Integer(40));
}

#[test]
fn the_apps_own_triggers_see_remote_changes() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    // An app that keeps an audit trail with a trigger of its own.
    exec(
        &b,
        "CREATE TABLE audit (id TEXT, what TEXT);
         CREATE TRIGGER audit_notes AFTER INSERT ON notes BEGIN
             INSERT INTO audit VALUES (NEW.id, 'inserted');
         END;",
    );
    exec(&a, "INSERT INTO notes VALUES ('n1', 'first', 'x', 1);");
    sync(&mut a, &mut b);
    assert_eq!(count(&b, "SELECT count(*) FROM notes"), 1);
    assert_eq!(count(&b, "SELECT count(*) FROM audit WHERE id = 'n1'"), 1);
    // Shoal's own triggers fired too, and what they logged was taken back.
    assert_eq!(count(&b, "SELECT count(*) FROM shoal_log"), 0);
    assert_eq!(b.status().expect("status").own_commits, 0);
}

#[test]
fn received_commits_wait_until_applied() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(
        &a,
        "INSERT INTO notes VALUES ('n1', 't', 'b', 1), ('n2', 't', 'b', 2);",
    );
    a.seal().expect("seal");
    exec(&a, "UPDATE notes SET n = 10 WHERE id = 'n1';");
    a.seal().expect("seal");
    let commits = a
        .export(&GroupId::DEFAULT, &Default::default())
        .expect("export");
    let report = b.receive(commits[..1].to_vec()).expect("receive");
    assert_eq!((report.waiting, report.commits_applied), (1, 0));
    assert_eq!(count(&b, "SELECT count(*) FROM notes"), 0);
    assert_eq!(
        b.version_vector(&GroupId::DEFAULT).expect("vv"),
        Default::default()
    );
    // The same commit again is kept once.
    let report = b.receive(commits).expect("receive");
    assert_eq!((report.waiting, report.duplicates), (2, 1));
    let report = b.apply_waiting().expect("apply");
    assert_eq!((report.commits_applied, report.changes_applied), (2, 3));
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
    assert_eq!(
        b.version_vector(&GroupId::DEFAULT).expect("vv"),
        a.version_vector(&GroupId::DEFAULT).expect("vv")
    );
    assert_eq!(b.status().expect("status").waiting_commits, 0);
    assert_eq!(b.status().expect("status").own_commits, 0);
}

#[test]
fn only_changed_columns_are_sent() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 1, 'b', 1);");
    a.seal().expect("seal");
    // title is untyped, so 1 -> 1.0 changes what is stored; n is INTEGER, so 1.0 is 1.
    exec(
        &a,
        "UPDATE notes SET title = 1.0, body = 'changed', n = 1.0 WHERE id = 'n1';",
    );
    a.seal().expect("seal");
    let commits = a
        .export(&GroupId::DEFAULT, &Default::default())
        .expect("export");
    let last = commits
        .last()
        .expect("commit")
        .clone()
        .verify()
        .expect("verify");
    let table = &last.body.tables[0];
    let written: Vec<&str> = table.rows[0]
        .cells
        .iter()
        .map(|c| table.columns[c.column as usize].as_str())
        .collect();
    assert_eq!(written, vec!["title", "body"]);
}

#[test]
fn values_round_trip_byte_for_byte() {
    let w = World::new();
    let schema = "CREATE TABLE v (id INTEGER PRIMARY KEY, x, r REAL);";
    let mut a = w.replica("a", schema, &["v"]);
    let mut b = w.replica("b", schema, &["v"]);
    let values = [
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Real(-0.0),
        Value::Real(f64::INFINITY),
        Value::Real(f64::NEG_INFINITY),
        Value::Real(f64::NAN),
        Value::Real(1.5e-300),
        Value::Text(vec![0xff, 0xfe, 0x00, b'a']),
        Value::Text("ünïcødé ✓".as_bytes().to_vec()),
        Value::Blob(vec![0, 1, 2, 255]),
        Value::Blob(vec![]),
        Value::Null,
    ];
    {
        let conn = a.connection();
        let mut stmt = conn
            .prepare("INSERT INTO v VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for (i, v) in values.iter().enumerate() {
            let bind = match v {
                Value::Null => rusqlite::types::Value::Null,
                Value::Integer(i) => rusqlite::types::Value::Integer(*i),
                Value::Real(r) => rusqlite::types::Value::Real(*r),
                Value::Text(_) | Value::Blob(_) => rusqlite::types::Value::Null,
            };
            let raw = match v {
                Value::Text(t) => ValueRef::Text(t),
                Value::Blob(b) => ValueRef::Blob(b),
                _ => ValueRef::from(&bind),
            };
            let raw = rusqlite::types::ToSqlOutput::Borrowed(raw);
            stmt.execute(rusqlite::params![i as i64, raw, raw])
                .expect("insert");
        }
    }
    sync(&mut a, &mut b);
    let (da, db) = (dump(&a, "v"), dump(&b, "v"));
    assert_eq!(da, db, "replicas differ");
    assert_eq!(da.len(), values.len());
    // The untyped column holds exactly what was written (SQLite stores NaN as NULL).
    for (row, v) in da.iter().zip(&values) {
        let expect = match v {
            Value::Real(r) if r.is_nan() => Value::Null,
            v => v.clone(),
        };
        assert_eq!(row[1], expect);
    }
}

#[test]
fn composite_and_without_rowid_keys_sync() {
    let w = World::new();
    let schema =
        "CREATE TABLE t (a INTEGER, b TEXT, c BLOB, v, PRIMARY KEY (b, a, c)) WITHOUT ROWID;";
    let mut a = w.replica("a", schema, &["t"]);
    let mut b = w.replica("b", schema, &["t"]);
    exec(
        &a,
        "INSERT INTO t VALUES (1, 'x', X'00', 'one'), (1, 'y', X'00', 'two'), (2, 'x', X'01', 'three');",
    );
    sync(&mut a, &mut b);
    exec(
        &b,
        "UPDATE t SET v = 'TWO' WHERE a = 1 AND b = 'y'; DELETE FROM t WHERE a = 2;",
    );
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "t"), dump(&b, "t"));
    assert_eq!(dump(&a, "t").len(), 2);
    let tables = a.tables().expect("tables");
    assert_eq!(tables[0].key_columns, vec!["b", "a", "c"]);
}

#[test]
fn tables_that_cannot_be_synced_are_refused_with_reasons() {
    let w = World::new();
    let mut a = w.replica(
        "a",
        "CREATE TABLE nokey (x, y); CREATE TABLE k (id TEXT PRIMARY KEY, v);
         CREATE VIEW kv AS SELECT * FROM k; CREATE VIRTUAL TABLE search USING fts5(body);",
        &[],
    );
    let mut reason = |t: &str| match a.track(t, None) {
        Err(StoreError::Untrackable { reason, .. }) => reason,
        other => panic!("{t}: expected a refusal, got {other:?}"),
    };
    assert!(reason("nokey").contains("no primary key"));
    assert!(reason("kv").contains("view"));
    assert!(reason("search").contains("virtual"));
    assert!(reason("missing").contains("no such table"));
    assert!(reason("shoal_log").contains("belong to Shoal"));
    assert!(matches!(a.untrack("k"), Err(StoreError::NotTracked { .. })));
}

#[test]
fn a_dropped_table_does_not_block_sealing_or_sync() {
    let w = World::new();
    let schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, v); CREATE TABLE scratch (id TEXT PRIMARY KEY, v);";
    let mut a = w.replica("a", schema, &["notes", "scratch"]);
    let mut b = w.replica("b", schema, &["notes", "scratch"]);
    exec(
        &a,
        "INSERT INTO scratch VALUES ('1', 'x'); INSERT INTO notes VALUES ('1', 'kept');",
    );
    exec(&a, "DROP TABLE scratch;");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes").len(), 1);
    // What was captured of it is kept and the table reported, until it is untracked.
    assert_eq!(count(&a, "SELECT count(*) FROM shoal_log"), 1);
    let problems = a.schema_problems().expect("problems");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].change, shoal_store::SchemaChange::TableDropped);
    a.untrack("scratch").expect("untrack");
    assert_eq!(count(&a, "SELECT count(*) FROM shoal_log"), 0);
    assert!(a.schema_problems().expect("problems").is_empty());
}

#[test]
fn integer_keys_are_warned_about() {
    let w = World::new();
    let mut a = w.replica(
        "a",
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v);",
        &[],
    );
    let report = a.track("t", None).expect("track");
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0].contains("UUID"),
        "{}",
        report.warnings[0]
    );
    let mut b = w.replica("b", "CREATE TABLE t (id TEXT PRIMARY KEY, v);", &[]);
    assert!(b.track("t", None).expect("track").warnings.is_empty());
}

#[test]
fn rows_present_before_tracking_are_synced() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &[]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(
        &a,
        "INSERT INTO notes VALUES ('old1', 'a', 'b', 1), ('old2', 'c', 'd', 2);",
    );
    let report = a.track("notes", Some(Policy::Lww)).expect("track");
    assert_eq!(report.rows_captured, 2);
    // Re-tracking captures nothing twice.
    a.seal().expect("seal");
    assert_eq!(a.track("notes", None).expect("retrack").rows_captured, 0);
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes").len(), 2);
}

#[test]
fn untracked_tables_stay_local_and_untrack_stops_capture() {
    let w = World::new();
    let schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, v); CREATE TABLE private (id TEXT PRIMARY KEY, v);";
    let mut a = w.replica("a", schema, &["notes"]);
    let mut b = w.replica("b", schema, &["notes", "private"]);
    exec(
        &a,
        "INSERT INTO notes VALUES ('1', 'shared'); INSERT INTO private VALUES ('1', 'secret');",
    );
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "private").len(), 0);
    a.untrack("notes").expect("untrack");
    exec(&a, "INSERT INTO notes VALUES ('2', 'after untrack');");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes").len(), 1);
    // Re-tracking picks up rows inserted and deleted in the meantime.
    exec(&a, "DELETE FROM notes WHERE id = '1';");
    assert_eq!(a.track("notes", None).expect("retrack").rows_captured, 2);
    sync(&mut a, &mut b);
    assert_eq!(
        dump(&b, "notes"),
        vec![vec![text("2"), text("after untrack")]]
    );
}

#[test]
fn a_copy_with_the_key_in_reach_signs_nothing_until_adopted() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    a.seal().expect("seal");
    drop(a);
    std::fs::copy(w.path("a"), w.path("copy")).expect("copy");
    let mut copy = Store::open(w.path("copy"), w.options()).expect("open copy");
    assert!(copy.status().expect("status").copy_of.is_some());
    exec(&copy, "INSERT INTO notes VALUES ('n2', 't', 'b', 2);");
    let err = copy.seal().expect_err("refused");
    assert!(matches!(err, StoreError::Copied { .. }), "{err}");
    assert!(err.to_string().contains("shoal adopt"), "{err}");
    // The write is kept, and sealed once the copy is a device of its own.
    drop(copy);
    let mut adopted = Store::adopt(w.path("copy"), w.options()).expect("adopt");
    assert_eq!(adopted.seal().expect("seal").changes, 1);
    // The original still signs; a file that was moved is not a copy.
    let mut a = Store::open(w.path("a"), w.options()).expect("open");
    exec(&a, "INSERT INTO notes VALUES ('n3', 't', 'b', 3);");
    assert_eq!(a.seal().expect("seal").changes, 1);
    drop(a);
    std::fs::rename(w.path("a"), w.path("moved")).expect("move");
    let mut moved = Store::open(w.path("moved"), w.options()).expect("open moved");
    exec(&moved, "INSERT INTO notes VALUES ('n4', 't', 'b', 4);");
    assert_eq!(moved.seal().expect("seal").changes, 1);
}

#[test]
fn a_copied_database_must_be_adopted_before_it_writes() {
    let w = World::new();
    let a = w.replica("a", NOTES, &["notes"]);
    let device = a.device();
    drop(a);
    std::fs::copy(w.path("a"), w.path("copy")).expect("copy");
    let elsewhere = {
        let mut o = w.options();
        o.data_dir = w.dir().join("other-machine");
        o
    };
    let err = Store::open(w.path("copy"), elsewhere.clone())
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::KeyMissing { .. }));
    assert!(err.to_string().contains("shoal adopt"), "{err}");
    let adopted = Store::adopt(w.path("copy"), elsewhere).expect("adopt");
    assert_ne!(adopted.device(), device);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = w
            .dir()
            .join("other-machine/devices")
            .join(format!("{}.key", adopted.device()));
        assert_eq!(
            std::fs::metadata(key).expect("key").permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(matches!(
        Store::init(w.path("a"), w.options()),
        Err(StoreError::AlreadyInitialised { .. })
    ));
    assert!(matches!(
        Store::open(w.path("nothing"), w.options()),
        Err(StoreError::NotInitialised { .. })
    ));
}

fn conflicts_of(store: &Store) -> Vec<shoal_store::Conflict> {
    store.conflicts(false).expect("conflicts")
}

/// Produces a conflict on both replicas, resolves it on `a` as asked, and checks the
/// resolution reaches `b` and closes the record there.
fn check_conflict(
    setup: &str,
    write_a: &str,
    write_b: &str,
    kind: ConflictKind,
    resolution: Resolution,
    expect_after: Vec<Vec<Value>>,
) {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, setup);
    sync(&mut a, &mut b);
    // b's write is sealed later, so it wins.
    exec(&a, write_a);
    a.seal().expect("seal");
    w.tick(5);
    exec(&b, write_b);
    b.seal().expect("seal");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "notes"), dump(&b, "notes"), "replicas diverged");
    let (ca, cb) = (conflicts_of(&a), conflicts_of(&b));
    assert_eq!(ca.len(), 1, "a: {ca:?}");
    assert_eq!(cb.len(), 1, "b: {cb:?}");
    assert_eq!(ca[0].kind, kind);
    assert_eq!(ca[0].id, cb[0].id, "both devices name the conflict alike");
    assert_eq!(ca[0].status, ConflictStatus::Pending);
    let resolved = a.resolve(&ca[0].id[..6], resolution).expect("resolve");
    assert_eq!(resolved.status, ConflictStatus::Resolved);
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "notes"), expect_after);
    assert_eq!(dump(&b, "notes"), expect_after);
    let on_b = b.conflict(&cb[0].id).expect("b's record");
    assert_eq!(on_b.status, ConflictStatus::Closed, "{on_b:?}");
    assert!(conflicts_of(&b).is_empty());
    assert!(conflicts_of(&a).is_empty());
}

fn row(id: &str, title: &str, body: &str, n: i64) -> Vec<Value> {
    vec![text(id), text(title), text(body), Value::Integer(n)]
}

#[test]
fn concurrent_write_conflict_is_found_resolved_and_closed() {
    // b writes later, so b wins; a keeps its own value by resolving.
    check_conflict(
        "INSERT INTO notes VALUES ('n', 't', 'base', 0);",
        "UPDATE notes SET body = 'from a' WHERE id = 'n';",
        "UPDATE notes SET body = 'from b' WHERE id = 'n';",
        ConflictKind::ConcurrentWrite,
        Resolution::Keep(Side::Local),
        vec![row("n", "t", "from a", 0)],
    );
}

#[test]
fn keeping_the_winner_still_closes_the_other_record() {
    check_conflict(
        "INSERT INTO notes VALUES ('n', 't', 'base', 0);",
        "UPDATE notes SET body = 'from a' WHERE id = 'n';",
        "UPDATE notes SET body = 'from b' WHERE id = 'n';",
        ConflictKind::ConcurrentWrite,
        Resolution::Keep(Side::Remote),
        vec![row("n", "t", "from b", 0)],
    );
}

#[test]
fn update_delete_conflict_is_found_resolved_and_closed() {
    // a updates, b deletes: the delete wins; a brings the row back.
    check_conflict(
        "INSERT INTO notes VALUES ('n', 't', 'base', 0);",
        "UPDATE notes SET body = 'edited' WHERE id = 'n';",
        "DELETE FROM notes WHERE id = 'n';",
        ConflictKind::UpdateDelete,
        Resolution::Keep(Side::Local),
        vec![row("n", "t", "edited", 0)],
    );
}

#[test]
fn update_delete_conflict_can_confirm_the_delete() {
    check_conflict(
        "INSERT INTO notes VALUES ('n', 't', 'base', 0);",
        "UPDATE notes SET body = 'edited' WHERE id = 'n';",
        "DELETE FROM notes WHERE id = 'n';",
        ConflictKind::UpdateDelete,
        Resolution::Keep(Side::Remote),
        vec![],
    );
}

#[test]
fn insert_collision_is_found_resolved_and_closed() {
    check_conflict(
        "",
        "INSERT INTO notes VALUES ('same', 'from a', 'a', 1);",
        "INSERT INTO notes VALUES ('same', 'from b', 'b', 2);",
        ConflictKind::InsertCollision,
        Resolution::Set(vec![("body".into(), text("merged by hand"))]),
        vec![row("same", "from b", "merged by hand", 2)],
    );
}

#[test]
fn constraint_violation_is_kept_not_blocking() {
    let w = World::new();
    let schema_a = "CREATE TABLE notes (id TEXT PRIMARY KEY, title, body, n INTEGER);";
    // b's schema has a UNIQUE title that a's lacks.
    let schema_b = "CREATE TABLE notes (id TEXT PRIMARY KEY, title UNIQUE, body, n INTEGER);";
    let mut a = w.replica("a", schema_a, &["notes"]);
    let mut b = w.replica("b", schema_b, &["notes"]);
    exec(&b, "INSERT INTO notes VALUES ('b1', 'clash', 'mine', 0);");
    b.seal().expect("seal");
    w.tick(1_000);
    exec(
        &a,
        "INSERT INTO notes VALUES ('a1', 'clash', 'theirs', 1), ('a2', 'fine', 'ok', 2);",
    );
    sync(&mut a, &mut b);
    // The rest of the batch applied; the later row is set aside, kept in the inbox.
    assert_eq!(dump(&b, "notes").len(), 2);
    let c = conflicts_of(&b);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, ConflictKind::Constraint);
    assert!(
        c[0].detail.as_deref().unwrap_or("").contains("UNIQUE"),
        "{:?}",
        c[0].detail
    );
    // Still clashing: taking the remote side is refused with a reason.
    let err = b
        .resolve(&c[0].id, Resolution::Keep(Side::Remote))
        .expect_err("still clashes");
    assert!(err.to_string().contains("constraint"), "{err}");
    // Rename the local row, then the remote change applies.
    exec(&b, "UPDATE notes SET title = 'renamed' WHERE id = 'b1';");
    b.resolve(&c[0].id, Resolution::Keep(Side::Remote))
        .expect("resolve");
    assert_eq!(dump(&b, "notes").len(), 3);
}

#[test]
fn foreign_keys_are_checked_after_the_whole_batch() {
    let w = World::new();
    let schema = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT);
                  CREATE TABLE notes (id TEXT PRIMARY KEY, trade_id TEXT REFERENCES trades(id), body);";
    let mut a = w.replica("a", schema, &["trades", "notes"]);
    let mut b = w.replica("b", schema, &["trades", "notes"]);
    // a's app does not enforce foreign keys; b's connection does.
    exec(&a, "PRAGMA foreign_keys = OFF;");
    exec(&b, "PRAGMA foreign_keys = ON;");
    // The child is sealed in an earlier commit than its parent: one batch, no conflict.
    exec(&a, "INSERT INTO notes VALUES ('n1', 't1', 'note first');");
    a.seal().expect("seal");
    exec(&a, "INSERT INTO trades VALUES ('t1', 'AAPL');");
    sync(&mut a, &mut b);
    assert!(conflicts_of(&b).is_empty(), "{:?}", conflicts_of(&b));
    assert_eq!(dump(&b, "notes").len(), 1);
    // An orphan is kept, and reported.
    exec(&a, "INSERT INTO notes VALUES ('n2', 'missing', 'orphan');");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
    let c = conflicts_of(&b);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].kind, ConflictKind::Constraint);
    assert_eq!(c[0].key_text, "('n2')");
    assert!(
        c[0].detail
            .as_deref()
            .unwrap_or("")
            .starts_with("FOREIGN KEY"),
        "{:?}",
        c[0].detail
    );
    let resolved = b
        .resolve(&c[0].id, Resolution::Keep(Side::Remote))
        .expect("accept");
    assert_eq!(resolved.status, ConflictStatus::Resolved);
    // NULL references nothing, so it is no violation.
    exec(&a, "INSERT INTO notes VALUES ('n3', NULL, 'unattached');");
    sync(&mut a, &mut b);
    assert!(conflicts_of(&b).is_empty());
    // b's own connection still enforces them.
    let enforced: bool = b
        .connection()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .expect("pragma");
    assert!(enforced);
}

#[test]
fn lww_policy_keeps_conflicts_for_audit_only() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    a.set_policy("notes", Policy::Lww).expect("policy");
    exec(&a, "INSERT INTO notes VALUES ('n', 't', 'base', 0);");
    sync(&mut a, &mut b);
    exec(&a, "UPDATE notes SET body = 'a' WHERE id = 'n';");
    a.seal().expect("seal");
    w.tick(1);
    exec(&b, "UPDATE notes SET body = 'b' WHERE id = 'n';");
    sync(&mut a, &mut b);
    let c = conflicts_of(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].status, ConflictStatus::Auto);
    assert_eq!(a.status().expect("status").conflicts_pending, 0);
}

#[test]
fn a_sequential_edit_is_not_a_conflict() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n', 't', 'base', 0);");
    sync(&mut a, &mut b);
    exec(&b, "UPDATE notes SET body = 'b saw a' WHERE id = 'n';");
    sync(&mut a, &mut b);
    exec(&a, "DELETE FROM notes WHERE id = 'n';");
    sync(&mut a, &mut b);
    assert!(conflicts_of(&a).is_empty() && conflicts_of(&b).is_empty());
    assert!(dump(&b, "notes").is_empty());
}

fn export_all(store: &mut Store) -> Vec<shoal_core::SignedCommit> {
    store.seal().expect("seal");
    store
        .export(&GroupId::DEFAULT, &Default::default())
        .expect("export")
}

fn fingerprint(store: &Store) -> (Vec<Vec<Value>>, i64, i64) {
    (
        dump(store, "notes"),
        count(store, "SELECT count(*) FROM shoal_commits"),
        count(store, "SELECT count(*) FROM shoal_rows"),
    )
}

#[test]
fn a_tampered_commit_is_refused_and_changes_nothing() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    a.seal().expect("seal");
    exec(&a, "INSERT INTO notes VALUES ('n2', 't', 'b', 2);");
    let mut commits = export_all(&mut a);
    let before = fingerprint(&b);
    let last = commits.last_mut().expect("commit");
    let i = last.body.len() - 3;
    last.body[i] ^= 0x01;
    let err = b.import(commits).expect_err("tampered");
    assert!(matches!(err, StoreError::Core(_)), "{err}");
    assert_eq!(
        fingerprint(&b),
        before,
        "a refused batch changed the database"
    );
}

#[test]
fn a_gap_waits_until_it_fills() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    for i in 0..3 {
        exec(
            &a,
            &format!("INSERT INTO notes VALUES ('n{i}', 't', 'b', {i});"),
        );
        a.seal().expect("seal");
    }
    let commits = export_all(&mut a);
    let report = b.import(vec![commits[2].clone()]).expect("import");
    assert_eq!((report.commits_applied, report.waiting), (0, 1));
    assert!(dump(&b, "notes").is_empty());
    assert_eq!(b.status().expect("status").waiting_commits, 1);
    let report = b.import(vec![commits[0].clone()]).expect("import");
    assert_eq!((report.commits_applied, report.waiting), (1, 1));
    let report = b.import(vec![commits[1].clone()]).expect("import");
    assert_eq!((report.commits_applied, report.waiting), (2, 0));
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
    // Replays change nothing.
    let report = b.import(commits).expect("replay");
    assert_eq!((report.commits_applied, report.duplicates), (0, 3));
}

#[test]
fn commits_changing_one_row_in_turn_apply_in_order_in_one_import() {
    // Changes are applied sorted by key across the commits of an import; those to one
    // row must keep their commits' order, or an update would wait for its insert and a
    // delete would land before the write it follows.
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    for sql in [
        "INSERT INTO notes VALUES ('n2', 'first', 'b', 1); INSERT INTO notes VALUES ('n1', 'x', 'y', 0);",
        "UPDATE notes SET title = 'second' WHERE id = 'n2';",
        "DELETE FROM notes WHERE id = 'n2'; INSERT INTO notes VALUES ('n0', 'z', 'z', 9);",
        "INSERT INTO notes VALUES ('n2', 'again', 'c', 3);",
        "UPDATE notes SET body = 'last' WHERE id = 'n2'; DELETE FROM notes WHERE id = 'n1';",
    ] {
        exec(&a, sql);
        a.seal().expect("seal");
    }
    let commits = export_all(&mut a);
    assert_eq!(commits.len(), 5);
    let report = b.import(commits).expect("import");
    assert_eq!(
        (report.commits_applied, report.held, report.conflicts),
        (5, 0, 0)
    );
    assert_eq!(
        dump(&b, "notes"),
        vec![
            vec![text("n0"), text("z"), text("z"), Value::Integer(9)],
            vec![text("n2"), text("again"), text("last"), Value::Integer(3)],
        ]
    );
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
}

#[test]
fn a_fork_is_recorded_and_its_author_refused() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    let original = export_all(&mut a);
    // A second database with a's key signs a different commit 2: a fork. A copy with
    // the key in reach refuses to sign, so the key itself is copied to a second data
    // directory, as someone cloning a whole machine would.
    let device = a.device();
    drop(a);
    std::fs::copy(w.path("a"), w.path("a2")).expect("copy");
    let cloned = w.dir().join("cloned-machine");
    std::fs::create_dir_all(cloned.join("devices")).expect("mkdir");
    let key = format!("devices/{device}.key");
    std::fs::copy(w.dir().join("data").join(&key), cloned.join(&key)).expect("key");
    let mut a = Store::open(w.path("a"), w.options()).expect("open");
    exec(&a, "INSERT INTO notes VALUES ('n2', 't', 'b', 2);");
    a.seal().expect("seal");
    let mut twin_options = w.options();
    twin_options.data_dir = cloned;
    let mut twin = Store::open(w.path("a2"), twin_options).expect("open twin");
    exec(&twin, "INSERT INTO notes VALUES ('evil', 't', 'b', 9);");
    twin.seal().expect("seal twin");
    let forked = twin
        .export(&GroupId::DEFAULT, &Default::default())
        .expect("export");
    b.import(original).expect("import");
    // b first hears of the twin's commit 2, then of the original's: two commits 2.
    b.import(vec![forked[1].clone()]).expect("import twin");
    let report = b
        .import(
            a.export(&GroupId::DEFAULT, &Default::default())
                .expect("export"),
        )
        .expect("import fork");
    assert_eq!(report.forks.len(), 1, "{report:?}");
    assert_eq!(report.forks[0].seq, 2);
    let status = b.status().expect("status");
    assert_eq!(status.forked_authors, vec![a.device().to_string()]);
    assert_eq!(count(&b, "SELECT count(*) FROM shoal_forks"), 1);
    // Everything the forked author sends from now on is refused.
    exec(&a, "INSERT INTO notes VALUES ('n3', 't', 'b', 3);");
    let later = export_all(&mut a);
    let report = b.import(later).expect("import");
    assert!(
        report.refused.iter().any(|r| r.contains("forked")),
        "{report:?}"
    );
    assert_eq!(report.commits_applied, 0);
    assert!(!dump(&b, "notes").iter().any(|r| r[0] == text("n3")));
}

#[test]
fn a_commit_whose_clock_goes_back_is_refused_and_its_author_distrusted() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    let first = export_all(&mut a)[0].clone().verify().expect("verify");
    // a's own key signs a well-formed seq 2 whose clock is not later than seq 1's.
    let seed = std::fs::read_to_string(
        w.dir()
            .join("data/devices")
            .join(format!("{}.key", a.device())),
    )
    .expect("key file");
    let seed: [u8; 32] = hex::decode(seed.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let key = shoal_core::DeviceKey::from_seed(seed);
    let mut body = first.body.clone();
    body.head.seq = shoal_core::Seq(2);
    body.head.prev = first.hash;
    body.tables[0].rows[0].key = vec![text("n2")];
    let backwards = body.seal(&key).expect("seal");
    b.import(vec![first.signed.clone()]).expect("import");
    let report = b.import(vec![backwards.signed]).expect("import");
    assert_eq!(report.commits_applied, 0);
    assert!(
        report.refused.iter().any(|r| r.contains("clock")),
        "{report:?}"
    );
    assert_eq!(dump(&b, "notes").len(), 1);
    assert_eq!(
        b.status().expect("status").forked_authors,
        vec![a.device().to_string()]
    );
}

#[test]
fn a_far_future_commit_is_held_until_the_clock_reaches_it() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let now = w.now();
    // a's clock runs ten minutes fast.
    let skew = 10 * 60_000;
    drop(a);
    a = Store::open(w.path("a"), w.options_ahead(skew)).expect("open");
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    let report = b.import(export_all(&mut a)).expect("import");
    assert_eq!((report.commits_applied, report.future), (0, 1));
    assert!(dump(&b, "notes").is_empty());
    assert_eq!(b.status().expect("status").future_commits, 1);
    // b's clock did not move because of it.
    let clock = b.status().expect("status").clock;
    let physical: u64 = clock
        .split('.')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("clock");
    assert!(
        physical < now + skew,
        "b's clock {clock} was dragged forward"
    );
    w.tick(skew);
    let report = b.apply_waiting().expect("retry");
    assert_eq!(report.commits_applied, 1);
    assert_eq!(dump(&b, "notes").len(), 1);
}

#[test]
fn changes_for_unknown_columns_are_held_until_the_schema_has_them() {
    let w = World::new();
    let mut a = w.replica(
        "a",
        "CREATE TABLE notes (id TEXT PRIMARY KEY, title, mood);",
        &["notes"],
    );
    let mut b = w.replica(
        "b",
        "CREATE TABLE notes (id TEXT PRIMARY KEY, title);",
        &["notes"],
    );
    exec(&a, "INSERT INTO notes VALUES ('n1', 'hello', 'calm');");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes"), vec![vec![text("n1"), text("hello")]]);
    let status = b.status().expect("status");
    assert_eq!(status.held.len(), 1);
    assert!(status.held[0].reason.contains("mood"), "{:?}", status.held);
    exec(&b, "ALTER TABLE notes ADD COLUMN mood;");
    let report = b.track("notes", None).expect("retrack");
    assert_eq!(report.held_applied, 1);
    assert_eq!(
        dump(&b, "notes"),
        vec![vec![text("n1"), text("hello"), text("calm")]]
    );
    assert!(b.status().expect("status").held.is_empty());
}

#[test]
fn changes_for_unknown_tables_are_held_until_tracked() {
    let w = World::new();
    let schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, v);";
    let mut a = w.replica("a", schema, &["notes"]);
    let mut b = w.replica("b", schema, &[]);
    exec(&a, "INSERT INTO notes VALUES ('1', 'x');");
    sync(&mut a, &mut b);
    assert!(dump(&b, "notes").is_empty());
    assert_eq!(b.track("notes", None).expect("track").held_applied, 1);
    assert_eq!(dump(&b, "notes").len(), 1);
}

#[test]
fn an_unsealed_local_write_is_never_overwritten_by_an_import() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    exec(&a, "INSERT INTO notes VALUES ('n', 'a', 'a', 1);");
    let from_a = export_all(&mut a);
    w.tick(10);
    exec(&b, "INSERT INTO notes VALUES ('n', 'b', 'b', 2);");
    // b has not sealed; importing a's commit must not lose b's later write.
    b.import(from_a).expect("import");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "notes"), vec![row("n", "b", "b", 2)]);
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
}

#[test]
fn conflicts_report_what_to_do_with_unknown_ids() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let err = a
        .resolve("nope", Resolution::Keep(Side::Local))
        .expect_err("unknown");
    assert!(err.to_string().contains("shoal conflicts"), "{err}");
}

#[test]
fn a_row_inserted_anew_by_a_device_without_a_column_leaves_that_column_at_its_default() {
    let w = World::new();
    let mut a = w.replica(
        "a",
        "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT, c TEXT);",
        &["t"],
    );
    let mut b = w.replica("b", "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT);", &["t"]);
    exec(
        &a,
        "INSERT INTO t VALUES ('k', 'first', 'from its first life');",
    );
    sync(&mut a, &mut b);
    // b, which has no column c, deletes the row and makes it again: one insert that
    // starts a new life, without c.
    exec(
        &b,
        "DELETE FROM t WHERE id = 'k'; INSERT INTO t VALUES ('k', 'second');",
    );
    sync(&mut a, &mut b);
    assert_eq!(
        dump(&a, "t"),
        vec![vec![text("k"), text("second"), Value::Null]],
        "c kept what the row's first life left"
    );
    // b adds the column: the first life's value it held is stale, and both agree.
    exec(&b, "ALTER TABLE t ADD COLUMN c TEXT;");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "t"), dump(&b, "t"));
}

#[test]
fn a_device_whose_clock_ran_ahead_is_told_so() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let year_ms = 365 * 86_400_000;
    let now = w.now();
    w.set_now(now + year_ms);
    exec(&a, "INSERT INTO notes VALUES ('n1', 't', 'b', 1);");
    a.seal().expect("seal");
    assert_eq!(a.status().expect("status").clock_ahead_ms, None);
    // The machine's clock is put right: the commit stays a year ahead of it.
    w.set_now(now);
    let ahead = a.status().expect("status").clock_ahead_ms.expect("told");
    assert!(ahead >= year_ms - 1_000, "{ahead}");
}

#[test]
fn a_device_whose_clock_ran_ahead_stamps_its_commits_again_and_members_take_them() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    let year_ms = 365 * 86_400_000;
    let now = w.now();
    // Two commits sealed while a's clock ran a year ahead; b holds them.
    w.set_now(now + year_ms);
    exec(&a, "INSERT INTO notes VALUES ('n1', 'from a', 'b', 1);");
    a.seal().expect("seal");
    exec(&a, "UPDATE notes SET n = 2 WHERE id = 'n1';");
    a.seal().expect("seal");
    w.set_now(now);
    sync(&mut a, &mut b);
    let held = b.status().expect("status");
    assert_eq!((held.future_commits, held.waiting_commits), (1, 1));
    assert!(dump(&b, "notes").is_empty());
    // The clock is right again: a stamps both again, and b drops the old ones.
    let report = a.restamp().expect("restamp");
    assert_eq!((report.commits, report.groups), (2, 1));
    assert!(report.ahead_ms >= year_ms - 1_000, "{}", report.ahead_ms);
    assert_eq!(a.status().expect("status").clock_ahead_ms, None);
    assert_eq!(a.restamp().expect("again").commits, 0);
    sync(&mut a, &mut b);
    let held = b.status().expect("status");
    assert_eq!((held.future_commits, held.waiting_commits), (0, 0));
    assert_eq!(dump(&b, "notes"), dump(&a, "notes"));
    assert_eq!(
        dump(&b, "notes"),
        vec![vec![text("from a"), text("b"), Value::Integer(2)]]
            .into_iter()
            .map(|mut r| {
                r.insert(0, text("n1"));
                r
            })
            .collect::<Vec<_>>()
    );
    // A later write by b beats a's restamped one on both: a's own merge state was
    // stamped again too, not only its commits.
    w.tick(1_000);
    exec(&b, "UPDATE notes SET title = 'from b' WHERE id = 'n1';");
    w.tick(1_000);
    exec(&a, "UPDATE notes SET body = 'later on a' WHERE id = 'n1';");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "notes"), dump(&b, "notes"));
    assert_eq!(dump(&a, "notes")[0][1], text("from b"));
    assert_eq!(dump(&a, "notes")[0][2], text("later on a"));
    assert!(a.conflicts(false).expect("conflicts").is_empty());
    // A third replica that never held the old commits takes the new ones as any.
    let mut c = w.replica("c", NOTES, &["notes"]);
    sync(&mut b, &mut c);
    assert_eq!(dump(&c, "notes"), dump(&a, "notes"));
}

#[test]
fn a_member_that_applied_withdrawn_commits_reports_a_fork() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    let year_ms = 365 * 86_400_000;
    let now = w.now();
    // Both clocks run ahead: b applies a's commit.
    w.set_now(now + year_ms);
    exec(&a, "INSERT INTO notes VALUES ('n1', 'from a', 'b', 1);");
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes").len(), 1);
    w.set_now(now);
    assert_eq!(a.restamp().expect("restamp").commits, 1);
    // b cannot take it back: it holds two commits of a for one seq, and says so.
    let x = shoal_host::exchange(
        &mut a,
        &mut b,
        GroupId::DEFAULT,
        shoal_proto::Config::default(),
    )
    .expect("exchange");
    assert!(
        x.initiator
            .refused
            .iter()
            .chain(&x.responder.refused)
            .any(|r| r.contains("forked")),
        "{:?} {:?}",
        x.initiator.refused,
        x.responder.refused
    );
}

#[test]
fn devices_that_hear_concurrent_writes_in_other_orders_hold_the_same_inbox() {
    let w = World::new();
    let mut writers: Vec<Store> = ["a", "b", "c"]
        .iter()
        .map(|n| w.replica(n, NOTES, &["notes"]))
        .collect();
    let mut d1 = w.replica("d1", NOTES, &["notes"]);
    let mut d2 = w.replica("d2", NOTES, &["notes"]);
    exec(
        &writers[0],
        "INSERT INTO notes VALUES ('n', 't', 'base', 0);",
    );
    for i in 1..3 {
        let (x, y) = writers.split_at_mut(i);
        sync(&mut x[0], &mut y[0]);
    }
    sync(&mut writers[0], &mut d1);
    sync(&mut writers[0], &mut d2);
    // Three writes to one column, none of whose authors saw another's.
    for (i, s) in writers.iter_mut().enumerate() {
        w.tick(10);
        exec(
            s,
            &format!("UPDATE notes SET body = 'from {i}' WHERE id = 'n';"),
        );
        s.seal().expect("seal");
    }
    // d1 hears them oldest first, d2 newest first.
    for i in [0, 1, 2] {
        sync(&mut writers[i], &mut d1);
    }
    for i in [2, 0, 1] {
        sync(&mut writers[i], &mut d2);
    }
    let open = |s: &Store| {
        let mut ids: Vec<(String, Vec<String>)> = conflicts_of(s)
            .into_iter()
            .map(|c| (c.id, c.columns))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(dump(&d1, "notes"), dump(&d2, "notes"));
    // The two writes that lost, each one record, on both.
    assert_eq!(open(&d1).len(), 2, "{:?}", conflicts_of(&d1));
    assert_eq!(open(&d1), open(&d2));
    // Everyone ends with the same inbox.
    for s in &mut writers {
        sync(s, &mut d1);
    }
    for s in &writers {
        assert_eq!(open(s), open(&d1));
    }
}

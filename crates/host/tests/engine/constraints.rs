//! Constraints of the app's schema, settled from the commits alone: every device sets
//! aside the same rows and keeps the same record of it.

use shoal_core::Value;
use shoal_store::{ConflictKind, ConflictStatus, Policy, Resolution, Side, Store};

use super::{World, count, dump, exec, sync, text};

const USERS: &str = "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT);";

/// Two replicas of `schema`, tracking `table` under `policy`.
fn pair(w: &World, schema: &str, table: &str, policy: Option<Policy>) -> (Store, Store) {
    let make = |name: &str| {
        let mut s = w.replica(name, schema, &[]);
        s.track(table, policy).expect("track");
        s
    };
    (make("a"), make("b"))
}

/// `a` writes `first`, then (a second later) `b` writes `second`, and they sync.
fn clash(w: &World, a: &mut Store, b: &mut Store, first: &str, second: &str) {
    exec(a, first);
    a.seal().expect("seal");
    w.tick(1_000);
    exec(b, second);
    b.seal().expect("seal");
    sync(a, b);
}

fn open(store: &Store) -> Vec<shoal_store::Conflict> {
    store.conflicts(false).expect("conflicts")
}

#[test]
fn the_row_that_took_a_unique_value_first_stands_on_every_device() {
    for policy in [None, Some(Policy::Lww)] {
        let w = World::new();
        let (mut a, mut b) = pair(&w, USERS, "users", policy);
        clash(
            &w,
            &mut a,
            &mut b,
            "INSERT INTO users VALUES ('u1', 'same@example.com', 'Ann');",
            "INSERT INTO users VALUES ('u2', 'same@example.com', 'Bob');",
        );
        // Both hold u1 only: b's own later row is set aside there too.
        let only_u1 = vec![vec![text("u1"), text("same@example.com"), text("Ann")]];
        assert_eq!(dump(&a, "users"), only_u1, "{policy:?}");
        assert_eq!(dump(&b, "users"), only_u1, "{policy:?}");
        // One record, the same on both, pending whatever the policy, with both rows.
        let (ca, cb) = (open(&a), open(&b));
        assert_eq!(ca.len(), 1, "{ca:?}");
        assert_eq!(cb.len(), 1, "{cb:?}");
        assert_eq!(ca[0].id, cb[0].id);
        assert_eq!(ca[0].kind, ConflictKind::Constraint);
        assert_eq!(ca[0].status, ConflictStatus::Pending);
        assert_eq!(ca[0].key_text, "('u2')");
        assert_eq!(ca[0].columns, ["email"]);
        assert_eq!(ca[0].remote, cb[0].remote);
        assert_eq!(ca[0].local, cb[0].local);
        assert_eq!(ca[0].remote.1, b.device());
        assert_eq!(ca[0].local.map(|l| l.1), Some(a.device()));
        assert!(
            ca[0].detail.as_deref().unwrap_or("").contains("('u1')"),
            "{:?}",
            ca[0].detail
        );
        let kept = b.conflict(&cb[0].id).expect("conflict");
        assert_eq!(kept.detail, ca[0].detail);
    }
}

#[test]
fn an_earlier_row_arriving_later_takes_the_value_from_the_local_one() {
    let w = World::new();
    let (mut a, mut b) = pair(&w, USERS, "users", None);
    // a's row is earlier but reaches b only after b's own row is in its table.
    exec(
        &a,
        "INSERT INTO users VALUES ('u1', 'x@example.com', 'Ann');",
    );
    a.seal().expect("seal");
    w.tick(1_000);
    exec(
        &b,
        "INSERT INTO users VALUES ('u2', 'x@example.com', 'Bob');",
    );
    b.seal().expect("seal");
    assert_eq!(count(&b, "SELECT count(*) FROM users WHERE id = 'u2'"), 1);
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "users"), dump(&b, "users"));
    assert_eq!(count(&b, "SELECT count(*) FROM users WHERE id = 'u2'"), 0);
    assert_eq!(open(&a)[0].id, open(&b)[0].id);
}

#[test]
fn a_resolution_is_a_write_that_closes_the_record_everywhere() {
    // Setting new values puts the row back on both.
    let w = World::new();
    let (mut a, mut b) = pair(&w, USERS, "users", None);
    clash(
        &w,
        &mut a,
        &mut b,
        "INSERT INTO users VALUES ('u1', 'same@example.com', 'Ann');",
        "INSERT INTO users VALUES ('u2', 'same@example.com', 'Bob');",
    );
    let id = open(&b)[0].id.clone();
    let err = b
        .resolve(&id, Resolution::Keep(Side::Remote))
        .expect_err("still clashes");
    assert!(err.to_string().contains("constraint"), "{err}");
    b.resolve(
        &id,
        Resolution::Set(vec![("email".into(), text("bob@example.com"))]),
    )
    .expect("resolve");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "users"), dump(&b, "users"));
    assert_eq!(dump(&a, "users").len(), 2);
    assert_eq!(
        count(
            &a,
            "SELECT count(*) FROM users WHERE email = 'bob@example.com' AND name = 'Bob'"
        ),
        1
    );
    assert!(open(&a).is_empty(), "{:?}", open(&a));
    assert!(open(&b).is_empty(), "{:?}", open(&b));
    assert_eq!(
        a.conflict(&id).expect("record").status,
        ConflictStatus::Closed
    );
    assert_eq!(
        b.conflict(&id).expect("record").status,
        ConflictStatus::Resolved
    );

    // Keeping the row that holds the value deletes the one set aside, everywhere.
    let w = World::new();
    let (mut a, mut b) = pair(&w, USERS, "users", None);
    clash(
        &w,
        &mut a,
        &mut b,
        "INSERT INTO users VALUES ('u1', 'same@example.com', 'Ann');",
        "INSERT INTO users VALUES ('u2', 'same@example.com', 'Bob');",
    );
    let id = open(&a)[0].id.clone();
    a.resolve(&id, Resolution::Keep(Side::Local))
        .expect("resolve");
    sync(&mut a, &mut b);
    assert!(open(&a).is_empty() && open(&b).is_empty());
    assert_eq!(dump(&a, "users"), dump(&b, "users"));
    // Nothing comes back once the holder moves on: u2 was deleted.
    exec(
        &a,
        "UPDATE users SET email = 'ann@example.com' WHERE id = 'u1';",
    );
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "users").len(), 1);
    assert_eq!(dump(&a, "users"), dump(&b, "users"));
}

#[test]
fn a_row_set_aside_takes_later_changes_and_comes_back_once_the_clash_is_gone() {
    let w = World::new();
    let (mut a, mut b) = pair(&w, USERS, "users", None);
    let mut c = w.replica("c", USERS, &[]);
    c.track("users", None).expect("track");
    exec(
        &a,
        "INSERT INTO users VALUES ('u1', 'same@example.com', 'Ann');",
    );
    a.seal().expect("seal");
    w.tick(1_000);
    exec(
        &b,
        "INSERT INTO users VALUES ('u2', 'same@example.com', 'Bob');",
    );
    // c gets u2 before anyone sees the clash, and edits it.
    sync(&mut b, &mut c);
    w.tick(1_000);
    exec(&c, "UPDATE users SET name = 'Robert' WHERE id = 'u2';");
    sync(&mut a, &mut b);
    assert_eq!(count(&b, "SELECT count(*) FROM users WHERE id = 'u2'"), 0);
    // The edit reaches b, where u2 is set aside: it is kept with it; c sets u2 aside.
    sync(&mut b, &mut c);
    assert_eq!(dump(&b, "users"), dump(&c, "users"));
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id = 'u2'"), 0);
    // u1 moves to another address on a; u2 comes back everywhere, with the edit.
    exec(
        &a,
        "UPDATE users SET email = 'ann@example.com' WHERE id = 'u1';",
    );
    sync(&mut a, &mut b);
    sync(&mut b, &mut c);
    sync(&mut a, &mut c);
    let both = vec![
        vec![text("u1"), text("ann@example.com"), text("Ann")],
        vec![text("u2"), text("same@example.com"), text("Robert")],
    ];
    for s in [&a, &b, &c] {
        assert_eq!(dump(s, "users"), both);
        assert!(open(s).is_empty(), "{:?}", open(s));
    }
}

#[test]
fn composite_unique_and_unique_indexes_are_settled_alike() {
    let schema = "CREATE TABLE seats (id TEXT PRIMARY KEY, hall TEXT, seat INTEGER, code TEXT, UNIQUE (hall, seat));
                  CREATE UNIQUE INDEX seats_code ON seats (code);";
    let w = World::new();
    let (mut a, mut b) = pair(&w, schema, "seats", None);
    clash(
        &w,
        &mut a,
        &mut b,
        "INSERT INTO seats VALUES ('s1', 'A', 1, 'c1'), ('s3', 'B', 1, 'c3');",
        "INSERT INTO seats VALUES ('s2', 'A', 1, 'c2'), ('s4', 'C', 1, 'c3'), ('s5', 'A', 2, 'c5');",
    );
    assert_eq!(dump(&a, "seats"), dump(&b, "seats"));
    let ids: Vec<Value> = dump(&a, "seats")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, [text("s1"), text("s3"), text("s5")]);
    let (ca, cb) = (open(&a), open(&b));
    assert_eq!(ca.len(), 2, "{ca:?}");
    let mut ia: Vec<_> = ca.iter().map(|c| c.id.clone()).collect();
    let mut ib: Vec<_> = cb.iter().map(|c| c.id.clone()).collect();
    ia.sort();
    ib.sort();
    assert_eq!(ia, ib);
}

#[test]
fn merged_values_that_break_a_check_are_set_aside_on_every_device() {
    let schema =
        "CREATE TABLE spans (id TEXT PRIMARY KEY, lo INTEGER, hi INTEGER, CHECK (lo <= hi));";
    let w = World::new();
    let (mut a, mut b) = pair(&w, schema, "spans", None);
    exec(&a, "INSERT INTO spans VALUES ('r', 1, 10);");
    sync(&mut a, &mut b);
    // Each edit is fine alone; merged, lo > hi.
    exec(&a, "UPDATE spans SET lo = 5 WHERE id = 'r';");
    w.tick(1_000);
    exec(&b, "UPDATE spans SET hi = 3 WHERE id = 'r';");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "spans"), dump(&b, "spans"));
    assert!(dump(&a, "spans").is_empty());
    let (ca, cb) = (open(&a), open(&b));
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(ca[0].id, cb[0].id);
    assert!(ca[0].detail.as_deref().unwrap_or("").contains("CHECK"));
    // Fixing either value brings it back on both.
    b.resolve(
        &cb[0].id,
        Resolution::Set(vec![("hi".into(), Value::Integer(7))]),
    )
    .expect("resolve");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "spans"), dump(&b, "spans"));
    assert_eq!(
        dump(&a, "spans"),
        vec![vec![text("r"), Value::Integer(5), Value::Integer(7)]]
    );
    assert!(open(&a).is_empty() && open(&b).is_empty());
}

const LOANS: &str = "CREATE TABLE accts (id TEXT PRIMARY KEY, owner TEXT);
     CREATE TABLE loans (id TEXT PRIMARY KEY, acct TEXT REFERENCES accts(id) ON DELETE CASCADE, amount INTEGER);";

/// Replicas of `schema` tracking accounts and loans, with account `x` and loan `l0`
/// synced, and the apps enforcing foreign keys.
fn lenders(w: &World, schema: &str) -> (Store, Store) {
    let mut a = w.replica("a", schema, &["accts", "loans"]);
    let mut b = w.replica("b", schema, &["accts", "loans"]);
    exec(
        &a,
        "INSERT INTO accts VALUES ('x', 'Ann'); INSERT INTO loans VALUES ('l0', 'x', 5);",
    );
    sync(&mut a, &mut b);
    for s in [&a, &b] {
        exec(s, "PRAGMA foreign_keys = ON;");
    }
    (a, b)
}

#[test]
fn a_delete_that_cascades_reaches_a_child_inserted_concurrently_on_every_device() {
    let w = World::new();
    let (mut a, mut b) = lenders(&w, LOANS);
    // a deletes the account (its cascade deletes l0 there); b lends on it meanwhile.
    exec(&a, "DELETE FROM accts WHERE id = 'x';");
    w.tick(1_000);
    exec(&b, "INSERT INTO loans VALUES ('l1', 'x', 7);");
    sync(&mut a, &mut b);
    for s in [&a, &b] {
        assert!(dump(s, "accts").is_empty());
        assert!(dump(s, "loans").is_empty(), "{:?}", dump(s, "loans"));
        assert_eq!(count(s, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
    }
    let (ca, cb) = (open(&a), open(&b));
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(cb.len(), 1, "{cb:?}");
    assert_eq!(ca[0].id, cb[0].id);
    assert_eq!(ca[0].key_text, "('l1')");
    let detail = ca[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("ON DELETE CASCADE"), "{detail}");
    assert_eq!(ca[0].detail, cb[0].detail);
    // The account comes back: so does the loan, everywhere.
    w.tick(1_000);
    exec(&a, "INSERT INTO accts VALUES ('x', 'Ann again');");
    sync(&mut a, &mut b);
    sync(&mut a, &mut b);
    for s in [&a, &b] {
        assert_eq!(
            dump(s, "loans"),
            vec![vec![text("l1"), text("x"), Value::Integer(7)]]
        );
        assert!(open(s).is_empty(), "{:?}", open(s));
    }
}

#[test]
fn a_delete_without_an_action_leaves_the_child_and_the_same_record_everywhere() {
    let schema = "CREATE TABLE accts (id TEXT PRIMARY KEY, owner TEXT);
         CREATE TABLE loans (id TEXT PRIMARY KEY, acct TEXT REFERENCES accts(id), amount INTEGER);";
    let w = World::new();
    let (mut a, mut b) = lenders(&w, schema);
    exec(
        &a,
        "DELETE FROM loans WHERE id = 'l0'; DELETE FROM accts WHERE id = 'x';",
    );
    w.tick(1_000);
    exec(&b, "INSERT INTO loans VALUES ('l1', 'x', 7);");
    sync(&mut a, &mut b);
    assert_eq!(dump(&a, "loans"), dump(&b, "loans"));
    assert_eq!(dump(&a, "loans").len(), 1);
    let (ca, cb) = (open(&a), open(&b));
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(cb.len(), 1, "{cb:?}");
    assert_eq!(ca[0].id, cb[0].id);
    assert!(
        ca[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("was deleted"),
        "{:?}",
        ca[0].detail
    );
}

#[test]
fn a_child_that_arrived_before_its_parent_is_reached_by_a_delete_of_a_row_never_here() {
    let w = World::new();
    let (mut a, mut b) = lenders(&w, LOANS);
    let mut c = w.replica("c", LOANS, &["accts", "loans"]);
    let mut d = w.replica("d", LOANS, &["accts", "loans"]);
    sync(&mut a, &mut c);
    // b lends on x while c deletes it, neither having seen the other.
    w.tick(1_000);
    exec(&b, "INSERT INTO loans VALUES ('l1', 'x', 7);");
    b.seal().expect("seal");
    w.tick(1_000);
    exec(&c, "DELETE FROM accts WHERE id = 'x';");
    c.seal().expect("seal");
    // d hears b's loan first (its parent not here yet), then c's delete of a row d
    // never held, and only then the rest.
    let group = a.group_ids().expect("groups")[0];
    for from in [&b, &c] {
        let have = d.version_vector(&group).expect("vv");
        let only: Vec<_> = from
            .export(&group, &have)
            .expect("export")
            .into_iter()
            .filter(|x| x.clone().verify().expect("verify").body.head.author == from.device())
            .collect();
        assert!(!only.is_empty());
        d.import(only).expect("import");
    }
    for _ in 0..2 {
        for s in [&mut a, &mut c, &mut d] {
            sync(&mut b, s);
        }
    }
    let reference = (dump(&b, "loans"), open(&b));
    assert!(reference.0.is_empty(), "{:?}", reference.0);
    assert_eq!(reference.1.len(), 1, "{:?}", reference.1);
    for s in [&a, &c, &d] {
        assert_eq!(dump(s, "loans"), reference.0);
        let mine = open(s);
        assert_eq!(
            mine.iter().map(|c| (&c.id, &c.detail)).collect::<Vec<_>>(),
            reference
                .1
                .iter()
                .map(|c| (&c.id, &c.detail))
                .collect::<Vec<_>>()
        );
    }
}

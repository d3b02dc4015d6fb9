//! Groups end to end: what a group carries and leaves out, who may write, and commits
//! from revoked devices and readers refused, also when another member relays them.

use shoal_core::{DeviceId, Role, SignedCommit};
use shoal_store::ImportReport;

use super::*;

const DESK: &str = "CREATE TABLE trades (id TEXT PRIMARY KEY, symbol TEXT, qty INTEGER, note TEXT);
                    CREATE TABLE moods (id TEXT PRIMARY KEY, feeling TEXT);";

/// The commits of `group` that `from` holds and `to` lacks, by `author` alone if given.
fn group_commits(
    from: &Store,
    to: &Store,
    group: &GroupId,
    author: Option<DeviceId>,
) -> Vec<SignedCommit> {
    let have = to.version_vector(group).expect("vv");
    from.export(group, &have)
        .expect("export")
        .into_iter()
        .filter(|c| {
            author.is_none_or(|a| c.clone().verify().expect("verify").body.head.author == a)
        })
        .collect()
}

/// What a network session will do: seal, then send one group's commits.
fn sync_group(from: &mut Store, to: &mut Store, group: &GroupId) -> ImportReport {
    from.seal().expect("seal");
    let commits = group_commits(from, to, group, None);
    to.import(commits).expect("import")
}

fn trade(store: &Store, id: &str) -> Option<Vec<Value>> {
    dump(store, "trades").into_iter().find(|r| r[0] == text(id))
}

#[test]
fn a_group_carries_only_its_tables_and_columns() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades", "moods"]);
    let mut b = w.replica("b", DESK, &["trades", "moods"]);
    exec(
        &a,
        "INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'secret-note-1');
         INSERT INTO moods VALUES ('m1', 'secret-mood-1');",
    );
    let g = a
        .create_group("desk", &[("trades".into(), vec!["note".into()])])
        .expect("create");
    assert_eq!(a.groups().expect("groups"), vec![g.clone()]);
    let gid = g.id.to_string();
    a.set_role(&gid, &b.device(), Role::Member).expect("add b");
    exec(
        &a,
        "INSERT INTO trades VALUES ('t2', 'MSFT', 5, 'secret-note-2');
         INSERT INTO moods VALUES ('m2', 'secret-mood-2');",
    );
    sync_group(&mut a, &mut b, &g.id);
    // Rows that were there before the group, and rows written since, without the note.
    assert_eq!(
        dump(&b, "trades"),
        vec![
            vec![text("t1"), text("AAPL"), Value::Integer(10), Value::Null],
            vec![text("t2"), text("MSFT"), Value::Integer(5), Value::Null],
        ]
    );
    assert_eq!(count(&b, "SELECT count(*) FROM moods"), 0);
    // Neither the excluded column nor the private table is in anything b received.
    let blobs: Vec<Vec<u8>> = b
        .connection()
        .prepare("SELECT signed FROM shoal_commits")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(!blobs.is_empty());
    for needle in ["secret-note", "secret-mood", "moods"] {
        assert!(
            !blobs
                .iter()
                .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())),
            "{needle} reached b"
        );
    }
    // b is a member: its writes come back through the group; its note stays home.
    exec(
        &b,
        "UPDATE trades SET qty = 11 WHERE id = 't1'; UPDATE trades SET note = 'b-only' WHERE id = 't2';",
    );
    let report = sync_group(&mut b, &mut a, &g.id);
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(trade(&a, "t1").expect("t1")[2], Value::Integer(11));
    assert_eq!(trade(&a, "t2").expect("t2")[3], text("secret-note-2"));
    assert_eq!(
        b.group("desk").expect("group").role(&b.device()),
        Some(Role::Member)
    );
}

#[test]
fn commits_of_revoked_devices_and_readers_are_refused_also_when_relayed() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let mut c = w.replica("c", DESK, &["trades"]);
    let mut e = w.replica("e", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let gid = g.id.to_string();
    for s in [&b, &c, &e] {
        a.set_role(&gid, &s.device(), Role::Member).expect("add");
    }
    for s in [&mut b, &mut c, &mut e] {
        sync_group(&mut a, s, &g.id);
    }
    // a revokes c and makes e a reader; neither has heard of it yet.
    a.revoke(&gid, &c.device()).expect("revoke");
    a.set_role(&gid, &e.device(), Role::Reader).expect("demote");
    exec(&c, "INSERT INTO trades VALUES ('from-c', 'X', 1, NULL);");
    exec(&e, "INSERT INTO trades VALUES ('from-e', 'Y', 2, NULL);");
    // b has not heard either, and takes c's commit; then relays it to a.
    sync_group(&mut c, &mut b, &g.id);
    assert!(trade(&b, "from-c").is_some());
    let relayed = sync_group(&mut b, &mut a, &g.id);
    assert_eq!(relayed.refused.len(), 1, "{relayed:?}");
    assert!(relayed.refused[0].contains("revoked"), "{relayed:?}");
    assert!(trade(&a, "from-c").is_none());
    let from_reader = sync_group(&mut e, &mut a, &g.id);
    assert_eq!(from_reader.refused.len(), 1, "{from_reader:?}");
    assert!(
        from_reader.refused[0].contains("may only read"),
        "{from_reader:?}"
    );
    assert!(trade(&a, "from-e").is_none());
    assert_eq!(a.status().expect("status").refused_commits, 2);
    let g = a.group("desk").expect("group");
    assert_eq!(g.role(&c.device()), None);
    assert_eq!(g.role(&e.device()), Some(Role::Reader));
    // Once c knows it was revoked it seals nothing more into the group.
    sync_group(&mut a, &mut c, &g.id);
    exec(&c, "INSERT INTO trades VALUES ('later-c', 'Z', 3, NULL);");
    c.seal().expect("seal");
    assert_eq!(
        c.version_vector(&g.id).expect("vv").get(&c.device()),
        shoal_core::Seq(1)
    );
}

#[test]
fn commits_applied_before_a_revocation_arrived_are_taken_back() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let mut c = w.replica("c", DESK, &["trades"]);
    exec(
        &a,
        "INSERT INTO trades VALUES ('t1', 'AAPL', 1, 'first'), ('t2', 'MSFT', 2, NULL);",
    );
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let gid = g.id.to_string();
    for s in [&b, &c] {
        a.set_role(&gid, &s.device(), Role::Member).expect("add");
    }
    for s in [&mut b, &mut c] {
        sync_group(&mut a, s, &g.id);
    }
    a.revoke(&gid, &c.device()).expect("revoke");
    // c, not knowing, changes a row, adds one and deletes one; b takes all of it and
    // writes on top of the changed row.
    exec(
        &c,
        "UPDATE trades SET qty = 100 WHERE id = 't1';
         INSERT INTO trades VALUES ('from-c', 'X', 1, NULL);
         DELETE FROM trades WHERE id = 't2';",
    );
    let taken = sync_group(&mut c, &mut b, &g.id);
    assert!(taken.refused.is_empty(), "{taken:?}");
    exec(&b, "UPDATE trades SET note = 'b was here' WHERE id = 't1';");
    assert_eq!(trade(&b, "t1").expect("t1")[2], Value::Integer(100));
    assert!(trade(&b, "t2").is_none());
    b.seal().expect("seal");
    let own = |b: &Store| b.version_vector(&g.id).expect("vv").get(&b.device());
    let before = own(&b);
    // The revocation reaches b: c's commits are taken back, b's own write stays.
    let report = sync_group(&mut a, &mut b, &g.id);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(report.refused[0].contains("taken back"), "{report:?}");
    assert_eq!(
        trade(&b, "t1"),
        Some(vec![
            text("t1"),
            text("AAPL"),
            Value::Integer(1),
            text("b was here")
        ])
    );
    assert_eq!(
        trade(&b, "t2"),
        Some(vec![
            text("t2"),
            text("MSFT"),
            Value::Integer(2),
            Value::Null
        ])
    );
    assert!(trade(&b, "from-c").is_none());
    assert_eq!(own(&b), before, "taking back is not a local write");
    assert_eq!(count(&b, "SELECT count(*) FROM shoal_log"), 0);
    // b sends nothing of c's on, and a and b agree.
    let back = sync_group(&mut b, &mut a, &g.id);
    assert!(back.refused.is_empty(), "{back:?}");
    assert_eq!(dump(&a, "trades"), dump(&b, "trades"));
    // c keeps its own writes.
    assert!(trade(&c, "from-c").is_some());
    sync_group(&mut a, &mut c, &g.id);
    assert!(trade(&c, "from-c").is_some());
}

#[test]
fn an_unknown_author_waits_until_it_is_made_a_member() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let mut f = w.replica("f", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let gid = g.id.to_string();
    a.set_role(&gid, &b.device(), Role::Member).expect("add b");
    sync_group(&mut a, &mut b, &g.id);
    a.set_role(&gid, &f.device(), Role::Member).expect("add f");
    sync_group(&mut a, &mut f, &g.id);
    exec(&f, "INSERT INTO trades VALUES ('from-f', 'X', 1, NULL);");
    f.seal().expect("seal");
    // b gets f's commit before it hears that f was added: it keeps it, unapplied.
    let only_f = group_commits(&f, &b, &g.id, Some(f.device()));
    assert_eq!(only_f.len(), 1);
    b.import(only_f).expect("import");
    assert!(trade(&b, "from-f").is_none());
    assert_eq!(b.status().expect("status").waiting_commits, 1);
    // The admin's commit arrives: f's commit goes in, in the same import.
    let report = sync_group(&mut a, &mut b, &g.id);
    assert!(trade(&b, "from-f").is_some(), "{report:?}");
    assert_eq!(b.status().expect("status").waiting_commits, 0);
}

#[test]
fn only_admins_change_a_group() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades", "moods"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let gid = g.id.to_string();
    a.set_role(&gid, &b.device(), Role::Member).expect("add b");
    sync_group(&mut a, &mut b, &g.id);
    let err = b
        .set_role(&gid, &b.device(), Role::Admin)
        .expect_err("b is no admin");
    assert!(matches!(err, StoreError::NotAdmin { .. }), "{err}");
    assert!(err.to_string().contains("not an admin"), "{err}");
    let err = a
        .share(&gid, "trades", &["nope".into()])
        .expect_err("no such column");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(matches!(
        a.group("nothing"),
        Err(StoreError::NoSuchGroup { .. })
    ));
    // Sharing a table later brings its rows along.
    exec(&a, "INSERT INTO moods VALUES ('m1', 'calm');");
    b.track("moods", None).expect("track");
    a.share(&gid, "moods", &[]).expect("share");
    sync_group(&mut a, &mut b, &g.id);
    assert_eq!(dump(&b, "moods"), vec![vec![text("m1"), text("calm")]]);
}

#[test]
fn an_invite_admits_the_device_that_proves_its_secret_as_often_as_allowed() {
    use shoal_core::invite::{InviteProblem, invite_proof};
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let b = w.replica("b", DESK, &["trades"]);
    let c = w.replica("c", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let invite = a
        .create_invite("desk", Role::Reader, 60_000, 1)
        .expect("invite");
    let inviter = a.device();
    let proof =
        |joiner: &Store, secret: &[u8; 32]| invite_proof(secret, &g.id, &joiner.device(), &inviter);
    let refused = |r: shoal_store::Result<Role>| match r {
        Err(StoreError::Invite(p)) => p,
        other => panic!("expected an invite refusal, got {other:?}"),
    };
    let head = a.version_vector(&g.id).expect("vv");
    // A wrong secret, an unknown invite and a proof made for another device change nothing.
    let wrong = proof(&b, &[0; 32]);
    assert_eq!(
        refused(a.redeem_invite(&g.id, &invite.id, &wrong, &b.device())),
        InviteProblem::BadProof
    );
    let right = proof(&b, &invite.secret);
    assert_eq!(
        refused(a.redeem_invite(&g.id, &[9; 16], &right, &b.device())),
        InviteProblem::Unknown
    );
    assert_eq!(
        refused(a.redeem_invite(&g.id, &invite.id, &right, &c.device())),
        InviteProblem::BadProof
    );
    assert_eq!(a.version_vector(&g.id).expect("vv"), head);
    // The right proof admits b with the invite's role, once.
    assert_eq!(
        a.redeem_invite(&g.id, &invite.id, &right, &b.device())
            .expect("redeem"),
        Role::Reader
    );
    let g2 = a.group("desk").expect("group");
    assert_eq!(g2.role(&b.device()), Some(Role::Reader));
    assert_eq!(
        refused(a.redeem_invite(&g.id, &invite.id, &proof(&c, &invite.secret), &c.device())),
        InviteProblem::UsedUp
    );
    // b, whose session broke before it heard, comes back with the same ticket: let in
    // again, no use spent, no second membership commit.
    let head = a.version_vector(&g.id).expect("vv");
    assert_eq!(
        a.redeem_invite(&g.id, &invite.id, &right, &b.device())
            .expect("redeem again"),
        Role::Reader
    );
    assert_eq!(a.invite_uses_left(&invite.id).expect("uses"), Some(0));
    assert_eq!(a.version_vector(&g.id).expect("vv"), head);
    // An expired invite is refused even with uses left.
    let later = a
        .create_invite("desk", Role::Member, 1_000, 5)
        .expect("invite");
    w.tick(1_000);
    assert_eq!(
        refused(a.redeem_invite(&g.id, &later.id, &proof(&c, &later.secret), &c.device())),
        InviteProblem::Expired
    );
    assert_eq!(a.group("desk").expect("group").role(&c.device()), None);
    // A revoked device cannot come back through an invite.
    let again = a
        .create_invite("desk", Role::Member, 60_000, 5)
        .expect("invite");
    a.revoke("desk", &b.device()).expect("revoke");
    assert!(matches!(
        a.redeem_invite(&g.id, &again.id, &proof(&b, &again.secret), &b.device()),
        Err(StoreError::Revoked { .. })
    ));
    // Only an admin may invite.
    let mut b = b;
    assert!(matches!(
        b.create_invite(&g.id.to_string(), Role::Member, 1, 1),
        Err(StoreError::NoSuchGroup { .. } | StoreError::NotAdmin { .. })
    ));
}

#[test]
fn rows_held_before_joining_while_a_column_is_renamed_are_given_once_it_is_back() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    a.create_group("desk", &[("trades".into(), vec![])])
        .expect("group");
    // b has rows of its own, then its app renames a column for a while.
    exec(&b, "INSERT INTO trades VALUES ('b1', 'AAPL', 1, 'mine');");
    b.seal().expect("seal");
    exec(&b, "ALTER TABLE trades RENAME COLUMN note TO memo;");
    exec(&b, "UPDATE trades SET qty = 2 WHERE id = 'b1';");
    // b joins meanwhile: its rows cannot be given while the table is not sealed.
    a.set_role("desk", &b.device(), Role::Member).expect("add");
    sync(&mut a, &mut b);
    // Renamed back, the row goes to the group once, with the change made meanwhile,
    // in commits every member accepts.
    exec(&b, "ALTER TABLE trades RENAME COLUMN memo TO note;");
    sync(&mut a, &mut b);
    sync(&mut a, &mut b);
    assert_eq!(
        dump(&a, "trades"),
        vec![vec![
            text("b1"),
            text("AAPL"),
            Value::Integer(2),
            text("mine")
        ]]
    );
    assert_eq!(dump(&a, "trades"), dump(&b, "trades"));
    let status = a.status().expect("status");
    assert_eq!(status.refused_commits, 0);
    assert_eq!(
        a.version_vector(&a.group("desk").expect("g").id)
            .expect("vv"),
        b.version_vector(&b.group("desk").expect("g").id)
            .expect("vv")
    );
}

#[test]
fn a_revocation_that_arrives_while_a_column_is_renamed_takes_back_all_the_same() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let mut c = w.replica("c", DESK, &["trades"]);
    exec(&a, "INSERT INTO trades VALUES ('t1', 'AAPL', 1, 'first');");
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let gid = g.id.to_string();
    for s in [&b, &c] {
        a.set_role(&gid, &s.device(), Role::Member).expect("add");
    }
    for s in [&mut b, &mut c] {
        sync_group(&mut a, s, &g.id);
    }
    a.revoke(&gid, &c.device()).expect("revoke");
    exec(
        &c,
        "UPDATE trades SET qty = 100 WHERE id = 't1'; INSERT INTO trades VALUES ('from-c', 'X', 1, NULL);",
    );
    sync_group(&mut c, &mut b, &g.id);
    assert!(trade(&b, "from-c").is_some());
    // b's app renames a column; the revocation arrives meanwhile.
    exec(&b, "ALTER TABLE trades RENAME COLUMN note TO memo;");
    sync_group(&mut a, &mut b, &g.id);
    assert!(trade(&b, "from-c").is_none(), "c's row is taken back");
    // Renamed back, b holds what a holds.
    exec(&b, "ALTER TABLE trades RENAME COLUMN memo TO note;");
    b.apply_waiting().expect("apply");
    assert_eq!(dump(&b, "trades"), dump(&a, "trades"));
}

#[test]
fn a_group_made_while_the_clock_ran_ahead_is_stamped_again_in_every_log() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades", "moods"]);
    let mut b = w.replica("b", DESK, &["trades", "moods"]);
    let year_ms = 365 * 86_400_000;
    let now = w.now();
    w.set_now(now + year_ms);
    // The group's first commit, b's membership and a row, all a year ahead, in the
    // group's log and in the local one.
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    a.set_role(&g.id.to_string(), &b.device(), Role::Member)
        .expect("add b");
    exec(
        &a,
        "INSERT INTO trades VALUES ('t1', 'AAPL', 10, 'n'); INSERT INTO moods VALUES ('m1', 'calm');",
    );
    a.seal().expect("seal");
    w.set_now(now);
    sync(&mut a, &mut b);
    assert!(dump(&b, "trades").is_empty());
    let report = a.restamp().expect("restamp");
    assert_eq!(report.groups, 2, "{report:?}");
    sync(&mut a, &mut b);
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "trades"), dump(&a, "trades"));
    assert_eq!(dump(&b, "trades").len(), 1);
    assert_eq!(dump(&b, "moods"), dump(&a, "moods"));
    assert_eq!(dump(&b, "moods").len(), 1);
    // b is a member by the commits stamped again: its own writes reach a.
    exec(&b, "INSERT INTO trades VALUES ('t2', 'MSFT', 5, 'm');");
    sync_group(&mut b, &mut a, &g.id);
    assert_eq!(dump(&b, "trades"), dump(&a, "trades"));
    assert_eq!(dump(&a, "trades").len(), 2);
    for s in [&a, &b] {
        let st = s.status().expect("status");
        assert_eq!((st.future_commits, st.waiting_commits), (0, 0));
    }
}

/// The ids of the conflict records a device holds open.
fn open_ids(store: &Store) -> Vec<String> {
    store
        .open_conflicts()
        .expect("open conflicts")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn sharing_a_table_with_a_group_leaves_every_conflict_record_open() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    exec(&a, "INSERT INTO trades VALUES ('t1', 'AAPL', 10, NULL);");
    sync(&mut a, &mut b);
    exec(&a, "UPDATE trades SET qty = 11 WHERE id = 't1';");
    w.tick(10);
    exec(&b, "UPDATE trades SET qty = 12 WHERE id = 't1';");
    sync(&mut a, &mut b);
    let open = open_ids(&a);
    assert_eq!(open.len(), 1, "the concurrent edit is recorded");
    assert_eq!(open_ids(&b), open);
    // Giving the table to a group re-issues its rows; that is nobody's new write.
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    a.seal().expect("seal");
    assert_eq!(
        open_ids(&a),
        open,
        "the sharer closed a record the other keeps"
    );
    // A member that held the same record receives the rows given anew and keeps it.
    a.set_role(&g.id.to_string(), &b.device(), Role::Member)
        .expect("add b");
    sync_group(&mut a, &mut b, &g.id);
    assert_eq!(open_ids(&b), open);
    assert_eq!(dump(&a, "trades"), dump(&b, "trades"));
    // A real write of the disputed column that saw both settles it on both.
    exec(&b, "UPDATE trades SET qty = 13 WHERE id = 't1';");
    sync_group(&mut b, &mut a, &g.id);
    assert!(open_ids(&b).is_empty(), "{:?}", open_ids(&b));
    assert!(open_ids(&a).is_empty(), "{:?}", open_ids(&a));
}

#[test]
fn a_group_keeps_an_admin_a_device_does_not_revoke_itself() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let b = w.replica("b", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    let me = a.device();
    let before = a.version_vector(&g.id).expect("vv");
    assert!(matches!(
        a.revoke("desk", &me),
        Err(StoreError::RevokingItself { .. })
    ));
    assert!(matches!(
        a.set_role("desk", &me, Role::Member),
        Err(StoreError::LastAdmin { .. })
    ));
    assert_eq!(
        a.version_vector(&g.id).expect("vv"),
        before,
        "nothing was written"
    );
    assert_eq!(a.group("desk").expect("group").role(&me), Some(Role::Admin));
    // With another admin, stepping down is fine.
    a.set_role("desk", &b.device(), Role::Admin).expect("add b");
    a.set_role("desk", &me, Role::Member).expect("step down");
    assert_eq!(
        a.group("desk").expect("group").role(&me),
        Some(Role::Member)
    );
}

#[test]
fn a_readers_writes_to_a_shared_table_are_reported_as_kept_here() {
    let w = World::new();
    let mut a = w.replica("a", DESK, &["trades"]);
    let mut b = w.replica("b", DESK, &["trades"]);
    let g = a
        .create_group("desk", &[("trades".into(), vec![])])
        .expect("create");
    a.set_role("desk", &b.device(), Role::Reader)
        .expect("reader");
    sync_group(&mut a, &mut b, &g.id);
    exec(
        &b,
        "INSERT INTO trades VALUES ('b1', 'X', 1, NULL), ('b2', 'Y', 2, NULL);",
    );
    let report = b.seal().expect("seal");
    assert_eq!(report.kept_here.len(), 1, "{report:?}");
    let kept = &report.kept_here[0];
    assert_eq!((kept.table.as_str(), kept.rows), ("trades", 2));
    assert_eq!(kept.groups, ["desk"]);
    assert!(kept.to_string().contains("reader in group desk"), "{kept}");
    // An admin's write goes out, and is no such thing.
    exec(&a, "INSERT INTO trades VALUES ('a1', 'Z', 3, NULL);");
    assert!(a.seal().expect("seal").kept_here.is_empty());
}

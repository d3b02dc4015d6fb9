//! Writers in other processes: Python's sqlite3 module, as an app would write.

use std::process::{Command, Stdio};

use super::{NOTES, World, count, dump, sync, text};

/// Runs a Python program against `db` in a separate process.
fn python(db: &std::path::Path, program: &str) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(db)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs")
}

#[test]
fn writes_from_another_process_are_captured() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    let status = python(
        &w.path("a"),
        r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO notes VALUES ('p1', 'from python', 'body', 1)")
db.execute("INSERT INTO notes VALUES ('p2', 'second', 'body', 2)")
db.execute("INSERT INTO notes VALUES ('p3', 'third', 'body', 3)")
db.commit()
db.execute("UPDATE notes SET body = 'edited in python' WHERE id = 'p1'")
db.execute("DELETE FROM notes WHERE id = 'p2'")
db.commit()
"#,
    )
    .wait()
    .expect("python");
    assert!(status.success());
    // Nothing was lost between the write and the seal: the log holds it.
    assert!(count(&a, "SELECT count(*) FROM shoal_log") > 0);
    sync(&mut a, &mut b);
    let rows = dump(&b, "notes");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][2], text("edited in python"));
    assert_eq!(rows[1][0], text("p3"));
}

#[test]
fn sealing_is_serialised_while_other_processes_write() {
    let w = World::new();
    let a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    let writer = |tag: &str| {
        python(
            &w.path("a"),
            &format!(
                r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=60)
for i in range(300):
    db.execute("INSERT INTO notes VALUES (?, 'w', 'b', ?)", ("{tag}%d" % i, i))
    db.commit()
"#
            ),
        )
    };
    let mut writers = vec![writer("x"), writer("y")];
    // Two handles on the same file seal in two threads while the writers run.
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            let path = w.path("a");
            let options = w.options();
            std::thread::spawn(move || {
                let mut store = shoal_store::Store::open(path, options).expect("open");
                let mut sealed = 0;
                for _ in 0..40 {
                    sealed += store.seal().expect("seal").changes;
                }
                sealed
            })
        })
        .collect();
    for w in &mut writers {
        assert!(w.wait().expect("writer").success());
    }
    let mut sealed: usize = sealers.into_iter().map(|s| s.join().expect("sealer")).sum();
    let mut a = a;
    sealed += a.seal().expect("seal").changes;
    assert_eq!(sealed, 600, "every write sealed exactly once");
    // The chain is whole: b takes every commit in order.
    sync(&mut a, &mut b);
    assert_eq!(dump(&b, "notes").len(), 600);
    let status = b.status().expect("status");
    assert_eq!(status.waiting_commits, 0);
    assert!(status.forked_authors.is_empty());
}

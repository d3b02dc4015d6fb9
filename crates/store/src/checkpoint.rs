//! Checkpoints of the write-ahead log, run on a thread of their own.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a checkpoint copies them
//! into the database file, and SQLite runs one at the end of any commit that leaves
//! the log past 1000 pages. After a first sync that is hundreds of megabytes, copied
//! while the sync waits. Shoal's connection runs none itself: once a commit leaves the
//! log past [`LOG_BYTES`], a thread with a connection of its own runs a passive
//! checkpoint, which waits for no reader or writer and holds up none. The app's own
//! connections checkpoint as they always do.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How large the log may grow before a checkpoint is asked for: SQLite's own
/// threshold of 1000 pages, at the default page size.
const LOG_BYTES: u64 = 1000 * 4096;

/// The checkpointing thread, started when first needed.
#[derive(Default)]
pub(crate) struct Checkpoints {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Turns the checkpoints at commit off on `conn`, Shoal's connection to a file.
    pub(crate) fn take_over(conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// Asks for a checkpoint of the database at `path` if its log has grown past
    /// [`LOG_BYTES`]; one asked for while another runs is run after it. Where no
    /// thread can run it, `conn` runs it now, as SQLite would have.
    pub(crate) fn after_commit(&mut self, conn: &Connection, path: &Path) {
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        if std::fs::metadata(&log).map_or(true, |m| m.len() < LOG_BYTES) {
            return;
        }
        if self.wake.is_none() {
            let (wake, woken) = sync_channel(1);
            let path = path.to_owned();
            if let Ok(thread) = std::thread::Builder::new()
                .name("shoal-checkpoint".into())
                .spawn(move || run(&path, woken))
            {
                self.wake = Some(wake);
                self.thread = Some(thread);
            }
        }
        let asked = match &self.wake {
            // Full: one is asked for already, and it will see this commit too.
            Some(wake) => !matches!(wake.try_send(()), Err(TrySendError::Disconnected(_))),
            None => false,
        };
        if !asked {
            checkpoint(conn);
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs a checkpoint each time one is asked for, until the store is dropped.
/// Runs a checkpoint each time one is asked for, until the store is dropped; ends at
/// once if it cannot open the file, and the store then runs them itself.
fn run(path: &Path, woken: Receiver<()>) {
    let Ok(conn) = Connection::open(path) else {
        return;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    while woken.recv().is_ok() {
        checkpoint(&conn);
    }
}

/// A passive checkpoint: it copies what no reader still needs from the log. One that
/// cannot run now leaves the pages in the log, where every reader finds them, and
/// the next one copies them.
fn checkpoint(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::{Store, StoreOptions};

    /// Shoal's connection checkpoints nothing at commit, and a commit that leaves the
    /// log large is still copied into the database file, with the store open.
    #[test]
    fn a_large_commit_reaches_the_database_file_off_the_writing_thread() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.execute_batch(
                    "PRAGMA journal_mode = WAL; CREATE TABLE notes (id INTEGER PRIMARY KEY, body);",
                )
            })
            .expect("schema");
        let mut store =
            Store::init(&path, StoreOptions::new(dir.path().join("keys"))).expect("init");
        store.track("notes", None).expect("track");
        let at_commit: i64 = store
            .connection()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .expect("pragma");
        assert_eq!(at_commit, 0);

        let before = std::fs::metadata(&path).expect("file").len();
        store
            .connection()
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                 INSERT INTO notes SELECT i, randomblob(400) FROM n;",
            )
            .expect("write");
        store.seal().expect("seal");
        let started = Instant::now();
        let grown = loop {
            let now = std::fs::metadata(&path).expect("file").len();
            if now > before + (8 << 20) || started.elapsed().as_secs() > 20 {
                break now;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            grown > before + (8 << 20),
            "the database file stayed at {grown} bytes"
        );
    }

    /// With no thread to run it (its connection could not open the file), the
    /// checkpoint runs on the store's own connection at once.
    #[test]
    fn without_a_thread_the_commit_checkpoints_itself() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .expect("schema");
        super::Checkpoints::take_over(&conn).expect("take over");
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO t SELECT randomblob(400) FROM n;",
        )
        .expect("write");
        let before = std::fs::metadata(&path).expect("file").len();
        let (wake, gone) = std::sync::mpsc::sync_channel(1);
        drop(gone);
        let mut checkpoints = super::Checkpoints {
            wake: Some(wake),
            thread: None,
        };
        checkpoints.after_commit(&conn, &path);
        let after = std::fs::metadata(&path).expect("file").len();
        assert!(after > before + (8 << 20), "{before} -> {after} bytes");
    }
}

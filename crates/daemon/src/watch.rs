//! Noticing writes to the database from any process without reading the app's
//! tables: SQLite's `PRAGMA data_version` changes whenever another connection
//! commits to the file, and asking costs a few microseconds.
//!
//! The question is asked when the file system says the database (or its WAL or
//! journal) was written, and then every `interval` for a moment after, since a
//! commit becomes visible a little after its bytes land. While nothing writes, the
//! thread sleeps: it asks once a second in case a notice was missed. Where file
//! notices are not available, it asks every `interval`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

/// How long after a file notice the database is asked every `interval`.
const HOT: Duration = Duration::from_millis(250);

/// How often the database is asked while no notice comes.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The names of the files a commit to `db` writes: the database, its WAL, its
/// rollback journal.
fn watched_files(db: &Path) -> Vec<std::ffi::OsString> {
    let Some(name) = db.file_name() else {
        return Vec::new();
    };
    ["", "-wal", "-journal"]
        .iter()
        .map(|suffix| {
            let mut n = name.to_owned();
            n.push(suffix);
            n
        })
        .collect()
}

/// A thread that asks the database whether it changed when its files are written,
/// and wakes `changed` when it did.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn start(
        db: &Path,
        interval: Duration,
        changed: Arc<Notify>,
    ) -> rusqlite::Result<Watcher> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let version = |c: &Connection| -> rusqlite::Result<i64> {
            c.query_row("PRAGMA data_version", [], |r| r.get(0))
        };
        let mut last = version(&conn)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (tx, notices) = std::sync::mpsc::channel::<()>();
        let files = watched_files(db);
        let notifier = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if e.is_ok_and(|e| e.paths.iter().any(|p| files.iter().any(|f| p.ends_with(f)))) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            use notify::Watcher as _;
            let dir = db
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            w.watch(dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        let idle = match &notifier {
            Ok(_) => IDLE_CHECK,
            Err(e) => {
                tracing::warn!("no file notices ({e}); asking the database every {interval:?}");
                interval
            }
        };
        let thread = std::thread::Builder::new()
            .name("shoal-watch".into())
            .spawn(move || {
                let _notifier = notifier;
                let mut hot_until = std::time::Instant::now();
                while !stopping.load(Ordering::Relaxed) {
                    let now = std::time::Instant::now();
                    let wait = if now < hot_until { interval } else { idle };
                    match notices.recv_timeout(wait) {
                        Ok(()) => {
                            hot_until = std::time::Instant::now() + HOT;
                            // Take every notice already queued, then look.
                            while notices.try_recv().is_ok() {}
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(wait)
                        }
                    }
                    match version(&conn) {
                        Ok(v) if v != last => {
                            last = v;
                            changed.notify_one();
                        }
                        Ok(_) => {}
                        // A busy or briefly locked file: ask again next time.
                        Err(e) => tracing::debug!("data_version: {e}"),
                    }
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Watcher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_from_another_connection_wakes_the_watcher_and_a_read_does_not() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("w.db");
        let writer = Connection::open(&db).expect("open");
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .expect("schema");
        let changed = Arc::new(Notify::new());
        let _w = Watcher::start(&db, Duration::from_millis(2), changed.clone()).expect("watch");
        let wait = |d| tokio::time::timeout(Duration::from_millis(d), changed.notified());
        // Reading changes nothing.
        let n: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(n, 0);
        assert!(wait(100).await.is_err(), "a read woke the watcher");
        writer
            .execute("INSERT INTO t VALUES (1)", [])
            .expect("write");
        assert!(wait(500).await.is_ok(), "a write did not wake the watcher");
    }
}

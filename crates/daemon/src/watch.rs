//! Noticing writes to the database from any process without reading the app's
//! tables: SQLite's `PRAGMA data_version` changes whenever another connection
//! commits to the file, and asking costs a few microseconds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

/// A thread that asks the database every `interval` whether it changed, and wakes
/// `changed` when it did.
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
        let thread = std::thread::Builder::new()
            .name("shoal-watch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
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
        assert!(wait(2000).await.is_ok(), "a write did not wake the watcher");
    }
}

//! What Shoal's tests share: a temporary directory holding any number of replicas
//! and one data directory for their keys, on a clock the test moves by hand or the
//! system's, offset as far as a test needs.
//!
//! Only tests depend on this crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_store::{Store, StoreOptions, system_now_ms};
use tempfile::TempDir;

/// Where a world's clock comes from.
enum Clock {
    /// Moved by hand with [`World::tick`].
    Manual(Arc<AtomicU64>),
    /// The system's.
    System,
}

/// A directory of replicas sharing one data directory.
pub struct World {
    dir: TempDir,
    clock: Clock,
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

impl World {
    /// A world whose clock stands still until [`World::tick`] moves it.
    pub fn new() -> World {
        World::with(Clock::Manual(Arc::new(AtomicU64::new(1_700_000_000_000))))
    }

    /// A world on the system clock, for tests whose network timeouts run on it too.
    pub fn on_system_clock() -> World {
        World::with(Clock::System)
    }

    fn with(clock: Clock) -> World {
        World {
            // A memory-backed directory where there is one: the tests fsync a lot.
            dir: TempDir::new_in("/dev/shm")
                .or_else(|_| TempDir::new())
                .expect("temp dir"),
            clock,
        }
    }

    /// The directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Options with this world's data directory and clock.
    pub fn options(&self) -> StoreOptions {
        self.options_ahead(0)
    }

    /// The same, with a clock that reads `by_ms` ahead of this world's: a device
    /// whose clock is fast, or the same device a while later.
    pub fn options_ahead(&self, by_ms: u64) -> StoreOptions {
        let mut options = StoreOptions::new(self.dir.path().join("data"));
        options.wall_clock = match &self.clock {
            Clock::Manual(now) => {
                let now = now.clone();
                Arc::new(move || now.load(Ordering::SeqCst) + by_ms)
            }
            Clock::System => Arc::new(move || system_now_ms() + by_ms),
        };
        options
    }

    /// Where the replica `name` lives.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.db"))
    }

    /// A new replica `name` with `schema` applied and `tables` tracked.
    pub fn replica(&self, name: &str, schema: &str, tables: &[&str]) -> Store {
        let path = self.path(name);
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch(schema)
            .expect("schema");
        let mut store = Store::init(&path, self.options()).expect("init");
        for t in tables {
            store.track(t, None).expect("track");
        }
        store
    }

    /// What a hand-moved clock reads.
    pub fn now(&self) -> u64 {
        match &self.clock {
            Clock::Manual(now) => now.load(Ordering::SeqCst),
            Clock::System => system_now_ms(),
        }
    }

    /// Sets a hand-moved clock, forward or back.
    pub fn set_now(&self, ms: u64) {
        match &self.clock {
            Clock::Manual(now) => now.store(ms, Ordering::SeqCst),
            Clock::System => panic!("the system clock is not set by hand"),
        }
    }

    /// Moves a hand-moved clock on by `ms`.
    pub fn tick(&self, ms: u64) {
        match &self.clock {
            Clock::Manual(now) => {
                now.fetch_add(ms, Ordering::SeqCst);
            }
            Clock::System => panic!("the system clock is not moved by hand"),
        }
    }
}

/// Runs `sql` on the store's connection, as the app would.
pub fn exec(store: &Store, sql: &str) {
    store.connection().execute_batch(sql).expect(sql);
}

/// Runs `sql` on a connection of its own to the file at `path`, as another process
/// of the app would while a daemon runs.
pub fn write(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute_batch(sql).expect(sql);
}

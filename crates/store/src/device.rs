//! The device a store is: its id, its key, its file, and how it reads the time and
//! draws random bytes.

use std::path::PathBuf;
use std::sync::Arc;

use shoal_core::{DeviceId, DeviceKey, MAX_DRIFT_MS};

use crate::error::Result;
use crate::tables::authors::Authors;
use crate::tables::rows;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A source of random bytes: the operating system's unless a test sets its own.
pub type Randomness = Arc<dyn Fn(&mut [u8]) -> std::result::Result<(), String> + Send + Sync>;

/// How a store finds its keys, reads the time and draws random bytes.
#[derive(Clone)]
pub struct StoreOptions {
    /// The data directory where device keys live.
    pub data_dir: PathBuf,
    /// The wall clock; the system clock unless a test sets its own.
    pub wall_clock: WallClock,
    /// How far ahead of the wall clock a remote commit may be stamped.
    pub max_drift_ms: u64,
    /// Where device keys, group ids and invite secrets come from.
    pub randomness: Randomness,
}

impl StoreOptions {
    /// Options with the system clock and the default drift.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            wall_clock: Arc::new(system_now_ms),
            max_drift_ms: MAX_DRIFT_MS,
            randomness: Arc::new(|buf| getrandom::fill(buf).map_err(|e| e.to_string())),
        }
    }

    pub(crate) fn random<const N: usize>(&self) -> Result<[u8; N]> {
        let mut buf = [0; N];
        (self.randomness)(&mut buf)
            .map_err(|reason| shoal_core::CoreError::NoRandomness { reason })?;
        Ok(buf)
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The device a store is, as it knows itself beside its connection (split off so that
/// code holding a transaction on the connection can still reach it): its id, key and
/// file, its options, and what it caches between statements.
pub(crate) struct Device {
    pub(crate) device: DeviceId,
    pub(crate) key: DeviceKey,
    /// The file this device lives in, when this file is a copy of it: nothing is
    /// signed here until the copy is adopted.
    pub(crate) copy_of: Option<PathBuf>,
    pub(crate) path: PathBuf,
    pub(crate) authors: Authors,
    /// The numbers columns go by in `shoal_rows`.
    pub(crate) columns: rows::Columns,
    pub(crate) options: StoreOptions,
    /// Whether any conflict record is open, learnt once per transaction: most
    /// databases have none, and then no write needs to look for records to close.
    pub(crate) open_conflicts: Option<bool>,
}

impl Device {
    pub(crate) fn now_ms(&self) -> u64 {
        (self.options.wall_clock)()
    }
}

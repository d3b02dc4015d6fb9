//! `shoal_meta`: the file's device and its persisted clock.

use rusqlite::{Connection, OptionalExtension};
use shoal_core::{DeviceId, Hlc};

use crate::error::{Result, StoreError};

/// The device this file belongs to.
pub(crate) fn read_device(conn: &Connection) -> Result<DeviceId> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM shoal_meta WHERE key = 'device'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    bytes
        .and_then(|b| b.try_into().ok())
        .map(DeviceId)
        .ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

/// Makes `device` the one this file belongs to.
pub(crate) fn write_device(conn: &Connection, device: &DeviceId) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO shoal_meta(key, value) VALUES ('device', ?1)",
        [&device.0[..]],
    )?;
    Ok(())
}

/// The persisted clock: the highest reading this replica has made or accepted.
pub(crate) fn load_hlc(conn: &Connection) -> Result<Hlc> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM shoal_meta WHERE key = 'hlc'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(Hlc(v.unwrap_or(0) as u64))
}

pub(crate) fn save_hlc(conn: &Connection, hlc: Hlc) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO shoal_meta(key, value) VALUES ('hlc', ?1)",
        [hlc.0 as i64],
    )?;
    Ok(())
}

//! `shoal_peers`: where each device was last reached, in the transport's notation.

use rusqlite::{Connection, OptionalExtension};
use shoal_core::DeviceId;

use crate::error::Result;

/// A device this file remembers reaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeer {
    /// The device.
    pub device: DeviceId,
    /// Where it was reached, in the transport's own notation.
    pub addr: String,
    /// When it was last reached, ms since the Unix epoch (to the minute).
    pub seen_ms: u64,
}

/// Remembers that `device` was reached at `addr` at `now_ms`. The time is kept to the
/// minute, so that a device syncing often does not write for every round.
pub(crate) fn remember(
    conn: &Connection,
    device: &DeviceId,
    addr: &str,
    now_ms: u64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO shoal_peers(device, addr, seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (device) DO UPDATE SET addr = excluded.addr, seen_ms = excluded.seen_ms
         WHERE addr IS NOT excluded.addr OR seen_ms < excluded.seen_ms - 60000",
    )?
    .execute(rusqlite::params![&device.0[..], addr, now_ms as i64])?;
    Ok(())
}

/// Where `device` was last reached, if anywhere.
pub(crate) fn addr(conn: &Connection, device: &DeviceId) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT addr FROM shoal_peers WHERE device = ?1")?
        .query_row([&device.0[..]], |r| r.get(0))
        .optional()?)
}

/// Every device remembered, by id.
pub(crate) fn all(conn: &Connection) -> Result<Vec<KnownPeer>> {
    let mut stmt = conn.prepare("SELECT device, addr, seen_ms FROM shoal_peers ORDER BY device")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, addr, seen) = row?;
        if let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) {
            out.push(KnownPeer {
                device: DeviceId(id),
                addr,
                seen_ms: seen.max(0) as u64,
            });
        }
    }
    Ok(out)
}

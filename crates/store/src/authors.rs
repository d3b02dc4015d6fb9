//! Devices whose commits this file holds, each with a small local id, and their chains.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};
use shoal_core::{CommitHash, DeviceId, Hlc, Seq, VersionVector};

use crate::error::Result;

/// A cache of the `shoal_authors` table. Rows there are never deleted or renumbered,
/// so entries only go stale when a transaction that added them rolls back; the store
/// clears the cache then.
#[derive(Default)]
pub(crate) struct Authors {
    by_device: HashMap<DeviceId, i64>,
    by_id: HashMap<i64, DeviceId>,
}

/// Where an author's applied chain ends.
pub(crate) struct Head {
    pub(crate) id: i64,
    pub(crate) seq: Seq,
    pub(crate) hash: CommitHash,
    pub(crate) hlc: Hlc,
    pub(crate) forked: bool,
}

impl Authors {
    pub(crate) fn clear(&mut self) {
        self.by_device.clear();
        self.by_id.clear();
    }

    /// The local id of `device`, adding it if it is new.
    pub(crate) fn id(&mut self, conn: &Connection, device: &DeviceId) -> Result<i64> {
        if let Some(id) = self.by_device.get(device) {
            return Ok(*id);
        }
        let found: Option<i64> = conn
            .prepare_cached("SELECT id FROM shoal_authors WHERE device = ?1")?
            .query_row([&device.0[..]], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO shoal_authors(device) VALUES (?1)")?
                    .execute([&device.0[..]])?;
                conn.last_insert_rowid()
            }
        };
        self.remember(id, *device);
        Ok(id)
    }

    /// The device with local id `id`.
    pub(crate) fn device(&mut self, conn: &Connection, id: i64) -> Result<DeviceId> {
        if let Some(d) = self.by_id.get(&id) {
            return Ok(*d);
        }
        let bytes: Vec<u8> = conn
            .prepare_cached("SELECT device FROM shoal_authors WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let device = DeviceId(bytes.try_into().map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "device".into(), rusqlite::types::Type::Blob)
        })?);
        self.remember(id, device);
        Ok(device)
    }

    fn remember(&mut self, id: i64, device: DeviceId) {
        self.by_device.insert(device, id);
        self.by_id.insert(id, device);
    }
}

/// The head of `id`'s chain, read fresh: other processes may have moved it.
pub(crate) fn head(conn: &Connection, id: i64) -> Result<Head> {
    Ok(conn
        .prepare_cached(
            "SELECT head_seq, head_hash, head_hlc, forked FROM shoal_authors WHERE id = ?1",
        )?
        .query_row([id], |r| {
            let hash: Option<Vec<u8>> = r.get(1)?;
            Ok(Head {
                id,
                seq: Seq(r.get::<_, i64>(0)? as u64),
                hash: CommitHash(hash.and_then(|h| h.try_into().ok()).unwrap_or_default()),
                hlc: Hlc(r.get::<_, i64>(2)? as u64),
                forked: r.get(3)?,
            })
        })?)
}

/// Moves `id`'s head to a newly applied commit.
pub(crate) fn advance(
    conn: &Connection,
    id: i64,
    seq: Seq,
    hash: CommitHash,
    hlc: Hlc,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE shoal_authors SET head_seq = ?2, head_hash = ?3, head_hlc = ?4 WHERE id = ?1",
    )?
    .execute(rusqlite::params![
        id,
        seq.0 as i64,
        &hash.0[..],
        hlc.0 as i64
    ])?;
    Ok(())
}

/// What the database holds, author by author.
pub(crate) fn version_vector(conn: &Connection) -> Result<VersionVector> {
    let mut vv = VersionVector::default();
    let mut stmt =
        conn.prepare_cached("SELECT device, head_seq FROM shoal_authors WHERE head_seq > 0")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let bytes: Vec<u8> = row.get(0)?;
        if let Ok(id) = bytes.try_into() {
            vv.set(DeviceId(id), Seq(row.get::<_, i64>(1)? as u64));
        }
    }
    Ok(vv)
}

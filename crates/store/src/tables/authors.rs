//! Devices whose commits this file holds, each with a small local id, and their chains.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};
use shoal_core::{CommitHash, DeviceId, GroupId, Hlc, Seq, VersionVector};

use crate::error::{Result, StoreError};

/// A cache of the `shoal_authors` table. Rows there are never deleted or renumbered,
/// so entries only go stale when a transaction that added them rolls back; the store
/// clears the cache then.
#[derive(Default)]
pub(crate) struct Authors {
    by_device: HashMap<DeviceId, i64>,
    by_id: HashMap<i64, DeviceId>,
}

/// Where an author's applied chain in one group ends.
pub(crate) struct Head {
    pub(crate) group: GroupId,
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

/// The head of `id`'s chain in `group`, read fresh: other processes may have moved it.
pub(crate) fn head(conn: &Connection, group: &GroupId, id: i64) -> Result<Head> {
    let forked: bool = conn
        .prepare_cached("SELECT forked FROM shoal_authors WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let chain: Option<(i64, Option<Vec<u8>>, i64)> = conn
        .prepare_cached(
            "SELECT head_seq, head_hash, head_hlc FROM shoal_chains WHERE grp = ?1 AND author = ?2",
        )?
        .query_row(rusqlite::params![&group.0[..], id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let (seq, hash, hlc) = chain.unwrap_or((0, None, 0));
    // No head yet: the chain starts from the zero hash.
    let hash = match hash {
        None => [0; 32],
        Some(h) => h.try_into().map_err(|h: Vec<u8>| StoreError::Damaged {
            what: "a chain head's hash".into(),
            detail: format!("{} bytes, not 32", h.len()),
        })?,
    };
    Ok(Head {
        group: *group,
        id,
        seq: Seq(seq as u64),
        hash: CommitHash(hash),
        hlc: Hlc(hlc as u64),
        forked,
    })
}

/// Moves a chain's head to a newly applied commit.
pub(crate) fn advance(
    conn: &Connection,
    head: &Head,
    seq: Seq,
    hash: CommitHash,
    hlc: Hlc,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO shoal_chains(grp, author, head_seq, head_hash, head_hlc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (grp, author) DO UPDATE SET head_seq = excluded.head_seq, head_hash = excluded.head_hash, head_hlc = excluded.head_hlc",
    )?
    .execute(rusqlite::params![
        &head.group.0[..],
        head.id,
        seq.0 as i64,
        &hash.0[..],
        hlc.0 as i64
    ])?;
    Ok(())
}

/// What the database holds of one group, author by author.
/// The first bytes of each author's head hash in `group`, for the authors of
/// [`version_vector`], in its order: two devices with one seq and other tags hold
/// two histories of that author.
pub(crate) fn head_tags(conn: &Connection, group: &GroupId) -> Result<Vec<[u8; 8]>> {
    let mut tags = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT a.device, c.head_hash FROM shoal_chains c JOIN shoal_authors a ON a.id = c.author
         WHERE c.grp = ?1 AND c.head_seq > 0",
    )?;
    let mut rows = stmt.query([&group.0[..]])?;
    while let Some(row) = rows.next()? {
        let device: Vec<u8> = row.get(0)?;
        let hash: Option<Vec<u8>> = row.get(1)?;
        if let Ok(id) = <[u8; 32]>::try_from(device) {
            let mut tag = [0; 8];
            if let Some(h) = hash.filter(|h| h.len() >= 8) {
                tag.copy_from_slice(&h[..8]);
            }
            tags.insert(DeviceId(id), tag);
        }
    }
    Ok(tags.into_values().collect())
}

pub(crate) fn version_vector(conn: &Connection, group: &GroupId) -> Result<VersionVector> {
    let mut vv = VersionVector::default();
    let mut stmt = conn.prepare_cached(
        "SELECT a.device, c.head_seq FROM shoal_chains c JOIN shoal_authors a ON a.id = c.author
         WHERE c.grp = ?1 AND c.head_seq > 0",
    )?;
    let mut rows = stmt.query([&group.0[..]])?;
    while let Some(row) = rows.next()? {
        let bytes: Vec<u8> = row.get(0)?;
        if let Ok(id) = bytes.try_into() {
            vv.set(DeviceId(id), Seq(row.get::<_, i64>(1)? as u64));
        }
    }
    Ok(vv)
}

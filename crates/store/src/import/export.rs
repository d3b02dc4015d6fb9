//! Handing out applied commits that a peer lacks, chain by chain, in order.

use rusqlite::Connection;
use shoal_core::{DeviceId, GroupId, Seq, SignedCommit, VersionVector};

use crate::error::Result;
use crate::tables::commits::State;

/// Hands every applied commit of `group` that `have` lacks to `each`, in per-author
/// order.
pub(crate) fn export_each(
    conn: &Connection,
    group: &GroupId,
    have: &VersionVector,
    mut each: impl FnMut(SignedCommit) -> Result<()>,
) -> Result<()> {
    let mut cursor = have.clone();
    loop {
        let chunk = export_chunk(conn, group, &mut cursor, 1 << 20)?;
        if chunk.is_empty() {
            return Ok(());
        }
        chunk.into_iter().try_for_each(&mut each)?;
    }
}

/// The applied commits of `group` that `have` lacks, in per-author order, up to about
/// `max_bytes`; `have` moves past what is returned, so the next call goes on from there.
pub(crate) fn export_chunk(
    conn: &Connection,
    group: &GroupId,
    have: &mut VersionVector,
    max_bytes: usize,
) -> Result<Vec<SignedCommit>> {
    let heads: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT c.author, a.device, c.head_seq FROM shoal_chains c JOIN shoal_authors a ON a.id = c.author
             WHERE c.grp = ?1 AND c.head_seq > 0 ORDER BY c.author",
        )?
        .query_map([&group.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq > ?3 AND seq <= ?4 AND state = ?5 ORDER BY seq",
    )?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for (id, device, head) in heads {
        let Ok(device) = device.try_into().map(DeviceId) else {
            continue;
        };
        let from = have.get(&device).0 as i64;
        if from >= head {
            continue;
        }
        let mut rows = stmt.query(rusqlite::params![
            &group.0[..],
            id,
            from,
            head,
            State::Applied
        ])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let signed = SignedCommit::from_bytes(
                row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
            )?;
            bytes += signed.body.len() + 64;
            out.push(signed);
            have.set(device, Seq(seq as u64));
            if bytes >= max_bytes {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

//! `shoal_joins`: joins that started and have not ended, so that a crash in the
//! middle of one can be resumed.
//!
//! A join outlives a crash: it is recorded (with the ticket as read and the inviter's
//! address) before the joiner dials, and forgotten when it ends, in or refused. A daemon
//! that starts applies what a broken session kept, then goes on with each recorded join,
//! with backoff while the inviter is out of reach; the inviter lets a joiner that already
//! holds the invite's role in again, expired or not, without spending a use.

use rusqlite::{Connection, OptionalExtension};
use shoal_core::GroupId;

use crate::error::Result;

/// Records that a join of `group` started, with its ticket as the joiner read it.
pub(crate) fn begin(conn: &Connection, group: &GroupId, ticket: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO shoal_joins(grp, ticket) VALUES (?1, ?2)",
        rusqlite::params![&group.0[..], ticket],
    )?;
    Ok(())
}

/// The ticket of the join of `group` that started and has not ended.
pub(crate) fn ticket(conn: &Connection, group: &GroupId) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .query_row(
            "SELECT ticket FROM shoal_joins WHERE grp = ?1",
            [&group.0[..]],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every join that started and has not ended, with its ticket.
pub(crate) fn all(conn: &Connection) -> Result<Vec<(GroupId, Vec<u8>)>> {
    let mut stmt = conn.prepare("SELECT grp, ticket FROM shoal_joins")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (grp, ticket) = row?;
        if let Ok(id) = <[u8; 32]>::try_from(grp) {
            out.push((GroupId(id), ticket));
        }
    }
    Ok(out)
}

/// Records that the join of `group` ended, in or refused.
pub(crate) fn end(conn: &Connection, group: &GroupId) -> Result<()> {
    conn.execute("DELETE FROM shoal_joins WHERE grp = ?1", [&group.0[..]])?;
    Ok(())
}

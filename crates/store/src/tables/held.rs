//! `shoal_held`: remote row changes that cannot be applied yet (their table or column
//! is not here, or its schema changed in a way Shoal does not follow), kept encoded
//! until they can.

use rusqlite::Connection;

use crate::error::Result;

/// One held change, as it is stored.
pub(crate) struct Held {
    pub(crate) id: i64,
    pub(crate) table: String,
    /// The change, encoded.
    pub(crate) change: Vec<u8>,
}

/// Whether any change is held.
pub(crate) fn any(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM shoal_held)")?
        .query_row([], |r| r.get(0))?)
}

/// Every held change, oldest first.
pub(crate) fn all(conn: &Connection) -> Result<Vec<Held>> {
    let mut stmt = conn.prepare_cached("SELECT id, tbl, change FROM shoal_held ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Held {
            id: r.get(0)?,
            table: r.get(1)?,
            change: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Holds the encoded `change` to `table`, and why.
pub(crate) fn hold(conn: &Connection, table: &str, reason: &str, change: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT INTO shoal_held(tbl, reason, change) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![table, reason, change])?;
    Ok(())
}

/// Drops the held change `id`.
pub(crate) fn remove(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM shoal_held WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

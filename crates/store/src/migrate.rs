//! Bringing a file written by an older Shoal up to this one's tables, in place.
//!
//! Each step is the SQL of one schema version, plus what that version changed in
//! how rows or triggers are kept; the DDL itself is [`schema`]'s.

use rusqlite::Connection;

use crate::capture::triggers;
use crate::error::{Result, StoreError};
use crate::tables::rows;
use crate::tables::schema::{self, SCHEMA_VERSION};

/// Whether the file has Shoal's tables; when they are of an older version this code
/// can read, upgrades them first.
///
/// The upgrade is done in place, all or nothing, holding the write lock, so that of
/// two processes opening the file at once the second finds it done. Inside the
/// caller's transaction it is a savepoint of it.
pub(crate) fn up_to_date(conn: &Connection) -> Result<bool> {
    match schema::version(conn)? {
        None => Ok(false),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(SCHEMA_VERSION) => Ok(true),
        Some(2..=6) => {
            let own = conn.is_autocommit();
            conn.execute_batch(if own {
                "BEGIN IMMEDIATE"
            } else {
                "SAVEPOINT shoal_upgrade"
            })?;
            let upgraded = upgrade(conn);
            match (own, upgraded.is_ok()) {
                (true, true) => conn.execute_batch("COMMIT")?,
                (true, false) => conn.execute_batch("ROLLBACK")?,
                (false, true) => conn.execute_batch("RELEASE shoal_upgrade")?,
                (false, false) => {
                    conn.execute_batch("ROLLBACK TO shoal_upgrade; RELEASE shoal_upgrade")?
                }
            }
            upgraded.map(|()| true)
        }
        Some(v) => Err(StoreError::SchemaTooOld {
            found: v,
            supported: SCHEMA_VERSION,
        }),
    }
}

/// Version 3 added tables; version 4 numbers columns in `shoal_rows` and makes the
/// triggers anew; version 5 records which tables' rows each group was given; version
/// 6 keeps rows set aside by a constraint; version 7 keeps the inserts that lost their
/// row's life and the columns of records not tracked for now.
fn upgrade(conn: &Connection) -> Result<()> {
    // Read again under the write lock: another process may have done it meanwhile.
    let Some(from) = schema::version(conn)? else {
        return Ok(());
    };
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    if from < 3 {
        conn.execute_batch(schema::SCHEMA_V3)?;
    }
    if from < 4 {
        conn.execute_batch(schema::SCHEMA_V4)?;
        rows::upgrade_v3(conn)?;
        // Triggers no longer look for a marker table while Shoal applies remote changes.
        triggers::remake_all(conn)?;
        conn.execute_batch("DROP TABLE IF EXISTS shoal_applying")?;
    }
    if from < 5 {
        conn.execute_batch(schema::SCHEMA_V5)?;
        // Every table a known group carries is taken as given to it already: the
        // files of older versions gave the rows of a table when it was shared, and
        // giving them again would make each a second insert.
        conn.execute_batch(
            "INSERT OR IGNORE INTO shoal_shared(grp, tbl) SELECT g.id, t.id FROM shoal_groups g, shoal_tables t",
        )?;
    }
    if from < 6 {
        conn.execute_batch(schema::SCHEMA_V6)?;
    }
    if from < 7 {
        // Inserts that lost before are not known; their records keep the kind they have.
        conn.execute_batch(schema::SCHEMA_V7)?;
    }
    schema::set_current(conn)
}

//! The merge state Shoal keeps for each synced row: its causal length and the version
//! of every column, in `shoal_rows`.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use shoal_core::{Hlc, Version};

use crate::authors::Authors;
use crate::error::Result;

/// A version with its author as a local id: the compact form kept per cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct Ver {
    pub(crate) hlc: u64,
    pub(crate) author: i64,
}

/// One column's merge state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CellMeta {
    pub(crate) column: String,
    pub(crate) version: Ver,
    pub(crate) overwrote: Option<Ver>,
}

/// One row's merge state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RowMeta {
    /// The insert or delete that set the current causal length.
    pub(crate) event: Option<Ver>,
    /// For a deleted row: the newest write its deleter had seen.
    pub(crate) seen: Option<Ver>,
    /// Column versions of a live row.
    pub(crate) cells: Vec<CellMeta>,
}

/// A row's state as loaded: causal length 0 and no metadata when never seen.
pub(crate) struct RowState {
    pub(crate) cl: u64,
    pub(crate) meta: RowMeta,
    /// Whether `shoal_rows` has the row yet: saving then updates rather than inserts.
    pub(crate) stored: bool,
}

impl RowState {
    pub(crate) fn alive(&self) -> bool {
        self.cl % 2 == 1
    }
}

impl RowMeta {
    pub(crate) fn cell(&self, column: &str) -> Option<&CellMeta> {
        self.cells
            .iter()
            .find(|c| c.column.eq_ignore_ascii_case(column))
    }

    /// Sets a column's version, adding the column if it is new.
    pub(crate) fn set_cell(&mut self, column: &str, version: Ver, overwrote: Option<Ver>) {
        match self
            .cells
            .iter_mut()
            .find(|c| c.column.eq_ignore_ascii_case(column))
        {
            Some(c) => {
                c.version = version;
                c.overwrote = overwrote;
            }
            None => self.cells.push(CellMeta {
                column: column.to_owned(),
                version,
                overwrote,
            }),
        }
    }

    /// The newest write the row has seen: its event or any cell.
    pub(crate) fn newest(
        &self,
        authors: &mut Authors,
        conn: &Connection,
    ) -> Result<Option<Version>> {
        let mut best: Option<Version> = None;
        for v in self
            .event
            .iter()
            .chain(self.cells.iter().map(|c| &c.version))
        {
            let v = v.resolve(authors, conn)?;
            best = best.max(Some(v));
        }
        Ok(best)
    }
}

impl Ver {
    pub(crate) fn of(version: Version, authors: &mut Authors, conn: &Connection) -> Result<Ver> {
        Ok(Ver {
            hlc: version.hlc.0,
            author: authors.id(conn, &version.author)?,
        })
    }

    pub(crate) fn resolve(self, authors: &mut Authors, conn: &Connection) -> Result<Version> {
        Ok(Version {
            hlc: Hlc(self.hlc),
            author: authors.device(conn, self.author)?,
        })
    }
}

/// Loads a row's state.
pub(crate) fn load(conn: &Connection, table: i64, key: &[u8]) -> Result<RowState> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT cl, meta FROM shoal_rows WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table, key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match found {
        Some((cl, meta)) => RowState {
            cl: cl as u64,
            meta: postcard::from_bytes(&meta).unwrap_or_default(),
            stored: true,
        },
        None => RowState {
            cl: 0,
            meta: RowMeta::default(),
            stored: false,
        },
    })
}

/// Stores a row's state.
pub(crate) fn save(conn: &Connection, table: i64, key: &[u8], state: &RowState) -> Result<()> {
    let meta = postcard::to_stdvec(&state.meta).unwrap_or_default();
    let sql = if state.stored {
        "UPDATE shoal_rows SET cl = ?3, meta = ?4 WHERE tbl = ?1 AND key = ?2"
    } else {
        "INSERT INTO shoal_rows(tbl, key, cl, meta) VALUES (?1, ?2, ?3, ?4)"
    };
    conn.prepare_cached(sql)?
        .execute(rusqlite::params![table, key, state.cl as i64, meta])?;
    Ok(())
}

/// Stores the state of a row that `shoal_rows` does not have yet; false, changing
/// nothing, if it has.
pub(crate) fn claim(conn: &Connection, table: i64, key: &[u8], state: &RowState) -> Result<bool> {
    let meta = postcard::to_stdvec(&state.meta).unwrap_or_default();
    let added = conn
        .prepare_cached(
            "INSERT INTO shoal_rows(tbl, key, cl, meta) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(rusqlite::params![table, key, state.cl as i64, meta])?;
    Ok(added == 1)
}

/// Takes back a claim whose row change was refused.
pub(crate) fn forget(conn: &Connection, table: i64, key: &[u8]) -> Result<()> {
    conn.prepare_cached("DELETE FROM shoal_rows WHERE tbl = ?1 AND key = ?2")?
        .execute(rusqlite::params![table, key])?;
    Ok(())
}

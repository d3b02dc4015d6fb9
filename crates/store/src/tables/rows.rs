//! The merge state Shoal keeps for each synced row: its causal length and the version
//! of every column, in `shoal_rows`.
//!
//! The state is kept small, because a first sync writes one entry per row and that
//! B-tree is walked at random: a column is named by a number from `shoal_columns`,
//! and a cell written by the row's own insert or delete does not repeat its version.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use shoal_core::{Hlc, Version};

use crate::error::Result;
use crate::tables::authors::Authors;

/// A version with its author as a local id: the compact form kept per cell.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct Ver {
    pub(crate) hlc: u64,
    pub(crate) author: i64,
}

/// One column's merge state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CellMeta {
    pub(crate) column: String,
    pub(crate) version: Ver,
    pub(crate) overwrote: Option<Ver>,
}

/// One row's merge state. Its serde form is the one schema version 3 stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// A cache of the `shoal_columns` table: the number each tracked table's columns go
/// by in `shoal_rows`. Numbers are never reused or renumbered, so entries only go stale
/// when a transaction that added them rolls back; the store clears the cache then.
#[derive(Default)]
pub(crate) struct Columns {
    by_table: HashMap<i64, Vec<(String, u32)>>,
}

impl Columns {
    pub(crate) fn clear(&mut self) {
        self.by_table.clear();
    }

    /// The number of `table`'s column `name` (compared without regard to ASCII case,
    /// as SQLite compares names), adding it if it is new.
    pub(crate) fn id(&mut self, conn: &Connection, table: i64, name: &str) -> Result<u32> {
        let known = self.by_table.entry(table).or_default();
        if let Some((_, id)) = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Ok(*id);
        }
        let found: Option<u32> = conn
            .prepare_cached(
                "SELECT id FROM shoal_columns WHERE tbl = ?1 AND name = ?2 COLLATE NOCASE",
            )?
            .query_row(rusqlite::params![table, name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => conn
                .prepare_cached(
                    "INSERT INTO shoal_columns(tbl, id, name) \
                     SELECT ?1, coalesce(max(id) + 1, 0), ?2 FROM shoal_columns WHERE tbl = ?1 \
                     RETURNING id",
                )?
                .query_row(rusqlite::params![table, name], |r| r.get(0))?,
        };
        known.push((name.to_owned(), id));
        Ok(id)
    }

    /// The name of `table`'s column number `id`.
    fn name(&mut self, conn: &Connection, table: i64, id: u32) -> Result<String> {
        let known = self.by_table.entry(table).or_default();
        if let Some((name, _)) = known.iter().find(|(_, i)| *i == id) {
            return Ok(name.clone());
        }
        let name: String = conn
            .prepare_cached("SELECT name FROM shoal_columns WHERE tbl = ?1 AND id = ?2")?
            .query_row(rusqlite::params![table, id], |r| r.get(0))?;
        known.push((name.clone(), id));
        Ok(name)
    }
}

/// A row's state as `shoal_rows` keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    event: Option<Ver>,
    seen: Option<Ver>,
    cells: Vec<StoredCell>,
}

/// A column's state as `shoal_rows` keeps it: its number, and its version unless
/// that is the row's event.
#[derive(Serialize, Deserialize)]
struct StoredCell {
    column: u32,
    version: Option<Ver>,
    overwrote: Option<Ver>,
}

fn encode(conn: &Connection, columns: &mut Columns, table: i64, meta: &RowMeta) -> Result<Vec<u8>> {
    let mut cells = Vec::with_capacity(meta.cells.len());
    for c in &meta.cells {
        cells.push(StoredCell {
            column: columns.id(conn, table, &c.column)?,
            version: (Some(c.version) != meta.event).then_some(c.version),
            overwrote: c.overwrote,
        });
    }
    let stored = Stored {
        event: meta.event,
        seen: meta.seen,
        cells,
    };
    Ok(postcard::to_stdvec(&stored)?)
}

/// Appends to `out` the state of a row that an insert has just started, as [`save`]
/// stores it: every cell carries the insert's version, and what it overwrote. `cells`
/// are the numbers of the columns with what each overwrote.
pub(crate) fn encode_inserted(
    event: Ver,
    cells: &[(u32, Option<Ver>)],
    out: Vec<u8>,
) -> Result<Vec<u8>> {
    /// The cells of [`Stored`], written without building them.
    struct Cells<'a>(&'a [(u32, Option<Ver>)]);
    impl Serialize for Cells<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|&(column, overwrote)| StoredCell {
                column,
                version: None,
                overwrote,
            }))
        }
    }
    // A struct is its fields one after another: this is `Stored`.
    Ok(postcard::to_extend(
        &(Some(event), None::<Ver>, Cells(cells)),
        out,
    )?)
}

fn decode(conn: &Connection, columns: &mut Columns, table: i64, bytes: &[u8]) -> Result<RowMeta> {
    let stored: Stored = postcard::from_bytes(bytes)?;
    let mut cells = Vec::with_capacity(stored.cells.len());
    for c in stored.cells {
        let Some(version) = c.version.or(stored.event) else {
            continue;
        };
        cells.push(CellMeta {
            column: columns.name(conn, table, c.column)?,
            version,
            overwrote: c.overwrote,
        });
    }
    Ok(RowMeta {
        event: stored.event,
        seen: stored.seen,
        cells,
    })
}

/// The insert or delete that set a stored row's causal length, read from its state
/// alone.
pub(crate) fn event(bytes: &[u8]) -> Result<Option<Ver>> {
    Ok(postcard::from_bytes::<Stored>(bytes)?.event)
}

/// A row's causal length: 0 when never seen. Odd while the row exists.
pub(crate) fn cl(conn: &Connection, table: i64, key: &[u8]) -> Result<u64> {
    let cl: Option<i64> = conn
        .prepare_cached("SELECT cl FROM shoal_rows WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table, key], |r| r.get(0))
        .optional()?;
    Ok(cl.unwrap_or(0) as u64)
}

/// Loads a row's state.
pub(crate) fn load(
    conn: &Connection,
    columns: &mut Columns,
    table: i64,
    key: &[u8],
) -> Result<RowState> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT cl, meta FROM shoal_rows WHERE tbl = ?1 AND key = ?2")?
        .query_row(rusqlite::params![table, key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match found {
        Some((cl, meta)) => RowState {
            cl: cl as u64,
            meta: decode(conn, columns, table, &meta)?,
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
pub(crate) fn save(
    conn: &Connection,
    columns: &mut Columns,
    table: i64,
    key: &[u8],
    state: &RowState,
) -> Result<()> {
    let meta = encode(conn, columns, table, &state.meta)?;
    let sql = if state.stored {
        "UPDATE shoal_rows SET cl = ?3, meta = ?4 WHERE tbl = ?1 AND key = ?2"
    } else {
        "INSERT INTO shoal_rows(tbl, key, cl, meta) VALUES (?1, ?2, ?3, ?4)"
    };
    conn.prepare_cached(sql)?
        .execute(rusqlite::params![table, key, state.cl as i64, meta])?;
    Ok(())
}

/// Rewrites every row's state from the form of schema version 3, which named each
/// column, to the current one.
pub(crate) fn upgrade_v3(conn: &Connection) -> Result<()> {
    let mut columns = Columns::default();
    let mut select = conn.prepare(
        "SELECT tbl, key, meta FROM shoal_rows WHERE (tbl, key) > (?1, ?2) ORDER BY tbl, key LIMIT 1024",
    )?;
    let mut update = conn.prepare("UPDATE shoal_rows SET meta = ?3 WHERE tbl = ?1 AND key = ?2")?;
    let mut after: (i64, Vec<u8>) = (i64::MIN, Vec::new());
    loop {
        // A page at a time: a table must not change under a statement reading it.
        let page: Vec<(i64, Vec<u8>, Vec<u8>)> = select
            .query_map(rusqlite::params![after.0, after.1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some((table, key, _)) = page.last() else {
            return Ok(());
        };
        after = (*table, key.clone());
        for (table, key, old) in page {
            // Version 3 kept the in-memory form as it is.
            let meta: RowMeta = postcard::from_bytes(&old)?;
            let new = encode(conn, &mut columns, table, &meta)?;
            update.execute(rusqlite::params![table, key, new])?;
        }
    }
}

/// Renames, in every row's state, the versions by `author` that `map` stamps again.
pub(crate) fn restamp(
    conn: &Connection,
    author: i64,
    map: &impl Fn(u64) -> Option<u64>,
) -> Result<()> {
    let mut select = conn.prepare(
        "SELECT tbl, key, meta FROM shoal_rows WHERE (tbl, key) > (?1, ?2) ORDER BY tbl, key LIMIT 1024",
    )?;
    let mut update = conn.prepare("UPDATE shoal_rows SET meta = ?3 WHERE tbl = ?1 AND key = ?2")?;
    let again = |v: &mut Option<Ver>| -> bool {
        match v {
            Some(v) if v.author == author => map(v.hlc).map(|new| v.hlc = new).is_some(),
            _ => false,
        }
    };
    let mut after: (i64, Vec<u8>) = (i64::MIN, Vec::new());
    loop {
        let page: Vec<(i64, Vec<u8>, Vec<u8>)> = select
            .query_map(rusqlite::params![after.0, after.1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let Some((table, key, _)) = page.last() else {
            return Ok(());
        };
        after = (*table, key.clone());
        for (table, key, old) in page {
            let mut stored: Stored = postcard::from_bytes(&old)?;
            let mut changed = again(&mut stored.event) | again(&mut stored.seen);
            for c in &mut stored.cells {
                changed |= again(&mut c.version) | again(&mut c.overwrote);
            }
            if changed {
                update.execute(rusqlite::params![table, key, postcard::to_stdvec(&stored)?])?;
            }
        }
    }
}

/// Stores the state of a row that `shoal_rows` does not have yet; false, changing
/// nothing, if it has.
pub(crate) fn claim(
    conn: &Connection,
    columns: &mut Columns,
    table: i64,
    key: &[u8],
    state: &RowState,
) -> Result<bool> {
    let meta = encode(conn, columns, table, &state.meta)?;
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

#[cfg(test)]
mod tests {
    use shoal_core::GroupId;

    use super::*;
    use crate::{Store, StoreOptions};

    fn replica(dir: &std::path::Path, name: &str) -> Store {
        let path = dir.join(name);
        Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, title, body);"))
            .expect("schema");
        let mut store = Store::init(&path, StoreOptions::new(dir.join("keys"))).expect("init");
        store.track("notes", None).expect("track");
        store
    }

    /// Every row's merge state, by table and key.
    fn states(store: &mut Store) -> Vec<(i64, Vec<u8>, u64, RowMeta, i64)> {
        let keys: Vec<(i64, Vec<u8>, i64)> = store
            .conn
            .prepare("SELECT tbl, key, length(meta) FROM shoal_rows ORDER BY tbl, key")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .expect("keys");
        keys.into_iter()
            .map(|(table, key, len)| {
                let state = load(&store.conn, &mut store.me.columns, table, &key).expect("load");
                (table, key, state.cl, state.meta, len)
            })
            .collect()
    }

    #[test]
    fn an_inserted_state_is_stored_as_save_stores_it() {
        let conn = Connection::open_in_memory().expect("open");
        let mut columns = Columns::default();
        columns
            .by_table
            .insert(7, vec![("a".to_owned(), 0), ("b".to_owned(), 3)]);
        let event = Ver {
            hlc: 1 << 40,
            author: 2,
        };
        let earlier = Ver { hlc: 5, author: 9 };
        let meta = RowMeta {
            event: Some(event),
            seen: None,
            cells: vec![
                CellMeta {
                    column: "a".to_owned(),
                    version: event,
                    overwrote: None,
                },
                CellMeta {
                    column: "b".to_owned(),
                    version: event,
                    overwrote: Some(earlier),
                },
            ],
        };
        let saved = encode(&conn, &mut columns, 7, &meta).expect("encode");
        let before = vec![0xAB];
        let inserted =
            encode_inserted(event, &[(0, None), (3, Some(earlier))], before).expect("encode");
        assert_eq!(inserted[0], 0xAB, "appended after what was there");
        assert_eq!(inserted[1..], saved[..]);
        assert_eq!(
            decode(&conn, &mut columns, 7, &inserted[1..]).expect("decode"),
            meta
        );
    }

    #[test]
    fn a_version_3_file_is_upgraded_and_its_row_states_kept() {
        let dir = tempfile::TempDir::new().expect("dir");
        let mut a = replica(dir.path(), "a.db");
        let mut b = replica(dir.path(), "b.db");
        a.conn
            .execute_batch(
                "INSERT INTO notes VALUES ('n1', 't', 'b'), ('n2', 't', 'b'), ('n3', 't', 'b');",
            )
            .expect("insert");
        a.seal().expect("seal");
        b.import(
            a.export(&GroupId::DEFAULT, &Default::default())
                .expect("export"),
        )
        .expect("import");
        // A column written by another device than the row's creator, and a delete.
        b.conn
            .execute_batch("UPDATE notes SET Title = 'by b' WHERE id = 'n1'; DELETE FROM notes WHERE id = 'n3';")
            .expect("update");
        b.seal().expect("seal");
        let have = a.version_vector(&GroupId::DEFAULT).expect("vv");
        a.import(b.export(&GroupId::DEFAULT, &have).expect("export"))
            .expect("import");
        let before = states(&mut a);
        assert_eq!(before.len(), 3);
        assert!(
            before[0]
                .3
                .cells
                .iter()
                .any(|c| Some(c.version) != before[0].3.event),
            "{before:?}"
        );

        // Back to how version 3 kept it: each column named in every row.
        for (table, key, _, meta, len) in &before {
            let legacy = postcard::to_stdvec(meta).expect("encode");
            if !meta.cells.is_empty() {
                assert!(
                    legacy.len() as i64 > *len,
                    "numbered columns should be smaller"
                );
            }
            a.conn
                .execute(
                    "UPDATE shoal_rows SET meta = ?3 WHERE tbl = ?1 AND key = ?2",
                    rusqlite::params![table, key, legacy],
                )
                .expect("legacy");
        }
        // Version 3's triggers skipped Shoal's own writes by looking at a marker table.
        a.conn
            .execute_batch(
                "DROP TABLE shoal_columns; DROP TABLE shoal_shared; DROP TABLE shoal_oversized; DROP TABLE shoal_joins; DROP TABLE shoal_aside; DROP TABLE shoal_lost_inserts; ALTER TABLE shoal_conflicts DROP COLUMN parked; UPDATE shoal_meta SET value = 3 WHERE key = 'schema';
                 CREATE TABLE shoal_applying (on_ INTEGER);
                 DROP TRIGGER shoal_ins_1;
                 CREATE TRIGGER shoal_ins_1 AFTER INSERT ON notes
                 WHEN NOT EXISTS (SELECT 1 FROM shoal_applying) BEGIN SELECT 1; END;",
            )
            .expect("downgrade");
        let path = a.me.path.clone();
        drop(a);

        let mut a = Store::open(&path, StoreOptions::new(dir.path().join("keys"))).expect("open");
        assert_eq!(before, states(&mut a));
        let number = |sql: &str| -> i64 { a.conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(
            number("SELECT value FROM shoal_meta WHERE key = 'schema'"),
            crate::tables::schema::SCHEMA_VERSION
        );
        assert_eq!(
            number(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'shoal_applying' OR sql LIKE '%shoal_applying%'"
            ),
            0,
            "the marker table and the triggers using it are gone"
        );
        a.conn
            .execute("INSERT INTO notes VALUES ('n4', 'new', 'row')", [])
            .expect("insert");
        assert_eq!(
            a.seal().expect("seal").changes,
            1,
            "the new trigger captures"
        );
        // The upgraded file goes on merging.
        b.conn
            .execute_batch("UPDATE notes SET body = 'later' WHERE id = 'n1';")
            .expect("update");
        b.seal().expect("seal");
        let have = a.version_vector(&GroupId::DEFAULT).expect("vv");
        a.import(b.export(&GroupId::DEFAULT, &have).expect("export"))
            .expect("import");
        let body: String = a
            .conn
            .query_row(
                "SELECT title || '/' || body FROM notes WHERE id = 'n1'",
                [],
                |r| r.get(0),
            )
            .expect("row");
        assert_eq!(body, "by b/later");
    }
}

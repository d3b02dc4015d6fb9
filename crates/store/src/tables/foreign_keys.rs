//! The foreign keys the app declared on its tracked tables, as SQLite reports them.

use rusqlite::Connection;

use crate::error::Result;
use crate::sql::ident;

/// What a foreign key does when its parent row is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnDelete {
    /// `NO ACTION` or `RESTRICT`: the delete must not leave children.
    Refuse,
    /// `CASCADE`, `SET NULL` or `SET DEFAULT`: the delete reaches the children.
    Reach(&'static str),
}

/// One foreign key of a tracked table.
#[derive(Clone, Debug)]
pub(crate) struct ForeignKey {
    pub(crate) parent: String,
    pub(crate) from: Vec<String>,
    pub(crate) to: Vec<String>,
    pub(crate) on_delete: OnDelete,
}

/// The foreign keys declared on `table`, with the parent's key filled in where the
/// declaration leaves it implicit.
pub(crate) fn load(tx: &Connection, table: &str) -> Result<Vec<ForeignKey>> {
    let mut stmt = tx.prepare(&format!("PRAGMA foreign_key_list({})", ident(table)))?;
    // (id, parent, from, to, on_delete)
    let rows: Vec<(i64, String, String, Option<String>, String)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(6)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut keys: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, parent, from, to, on_delete) in rows {
        if keys.last().is_none_or(|(last, _)| *last != id) {
            let on_delete = match on_delete.to_ascii_uppercase().as_str() {
                "CASCADE" => OnDelete::Reach("ON DELETE CASCADE"),
                "SET NULL" => OnDelete::Reach("ON DELETE SET NULL"),
                "SET DEFAULT" => OnDelete::Reach("ON DELETE SET DEFAULT"),
                _ => OnDelete::Refuse,
            };
            keys.push((
                id,
                ForeignKey {
                    parent: parent.clone(),
                    from: Vec::new(),
                    to: Vec::new(),
                    on_delete,
                },
            ));
        }
        if let Some((_, fk)) = keys.last_mut() {
            fk.from.push(from);
            if let Some(to) = to {
                fk.to.push(to);
            }
        }
    }
    let mut out = Vec::new();
    for (_, mut fk) in keys {
        if fk.to.is_empty() {
            let mut stmt = tx.prepare(&format!("PRAGMA table_info({})", ident(&fk.parent)))?;
            let mut pk: Vec<(i64, String)> = stmt
                .query_map([], |r| Ok((r.get(5)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter(|(pos, _)| *pos > 0)
                .collect();
            pk.sort();
            fk.to = pk.into_iter().map(|(_, c)| c).collect();
        }
        if fk.to.len() == fk.from.len() {
            out.push(fk);
        }
    }
    Ok(out)
}

//! The statements Shoal runs against the app's tracked tables, row by row: the only
//! place that writes SQL for them.
//!
//! Names are quoted once, when a table is loaded; the statements for every row in
//! the table's own order are written then too, and the others when a change needs
//! them (SQLite's statement cache keeps them after).

use rusqlite::Connection;
use shoal_core::Value;

use crate::error::Result;
use crate::sql::{Bind, ident, key_match, value};

/// One column written by a change: its name and the value written.
pub(crate) trait Cell {
    fn column(&self) -> &str;
    fn value(&self) -> &Value;
}

impl Cell for (String, Value) {
    fn column(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &Value {
        &self.1
    }
}

/// The SQL Shoal runs against one tracked table.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableSql {
    /// The table's name, quoted.
    table: String,
    /// The key columns' names as the table has them, and quoted.
    key_columns: Vec<String>,
    keys: Vec<String>,
    /// The other columns' names as the table has them, and quoted.
    columns: Vec<String>,
    quoted: Vec<String>,
    /// Reads the non-key columns of one row (`SELECT 1` when there are none).
    select_row: String,
    /// Inserts a row with every column, or overwrites every column of an existing one.
    upsert_all: String,
    /// Deletes one row.
    delete: String,
}

impl TableSql {
    pub(crate) fn new(name: &str, key_columns: &[String], columns: &[String]) -> TableSql {
        let mut sql = TableSql {
            table: ident(name),
            key_columns: key_columns.to_vec(),
            keys: key_columns.iter().map(|c| ident(c)).collect(),
            columns: columns.to_vec(),
            quoted: columns.iter().map(|c| ident(c)).collect(),
            ..TableSql::default()
        };
        let key_match = key_match(key_columns, 1);
        sql.select_row = format!(
            "SELECT {} FROM {} WHERE {key_match}",
            if sql.quoted.is_empty() {
                "1".to_owned()
            } else {
                sql.quoted.join(", ")
            },
            sql.table
        );
        sql.upsert_all = sql.upsert_rows(1);
        sql.delete = format!("DELETE FROM {} WHERE {key_match}", sql.table);
        sql
    }

    /// The row's non-key columns as they are now, or `None` when it does not exist.
    pub(crate) fn read(&self, conn: &Connection, key: &[Value]) -> Result<Option<Vec<Value>>> {
        let mut stmt = conn.prepare_cached(&self.select_row)?;
        let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
        let mut q = stmt.query(rusqlite::params_from_iter(&binds))?;
        match q.next()? {
            Some(row) => Ok(Some(
                (0..self.columns.len())
                    .map(|i| row.get_ref(i).map(value))
                    .collect::<Result<_, _>>()?,
            )),
            None => Ok(None),
        }
    }

    /// Inserts the row, or overwrites an existing one: a column `cells` leaves out
    /// takes its default, as in the `excluded` row, never what the row's earlier life
    /// left there (an insert starts a row's life anew, and devices that deleted the
    /// row first do not have it).
    pub(crate) fn upsert<C: Cell>(
        &self,
        conn: &Connection,
        key: &[Value],
        cells: &[C],
    ) -> rusqlite::Result<()> {
        let binds: Vec<Bind<'_>> = key
            .iter()
            .chain(cells.iter().map(Cell::value))
            .map(Bind)
            .collect();
        // Usually the change writes every local column in local order: the prepared
        // statement serves. Otherwise (a column the sender lacks) build one to fit.
        let in_order = cells.len() == self.columns.len()
            && cells
                .iter()
                .zip(&self.columns)
                .all(|(c, name)| c.column() == name);
        let built;
        let sql = if in_order {
            &self.upsert_all
        } else {
            let names: Vec<String> = cells.iter().map(|c| ident(c.column())).collect();
            built = self.upsert_sql(&names, 1);
            &built
        };
        conn.prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(&binds))?;
        Ok(())
    }

    /// The statement that inserts or overwrites `rows` rows, each with every column
    /// (key first), in one go.
    pub(crate) fn upsert_rows(&self, rows: usize) -> String {
        self.upsert_sql(&self.quoted, rows)
    }

    fn upsert_sql(&self, written: &[String], rows: usize) -> String {
        let names: Vec<&str> = self
            .keys
            .iter()
            .chain(written)
            .map(String::as_str)
            .collect();
        let values = if rows == 1 {
            let slots: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!("({})", slots.join(", "))
        } else {
            vec![format!("({})", vec!["?"; names.len()].join(", ")); rows].join(", ")
        };
        let action = if self.quoted.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = self
                .quoted
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!("UPDATE SET {}", sets.join(", "))
        };
        format!(
            "INSERT INTO {} ({}) VALUES {values} ON CONFLICT ({}) DO {action}",
            self.table,
            names.join(", "),
            self.keys.join(", ")
        )
    }

    /// Writes `cells` to the existing row with `key`; the other columns stay.
    pub(crate) fn update<C: Cell>(
        &self,
        conn: &Connection,
        key: &[Value],
        cells: &[&C],
    ) -> rusqlite::Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        let sets: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", ident(c.column()), i + 1))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.table,
            sets.join(", "),
            key_match(&self.key_columns, cells.len() + 1)
        );
        let binds: Vec<Bind<'_>> = cells
            .iter()
            .map(|c| c.value())
            .chain(key)
            .map(Bind)
            .collect();
        conn.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(&binds))?;
        Ok(())
    }

    /// Inserts a row with `key` and `cells`; the other columns take their defaults,
    /// and a row already there is a constraint error.
    pub(crate) fn insert<C: Cell>(
        &self,
        conn: &Connection,
        key: &[Value],
        cells: &[C],
    ) -> rusqlite::Result<()> {
        let names: Vec<String> = self
            .keys
            .iter()
            .cloned()
            .chain(cells.iter().map(|c| ident(c.column())))
            .collect();
        let slots: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            names.join(", "),
            slots.join(", ")
        );
        let binds: Vec<Bind<'_>> = key
            .iter()
            .chain(cells.iter().map(Cell::value))
            .map(Bind)
            .collect();
        conn.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(&binds))?;
        Ok(())
    }

    /// Deletes the row with `key`, if there is one.
    pub(crate) fn delete(&self, conn: &Connection, key: &[Value]) -> Result<()> {
        let binds: Vec<Bind<'_>> = key.iter().map(Bind).collect();
        conn.prepare_cached(&self.delete)?
            .execute(rusqlite::params_from_iter(&binds))?;
        Ok(())
    }
}

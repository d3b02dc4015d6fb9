//! The apps on the simulated devices: their schema, the writes they make to the
//! constrained tables, and what must be identical on every member once they have
//! synced. The simulation and the property tests over the same schema share it.

use std::collections::BTreeSet;

use rand::Rng;
use rand::rngs::StdRng;
use shoal_store::Store;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `items` and the constrained tables are shared with the group; `notes` is in no
/// group and must never leave. The constrained tables clash: a UNIQUE column with a
/// NOT NULL one and a CHECK across two, a composite UNIQUE, and a foreign key with ON
/// DELETE CASCADE, which the apps enforce.
pub const SCHEMA: &str = "CREATE TABLE items (id TEXT PRIMARY KEY, a TEXT, b INTEGER);
     CREATE TABLE notes (id TEXT PRIMARY KEY, owner TEXT, body TEXT);
     CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT NOT NULL DEFAULT '',
                         lo INTEGER, hi INTEGER, CHECK (lo <= hi));
     CREATE TABLE seats (id TEXT PRIMARY KEY, hall TEXT, seat INTEGER, UNIQUE (hall, seat));
     CREATE TABLE accts (id TEXT PRIMARY KEY, owner TEXT);
     CREATE TABLE loans (id TEXT PRIMARY KEY, acct TEXT REFERENCES accts(id) ON DELETE CASCADE,
                         amount INTEGER);";
/// The tables the group carries.
pub const SHARED: [&str; 5] = ["items", "users", "seats", "accts", "loans"];

/// One write to a constrained table, with values from small sets so that devices
/// clash: which statement, and the row and values it names.
#[derive(Clone, Debug)]
pub struct Write {
    /// Picks the statement: 0 to 99, in bands (see [`Write::run`]).
    pub kind: u32,
    /// `u0` to `u5`.
    pub user: u32,
    /// `e0@example.com` to `e3@example.com`, or NULL.
    pub email: Option<u32>,
    /// A number for `lo`, `hi` and `amount`: 0 to 9.
    pub small: i32,
    /// A seat: `s0` to `s5`, hall 0 (`A`) or 1 (`B`), seat 1 or 2.
    pub seat: (u32, usize, i32),
    /// `x0` to `x2`.
    pub acct: u32,
    /// `l0` to `l5`.
    pub loan: u32,
}

impl Write {
    /// A write drawn from `rng`.
    pub fn random(rng: &mut StdRng) -> Write {
        let user = rng.random_range(0..6);
        let email = rng.random_bool(0.85).then(|| rng.random_range(0..4));
        let small = rng.random_range(0..10);
        let seat = (
            rng.random_range(0..6),
            rng.random_range(0..2),
            rng.random_range(1..=2),
        );
        let acct = rng.random_range(0..3);
        let loan = rng.random_range(0..6);
        let kind = rng.random_range(0..100);
        Write {
            kind,
            user,
            email,
            small,
            seat,
            acct,
            loan,
        }
    }

    /// Makes the write through `conn` as the app of device `owner` would: true if
    /// it was made, false if the local schema refused it.
    pub fn run(&self, conn: &rusqlite::Connection, owner: &str) -> rusqlite::Result<bool> {
        let user = format!("u{}", self.user);
        let email = self.email.map(|e| format!("e{e}@example.com"));
        let small = self.small;
        let seat = (
            format!("s{}", self.seat.0),
            ["A", "B"][self.seat.1 % 2],
            self.seat.2,
        );
        let acct = format!("x{}", self.acct);
        let loan = format!("l{}", self.loan);
        let result = match self.kind {
            0..12 => conn.execute(
                "INSERT INTO users(id, email, name) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET email = excluded.email, name = excluded.name",
                rusqlite::params![user, email, owner],
            ),
            12..20 => conn.execute("UPDATE users SET email = ?2 WHERE id = ?1", rusqlite::params![user, email]),
            20..26 => conn.execute("UPDATE users SET lo = ?2 WHERE id = ?1", rusqlite::params![user, small]),
            26..32 => conn.execute("UPDATE users SET hi = ?2 WHERE id = ?1", rusqlite::params![user, small]),
            32..34 => conn.execute("UPDATE users SET name = NULL WHERE id = ?1", [&user]),
            34..40 => conn.execute("DELETE FROM users WHERE id = ?1", [&user]),
            40..52 => conn.execute(
                "INSERT INTO seats VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET hall = excluded.hall, seat = excluded.seat",
                rusqlite::params![seat.0, seat.1, seat.2],
            ),
            52..58 => conn.execute("UPDATE seats SET seat = ?2 WHERE id = ?1", rusqlite::params![seat.0, seat.2]),
            58..62 => conn.execute("DELETE FROM seats WHERE id = ?1", [&seat.0]),
            62..72 => conn.execute(
                "INSERT INTO accts VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET owner = excluded.owner",
                rusqlite::params![acct, owner],
            ),
            72..78 => conn.execute("DELETE FROM accts WHERE id = ?1", [&acct]),
            78..90 => conn.execute(
                "INSERT INTO loans VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET acct = excluded.acct, amount = excluded.amount",
                rusqlite::params![loan, acct, small],
            ),
            90..95 => conn.execute("UPDATE loans SET acct = ?2 WHERE id = ?1", rusqlite::params![loan, acct]),
            _ => conn.execute("DELETE FROM loans WHERE id = ?1", [&loan]),
        };
        match result {
            Ok(_) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The foreign keys the apps enforce, on Shoal's connection too (Shoal turns them
/// off for its own transactions).
pub fn enforce(store: &Store) -> Result<(), String> {
    store
        .connection()
        .execute_batch("PRAGMA foreign_keys = ON")
        .map_err(err)
}

/// What must be identical on every member: each shared table row by row, every
/// column quoted; every open conflict record (id, kind, table, key, status, columns,
/// detail); the rows set aside. The file must pass
/// `integrity_check`, and every row `foreign_key_check` reports must have an open
/// record. Lines that are not rows start with `!`.
pub fn shared_state(store: &Store) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for t in SHARED {
        let columns = dump(
            store,
            &format!("SELECT name FROM pragma_table_info('{t}') ORDER BY cid"),
        )?;
        let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
        for row in dump(
            store,
            &format!("SELECT {} FROM {t} ORDER BY id", quoted.join(" || ',' || ")),
        )? {
            out.push(format!("{t}: {row}"));
        }
    }
    // Open records are decided by the commits alone, write conflicts and constraint
    // ones alike. (A record closed is on record only where the clash came and went.)
    let mut open = store.conflicts(false).map_err(err)?;
    open.sort_by(|a, b| a.id.cmp(&b.id));
    for c in open {
        out.push(format!(
            "!conflict {} {:?} {} {} {:?} {:?} {}",
            c.id,
            c.kind,
            c.table,
            c.key_text,
            c.status,
            c.columns,
            c.detail.unwrap_or_default()
        ));
    }
    let status = store.status().map_err(err)?;
    for a in &status.set_aside {
        out.push(format!("!set aside {a}"));
    }
    let integrity = dump(store, "SELECT * FROM pragma_integrity_check")?;
    if integrity != ["ok"] {
        return Err(format!("integrity_check: {integrity:?}"));
    }
    let open: BTreeSet<(String, String)> = store
        .conflicts(false)
        .map_err(err)?
        .into_iter()
        .map(|c| (c.table, c.key_text))
        .collect();
    let mut stmt = store
        .connection()
        .prepare("SELECT \"table\", rowid FROM pragma_foreign_key_check")
        .map_err(err)?;
    let broken: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    for (table, rowid) in broken {
        let key: String = store
            .connection()
            .query_row(
                &format!("SELECT '(' || quote(id) || ')' FROM {table} WHERE rowid = ?1"),
                [rowid],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !open.contains(&(table.clone(), key.clone())) {
            return Err(format!(
                "foreign_key_check: {table} {key} refers to nothing and no open record says so (open: {open:?})"
            ));
        }
    }
    Ok(out)
}

pub(crate) fn dump(store: &Store, sql: &str) -> Result<Vec<String>, String> {
    let mut stmt = store.connection().prepare(sql).map_err(err)?;
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)
}

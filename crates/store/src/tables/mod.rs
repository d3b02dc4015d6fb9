//! The tables layer: one module per `shoal_*` table, owning all of its SQL and the
//! mapping of its columns to types, and [`row_sql`], the only builder of statements
//! against the app's tracked tables.
//!
//! Nothing here merges, seals or verifies: a module here reads and writes rows of
//! its table and knows no rule about what they mean.

pub(crate) mod authors;
pub(crate) mod commits;
pub(crate) mod follow;
pub(crate) mod foreign_keys;
pub(crate) mod groups;
pub(crate) mod held;
pub(crate) mod invites;
pub(crate) mod joins;
pub(crate) mod log;
pub(crate) mod meta;
pub(crate) mod peers;
pub(crate) mod row_sql;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod table;

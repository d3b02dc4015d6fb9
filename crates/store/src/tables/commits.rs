//! `shoal_commits`: every commit this file holds, signed as it came, with where it
//! stands. Its states are numbers in the file; [`State`] is the only place that
//! spells them.

use rusqlite::types::{ToSql, ToSqlOutput};
use rusqlite::{Connection, OptionalExtension, Transaction};
use shoal_core::{Checked, GroupId, Hlc, Seq, SignedCommit};

use crate::error::Result;

/// Where a stored commit stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Applied to the tables.
    Applied = 0,
    /// Waiting for an earlier commit of its author.
    Waiting = 1,
    /// Stamped further ahead of the local clock than the allowed drift.
    Future = 2,
    /// Refused for good: its author was revoked before it, or may only read.
    Refused = 3,
}

impl State {
    /// The state a stored number stands for.
    pub(crate) fn from_code(code: i64) -> Option<State> {
        match code {
            0 => Some(State::Applied),
            1 => Some(State::Waiting),
            2 => Some(State::Future),
            3 => Some(State::Refused),
            _ => None,
        }
    }

    /// Its name, as `shoal log` prints it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Waiting => "waiting",
            State::Future => "future",
            State::Refused => "refused",
        }
    }
}

/// How many commits stand where.
pub(crate) struct Counts {
    pub(crate) applied: u64,
    pub(crate) waiting: u64,
    pub(crate) future: u64,
    pub(crate) refused: u64,
}

/// How many commits the file holds in each state.
pub(crate) fn counts(conn: &Connection) -> Result<Counts> {
    let applied: i64 = conn
        .prepare_cached("SELECT count(*) FROM shoal_commits WHERE state = ?1")?
        .query_row([State::Applied], |r| r.get(0))?;
    let (waiting, future, refused): (i64, i64, i64) = conn
        .prepare_cached(COUNTS_NOT_APPLIED)?
        .query_row([State::Waiting, State::Future, State::Refused], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(Counts {
        applied: applied as u64,
        waiting: waiting as u64,
        future: future as u64,
        refused: refused as u64,
    })
}

impl ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(*self as i64))
    }
}

/// Stores a verified commit.
pub(crate) fn store_commit(
    tx: &Transaction,
    author: i64,
    c: &Checked,
    signed: &SignedCommit,
    state: State,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shoal_commits(author, seq, hash, hlc, grp, changes, state, signed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        author,
        c.head.seq.0 as i64,
        &c.hash.0[..],
        c.head.hlc.0 as i64,
        &c.head.group.0[..],
        c.changes as i64,
        state,
        signed.to_bytes(),
    ])?;
    Ok(())
}

/// Sets where the commit of `author` at `seq` in `group` stands.
pub(crate) fn set_state(
    tx: &Transaction,
    group: &GroupId,
    author: i64,
    seq: Seq,
    state: State,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE shoal_commits SET state = ?4 WHERE grp = ?1 AND author = ?2 AND seq = ?3",
    )?
    .execute(rusqlite::params![&group.0[..], author, seq.0 as i64, state])?;
    Ok(())
}

/// Drops the commits of `author` in `group` at seqs `from..=upto`, stamped at or after
/// `since`, that are not applied; returns how many.
pub(crate) fn drop_unapplied(
    tx: &Transaction,
    group: &GroupId,
    author: i64,
    (from, upto): (Seq, Seq),
    since: Hlc,
) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq BETWEEN ?3 AND ?4
             AND hlc >= ?5 AND state != ?6",
        )?
        .execute(rusqlite::params![
            &group.0[..],
            author,
            from.0 as i64,
            upto.0 as i64,
            since.0 as i64,
            State::Applied
        ])?)
}

/// The commit of `author` at `seq` in `group`, as signed, whatever its state.
pub(crate) fn signed_at(
    tx: &Transaction,
    group: &GroupId,
    author: i64,
    seq: Seq,
) -> Result<Option<Vec<u8>>> {
    Ok(tx
        .prepare_cached(
            "SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq = ?3",
        )?
        .query_row(rusqlite::params![&group.0[..], author, seq.0 as i64], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The commit of `author` at `seq` in `group`, as signed, if it waits to be applied
/// (for an earlier commit or for its clock).
pub(crate) fn waiting_at(
    tx: &Transaction,
    group: &GroupId,
    author: i64,
    seq: Seq,
) -> Result<Option<SignedCommit>> {
    let bytes: Option<Vec<u8>> = tx
        .prepare_cached(WAITING_AT)?
        .query_row(rusqlite::params![&group.0[..], author, seq.0 as i64], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(bytes.map(|b| SignedCommit::from_bytes(&b)).transpose()?)
}

/// The (group, author) of every chain with a commit waiting.
pub(crate) fn waiting_chains(tx: &Transaction) -> Result<Vec<(GroupId, i64)>> {
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached(WAITING_CHAINS)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let grp: Vec<u8> = row.get(0)?;
        if let Ok(grp) = grp.try_into() {
            out.push((GroupId(grp), row.get::<_, i64>(1)?));
        }
    }
    Ok(out)
}

/// How many commits wait for an earlier one, and how many for their clock.
pub(crate) fn count_waiting(tx: &Transaction) -> Result<(usize, usize)> {
    let (waiting, future): (i64, i64) = tx
        .prepare_cached(WAITING_COUNTS)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((waiting as usize, future as usize))
}

/// Whether any commit waits, for an earlier one or for its clock.
pub(crate) fn any_waiting(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached(ANY_WAITING)?
        .query_row([], |r| r.get(0))?)
}

// Each but the first, a lookup by key, names `state != 0` as the index of commits not
// applied does, or SQLite would read every commit held to find the few that wait.
// The numbers are [`State`]'s: the test below holds them to it.
const WAITING_AT: &str = "SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq = ?3 AND state IN (1, 2)";
const WAITING_CHAINS: &str =
    "SELECT DISTINCT grp, author FROM shoal_commits WHERE state != 0 AND state IN (1, 2)";
const WAITING_COUNTS: &str =
    "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2)
     FROM shoal_commits WHERE state != 0 AND state IN (1, 2)";
const COUNTS_NOT_APPLIED: &str = "SELECT count(*) FILTER (WHERE state = ?1),
     count(*) FILTER (WHERE state = ?2), count(*) FILTER (WHERE state = ?3)
     FROM shoal_commits WHERE state != 0";
const ANY_WAITING: &str =
    "SELECT EXISTS (SELECT 1 FROM shoal_commits WHERE state != 0 AND state IN (1, 2))";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};

    #[test]
    fn the_numbers_in_the_queries_are_the_states() {
        assert_eq!(State::Applied as i64, 0);
        assert_eq!(State::Waiting as i64, 1);
        assert_eq!(State::Future as i64, 2);
        assert_eq!(State::Refused as i64, 3);
    }

    /// Every import asks which commits wait: that must not read every commit held.
    #[test]
    fn finding_waiting_commits_reads_only_the_waiting() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        rusqlite::Connection::open(&path).expect("open");
        let store = Store::init(&path, StoreOptions::new(dir.path().join("data"))).expect("init");
        for sql in [
            WAITING_CHAINS,
            WAITING_COUNTS,
            COUNTS_NOT_APPLIED,
            ANY_WAITING,
        ] {
            let mut stmt = store
                .connection()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan");
            // Parameters, where the query has them, as the states they stand for.
            let states = [State::Waiting, State::Future, State::Refused];
            let params = &states[..stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert!(
                plan.iter()
                    .any(|step| step.contains("shoal_commits_waiting")),
                "{sql}: {plan:?}"
            );
        }
    }
}

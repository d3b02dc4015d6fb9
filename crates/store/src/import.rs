//! Importing commits: chain checks, gaps, forks and far-future clocks, then merging.
//!
//! A commit is stored as soon as its signature checks out, then applied only when it
//! is next in its author's chain and its clock is not too far ahead of ours. Until
//! then it waits, kept, and is applied as soon as it can be.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde::Serialize;
use shoal_core::clock::check_drift;
use shoal_core::{DeviceId, GroupId, Seq, SignedCommit, VerifiedCommit, VersionVector};

use crate::apply::{self, Tables};
use crate::authors;
use crate::error::{Result, StoreError};
use crate::seal::{self, SealReport};
use crate::{Replica, load_hlc, save_hlc};

/// Where a stored commit stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Applied to the tables.
    Applied = 0,
    /// Waiting for an earlier commit of its author.
    Waiting = 1,
    /// Stamped further ahead of the local clock than the allowed drift.
    Future = 2,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Local writes sealed first, so that no unsealed write is overwritten.
    pub sealed: SealReport,
    /// Commits applied, including ones that had been waiting.
    pub commits_applied: usize,
    /// Row changes applied.
    pub changes_applied: usize,
    /// Commits already held, ignored.
    pub duplicates: usize,
    /// Commits now waiting for an earlier commit of their author (a gap).
    pub waiting: usize,
    /// Commits held because their clock is too far ahead.
    pub future: usize,
    /// Authors caught signing two different commits for one place in their chain.
    pub forks: Vec<ForkReport>,
    /// Commits refused, and why.
    pub refused: Vec<String>,
    /// Conflicts found.
    pub conflicts: usize,
    /// Row changes held because they cannot be applied yet.
    pub held: usize,
    /// Held row changes applied at last.
    pub held_applied: usize,
}

/// An author caught forking its chain.
#[derive(Clone, Debug, Serialize)]
pub struct ForkReport {
    /// The author.
    pub author: String,
    /// The place in its chain that has two commits.
    pub seq: u64,
}

/// Verifies, stores and applies a batch of commits. Each is decoded when it is
/// checked and again when it is applied, so that a large batch costs its bytes in
/// memory, not its decoded form; any commit that fails to verify fails the batch.
pub(crate) fn import(
    tx: &Transaction,
    r: &mut Replica,
    commits: Vec<SignedCommit>,
) -> Result<ImportReport> {
    let mut report = ImportReport {
        sealed: seal::seal(tx, r)?,
        ..ImportReport::default()
    };
    let mut batch: HashMap<(i64, u64), SignedCommit> = HashMap::new();
    let mut touched = BTreeSet::new();
    for signed in commits {
        let c = signed.verify()?;
        if c.body.group != GroupId::DEFAULT {
            return Err(StoreError::UnknownGroup {
                author: c.body.author,
                seq: c.body.seq.0,
                group: c.body.group.to_string(),
            });
        }
        let id = r.authors.id(tx, &c.body.author)?;
        if authors::head(tx, id)?.forked {
            report.refused.push(format!(
                "commit {} by {}: its author forked its chain and is no longer trusted",
                c.body.seq, c.body.author
            ));
            continue;
        }
        let existing: Option<Vec<u8>> = tx
            .prepare_cached("SELECT signed FROM shoal_commits WHERE author = ?1 AND seq = ?2")?
            .query_row(rusqlite::params![id, c.body.seq.0 as i64], |r| r.get(0))
            .optional()?;
        match existing {
            Some(signed)
                if SignedCommit::from_bytes(&signed)
                    .map(|s| s.body == c.signed.body)
                    .unwrap_or(false) =>
            {
                report.duplicates += 1;
            }
            Some(signed) => {
                record_fork(tx, id, c.body.author, c.body.seq, &signed, &c.signed)?;
                report.forks.push(ForkReport {
                    author: c.body.author.to_string(),
                    seq: c.body.seq.0,
                });
            }
            None if batch.contains_key(&(id, c.body.seq.0)) => report.duplicates += 1,
            None => {
                store_commit(tx, id, &c, State::Waiting)?;
                touched.insert(id);
                batch.insert((id, c.body.seq.0), c.signed);
            }
        }
    }
    // Authors with commits left waiting by earlier imports may be able to go on now.
    {
        let mut stmt =
            tx.prepare_cached("SELECT DISTINCT author FROM shoal_commits WHERE state != 0")?;
        for id in stmt.query_map([], |r| r.get::<_, i64>(0))? {
            touched.insert(id?);
        }
    }
    tx.execute("INSERT INTO shoal_applying VALUES (1)", [])?;
    let tables = Tables::load(tx)?;
    let mut hlc = load_hlc(tx)?;
    for id in touched {
        advance_chain(tx, r, &tables, id, &mut batch, &mut hlc, &mut report)?;
    }
    apply::retry_held(tx, r, &tables, &mut report)?;
    tables.check_foreign_keys(tx, r, &mut report)?;
    tx.execute("DELETE FROM shoal_applying", [])?;
    save_hlc(tx, hlc)?;
    let (waiting, future): (i64, i64) = tx.query_row(
        "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2) FROM shoal_commits WHERE state != 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    report.waiting = waiting as usize;
    report.future = future as usize;
    Ok(report)
}

/// Applies `id`'s commits that follow its head, for as long as the chain holds.
fn advance_chain(
    tx: &Transaction,
    r: &mut Replica,
    tables: &Tables,
    id: i64,
    batch: &mut HashMap<(i64, u64), SignedCommit>,
    hlc: &mut shoal_core::Hlc,
    report: &mut ImportReport,
) -> Result<()> {
    loop {
        let head = authors::head(tx, id)?;
        if head.forked {
            return Ok(());
        }
        let next = head.seq.0 + 1;
        let commit = match batch.remove(&(id, next)) {
            Some(c) => c.verify()?,
            None => {
                let stored: Option<Vec<u8>> = tx
                    .prepare_cached("SELECT signed FROM shoal_commits WHERE author = ?1 AND seq = ?2 AND state != 0")?
                    .query_row(rusqlite::params![id, next as i64], |r| r.get(0))
                    .optional()?;
                match stored {
                    Some(bytes) => SignedCommit::from_bytes(&bytes)?.verify()?,
                    None => return Ok(()),
                }
            }
        };
        let author = commit.body.author;
        // Either way the author signed two incompatible successors of head.seq: ours
        // and this one. Keep both as proof and trust the author no more.
        let broken = if commit.body.prev != head.hash {
            Some(None)
        } else if commit.body.hlc <= head.hlc {
            Some(Some(format!(
                "commit {} by {author}: its clock is not later than its predecessor's; the author is no longer trusted",
                commit.body.seq
            )))
        } else {
            None
        };
        if let Some(refusal) = broken {
            let ours: Vec<u8> = tx.query_row(
                "SELECT signed FROM shoal_commits WHERE author = ?1 AND seq = ?2",
                rusqlite::params![id, head.seq.0 as i64],
                |r| r.get(0),
            )?;
            record_fork(tx, id, author, head.seq, &ours, &commit.signed)?;
            match refusal {
                Some(reason) => report.refused.push(reason),
                None => report.forks.push(ForkReport {
                    author: author.to_string(),
                    seq: head.seq.0,
                }),
            }
            return Ok(());
        }
        if check_drift(commit.body.hlc, r.now_ms(), r.options.max_drift_ms).is_err() {
            set_state(tx, id, commit.body.seq, State::Future)?;
            return Ok(());
        }
        let (seq, hash, clock) = (commit.body.seq, commit.hash, commit.body.hlc);
        apply::apply_commit(tx, r, tables, commit, report)?;
        set_state(tx, id, seq, State::Applied)?;
        authors::advance(tx, id, seq, hash, clock)?;
        *hlc = (*hlc).max(clock);
        report.commits_applied += 1;
    }
}

/// Stores a verified commit.
pub(crate) fn store_commit(
    tx: &Transaction,
    author: i64,
    c: &VerifiedCommit,
    state: State,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO shoal_commits(author, seq, hash, hlc, grp, changes, state, signed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        author,
        c.body.seq.0 as i64,
        &c.hash.0[..],
        c.body.hlc.0 as i64,
        &c.body.group.0[..],
        c.body.change_count() as i64,
        state as i64,
        c.signed.to_bytes(),
    ])?;
    Ok(())
}

fn set_state(tx: &Transaction, author: i64, seq: Seq, state: State) -> Result<()> {
    tx.prepare_cached("UPDATE shoal_commits SET state = ?3 WHERE author = ?1 AND seq = ?2")?
        .execute(rusqlite::params![author, seq.0 as i64, state as i64])?;
    Ok(())
}

fn record_fork(
    tx: &Transaction,
    id: i64,
    author: DeviceId,
    seq: Seq,
    first: &[u8],
    second: &SignedCommit,
) -> Result<()> {
    tx.execute(
        "INSERT INTO shoal_forks(author, seq, first, second, found_hlc) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![&author.0[..], seq.0 as i64, first, second.to_bytes(), load_hlc(tx)?.0 as i64],
    )?;
    tx.execute("UPDATE shoal_authors SET forked = 1 WHERE id = ?1", [id])?;
    Ok(())
}

pub(crate) fn export_each(
    conn: &Connection,
    have: &VersionVector,
    mut each: impl FnMut(SignedCommit) -> Result<()>,
) -> Result<()> {
    let heads: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT id, device, head_seq FROM shoal_authors WHERE head_seq > 0 ORDER BY id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT signed FROM shoal_commits WHERE author = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq",
    )?;
    for (id, device, head) in heads {
        let Ok(device) = device.try_into().map(DeviceId) else {
            continue;
        };
        let from = have.get(&device).0 as i64;
        if from >= head {
            continue;
        }
        let mut rows = stmt.query(rusqlite::params![id, from, head])?;
        while let Some(row) = rows.next()? {
            let bytes: Vec<u8> = row.get(0)?;
            each(SignedCommit::from_bytes(&bytes)?)?;
        }
    }
    Ok(())
}

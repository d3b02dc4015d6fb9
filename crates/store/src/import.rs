//! Importing commits: chain checks, gaps, forks and far-future clocks, then merging.
//!
//! A commit is stored as soon as its signature checks out, then applied only when it
//! is next in its author's chain and its clock is not too far ahead of ours. Until
//! then it waits, kept, and is applied as soon as it can be.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde::Serialize;
use shoal_core::clock::check_drift;
use shoal_core::{
    BodyView, Checked, CommitHead, DeviceId, Group, GroupId, GroupOp, Seq, SignedCommit,
    VersionVector,
};

use crate::apply::{self, Tables};
use crate::error::Result;
use crate::pending::Pending;
use crate::seal::{self, SealReport};
use crate::{Replica, load_hlc, save_hlc};
use crate::{authors, groups, retract};

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
    /// Commits held unapplied that their author withdrew for commits stamped again.
    pub withdrawn: usize,
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
    let mut batch: Batch = HashMap::new();
    let mut touched = BTreeSet::new();
    keep(tx, r, commits, &mut batch, &mut touched, &mut report)?;
    // Chains with commits left waiting by earlier imports may be able to go on now.
    {
        let mut stmt = tx.prepare_cached(WAITING_CHAINS)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let grp: Vec<u8> = row.get(0)?;
            if let Ok(grp) = grp.try_into() {
                touched.insert((GroupId(grp), row.get::<_, i64>(1)?));
            }
        }
    }
    let hlc = apply::uncaptured(tx, || advance_all(tx, r, &touched, &mut batch, &mut report))?;
    save_hlc(tx, hlc)?;
    let given = seal::give_rows(tx, r)?;
    report.sealed.commits += given.commits;
    report.sealed.changes += given.changes;
    if given.last_seq.is_some() {
        report.sealed.last_seq = given.last_seq;
        report.sealed.last_clock = given.last_clock;
    }
    count_waiting(tx, &mut report)?;
    Ok(report)
}

/// Verifies and stores a batch of commits without applying any: they wait, as if
/// earlier ones were missing, for the next import (or [`crate::Store::apply_waiting`]),
/// which applies all of them in one pass in key order. Any commit that fails to verify
/// fails the batch.
pub(crate) fn receive(
    tx: &Transaction,
    r: &mut Replica,
    commits: Vec<SignedCommit>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut batch: Batch = HashMap::new();
    keep(
        tx,
        r,
        commits,
        &mut batch,
        &mut BTreeSet::new(),
        &mut report,
    )?;
    count_waiting(tx, &mut report)?;
    Ok(report)
}

/// Checks each commit and stores the new ones as waiting, in `batch` too; notes
/// duplicates, forks and commits of authors no longer trusted.
fn keep(
    tx: &Transaction,
    r: &mut Replica,
    commits: Vec<SignedCommit>,
    batch: &mut Batch,
    touched: &mut BTreeSet<(GroupId, i64)>,
    report: &mut ImportReport,
) -> Result<()> {
    for signed in commits {
        let c = signed.check()?;
        let group = c.head.group;
        let id = r.authors.id(tx, &c.head.author)?;
        if authors::head(tx, &group, id)?.forked {
            report.refused.push(format!(
                "commit {} by {}: its author forked its chain and is no longer trusted",
                c.head.seq, c.head.author
            ));
            continue;
        }
        if let Some(GroupOp::Withdraw { from, upto, since }) = c
            .head
            .ops
            .iter()
            .find(|o| matches!(o, GroupOp::Withdraw { .. }))
        {
            report.withdrawn += withdraw(tx, &group, id, (*from, *upto), *since, batch)?;
        }
        let existing: Option<Vec<u8>> = tx
            .prepare_cached(
                "SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq = ?3",
            )?
            .query_row(
                rusqlite::params![&group.0[..], id, c.head.seq.0 as i64],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(ours)
                if SignedCommit::from_bytes(&ours)
                    .map(|s| s.body == signed.body)
                    .unwrap_or(false) =>
            {
                report.duplicates += 1;
            }
            Some(ours) => {
                record_fork(tx, &group, id, c.head.author, c.head.seq, &ours, &signed)?;
                report.forks.push(ForkReport {
                    author: c.head.author.to_string(),
                    seq: c.head.seq.0,
                });
            }
            None if batch.contains_key(&(group, id, c.head.seq.0)) => report.duplicates += 1,
            None => {
                store_commit(tx, id, &c, &signed, State::Waiting)?;
                touched.insert((group, id));
                batch.insert((group, id, c.head.seq.0), signed);
            }
        }
    }
    Ok(())
}

/// Drops the commits of `author` at seqs `from..=upto` stamped at or after `since`
/// that this file holds unapplied, here and in this import's batch: their author
/// withdrew them for commits stamped again. Applied ones stay, and the new commit
/// meets them as a fork. Returns how many were dropped.
fn withdraw(
    tx: &Transaction,
    group: &GroupId,
    author: i64,
    (from, upto): (Seq, Seq),
    since: shoal_core::Hlc,
    batch: &mut Batch,
) -> Result<usize> {
    let dropped = tx
        .prepare_cached(
            "DELETE FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq BETWEEN ?3 AND ?4
             AND hlc >= ?5 AND state != 0",
        )?
        .execute(rusqlite::params![
            &group.0[..],
            author,
            from.0 as i64,
            upto.0 as i64,
            since.0 as i64
        ])?;
    // Those of this batch were stored, so they are counted above.
    batch.retain(|(g, a, seq), signed| {
        g != group
            || *a != author
            || !(from.0..=upto.0).contains(seq)
            || signed.check().is_ok_and(|c| c.head.hlc < since)
    });
    Ok(dropped)
}

// Both name `state != 0` as the index of waiting commits does, or SQLite would read
// every commit held to find the few that wait.
const WAITING_CHAINS: &str =
    "SELECT DISTINCT grp, author FROM shoal_commits WHERE state != 0 AND state IN (1, 2)";
const WAITING_COUNTS: &str =
    "SELECT count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2)
     FROM shoal_commits WHERE state != 0 AND state IN (1, 2)";

/// Whether any commit waits (for an earlier one, or for its clock), any row change is
/// held or any row is set aside: what [`crate::Store::apply_waiting`] may apply.
pub(crate) fn anything_waiting(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM shoal_commits WHERE state != 0 AND state IN (1, 2))
                 OR EXISTS (SELECT 1 FROM shoal_held) OR EXISTS (SELECT 1 FROM shoal_aside)",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Counts the commits left waiting and held for their clock.
fn count_waiting(tx: &Transaction, report: &mut ImportReport) -> Result<()> {
    let (waiting, future): (i64, i64) = tx
        .prepare_cached(WAITING_COUNTS)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    report.waiting = waiting as usize;
    report.future = future as usize;
    Ok(())
}

/// Moves every touched chain forward as far as it goes, applies what that accepts,
/// takes back what a revocation refuses and retries held changes. Returns the newest
/// clock applied.
fn advance_all(
    tx: &Transaction,
    r: &mut Replica,
    touched: &BTreeSet<(GroupId, i64)>,
    batch: &mut Batch,
    report: &mut ImportReport,
) -> Result<shoal_core::Hlc> {
    let tables = Tables::load(tx)?;
    let mut hlc = load_hlc(tx)?;
    let mut groups = groups::Cache::default();
    let mut roles_changed = BTreeSet::new();
    let mut pending = Pending::default();
    // A membership change can let a chain that is waiting for its author to be made a
    // member go on: go round until a pass changes no group.
    loop {
        let mut changed = false;
        for (group, id) in touched {
            let mut chain = Chain {
                groups: &mut groups,
                batch,
                hlc: &mut hlc,
                report,
                pending: &mut pending,
                changed: false,
                roles_changed: &mut roles_changed,
            };
            chain.advance(tx, r, group, *id)?;
            changed |= chain.changed;
        }
        if !changed {
            break;
        }
    }
    pending.apply(tx, r, &tables, report)?;
    // Commits applied before this file learnt that their author had been revoked (or
    // made a reader) are taken back.
    for group in &roles_changed {
        if let Some(g) = groups.get(tx, &mut r.authors, group)? {
            let g = g.clone();
            retract::take_back(tx, r, &g, report)?;
        }
    }
    apply::retry_held(tx, r, &tables, report)?;
    crate::aside::settle(tx, r, &tables, report)?;
    tables.check_foreign_keys(tx, r, report)?;
    Ok(hlc)
}

/// Commits of this import not yet applied, by (group, author, seq).
type Batch = HashMap<(GroupId, i64, u64), SignedCommit>;

/// What moving chains forward needs and changes.
struct Chain<'a> {
    groups: &'a mut groups::Cache,
    batch: &'a mut Batch,
    hlc: &'a mut shoal_core::Hlc,
    report: &'a mut ImportReport,
    /// Row changes of accepted commits, not yet applied.
    pending: &'a mut Pending,
    /// Whether a group's log grew, which may let other chains go on.
    changed: bool,
    /// Groups in which a device was revoked or given another role.
    roles_changed: &'a mut BTreeSet<GroupId>,
}

/// Whether a commit may be applied, in the light of its group's membership.
enum Standing {
    Accepted,
    /// Its author is not (yet, as far as this file knows) a member: keep it.
    Unknown,
    /// Refused for good, and why.
    Refused(String),
}

impl Chain<'_> {
    /// Applies the commits of `id` in `group` that follow its head, for as long as the
    /// chain holds and the group accepts them.
    fn advance(
        &mut self,
        tx: &Transaction,
        r: &mut Replica,
        group: &GroupId,
        id: i64,
    ) -> Result<()> {
        loop {
            let head = authors::head(tx, group, id)?;
            if head.forked {
                return Ok(());
            }
            let next = head.seq.0 + 1;
            let signed = match self.batch.remove(&(*group, id, next)) {
                Some(c) => c,
                None => {
                    let stored: Option<Vec<u8>> = tx
                        .prepare_cached("SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq = ?3 AND state IN (1, 2)")?
                        .query_row(rusqlite::params![&group.0[..], id, next as i64], |r| r.get(0))
                        .optional()?;
                    match stored {
                        Some(bytes) => SignedCommit::from_bytes(&bytes)?,
                        None => return Ok(()),
                    }
                }
            };
            // Verified when it was stored: read in place, its changes copied as
            // they are.
            let body = BodyView::read(&signed.body)?;
            let commit = &body.head;
            let author = commit.author;
            // Either way the author signed two incompatible successors of head.seq: ours
            // and this one. Keep both as proof and trust the author no more.
            let broken = if commit.prev != head.hash {
                Some(None)
            } else if commit.hlc <= head.hlc {
                Some(Some(format!(
                    "commit {} by {author}: its clock is not later than its predecessor's; the author is no longer trusted",
                    commit.seq
                )))
            } else {
                None
            };
            if let Some(refusal) = broken {
                let ours: Vec<u8> = tx.query_row(
                    "SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq = ?3",
                    rusqlite::params![&group.0[..], id, head.seq.0 as i64],
                    |r| r.get(0),
                )?;
                record_fork(tx, group, id, author, head.seq, &ours, &signed)?;
                match refusal {
                    Some(reason) => self.report.refused.push(reason),
                    None => self.report.forks.push(ForkReport {
                        author: author.to_string(),
                        seq: head.seq.0,
                    }),
                }
                return Ok(());
            }
            if check_drift(commit.hlc, r.now_ms(), r.options.max_drift_ms).is_err() {
                set_state(tx, group, id, commit.seq, State::Future)?;
                return Ok(());
            }
            match self.standing(tx, r, &body)? {
                Standing::Accepted => {}
                Standing::Unknown => return Ok(()),
                Standing::Refused(reason) => {
                    set_state(tx, group, id, commit.seq, State::Refused)?;
                    self.report.refused.push(reason);
                    return Ok(());
                }
            }
            if !commit.ops.is_empty() {
                groups::record_ops(tx, id, commit)?;
                self.groups.forget(group);
                self.changed = true;
                if commit
                    .ops
                    .iter()
                    .any(|o| matches!(o, GroupOp::Revoke { .. } | GroupOp::SetRole { .. }))
                {
                    self.roles_changed.insert(*group);
                }
            }
            let (seq, hash, clock) = (commit.seq, signed.hash(), commit.hlc);
            let carried = if *group == GroupId::DEFAULT {
                None
            } else {
                self.groups.get(tx, &mut r.authors, group)?
            };
            self.pending.add(carried, &body, |_, _| true, self.report)?;
            set_state(tx, group, id, seq, State::Applied)?;
            authors::advance(tx, &head, seq, hash, clock)?;
            *self.hlc = (*self.hlc).max(clock);
            self.report.commits_applied += 1;
        }
    }

    /// Judges a commit by its group's membership at its author's point in the chain.
    fn standing(&mut self, tx: &Transaction, r: &mut Replica, view: &BodyView) -> Result<Standing> {
        let body = &view.head;
        if body.group == GroupId::DEFAULT {
            return Ok(Standing::Accepted);
        }
        // The creating commit stands on its own: `verify` checked the id.
        if body.ops.iter().any(|o| matches!(o, GroupOp::Create { .. })) {
            return Ok(Standing::Accepted);
        }
        let Some(group) = self.groups.get(tx, &mut r.authors, &body.group)? else {
            return Ok(Standing::Unknown);
        };
        Ok(match judge(group, body, view.writes()) {
            Some(Ok(())) => Standing::Accepted,
            Some(Err(reason)) => Standing::Refused(reason),
            None => Standing::Unknown,
        })
    }
}

/// A commit's standing in its group: accepted, refused (and why), or `None` while its
/// author has no role the group knows of.
/// `writes` says whether it changes any row: a reader's commit may only change the
/// group itself.
pub(crate) fn judge(
    group: &Group,
    body: &CommitHead,
    writes: bool,
) -> Option<std::result::Result<(), String>> {
    let who = || {
        format!(
            "commit {} by {} in group {}",
            body.seq, body.author, group.name
        )
    };
    if group
        .revoked_after(&body.author)
        .is_some_and(|after| body.seq > after)
    {
        return Some(Err(format!("{}: its author was revoked before it", who())));
    }
    match group.role_at(&body.author, body.seq) {
        Some(role) if role.may_write() || !writes => Some(Ok(())),
        Some(_) => Some(Err(format!("{}: its author may only read", who()))),
        None => None,
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
        state as i64,
        signed.to_bytes(),
    ])?;
    Ok(())
}

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
    .execute(rusqlite::params![
        &group.0[..],
        author,
        seq.0 as i64,
        state as i64
    ])?;
    Ok(())
}

fn record_fork(
    tx: &Transaction,
    group: &GroupId,
    id: i64,
    author: DeviceId,
    seq: Seq,
    first: &[u8],
    second: &SignedCommit,
) -> Result<()> {
    tx.execute(
        "INSERT INTO shoal_forks(grp, author, seq, first, second, found_hlc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![&group.0[..], &author.0[..], seq.0 as i64, first, second.to_bytes(), load_hlc(tx)?.0 as i64],
    )?;
    tx.execute("UPDATE shoal_authors SET forked = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// Hands every applied commit of `group` that `have` lacks to `each`, in per-author
/// order.
pub(crate) fn export_each(
    conn: &Connection,
    group: &GroupId,
    have: &VersionVector,
    mut each: impl FnMut(SignedCommit) -> Result<()>,
) -> Result<()> {
    let mut cursor = have.clone();
    loop {
        let chunk = export_chunk(conn, group, &mut cursor, 1 << 20)?;
        if chunk.is_empty() {
            return Ok(());
        }
        chunk.into_iter().try_for_each(&mut each)?;
    }
}

/// The applied commits of `group` that `have` lacks, in per-author order, up to about
/// `max_bytes`; `have` moves past what is returned, so the next call goes on from there.
pub(crate) fn export_chunk(
    conn: &Connection,
    group: &GroupId,
    have: &mut VersionVector,
    max_bytes: usize,
) -> Result<Vec<SignedCommit>> {
    let heads: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT c.author, a.device, c.head_seq FROM shoal_chains c JOIN shoal_authors a ON a.id = c.author
             WHERE c.grp = ?1 AND c.head_seq > 0 ORDER BY c.author",
        )?
        .query_map([&group.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq > ?3 AND seq <= ?4 AND state = 0 ORDER BY seq",
    )?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for (id, device, head) in heads {
        let Ok(device) = device.try_into().map(DeviceId) else {
            continue;
        };
        let from = have.get(&device).0 as i64;
        if from >= head {
            continue;
        }
        let mut rows = stmt.query(rusqlite::params![&group.0[..], id, from, head])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let signed = SignedCommit::from_bytes(
                row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
            )?;
            bytes += signed.body.len() + 64;
            out.push(signed);
            have.set(device, Seq(seq as u64));
            if bytes >= max_bytes {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};

    /// Every import asks which commits wait: that must not read every commit held.
    #[test]
    fn finding_waiting_commits_reads_only_the_waiting() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("a.db");
        rusqlite::Connection::open(&path).expect("open");
        let store = Store::init(&path, StoreOptions::new(dir.path().join("data"))).expect("init");
        for sql in [WAITING_CHAINS, WAITING_COUNTS] {
            let plan: Vec<String> = store
                .connection()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan")
                .query_map([], |r| r.get(3))
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

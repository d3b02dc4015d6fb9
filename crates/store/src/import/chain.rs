//! Importing commits: chain checks, gaps, forks and far-future clocks, then merging.
//!
//! A commit is stored as soon as its signature checks out, then applied only when it
//! is next in its author's chain and its clock is not too far ahead of ours. Until
//! then it waits, kept, and is applied as soon as it can be.

use std::collections::{BTreeSet, HashMap};

use rusqlite::Transaction;
use shoal_core::clock::check_drift;
use shoal_core::{BodyView, DeviceId, GroupId, GroupOp, Seq, SignedCommit};

use crate::capture::seal;
use crate::device::Device;
use crate::error::Result;
use crate::import::{retract, standing::judge};
use crate::merge::pending::Pending;
use crate::merge::tables::Tables;
use crate::merge::{apply, foreign, settle};
use crate::report::{ForkReport, ImportReport};
use crate::tables::commits::{self, State, set_state, store_commit};
use crate::tables::log;
use crate::tables::meta::{load_hlc, save_hlc};
use crate::tables::{authors, groups};

/// Verifies, stores and applies a batch of commits. Each is decoded when it is
/// checked and again when it is applied, so that a large batch costs its bytes in
/// memory, not its decoded form; any commit that fails to verify fails the batch.
pub(crate) fn import(
    tx: &Transaction,
    r: &mut Device,
    commits: Vec<SignedCommit>,
) -> Result<ImportReport> {
    let mut report = ImportReport {
        sealed: seal::seal(tx, r)?,
        ..ImportReport::default()
    };
    let mut batch: Arrivals = HashMap::new();
    let mut touched = BTreeSet::new();
    keep(tx, r, commits, &mut batch, &mut touched, &mut report)?;
    // Chains with commits left waiting by earlier imports may be able to go on now.
    touched.extend(commits::waiting_chains(tx)?);
    let hlc = log::uncaptured(tx, || advance_all(tx, r, &touched, &mut batch, &mut report))?;
    save_hlc(tx, hlc)?;
    let given = seal::give_rows(tx, r)?;
    report.sealed.commits += given.commits;
    report.sealed.changes += given.changes;
    if given.last_seq.is_some() {
        report.sealed.last_seq = given.last_seq;
        report.sealed.last_clock = given.last_clock;
    }
    (report.waiting, report.future) = commits::count_waiting(tx)?;
    Ok(report)
}

/// Verifies and stores a batch of commits without applying any: they wait, as if
/// earlier ones were missing, for the next import (or [`crate::Store::apply_waiting`]),
/// which applies all of them in one pass in key order. Any commit that fails to verify
/// fails the batch.
pub(crate) fn receive(
    tx: &Transaction,
    r: &mut Device,
    commits: Vec<SignedCommit>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut batch: Arrivals = HashMap::new();
    keep(
        tx,
        r,
        commits,
        &mut batch,
        &mut BTreeSet::new(),
        &mut report,
    )?;
    (report.waiting, report.future) = commits::count_waiting(tx)?;
    Ok(report)
}

/// Checks each commit and stores the new ones as waiting, in `batch` too; notes
/// duplicates, forks and commits of authors no longer trusted.
fn keep(
    tx: &Transaction,
    r: &mut Device,
    commits: Vec<SignedCommit>,
    batch: &mut Arrivals,
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
        match commits::signed_at(tx, &group, id, c.head.seq)? {
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
    batch: &mut Arrivals,
) -> Result<usize> {
    let dropped = commits::drop_unapplied(tx, group, author, (from, upto), since)?;
    // Those of this batch were stored, so they are counted above.
    batch.retain(|(g, a, seq), signed| {
        g != group
            || *a != author
            || !(from.0..=upto.0).contains(seq)
            || signed.check().is_ok_and(|c| c.head.hlc < since)
    });
    Ok(dropped)
}

/// Moves every touched chain forward as far as it goes, applies what that accepts,
/// takes back what a revocation refuses and retries held changes. Returns the newest
/// clock applied.
fn advance_all(
    tx: &Transaction,
    r: &mut Device,
    touched: &BTreeSet<(GroupId, i64)>,
    batch: &mut Arrivals,
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
    settle::settle(tx, r, &tables, report)?;
    foreign::check(tx, r, &tables, report)?;
    Ok(hlc)
}

/// Commits of this import not yet applied, by (group, author, seq).
type Arrivals = HashMap<(GroupId, i64, u64), SignedCommit>;

/// What moving chains forward needs and changes.
struct Chain<'a> {
    groups: &'a mut groups::Cache,
    batch: &'a mut Arrivals,
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
        r: &mut Device,
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
                None => match commits::waiting_at(tx, group, id, Seq(next))? {
                    Some(c) => c,
                    None => return Ok(()),
                },
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
                let ours = commits::signed_at(tx, group, id, head.seq)?
                    .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
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
    fn standing(&mut self, tx: &Transaction, r: &mut Device, view: &BodyView) -> Result<Standing> {
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

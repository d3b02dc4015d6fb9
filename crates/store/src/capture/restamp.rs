//! Stamping again the commits this device sealed while its clock ran ahead.
//!
//! A chain's clocks must rise and members apply it in order, so one commit stamped a
//! year ahead holds back every later commit of its author for a year. Members hold
//! such commits unapplied. This device can withdraw them: each is sealed again at the
//! same seq with the same changes and a clock just past everything this file holds,
//! the first one carrying [`GroupOp::Withdraw`]. A member that holds the old ones
//! unapplied drops them for the new ones; one that applied them (its own clock ran
//! ahead as far) holds a fork, reported as any other.
//!
//! This file's own merge state is stamped again alike, so that its rows compare with
//! later writes as they will on every member.

use std::collections::BTreeMap;

use rusqlite::Transaction;
use serde::Serialize;
use shoal_core::{CommitBody, CommitHead, GroupId, GroupOp, Hlc, Seq, SignedCommit, VersionRef};

use crate::device::Device;
use crate::error::{Result, StoreError};
use crate::tables::commits::State;
use crate::tables::meta::save_hlc;
use crate::tables::{authors, rows};

/// What [`crate::Store::restamp`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestampReport {
    /// Commits sealed again, over every group.
    pub commits: usize,
    /// Groups whose chain changed.
    pub groups: usize,
    /// How far ahead of this machine's clock the newest of them was stamped.
    pub ahead_ms: u64,
}

/// Stamps again every commit of this device stamped further ahead of the wall clock
/// than members accept. Does nothing when there is none.
pub(crate) fn restamp(tx: &Transaction, r: &mut Device) -> Result<RestampReport> {
    let now = r.now_ms();
    // A commit is held by members when its clock is past `now + max_drift_ms`.
    let limit = Hlc::new(now.saturating_add(r.options.max_drift_ms) + 1, 0);
    let me = r.authors.id(tx, &r.device)?;
    let ahead: Vec<(Vec<u8>, i64, i64, Vec<u8>)> = tx
        .prepare(
            "SELECT grp, seq, hlc, signed FROM shoal_commits
             WHERE author = ?1 AND state = ?3 AND hlc >= ?2 ORDER BY grp, seq",
        )?
        .query_map(
            rusqlite::params![me, limit.0 as i64, State::Applied],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut report = RestampReport::default();
    let Some(newest) = ahead.iter().map(|c| c.2).max() else {
        return Ok(report);
    };
    if let Some(original) = &r.copy_of {
        return Err(StoreError::Copied {
            path: r.path.clone(),
            original: original.clone(),
            device: r.device,
        });
    }
    report.ahead_ms = Hlc(newest as u64).physical_ms().saturating_sub(now);
    // New clocks start past every commit this file applied that is not withdrawn, so
    // every write this device had seen stays older than its own.
    let base: i64 = tx.query_row(
        "SELECT coalesce(max(hlc), 0) FROM shoal_commits
         WHERE state = ?3 AND NOT (author = ?1 AND hlc >= ?2)",
        rusqlite::params![me, limit.0 as i64, State::Applied],
        |row| row.get(0),
    )?;
    // One seal gives every group's commit the same clock: one old clock, one new.
    let mut clocks: BTreeMap<u64, u64> = ahead.iter().map(|c| (c.2 as u64, 0)).collect();
    let mut clock = Hlc(base as u64);
    for new in clocks.values_mut() {
        clock = clock.tick(now);
        *new = clock.0;
    }
    let map = |hlc: u64| clocks.get(&hlc).copied();
    let mut by_group: BTreeMap<Vec<u8>, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for (grp, seq, _, signed) in ahead {
        by_group.entry(grp).or_default().push((seq, signed));
    }
    for (grp, commits) in by_group {
        let group = GroupId(grp.as_slice().try_into().map_err(|_| StoreError::Damaged {
            what: "a stored group id".into(),
            detail: format!("{} bytes", grp.len()),
        })?);
        let head = authors::head(tx, &group, me)?;
        let (Some(first), Some(last)) = (commits.first(), commits.last()) else {
            continue;
        };
        let (from, upto) = (Seq(first.0 as u64), Seq(last.0 as u64));
        if upto != head.seq {
            return Err(StoreError::Damaged {
                what: format!("this device's chain in group {group}"),
                detail: format!(
                    "commits {from} to {upto} are stamped ahead, but it ends at {}",
                    head.seq
                ),
            });
        }
        let mut prev = None;
        for (i, (seq, signed)) in commits.iter().enumerate() {
            let mut body = SignedCommit::from_bytes(signed)?.verify()?.body;
            if i == 0 {
                prev = Some(body.head.prev);
                body.head.ops.push(GroupOp::Withdraw {
                    from,
                    upto,
                    since: body.head.hlc,
                });
            }
            let hlc = map(body.head.hlc.0).unwrap_or(body.head.hlc.0);
            let restamped = CommitBody {
                head: CommitHead {
                    prev: prev.unwrap_or(body.head.prev),
                    hlc: Hlc(hlc),
                    ..body.head
                },
                tables: restamp_refs(body.tables, &map),
            };
            let commit = restamped.seal(&r.key)?;
            // Checked as a member will check it, before anything is written.
            commit.signed.clone().verify()?;
            tx.prepare_cached(
                "UPDATE shoal_commits SET hash = ?4, hlc = ?5, signed = ?6
                 WHERE grp = ?1 AND author = ?2 AND seq = ?3",
            )?
            .execute(rusqlite::params![
                &grp,
                me,
                seq,
                &commit.hash.0[..],
                hlc as i64,
                commit.signed.to_bytes()
            ])?;
            tx.prepare_cached(
                "UPDATE shoal_group_ops SET hlc = ?4 WHERE grp = ?1 AND author = ?2 AND seq = ?3",
            )?
            .execute(rusqlite::params![&grp, me, seq, hlc as i64])?;
            if *seq == last.0 {
                authors::advance(tx, &head, upto, commit.hash, Hlc(hlc))?;
            }
            prev = Some(commit.hash);
            report.commits += 1;
        }
        report.groups += 1;
    }
    rows::restamp(tx, me, &map)?;
    restamp_conflicts(tx, r, &map)?;
    save_hlc(tx, clock)?;
    Ok(report)
}

/// `tables` with every version of this device's own that `map` stamps again renamed.
fn restamp_refs(
    mut tables: Vec<shoal_core::TableChanges>,
    map: &impl Fn(u64) -> Option<u64>,
) -> Vec<shoal_core::TableChanges> {
    // Index 0 names the commit's author: this device.
    let again = |v: &mut Option<VersionRef>| {
        if let Some(v) = v
            && v.author == 0
            && let Some(new) = map(v.hlc.0)
        {
            v.hlc = Hlc(new);
        }
    };
    for t in &mut tables {
        for row in &mut t.rows {
            again(&mut row.seen);
            for cell in &mut row.cells {
                again(&mut cell.overwrote);
            }
        }
    }
    tables
}

/// Renames this device's versions in its conflict records and lost inserts.
fn restamp_conflicts(
    tx: &Transaction,
    r: &Device,
    map: &impl Fn(u64) -> Option<u64>,
) -> Result<()> {
    for (hlc_col, device_col) in [
        ("local_hlc", "local_device"),
        ("remote_hlc", "remote_device"),
    ] {
        let found: Vec<(String, i64)> = tx
            .prepare(&format!(
                "SELECT id, {hlc_col} FROM shoal_conflicts WHERE {device_col} = ?1"
            ))?
            .query_map([&r.device.0[..]], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut update = tx.prepare(&format!(
            "UPDATE shoal_conflicts SET {hlc_col} = ?2 WHERE id = ?1"
        ))?;
        for (id, hlc) in found {
            if let Some(new) = map(hlc as u64) {
                update.execute(rusqlite::params![id, new as i64])?;
            }
        }
    }
    let lost: Vec<i64> = tx
        .prepare("SELECT hlc FROM shoal_lost_inserts WHERE device = ?1")?
        .query_map([&r.device.0[..]], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update =
        tx.prepare("UPDATE shoal_lost_inserts SET hlc = ?2 WHERE device = ?3 AND hlc = ?1")?;
    for hlc in lost {
        if let Some(new) = map(hlc as u64) {
            update.execute(rusqlite::params![hlc, new as i64, &r.device.0[..]])?;
        }
    }
    Ok(())
}

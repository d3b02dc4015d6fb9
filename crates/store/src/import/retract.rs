//! Taking back commits that their group refuses only after they were applied.
//!
//! A revocation (or a change to reader) names the last commit of the device that still
//! counts. A device that had not yet heard of it may already have applied later ones,
//! straight from the revoked device or relayed by a third. When the revocation
//! arrives, those commits are marked refused, and every row they touched is rebuilt
//! from the commits that still stand, so that the file ends as if it had never seen
//! them, like every other member's.
//!
//! A device keeps its own writes: it is the one cut off. The rebuilt rows' open write
//! conflicts are closed first and found again by the replay, and the refused commits'
//! held changes and conflict records are dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rusqlite::Transaction;
use shoal_core::{BodyView, CommitBody, Group, GroupId, SignedCommit, Value};

use crate::device::Device;
use crate::error::Result;
use crate::import::standing::judge;
use crate::merge::pending::Pending;
use crate::merge::tables::Tables;
use crate::merge::{apply, aside, foreign};
use crate::report::ImportReport;
use crate::sql::key_blob;
use crate::tables::commits::{State, set_state};
use crate::tables::{held, rows};

/// Takes back the applied commits of `group` that the group now refuses.
pub(crate) fn take_back(
    tx: &Transaction,
    r: &mut Device,
    group: &Group,
    report: &mut ImportReport,
) -> Result<()> {
    let refused = refused_but_applied(tx, r, group)?;
    if refused.is_empty() {
        return Ok(());
    }
    // Rows by table (lower-cased) and key blob, with the key itself.
    let mut touched: BTreeMap<(String, Vec<u8>), Vec<Value>> = BTreeMap::new();
    let mut versions = HashSet::new();
    for (id, c, reason) in &refused {
        set_state(tx, &group.id, *id, c.head.seq, State::Refused)?;
        report
            .refused
            .push(format!("{reason}; it had been applied and is taken back"));
        versions.insert((c.head.author, c.head.hlc));
        for t in &c.tables {
            for row in &t.rows {
                touched
                    .entry((t.table.to_lowercase(), key_blob(&row.key)))
                    .or_insert_with(|| row.key.clone());
            }
        }
        // Its conflict records are moot.
        tx.prepare_cached(
            "UPDATE shoal_conflicts SET status = 'closed', resolution = 'its write was taken back'
             WHERE status IN ('pending', 'auto')
               AND ((remote_device = ?1 AND remote_hlc = ?2) OR (local_device = ?1 AND local_hlc = ?2))",
        )?
        .execute(rusqlite::params![&c.head.author.0[..], c.head.hlc.0 as i64])?;
    }
    forget_held(tx, &versions)?;
    // Clear the rows, then replay what still stands on them. A table untracked for
    // now is rebuilt too, and its shadow with it, so that tracking it again takes
    // neither what was taken back nor what was rebuilt for the app's own writes.
    let tables = &Tables::load_with_untracked(tx)?;
    for ((table, blob), key) in &touched {
        // The write conflicts of a row rebuilt, and the inserts that lost its life,
        // are found again by the replay, as a device that never held what was taken
        // back finds them.
        tx.prepare_cached(
            "UPDATE shoal_conflicts SET status = 'closed', resolution = 'rebuilt without the commits taken back'
             WHERE tbl = ?1 COLLATE NOCASE AND key = ?2 AND status IN ('pending', 'auto') AND kind != 'constraint'",
        )?
        .execute(rusqlite::params![table, blob])?;
        tx.prepare_cached(
            "DELETE FROM shoal_lost_inserts WHERE tbl = ?1 COLLATE NOCASE AND key = ?2",
        )?
        .execute(rusqlite::params![table, blob])?;
        if let Some(t) = tables.get(table) {
            t.sql.delete(tx, key)?;
            tables.note_deleted(t, key);
            rows::forget(tx, t.id, blob)?;
            // A row set aside is rebuilt like the rest, and set aside again if the
            // commits that still stand clash too.
            aside::release(tx, t.id, blob, "rebuilt without the commits taken back")?;
        } else if tables.is_refused(table)
            && let Some(t) = crate::tables::table::load_by_name(tx, table)?
            // A table whose schema changed here in a way Shoal does not follow (a
            // column renamed) still loses the rows taken back; what stands of them is
            // replayed into held changes, which apply once the table is sorted out.
            // Under a name it no longer has, its rows cannot be reached.
            && t.sql.delete(tx, key).is_ok()
        {
            rows::forget(tx, t.id, blob)?;
        }
    }
    replay(tx, r, tables, &touched, report)?;
    for ((table, _), key) in &touched {
        if let Some(t) = tables.get(table).filter(|t| !t.tracked) {
            crate::capture::sweep::refresh_shadow(tx, t, key)?;
        }
    }
    foreign::check(tx, r, tables, report)
}

/// Applied commits of `group` that it refuses now, with their authors' local ids.
fn refused_but_applied(
    tx: &Transaction,
    r: &mut Device,
    group: &Group,
) -> Result<Vec<(i64, CommitBody, String)>> {
    let mut out = Vec::new();
    for member in group.members() {
        // A device keeps its own writes: it is the one cut off, and nothing it wrote is
        // lost to it.
        if member.device == r.device {
            continue;
        }
        let writes = member.role.is_some_and(|role| role.may_write());
        if writes && member.revoked_after.is_none() {
            continue;
        }
        let after = member.revoked_after.map_or(0, |s| s.0);
        let id = r.authors.id(tx, &member.device)?;
        let stored: Vec<Vec<u8>> = tx
            .prepare_cached(
                "SELECT signed FROM shoal_commits WHERE grp = ?1 AND author = ?2 AND seq > ?3 AND state = ?4 ORDER BY seq",
            )?
            .query_map(
                rusqlite::params![&group.id.0[..], id, after as i64, State::Applied],
                |row| row.get(0),
            )?
            .collect::<Result<_, _>>()?;
        for bytes in stored {
            let c = SignedCommit::from_bytes(&bytes)?.decode()?;
            if let Some(Err(reason)) = judge(group, &c.head, !c.tables.is_empty()) {
                out.push((id, c, reason));
            }
        }
    }
    Ok(out)
}

/// Drops held changes that came from taken-back commits.
fn forget_held(
    tx: &Transaction,
    versions: &HashSet<(shoal_core::DeviceId, shoal_core::Hlc)>,
) -> Result<()> {
    for h in held::all(tx)? {
        let inc = apply::held_change(&h)?;
        if versions.contains(&(inc.version.author, inc.version.hlc)) {
            held::remove(tx, h.id)?;
        }
    }
    Ok(())
}

/// Applies again, in clock order, the changes that applied commits make to `touched`
/// rows. The merge rules do not depend on order, so the rows end as if the taken-back
/// commits had never come.
fn replay(
    tx: &Transaction,
    r: &mut Device,
    tables: &Tables,
    touched: &BTreeMap<(String, Vec<u8>), Vec<Value>>,
    report: &mut ImportReport,
) -> Result<()> {
    let tables_touched: BTreeSet<&str> = touched.keys().map(|(t, _)| t.as_str()).collect();
    let stored: Vec<Vec<u8>> = tx
        .prepare_cached("SELECT signed FROM shoal_commits WHERE state = ?1 ORDER BY hlc, author")?
        .query_map([State::Applied], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut groups = crate::tables::groups::Cache::default();
    let mut scratch = ImportReport::default();
    let mut pending = Pending::default();
    for bytes in stored {
        let signed = SignedCommit::from_bytes(&bytes)?;
        let body = BodyView::read(&signed.body)?;
        let mut touches = false;
        for t in body.tables() {
            let t = t?;
            touches |= tables_touched.contains(t.table.to_lowercase().as_str());
        }
        if !touches {
            continue;
        }
        let carried = if body.head.group == GroupId::DEFAULT {
            None
        } else {
            groups.get(tx, &mut r.authors, &body.head.group)?.cloned()
        };
        // `touched` is keyed by (table, key); one key is looked up at a time.
        let mut probe = (String::new(), Vec::new());
        let wanted = |table: &str, key: &[u8]| {
            probe.0.clear();
            probe.0.push_str(table);
            probe.1.clear();
            probe.1.extend_from_slice(key);
            touched.contains_key(&probe)
        };
        pending.add(carried.as_ref(), &body, wanted, &mut scratch)?;
    }
    pending.apply(tx, r, tables, &mut scratch)?;
    report.conflicts += scratch.conflicts;
    report.held += scratch.held;
    Ok(())
}

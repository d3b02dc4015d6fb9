//! The groups a file knows, kept as the operations of their logs and evaluated into
//! membership and shares by [`shoal_core::Group::evaluate`].

use std::collections::HashMap;

use rusqlite::Connection;
use shoal_core::group::OpRecord;
use shoal_core::{CommitHead, Group, GroupId, GroupOp, Hlc, Seq};

use crate::error::Result;
use crate::tables::authors::Authors;

/// Records the group operations of a commit being applied, valid or not: evaluation
/// decides which count. A valid `Create` makes the group known.
pub(crate) fn record_ops(conn: &Connection, author: i64, body: &CommitHead) -> Result<()> {
    for (idx, op) in body.ops.iter().enumerate() {
        // A step in the author's own chain, not in the group's log.
        if matches!(op, GroupOp::Withdraw { .. }) {
            continue;
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO shoal_group_ops(grp, author, seq, idx, hlc, op) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(rusqlite::params![
            &body.group.0[..],
            author,
            body.seq.0 as i64,
            idx as i64,
            body.hlc.0 as i64,
            postcard::to_stdvec(op).unwrap_or_default(),
        ])?;
        // `verify` has checked that a `Create` is the creator's own, under its id.
        if let GroupOp::Create { name, .. } = op {
            conn.prepare_cached("INSERT OR IGNORE INTO shoal_groups(id, name) VALUES (?1, ?2)")?
                .execute(rusqlite::params![&body.group.0[..], name])?;
        }
    }
    Ok(())
}

/// The state of `group` from every operation this file holds; `None` for a group it
/// has not seen created.
pub(crate) fn load(
    conn: &Connection,
    authors: &mut Authors,
    group: &GroupId,
) -> Result<Option<Group>> {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT author, seq, hlc, op FROM shoal_group_ops WHERE grp = ?1 ORDER BY author, seq, idx",
        )?
        .query_map([&group.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut ops = Vec::with_capacity(rows.len());
    for (author, seq, hlc, op) in rows {
        let Ok(op) = postcard::from_bytes::<GroupOp>(&op) else {
            continue;
        };
        ops.push(OpRecord {
            author: authors.device(conn, author)?,
            seq: Seq(seq as u64),
            hlc: Hlc(hlc as u64),
            op,
        });
    }
    Ok(Group::evaluate(*group, ops))
}

/// Every group this file knows, by id.
pub(crate) fn known(conn: &Connection) -> Result<Vec<GroupId>> {
    let ids: Vec<Vec<u8>> = conn
        .prepare_cached("SELECT id FROM shoal_groups ORDER BY name, id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids
        .into_iter()
        .filter_map(|b| b.try_into().ok().map(GroupId))
        .collect())
}

/// Group states loaded once per transaction and dropped when a group's log grows.
#[derive(Default)]
pub(crate) struct Cache {
    groups: HashMap<GroupId, Option<Group>>,
}

impl Cache {
    pub(crate) fn get(
        &mut self,
        conn: &Connection,
        authors: &mut Authors,
        group: &GroupId,
    ) -> Result<Option<&Group>> {
        if !self.groups.contains_key(group) {
            let g = load(conn, authors, group)?;
            self.groups.insert(*group, g);
        }
        Ok(self.groups.get(group).and_then(Option::as_ref))
    }

    pub(crate) fn forget(&mut self, group: &GroupId) {
        self.groups.remove(group);
    }
}

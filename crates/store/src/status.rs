//! What a replica holds, for people and scripts: `shoal status` and `shoal log`.

use rusqlite::Connection;
use serde::Serialize;
use shoal_core::{DeviceId, GroupId, Hlc};

use crate::capture::track;
use crate::device::Device;
use crate::error::Result;
use crate::report::OversizedRow;
use crate::tables::commits::{self, State};
use crate::tables::follow::SchemaProblem;
use crate::tables::meta::load_hlc;
use crate::tables::table::Policy;
use crate::tables::{authors, groups};

/// A summary of one replica.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// This replica's device.
    pub device: String,
    /// Tables tracked (or once tracked).
    pub tables: Vec<TableStatus>,
    /// Writes captured but not yet sealed into commits.
    pub unsealed_changes: u64,
    /// Commits held, by every author.
    pub commits: u64,
    /// Commits this device sealed.
    pub own_commits: u64,
    /// Author → highest contiguous seq, in the local group (tables shared with no
    /// group, merged between files).
    pub version_vector: Vec<(String, u64)>,
    /// The groups this database knows.
    pub groups: Vec<GroupSummary>,
    /// Conflicts waiting for a person.
    pub conflicts_pending: u64,
    /// Conflicts auto-resolved by policy and kept for audit.
    pub conflicts_auto: u64,
    /// Rows the last seal found too large for any commit: not synced until smaller.
    pub oversized: Vec<OversizedRow>,
    /// Remote changes held until they can be applied, by reason.
    pub held: Vec<HeldSummary>,
    /// Rows a constraint keeps out of their table, on every device alike.
    pub set_aside: Vec<SetAsideRow>,
    /// Commits waiting for an earlier commit of their author.
    pub waiting_commits: u64,
    /// Commits held because their clock is too far ahead.
    pub future_commits: u64,
    /// Commits refused for good: their author was revoked before them, or may only read.
    pub refused_commits: u64,
    /// Authors caught forking their chain, whose commits are refused.
    pub forked_authors: Vec<String>,
    /// The replica's clock.
    pub clock: String,
    /// How far this device's newest commit is stamped ahead of its wall clock, when
    /// that is past what members accept: its clock ran ahead, and members hold its
    /// commits until their time comes.
    pub clock_ahead_ms: Option<u64>,
    /// The file this device lives in, when this file is a copy of it that was not
    /// adopted: nothing is signed here until it is.
    pub copy_of: Option<String>,
}

/// One group, as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSummary {
    /// The group's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// This device's role in it, if any.
    pub role: Option<String>,
    /// Devices with a role now.
    pub members: usize,
    /// Tables it carries.
    pub tables: Vec<String>,
    /// Author → highest contiguous seq held in the group.
    pub version_vector: Vec<(String, u64)>,
}

/// One tracked table.
#[derive(Clone, Debug, Serialize)]
pub struct TableStatus {
    /// The table.
    pub name: String,
    /// Whether writes are captured now.
    pub tracked: bool,
    /// Conflict policy.
    pub policy: Policy,
    /// Primary-key columns.
    pub key_columns: Vec<String>,
    /// Other synced columns.
    pub columns: Vec<String>,
    /// How its schema changed, if it did: an added column is followed at the next
    /// seal; any other change keeps it from being sealed or applied to.
    pub schema_problem: Option<SchemaProblem>,
}

/// Held changes grouped by table and reason.
#[derive(Clone, Debug, Serialize)]
pub struct HeldSummary {
    /// The table the changes are for.
    pub table: String,
    /// Why they wait.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A row set aside: alive by the merge rules, kept out of its table because a
/// constraint refuses it (see the conflict).
#[derive(Clone, Debug, Serialize)]
pub struct SetAsideRow {
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals.
    pub key: String,
    /// The conflict that says why and how to settle it.
    pub conflict: String,
}

impl std::fmt::Display for SetAsideRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row {} of {} is kept out of its table by a constraint, on every device: see `shoal conflicts show {}`",
            self.key, self.table, self.conflict
        )
    }
}

/// The rows set aside, by the names their tables have now.
fn set_aside(conn: &Connection) -> Result<Vec<SetAsideRow>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT t.name, a.key, a.conflict FROM shoal_aside a JOIN shoal_tables t ON t.id = a.tbl ORDER BY t.name, a.key",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        out.push(SetAsideRow {
            table: row.get(0)?,
            key: crate::sql::key_text(&crate::sql::key_from_blob(&row.get::<_, Vec<u8>>(1)?)?),
            conflict: row.get(2)?,
        });
    }
    Ok(out)
}

/// One commit in the log.
#[derive(Clone, Debug, Serialize)]
pub struct CommitSummary {
    /// Its group: `local`, or the group's name.
    pub group: String,
    /// Its author.
    pub author: String,
    /// Its place in the author's chain.
    pub seq: u64,
    /// The author's clock when sealing.
    pub clock: String,
    /// Row changes carried.
    pub changes: u64,
    /// applied, waiting (for an earlier commit or for its author to be made a member),
    /// future (clock too far ahead) or refused (revoked author, or a reader's).
    pub state: &'static str,
    /// Its hash.
    pub hash: String,
}

/// The rows the last seal found too large, by the names they have now.
fn oversized(conn: &Connection) -> Result<Vec<OversizedRow>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT t.name, o.key, o.size FROM shoal_oversized o JOIN shoal_tables t ON t.id = o.tbl ORDER BY t.name, o.key",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        out.push(OversizedRow {
            table: row.get(0)?,
            key: crate::sql::key_text(&crate::sql::key_from_blob(&row.get::<_, Vec<u8>>(1)?)?),
            size: row.get::<_, i64>(2)? as u64,
        });
    }
    Ok(out)
}

/// How far this device's newest commit is stamped ahead of its wall clock, when that
/// is past what members accept. A clock that ran ahead once stamps this device's
/// commits ahead still: members hold them (and what follows in the chain) until their
/// time comes, or until `shoal restamp` stamps them again.
pub(crate) fn clock_ahead_ms(conn: &Connection, r: &Device) -> Result<Option<u64>> {
    let newest_own: i64 = conn.query_row(
        "SELECT coalesce(max(c.head_hlc), 0) FROM shoal_chains c JOIN shoal_authors a ON a.id = c.author WHERE a.device = ?1",
        [&r.device.0[..]],
        |row| row.get(0),
    )?;
    let ahead_ms = Hlc(newest_own as u64)
        .physical_ms()
        .saturating_sub(r.now_ms());
    Ok((ahead_ms > r.options.max_drift_ms).then_some(ahead_ms))
}

pub(crate) fn status(conn: &Connection, r: &Device) -> Result<Status> {
    let count = |sql: &str| -> Result<u64> {
        Ok(conn.query_row(sql, [], |row| row.get::<_, i64>(0))? as u64)
    };
    let problems = track::schema_problems(conn, &r.path.display().to_string())?;
    let tables = crate::tables::table::load_all(conn)?
        .into_iter()
        .map(|t| TableStatus {
            schema_problem: problems.iter().find(|p| p.table == t.name).cloned(),
            name: t.name,
            tracked: t.tracked,
            policy: t.policy,
            key_columns: t.key_columns,
            columns: t.columns,
        })
        .collect();
    let mut held = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT tbl, reason, count(*) FROM shoal_held GROUP BY tbl, reason ORDER BY tbl, reason")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            held.push(HeldSummary {
                table: row.get(0)?,
                reason: row.get(1)?,
                count: row.get::<_, i64>(2)? as u64,
            });
        }
    }
    let forked_authors = {
        let mut stmt = conn.prepare("SELECT device FROM shoal_authors WHERE forked = 1")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.filter_map(|r| r.ok())
            .filter_map(|b| b.try_into().ok().map(|b| DeviceId(b).to_string()))
            .collect()
    };
    let own_commits: i64 = conn.query_row(
        "SELECT count(*) FROM shoal_commits c JOIN shoal_authors a ON a.id = c.author WHERE a.device = ?1",
        [&r.device.0[..]],
        |row| row.get(0),
    )?;
    let held_commits = commits::counts(conn)?;
    Ok(Status {
        clock_ahead_ms: clock_ahead_ms(conn, r)?,
        device: r.device.to_string(),
        tables,
        unsealed_changes: count("SELECT count(*) FROM shoal_log")?,
        commits: held_commits.applied,
        own_commits: own_commits as u64,
        version_vector: vv(conn, &GroupId::DEFAULT)?,
        groups: {
            let mut out = Vec::new();
            let mut authors = crate::tables::authors::Authors::default();
            for id in groups::known(conn)? {
                let Some(g) = groups::load(conn, &mut authors, &id)? else {
                    continue;
                };
                out.push(GroupSummary {
                    id: id.to_string(),
                    name: g.name.clone(),
                    role: g.role(&r.device).map(|role| role.to_string()),
                    members: g.members().iter().filter(|m| m.role.is_some()).count(),
                    tables: g.shares().map(|s| s.table.clone()).collect(),
                    version_vector: vv(conn, &id)?,
                });
            }
            out
        },
        conflicts_pending: count("SELECT count(*) FROM shoal_conflicts WHERE status = 'pending'")?,
        conflicts_auto: count("SELECT count(*) FROM shoal_conflicts WHERE status = 'auto'")?,
        held,
        waiting_commits: held_commits.waiting,
        future_commits: held_commits.future,
        refused_commits: held_commits.refused,
        forked_authors,
        clock: load_hlc(conn)?.to_string(),
        copy_of: r.copy_of.as_ref().map(|p| p.display().to_string()),
        oversized: oversized(conn)?,
        set_aside: set_aside(conn)?,
    })
}

fn vv(conn: &Connection, group: &GroupId) -> Result<Vec<(String, u64)>> {
    Ok(authors::version_vector(conn, group)?
        .0
        .into_iter()
        .map(|(d, s)| (d.to_string(), s.0))
        .collect())
}

pub(crate) fn log(conn: &Connection, offset: usize, limit: usize) -> Result<Vec<CommitSummary>> {
    let mut stmt = conn.prepare(
        "SELECT a.device, c.seq, c.hlc, c.changes, c.state, c.hash, coalesce(g.name, 'local') FROM shoal_commits c
         JOIN shoal_authors a ON a.id = c.author LEFT JOIN shoal_groups g ON g.id = c.grp
         ORDER BY c.hlc DESC, a.device, c.seq DESC LIMIT ?1 OFFSET ?2",
    )?;
    let rows = stmt.query_map([limit as i64, offset as i64], |row| {
        let device: Vec<u8> = row.get(0)?;
        let hash: Vec<u8> = row.get(5)?;
        Ok(CommitSummary {
            group: row.get(6)?,
            author: device
                .try_into()
                .map(|d| DeviceId(d).to_string())
                .unwrap_or_default(),
            seq: row.get::<_, i64>(1)? as u64,
            clock: Hlc(row.get::<_, i64>(2)? as u64).to_string(),
            changes: row.get::<_, i64>(3)? as u64,
            state: State::from_code(row.get(4)?)
                .unwrap_or(State::Refused)
                .name(),
            hash: hex::encode(hash),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

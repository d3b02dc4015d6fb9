//! Recording what lost a merge, under one id on every device, and closing records a
//! later write made moot: the inbox's records as the merge keeps them (see
//! [`inbox`](crate::merge::inbox) for what they are).
//!
//! Every device holds the same records. A write conflict is named by its table, key and
//! the write that lost, not by the pair of writes a device happened to see meet (its id
//! hashes what both sides see alike). It is open for the columns where that write is not
//! the cell's version and no write known here had seen it: its author overwrote a
//! version at least as new. Each cell's merge state keeps the newest version any write
//! of its life had seen; a deleted row keeps them for late writes of its last life, and
//! the deletes of one life pool what their authors had seen. So the open set depends on
//! the writes known, not on their order: with three concurrent writes to one column, a
//! device that gets them oldest first and one that gets them newest first hold the same
//! two losers, under the same ids.
//!
//! A record takes in new columns when its write is met again (opening again if it was
//! closed), and loses a column when a write that saw it arrives. Its kind is the
//! write's: an insert collision if the write is an insert known to have lost the row's
//! life (kept in `shoal_lost_inserts`), an update-delete once a delete its author had
//! not seen ends the life. A column no longer tracked is kept aside in the record
//! (`parked`) until it is tracked again. An insert settles no column: one that starts a
//! later life closes that life's records, and one that keeps its life (a row given to a
//! group anew) is nobody's new write. A resolution writes every disputed column, so it
//! closes the record everywhere.

use rusqlite::Transaction;
use shoal_core::{Value, Version};

use crate::device::Device;
use crate::error::Result;
use crate::merge::inbox::{ConflictKind, Side, column_list, version};
use crate::sql::key_blob;
use crate::tables::meta::load_hlc;
use crate::tables::table::{Policy, TrackedTable};

/// A conflict found while merging.
pub(crate) struct NewConflict<'a> {
    pub(crate) kind: ConflictKind,
    pub(crate) key: &'a [Value],
    pub(crate) cl: u64,
    pub(crate) columns: Vec<String>,
    pub(crate) winner: Side,
    pub(crate) local_values: Option<Vec<(String, Value)>>,
    pub(crate) remote_values: Option<Vec<(String, Value)>>,
    pub(crate) local: Option<Version>,
    pub(crate) remote: Version,
    pub(crate) detail: Option<String>,
}

impl<'a> NewConflict<'a> {
    /// A write that lost to another write, or to a delete, by the merge rules:
    /// `winner` names whose write stands, `local` and `remote` the two versions.
    pub(crate) fn write(
        kind: ConflictKind,
        key: &'a [Value],
        cl: u64,
        columns: Vec<String>,
        winner: Side,
        local: Option<Version>,
        remote: Version,
    ) -> NewConflict<'a> {
        NewConflict {
            kind,
            key,
            cl,
            columns,
            winner,
            local_values: None,
            remote_values: None,
            local,
            remote,
            detail: None,
        }
    }

    /// A row a constraint of the schema refuses, and what the constraint said.
    pub(crate) fn constraint(
        key: &'a [Value],
        cl: u64,
        columns: Vec<String>,
        winner: Side,
        local: Option<Version>,
        remote: Version,
        detail: String,
    ) -> NewConflict<'a> {
        NewConflict {
            detail: Some(detail),
            ..NewConflict::write(
                ConflictKind::Constraint,
                key,
                cl,
                columns,
                winner,
                local,
                remote,
            )
        }
    }

    /// The same, with the values each side holds of the columns in dispute.
    pub(crate) fn values(
        self,
        local: Option<Vec<(String, Value)>>,
        remote: Option<Vec<(String, Value)>>,
    ) -> NewConflict<'a> {
        NewConflict {
            local_values: local,
            remote_values: remote,
            ..self
        }
    }
}

impl NewConflict<'_> {
    /// The write that lost: the side the merge rules did not choose.
    fn loser(&self) -> Option<Version> {
        match self.winner {
            Side::Local => Some(self.remote),
            Side::Remote => self.local,
        }
    }
}

/// A conflict's id: a hash of what every device sees alike, so that they agree on it.
///
/// A write conflict is named by its table, key and the write that lost: every
/// device meets that write once, as it arrives or as it is overwritten, and decides
/// alike whether it stands in a conflict (see [`record`]), whichever write it lost to
/// there. A constraint conflict is named by both versions, in order.
pub(crate) fn id_of(table: &str, c: &NewConflict<'_>) -> String {
    let sides = match c.kind {
        ConflictKind::Constraint => {
            let mut sides = [Some(c.remote), c.local];
            sides.sort();
            sides
        }
        _ => [c.loser(), None],
    };
    let mut hasher = blake3::Hasher::new();
    // A write's conflict may change kind as more is known (an insert found to have
    // lost its row's life, a life ended by a delete), not its id.
    hasher.update(match c.kind {
        ConflictKind::Constraint => b"constraint".as_slice(),
        _ => b"write".as_slice(),
    });
    hasher.update(table.to_lowercase().as_bytes());
    hasher.update(&key_blob(c.key));
    for v in sides.iter().flatten() {
        hasher.update(&v.hlc.0.to_be_bytes());
        hasher.update(&v.author.0);
    }
    hex::encode(&hasher.finalize().as_bytes()[..8])
}

/// Records a conflict; returns whether it is new.
///
/// A write conflict is open for the columns in which its losing write is not the
/// cell's version and no write known here had seen it (an author that had seen it
/// overwrote a version at least as new). That set depends only on the writes known, so
/// devices that know the same writes hold the same open records, whatever order the
/// writes came in: a record met again takes in the new columns (and opens again if it
/// was closed), and [`close_superseded`] takes out a column once a write that saw the
/// loser arrives.
pub(crate) fn record(
    tx: &Transaction,
    r: &mut Device,
    table: &TrackedTable,
    c: NewConflict<'_>,
) -> Result<bool> {
    let mut c = c;
    // In one order everywhere: devices may list a table's columns in other orders.
    c.columns.sort_by_key(|c| c.to_lowercase());
    let key = key_blob(c.key);
    // What a write's record is depends on the write, not on the path that found it.
    if c.kind == ConflictKind::ConcurrentWrite
        && let Some(loser) = c.loser()
        && lost_its_life(tx, &table.name, &key, loser)?
    {
        c.kind = ConflictKind::InsertCollision;
    }
    let id = id_of(&table.name, &c);
    let open_status = match (c.kind, table.policy) {
        (ConflictKind::Constraint, _) | (_, Policy::Review) => "pending",
        (_, Policy::Lww) => "auto",
    };
    let values = |v: &Option<Vec<(String, Value)>>| {
        v.as_ref()
            .map(|v| postcard::to_stdvec(v).unwrap_or_default())
    };
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    // A write's columns not tracked here now are kept aside (see `keep_columns`); a
    // record with none other waits, closed, for them.
    let (columns, parked) = if c.kind == ConflictKind::Constraint {
        (c.columns.clone(), Vec::new())
    } else {
        split_tracked(&table.columns, c.columns.clone())
    };
    let (status, resolution) = if columns.is_empty() && !parked.is_empty() {
        ("closed", Some(UNTRACKED))
    } else {
        (open_status, None)
    };
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO shoal_conflicts(id, kind, tbl, key, cl, columns, winner, local_values, remote_values, local_hlc, local_device, remote_hlc, remote_device, refused, detail, status, found_hlc, parked, resolution)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?
        .execute(rusqlite::params![
            id,
            c.kind.as_str(),
            table.name,
            key,
            c.cl as i64,
            json(&columns),
            c.winner.as_str(),
            values(&c.local_values),
            values(&c.remote_values),
            c.local.map(|v| v.hlc.0 as i64),
            c.local.map(|v| v.author.0.to_vec()),
            c.remote.hlc.0 as i64,
            &c.remote.author.0[..],
            // Only files of older versions keep a refused change with its record.
            None::<Vec<u8>>,
            c.detail,
            status,
            load_hlc(tx)?.0 as i64,
            (!parked.is_empty()).then(|| json(&parked)),
            resolution,
        ])?;
    if inserted > 0 {
        if resolution.is_some() {
            return Ok(false);
        }
        r.open_conflicts = Some(true);
    } else if c.kind != ConflictKind::Constraint {
        let (old, old_parked, open, kind): (String, Option<String>, bool, String) = tx
            .prepare_cached(
                "SELECT columns, parked, status IN ('pending', 'auto'), kind FROM shoal_conflicts WHERE id = ?1",
            )?
            .query_row([&id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
        // Met again while open: as much as is known now. Closed: found anew.
        let kind = if open {
            ConflictKind::parse(&kind).max(c.kind)
        } else {
            c.kind
        };
        let mut all = Vec::new();
        if open {
            all.extend(column_list(&old)?);
            if let Some(p) = &old_parked {
                all.extend(column_list(p)?);
            }
        }
        for c in &c.columns {
            if !all.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                all.push(c.clone());
            }
        }
        let (columns, parked) = split_tracked(&table.columns, all);
        let waits = columns.is_empty();
        tx.prepare_cached(
            "UPDATE shoal_conflicts SET columns = ?2, parked = ?6, kind = ?4,
                 cl = CASE WHEN status IN ('pending', 'auto') THEN max(cl, ?5) ELSE ?5 END,
                 status = CASE WHEN ?7 THEN 'closed' WHEN status IN ('pending', 'auto') THEN status ELSE ?3 END,
                 resolution = CASE WHEN ?7 THEN ?8 WHEN status IN ('pending', 'auto') THEN resolution END
             WHERE id = ?1",
        )?
        .execute(rusqlite::params![
            id,
            json(&columns),
            open_status,
            kind.as_str(),
            c.cl as i64,
            (!parked.is_empty()).then(|| json(&parked)),
            waits,
            UNTRACKED,
        ])?;
        if !open {
            // Found anew, perhaps against another write: both sides as they are now.
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET winner = ?2, local_values = ?3, remote_values = ?4,
                     local_hlc = ?5, local_device = ?6, remote_hlc = ?7, remote_device = ?8, found_hlc = ?9
                 WHERE id = ?1",
            )?
            .execute(rusqlite::params![
                id,
                c.winner.as_str(),
                values(&c.local_values),
                values(&c.remote_values),
                c.local.map(|v| v.hlc.0 as i64),
                c.local.map(|v| v.author.0.to_vec()),
                c.remote.hlc.0 as i64,
                &c.remote.author.0[..],
                load_hlc(tx)?.0 as i64,
            ])?;
            if waits {
                return Ok(false);
            }
            r.open_conflicts = Some(true);
            return Ok(true);
        }
    } else if c.kind == ConflictKind::Constraint {
        // What a constraint says now: the row that holds a UNIQUE value may have
        // changed since, and every device names the one that holds it at the end.
        tx.prepare_cached(
            "UPDATE shoal_conflicts SET detail = ?2 WHERE id = ?1 AND status IN ('pending', 'auto') AND detail IS NOT ?2",
        )?
        .execute(rusqlite::params![id, c.detail])?;
    }
    Ok(inserted > 0)
}

/// `columns` in one order, split into those of `tracked` and the others.
fn split_tracked(tracked: &[String], mut columns: Vec<String>) -> (Vec<String>, Vec<String>) {
    columns.sort_by_key(|c| c.to_lowercase());
    columns
        .into_iter()
        .partition(|c| tracked.iter().any(|x| x.eq_ignore_ascii_case(c)))
}

/// Whether any conflict is open, asked of the file once and then kept up to date.
pub(crate) fn any_open(tx: &Transaction, r: &mut Device) -> Result<bool> {
    if let Some(any) = r.open_conflicts {
        return Ok(any);
    }
    let any = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM shoal_conflicts WHERE status IN ('pending', 'auto'))",
        [],
        |r| r.get(0),
    )?;
    r.open_conflicts = Some(any);
    Ok(any)
}

/// Closes open records on a row that a write has made moot: one that starts a later
/// life of the row, or that overwrote a disputed column having seen the winner.
/// Constraint conflicts wait for a person whatever is written.
pub(crate) fn close_superseded(
    tx: &Transaction,
    r: &mut Device,
    table: &str,
    key: &[u8],
    cl: u64,
    written: &[(&str, Option<Version>)],
    by: Version,
) -> Result<()> {
    if !any_open(tx, r)? {
        return Ok(());
    }
    struct Open {
        id: String,
        cl: u64,
        columns: Vec<String>,
        loser: Option<Version>,
    }
    let open: Vec<Open> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, cl, columns, winner, local_hlc, local_device, remote_hlc, remote_device FROM shoal_conflicts
             WHERE tbl = ?1 AND key = ?2 AND status IN ('pending', 'auto') AND kind != 'constraint'",
        )?;
        stmt.query_map(rusqlite::params![table, key], |r| {
            let columns: String = r.get(2)?;
            let winner: String = r.get(3)?;
            let (hlc, device) = if winner == "local" { (6, 7) } else { (4, 5) };
            Ok(Open {
                id: r.get(0)?,
                cl: r.get::<_, i64>(1)? as u64,
                columns: crate::sql::in_row(2, column_list(&columns))?,
                loser: version(r.get(hlc)?, r.get(device)?),
            })
        })?
        .collect::<Result<_, _>>()?
    };
    for c in open {
        // A column stays disputed until a write arrives whose author had seen the
        // losing write there.
        let seen = |col: &String| {
            written.iter().any(|(w, overwrote)| {
                w.eq_ignore_ascii_case(col) && c.loser.is_some() && *overwrote >= c.loser
            })
        };
        let left: Vec<&String> = c.columns.iter().filter(|col| !seen(col)).collect();
        if cl > c.cl || left.is_empty() {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET status = 'closed', resolution = ?2 WHERE id = ?1",
            )?
            .execute(rusqlite::params![
                c.id,
                format!(
                    "superseded by a write from {} at {}",
                    by.author.short(),
                    by.hlc
                )
            ])?;
        } else if left.len() < c.columns.len() {
            tx.prepare_cached("UPDATE shoal_conflicts SET columns = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![
                    c.id,
                    serde_json::to_string(&left).unwrap_or_default()
                ])?;
        }
    }
    Ok(())
}

/// A delete that `seen` describes ended the row's life `cl - 1`: the write conflicts
/// of that life whose losing write the deleter had not seen lost to the delete too,
/// and stay open as such; the others are moot.
pub(crate) fn life_ended(
    tx: &Transaction,
    r: &mut Device,
    table: &str,
    key: &[u8],
    cl: u64,
    seen: Option<Version>,
) -> Result<()> {
    if !any_open(tx, r)? {
        return Ok(());
    }
    for (id, loser) in open_losers(tx, table, key, cl)? {
        if loser.is_some_and(|l| shoal_core::merge::concurrent(l, seen)) {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET kind = 'update_delete', cl = ?2 WHERE id = ?1",
            )?
            .execute(rusqlite::params![id, cl as i64])?;
        }
    }
    Ok(())
}

/// Another delete of the row's life `cl - 1` arrived whose author had seen `seen`: the
/// writes it had seen lost to no delete, and their records are moot.
pub(crate) fn deleter_saw(
    tx: &Transaction,
    r: &mut Device,
    table: &str,
    key: &[u8],
    cl: u64,
    seen: Option<Version>,
) -> Result<()> {
    if !any_open(tx, r)? {
        return Ok(());
    }
    for (id, loser) in open_losers(tx, table, key, cl + 1)? {
        if loser.is_some() && loser <= seen {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET status = 'closed', resolution = 'another delete of the row had seen it' WHERE id = ?1",
            )?
            .execute([id])?;
        }
    }
    Ok(())
}

/// The insert `loser` lost its row's life to another: kept, so that a record of any
/// of its writes found later is an insert collision too, and its open records say so.
pub(crate) fn lost_life(
    tx: &Transaction,
    r: &mut Device,
    table: &str,
    key: &[u8],
    cl: u64,
    loser: Version,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO shoal_lost_inserts(tbl, key, hlc, device) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(rusqlite::params![
        table,
        key,
        loser.hlc.0 as i64,
        &loser.author.0[..]
    ])?;
    if !any_open(tx, r)? {
        return Ok(());
    }
    for (id, l) in open_losers(tx, table, key, cl + 1)? {
        if l == Some(loser) {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET kind = 'insert_collision' WHERE id = ?1 AND kind = 'concurrent_write'",
            )?
            .execute([id])?;
        }
    }
    Ok(())
}

/// Whether `write` is an insert known to have lost its row's life to another.
fn lost_its_life(tx: &Transaction, table: &str, key: &[u8], write: Version) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM shoal_lost_inserts WHERE tbl = ?1 AND key = ?2 AND hlc = ?3 AND device = ?4)",
        )?
        .query_row(
            rusqlite::params![table, key, write.hlc.0 as i64, &write.author.0[..]],
            |r| r.get(0),
        )?)
}

/// The open write conflicts of a row's lives before `cl`, with their losing writes.
fn open_losers(
    tx: &Transaction,
    table: &str,
    key: &[u8],
    cl: u64,
) -> Result<Vec<(String, Option<Version>)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, winner, local_hlc, local_device, remote_hlc, remote_device FROM shoal_conflicts
         WHERE tbl = ?1 AND key = ?2 AND cl < ?3 AND status IN ('pending', 'auto') AND kind != 'constraint'",
    )?;
    let found = stmt
        .query_map(rusqlite::params![table, key, cl as i64], |r| {
            let winner: String = r.get(1)?;
            let (hlc, device) = if winner == "local" { (4, 5) } else { (2, 3) };
            Ok((r.get(0)?, version(r.get(hlc)?, r.get(device)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(found)
}

/// Why a record whose every column left the table's tracked columns is closed.
const UNTRACKED: &str = "its columns are no longer tracked";

/// A table tracked again with `columns`. A column it no longer has (renamed, then
/// tracked under its new name, which starts anew) leaves its write conflicts, as on a
/// device that never merged writes to it, and a record left with none closes. The
/// column is kept aside in the record with the merge state it had: tracked under
/// that name again, it is in dispute again as it was (the writes to it made
/// meanwhile are sealed or held, and meet it as they would have), and a record closed
/// for want of columns opens again.
///
/// Opening a record here does not reach the replica's note of whether any is open:
/// the caller forgets it.
pub(crate) fn keep_columns(
    tx: &Transaction,
    table: &str,
    policy: Policy,
    columns: &[String],
) -> Result<()> {
    // With whether the row is still in the life the record is of: a later life, or a
    // delete, made a record closed meanwhile moot as it did the open ones.
    let found: Vec<(String, String, Option<String>, bool, bool)> = tx
        .prepare_cached(
            "SELECT c.id, c.columns, c.parked, c.status IN ('pending', 'auto'),
                    EXISTS (SELECT 1 FROM shoal_rows r JOIN shoal_tables t ON t.id = r.tbl
                            WHERE t.name = c.tbl AND r.key = c.key AND r.cl = c.cl)
             FROM shoal_conflicts c
             WHERE c.tbl = ?1 AND c.kind != 'constraint'
               AND (c.status IN ('pending', 'auto') OR (c.status = 'closed' AND c.resolution = ?2))",
        )?
        .query_map(rusqlite::params![table, UNTRACKED], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, list, parked, open, same_life) in found {
        if !open && !same_life {
            continue;
        }
        let mut all = column_list(&list)?;
        if let Some(parked) = &parked {
            all.extend(column_list(parked)?);
        }
        let (disputed, aside) = split_tracked(columns, all);
        let status = match (open, disputed.is_empty()) {
            (true, true) => Some(("closed", Some(UNTRACKED))),
            (false, false) => Some((
                match policy {
                    Policy::Review => "pending",
                    Policy::Lww => "auto",
                },
                None,
            )),
            _ => None,
        };
        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        tx.prepare_cached("UPDATE shoal_conflicts SET columns = ?2, parked = ?3 WHERE id = ?1")?
            .execute(rusqlite::params![
                id,
                json(&disputed),
                (!aside.is_empty()).then(|| json(&aside))
            ])?;
        if let Some((status, resolution)) = status {
            tx.prepare_cached(
                "UPDATE shoal_conflicts SET status = ?2, resolution = ?3 WHERE id = ?1",
            )?
            .execute(rusqlite::params![id, status, resolution])?;
        }
    }
    Ok(())
}

//! Shoal's storage engine: everything that touches the SQLite file.
//!
//! A [`Store`] is one replica, one device: an app's SQLite database with Shoal's
//! `shoal_*` tables beside the app's own. Capture triggers record the app's writes
//! (from any client) in the same transaction; [`Store::seal`] turns them into signed
//! commits; [`Store::import`] verifies other devices' commits and merges them into the
//! app's tables, keeping what loses in the conflict inbox. Nothing here knows about
//! the network.

//!
//! The modules form layers that only point down, from the [`Store`] façade here:
//! `import` (chains, groups, retraction, export) → `capture` (triggers, tracking,
//! sealing) → `merge` (the merge rules, conflicts, rows set aside) → `tables` (one
//! module per `shoal_*` table, and the statements against the app's) → the base
//! (`error`, `sql`, `device`, `report`, `keystore`, `checkpoint`). `migrate` and
//! `status` sit beside the façade. `scripts/module-layers.py` checks that no module
//! uses one above it.

mod capture;
mod checkpoint;
mod device;
mod error;
mod import;
mod keystore;
mod merge;
mod migrate;
mod report;
mod sql;
mod status;
mod tables;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use shoal_core::invite::InviteProblem;
use shoal_core::{DeviceId, DeviceKey, Group, GroupId, GroupOp, Role, SignedCommit, VersionVector};

pub use capture::restamp::RestampReport;
pub use capture::track::TrackReport;
pub use device::{Randomness, StoreOptions, WallClock, system_now_ms};
pub use error::{FileProblem, Result, StoreError};
pub use merge::inbox::{
    Conflict, ConflictKind, ConflictStatus, InboxFilter, InboxPage, InboxQuery, OpenConflict,
    Resolution, Side,
};
pub use report::{ForkReport, ImportReport, KeptHere, OversizedRow, SealReport};
pub use status::{CommitSummary, GroupSummary, HeldSummary, SetAsideRow, Status, TableStatus};
pub use tables::follow::{SchemaChange, SchemaProblem};
pub use tables::invites::Invite;
pub use tables::peers::KnownPeer;
pub use tables::table::{Policy, TrackedTable};

use capture::{restamp, seal, sweep, track};
use device::Device;
use merge::resolve;
use rusqlite::config::DbConfig;
use tables::authors::Authors;
use tables::{groups, invites, meta, schema};

/// One replica: an app database with Shoal's tables, and the device that owns it.
pub struct Store {
    conn: Connection,
    me: Device,
    /// Dropped after the connection, so that the file's last connection closes last.
    checkpoints: checkpoint::Checkpoints,
}

impl Store {
    /// Makes `path` a Shoal database (creating the file if needed) with a new device.
    pub fn init(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref();
        Self::init_file(path, options).map_err(|e| e.in_file(path))
    }

    fn init_file(path: &Path, options: StoreOptions) -> Result<Store> {
        let mut conn = connect(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if migrate::up_to_date(&tx)? {
            let device = meta::read_device(&tx)?;
            return Err(StoreError::AlreadyInitialised {
                path: path.to_owned(),
                device,
            });
        }
        schema::create(&tx)?;
        let key = DeviceKey::from_seed(options.random()?);
        keystore::save(&options.data_dir, &key)?;
        meta::write_device(&tx, &key.id())?;
        tx.commit()?;
        Self::open_file(path, options)
    }

    /// Opens a Shoal database whose device key is in the data directory.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref();
        Self::open_file(path, options).map_err(|e| e.in_file(path))
    }

    fn open_file(path: &Path, options: StoreOptions) -> Result<Store> {
        if !path.exists() {
            return Err(StoreError::NotInitialised {
                path: path.to_owned(),
            });
        }
        let conn = connect(path)?;
        if !migrate::up_to_date(&conn)? {
            return Err(StoreError::NotInitialised {
                path: path.to_owned(),
            });
        }
        let device = meta::read_device(&conn)?;
        let key =
            keystore::load(&options.data_dir, &device)?.ok_or_else(|| StoreError::KeyMissing {
                path: path.to_owned(),
                device,
                data_dir: options.data_dir.clone(),
            })?;
        let copy_of = keystore::copy_of(&options.data_dir, &device, path)?;
        Ok(Store {
            conn,
            me: Device {
                device,
                key,
                copy_of,
                path: path.to_owned(),
                authors: Authors::default(),
                columns: tables::rows::Columns::default(),
                options,
                open_conflicts: None,
            },
            checkpoints: checkpoint::Checkpoints::default(),
        })
    }

    /// Makes a copied database a device of its own, with a new key. The commits it
    /// holds stay; new writes are signed by the new device.
    pub fn adopt(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = path.as_ref();
        Self::adopt_file(path, options).map_err(|e| e.in_file(path))
    }

    fn adopt_file(path: &Path, options: StoreOptions) -> Result<Store> {
        let mut conn = connect(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !migrate::up_to_date(&tx)? {
            return Err(StoreError::NotInitialised {
                path: path.to_owned(),
            });
        }
        let key = DeviceKey::from_seed(options.random()?);
        keystore::save(&options.data_dir, &key)?;
        meta::write_device(&tx, &key.id())?;
        tx.commit()?;
        Self::open_file(path, options)
    }

    /// This replica's device.
    pub fn device(&self) -> DeviceId {
        self.me.device
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.me.path
    }

    /// The underlying connection, for the app's own reads and writes (they are
    /// captured like any other client's).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Starts syncing `table`, or refreshes its columns after the app changed its schema.
    /// Rows already in the table are captured, and held changes that the new columns
    /// make applicable are applied.
    pub fn track(&mut self, table: &str, policy: Option<Policy>) -> Result<TrackReport> {
        self.write(|tx, r| {
            let mut report = track::track(tx, r, table, policy)?;
            // Held changes that the new columns make applicable are applied now.
            report.held_applied = import::import(tx, r, Vec::new())?.held_applied;
            Ok(report)
        })
    }

    /// Stops syncing `table`: its triggers go, its sync state stays for a later re-track.
    pub fn untrack(&mut self, table: &str) -> Result<()> {
        // What was captured is sealed first, while the values it reads are the ones
        // written then: later writes are the untracked table's own.
        self.write(|tx, r| {
            seal::seal(tx, r)?;
            track::untrack(tx, table)
        })
    }

    /// Sets how conflicts in `table` are handled.
    pub fn set_policy(&mut self, table: &str, policy: Policy) -> Result<()> {
        self.write(|tx, _| track::set_policy(tx, table, policy))
    }

    /// The tables Shoal tracks, or once tracked.
    pub fn tables(&self) -> Result<Vec<TrackedTable>> {
        tables::table::load_all(&self.conn)
    }

    /// Tracked tables whose schema changed since Shoal last looked: added columns,
    /// which the next seal follows, and changes it does not follow, which keep the
    /// table from being sealed or applied to until they are sorted out.
    pub fn schema_problems(&self) -> Result<Vec<SchemaProblem>> {
        track::schema_problems(&self.conn, &self.me.path.display().to_string())
    }

    /// Seals every captured change into signed commits.
    pub fn seal(&mut self) -> Result<SealReport> {
        self.write(seal::seal)
    }

    /// Seals again, with a clock that is not ahead, this device's commits that its
    /// clock stamped further ahead than members accept, so that members apply them
    /// (and everything after them) now rather than when that time comes. Does
    /// nothing when none is ahead.
    pub fn restamp(&mut self) -> Result<RestampReport> {
        self.write(restamp::restamp)
    }

    /// What this database holds of `group`: author → highest contiguous seq.
    pub fn version_vector(&self, group: &GroupId) -> Result<VersionVector> {
        tables::authors::version_vector(&self.conn, group)
    }

    /// The first eight bytes of each author's head hash in `group`, in the order of
    /// [`Store::version_vector`]: a peer with the same seq for an author and another
    /// tag holds a second history of that author (a fork).
    pub fn head_tags(&self, group: &GroupId) -> Result<Vec<[u8; 8]>> {
        tables::authors::head_tags(&self.conn, group)
    }

    /// Calls `each` with every applied commit of `group` that `have` lacks, in
    /// per-author order.
    pub fn export_each(
        &self,
        group: &GroupId,
        have: &VersionVector,
        each: impl FnMut(SignedCommit) -> Result<()>,
    ) -> Result<()> {
        import::export_each(&self.conn, group, have, each)
    }

    /// Every applied commit of `group` that `have` lacks, in per-author order.
    pub fn export(&self, group: &GroupId, have: &VersionVector) -> Result<Vec<SignedCommit>> {
        let mut out = Vec::new();
        self.export_each(group, have, |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// The ids of every log this database holds: the local group's, then each known
    /// group's.
    pub fn group_ids(&self) -> Result<Vec<GroupId>> {
        let mut ids = vec![GroupId::DEFAULT];
        ids.extend(groups::known(&self.conn)?);
        Ok(ids)
    }

    /// The groups this database knows (it holds their creating commit).
    pub fn groups(&self) -> Result<Vec<Group>> {
        let mut authors = Authors::default();
        let mut out = Vec::new();
        for id in groups::known(&self.conn)? {
            if let Some(g) = groups::load(&self.conn, &mut authors, &id)? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// One group, by id, or by name or id prefix if that is unambiguous.
    pub fn group(&self, which: &str) -> Result<Group> {
        let all = self.groups()?;
        let matches: Vec<&Group> = all
            .iter()
            .filter(|g| {
                g.name == which || g.id.to_string().starts_with(&which.to_ascii_lowercase())
            })
            .collect();
        match matches.as_slice() {
            [g] => Ok((*g).clone()),
            [] => Err(StoreError::NoSuchGroup {
                which: which.to_owned(),
            }),
            _ => Err(StoreError::AmbiguousGroup {
                which: which.to_owned(),
                count: matches.len(),
            }),
        }
    }

    /// Creates a group with this device as its admin, carrying `tables` (each with
    /// the columns it leaves out). Rows already in those tables are shared with it.
    pub fn create_group(&mut self, name: &str, tables: &[(String, Vec<String>)]) -> Result<Group> {
        let nonce = self.me.options.random()?;
        let id = GroupId::derive(&self.me.device, &nonce);
        let mut ops = vec![GroupOp::Create {
            name: name.to_owned(),
            nonce,
        }];
        for (table, excluded) in tables {
            ops.push(self.share_op(table, excluded)?);
        }
        self.write(|tx, r| {
            seal::seal_ops(tx, r, id, ops)?;
            for (table, _) in tables {
                sweep::log_snapshot(tx, table, &id)?;
            }
            seal::seal(tx, r)
        })?;
        self.group(&id.to_string())
    }

    /// Starts carrying `table` in `group`, without the `excluded` columns; the rows it
    /// holds now are shared too.
    pub fn share(&mut self, group: &str, table: &str, excluded: &[String]) -> Result<Group> {
        let g = self.admin_of(group)?;
        let op = self.share_op(table, excluded)?;
        self.write(|tx, r| {
            seal::seal_ops(tx, r, g.id, vec![op])?;
            sweep::log_snapshot(tx, table, &g.id)?;
            seal::seal(tx, r)
        })?;
        self.group(&g.id.to_string())
    }

    /// Stops carrying `table` in `group`.
    pub fn unshare(&mut self, group: &str, table: &str) -> Result<Group> {
        let g = self.admin_of(group)?;
        let op = GroupOp::Unshare {
            table: table.to_owned(),
        };
        self.group_ops(&g, vec![op])
    }

    /// Gives `device` `role` in `group`, for its commits from now on.
    pub fn set_role(&mut self, group: &str, device: &DeviceId, role: Role) -> Result<Group> {
        let g = self.admin_of(group)?;
        let admins = g
            .members()
            .iter()
            .filter(|m| m.role.is_some_and(Role::may_admin) && m.device != *device)
            .count();
        if !role.may_admin() && admins == 0 {
            return Err(StoreError::LastAdmin {
                group: g.name.clone(),
            });
        }
        let from = self.version_vector(&g.id)?.get(device);
        self.group_ops(
            &g,
            vec![GroupOp::SetRole {
                device: *device,
                role,
                from,
            }],
        )
    }

    /// Revokes `device` from `group`: its commits after the last one this database
    /// holds are refused by every member, for good. This device does not revoke itself: the group would lose the admin asking
    /// (and perhaps its last one); another admin may.
    pub fn revoke(&mut self, group: &str, device: &DeviceId) -> Result<Group> {
        let g = self.admin_of(group)?;
        if *device == self.me.device {
            return Err(StoreError::RevokingItself {
                group: g.name.clone(),
            });
        }
        if g.role(device).is_none() && g.revoked_after(device).is_none() {
            return Err(StoreError::NotAMember {
                device: *device,
                group: g.name.clone(),
            });
        }
        let after = self.version_vector(&g.id)?.get(device);
        self.group_ops(
            &g,
            vec![GroupOp::Revoke {
                device: *device,
                after,
            }],
        )
    }

    /// One group by its id; `None` if this database has not seen it created.
    pub fn group_by_id(&self, id: &GroupId) -> Result<Option<Group>> {
        groups::load(&self.conn, &mut Authors::default(), id)
    }

    /// Makes an invite to `group` for a device to join as `role`, valid for `ttl_ms`
    /// and `uses` joins. Only an admin may invite.
    pub fn create_invite(
        &mut self,
        group: &str,
        role: Role,
        ttl_ms: u64,
        uses: u32,
    ) -> Result<Invite> {
        if ttl_ms == 0 || uses == 0 {
            return Err(StoreError::EmptyInvite {
                what: if uses == 0 {
                    "let no device in (uses 0)"
                } else {
                    "expire at once (valid for 0 s)"
                },
            });
        }
        let g = self.admin_of(group)?;
        let id = self.me.options.random()?;
        let secret = self.me.options.random()?;
        let now = self.me.now_ms();
        let invite = Invite {
            id,
            secret,
            group: g.id,
            group_name: g.name.clone(),
            role,
            expires_ms: now.saturating_add(ttl_ms),
            uses,
        };
        self.write(|tx, _| invites::save(tx, &invite, now))?;
        Ok(invite)
    }

    /// Admits `joiner` to `group` if `proof` shows it holds the secret of invite `id`,
    /// which must be unexpired and not used up: spends one use and signs the joiner's
    /// role into the group's log, in one transaction.
    pub fn redeem_invite(
        &mut self,
        group: &GroupId,
        id: &[u8; 16],
        proof: &[u8; 32],
        joiner: &DeviceId,
    ) -> Result<Role> {
        let g = self
            .group_by_id(group)?
            .ok_or_else(|| StoreError::Invite(InviteProblem::Unknown))?;
        if !g.role(&self.me.device).is_some_and(Role::may_admin) {
            return Err(StoreError::Invite(InviteProblem::InviterNotAdmin));
        }
        if g.revoked_after(joiner).is_some() {
            return Err(StoreError::Revoked {
                device: *joiner,
                group: g.name.clone(),
            });
        }
        let from = self.version_vector(&g.id)?.get(joiner);
        let now = self.me.now_ms();
        let inviter = self.me.device;
        let current = g.role(joiner);
        self.write(|tx, r| {
            let role = invites::spend(
                tx,
                &invites::Claim {
                    group,
                    id,
                    proof,
                    joiner,
                    inviter: &inviter,
                    current,
                },
                now,
            )?
            .map_err(StoreError::Invite)?;
            // A device that already has this role or a higher one keeps it.
            if current.is_none_or(|c| c < role) {
                let op = GroupOp::SetRole {
                    device: *joiner,
                    role,
                    from,
                };
                seal::seal_ops(tx, r, g.id, vec![op])?;
            }
            Ok(role)
        })
    }

    /// How many more devices may join with invite `id`; `None` if there is no such invite.
    pub fn invite_uses_left(&self, id: &[u8; 16]) -> Result<Option<u32>> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(uses_left, 0) FROM shoal_invites WHERE id = ?1",
                [&id[..]],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A hash of the columns this device syncs of each table `group` carries: two
    /// devices with the same fingerprint can apply all of each other's changes.
    pub fn schema_fingerprint(&self, group: &GroupId) -> Result<[u8; 32]> {
        let mut h = blake3::Hasher::new();
        h.update(b"shoal schema v1\0");
        if let Some(g) = self.group_by_id(group)? {
            let mut shares: Vec<_> = g.shares().collect();
            shares.sort_by_key(|s| s.table.to_ascii_lowercase());
            for share in shares {
                h.update(share.table.to_ascii_lowercase().as_bytes());
                h.update(b"\0");
                match tables::table::load_by_name(&self.conn, &share.table)? {
                    Some(t) if t.tracked => {
                        for c in t.key_columns.iter().chain(&t.columns) {
                            if share.carries(c) {
                                h.update(c.to_ascii_lowercase().as_bytes());
                                h.update(b"\x01");
                            }
                        }
                    }
                    _ => {
                        h.update(b"\x02untracked");
                    }
                }
                h.update(b"\0");
            }
        }
        Ok(*h.finalize().as_bytes())
    }

    /// Applied commits of `group` past `have`, in per-author order, up to about
    /// `max_bytes`; `have` moves past what is returned, so calling again continues.
    pub fn export_chunk(
        &self,
        group: &GroupId,
        have: &mut VersionVector,
        max_bytes: usize,
    ) -> Result<Vec<SignedCommit>> {
        import::export_chunk(&self.conn, group, have, max_bytes)
    }

    /// Records that a join of `group` started, with its ticket as the joiner read it,
    /// so that a crash in the middle of it can be resumed.
    pub fn begin_join(&mut self, group: &GroupId, ticket: &[u8]) -> Result<()> {
        tables::joins::begin(&self.conn, group, ticket)
    }

    /// The ticket of a join of `group` that started and has not ended.
    pub fn pending_join(&self, group: &GroupId) -> Result<Option<Vec<u8>>> {
        tables::joins::ticket(&self.conn, group)
    }

    /// Every join that started and has not ended, with its ticket.
    pub fn pending_joins(&self) -> Result<Vec<(GroupId, Vec<u8>)>> {
        tables::joins::all(&self.conn)
    }

    /// Records that the join of `group` ended, in or refused.
    pub fn end_join(&mut self, group: &GroupId) -> Result<()> {
        tables::joins::end(&self.conn, group)
    }

    /// Remembers where `device` was reached, in the transport's own notation. The
    /// time it was reached is kept to the minute, so that a device syncing often
    /// does not write for every round.
    pub fn remember_peer(&mut self, device: &DeviceId, addr: &str) -> Result<()> {
        tables::peers::remember(&self.conn, device, addr, self.me.now_ms())
    }

    /// Where `device` was last reached, if anywhere.
    pub fn peer_addr(&self, device: &DeviceId) -> Result<Option<String>> {
        tables::peers::addr(&self.conn, device)
    }

    /// This device's key, for a transport that authenticates with it.
    pub fn device_key(&self) -> &DeviceKey {
        &self.me.key
    }

    fn group_ops(&mut self, g: &Group, ops: Vec<GroupOp>) -> Result<Group> {
        self.write(|tx, r| seal::seal_ops(tx, r, g.id, ops))?;
        self.group(&g.id.to_string())
    }

    fn admin_of(&self, group: &str) -> Result<Group> {
        let g = self.group(group)?;
        if !g.role(&self.me.device).is_some_and(Role::may_admin) {
            return Err(StoreError::NotAdmin {
                group: g.name.clone(),
            });
        }
        Ok(g)
    }

    fn share_op(&self, table: &str, excluded: &[String]) -> Result<GroupOp> {
        let t = tables::table::load_by_name(&self.conn, table)?.ok_or_else(|| {
            StoreError::NotTracked {
                table: table.to_owned(),
            }
        })?;
        for c in excluded {
            if !t.columns.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                return Err(StoreError::NoSuchColumn {
                    table: t.name.clone(),
                    column: c.clone(),
                });
            }
        }
        Ok(GroupOp::Share {
            table: t.name,
            excluded: excluded.to_vec(),
        })
    }

    /// Verifies and merges a batch of commits, all in one transaction: if any commit
    /// is malformed, forged or tampered with, nothing is changed.
    pub fn import(&mut self, commits: Vec<SignedCommit>) -> Result<ImportReport> {
        self.write(|tx, r| import::import(tx, r, commits))
    }

    /// Verifies and keeps a batch of commits without applying them: they wait for the
    /// next [`Store::import`] or [`Store::apply_waiting`]. Receiving a long history
    /// batch by batch and applying it once at the end writes every row in key order,
    /// one pass over the tables instead of one per batch: a first sync into an empty
    /// table fills it from one end to the other. A batch with any commit that fails
    /// verification changes nothing.
    pub fn receive(&mut self, commits: Vec<SignedCommit>) -> Result<ImportReport> {
        self.write(|tx, r| import::receive(tx, r, commits))
    }

    /// Applies whatever can be applied now: commits received and kept, commits whose
    /// clock the local clock has reached, and held changes.
    pub fn apply_waiting(&mut self) -> Result<ImportReport> {
        // Nothing waits and nothing is held (the usual end of a session that brought
        // nothing): there is nothing to write.
        if !import::anything_waiting(&self.conn)? {
            return Ok(ImportReport::default());
        }
        self.write(|tx, r| import::import(tx, r, Vec::new()))
    }

    /// The conflicts still open (pending or auto-resolved), in brief, by id.
    pub fn open_conflicts(&self) -> Result<Vec<OpenConflict>> {
        merge::inbox::open(&self.conn)
    }

    /// Every device whose address is remembered: where, and when it was last reached.
    pub fn peers(&self) -> Result<Vec<KnownPeer>> {
        tables::peers::all(&self.conn)
    }

    /// The conflict inbox, newest first; `all` includes closed and resolved ones.
    pub fn conflicts(&self, all: bool) -> Result<Vec<Conflict>> {
        merge::inbox::list(&self.conn, all)
    }

    /// A page of the conflict inbox, newest first, with the open records' count by
    /// table.
    pub fn inbox(&self, query: &InboxQuery) -> Result<InboxPage> {
        merge::inbox::page(&self.conn, query)
    }

    /// One conflict by id (a unique prefix will do).
    pub fn conflict(&self, id: &str) -> Result<Conflict> {
        merge::inbox::get(&self.conn, id)
    }

    /// Resolves a conflict with a new write that syncs, and seals it.
    pub fn resolve(&mut self, id: &str, resolution: Resolution) -> Result<Conflict> {
        let id = merge::inbox::get(&self.conn, id)?.id;
        self.write(|tx, r| {
            resolve::resolve(tx, r, &id, &resolution)?;
            seal::seal(tx, r)?;
            resolve::mark_resolved(tx, &id, &resolution)
        })?;
        merge::inbox::get(&self.conn, &id)
    }

    /// A summary of the replica.
    pub fn status(&self) -> Result<Status> {
        status::status(&self.conn, &self.me)
    }

    /// How far this device's newest commit is stamped ahead of its wall clock, when
    /// that is past what members accept (as [`Status::clock_ahead_ms`], cheaply).
    pub fn clock_ahead_ms(&self) -> Result<Option<u64>> {
        status::clock_ahead_ms(&self.conn, &self.me)
    }

    /// The newest `limit` commits held.
    pub fn log(&self, limit: usize) -> Result<Vec<CommitSummary>> {
        status::log(&self.conn, 0, limit)
    }

    /// `limit` commits held, newest first, after skipping the `offset` newest.
    pub fn log_page(&self, offset: usize, limit: usize) -> Result<Vec<CommitSummary>> {
        status::log(&self.conn, offset, limit)
    }

    /// Runs `f` in an immediate transaction, so that writers in other processes wait
    /// their turn, and commits it if `f` succeeds.
    ///
    /// Foreign keys are not enforced inside: a batch may carry a child before its
    /// parent, and a missing parent is a conflict to record, not a reason to refuse
    /// the batch. The connection's own setting is restored afterwards.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction, &mut Device) -> Result<T>) -> Result<T> {
        let enforced: bool = self
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
        if enforced {
            self.conn.pragma_update(None, "foreign_keys", false)?;
        }
        let result = self.transaction(f);
        if enforced {
            self.conn.pragma_update(None, "foreign_keys", true)?;
        }
        result.map_err(|e| e.in_file(&self.me.path))
    }

    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Transaction, &mut Device) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.me.open_conflicts = None;
        match f(&tx, &mut self.me) {
            Ok(v) => {
                tx.commit()?;
                self.checkpoints.after_commit(&self.conn, &self.me.path);
                Ok(v)
            }
            Err(e) => {
                // Ids handed out inside the rolled-back transaction are void.
                self.me.authors.clear();
                self.me.columns.clear();
                Err(e)
            }
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // Sealing and merging walk the app's table and shoal_rows in key order, a pass at a
    // time, so a page is mostly touched once per pass: a page cache of 8 MiB (SQLite's
    // default is 2 MiB) measured as fast at a million rows as 16 MiB, 8 MB smaller per
    // connection. This is Shoal's connection only; the app's are untouched.
    conn.pragma_update(None, "cache_size", -8_192)?;
    conn.pragma_update(None, "temp_store", "memory")?;
    // A double-quoted name that names no column must be an error, never the string
    // literal SQLite would otherwise take it for: a renamed column would be read as
    // its old name's text.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    checkpoint::Checkpoints::take_over(&conn)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

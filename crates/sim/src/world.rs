//! The simulated world: devices on real SQLite files, connections between them over
//! [`Pipe`]s, a random schedule of writes, syncs, invites, crashes, partitions and one
//! revocation, then healing and the checks.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use shoal_core::invite::invite_proof;
use shoal_core::{DeviceId, GroupId, Role, Seq};
use shoal_host::{Host, HostError, Task, Trust, local_side};
use shoal_proto::{Config, InviteClaim, Session};
use shoal_store::{Store, StoreOptions};

use crate::app::{self, SCHEMA, SHARED, enforce};
use crate::link::{Faults, Pipe};
use crate::plan::{MAX_DRIFT_MS, Outcome, Plan};

mod check;

/// Virtual time starts here (milliseconds since the Unix epoch), plus each clock's skew.
const EPOCH_MS: u64 = 1_800_000_000_000;
/// How far virtual time moves per step.
const TICK_MS: u64 = 20;
/// The group's name.
const GROUP: &str = "sim";

struct Device {
    name: String,
    path: PathBuf,
    options: StoreOptions,
    /// `None` while crashed.
    store: Option<Store>,
    down_until: u64,
    id: DeviceId,
    /// The admin that invited this device, and the claim, kept until the device
    /// holds the group: a join whose session broke is tried again with it.
    invite: Option<(usize, InviteClaim)>,
    /// Whether the app on this device has added column `c` to `items`.
    has_c: bool,
    /// Whether `items` is untracked here for now (the user will track it again).
    untracked: bool,
    /// Whether the app here has renamed `items.a` to `aa` for now (and will rename it
    /// back): Shoal stops sealing and applying `items` here meanwhile.
    renamed: bool,
}

struct Side {
    device: usize,
    host: Host,
    /// The task the host handed out, run at a later pump (as a driver's blocking
    /// thread runs it while the stream is read).
    task: Option<Task>,
}

struct Conn {
    /// The initiator, then the responder.
    sides: [Side; 2],
    /// `pipes[k]` carries what `sides[k]` writes.
    pipes: [Pipe; 2],
    started: u64,
}

struct World {
    rng: StdRng,
    plan: Plan,
    now: u64,
    clock: Arc<AtomicU64>,
    devices: Vec<Device>,
    conns: Vec<Conn>,
    group: GroupId,
    faults: Faults,
    /// Each device's side while a partition lasts, and when it ends.
    partition: Option<(Vec<bool>, u64)>,
    revoked: Option<(usize, Seq)>,
    outcome: Outcome,
    dir: tempfile::TempDir,
}

/// Runs the simulation of `seed` and checks its end state.
pub fn run(seed: u64) -> Result<Outcome, String> {
    let plan = Plan::from_seed(seed);
    let mut w = World::new(plan).map_err(|e| format!("setting up: {e}"))?;
    for step in 0..w.plan.steps {
        w.step(step)?;
    }
    w.heal()?;
    if let Err(e) = w.check() {
        let e = format!("{e}\nthe run: {}", w.outcome);
        // With SHOAL_SIM_KEEP set, the devices' files stay for a look.
        if std::env::var_os("SHOAL_SIM_KEEP").is_some() {
            let kept = w.dir.keep();
            return Err(format!(
                "{e}\nthe devices' files are kept in {}",
                kept.display()
            ));
        }
        return Err(e);
    }
    Ok(w.outcome)
}

fn err(e: impl fmt::Display) -> String {
    e.to_string()
}

impl World {
    fn new(plan: Plan) -> Result<World, String> {
        let dir = tempfile::TempDir::new_in("/dev/shm")
            .or_else(|_| tempfile::TempDir::new())
            .map_err(err)?;
        let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5eed_5eed);
        let clock = Arc::new(AtomicU64::new(0));
        let mut devices = Vec::new();
        for (i, skew) in plan.skews_ms.iter().copied().enumerate() {
            let name = format!("d{i}");
            let path = dir.path().join(format!("{name}.db"));
            let mut options = StoreOptions::new(dir.path().join("keys"));
            let c = clock.clone();
            options.wall_clock = Arc::new(move || {
                (EPOCH_MS + c.load(Ordering::Relaxed)).saturating_add_signed(skew)
            });
            options.max_drift_ms = MAX_DRIFT_MS;
            let random = Arc::new(std::sync::Mutex::new(StdRng::seed_from_u64(rng.next_u64())));
            options.randomness = Arc::new(move |buf: &mut [u8]| {
                random
                    .lock()
                    .map_err(|_| "randomness poisoned".to_string())?
                    .fill_bytes(buf);
                Ok(())
            });
            rusqlite::Connection::open(&path)
                .and_then(|c| c.execute_batch(SCHEMA))
                .map_err(err)?;
            let mut store = Store::init(&path, options.clone()).map_err(err)?;
            for t in SHARED.iter().chain(&["notes"]) {
                store.track(t, None).map_err(err)?;
            }
            enforce(&store)?;
            devices.push(Device {
                name,
                path,
                options,
                id: store.device(),
                store: Some(store),
                down_until: 0,
                invite: None,
                has_c: false,
                untracked: false,
                renamed: false,
            });
        }
        // The admin's table has rows before it is shared: they come along.
        let admin = devices[0].store.as_mut().ok_or("no store")?;
        admin
            .connection()
            .execute_batch(
                "INSERT INTO items VALUES ('k0', 'before the group', 1), ('a-only', 'x', 2);",
            )
            .map_err(err)?;
        admin.seal().map_err(err)?;
        let group = devices[0]
            .store
            .as_mut()
            .ok_or("no store")?
            .create_group(GROUP, &SHARED.map(|t| (t.to_string(), vec![])))
            .map_err(err)?
            .id;
        Ok(World {
            faults: plan.faults,
            rng,
            plan,
            now: 0,
            clock,
            devices,
            conns: Vec::new(),
            group,
            partition: None,
            revoked: None,
            outcome: Outcome::default(),
            dir,
        })
    }

    fn store(&mut self, d: usize) -> Option<&mut Store> {
        self.devices[d].store.as_mut()
    }

    /// The device's own view of the group: `None` if it does not know it.
    fn view(&self, d: usize) -> Option<shoal_core::Group> {
        self.devices[d]
            .store
            .as_ref()?
            .group_by_id(&self.group)
            .ok()
            .flatten()
    }

    fn is_admin(&self, d: usize) -> bool {
        self.view(d)
            .is_some_and(|g| g.role(&self.devices[d].id).is_some_and(|r| r.may_admin()))
    }

    fn step(&mut self, step: u64) -> Result<(), String> {
        self.now += TICK_MS;
        self.clock.store(self.now, Ordering::Relaxed);
        // Restarts and the end of a partition.
        for d in 0..self.devices.len() {
            if self.devices[d].store.is_none() && self.now >= self.devices[d].down_until {
                let dev = &self.devices[d];
                let store = Store::open(&dev.path, dev.options.clone())
                    .map_err(|e| format!("{} restarting: {e}", dev.name))?;
                enforce(&store)?;
                self.devices[d].store = Some(store);
            }
        }
        if self
            .partition
            .as_ref()
            .is_some_and(|(_, until)| self.now >= *until)
        {
            self.partition = None;
        }
        let n = self.devices.len();
        if self.rng.random_bool(0.35) {
            let d = self.rng.random_range(0..n);
            for _ in 0..self.rng.random_range(1..=3) {
                self.write(d)?;
            }
        }
        if self.rng.random_bool(0.2) {
            let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
            self.start_sync(a, b)?;
        }
        if self.rng.random_bool(0.1) {
            let d = self.rng.random_range(1..n);
            self.join(d)?;
        }
        if self.rng.random_bool(0.008) {
            let d = self.rng.random_range(0..n);
            self.crash(d);
        }
        if self.rng.random_bool(0.004) {
            let d = self.rng.random_range(0..n);
            self.add_column(d)?;
        }
        if self.rng.random_bool(0.01) {
            let d = self.rng.random_range(0..n);
            if !self.devices[d].renamed {
                self.toggle_tracking(d)?;
            }
        }
        if self.rng.random_bool(0.006) {
            let d = self.rng.random_range(0..n);
            if !self.devices[d].untracked {
                self.toggle_rename(d)?;
            }
        }
        if self.partition.is_none() && self.rng.random_bool(0.008) {
            let sides = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
            let until = self.now + self.rng.random_range(1_000..5_000);
            self.partition = Some((sides, until));
            self.outcome.partitions += 1;
        }
        if self.plan.second_admin && self.is_admin(0) && !self.is_admin(1) {
            let g = self.view(0);
            let id = self.devices[1].id;
            if g.is_some_and(|g| g.role(&id).is_some()) {
                self.store(0)
                    .ok_or("no store")?
                    .set_role(GROUP, &id, Role::Admin)
                    .map_err(err)?;
            }
        }
        if step >= self.plan.revoke_at && self.revoked.is_none() {
            self.revoke()?;
        }
        self.pump()
    }

    /// A random write to the shared table (or, now and then, to the private one).
    fn write(&mut self, d: usize) -> Result<(), String> {
        let me = self.devices[d].id;
        // A device writes to the group's table once it is a member by its own view;
        // before it ever joined, it keeps rows of its own there, which come along
        // when it joins.
        let view = self.view(d);
        // The app writes `a` by the name it has now.
        let a = if self.devices[d].renamed { "aa" } else { "a" };
        if view.is_none() {
            let key = format!("p{d}-{}", self.rng.random_range(0..4));
            let n = self.rng.random_range(-1000..1000);
            let Some(store) = self.store(d) else {
                return Ok(());
            };
            store
                .connection()
                .execute(
                    &format!("INSERT OR REPLACE INTO items(id, {a}, b) VALUES (?1, 'mine before joining', ?2)"),
                    rusqlite::params![key, n],
                )
                .map_err(err)?;
            self.outcome.writes += 1;
            return Ok(());
        }
        if !view.is_some_and(|g| g.role(&me).is_some_and(|r| r.may_write())) {
            return Ok(());
        }
        if self.rng.random_bool(0.45) {
            return self.write_constrained(d);
        }
        let key = format!("k{}", self.rng.random_range(0..12));
        let texts = [
            "",
            "plain",
            "O'Brien",
            "\"quoted\"",
            "naïve ☃",
            "x'; DROP TABLE items; --",
        ];
        let text = texts[self.rng.random_range(0..texts.len())].to_string()
            + &self.rng.random_range(0..100).to_string();
        let number: i64 = match self.rng.random_range(0..10) {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => self.rng.random_range(-1000..1000),
        };
        let kind = self.rng.random_range(0..100);
        let owner = self.devices[d].name.clone();
        let has_c = self.devices[d].has_c;
        let Some(store) = self.store(d) else {
            return Ok(());
        };
        let conn = store.connection();
        let result = match kind {
            0..40 => conn.execute(
                &format!("INSERT INTO items(id, {a}, b) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET {a} = excluded.{a}, b = excluded.b"),
                rusqlite::params![key, text, number],
            ),
            40..65 => conn.execute(&format!("UPDATE items SET {a} = ?2 WHERE id = ?1"), rusqlite::params![key, text]),
            65..80 => conn.execute("UPDATE items SET b = ?2 WHERE id = ?1", rusqlite::params![key, number]),
            80..85 if has_c => conn.execute("UPDATE items SET c = ?2 WHERE id = ?1", rusqlite::params![key, text]),
            80..95 => conn.execute("DELETE FROM items WHERE id = ?1", [key]),
            _ => conn.execute(
                "INSERT OR REPLACE INTO notes VALUES (?1, ?2, ?3)",
                rusqlite::params![key, owner, text],
            ),
        };
        result.map_err(|e| format!("{owner} writing: {e}"))?;
        self.outcome.writes += 1;
        Ok(())
    }

    /// A random write to a constrained table, with values from small sets so that
    /// devices clash. What the local schema refuses fails here, as it would in the app.
    fn write_constrained(&mut self, d: usize) -> Result<(), String> {
        let write = app::Write::random(&mut self.rng);
        let owner = self.devices[d].name.clone();
        let Some(store) = self.store(d) else {
            return Ok(());
        };
        match write.run(store.connection(), &owner) {
            Ok(true) => self.outcome.writes += 1,
            Ok(false) => self.outcome.refused_writes += 1,
            Err(e) => return Err(format!("{owner} writing: {e}")),
        }
        Ok(())
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.conns.iter().any(|c| {
            let (x, y) = (c.sides[0].device, c.sides[1].device);
            (x, y) == (a, b) || (x, y) == (b, a)
        })
    }

    /// `a` opens a session with `b`, if `a` believes both are members.
    fn start_sync(&mut self, a: usize, b: usize) -> Result<(), String> {
        if a == b || self.connected(a, b) || self.devices[b].store.is_none() {
            return Ok(());
        }
        let Some(g) = self.view(a) else {
            return Ok(());
        };
        let (ida, idb) = (self.devices[a].id, self.devices[b].id);
        if g.role(&ida).is_none() || g.role(&idb).is_none() {
            return Ok(());
        }
        self.open(a, b, None)
    }

    fn open(&mut self, a: usize, b: usize, invite: Option<InviteClaim>) -> Result<(), String> {
        let group = self.group;
        let remote = self.devices[b].id;
        let config = Config {
            window: self.plan.window,
            idle_timeout_ms: 3_000,
            target_batch_bytes: self.plan.batch_bytes,
            ..Config::default()
        };
        let now = self.now;
        let Some(store) = self.store(a) else {
            return Ok(());
        };
        store.seal().map_err(err)?;
        let local = local_side(store, group, invite).map_err(err)?;
        let initiator = Session::initiator(config, local, remote, now);
        let responder = Session::responder(config, remote, self.devices[a].id, now);
        let chunk = self.plan.export_chunk;
        let side = |device, session| Side {
            device,
            host: Host::new(session, Trust::Network).with_export_chunk(chunk),
            task: None,
        };
        self.conns.push(Conn {
            sides: [side(a, initiator), side(b, responder)],
            pipes: [Pipe::default(), Pipe::default()],
            started: now,
        });
        self.outcome.sessions += 1;
        Ok(())
    }

    /// `d` asks an admin for an invite and redeems it, or tries its invite again.
    fn join(&mut self, d: usize) -> Result<(), String> {
        if self.view(d).is_some() || self.devices[d].store.is_none() {
            return Ok(());
        }
        if let Some((a, claim)) = self.devices[d].invite.clone() {
            if self.connected(d, a) || self.devices[a].store.is_none() {
                return Ok(());
            }
            return self.open(d, a, Some(claim));
        }
        let admins: Vec<usize> = (0..self.devices.len())
            .filter(|&a| a != d && self.is_admin(a))
            .collect();
        if admins.is_empty() {
            return Ok(());
        }
        let a = admins[self.rng.random_range(0..admins.len())];
        if self.connected(d, a) {
            return Ok(());
        }
        let (group, joiner, inviter) = (self.group, self.devices[d].id, self.devices[a].id);
        let Some(store) = self.store(a) else {
            return Ok(());
        };
        let invite = store
            .create_invite(GROUP, Role::Member, 600_000, 1)
            .map_err(err)?;
        let claim = InviteClaim {
            invite: invite.id,
            proof: invite_proof(&invite.secret, &group, &joiner, &inviter),
        };
        self.devices[d].invite = Some((a, claim.clone()));
        self.outcome.joined += 1;
        self.open(d, a, Some(claim))
    }

    /// The app on device `d` adds column `c` to `items`, from whatever client: Shoal
    /// follows it by itself.
    fn add_column(&mut self, d: usize) -> Result<(), String> {
        if self.devices[d].has_c {
            return Ok(());
        }
        let path = self.devices[d].path.clone();
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.execute_batch("ALTER TABLE items ADD COLUMN c TEXT")
            })
            .map_err(|e| format!("{} adding a column: {e}", self.devices[d].name))?;
        self.devices[d].has_c = true;
        Ok(())
    }

    /// The app on device `d` renames `items.a` to `aa`, or back, from a connection of
    /// its own.
    fn toggle_rename(&mut self, d: usize) -> Result<(), String> {
        let (from, to) = if self.devices[d].renamed {
            ("aa", "a")
        } else {
            ("a", "aa")
        };
        let path = self.devices[d].path.clone();
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.execute_batch(&format!("ALTER TABLE items RENAME COLUMN {from} TO {to}"))
            })
            .map_err(|e| format!("{} renaming a column: {e}", self.devices[d].name))?;
        self.devices[d].renamed = !self.devices[d].renamed;
        Ok(())
    }

    /// Untracks `items` on device `d`, or tracks it again.
    fn toggle_tracking(&mut self, d: usize) -> Result<(), String> {
        let untracked = self.devices[d].untracked;
        let name = self.devices[d].name.clone();
        let Some(store) = self.store(d) else {
            return Ok(());
        };
        if untracked {
            store
                .track("items", None)
                .map_err(|e| format!("{name} tracking again: {e}"))?;
        } else {
            store
                .untrack("items")
                .map_err(|e| format!("{name} untracking: {e}"))?;
        }
        self.devices[d].untracked = !untracked;
        Ok(())
    }

    fn crash(&mut self, d: usize) {
        if self.devices[d].store.is_none() {
            return;
        }
        self.conns
            .retain(|c| c.sides[0].device != d && c.sides[1].device != d);
        self.devices[d].store = None;
        self.devices[d].down_until = self.now + self.rng.random_range(300..3_000);
        self.outcome.crashes += 1;
    }

    /// The first admin revokes a random member that is not an admin.
    fn revoke(&mut self) -> Result<(), String> {
        let Some(g) = self.view(0) else {
            return Ok(());
        };
        let candidates: Vec<usize> = (1..self.devices.len())
            .filter(|&d| g.role(&self.devices[d].id) == Some(Role::Member))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let d = candidates[self.rng.random_range(0..candidates.len())];
        let id = self.devices[d].id;
        let Some(store) = self.store(0) else {
            return Ok(());
        };
        let g = store.revoke(GROUP, &id).map_err(err)?;
        let after = g.revoked_after(&id).ok_or("revoked without a cutoff")?;
        self.revoked = Some((d, after));
        self.outcome.revoked = Some((self.devices[d].name.clone(), after.0));
        Ok(())
    }

    /// Moves every connection's bytes and events on by one step.
    fn pump(&mut self) -> Result<(), String> {
        let mut conns = std::mem::take(&mut self.conns);
        let mut open = Vec::with_capacity(conns.len());
        for mut c in conns.drain(..) {
            if self.pump_conn(&mut c)? {
                open.push(c);
            }
        }
        self.conns = open;
        Ok(())
    }

    /// Returns whether the connection stays open.
    fn pump_conn(&mut self, c: &mut Conn) -> Result<bool, String> {
        let cut = self
            .partition
            .as_ref()
            .is_some_and(|(sides, _)| sides[c.sides[0].device] != sides[c.sides[1].device]);
        for k in 0..2 {
            let bytes = c.pipes[1 - k].tick(self.now, &mut self.rng, &self.faults, cut);
            let side = &mut c.sides[k];
            if !bytes.is_empty() && side.host.receive(&bytes, self.now).is_err() {
                // Whatever it queued (a refusal) still goes out; the peer learns of it
                // or times out.
            }
            if let Some(deadline) = side.host.poll_timeout()
                && self.now >= deadline
            {
                let _ = side.host.handle_timeout(self.now);
            }
            let device = side.device;
            let outcome = &mut self.outcome;
            let Some(store) = self.devices[device].store.as_mut() else {
                return Ok(false);
            };
            work(store, side, &mut self.rng, outcome)?;
            while let Some(bytes) = side.host.poll_transmit() {
                c.pipes[k].write(&bytes, self.now, &mut self.rng, &self.faults, cut);
            }
        }
        let [a, b] = &mut c.sides;
        let done = a.host.is_finished() && b.host.is_finished();
        let failed = (a.host.is_closed() && !a.host.is_finished())
            || (b.host.is_closed() && !b.host.is_finished());
        let stale = self.now > c.started + 120_000;
        if (done || failed || stale) && trace() {
            let [x, y] = &c.sides;
            eprintln!(
                "at {} ms: session d{} -> d{} {}: pushed {} and {}",
                self.now,
                x.device,
                y.device,
                if done { "finished" } else { "broke" },
                x.host.summary().pushed,
                y.host.summary().pushed
            );
        }
        if done || failed || stale {
            for p in &c.pipes {
                self.outcome.packets += p.packets;
                self.outcome.lost += p.lost;
            }
        }
        if failed || stale {
            self.outcome.failed += 1;
            for side in &mut c.sides {
                if let Some(store) = self.devices[side.device].store.as_mut() {
                    apply_kept(store, side, &mut self.outcome)?;
                }
            }
            // Let a refusal arrive before the connection goes, as a real close would.
            for k in 0..2 {
                let bytes =
                    c.pipes[1 - k].tick(self.now + 1_000, &mut self.rng, &Faults::clean(), false);
                let _ = c.sides[k].host.receive(&bytes, self.now);
            }
        }
        Ok(!(done || failed || stale))
    }

    /// Stops the faults, brings every device back, and syncs everyone with everyone
    /// until nothing moves.
    fn heal(&mut self) -> Result<(), String> {
        self.faults = Faults::clean();
        self.partition = None;
        self.conns.clear();
        for d in 0..self.devices.len() {
            if self.devices[d].store.is_none() {
                let dev = &self.devices[d];
                let store = Store::open(&dev.path, dev.options.clone()).map_err(err)?;
                enforce(&store)?;
                self.devices[d].store = Some(store);
            }
        }
        // The app's new column reaches every device in the end, and every table that
        // was untracked is tracked again.
        if self.devices.iter().any(|d| d.has_c) {
            for d in 0..self.devices.len() {
                self.add_column(d)?;
            }
        }
        for d in 0..self.devices.len() {
            if self.devices[d].renamed {
                self.toggle_rename(d)?;
            }
            if self.devices[d].untracked {
                self.toggle_tracking(d)?;
            }
        }
        let revoked = self.revoked.map(|(d, _)| d);
        for round in 1..=10 {
            self.outcome.heal_rounds = round;
            // Clocks move past every skew, so commits held for their clocks are due.
            self.now += 60_000;
            self.clock.store(self.now, Ordering::Relaxed);
            for d in 0..self.devices.len() {
                let store = self.store(d).ok_or("no store")?;
                store.import(Vec::new()).map_err(err)?;
            }
            let before = self.vectors();
            let n = self.devices.len();
            for a in 0..n {
                if Some(a) != revoked {
                    self.join(a)?;
                    self.finish_sessions()?;
                }
                for b in 0..n {
                    if Some(a) == revoked || Some(b) == revoked {
                        continue;
                    }
                    self.start_sync(a, b)?;
                    self.finish_sessions()?;
                }
            }
            if round > 1 && self.vectors() == before {
                return Ok(());
            }
        }
        Err("still changing after 10 rounds of syncing everyone with everyone".into())
    }

    /// Runs the open sessions to their end.
    fn finish_sessions(&mut self) -> Result<(), String> {
        while !self.conns.is_empty() {
            self.now += TICK_MS;
            self.clock.store(self.now, Ordering::Relaxed);
            self.pump()?;
        }
        Ok(())
    }
}

/// After a session broke: the task still out ends first, then what the session kept
/// is applied, as the network driver does.
fn apply_kept(store: &mut Store, side: &mut Side, outcome: &mut Outcome) -> Result<(), String> {
    if let Some(task) = side.task.take() {
        let done = task.run(store);
        complete(side, done, outcome)?;
    }
    if let Some(task) = side.host.salvage() {
        let done = task.run(store);
        complete(side, done, outcome)?;
    }
    Ok(())
}

/// Runs the database work a side's host hands out. A task is run at once or, at
/// random, left for a later pump while bytes keep moving.
fn work(
    store: &mut Store,
    side: &mut Side,
    rng: &mut StdRng,
    outcome: &mut Outcome,
) -> Result<(), String> {
    loop {
        if side.task.is_none() {
            side.task = side.host.next_task();
        }
        let Some(task) = side.task.take() else {
            return Ok(());
        };
        if rng.random_bool(0.3) {
            side.task = Some(task);
            return Ok(());
        }
        let done = task.run(store);
        complete(side, done, outcome)?;
    }
}

/// Hands a task's result back. A session that ends here (a refusal) is counted; a
/// database error is the simulation's failure.
fn complete(side: &mut Side, done: shoal_host::Done, outcome: &mut Outcome) -> Result<(), String> {
    let before = side.host.summary().refused.len();
    match side.host.complete(done) {
        Ok(()) => {}
        Err(HostError::Protocol(e)) => {
            if trace() {
                eprintln!("d{} ended a session: {e}", side.device);
            }
            if let Some(refusal) = side.host.refusal() {
                *outcome
                    .refusals
                    .entry(format!("{:?}", refusal.reason))
                    .or_default() += 1;
                outcome.refused_at_hello += 1;
            }
        }
        Err(e) => return Err(format!("device {}: {e}", side.device)),
    }
    outcome.taken_back += side.host.summary().refused[before..]
        .iter()
        .filter(|r| r.contains("taken back"))
        .count() as u64;
    Ok(())
}

/// Whether `SHOAL_SIM_TRACE` asks for each session's end to be printed.
fn trace() -> bool {
    std::env::var_os("SHOAL_SIM_TRACE").is_some()
}

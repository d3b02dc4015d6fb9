//! What a simulated run is to do, drawn from its seed, and what it did.

use std::collections::BTreeMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::link::Faults;

/// How far ahead of a device's clock a commit may be stamped before it is held.
pub(crate) const MAX_DRIFT_MS: u64 = 5_000;

/// What a run does, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed everything comes from.
    pub seed: u64,
    /// How many devices (3 to 8).
    pub devices: usize,
    /// Steps of random activity before healing.
    pub steps: u64,
    /// What the network does to packets.
    pub faults: Faults,
    /// Each device's clock skew in milliseconds.
    pub skews_ms: Vec<i64>,
    /// The sessions' window and batch size.
    pub window: usize,
    /// Uncompressed bytes per batch.
    pub batch_bytes: usize,
    /// Whether the second device is made an admin once it joins.
    pub second_admin: bool,
    /// The step from which the revocation is made.
    pub revoke_at: u64,
    /// Bytes of commits a host reads per export.
    pub export_chunk: usize,
}

impl Plan {
    /// The plan of a seed.
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let devices = rng.random_range(3..=8);
        let steps = rng.random_range(150..400);
        let faults = Faults {
            loss: rng.random_range(0.0..0.25),
            duplicate: rng.random_range(0.0..0.1),
            min_delay_ms: rng.random_range(1..20),
            max_delay_ms: rng.random_range(20..300),
        };
        let mut skews_ms: Vec<i64> = (0..devices)
            .map(|_| rng.random_range(-2_000..2_000))
            .collect();
        // Sometimes one clock is further ahead than others accept: its commits wait.
        if rng.random_bool(0.3) {
            let d = rng.random_range(0..devices);
            skews_ms[d] = MAX_DRIFT_MS as i64 + rng.random_range(500..3_000);
        }
        Plan {
            seed,
            devices,
            steps,
            faults,
            skews_ms,
            window: rng.random_range(1..=4),
            batch_bytes: rng.random_range(256..8_192),
            second_admin: rng.random_bool(0.5),
            revoke_at: rng.random_range(steps / 3..steps * 2 / 3),
            export_chunk: rng.random_range(1_024..32_768),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Writes made through SQL.
    pub writes: u64,
    /// Writes the local schema refused (a UNIQUE, CHECK, NOT NULL or foreign key).
    pub refused_writes: u64,
    /// Rows set aside by a constraint at the end, on each member alike.
    pub set_aside: usize,
    /// Open conflict records at the end on the first member.
    pub conflicts: usize,
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions that did not finish (timeouts, crashes, refusals).
    pub failed: u64,
    /// Sessions refused at hello.
    pub refused_at_hello: u64,
    /// Why, counted.
    pub refusals: BTreeMap<String, u64>,
    /// Crashes (each followed by a restart from the file).
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Devices that joined by invite.
    pub joined: usize,
    /// Commits refused for good, summed over the devices at the end.
    pub refused_commits: u64,
    /// Commits taken back when a revocation arrived late.
    pub taken_back: u64,
    /// Packets sent.
    pub packets: u64,
    /// Packets lost.
    pub lost: u64,
    /// Rows in the shared table at the end.
    pub rows: usize,
    /// Members at the end.
    pub members: usize,
    /// Rounds of syncing everyone with everyone until nothing moved.
    pub heal_rounds: u32,
    /// The revoked device and the last of its commits that counts.
    pub revoked: Option<(String, u64)>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} members, {} rows ({} set aside, {} conflicts), {} writes ({} refused here), {} sessions ({} failed, {} refused at hello {:?}), {} crashes, {} partitions, {} joins, {} commits refused ({} taken back), {}/{} packets lost, healed in {} rounds, revoked {}",
            self.members,
            self.rows,
            self.set_aside,
            self.conflicts,
            self.writes,
            self.refused_writes,
            self.sessions,
            self.failed,
            self.refused_at_hello,
            self.refusals,
            self.crashes,
            self.partitions,
            self.joined,
            self.refused_commits,
            self.taken_back,
            self.lost,
            self.packets,
            self.heal_rounds,
            self.revoked
                .as_ref()
                .map_or("none".into(), |(d, after)| format!("{d} after seq {after}"))
        )
    }
}

//! Seeded simulation of a group of devices syncing over a bad network.
//!
//! Each device is a real SQLite file with a real [`Store`](shoal_store::Store); sessions are the real
//! [`shoal_proto::Session`] driven by the real [`shoal_host::Host`], as the network and
//! `shoal merge` drive it.
//! Only the network is simulated ([`link`]): packets are lost, duplicated, delayed and
//! reordered, devices are partitioned, crash and restart from their files, and their
//! clocks are skewed. Everything random comes from one seed, so a run replays from it.
//!
//! After the faults stop and every device has synced with every other, the run checks
//! that every member's shared table is byte-identical, that their version vectors
//! agree, that no commit the revoked device made after its revocation stands anywhere,
//! and that a private table never left its device.

pub mod app;
pub mod link;
mod plan;
mod world;

pub use plan::{Outcome, Plan};
pub use world::run;

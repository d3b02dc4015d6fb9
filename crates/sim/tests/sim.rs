//! Runs the simulation over many seeds. Each run prints its seed; a failing one is
//! replayed with `SHOAL_SIM_SEED=<seed>`. `SHOAL_SIM_SEEDS` sets how many seeds run
//! (200 by default) and `SHOAL_SIM_FIRST` the first of them. Seeds that once found a
//! bug run every time besides. `SHOAL_SIM_KEEP` keeps a failed run's files and
//! `SHOAL_SIM_TRACE` prints how each session ended.

use std::time::Instant;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seeds that found a bug: an insert over a live row kept a column its sender lacked
/// (130); taking back a revoked device's commits skipped a table untracked for now
/// (258); a change captured before an untrack was sealed with a value written after
/// it (301). With the constrained tables: a row set aside kept the id of its first
/// record after later changes (329); taking back commits did not check the children
/// of the rows it deleted (344); a record of a child stayed open after its parent
/// came (392); a device that joined while a column was renamed sealed a row twice in
/// one commit, which every member refused (11, below 200); a revocation that arrived
/// while a column was renamed took back nothing of that table (427); a write's record
/// found after its insert had lost the row's life was called a concurrent write (486);
/// an insert's lost life was remembered after the insert it lost to was taken back
/// (798). Seeds depend on the plan: a change to how plans are drawn makes them other
/// runs.
const FOUND_BUGS: &[u64] = &[130, 258, 301, 329, 344, 392, 427, 486, 798, 2298, 5444];

/// The seeds this process runs, split between `shares` tests so that they run in
/// parallel.
fn seeds(share: u64, shares: u64) -> Vec<u64> {
    if let Some(seed) = env("SHOAL_SIM_SEED") {
        return if share == 0 { vec![seed] } else { vec![] };
    }
    let first = env("SHOAL_SIM_FIRST").unwrap_or(0);
    let count = env("SHOAL_SIM_SEEDS").unwrap_or(200);
    let range = first..first + count;
    range
        .clone()
        .chain(FOUND_BUGS.iter().copied().filter(|s| !range.contains(s)))
        .filter(|s| s % shares == share)
        .collect()
}

fn run_share(share: u64, shares: u64) {
    let mut failed = Vec::new();
    for seed in seeds(share, shares) {
        let start = Instant::now();
        match shoal_sim::run(seed) {
            Ok(outcome) => println!(
                "sim seed {seed}: ok in {} ms: {outcome}",
                start.elapsed().as_millis()
            ),
            Err(e) => {
                println!("sim seed {seed} FAILED: {e}");
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "sim seeds {failed:?} failed (each is printed above)\nreplay one with: SHOAL_SIM_SEED=<seed> cargo test -p shoal-sim -- --nocapture"
    );
}

#[test]
fn members_converge_under_faults_even_seeds() {
    run_share(0, 2);
}

#[test]
fn members_converge_under_faults_odd_seeds() {
    run_share(1, 2);
}

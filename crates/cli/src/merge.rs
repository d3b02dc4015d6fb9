//! `shoal merge`: two databases on one machine synced as two devices would sync.

use shoal_store::Store;

/// What a two-way merge moved.
#[derive(Default, serde::Serialize)]
pub(crate) struct MergeReport {
    pub(crate) a_to_b: Direction,
    pub(crate) b_to_a: Direction,
    /// Groups whose session a side refused, and why.
    pub(crate) skipped: Vec<String>,
}

/// One direction of a merge.
#[derive(Default, serde::Serialize)]
pub(crate) struct Direction {
    pub(crate) commits: usize,
    pub(crate) changes: usize,
    pub(crate) conflicts: usize,
    /// Row changes the receiver holds now, as its `status` counts them.
    pub(crate) held: usize,
    /// Commits the receiver holds waiting for earlier ones.
    pub(crate) waiting: usize,
    /// Commits the receiver holds because their clock is too far ahead of its own.
    pub(crate) future: usize,
    /// Commits the receiver held that their author withdrew, stamped again.
    pub(crate) withdrawn: usize,
    pub(crate) bytes: usize,
    /// Commits the receiver refused, and why.
    pub(crate) refused: Vec<String>,
}

/// Syncs two files as two devices would: one session per group, in memory, each
/// side sealing first and applying what it was sent once the session ends.
pub(crate) fn merge_files(a: &mut Store, b: &mut Store) -> anyhow::Result<MergeReport> {
    let mut report = MergeReport::default();
    // Every log either file holds: the local group's, and each group's. A group one
    // side does not know, or whose member the other side is not, is refused there
    // as a peer on the network would refuse it.
    let mut groups = a.group_ids()?;
    for g in b.group_ids()? {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for group in groups {
        let x = shoal_host::exchange(a, b, group, shoal_proto::Config::default())?;
        if let Some(refused) = x.refused {
            report
                .skipped
                .push(format!("group {}: {refused}", group.short()));
        }
        report.a_to_b.add(&x.responder);
        report.b_to_a.add(&x.initiator);
    }
    report.a_to_b.counts(b)?;
    report.b_to_a.counts(a)?;
    Ok(report)
}

impl Direction {
    /// Adds what a receiving side counted in one group's session.
    fn add(&mut self, s: &shoal_host::GroupSync) {
        self.commits += s.applied as usize;
        self.changes += s.changes as usize;
        self.conflicts += s.conflicts as usize;
        self.bytes += s.bytes_in as usize;
        self.withdrawn += s.withdrawn as usize;
        self.refused.extend(s.refused.iter().cloned());
    }

    /// What the receiver holds back now, as its `status` counts it.
    fn counts(&mut self, to: &Store) -> shoal_store::Result<()> {
        let status = to.status()?;
        self.held = status.held.iter().map(|h| h.count as usize).sum();
        self.waiting = status.waiting_commits as usize;
        self.future = status.future_commits as usize;
        Ok(())
    }
}

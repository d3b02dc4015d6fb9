//! Watching this device's own database: seal what was written, notice conflicts,
//! membership changes and commits stamped ahead, and wake every member that now
//! lacks something.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_net::with_store;
use shoal_store::OpenConflict;
use tracing::{info, warn};

use crate::error::DaemonError;
use crate::event::Event;
use crate::inner::Inner;
use crate::mutex::lock;
use crate::peer::Peer;
use crate::schedule::{FORWARD_DELAY, Lack};

impl Inner {
    /// Seals what was written here, notices new conflicts and membership changes,
    /// and wakes every member that now lacks something. `first` records what is
    /// there without announcing it.
    pub(crate) async fn look(self: Arc<Self>, first: bool) -> Result<(), DaemonError> {
        let (sealed, groups, have, conflicts, ahead) = with_store(&self.store, |s| {
            let sealed = s.seal()?;
            let groups = s.groups()?;
            let mut have = HashMap::new();
            for g in &groups {
                have.insert(g.id, s.version_vector(&g.id)?);
            }
            Ok((
                sealed,
                groups,
                have,
                s.open_conflicts()?,
                s.clock_ahead_ms()?,
            ))
        })
        .await?;
        if sealed.commits > 0 {
            self.emit(Event::LocalCommits {
                commits: sealed.commits as u64,
                changes: sealed.changes as u64,
            });
        }
        let conflicts: BTreeMap<String, OpenConflict> =
            conflicts.into_iter().map(|c| (c.id.clone(), c)).collect();
        let events = {
            let mut local = lock(&self.local);
            let mut events = Vec::new();
            if !first {
                for (id, c) in &conflicts {
                    if local
                        .conflicts
                        .get(id)
                        .is_none_or(|old| old.status != c.status)
                    {
                        events.push(Event::ConflictFound {
                            id: id.clone(),
                            table: c.table.clone(),
                            kind: c.kind,
                            status: c.status,
                        });
                    }
                }
                for id in local.conflicts.keys() {
                    if !conflicts.contains_key(id) {
                        events.push(Event::ConflictClosed { id: id.clone() });
                    }
                }
            }
            let not_sealed: BTreeSet<(String, String)> = sealed
                .schema_problems
                .iter()
                .map(|p| (p.table.clone(), p.message.clone()))
                .chain(
                    sealed
                        .oversized
                        .iter()
                        .map(|o| (o.table.clone(), o.to_string())),
                )
                .collect();
            for k in &sealed.kept_here {
                warn!(table = %k.table, "{k}");
            }
            for (table, reason) in not_sealed.difference(&local.not_sealed) {
                warn!(%table, "{reason}");
                events.push(Event::NotSealed {
                    table: table.clone(),
                    reason: reason.clone(),
                });
            }
            local.not_sealed = not_sealed;
            if let Some(ahead_ms) = ahead.filter(|_| !local.clock_ahead) {
                events.push(Event::ClockAhead { ahead_ms });
            }
            local.clock_ahead = ahead.is_some();
            local.conflicts = conflicts;
            local.have = have.clone();
            local.groups = groups.clone();
            events
        };
        for e in events {
            self.emit(e);
        }
        self.clone().members(&groups);
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        for p in peers {
            if p.connection().is_none() {
                // Look again for ways to reach it: an address may have just been
                // remembered.
                p.dirty.notify_one();
                continue;
            }
            match p.lacks(&have, &self.me) {
                Lack::Nothing => {}
                Lack::Own => p.dirty.notify_one(),
                // Commits this device passes on: the member has most likely had them
                // from their author already, so the round that checks waits a moment
                // and carries what arrived meanwhile.
                Lack::Relayed => {
                    if !p.forwarding.swap(true, Ordering::SeqCst) {
                        let p = p.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(FORWARD_DELAY).await;
                            p.forwarding.store(false, Ordering::SeqCst);
                            p.dirty.notify_one();
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for the database to change, and looks.
    pub(crate) async fn local_loop(self: Arc<Self>) {
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = self.changed.notified() => {}
                () = &mut stopped => return,
            }
            if let Err(e) = self.clone().look(false).await {
                warn!("could not read local changes: {e}");
            }
        }
    }

    /// Now and then: applies commits held for a clock that has now been reached.
    pub(crate) async fn tick_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.sync_interval);
        every.tick().await;
        loop {
            every.tick().await;
            match with_store(&self.store, |s| s.apply_waiting()).await {
                Ok(r) if r.commits_applied + r.held_applied > 0 => {
                    info!(
                        commits = r.commits_applied,
                        changes = r.held_applied,
                        "applied held commits"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!("could not retry held commits: {e}"),
            }
        }
    }
}

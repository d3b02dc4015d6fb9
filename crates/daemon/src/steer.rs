//! What people and apps do to a running daemon's database through it: read the
//! conflict inbox and resolve what is in it, read the log, invite devices and revoke
//! them. Every write is sealed and goes out to the members at once, as a write by the
//! app would.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, GroupId, Role};
use shoal_net::{InviteTicket, with_store};
use shoal_store::{CommitSummary, Conflict, InboxPage, InboxQuery, Resolution, TrackedTable};

use crate::auto::AutoSync;
use crate::error::DaemonError;
use crate::inner::Inner;

/// An invite made through a running daemon: the ticket a new device joins with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedInvite {
    /// The ticket (`shoal join DB TICKET`).
    pub ticket: String,
    /// The group it lets into.
    pub group: GroupId,
    /// The group's name.
    pub name: String,
    /// The role it gives.
    pub role: Role,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// How many devices may join with it.
    pub uses: u32,
}

impl Inner {
    /// Turns automatic sync on or off, or changes its interval, and keeps the
    /// setting for the next start (the configuration file is left as it is).
    pub(crate) fn set_auto_sync(&self, auto: AutoSync) -> Result<AutoSync, DaemonError> {
        if auto.interval < Duration::from_secs(1) {
            return Err(DaemonError::Value {
                key: "interval".into(),
                reason: "must be at least 1s".into(),
            });
        }
        auto.save(&self.auto_file)?;
        self.auto.send_replace(auto);
        Ok(auto)
    }

    /// The conflict records, open ones only unless `all`.
    pub(crate) async fn conflicts(&self, all: bool) -> Result<Vec<Conflict>, DaemonError> {
        Ok(with_store(&self.store, move |s| s.conflicts(all)).await?)
    }

    /// A page of the conflict inbox.
    pub(crate) async fn inbox(&self, query: InboxQuery) -> Result<InboxPage, DaemonError> {
        Ok(with_store(&self.store, move |s| s.inbox(&query)).await?)
    }

    /// One conflict record, by id or a unique prefix of it.
    pub(crate) async fn conflict(&self, id: String) -> Result<Conflict, DaemonError> {
        Ok(with_store(&self.store, move |s| s.conflict(&id)).await?)
    }

    /// Resolves a conflict with a write that syncs.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        id: String,
        resolution: Resolution,
    ) -> Result<Conflict, DaemonError> {
        let resolved = with_store(&self.store, move |s| s.resolve(&id, resolution)).await?;
        self.wrote().await?;
        Ok(resolved)
    }

    /// `limit` commits this device holds, newest first, after the `offset` newest.
    pub(crate) async fn log(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<CommitSummary>, DaemonError> {
        Ok(with_store(&self.store, move |s| s.log_page(offset, limit)).await?)
    }

    /// The tables this device tracks.
    pub(crate) async fn tables(&self) -> Result<Vec<TrackedTable>, DaemonError> {
        Ok(with_store(&self.store, |s| {
            Ok(s.tables()?.into_iter().filter(|t| t.tracked).collect())
        })
        .await?)
    }

    /// An invite to `group` (by name or id) for `uses` devices as `role`, valid for
    /// `valid`; this daemon serves the joiners.
    pub(crate) async fn invite(
        &self,
        group: String,
        role: Role,
        valid: Duration,
        uses: u32,
    ) -> Result<IssuedInvite, DaemonError> {
        let addr = self.node.addr().await;
        Ok(with_store(&self.store, move |s| {
            let id = s.group(&group)?.id.to_string();
            let invite = s.create_invite(&id, role, valid.as_millis() as u64, uses)?;
            let ticket = InviteTicket::new(&invite, s.device(), addr).encode(s.device_key());
            Ok(IssuedInvite {
                ticket,
                group: invite.group,
                name: invite.group_name,
                role,
                expires_ms: invite.expires_ms,
                uses,
            })
        })
        .await?)
    }

    /// Revokes `device` from `group`: its commits after the last one this device
    /// holds are refused by every member, for good.
    pub(crate) async fn revoke(
        self: &Arc<Self>,
        group: GroupId,
        device: DeviceId,
    ) -> Result<(), DaemonError> {
        with_store(&self.store, move |s| {
            s.revoke(&group.to_string(), &device)?;
            Ok(())
        })
        .await?;
        self.wrote().await
    }

    /// This daemon wrote to its own file, which its watcher does not notice: seal,
    /// and tell whoever lacks it.
    async fn wrote(self: &Arc<Self>) -> Result<(), DaemonError> {
        self.clone().look(false).await
    }
}

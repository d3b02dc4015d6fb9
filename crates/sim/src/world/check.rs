//! The checks at the end of a run: every member holds the same rows, the same
//! records and the same version vector, and every file is whole.

use std::collections::{BTreeMap, BTreeSet};

use shoal_core::{DeviceId, Seq, VersionVector};
use shoal_store::Store;

use super::{World, err};
use crate::app::{dump, shared_state};

impl World {
    /// Every device's version vector of the group.
    pub(super) fn vectors(&self) -> Vec<Option<VersionVector>> {
        self.devices
            .iter()
            .map(|d| d.store.as_ref()?.version_vector(&self.group).ok())
            .collect()
    }

    pub(super) fn check(&mut self) -> Result<(), String> {
        let g = self.view(0).ok_or("the admin lost the group")?;
        let members: Vec<usize> = (0..self.devices.len())
            .filter(|&d| g.role(&self.devices[d].id).is_some())
            .collect();
        self.outcome.members = members.len();
        let revoked = self.revoked;
        let mut reference: Option<(usize, Vec<String>, BTreeMap<DeviceId, Seq>)> = None;
        for &d in &members {
            let dev = &self.devices[d];
            let store = dev.store.as_ref().ok_or("no store")?;
            let rows = shared_state(store).map_err(|e| format!("{}: {e}", dev.name))?;
            let mut vv: BTreeMap<DeviceId, Seq> = store.version_vector(&self.group).map_err(err)?.0;
            if let Some((r, after)) = revoked {
                let rid = self.devices[r].id;
                vv.remove(&rid);
                let late: i64 = store
                    .connection()
                    .query_row(
                        "SELECT count(*) FROM shoal_commits c JOIN shoal_authors a ON a.id = c.author
                         WHERE a.device = ?1 AND c.grp = ?2 AND c.seq > ?3 AND c.state = 0",
                        rusqlite::params![&rid.0[..], &self.group.0[..], after.0 as i64],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                if late > 0 {
                    return Err(format!(
                        "{} holds {late} commit(s) of revoked {} made after its revocation as applied",
                        dev.name, self.devices[r].name
                    ));
                }
            }
            match &reference {
                None => reference = Some((d, rows, vv)),
                Some((first, want, want_vv)) => {
                    let first = &self.devices[*first].name;
                    if &rows != want {
                        let state = |s: &Store| {
                            s.status().map(|st| {
                                format!(
                                    "waiting {}, future {}, refused {}, held {:?}, forked {:?}, vv {:?}",
                                    st.waiting_commits,
                                    st.future_commits,
                                    st.refused_commits,
                                    st.held,
                                    st.forked_authors,
                                    s.version_vector(&self.group).map(|v| v.0.into_iter().map(|(d, q)| (d.short(), q.0)).collect::<Vec<_>>())
                                )
                            })
                        };
                        let other = self.devices[reference.as_ref().map_or(0, |r| r.0)]
                            .store
                            .as_ref()
                            .ok_or("no store")?;
                        return Err(format!(
                            "{} and {first} differ:\n{}: {rows:?}\n  {:?}\n{first}: {want:?}\n  {:?}",
                            dev.name,
                            dev.name,
                            state(store),
                            state(other)
                        ));
                    }
                    if &vv != want_vv {
                        return Err(format!("{} and {first} hold different commits", dev.name));
                    }
                }
            }
        }
        self.outcome.rows = reference.as_ref().map_or(0, |(_, rows, _)| {
            rows.iter().filter(|r| !r.starts_with('!')).count()
        });
        if let Some((d, _, _)) = reference {
            let store = self.devices[d].store.as_ref().ok_or("no store")?;
            self.outcome.set_aside = store.status().map_err(err)?.set_aside.len();
            self.outcome.conflicts = store.conflicts(false).map_err(err)?.len();
        }
        for dev in &self.devices {
            let store = dev.store.as_ref().ok_or("no store")?;
            let owners: BTreeSet<String> = dump(store, "SELECT DISTINCT owner FROM notes")?
                .into_iter()
                .collect();
            if owners.iter().any(|o| *o != dev.name) {
                return Err(format!("{} holds private notes of {owners:?}", dev.name));
            }
            let status = store.status().map_err(err)?;
            self.outcome.refused_commits += status.refused_commits;
        }
        Ok(())
    }
}

//! [`exchange`]: one group's session between two files on this machine, bytes handed
//! from one host to the other in memory: what `shoal merge` runs.

use shoal_core::GroupId;
use shoal_proto::{Config, ProtoError, Refusal, Session};
use shoal_store::Store;

use crate::admit::Trust;
use crate::error::HostError;
use crate::host::{Host, local_side};
use crate::summary::GroupSync;

/// What an exchange did, as each side counted it.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// The side that opened the session.
    pub initiator: GroupSync,
    /// The side that answered.
    pub responder: GroupSync,
    /// Why the responder refused the session, if it did (it does not know the group,
    /// or the initiator is not a member of it).
    pub refused: Option<Refusal>,
}

/// Runs a session of `group` between `a` (which opens it) and `b`, as two devices on
/// the network would, and applies what each was sent. A refusal at hello is no error:
/// it is in [`Exchange::refused`].
pub fn exchange(
    a: &mut Store,
    b: &mut Store,
    group: GroupId,
    config: Config,
) -> Result<Exchange, HostError> {
    let config = Config {
        carries_local_group: true,
        ..config
    };
    let local = local_side(a, group, None)?;
    let (a_id, b_id) = (a.device(), b.device());
    let mut hosts = [
        Host::new(
            Session::initiator(config, local, b_id, 0),
            Trust::SameMachine,
        ),
        Host::new(
            Session::responder(config, b_id, a_id, 0),
            Trust::SameMachine,
        ),
    ];
    let stores = [a, b];
    let mut failed: Option<HostError> = None;
    loop {
        let mut moved = false;
        for k in 0..2 {
            while failed.is_none()
                && let Some(task) = hosts[k].next_task()
            {
                moved = true;
                let done = task.run(stores[k]);
                if let Err(e) = hosts[k].complete(done) {
                    failed = Some(e);
                }
            }
            while let Some(bytes) = hosts[k].poll_transmit() {
                moved = true;
                if let Err(e) = hosts[1 - k].receive(&bytes, 0) {
                    failed.get_or_insert(e.into());
                }
            }
        }
        if hosts.iter_mut().all(Host::is_finished) {
            break;
        }
        if failed.is_none() && !moved {
            failed = Some(HostError::Protocol(ProtoError::Malformed {
                what: "local session",
                reason: "neither side had anything to do before the session ended".into(),
            }));
        }
        if let Some(e) = failed {
            // What either side kept is applied, as after a broken session.
            for k in 0..2 {
                if let Some(task) = hosts[k].salvage() {
                    let done = task.run(stores[k]);
                    hosts[k].complete(done)?;
                }
            }
            let refused = hosts[1].refusal().cloned();
            return match (refused, e) {
                (Some(refused), HostError::Protocol(_)) => Ok(Exchange {
                    initiator: hosts[0].summary(),
                    responder: hosts[1].summary(),
                    refused: Some(refused),
                }),
                (_, e) => Err(e),
            };
        }
    }
    Ok(Exchange {
        initiator: hosts[0].summary(),
        responder: hosts[1].summary(),
        refused: None,
    })
}

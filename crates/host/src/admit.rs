//! Who may sync a group: the responder's decision on a hello, made against its own
//! copy of the group's log.

use shoal_core::invite::InviteProblem;
use shoal_core::{GroupId, VersionVector};
use shoal_proto::{Fingerprint, Heads, Hello, Reason, Refusal};
use shoal_store::{Store, StoreError};
use tracing::info;

/// Whom a hello comes from, as far as the transport can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Another device over the network: only a group's members (or an invite's
    /// holder) are admitted, and never to the local group, which has no members.
    Network,
    /// Another file on this machine (`shoal merge`): every log is carried, the local
    /// group's and those of groups the receiver does not know yet (a device added to
    /// a group by its id learns of it so); the receiver judges each commit by the
    /// group's rules as it imports it, as it does every commit.
    SameMachine,
}

/// A welcome: this side's schema fingerprint and holdings of the group, and its name.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The fingerprint of the group's tables here.
    pub schema: Fingerprint,
    /// What this device holds of the group's log.
    pub have: VersionVector,
    /// The head of each author's chain, in the order of `have`.
    pub heads: Heads,
    /// The group's name.
    pub name: String,
}

/// Decides on `hello`, whose device the transport has authenticated: an unknown
/// group, a revoked device, a failed invite or a device that is not a member is
/// refused; an invite that checks out is redeemed (the joiner's role is signed here).
/// Local writes not yet sealed are sealed, so that they go out in this session.
/// Trusted as [`Trust::SameMachine`], every hello without an invite is admitted.
pub fn admit(
    store: &mut Store,
    hello: &Hello,
    trust: Trust,
) -> Result<Result<Admission, Refusal>, StoreError> {
    let refuse = |reason: Reason, detail: String| Ok(Err(Refusal { reason, detail }));
    let group = hello.group;
    if trust == Trust::SameMachine && hello.invite.is_none() {
        let name = match store.group_by_id(&group)? {
            Some(g) => g.name,
            None if group == GroupId::DEFAULT => "local".into(),
            None => group.short(),
        };
        return welcome(store, group, name).map(Ok);
    }
    let Some(g) = store.group_by_id(&group)? else {
        return if hello.invite.is_some() {
            refuse(
                Reason::Invite(InviteProblem::Unknown),
                "this device does not know the invite's group".into(),
            )
        } else {
            refuse(
                Reason::UnknownGroup,
                format!("group {} is not known here", group.short()),
            )
        };
    };
    if g.revoked_after(&hello.device).is_some() {
        return refuse(
            Reason::Revoked,
            format!(
                "device {} was revoked from group {:?}",
                hello.device.short(),
                g.name
            ),
        );
    }
    if let Some(claim) = &hello.invite {
        match store.redeem_invite(&group, &claim.invite, &claim.proof, &hello.device) {
            Ok(role) => {
                info!(device = %hello.device.short(), group = %g.name, role = role.as_str(), "invite redeemed")
            }
            Err(StoreError::Invite(p)) => return refuse(Reason::Invite(p), String::new()),
            Err(StoreError::Revoked { .. }) => return refuse(Reason::Revoked, String::new()),
            Err(e) => return Err(e),
        }
    } else if g.role(&hello.device).is_none() {
        return refuse(
            Reason::NotMember,
            format!(
                "device {} is not a member of group {:?}; ask an admin for an invite",
                hello.device.short(),
                g.name
            ),
        );
    }
    welcome(store, group, g.name).map(Ok)
}

fn welcome(store: &mut Store, group: GroupId, name: String) -> Result<Admission, StoreError> {
    store.seal()?;
    Ok(Admission {
        schema: Fingerprint(store.schema_fingerprint(&group)?),
        have: store.version_vector(&group)?,
        heads: Heads(store.head_tags(&group)?),
        name,
    })
}

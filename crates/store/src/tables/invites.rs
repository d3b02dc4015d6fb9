//! Invites this device made for its groups: created with a secret, a role, an expiry
//! and a number of uses, and redeemed by a joiner that proves it holds the secret.

use rusqlite::{Connection, OptionalExtension};
use shoal_core::invite::{InviteProblem, invite_proof, proofs_match};
use shoal_core::{DeviceId, GroupId, Role};

use crate::error::Result;

/// An invite, as made: everything a ticket needs but the inviter's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The invite's id.
    pub id: [u8; 16],
    /// The secret a joiner proves it holds.
    pub secret: [u8; 32],
    /// The group it admits to.
    pub group: GroupId,
    /// The group's name, for people.
    pub group_name: String,
    /// The role a joiner gets.
    pub role: Role,
    /// When it stops working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// How many devices may still join with it.
    pub uses: u32,
}

pub(crate) fn save(conn: &Connection, invite: &Invite, now_ms: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO shoal_invites(id, grp, secret, role, expires_ms, uses_left, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            &invite.id[..],
            &invite.group.0[..],
            &invite.secret[..],
            invite.role.as_str(),
            invite.expires_ms as i64,
            invite.uses,
            now_ms as i64,
        ],
    )?;
    Ok(())
}

/// A joiner's claim on an invite.
#[derive(Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub(crate) group: &'a GroupId,
    pub(crate) id: &'a [u8; 16],
    pub(crate) proof: &'a [u8; 32],
    pub(crate) joiner: &'a DeviceId,
    pub(crate) inviter: &'a DeviceId,
    /// The joiner's role now, if any.
    pub(crate) current: Option<Role>,
}

/// Checks a joiner's claim on an invite; on success one use is spent and the role
/// to give is returned. A joiner that already holds that role (its first redemption
/// went through but the session broke before it heard) is let in again without
/// spending a use, after the invite's expiry too. Runs inside the caller's transaction.
pub(crate) fn spend(
    conn: &Connection,
    claim: &Claim<'_>,
    now_ms: u64,
) -> Result<std::result::Result<Role, InviteProblem>> {
    let Claim {
        group,
        id,
        proof,
        joiner,
        inviter,
        current,
    } = *claim;
    type Row = (Vec<u8>, Vec<u8>, String, i64, i64);
    let row: Option<Row> = conn
        .query_row(
            "SELECT grp, secret, role, expires_ms, uses_left FROM shoal_invites WHERE id = ?1",
            [&id[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((grp, secret, role, expires_ms, uses_left)) = row else {
        return Ok(Err(InviteProblem::Unknown));
    };
    let (Ok(secret), Ok(role)) = (<[u8; 32]>::try_from(secret), role.parse::<Role>()) else {
        return Ok(Err(InviteProblem::Unknown));
    };
    if grp != group.0 {
        return Ok(Err(InviteProblem::Unknown));
    }
    if !proofs_match(proof, &invite_proof(&secret, group, joiner, inviter)) {
        return Ok(Err(InviteProblem::BadProof));
    }
    // A joiner let in before (whose session broke, or whose process died, before it
    // heard) is let in again, however late: it gains nothing it does not hold.
    if current.is_some_and(|c| c >= role) {
        return Ok(Ok(role));
    }
    if now_ms as i64 >= expires_ms {
        return Ok(Err(InviteProblem::Expired));
    }
    if uses_left <= 0 {
        return Ok(Err(InviteProblem::UsedUp));
    }
    conn.execute(
        "UPDATE shoal_invites SET uses_left = uses_left - 1 WHERE id = ?1",
        [&id[..]],
    )?;
    Ok(Ok(role))
}

//! Invites: how a device proves it holds an invite's secret, and why an invite can
//! be turned down.
//!
//! An admin's invite (id, 32-byte secret, role, expiry, uses) is kept in the admin's
//! file; the ticket carries it with the inviter's address and is signed by the inviter,
//! so an altered ticket is caught on the joiner's side before it dials. The joiner never
//! sends the secret: it proves it with a keyed hash bound to the group and both devices
//! (the transport authenticates the joiner's device), so a proof seen on the wire is of
//! no use to anyone else. The inviter spends a use and signs the joiner's role in one
//! transaction, and lets in again, without spending a use, a joiner that already holds
//! the invite's role (its session broke after the redemption).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::{DeviceId, GroupId};

/// Why an invite was not accepted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum InviteProblem {
    /// The inviter has no such invite (a forged or altered ticket, or one made on
    /// another database).
    Unknown,
    /// The invite's time is up.
    Expired,
    /// The invite has been used as often as it allows.
    UsedUp,
    /// The proof does not match the invite's secret.
    BadProof,
    /// The inviter may no longer add members to the group.
    InviterNotAdmin,
}

impl fmt::Display for InviteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InviteProblem::Unknown => {
                "the inviter has no such invite (forged or altered ticket, or made on another database)"
            }
            InviteProblem::Expired => "it has expired; ask for a new one",
            InviteProblem::UsedUp => "it has been used up; ask for a new one",
            InviteProblem::BadProof => "the ticket's secret does not match (altered ticket)",
            InviteProblem::InviterNotAdmin => "the inviter is no longer an admin of the group",
        })
    }
}

/// The proof an invitee shows: a keyed hash, under the invite's secret, of a domain
/// label, the group and both devices. It binds the claim to the joiner's
/// authenticated device, so a proof seen on the wire is useless to anyone else.
pub fn invite_proof(
    secret: &[u8; 32],
    group: &GroupId,
    joiner: &DeviceId,
    inviter: &DeviceId,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(b"shoal invite proof v1\0");
    h.update(&group.0);
    h.update(&joiner.0);
    h.update(&inviter.0);
    *h.finalize().as_bytes()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_bound_to_secret_group_and_both_devices() {
        let (s, g, j, i) = (
            [1; 32],
            GroupId([2; 32]),
            DeviceId([3; 32]),
            DeviceId([4; 32]),
        );
        let p = invite_proof(&s, &g, &j, &i);
        assert!(proofs_match(&p, &invite_proof(&s, &g, &j, &i)));
        assert!(!proofs_match(&p, &invite_proof(&[9; 32], &g, &j, &i)));
        assert!(!proofs_match(
            &p,
            &invite_proof(&s, &GroupId([9; 32]), &j, &i)
        ));
        assert!(!proofs_match(&p, &invite_proof(&s, &g, &i, &j)));
    }
}

//! Invite tickets: everything a new device needs to join a group, signed by the
//! inviter so that an altered ticket is caught before it is used.
//!
//! Text form: `shoalinvite1` followed by lowercase unpadded base32 of the postcard
//! body and the inviter's 64-byte Ed25519 signature over it.

use std::fmt;
use std::str::FromStr;

use iroh::EndpointAddr;
use serde::{Deserialize, Serialize};
use shoal_core::{DeviceId, DeviceKey, GroupId, Role};
use shoal_store::Invite;

use crate::error::NetError;

const PREFIX: &str = "shoalinvite1";
const SIGNATURE_CONTEXT: &[u8] = b"shoal invite ticket v1\0";
/// The longest ticket text accepted.
const MAX_TICKET_CHARS: usize = 4096;

/// An invite to a group, with where to find the inviter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteTicket {
    /// The inviting device; its key signs the ticket.
    pub inviter: DeviceId,
    /// Where the inviter listens.
    pub addr: EndpointAddr,
    /// The group.
    pub group: GroupId,
    /// The group's name.
    pub group_name: String,
    /// The invite's id.
    pub invite: [u8; 16],
    /// The secret the joiner proves it holds.
    pub secret: [u8; 32],
    /// The role the inviter offers (the inviter's record decides).
    pub role: Role,
    /// When the invite stops working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

impl InviteTicket {
    /// A ticket for `invite`, reachable at `addr`.
    pub fn new(invite: &Invite, inviter: DeviceId, addr: EndpointAddr) -> InviteTicket {
        InviteTicket {
            inviter,
            addr,
            group: invite.group,
            group_name: invite.group_name.clone(),
            invite: invite.id,
            secret: invite.secret,
            role: invite.role,
            expires_ms: invite.expires_ms,
        }
    }

    /// The ticket's text, signed with the inviter's key.
    pub fn encode(&self, key: &DeviceKey) -> String {
        let mut bytes = postcard::to_stdvec(self).unwrap_or_default();
        let signature = key.sign(&[SIGNATURE_CONTEXT, &bytes].concat());
        bytes.extend_from_slice(&signature);
        format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase()
        )
    }

    /// Whether the invite's time is up at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }
}

impl FromStr for InviteTicket {
    type Err = NetError;

    /// Reads a ticket and checks the inviter's signature. Expiry is for the caller.
    fn from_str(s: &str) -> Result<Self, NetError> {
        let s = s.trim();
        if s.len() > MAX_TICKET_CHARS {
            return Err(NetError::Ticket(format!(
                "{} characters is longer than any ticket",
                s.len()
            )));
        }
        let body = s.strip_prefix(PREFIX).ok_or_else(|| {
            NetError::Ticket(format!(
                "not a Shoal invite ticket (it should start with {PREFIX:?})"
            ))
        })?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                NetError::Ticket("it is damaged (not base32); copy it again whole".into())
            })?;
        let Some((signed, signature)) = bytes.split_last_chunk::<64>() else {
            return Err(NetError::Ticket(
                "it is too short; copy it again whole".into(),
            ));
        };
        let ticket: InviteTicket = postcard::from_bytes(signed)
            .map_err(|_| NetError::Ticket("it is damaged; copy it again whole".into()))?;
        if !ticket
            .inviter
            .verify(&[SIGNATURE_CONTEXT, signed].concat(), signature)
        {
            return Err(NetError::Ticket(
                "it was altered: its signature does not match the inviter; ask for a new one"
                    .into(),
            ));
        }
        if ticket.addr.id.as_bytes() != &ticket.inviter.0 {
            return Err(NetError::Ticket(
                "its address is not the inviter's; ask for a new one".into(),
            ));
        }
        Ok(ticket)
    }
}

impl fmt::Display for InviteTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invite to group {:?} as {} from device {}",
            self.group_name,
            self.role.as_str(),
            self.inviter.short()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(key: &DeviceKey) -> InviteTicket {
        let id = iroh::PublicKey::from_bytes(&key.id().0).expect("key");
        InviteTicket {
            inviter: key.id(),
            addr: EndpointAddr::new(id).with_ip_addr("127.0.0.1:4433".parse().expect("addr")),
            group: GroupId([3; 32]),
            group_name: "desk".into(),
            invite: [4; 16],
            secret: [5; 32],
            role: Role::Member,
            expires_ms: 1_000,
        }
    }

    #[test]
    fn a_ticket_reads_back_as_written() {
        let key = DeviceKey::from_seed([1; 32]);
        let t = ticket(&key);
        let text = t.encode(&key);
        assert!(text.starts_with(PREFIX));
        assert_eq!(text.parse::<InviteTicket>().expect("parse"), t);
    }

    #[test]
    fn an_altered_ticket_is_refused() {
        let key = DeviceKey::from_seed([1; 32]);
        let text = ticket(&key).encode(&key);
        // Change one character in the middle of the body.
        let mut chars: Vec<char> = text.chars().collect();
        let i = PREFIX.len() + 40;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let altered: String = chars.into_iter().collect();
        let err = altered.parse::<InviteTicket>().expect_err("refused");
        assert!(
            err.to_string().contains("altered") || err.to_string().contains("damaged"),
            "{err}"
        );
        // A ticket signed by someone else than the inviter it names.
        let mut forged = ticket(&key);
        forged.role = Role::Admin;
        let other = DeviceKey::from_seed([2; 32]);
        let err = forged
            .encode(&other)
            .parse::<InviteTicket>()
            .expect_err("refused");
        assert!(err.to_string().contains("altered"), "{err}");
        assert!("hello".parse::<InviteTicket>().is_err());
    }
}

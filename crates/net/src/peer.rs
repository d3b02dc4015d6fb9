//! Naming a peer: a full address, a device whose address was remembered, or a plain
//! `host:port` where some member listens (a static peer, e.g. a Tailscale address).

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use iroh::{EndpointAddr, PublicKey};
use iroh_tickets::endpoint::EndpointTicket;

use crate::error::NetError;

/// A peer as given by a person or found in configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// A device and where it listens (`shoal serve` prints one as an endpoint ticket;
    /// `DEVICE@HOST:PORT` also works).
    Addr(EndpointAddr),
    /// A device id (or a unique prefix of one), reached at its remembered address.
    Device(String),
    /// An address where some member of the group listens; each member is tried.
    Socket(SocketAddr),
}

impl PeerSpec {
    /// The text form this crate remembers an address in.
    pub fn remembered(addr: &EndpointAddr) -> String {
        EndpointTicket::new(addr.clone()).to_string()
    }
}

fn bad(input: &str, reason: impl Into<String>) -> NetError {
    NetError::Peer {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

fn resolve(input: &str, host_port: &str) -> Result<SocketAddr, NetError> {
    host_port
        .to_socket_addrs()
        .map_err(|e| bad(input, format!("cannot resolve {host_port:?}: {e}")))?
        .next()
        .ok_or_else(|| bad(input, format!("{host_port:?} resolves to nothing")))
}

impl FromStr for PeerSpec {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let s = s.trim();
        if s.starts_with("shoalinvite") {
            return Err(bad(
                s,
                "that is an invite ticket; use `shoal join DB TICKET` with it",
            ));
        }
        if s.starts_with("endpoint") {
            let t: EndpointTicket = s
                .parse()
                .map_err(|e| bad(s, format!("not a valid endpoint ticket: {e}")))?;
            return Ok(PeerSpec::Addr(t.endpoint_addr().clone()));
        }
        if let Some((id, host)) = s.split_once('@') {
            let id: PublicKey = id
                .parse()
                .map_err(|_| bad(s, "the part before @ must be a device id (64 hex digits)"))?;
            return Ok(PeerSpec::Addr(
                EndpointAddr::new(id).with_ip_addr(resolve(s, host)?),
            ));
        }
        if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(PeerSpec::Device(s.to_ascii_lowercase()));
        }
        if s.contains(':') {
            return Ok(PeerSpec::Socket(resolve(s, s)?));
        }
        Err(bad(
            s,
            "expected an endpoint ticket, DEVICE@HOST:PORT, a device id, or HOST:PORT",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_peer_reads() {
        let device = shoal_core::DeviceKey::from_seed([7; 32]).id();
        let id = PublicKey::from_bytes(&device.0).expect("a real key");
        let addr = EndpointAddr::new(id).with_ip_addr("127.0.0.1:5000".parse().expect("addr"));
        let ticket = PeerSpec::remembered(&addr);
        assert_eq!(
            ticket.parse::<PeerSpec>().expect("ticket"),
            PeerSpec::Addr(addr.clone())
        );
        assert_eq!(
            format!("{id}@127.0.0.1:5000")
                .parse::<PeerSpec>()
                .expect("at"),
            PeerSpec::Addr(addr)
        );
        assert_eq!(
            "ABCD12".parse::<PeerSpec>().expect("device"),
            PeerSpec::Device("abcd12".into())
        );
        assert_eq!(
            "127.0.0.1:7000".parse::<PeerSpec>().expect("socket"),
            PeerSpec::Socket("127.0.0.1:7000".parse().expect("addr"))
        );
        assert!("shoalinvite1abc".parse::<PeerSpec>().is_err());
        assert!("nonsense".parse::<PeerSpec>().is_err());
    }
}

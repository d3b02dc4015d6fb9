//! Identity: devices and groups (an Ed25519 key pair per device, its public key as
//! id), and the sequence numbers that name an author's commits.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// An author's sequence number: 1 for its first commit, then one more each time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Seq(pub u64);

/// A device's public key, which is also its identity everywhere in Shoal. Its 32
/// bytes on the wire and in commits; its 64 hex digits in JSON and other text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 32]);

/// A device's secret key. Never stored in the database, only in the data directory.
pub struct DeviceKey(SigningKey);

/// The id of a group: what is shared with whom. Written as [`DeviceId`] is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub [u8; 32]);

impl DeviceId {
    /// The short form shown to people: the first 10 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..5])
    }

    /// Checks an Ed25519 signature made by this device over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &signature).is_ok()
    }
}

impl DeviceKey {
    /// Rebuilds a key from its 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte secret seed, for storing in the data directory.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public identity of this device.
    pub fn id(&self) -> DeviceId {
        DeviceId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` with this device's key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl GroupId {
    /// The group every database belongs to until it creates or joins others.
    pub const DEFAULT: GroupId = GroupId([0; 32]);

    /// The short form shown to people: the first 10 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..5])
    }
}

impl Default for GroupId {
    /// The local group.
    fn default() -> Self {
        GroupId::DEFAULT
    }
}

/// Text that does not name what it should: an id, a role.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?} is not valid: expected {expected}")]
pub struct BadId {
    /// Which kind of id.
    pub what: &'static str,
    /// The text given.
    pub input: String,
    /// What a valid one looks like.
    pub expected: &'static str,
}

fn parse_hex32(what: &'static str, s: &str) -> Result<[u8; 32], BadId> {
    let bad = || BadId {
        what,
        input: s.to_owned(),
        expected: "64 hexadecimal digits",
    };
    let bytes = hex::decode(s).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

impl FromStr for DeviceId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32("device id", s).map(DeviceId)
    }
}

impl FromStr for GroupId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32("group id", s).map(GroupId)
    }
}

/// Ids in a binary format (postcard, in commits and on the wire) are the bytes of a
/// newtype struct, as a derived implementation writes them; in a text format (JSON)
/// they are their hex.
macro_rules! bytes_or_hex {
    ($id:ident, $name:literal) => {
        impl Serialize for $id {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_newtype_struct($name, &self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $id {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(rename = $name)]
                struct Raw([u8; 32]);
                if d.is_human_readable() {
                    let text = std::borrow::Cow::<str>::deserialize(d)?;
                    text.parse().map_err(serde::de::Error::custom)
                } else {
                    Raw::deserialize(d).map(|r| $id(r.0))
                }
            }
        }
    };
}

bytes_or_hex!(DeviceId, "DeviceId");
bytes_or_hex!(GroupId, "GroupId");

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", &hex::encode(self.0)[..10])
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey(for {:?})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_bytes_on_the_wire_and_their_hex_in_json() {
        let (d, g) = (DeviceId([0xab; 32]), GroupId([7; 32]));
        // What the derived implementations wrote, which every stored commit holds.
        #[derive(Serialize)]
        struct Raw([u8; 32]);
        let wire = postcard::to_allocvec(&d).expect("postcard");
        assert_eq!(wire, postcard::to_allocvec(&Raw(d.0)).expect("postcard"));
        assert_eq!(postcard::from_bytes::<DeviceId>(&wire).expect("back"), d);
        let wire = postcard::to_allocvec(&g).expect("postcard");
        assert_eq!(postcard::from_bytes::<GroupId>(&wire).expect("back"), g);
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).expect("back"), d);
        let json = serde_json::to_string(&g).expect("json");
        assert_eq!(serde_json::from_str::<GroupId>(&json).expect("back"), g);
        // A map keyed by device, such as a version vector, is a JSON object.
        let vv: std::collections::BTreeMap<DeviceId, Seq> = [(d, Seq(3))].into();
        let json = serde_json::to_string(&vv).expect("json");
        assert_eq!(json, format!("{{\"{}\":3}}", "ab".repeat(32)));
        let err = serde_json::from_str::<DeviceId>("\"abc\"").expect_err("short");
        assert!(err.to_string().contains("64 hexadecimal digits"), "{err}");
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let key = DeviceKey::from_seed([7; 32]);
        let other = DeviceKey::from_seed([8; 32]);
        let sig = key.sign(b"hello");
        assert!(key.id().verify(b"hello", &sig));
        assert!(!key.id().verify(b"hellp", &sig));
        assert!(!other.id().verify(b"hello", &sig));
        assert_eq!(DeviceKey::from_seed(key.seed()).id(), key.id());
    }

    #[test]
    fn ids_parse_from_their_display_form_and_reject_garbage() {
        let id = DeviceKey::from_seed([1; 32]).id();
        assert_eq!(id.to_string().parse::<DeviceId>(), Ok(id));
        assert!(matches!("abc".parse::<DeviceId>(), Err(BadId { .. })));
        assert!("zz".repeat(32).parse::<GroupId>().is_err());
    }
}

//! Members tell each other where the other members are, so that two devices
//! invited by the same admin find each other without a ticket between them.
//!
//! On every connection a daemon keeps, it sends (on a unidirectional stream) the
//! remembered addresses of the members of the groups both sides are in, and reads
//! the same from the other side. What it reads is checked before it is kept: at most
//! [`MAX_BYTES`] and [`MAX_ENTRIES`], only members of a group the teller and this
//! device share, only addresses whose key is the member's own (so the transport
//! would refuse a wrong one anyway), and never over the address of a member that is
//! connected now.

use serde::{Deserialize, Serialize};
use shoal_core::DeviceId;

/// The largest address list read from one member.
pub(crate) const MAX_BYTES: usize = 64 << 10;

/// The most addresses read from one list.
pub(crate) const MAX_ENTRIES: usize = 256;

/// Where some members can be reached, as one member tells another.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AddressBook {
    /// Each member and its address (an endpoint ticket).
    pub(crate) entries: Vec<(DeviceId, String)>,
}

impl AddressBook {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads a list from a member; `None` when it is not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<AddressBook> {
        if bytes.len() > MAX_BYTES {
            return None;
        }
        let mut book: AddressBook = postcard::from_bytes(bytes).ok()?;
        book.entries.truncate(MAX_ENTRIES);
        Some(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_round_trips_and_garbage_or_an_oversized_one_is_refused() {
        let book = AddressBook {
            entries: vec![(DeviceId([1; 32]), "endpointabc".into())],
        };
        assert_eq!(AddressBook::decode(&book.encode()), Some(book));
        assert_eq!(AddressBook::decode(&[0xff, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(AddressBook::decode(&vec![0; MAX_BYTES + 1]), None);
        let many = AddressBook {
            entries: (0..1000u32)
                .map(|i| (DeviceId([(i % 250) as u8; 32]), String::new()))
                .collect(),
        };
        assert_eq!(
            AddressBook::decode(&many.encode()).map(|b| b.entries.len()),
            Some(MAX_ENTRIES)
        );
    }
}

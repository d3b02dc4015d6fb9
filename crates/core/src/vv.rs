//! Version vectors: for each author, the highest sequence number held without gaps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::DeviceId;
use crate::identity::Seq;

/// What a database has: author → highest contiguous seq.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<DeviceId, Seq>);

impl VersionVector {
    /// The highest contiguous seq held for `author`; 0 when none.
    pub fn get(&self, author: &DeviceId) -> Seq {
        self.0.get(author).copied().unwrap_or_default()
    }

    /// Records that everything up to `seq` by `author` is held.
    pub fn set(&mut self, author: DeviceId, seq: Seq) {
        self.0.insert(author, seq);
    }

    /// Whether this vector holds everything `other` does.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(a, s)| self.get(a) >= *s)
    }

    /// The total number of commits counted.
    pub fn total(&self) -> u64 {
        self.0.values().map(|s| s.0).sum()
    }

    /// How many commits this vector holds that `other` lacks.
    pub fn ahead_of(&self, other: &VersionVector) -> u64 {
        self.0
            .iter()
            .map(|(a, s)| s.0.saturating_sub(other.get(a).0))
            .sum()
    }

    /// Takes in everything `other` holds.
    pub fn merge(&mut self, other: &VersionVector) {
        for (a, s) in &other.0 {
            if self.get(a) < *s {
                self.set(*a, *s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_compares_every_author() {
        let (a, b) = (DeviceId([1; 32]), DeviceId([2; 32]));
        let mut x = VersionVector::default();
        x.set(a, Seq(3));
        let mut y = VersionVector::default();
        y.set(a, Seq(2));
        assert!(x.covers(&y) && !y.covers(&x));
        y.set(b, Seq(1));
        assert!(!x.covers(&y));
        assert_eq!(y.total(), 3);
    }

    #[test]
    fn ahead_of_counts_what_the_other_lacks_and_merge_takes_it_in() {
        let (a, b) = (DeviceId([1; 32]), DeviceId([2; 32]));
        let mut x = VersionVector::default();
        x.set(a, Seq(5));
        let mut y = VersionVector::default();
        y.set(a, Seq(2));
        y.set(b, Seq(4));
        assert_eq!(x.ahead_of(&y), 3);
        assert_eq!(y.ahead_of(&x), 4);
        x.merge(&y);
        assert_eq!((x.get(&a), x.get(&b)), (Seq(5), Seq(4)));
        assert_eq!(x.ahead_of(&y), 3);
        assert_eq!(y.ahead_of(&x), 0);
    }
}

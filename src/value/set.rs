//! [`Set`]: a Python `set` or `frozenset`, an insertion-ordered
//! [`IndexSet`] that remembers the order-free hash of its members once
//! computed (`hash.rs`), forgotten on any change.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use indexmap::IndexSet;

use super::hash::unordered;
use super::Value;

/// What [`Set::members_hash`] holds while no sum is known (a real sum equal
/// to it is only recomputed each time).
const UNKNOWN: u64 = u64::MAX;

/// A Python `set` or `frozenset`: an insertion-ordered set (an
/// [`IndexSet`], boxed so a [`Value`] stays 32 bytes). Derefs to the set.
pub struct Set {
    members: Box<IndexSet<Value>>,
    /// The members' order-free hash, or [`UNKNOWN`]: a frozenset inside a
    /// frozenset inside a key is then hashed once, not once per level.
    /// Atomic (relaxed) so that a `Set` stays `Sync`; any value stored is
    /// the one true sum, so a race only computes it twice.
    hash: AtomicU64,
}

impl Set {
    /// An empty set.
    pub fn new() -> Self {
        Set::from_members(IndexSet::new())
    }

    /// An empty set with room for `n` members.
    pub fn with_capacity(n: usize) -> Self {
        Set::from_members(IndexSet::with_capacity(n))
    }

    fn from_members(members: IndexSet<Value>) -> Self {
        Set {
            members: Box::new(members),
            hash: AtomicU64::new(UNKNOWN),
        }
    }

    /// The order-free hash of the members, computed once until the set
    /// changes.
    pub(super) fn members_hash(&self) -> u64 {
        let known = self.hash.load(Relaxed);
        if known != UNKNOWN {
            return known;
        }
        let h = unordered(self.members.iter());
        self.hash.store(h, Relaxed);
        h
    }
}

impl Default for Set {
    fn default() -> Self {
        Set::new()
    }
}

impl Clone for Set {
    fn clone(&self) -> Self {
        Set {
            members: self.members.clone(),
            hash: AtomicU64::new(self.hash.load(Relaxed)),
        }
    }
}

impl PartialEq for Set {
    fn eq(&self, other: &Self) -> bool {
        self.members == other.members
    }
}

impl Eq for Set {}

impl fmt::Debug for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Set").field(&self.members).finish()
    }
}

impl Deref for Set {
    type Target = IndexSet<Value>;
    fn deref(&self) -> &Self::Target {
        &self.members
    }
}

/// Any change goes through here, and forgets the members' hash.
impl DerefMut for Set {
    fn deref_mut(&mut self) -> &mut Self::Target {
        *self.hash.get_mut() = UNKNOWN;
        &mut self.members
    }
}

/// Collects anything that converts into [`Value`]; a repeated member keeps
/// its first place.
impl<T: Into<Value>> FromIterator<T> for Set {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Set::from_members(iter.into_iter().map(Into::into).collect())
    }
}

impl<'a> IntoIterator for &'a Set {
    type Item = &'a Value;
    type IntoIter = indexmap::set::Iter<'a, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.members.iter()
    }
}

impl IntoIterator for Set {
    type Item = Value;
    type IntoIter = indexmap::set::IntoIter<Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.members.into_iter()
    }
}

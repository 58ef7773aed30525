//! The memory budget of one decode: every byte the decoded value may take
//! is charged before it is allocated, so a line expands to at most
//! [`decode_budget`] bytes whatever its back-references say.
//!
//! The charges model a [`Value`] tree, the largest form a Rust type
//! commonly gives the same data; a typed `T` is charged the same.

use std::mem::size_of;

use crate::error::DecodeErrorKind;
use crate::Value;

use super::error::DeError;

/// Bytes of memory the decoded value may take per input byte: one `N` byte
/// is a list slot (a [`Value`], room for its parent's growth included).
const BUDGET_PER_BYTE: usize = 80;

/// Bytes every decode may take whatever its length (small inputs, a few
/// big ints, small dicts).
const BUDGET_BASE: usize = 512 << 10;

/// The most heap memory decoding `len` bytes may charge: the value it
/// builds, its reservations and the decoder's own tables. A line that would
/// take more is refused with [`DecodeErrorKind::TooLarge`].
pub fn decode_budget(len: usize) -> usize {
    len.saturating_mul(BUDGET_PER_BYTE)
        .saturating_add(BUDGET_BASE)
}

/// One item of a list, tuple, set or frozenset: a [`Value`] in its parent's
/// buffer, twice over (a buffer grown by doubling is at most half empty).
pub(crate) const ITEM: usize = 2 * size_of::<Value>();

/// One member of a set beyond its [`ITEM`]: the hash table's bucket (hash
/// and value) and index, twice over for growth.
pub(crate) const MEMBER: usize = 2 * (size_of::<(u64, Value)>() + 9);

/// What a heap allocation costs beyond its bytes (malloc's header and
/// rounding), charged once per string.
const ALLOC_OVERHEAD: usize = 16;

/// A dict's fixed cost: its boxed map header.
pub(crate) const DICT: usize = 96;

/// One dict entry at its worst: the bucket (hash, key, value) three times
/// over (capacity doubles, and the old buffer lives while it is copied)
/// plus its index (8 bytes and a control byte per bucket, at most 8/7
/// buckets per entry, old and new table).
pub(crate) const ENTRY: usize = 3 * size_of::<(u64, Value, Value)>() + 32;

/// A dict's cost on its first entry (the control bytes' tail group).
pub(crate) const MAP_BASE: usize = 64;

/// One slot of the reference table (a `usize`), three times over for growth.
pub(crate) const SLOT: usize = 3 * size_of::<usize>();

/// What a str or bytes of `len` bytes costs on the heap.
pub(crate) fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.saturating_add(ALLOC_OVERHEAD)
    }
}

/// What a big int of `digits` base-2^15 digits costs: its payload, and the
/// value holding it (a `BigInt`'s limbs, or the decimal text a JSON value
/// holds: 15 bits make at most 4.52 decimal digits).
pub(crate) fn big_int(digits: usize) -> usize {
    heap(2 * digits + 1) + heap(5 * digits + 2) + size_of::<Value>()
}

/// The budget left of one decode.
pub(crate) struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    /// The whole budget for `len` input bytes.
    pub(crate) fn new(len: usize) -> Self {
        let limit = decode_budget(len);
        Budget { left: limit, limit }
    }

    /// Takes `cost` bytes, before they are allocated; `at` is where the
    /// error points if they are not there.
    pub(crate) fn charge(&mut self, cost: usize, at: usize) -> Result<(), DeError> {
        match self.left.checked_sub(cost) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(DeError::at(
                at,
                DecodeErrorKind::TooLarge { limit: self.limit },
            )),
        }
    }
}

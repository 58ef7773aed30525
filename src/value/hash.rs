//! `Hash` for [`Value`], consistent with its `==`: every kind hashed whole,
//! dicts and sets independently of order.
//!
//! Dicts and sets hash as the sum of their members' hashes (a dict's
//! key-value pairs), each member hashed with keys chosen at random once per
//! process ([`member_hash`]), so a peer cannot compute member hashes ahead
//! and send many different sets with one sum. A set keeps its sum once
//! computed (`set.rs`), so a frozenset nested in a frozenset nested in a
//! dict key is walked once, not once per enclosing level: hashing the keys
//! of a decoded message costs time linear in its size.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use super::{float_key, str_hash, Value};

/// One member's hash under the process's random keys.
pub(super) fn member_hash<T: Hash>(member: T) -> u64 {
    static MEMBERS: OnceLock<RandomState> = OnceLock::new();
    MEMBERS.get_or_init(RandomState::new).hash_one(member)
}

/// The order-free hash of a set's members or a dict's pairs: their count
/// and the sum of their [`member_hash`]es, as one `u64`.
pub(super) fn unordered<T: Hash, I: Iterator<Item = T>>(items: I) -> u64 {
    let (mut n, mut sum) = (0u64, 0u64);
    for item in items {
        sum = sum.wrapping_add(member_hash(item));
        n += 1;
    }
    member_hash((n, sum))
}

/// Each variant hashes a tag first, except `Str`, which hashes exactly as
/// its `str` does: `dict.get("key")` hashes the `&str` with `str`'s own
/// `Hash`, so any tag here would make that lookup miss. Every variant
/// hashes all of its content (a dict its keys and values), so values that
/// differ anywhere rarely collide.
impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::None => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                b.hash(state);
            }
            Value::Int(i) => {
                state.write_u8(2);
                i.hash(state);
            }
            Value::BigInt(b) => {
                state.write_u8(3);
                b.hash(state);
            }
            Value::Float(f) => {
                state.write_u8(4);
                state.write_u64(float_key(*f));
            }
            Value::Complex { re, im } => {
                state.write_u8(5);
                state.write_u64(float_key(*re));
                state.write_u64(float_key(*im));
            }
            Value::Str(s) => str_hash(s, state),
            Value::SurrogateStr(s) => {
                state.write_u8(7);
                s.hash(state);
            }
            Value::Bytes(b) => {
                state.write_u8(8);
                b.hash(state);
            }
            Value::Tuple(items) => {
                state.write_u8(9);
                items.hash(state);
            }
            Value::List(items) => {
                state.write_u8(10);
                items.hash(state);
            }
            Value::Dict(d) => {
                // Keys and values: dicts that differ only in their values
                // must not all collide.
                state.write_u8(11);
                state.write_u64(unordered(d.iter()));
            }
            Value::Set(s) => {
                state.write_u8(12);
                state.write_u64(s.members_hash());
            }
            Value::FrozenSet(s) => {
                state.write_u8(13);
                state.write_u64(s.members_hash());
            }
        }
    }
}

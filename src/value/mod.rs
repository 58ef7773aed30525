//! Python's values: the data model both formats carry.
//!
//! [`Value`] is what a Python peer's message is, whatever it holds: `None`,
//! `bool`, `int` of any size, `float`, `complex`, `str` (lone surrogates
//! included), `bytes`, `tuple`, `list`, `dict` with any hashable keys,
//! `set` and `frozenset`. It is one `T` among others for
//! [`Reactor::send`](crate::Reactor::send) and
//! [`Reactor::recv`](crate::Reactor::recv); the formats read and write it
//! exactly (see the README's type table).
//!
//! # Equality
//!
//! Structural and exact, so that a round trip can be checked with `==`:
//! the variants must match (`Int(1)`, `Float(1.0)` and `Bool(true)` differ,
//! unlike in Python), floats compare by bit pattern with every NaN equal to
//! every NaN (so `-0.0 != 0.0` and `nan == nan`, unlike in Python), and dicts
//! and sets compare regardless of order (as in Python). [`Value`] is `Eq`
//! and `Hash` consistently with that, so any value can be a dict key or a set
//! member.

pub(crate) mod magic;
mod serde;
mod text;

use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

use indexmap::{IndexMap, IndexSet};
use num_bigint::BigInt;

pub use text::SurrogateStr;

/// One Python value. See the [module docs](self) for equality.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// `None`.
    #[default]
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int` that fits `i64` (every such int is this variant).
    Int(i64),
    /// An `int` outside `i64` (never one that fits: those are [`Value::Int`]).
    BigInt(Box<BigInt>),
    /// A `float`.
    Float(f64),
    /// A `complex`.
    Complex {
        /// The real part.
        re: f64,
        /// The imaginary part.
        im: f64,
    },
    /// A `str` that is valid Unicode (every such str is this variant).
    Str(String),
    /// A `str` holding at least one lone surrogate, which Rust's `String`
    /// cannot hold.
    SurrogateStr(SurrogateStr),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `list`.
    List(Vec<Value>),
    /// A `dict`: insertion order kept, keys any value.
    Dict(Dict),
    /// A `set`: insertion order kept (the order the peer wrote it in).
    Set(Set),
    /// A `frozenset`.
    FrozenSet(Set),
}

/// A Python `dict`: an insertion-ordered map (an [`IndexMap`], boxed so a
/// [`Value`] stays 32 bytes). Inserting an existing key keeps its place
/// and replaces its value, as Python does. Derefs to the map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dict(Box<IndexMap<Value, Value>>);

/// A Python `set` or `frozenset`: an insertion-ordered set (an
/// [`IndexSet`], boxed). Derefs to the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set(Box<IndexSet<Value>>);

impl Dict {
    /// An empty dict.
    pub fn new() -> Self {
        Dict::default()
    }

    /// An empty dict with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Dict(Box::new(IndexMap::with_capacity(n)))
    }
}

impl Set {
    /// An empty set.
    pub fn new() -> Self {
        Set::default()
    }

    /// An empty set with room for `n` members.
    pub fn with_capacity(n: usize) -> Self {
        Set(Box::new(IndexSet::with_capacity(n)))
    }
}

impl Deref for Dict {
    type Target = IndexMap<Value, Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Dict {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Deref for Set {
    type Target = IndexSet<Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Set {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(Value, Value)> for Dict {
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Self {
        Dict(Box::new(iter.into_iter().collect()))
    }
}

impl FromIterator<Value> for Set {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        Set(Box::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Dict {
    type Item = (&'a Value, &'a Value);
    type IntoIter = indexmap::map::Iter<'a, Value, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Dict {
    type Item = (Value, Value);
    type IntoIter = indexmap::map::IntoIter<Value, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Set {
    type Item = &'a Value;
    type IntoIter = indexmap::set::Iter<'a, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Set {
    type Item = Value;
    type IntoIter = indexmap::set::IntoIter<Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Hashes sets and dicts independently of order: each member is hashed
/// alone and the hashes are summed, so equal (reordered) sets hash equal.
fn unordered_hash<'a, H: Hasher, I: Iterator<Item = &'a Value>>(state: &mut H, items: I) {
    let mut sum = 0u64;
    let mut n = 0usize;
    for item in items {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        item.hash(&mut h);
        sum = sum.wrapping_add(h.finish());
        n += 1;
    }
    state.write_usize(n);
    state.write_u64(sum);
}

/// The bits a float compares and hashes by: all NaNs are one value.
fn float_key(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else {
        f.to_bits()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (BigInt(a), BigInt(b)) => a == b,
            (Float(a), Float(b)) => float_key(*a) == float_key(*b),
            (Complex { re: a, im: b }, Complex { re: c, im: d }) => {
                float_key(*a) == float_key(*c) && float_key(*b) == float_key(*d)
            }
            (Str(a), Str(b)) => a == b,
            (SurrogateStr(a), SurrogateStr(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Tuple(a), Tuple(b)) | (List(a), List(b)) => a == b,
            (Dict(a), Dict(b)) => a == b,
            (Set(a), Set(b)) | (FrozenSet(a), FrozenSet(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// The tag each variant hashes first; `Str` uses `STR_TAG` so that a
/// `&str` can look up a str key without building a `Value`.
const STR_TAG: u8 = 6;

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
                state.write_u8(11);
                unordered_hash(state, d.keys());
            }
            Value::Set(s) => {
                state.write_u8(12);
                unordered_hash(state, s.iter());
            }
            Value::FrozenSet(s) => {
                state.write_u8(13);
                unordered_hash(state, s.iter());
            }
        }
    }
}

fn str_hash<H: Hasher>(s: &str, state: &mut H) {
    state.write_u8(STR_TAG);
    s.hash(state);
}

/// A str key, looked up without building a [`Value`]: `dict.get("key")`.
impl indexmap::Equivalent<Value> for str {
    fn equivalent(&self, key: &Value) -> bool {
        matches!(key, Value::Str(s) if s == self)
    }
}

/// Hashes exactly as the [`Value::Str`] holding the same text.
#[derive(Debug)]
struct StrKey<'a>(&'a str);

impl Hash for StrKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        str_hash(self.0, state);
    }
}

impl indexmap::Equivalent<Value> for StrKey<'_> {
    fn equivalent(&self, key: &Value) -> bool {
        matches!(key, Value::Str(s) if s == self.0)
    }
}

impl Dict {
    /// The value of the str key `key`, looked up without building a key value.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.0.get(&StrKey(key))
    }
}

impl Value {
    /// A `str` from Python's code points: [`Value::Str`] when they are valid
    /// Unicode, [`Value::SurrogateStr`] when some are lone surrogates.
    /// `None` if one is past U+10FFFF.
    pub fn from_code_points<I: IntoIterator<Item = u32>>(points: I) -> Option<Value> {
        text::from_code_points(points)
    }

    /// A `str` from generalized UTF-8 (UTF-8 that may also encode lone
    /// surrogates, as Python's `"surrogatepass"` error handler writes them:
    /// what marshal carries). `None` if the bytes are not that.
    pub fn from_generalized_utf8(bytes: &[u8]) -> Option<Value> {
        text::from_generalized_utf8(bytes)
    }

    /// A Python `int` from a big integer: [`Value::Int`] when it fits `i64`.
    pub fn from_bigint(n: BigInt) -> Value {
        match i64::try_from(&n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(Box::new(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    #[test]
    fn equality_is_exact_and_order_free_for_dicts_and_sets() {
        assert_ne!(Value::Int(1), Value::Float(1.0));
        assert_ne!(Value::Int(1), Value::Bool(true));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
        assert_eq!(Value::Float(f64::NAN), Value::Float(-f64::NAN));
        assert_ne!(Value::Tuple(vec![]), Value::List(vec![]));
        let a: Dict = [
            (Value::Int(1), Value::None),
            (Value::Str("k".into()), Value::None),
        ]
        .into_iter()
        .collect();
        let b: Dict = a
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(Value::Dict(a.clone()), Value::Dict(b.clone()));
        let hash = |v: &Value| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&Value::Dict(a)), hash(&Value::Dict(b)));
        assert_ne!(
            Value::Set([Value::Int(1)].into_iter().collect()),
            Value::FrozenSet([Value::Int(1)].into_iter().collect())
        );
    }

    #[test]
    fn str_keys_are_found_by_str() {
        let d: Dict = [(Value::Str("k".into()), Value::Int(5))]
            .into_iter()
            .collect();
        assert_eq!(d.get_str("k"), Some(&Value::Int(5)));
        assert_eq!(d.get("k"), Some(&Value::Int(5)));
        assert_eq!(d.get_str("x"), None);
    }

    #[test]
    fn ints_are_normalized() {
        assert_eq!(Value::from_bigint(BigInt::from(7)), Value::Int(7));
        assert!(matches!(
            Value::from_bigint(BigInt::from(u64::MAX)),
            Value::BigInt(_)
        ));
    }
}

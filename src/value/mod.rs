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
//! member. The hash covers the whole value (a dict's keys and values, a
//! tuple's items), so keys that differ only deep inside do not collide, and
//! hashing costs time linear in the value's size (a set remembers its
//! members' hash until it changes, so nested frozensets are not walked
//! again per level). (The formats refuse the
//! keys Python cannot hash, a list or dict inside a key, as Python does.) Comparing with a Rust value is exact the same way: `v == 1` holds
//! for `Int(1)` only, `v == "s"` for `Str("s")`, `v == 2.5` for `Float(2.5)`.
//!
//! # Building
//!
//! [`py!`](crate::py) writes Python literals (`py!({"k": [1, (2,), None],
//! 3: set[4]})`); any Rust value with `Into<Value>` converts or interpolates:
//! every integer type (normalized: [`Value::Int`] when it fits `i64`),
//! `f32`/`f64`, `bool`, `&str`/`String`/`char`, `BigInt`, `Option<T>`
//! (`None` is `None`), `Vec<T>` and `[T; N]` (a `list`), Rust tuples up to
//! eight items (a `tuple`), `HashMap`/`BTreeMap`/`IndexMap` (a `dict`),
//! `HashSet`/`BTreeSet`/`IndexSet` (a `set`), [`Dict`] and [`Set`], and
//! `&Value` (a clone);
//! `collect()` into a `Value` makes a `list`. Two choices to know:
//!
//! * A byte slice or array *reference* (`&[u8]`, `&[u8; N]`, so a literal
//!   `b"abc"`) is `bytes`; a `Vec<u8>` is a `list` of ints, as serde and
//!   `serde_json::json!` treat it. [`Value::bytes`] makes `bytes` of a
//!   `Vec<u8>`.
//! * There is no `From<()>`: Rust's `()` is serde's unit, which both formats
//!   write as `None`, but Python's `()` is the empty tuple. Write
//!   [`Value::None`] or `py!(())` (the empty tuple).
//!
//! # Reading
//!
//! As `serde_json::Value` is read: `v["key"]` (a `str` key of a dict),
//! `v[0]` (an item of a list or tuple, or the `int` key `0` of a dict, as
//! `d[0]` in Python) and `v[&key]` (any key) never panic: a missing key, an
//! index past the end or a value of another kind gives a reference to a
//! static `None`, so `msg["a"]["b"][0].as_i64()` is `None` unless every
//! step exists. A stored `None` reads the same; [`Value::get`] tells them
//! apart. The `as_*` accessors ([`Value::as_i64`], [`Value::as_str`],
//! [`Value::as_seq`], [`Value::as_dict`], ...) answer `None` for any other
//! kind, and [`Value::type_name`] is Python's name of the type, for error
//! messages.
//!
//! Indexing mutably builds: `v["k"] = py!(1)` inserts or replaces a dict
//! entry (a `None` first becomes an empty dict, as `serde_json` does with
//! `Null`); `v[i] = ...` replaces an item of a list or tuple (or inserts
//! the `int` key `i` into a dict). It panics when
//! the value is of another kind or the index is past the end, as
//! `serde_json` and `Vec` do.
//!
//! # Display is `repr`
//!
//! `v.to_string()` is Python's `repr(v)`, character for character as
//! CPython 3.11 writes it (tested against the real `python3`):
//!
//! * `None`, `True`, `False`; ints in decimal, of any size (CPython 3.11
//!   refuses to print an int of more than 4300 digits; this prints it).
//! * Floats as `repr(float)` (shortest round-trip digits, `nan`, `inf`,
//!   `-inf`); complex as `repr(complex)`: `2j`, `-0j`, `(1+2j)`,
//!   `(-0-0j)`, `(1+nanj)` (a NaN never shows its sign, as in CPython).
//! * `str` with CPython's quote choice (`'` unless the text holds `'` and
//!   no `"`), escapes `\\`, the quote, `\t`, `\n`, `\r`, then `\xNN`,
//!   `\uNNNN` or `\UNNNNNNNN` for what `str.isprintable()` rejects (lone
//!   surrogates: `\ud800`), and printable characters as themselves.
//!   Printability is Unicode 14.0's, as in Python 3.11, from a table of the
//!   701 non-printable ranges (so U+00A0 is `\xa0` and an unassigned code
//!   point is escaped); a Python built on a later Unicode prints characters
//!   assigned since as themselves.
//! * `bytes` as `b'...'` with the same quote choice, `\t`, `\n`, `\r`,
//!   `\\`, and `\xNN` outside printable ASCII.
//! * `(1,)`, `()`, `[1, 2]`, `{'a': 1}`, `{1, 2}`, `set()`,
//!   `frozenset({1})`, `frozenset()`. Dicts print in insertion order, as in
//!   Python; sets print in the order they hold (insertion order), where
//!   CPython prints its hash table's order (the same for small
//!   non-negative ints inserted in increasing order, not in general).
//!
//! # `serde_json::Value`
//!
//! Into `Value` nothing is lost: `null`, booleans, numbers (an integer as
//! `int`, any other number as `float`), strings, arrays (as `list`) and
//! objects (as `dict` with `str` keys, in the order the object iterates:
//! without serde_json's `preserve_order` feature that is sorted key order,
//! not the order of the text).
//!
//! Out of `Value`, `serde_json::Value::try_from` succeeds for what JSON
//! holds exactly and fails with a [`ToJsonError`] naming the Python type
//! and why otherwise. A `tuple` becomes an array, as Python's `json` writes
//! one. Refused: `bytes`, `set`, `frozenset` and `complex` (JSON has no
//! such type, and Python's `json` refuses them too), a NaN or infinite
//! float (`serde_json::Value` cannot hold one, although Python writes
//! `NaN`), an `int` outside `i64` and `u64`, a dict key that is not a `str`
//! (Python's `json` would write `1` as `"1"`, which does not come back as
//! `1`), and a `str` with lone surrogates.
//!
//! # Any Rust type
//!
//! [`to_value`] turns any `T: Serialize` into a `Value` and [`from_value`]
//! any `Value` into a `T: DeserializeOwned`, shaped as miniray's formats
//! carry them (a struct is a dict, a Rust tuple a `tuple`, ...). A `Value`
//! goes through both exactly, alone or nested in your type: inspect a
//! dynamic message, then convert it.

mod access;
mod convert;
mod convert_error;
mod from_value;
mod hash;
mod json_value;
mod macros;
pub(crate) mod magic;
mod printable;
mod repr;
mod serde;
mod set;
mod text;
mod to_value;

use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

use indexmap::IndexMap;
use num_bigint::BigInt;

pub use access::ValueIndex;
pub use convert_error::ConvertError;
pub use from_value::from_value;
pub use json_value::ToJsonError;
pub use set::Set;
pub use text::SurrogateStr;
pub use to_value::to_value;

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

/// Collects `(key, value)` pairs of anything that converts into [`Value`];
/// a repeated key keeps its first place and its last value, as in Python.
impl<K: Into<Value>, V: Into<Value>> FromIterator<(K, V)> for Dict {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Dict(Box::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
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

/// The bits a float compares and hashes by: all NaNs are one value.
pub(super) fn float_key(f: f64) -> u64 {
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

/// How a `str` hashes, as a [`Value::Str`] and as a bare `&str` key alike.
fn str_hash<H: Hasher>(s: &str, state: &mut H) {
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

    /// `dict.get("k")` hashes the `&str` with `str`'s own `Hash`, so a
    /// `Value::Str` must hash exactly as its text does. A one-entry map
    /// never hashes (indexmap compares directly), so use many keys.
    #[test]
    fn str_keys_are_found_by_plain_str_among_many() {
        let d: Dict = (0..50)
            .map(|i| (Value::Str(format!("k{i}")), Value::Int(i)))
            .collect();
        for i in 0..50 {
            let key = format!("k{i}");
            assert_eq!(d.get(key.as_str()), Some(&Value::Int(i)), "{key}");
            assert_eq!(d.get_str(&key), Some(&Value::Int(i)), "{key}");
        }
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

//! Reading a [`Value`] as `serde_json::Value` is read: `v["key"]`, `v[0]`,
//! `get`, `as_*` accessors, `type_name`; and building with `v["k"] = x`.
//! The contract (what a missing key reads as, when `IndexMut` panics) is in
//! the `value` module docs, section "Reading".

use std::borrow::Cow;
use std::ops;

use num_bigint::BigInt;

use super::{Dict, Set, Value};

/// What answers `v[...]` on a [`Value`] when reading it.
static NONE: Value = Value::None;

/// A type that can index into a [`Value`]: `usize` (an item of a list or
/// tuple, or an `int` key of a dict, as `d[0]` in Python), `str` and
/// `String` (a `str` key of a dict) and `Value` (any key of a dict).
/// Sealed: only miniray implements it.
pub trait ValueIndex: private::Sealed {
    /// The value at this index in `v`, if there is one.
    #[doc(hidden)]
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value>;
    /// The value at this index in `v`, mutably, if there is one.
    #[doc(hidden)]
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value>;
    /// The value at this index in `v`, inserting `None` under a missing dict
    /// key. Panics as the module docs say.
    #[doc(hidden)]
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value;
}

mod private {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for super::Value {}
    impl<T: Sealed + ?Sized> Sealed for &T {}
}

impl ValueIndex for usize {
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        match v {
            Value::List(items) | Value::Tuple(items) => items.get(*self),
            Value::Dict(d) => d.get(&Value::from(*self)),
            _ => None,
        }
    }
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        match v {
            Value::List(items) | Value::Tuple(items) => items.get_mut(*self),
            Value::Dict(d) => d.get_mut(&Value::from(*self)),
            _ => None,
        }
    }
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value {
        let kind = v.type_name();
        match v {
            Value::List(items) | Value::Tuple(items) => {
                let len = items.len();
                items.get_mut(*self).unwrap_or_else(|| {
                    panic!("index {self} out of range for a {kind} of {len} items")
                })
            }
            Value::Dict(d) => d.entry(Value::from(*self)).or_insert(Value::None),
            other => panic!("cannot index a Python {} with {self}", other.type_name()),
        }
    }
}

impl ValueIndex for str {
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        match v {
            Value::Dict(d) => d.get_str(self),
            _ => None,
        }
    }
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        match v {
            Value::Dict(d) => d.get_mut(self),
            _ => None,
        }
    }
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value {
        if v.is_none() {
            *v = Value::Dict(Dict::new());
        }
        match v {
            Value::Dict(d) => d.entry(Value::from(self)).or_insert(Value::None),
            other => panic!("cannot index a Python {} with {self:?}", other.type_name()),
        }
    }
}

impl ValueIndex for String {
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        self.as_str().index_into(v)
    }
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        self.as_str().index_into_mut(v)
    }
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value {
        self.as_str().index_or_insert(v)
    }
}

impl ValueIndex for Value {
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        match v {
            Value::Dict(d) => d.get(self),
            _ => None,
        }
    }
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        match v {
            Value::Dict(d) => d.get_mut(self),
            _ => None,
        }
    }
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value {
        if v.is_none() {
            *v = Value::Dict(Dict::new());
        }
        match v {
            Value::Dict(d) => d.entry(self.clone()).or_insert(Value::None),
            other => panic!("cannot index a Python {} with a key", other.type_name()),
        }
    }
}

impl<T: ValueIndex + ?Sized> ValueIndex for &T {
    fn index_into<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        (**self).index_into(v)
    }
    fn index_into_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        (**self).index_into_mut(v)
    }
    fn index_or_insert<'v>(&self, v: &'v mut Value) -> &'v mut Value {
        (**self).index_or_insert(v)
    }
}

/// `v["key"]`, `v[0]`, `v[&key]`: the value there, or a static `None` when
/// there is none (see the [module docs](crate::value#reading)).
impl<I: ValueIndex> ops::Index<I> for Value {
    type Output = Value;
    fn index(&self, index: I) -> &Value {
        index.index_into(self).unwrap_or(&NONE)
    }
}

/// `v["key"] = x` inserts or replaces; `v[0] = x` replaces.
///
/// # Panics
///
/// If the value is neither a dict nor `None` (for a key), or neither a
/// list, tuple nor dict (for a `usize`), or the index is past the end.
impl<I: ValueIndex> ops::IndexMut<I> for Value {
    fn index_mut(&mut self, index: I) -> &mut Value {
        index.index_or_insert(self)
    }
}

impl Value {
    /// The value at `index` (a key of a dict, or an item of a list or
    /// tuple), or `None` when there is none: unlike `v[index]`, tells a
    /// missing key from a stored `None`.
    ///
    /// ```
    /// use miniray::py;
    /// let v = py!({"a": None, 1: [10, 20]});
    /// assert!(v.get("a").is_some_and(|a| a.is_none()));
    /// assert!(v.get("b").is_none());
    /// assert_eq!(v[1][1], 20);
    /// assert!(v["b"].is_none());
    /// ```
    pub fn get<I: ValueIndex>(&self, index: I) -> Option<&Value> {
        index.index_into(self)
    }

    /// [`get`](Value::get), mutably.
    pub fn get_mut<I: ValueIndex>(&mut self, index: I) -> Option<&mut Value> {
        index.index_into_mut(self)
    }

    /// The value under the `str` key `key` of a dict.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.get_str(key)
    }

    /// Python's name of the value's type, as `type(v).__name__` gives it:
    /// `"NoneType"`, `"bool"`, `"int"`, `"float"`, `"complex"`, `"str"`,
    /// `"bytes"`, `"tuple"`, `"list"`, `"dict"`, `"set"`, `"frozenset"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Complex { .. } => "complex",
            Value::Str(_) | Value::SurrogateStr(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
        }
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// The `bool`. Python's `bool` is an `int` subclass, but `as_i64` and
    /// friends do not read one (the variants are exact).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The `int` if it fits `i64` (every int that does is [`Value::Int`]).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The `int` if it fits `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::BigInt(b) => u64::try_from(&**b).ok(),
            _ => None,
        }
    }

    /// The `float`, or an `int` as the nearest float (as Python's
    /// `float(n)` rounds; `None` for an int too large for any float, where
    /// Python raises `OverflowError`), as `serde_json` reads numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            // Decimal parsing rounds correctly, as Python's int-to-float does.
            Value::BigInt(b) => b.to_string().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    /// The `int` of any size.
    pub fn as_bigint(&self) -> Option<Cow<'_, BigInt>> {
        match self {
            Value::Int(i) => Some(Cow::Owned(BigInt::from(*i))),
            Value::BigInt(b) => Some(Cow::Borrowed(b)),
            _ => None,
        }
    }

    /// The `complex` as (real, imaginary).
    pub fn as_complex(&self) -> Option<(f64, f64)> {
        match *self {
            Value::Complex { re, im } => Some((re, im)),
            _ => None,
        }
    }

    /// The `str`, if it is valid Unicode (`None` for a
    /// [`Value::SurrogateStr`]: read that one with its own methods).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The `bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items of a `list`.
    pub fn as_list(&self) -> Option<&Vec<Value>> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a `list`, mutably.
    pub fn as_list_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a `tuple`.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a `list` or a `tuple` (what a Python function taking
    /// "a sequence" accepts).
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The `dict`.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The `dict`, mutably.
    pub fn as_dict_mut(&mut self) -> Option<&mut Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The members of a `set` or a `frozenset` (read the same way; match
    /// the variant to tell them apart).
    pub fn as_set(&self) -> Option<&Set> {
        match self {
            Value::Set(s) | Value::FrozenSet(s) => Some(s),
            _ => None,
        }
    }

    /// The members of a `set` (not a `frozenset`), mutably.
    pub fn as_set_mut(&mut self) -> Option<&mut Set> {
        match self {
            Value::Set(s) => Some(s),
            _ => None,
        }
    }

    /// Takes the value out, leaving `None`.
    pub fn take(&mut self) -> Value {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py;

    #[test]
    fn reading_missing_or_mistyped_gives_none() {
        let v = py!({"a": {"b": [1, (2, 3)]}, 7: "seven"});
        assert_eq!(v["a"]["b"][0], 1);
        assert_eq!(v["a"]["b"][1][1], 3);
        assert_eq!(v[7], "seven");
        assert!(v["a"]["b"][9].is_none());
        assert!(v["zz"]["b"].is_none());
        assert!(v[0].is_none());
        assert!(py!(5)["a"].is_none());
        assert_eq!(v.get(Value::Int(7)), Some(&Value::from("seven")));
        assert_eq!(v.get(String::from("a")), v.get("a"));
        assert_eq!(v.get_str("a"), v.get("a"));
        assert!(v.get("zz").is_none());
    }

    #[test]
    fn indexing_mutably_builds() {
        let mut v = Value::None;
        v["a"] = py!(1);
        v["b"]["c"] = py!([1, 2]);
        v["b"]["c"][0] = py!("x");
        v[3] = py!(true);
        assert_eq!(v, py!({"a": 1, "b": {"c": ["x", 2]}, 3: true}));
        *v.get_mut("a").expect("a") = py!(2);
        assert_eq!(v["a"], 2);
        assert_eq!(v["a"].take(), 2);
        assert!(v.get("a").is_some_and(Value::is_none));
    }

    #[test]
    #[should_panic(expected = "cannot index a Python int")]
    fn indexing_a_number_mutably_panics() {
        let mut v = py!(1);
        v["a"] = py!(2);
    }

    #[test]
    fn accessors_answer_only_their_kind() {
        assert_eq!(py!(5).as_i64(), Some(5));
        assert_eq!(py!(true).as_i64(), None);
        assert_eq!(py!(-1).as_u64(), None);
        assert_eq!(Value::from(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::from(u64::MAX).as_i64(), None);
        assert_eq!(py!(5).as_f64(), Some(5.0));
        assert_eq!(Value::from(1u128 << 100).as_f64(), Some(2f64.powi(100)));
        let huge = Value::from_bigint(BigInt::from(1) << 1100usize);
        assert_eq!(huge.as_f64(), None);
        assert_eq!(
            huge.as_bigint().as_deref(),
            Some(&(BigInt::from(1) << 1100usize))
        );
        assert_eq!(py!(2.5).as_f64(), Some(2.5));
        assert_eq!(py!("s").as_str(), Some("s"));
        let lone = Value::from_code_points([0xD800]).expect("valid");
        assert_eq!(lone.as_str(), None);
        assert_eq!(lone.type_name(), "str");
        assert_eq!(py!(b"b").as_bytes(), Some(&b"b"[..]));
        assert_eq!(py!((1,)).as_tuple().map(<[_]>::len), Some(1));
        assert_eq!(py!((1,)).as_list(), None);
        assert_eq!(py!([1]).as_seq(), py!((1,)).as_seq());
        assert!(py!(frozenset[1]).as_set().is_some());
        assert!(py!({}).as_dict().is_some_and(|d| d.is_empty()));
        assert_eq!(Value::complex(1.0, 2.0).as_complex(), Some((1.0, 2.0)));
        let names: Vec<_> = [
            py!(None),
            py!(false),
            py!(1),
            Value::from(u128::MAX),
            py!(1.0),
            Value::complex(0.0, 1.0),
            py!("s"),
            py!(b""),
            py!(()),
            py!([]),
            py!({}),
            py!(set[]),
            py!(frozenset[]),
        ]
        .iter()
        .map(Value::type_name)
        .collect();
        assert_eq!(
            names,
            [
                "NoneType",
                "bool",
                "int",
                "int",
                "float",
                "complex",
                "str",
                "bytes",
                "tuple",
                "list",
                "dict",
                "set",
                "frozenset"
            ]
        );
    }
}

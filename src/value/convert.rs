//! `From` conversions into [`Value`], the Python way, and comparisons with
//! Rust values. The two choices to know (bytes or list, no `From<()>`) are
//! in the `value` module docs, section "Building".

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use indexmap::{IndexMap, IndexSet};
use num_bigint::BigInt;

use super::{Dict, Set, SurrogateStr, Value};

macro_rules! from_small_int {
    ($($t:ty)*) => {$(
        /// A Python `int`.
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::Int(i64::from(n))
            }
        }
    )*};
}
from_small_int!(i8 i16 i32 i64 u8 u16 u32);

macro_rules! from_wide_int {
    ($($t:ty)*) => {$(
        /// A Python `int`: [`Value::Int`] when it fits `i64`, else
        /// [`Value::BigInt`].
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                match i64::try_from(n) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::BigInt(Box::new(BigInt::from(n))),
                }
            }
        }
    )*};
}
from_wide_int!(u64 usize isize i128 u128);

/// A Python `int` of any size ([`Value::Int`] when it fits `i64`).
impl From<BigInt> for Value {
    fn from(n: BigInt) -> Value {
        Value::from_bigint(n)
    }
}

/// A Python `float` (widened exactly to `f64`).
impl From<f32> for Value {
    fn from(f: f32) -> Value {
        Value::Float(f64::from(f))
    }
}

/// A Python `float`.
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

/// `True` or `False`.
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// A `str`.
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

/// A `str`.
impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Str(s.clone())
    }
}

/// A `str`.
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

/// A `str`.
impl From<Cow<'_, str>> for Value {
    fn from(s: Cow<'_, str>) -> Value {
        Value::Str(s.into_owned())
    }
}

/// A one-character `str`.
impl From<char> for Value {
    fn from(c: char) -> Value {
        Value::Str(c.into())
    }
}

/// A `str` with lone surrogates.
impl From<SurrogateStr> for Value {
    fn from(s: SurrogateStr) -> Value {
        Value::SurrogateStr(s)
    }
}

/// A `bytes` (a `Vec<u8>` is a list instead; see the module docs).
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

/// A `bytes`: `Value::from(b"abc")` (a `Vec<u8>` is a list instead).
impl<const N: usize> From<&[u8; N]> for Value {
    fn from(b: &[u8; N]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

/// A `list`.
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }
}

/// A `list`.
impl<T: Into<Value>, const N: usize> From<[T; N]> for Value {
    fn from(items: [T; N]) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }
}

/// A clone, so that `py!([&v])` interpolates a borrowed value.
impl From<&Value> for Value {
    fn from(v: &Value) -> Value {
        v.clone()
    }
}

/// A `list` of clones.
impl From<&[Value]> for Value {
    fn from(items: &[Value]) -> Value {
        Value::List(items.to_vec())
    }
}

/// `None` for `None`, the value itself for `Some`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Value {
        o.map_or(Value::None, Into::into)
    }
}

/// A `dict`.
impl From<Dict> for Value {
    fn from(d: Dict) -> Value {
        Value::Dict(d)
    }
}

/// A `set` (build a `frozenset` with [`Value::FrozenSet`]).
impl From<Set> for Value {
    fn from(s: Set) -> Value {
        Value::Set(s)
    }
}

/// A `dict` in the map's iteration order.
impl<K: Into<Value>, V: Into<Value>, S: BuildHasher> From<HashMap<K, V, S>> for Value {
    fn from(m: HashMap<K, V, S>) -> Value {
        Value::Dict(m.into_iter().collect())
    }
}

/// A `dict` in key order.
impl<K: Into<Value>, V: Into<Value>> From<BTreeMap<K, V>> for Value {
    fn from(m: BTreeMap<K, V>) -> Value {
        Value::Dict(m.into_iter().collect())
    }
}

/// A `dict` in the map's order.
impl<K: Into<Value>, V: Into<Value>, S: BuildHasher> From<IndexMap<K, V, S>> for Value {
    fn from(m: IndexMap<K, V, S>) -> Value {
        Value::Dict(m.into_iter().collect())
    }
}

/// A `set` in the set's iteration order.
impl<T: Into<Value>, S: BuildHasher> From<HashSet<T, S>> for Value {
    fn from(s: HashSet<T, S>) -> Value {
        Value::Set(s.into_iter().collect())
    }
}

/// A `set` in order.
impl<T: Into<Value>> From<BTreeSet<T>> for Value {
    fn from(s: BTreeSet<T>) -> Value {
        Value::Set(s.into_iter().collect())
    }
}

/// A `set` in the set's order.
impl<T: Into<Value>, S: BuildHasher> From<IndexSet<T, S>> for Value {
    fn from(s: IndexSet<T, S>) -> Value {
        Value::Set(s.into_iter().collect())
    }
}

macro_rules! from_tuple {
    ($($name:ident)+) => {
        /// A `tuple` of the same length.
        impl<$($name: Into<Value>),+> From<($($name,)+)> for Value {
            #[allow(non_snake_case)]
            fn from(($($name,)+): ($($name,)+)) -> Value {
                Value::Tuple(vec![$($name.into()),+])
            }
        }
    };
}
from_tuple!(A);
from_tuple!(A B);
from_tuple!(A B C);
from_tuple!(A B C D);
from_tuple!(A B C D E);
from_tuple!(A B C D E F);
from_tuple!(A B C D E F G);
from_tuple!(A B C D E F G H);

/// A `list` of the items: `(0..3).collect::<Value>()` is `[0, 1, 2]`.
impl<T: Into<Value>> FromIterator<T> for Value {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Value {
        Value::List(iter.into_iter().map(Into::into).collect())
    }
}

impl Value {
    /// A `bytes` from anything that becomes a `Vec<u8>` (a `Vec<u8>`
    /// alone converts into a list).
    ///
    /// ```
    /// use miniray::Value;
    /// assert_eq!(Value::bytes(vec![104, 105]), Value::from(b"hi"));
    /// assert_eq!(Value::from(vec![104u8]), Value::List(vec![Value::Int(104)]));
    /// ```
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// A `tuple` of the items.
    pub fn tuple<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Tuple(items.into_iter().map(Into::into).collect())
    }

    /// A `set` of the items (a repeated one keeps its first place).
    pub fn set<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Set(items.into_iter().collect())
    }

    /// A `frozenset` of the items.
    pub fn frozenset<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::FrozenSet(items.into_iter().collect())
    }

    /// A `complex`.
    pub fn complex(re: f64, im: f64) -> Value {
        Value::Complex { re, im }
    }
}

macro_rules! eq_int {
    ($($t:ty)*) => {$(
        /// Equal when the value is that `int` (exact, see [`Value`]'s
        /// equality: `Value::Float(1.0) != 1`, `Value::Bool(true) != 1`).
        impl PartialEq<$t> for Value {
            fn eq(&self, other: &$t) -> bool {
                match (self, i64::try_from(*other)) {
                    (Value::Int(i), Ok(o)) => *i == o,
                    // A BigInt never fits i64, so only a wide `other` can match.
                    (Value::BigInt(b), Err(_)) => <$t>::try_from(&**b).is_ok_and(|b| b == *other),
                    _ => false,
                }
            }
        }
        /// Equal when the value is that `int`.
        impl PartialEq<Value> for $t {
            fn eq(&self, other: &Value) -> bool {
                other == self
            }
        }
    )*};
}
eq_int!(i8 i16 i32 i64 isize u8 u16 u32 u64 usize i128 u128);

macro_rules! eq_float {
    ($($t:ty)*) => {$(
        /// Equal when the value is that `float`, compared as [`Value`]s
        /// are (by bits, every NaN equal).
        impl PartialEq<$t> for Value {
            fn eq(&self, other: &$t) -> bool {
                *self == Value::Float(f64::from(*other))
            }
        }
        /// Equal when the value is that `float`.
        impl PartialEq<Value> for $t {
            fn eq(&self, other: &Value) -> bool {
                other == self
            }
        }
    )*};
}
eq_float!(f32 f64);

/// Equal when the value is that `bool`.
impl PartialEq<bool> for Value {
    fn eq(&self, other: &bool) -> bool {
        matches!(self, Value::Bool(b) if b == other)
    }
}

/// Equal when the value is that `bool`.
impl PartialEq<Value> for bool {
    fn eq(&self, other: &Value) -> bool {
        other == self
    }
}

/// Equal when the value is that `str`.
impl PartialEq<String> for Value {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

/// Equal when the value is that `str`.
impl PartialEq<Value> for String {
    fn eq(&self, other: &Value) -> bool {
        other == self.as_str()
    }
}

/// Equal when the value is that `str`.
impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        matches!(self, Value::Str(s) if s == other)
    }
}

/// Equal when the value is that `str`.
impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

/// Equal when the value is that `str`.
impl PartialEq<Value> for &str {
    fn eq(&self, other: &Value) -> bool {
        other == *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py;

    #[test]
    fn ints_normalize_whatever_their_rust_type() {
        assert_eq!(Value::from(7u8), Value::Int(7));
        assert_eq!(Value::from(-7i128), Value::Int(-7));
        assert_eq!(Value::from(i64::MAX as u64), Value::Int(i64::MAX));
        assert_eq!(
            Value::from(u64::MAX),
            Value::BigInt(Box::new(BigInt::from(u64::MAX)))
        );
        assert_eq!(
            Value::from(i128::MIN),
            Value::BigInt(Box::new(BigInt::from(i128::MIN)))
        );
        assert_eq!(Value::from(BigInt::from(3)), Value::Int(3));
        assert_eq!(Value::from(usize::MAX).type_name(), "int");
    }

    #[test]
    fn strings_bytes_and_sequences() {
        assert_eq!(Value::from('é'), Value::Str("é".into()));
        assert_eq!(Value::from(Cow::Borrowed("x")), "x");
        assert_eq!(Value::from(b"ab"), Value::Bytes(b"ab".to_vec()));
        assert_eq!(Value::from(&b"ab"[..]), Value::Bytes(b"ab".to_vec()));
        assert_eq!(
            Value::from(vec![1u8, 2]),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(
            Value::from((1, "a", 2.5)),
            Value::Tuple(vec![Value::Int(1), "a".into(), Value::Float(2.5)])
        );
        assert_eq!(Value::from((None::<i32>,)), Value::Tuple(vec![Value::None]));
        assert_eq!(Value::from(Some(1.5f32)), Value::Float(1.5));
        assert_eq!(
            (0..3).collect::<Value>(),
            Value::List(vec![0.into(), 1.into(), 2.into()])
        );
        assert_eq!(Value::from([true]), Value::List(vec![Value::Bool(true)]));
        let inner = Value::from("x");
        assert_eq!(
            py!([&inner, inner]),
            Value::List(vec!["x".into(), "x".into()])
        );
    }

    #[test]
    fn maps_and_sets() {
        let m: BTreeMap<&str, i32> = [("b", 2), ("a", 1)].into_iter().collect();
        let v = Value::from(m);
        let Value::Dict(d) = &v else { panic!("{v:?}") };
        assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "b"]);
        let h: HashMap<i32, Vec<i32>> = [(1, vec![2])].into_iter().collect();
        assert_eq!(Value::from(h)[1], Value::List(vec![2.into()]));
        let s: BTreeSet<i32> = [2, 1].into_iter().collect();
        assert_eq!(Value::from(s), Value::set([1, 2]));
        assert_ne!(Value::set([1]), Value::frozenset([1]));
        let d: Dict = [(1, "a"), (1, "b")].into_iter().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[&Value::Int(1)], "b");
    }

    #[test]
    fn comparisons_with_rust_values_are_exact() {
        assert_eq!(Value::Int(1), 1);
        assert_eq!(1u64, Value::Int(1));
        assert_ne!(Value::Float(1.0), 1);
        assert_eq!(Value::Float(1.0), 1.0);
        assert_eq!(Value::Bool(true), true);
        assert_ne!(Value::Int(1), true);
        assert_eq!(Value::Str("s".into()), "s");
        assert_eq!("s", Value::Str("s".into()));
        assert_eq!(Value::Str("s".into()), String::from("s"));
        assert_eq!(Value::from(u128::MAX), u128::MAX);
        assert_ne!(Value::from(u128::MAX), u64::MAX);
        assert_ne!(Value::from(u64::MAX), -1i64);
        assert_eq!(Value::Float(f64::NAN), f64::NAN);
    }
}

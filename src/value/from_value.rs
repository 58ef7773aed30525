//! [`from_value`]: a [`Value`] as any `T: DeserializeOwned`, through a serde
//! `Deserializer` over the value (serde_json's `from_value`, the Python way).
//!
//! `Value` is itself that deserializer (`T::deserialize(value)` works too),
//! and it speaks magic.rs's exact mode: a `Value` (or a `Value` nested in
//! your type) comes out exactly as it went in.

use serde::de::value::{BytesDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use super::convert_error::ConvertError;
use super::magic::{self, Magic};
use super::Value;

/// `value` as a `T`, read as miniray's formats read a message: a list,
/// tuple, set or frozenset fills any Rust sequence or tuple, a dict any map
/// or struct, an `int` also fills an `f64`, `None` fills `()` and `Option`,
/// a `str` a unit variant and `{name: content}` any other variant. An int
/// past 128 bits or a `str` with lone surrogates fits only a [`Value`];
/// for any other `T` they are an error naming them.
///
/// ```
/// use miniray::{py, value::from_value};
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Job { id: u32, args: (i32, String), weight: f64 }
/// let msg = py!({"id": 7, "args": [1, "x"], "weight": 2});
/// let job: Job = from_value(msg)?;
/// assert_eq!(job, Job { id: 7, args: (1, "x".into()), weight: 2.0 });
/// # Ok::<(), miniray::value::ConvertError>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ConvertError> {
    // The path is tracked as it goes: the value is consumed, so it cannot
    // be walked again after a failure.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().message().to_owned();
        crate::error_path::append(&mut message, &path);
        error(message)
    })
}

fn error(msg: impl std::fmt::Display) -> ConvertError {
    <ConvertError as de::Error>::custom(msg)
}

fn big_int_error() -> ConvertError {
    error("a Python int does not fit 128 bits; decode into miniray::Value")
}

fn lone_surrogate_error() -> ConvertError {
    error("str holds a lone surrogate, which Rust's String cannot; decode into miniray::Value")
}

/// Visits a sequence of items and checks that the visitor took them all.
fn visit_items<'de, V, I>(items: I, visitor: V) -> Result<V::Value, ConvertError>
where
    V: Visitor<'de>,
    I: Iterator<Item = Value>,
{
    let mut seq = SeqDeserializer::new(items);
    let out = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

/// A `Value` is a serde `Deserializer`, so any `T: Deserialize` can be read
/// out of one ([`from_value`] wraps this): each Python type is offered as
/// serde's nearest word for it (a tuple or set as a sequence, a complex as
/// a pair of floats), and a `Value` read out of a `Value` comes back exact.
impl<'de> Deserializer<'de> for Value {
    type Error = ConvertError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::BigInt(b) => {
                if let Ok(u) = u64::try_from(&*b) {
                    visitor.visit_u64(u)
                } else if let Ok(i) = i128::try_from(&*b) {
                    visitor.visit_i128(i)
                } else if let Ok(u) = u128::try_from(&*b) {
                    visitor.visit_u128(u)
                } else {
                    Err(big_int_error())
                }
            }
            Value::Float(f) => visitor.visit_f64(f),
            Value::Complex { re, im } => {
                let mut seq = SeqDeserializer::new([re, im].into_iter());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Str(s) => visitor.visit_string(s),
            Value::SurrogateStr(_) => Err(lone_surrogate_error()),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Tuple(items) | Value::List(items) => visit_items(items.into_iter(), visitor),
            Value::Set(s) | Value::FrozenSet(s) => visit_items(s.into_iter(), visitor),
            Value::Dict(d) => {
                let mut map = MapDeserializer::new(d.into_iter());
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            Value::None => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    /// An int fills a float, as in Python (`float` accepts an `int`).
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self {
            Value::Int(_) | Value::BigInt(_) => match self.as_f64() {
                Some(f) => visitor.visit_f64(f),
                None => Err(error("a Python int is too large for a float")),
            },
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        if name == magic::VALUE_TOKEN {
            visitor.visit_newtype_struct(Exact(self))
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    /// A unit variant from its name; any other from `{name: content}`.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        match self {
            Value::Str(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Dict(d) if d.len() == 1 => {
                let (name, content) = d.into_iter().next().ok_or_else(|| error("empty dict"))?;
                visitor.visit_enum(VariantValue { name, content })
            }
            other => Err(error(format_args!(
                "a Python {} is not an enum variant (a str, or a dict of one entry {{name: content}})",
                other.type_name()
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        drop(self);
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

impl<'de> IntoDeserializer<'de, ConvertError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

/// The value in exact mode (magic.rs): its one `deserialize_any` reports
/// the kinds serde has no word for through [`magic::visit_magic`].
struct Exact(Value);

impl<'de> Deserializer<'de> for Exact {
    type Error = ConvertError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvertError> {
        match self.0 {
            Value::Tuple(items) => magic::visit_magic(
                visitor,
                Magic::Tuple,
                SeqDeserializer::new(items.into_iter()),
            ),
            Value::Set(s) => {
                magic::visit_magic(visitor, Magic::Set, SeqDeserializer::new(s.into_iter()))
            }
            Value::FrozenSet(s) => magic::visit_magic(
                visitor,
                Magic::FrozenSet,
                SeqDeserializer::new(s.into_iter()),
            ),
            Value::Complex { re, im } => magic::visit_magic(
                visitor,
                Magic::Complex,
                SeqDeserializer::new([re, im].into_iter()),
            ),
            Value::BigInt(b) if i128::try_from(&*b).is_err() && u128::try_from(&*b).is_err() => {
                let (sign, magnitude) = b.to_bytes_le();
                let mut payload = Vec::with_capacity(magnitude.len() + 1);
                magic::encode_bigint(sign == num_bigint::Sign::Minus, &magnitude, &mut payload);
                magic::visit_magic(visitor, Magic::BigInt, BytesDeserializer::new(&payload))
            }
            Value::SurrogateStr(s) => magic::visit_magic(
                visitor,
                Magic::Surrogates,
                BytesDeserializer::new(s.as_bytes()),
            ),
            other => other.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// An enum variant read from `{name: content}`.
struct VariantValue {
    name: Value,
    content: Value,
}

impl<'de> EnumAccess<'de> for VariantValue {
    type Error = ConvertError;
    type Variant = Content;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Content), ConvertError> {
        Ok((seed.deserialize(self.name)?, Content(self.content)))
    }
}

/// The content of an enum variant.
struct Content(Value);

impl<'de> VariantAccess<'de> for Content {
    type Error = ConvertError;
    fn unit_variant(self) -> Result<(), ConvertError> {
        match self.0 {
            Value::None => Ok(()),
            other => Err(error(format_args!(
                "a unit variant's content must be None, not a Python {}",
                other.type_name()
            ))),
        }
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ConvertError> {
        seed.deserialize(self.0)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        self.0.deserialize_any(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvertError> {
        self.0.deserialize_any(visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use num_bigint::BigInt;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::value::to_value;
    use crate::{py, Dict};

    /// Every kind, nested, including the ones serde has no word for.
    fn every_kind() -> Value {
        let big = Value::from_bigint(-(BigInt::from(1) << 200usize) + 1);
        let lone = Value::from_code_points([0x61, 0xDC80]).expect("valid");
        let mut keyed = Dict::new();
        keyed.insert(py!((1, frozenset[2])), py!(set[(3,)]));
        keyed.insert(big.clone(), lone.clone());
        keyed.insert(Value::complex(-0.0, f64::NAN), py!(b"\x00"));
        py!([
            None, true, 1, (-1), Value::from(u64::MAX), Value::from(i128::MIN),
            Value::from(u128::MAX), big, 2.5, (-0.0), Value::complex(1.0, -2.0),
            "s", lone, b"b", (), (1,), [[]], {}, set[], frozenset[1, (2,)],
            Value::Dict(keyed), {"a": (1, [set[None]])}
        ])
    }

    #[test]
    fn a_value_round_trips_exactly() {
        let v = every_kind();
        assert_eq!(to_value(&v), Ok(v.clone()));
        assert_eq!(from_value::<Value>(v.clone()), Ok(v.clone()));
        // Exactness is structural: check the variants, not only ==.
        assert_eq!(
            from_value::<Value>(v.clone()).map(|r| r.to_string()),
            Ok(v.to_string())
        );
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Op {
        Stop,
        Add(i64),
        Move(i32, i32),
        Say { text: String },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Job {
        id: u64,
        args: (i32, String),
        ops: Vec<Op>,
        weight: f64,
        note: Option<String>,
        raw: Value,
        tags: BTreeMap<String, i32>,
    }

    #[test]
    fn rust_types_go_through_value_as_the_formats_shape_them() {
        let job = Job {
            id: u64::MAX,
            args: (-1, "x".into()),
            ops: vec![
                Op::Stop,
                Op::Add(2),
                Op::Move(1, 2),
                Op::Say { text: "hi".into() },
            ],
            weight: 0.5,
            note: None,
            raw: py!(set[(1, 2)]),
            tags: [("a".to_string(), 1)].into_iter().collect(),
        };
        let v = to_value(&job).expect("to_value");
        assert_eq!(
            v,
            py!({
                "id": Value::from(u64::MAX),
                "args": (-1, "x"),
                "ops": ["Stop", {"Add": 2}, {"Move": [1, 2]}, {"Say": {"text": "hi"}}],
                "weight": 0.5,
                "note": None,
                "raw": set[(1, 2)],
                "tags": {"a": 1},
            })
        );
        assert_eq!(from_value::<Job>(v), Ok(job));
    }

    #[test]
    fn reading_is_lenient_where_python_is() {
        let (a, b): (i32, i32) = from_value(py!([1, 2])).expect("list as tuple");
        assert_eq!((a, b), (1, 2));
        let v: Vec<i32> = from_value(py!((1, 2))).expect("tuple as vec");
        assert_eq!(v, [1, 2]);
        let s: HashSet<i32> = from_value(py!(frozenset[3])).expect("frozenset");
        assert!(s.contains(&3));
        let f: f64 = from_value(py!(3)).expect("int as float");
        assert_eq!(f, 3.0);
        let c: (f64, f64) = from_value(Value::complex(1.0, 2.0)).expect("complex");
        assert_eq!(c, (1.0, 2.0));
        let u: () = from_value(py!(None)).expect("unit");
        assert_eq!(u, ());
        let big: u128 = from_value(Value::from(u128::MAX)).expect("u128");
        assert_eq!(big, u128::MAX);
    }

    #[test]
    fn what_fits_only_value_is_refused_by_name() {
        let huge = Value::from_bigint(BigInt::from(1) << 130usize);
        let e = from_value::<i128>(huge).expect_err("too big");
        assert_eq!(
            e.message(),
            "a Python int does not fit 128 bits; decode into miniray::Value"
        );
        let lone = Value::from_code_points([0xD800]).expect("valid");
        let e = from_value::<String>(lone).expect_err("surrogate");
        assert!(
            e.to_string().starts_with("str holds a lone surrogate"),
            "{e}"
        );
        let e = from_value::<Job>(py!({"id": "x"})).expect_err("mismatch");
        assert_eq!(
            e.to_string(),
            "invalid type: string \"x\", expected u64 at id"
        );
        let e = from_value::<(i32,)>(py!([1, 2])).expect_err("too long");
        assert!(e.to_string().contains("invalid length 2"), "{e}");
        let e = from_value::<Op>(py!(5)).expect_err("not a variant");
        assert!(
            e.to_string()
                .contains("a Python int is not an enum variant"),
            "{e}"
        );
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (any::<i128>(), 0u32..300)
                .prop_map(|(n, shift)| Value::from_bigint(BigInt::from(n) << shift)),
            any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
            (any::<u64>(), any::<u64>())
                .prop_map(|(a, b)| Value::complex(f64::from_bits(a), f64::from_bits(b))),
            proptest::collection::vec(0u32..0x11_0000, 0..6)
                .prop_map(|points| Value::from_code_points(points).unwrap_or_default()),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::set),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::frozenset),
                proptest::collection::vec((inner.clone(), inner), 0..6)
                    .prop_map(|entries| Value::Dict(entries.into_iter().collect())),
            ]
        })
    }

    /// Tuples as lists, as they come back from JSON.
    fn untuple(v: Value) -> Value {
        match v {
            Value::Tuple(items) | Value::List(items) => {
                Value::List(items.into_iter().map(untuple).collect())
            }
            Value::Dict(d) => Value::Dict(d.into_iter().map(|(k, v)| (k, untuple(v))).collect()),
            other => other,
        }
    }

    proptest::proptest! {
        /// Any value, however nested, comes back exactly through both
        /// directions, and through serde_json whenever that accepts it.
        #[test]
        fn any_value_round_trips(v in any_value()) {
            proptest::prop_assert_eq!(to_value(&v), Ok(v.clone()));
            proptest::prop_assert_eq!(from_value::<Value>(v.clone()), Ok(v.clone()));
            if let Ok(j) = serde_json::Value::try_from(&v) {
                proptest::prop_assert_eq!(Value::from(j), untuple(v));
            }
        }
    }
}

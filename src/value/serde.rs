//! `Serialize` and `Deserialize` for [`Value`]: serde's data model where it
//! has a word for the Python type, the reserved names of `magic.rs` where
//! it has not.

use std::fmt;

use num_bigint::{BigInt, Sign};
use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::ser::{Serialize, SerializeSeq, SerializeTuple, Serializer};

use super::magic::{self, Magic};
use super::{Dict, Set, Value};

/// Most items reserved up front from a peer's size hint: a hostile count
/// must not allocate before the items arrive.
/// 1 MiB of `Value`s, as serde's own `size_hint::cautious` caps: enough
/// that a 100,000-item list grows twice, not five times.
const MAX_PREALLOC: usize = (1 << 20) / std::mem::size_of::<Value>();

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::None => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::BigInt(b) => serialize_bigint(b, s),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Complex { re, im } => {
                s.serialize_newtype_struct(magic::COMPLEX_TOKEN, &(re, im))
            }
            Value::Str(text) => s.serialize_str(text),
            Value::SurrogateStr(text) => {
                s.serialize_newtype_struct(magic::SURROGATES_TOKEN, &Bytes(text.as_bytes()))
            }
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Tuple(items) => {
                let mut t = s.serialize_tuple(items.len())?;
                for item in items {
                    match item {
                        Value::Float(f) => t.serialize_element(f)?,
                        Value::Int(i) => t.serialize_element(i)?,
                        other => t.serialize_element(other)?,
                    }
                }
                t.end()
            }
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    // Floats and ints as themselves: the format's element
                    // code for an `f64` inlines, where a `Value` item is a
                    // call and a jump per item (a third of a float list's
                    // encode).
                    match item {
                        Value::Float(f) => seq.serialize_element(f)?,
                        Value::Int(i) => seq.serialize_element(i)?,
                        other => seq.serialize_element(other)?,
                    }
                }
                seq.end()
            }
            Value::Dict(d) => s.collect_map(d.iter()),
            Value::Set(items) => s.serialize_newtype_struct(magic::SET_TOKEN, &Members(items)),
            Value::FrozenSet(items) => {
                s.serialize_newtype_struct(magic::FROZENSET_TOKEN, &Members(items))
            }
        }
    }
}

fn serialize_bigint<S: Serializer>(b: &BigInt, s: S) -> Result<S::Ok, S::Error> {
    if let Ok(u) = u64::try_from(b) {
        return s.serialize_u64(u);
    }
    if let Ok(i) = i128::try_from(b) {
        return s.serialize_i128(i);
    }
    if let Ok(u) = u128::try_from(b) {
        return s.serialize_u128(u);
    }
    let (sign, magnitude) = b.to_bytes_le();
    let mut payload = Vec::with_capacity(magnitude.len() + 1);
    magic::encode_bigint(sign == Sign::Minus, &magnitude, &mut payload);
    s.serialize_newtype_struct(magic::BIGINT_TOKEN, &Bytes(&payload))
}

/// Serializes as serde bytes (a `&[u8]` alone would be a sequence).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A set's members as a sequence.
struct Members<'a>(&'a Set);

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // miniray's formats answer this name in exact mode (magic.rs);
        // others treat it as a transparent newtype.
        d.deserialize_newtype_struct(magic::VALUE_TOKEN, ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Python value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(Box::new(v.into())), Value::Int))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::from_bigint(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::from_bigint(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Ok(Value::List(items(seq)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut dict = Dict::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some((k, v)) = map.next_entry::<Value, Value>()? {
            dict.insert(k, v);
        }
        Ok(Value::Dict(dict))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (kind, content): (Magic, _) = data.variant()?;
        match kind {
            Magic::Tuple => Ok(Value::Tuple(content.newtype_variant::<Items>()?.0)),
            Magic::Set => Ok(Value::Set(
                content.newtype_variant::<Items>()?.0.into_iter().collect(),
            )),
            Magic::FrozenSet => Ok(Value::FrozenSet(
                content.newtype_variant::<Items>()?.0.into_iter().collect(),
            )),
            Magic::Complex => {
                let (re, im) = content.newtype_variant::<(f64, f64)>()?;
                Ok(Value::Complex { re, im })
            }
            Magic::BigInt => {
                let payload = content.newtype_variant::<ByteBuf>()?.0;
                let (negative, magnitude) = magic::decode_bigint(&payload)
                    .ok_or_else(|| de::Error::custom("malformed big int payload"))?;
                let sign = if negative { Sign::Minus } else { Sign::Plus };
                Ok(Value::from_bigint(BigInt::from_bytes_le(sign, magnitude)))
            }
            Magic::Surrogates => {
                let payload = content.newtype_variant::<ByteBuf>()?.0;
                Value::from_generalized_utf8(&payload)
                    .ok_or_else(|| de::Error::custom("str payload is not generalized UTF-8"))
            }
            Magic::Built => {
                content.newtype_variant::<()>()?;
                magic::take_handed().ok_or_else(|| de::Error::custom("no value was handed over"))
            }
        }
    }
}

fn items<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Value>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
    while let Some(item) = seq.next_element()? {
        out.push(item);
    }
    Ok(out)
}

/// The items of a tuple, set or frozenset payload.
struct Items(Vec<Value>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;
        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of Python values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Items, A::Error> {
                items(seq).map(Items)
            }
        }
        d.deserialize_seq(ItemsVisitor)
    }
}

/// Bytes of a payload, from serde bytes (or a sequence of `u8`).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{BytesDeserializer, Error as PlainError, SeqDeserializer};
    use serde::de::IntoDeserializer;

    /// Each magic kind, visited as a format in exact mode would, builds
    /// its variant.
    #[test]
    fn magic_kinds_build_their_variants() {
        let items = || SeqDeserializer::<_, PlainError>::new(vec![1i64, 2].into_iter());
        let visit = |kind, payload| -> Value {
            match kind {
                Magic::Tuple | Magic::Set | Magic::FrozenSet => {
                    magic::visit_magic(ValueVisitor, kind, items()).expect("items")
                }
                _ => magic::visit_magic(
                    ValueVisitor,
                    kind,
                    BytesDeserializer::<PlainError>::new(payload),
                )
                .expect("bytes"),
            }
        };
        let two = vec![Value::Int(1), Value::Int(2)];
        assert_eq!(visit(Magic::Tuple, b""), Value::Tuple(two.clone()));
        assert_eq!(
            visit(Magic::Set, b""),
            Value::Set(two.iter().cloned().collect())
        );
        assert_eq!(
            visit(Magic::FrozenSet, b""),
            Value::FrozenSet(two.iter().cloned().collect())
        );
        let mut payload = Vec::new();
        magic::encode_bigint(
            true,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &mut payload,
        );
        let big = visit(Magic::BigInt, &payload);
        assert_eq!(big, Value::from_bigint(-(BigInt::from(1) << 128usize)));
        assert!(matches!(
            visit(Magic::Surrogates, b"\xed\xa0\x80"),
            Value::SurrogateStr(_)
        ));
        let complex = magic::visit_magic(
            ValueVisitor,
            Magic::Complex,
            SeqDeserializer::<_, PlainError>::new(vec![1.5f64, -2.0].into_iter()),
        )
        .expect("complex");
        assert_eq!(complex, Value::Complex { re: 1.5, im: -2.0 });
    }

    #[test]
    fn foreign_formats_see_plain_serde_data() {
        let v: Value =
            serde_json::from_str(r#"{"a": [1, true, null, "x"], "b": 9223372036854775807}"#)
                .expect("serde_json");
        let Value::Dict(d) = &v else { panic!("{v:?}") };
        assert_eq!(
            d.get_str("a"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Bool(true),
                Value::None,
                Value::Str("x".into())
            ]))
        );
        assert_eq!(d.get_str("b"), Some(&Value::Int(i64::MAX)));
        let _: Value = 5u8
            .into_deserializer()
            .deserialize_any(ValueVisitor)
            .map_err(|e: PlainError| e)
            .expect("u8");
    }
}

//! The `serde_json::Value` codec that `format.rs` and `envelope.rs` still
//! call, as thin wrappers over the serde format (removed when the line
//! formats carry [`Value`](crate::Value)). Decoding refuses what JSON cannot
//! hold with the kinds it always reported (`Unsupported("bytes")`,
//! `NonStrKey`, `NonFinite`, `LoneSurrogate`).

use std::fmt;

use num_bigint::{BigInt, Sign};
use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};

use super::de::Reader;
use super::long::{write_int, write_long_bytes};
use super::ser::write_str;
use super::{python_float_repr, MAX_INT_DIGITS};
use crate::error::DecodeError;
use crate::value::magic::{decode_bigint, Magic, VALUE_TOKEN};

/// Appends the marshal (version 4) bytes of `v` to `out`: ints `i`/`l`,
/// floats `g`, str `z`/`a`/`u`, arrays lists, objects dicts, as the serde
/// format writes them.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), &'static str> {
    match v {
        Value::Null => out.push(b'N'),
        Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
        Value::Number(n) => number(n, out)?,
        Value::String(s) => write_str(s, out).map_err(|_| "str too long for marshal")?,
        Value::Array(items) => {
            out.push(b'[');
            let n = u32::try_from(items.len()).map_err(|_| "list too long for marshal")?;
            out.extend_from_slice(&n.to_le_bytes());
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Object(map) => {
            out.push(b'{');
            for (k, item) in map {
                write_str(k, out).map_err(|_| "str too long for marshal")?;
                encode(item, out)?;
            }
            out.push(b'0');
        }
    }
    Ok(())
}

fn number(n: &Number, out: &mut Vec<u8>) -> Result<(), &'static str> {
    if let Some(i) = n.as_i64() {
        write_int(i < 0, u128::from(i.unsigned_abs()), out);
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        write_int(false, u128::from(u), out);
        return Ok(());
    }
    let text = n.as_str();
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        let f: f64 = text.parse().map_err(|_| "unparsable float")?;
        if !f.is_finite() {
            return Err("float out of range");
        }
        out.push(b'g');
        out.extend_from_slice(&f.to_le_bytes());
        return Ok(());
    }
    if text.trim_start_matches('-').len() > MAX_INT_DIGITS {
        return Err("integer has more than 4300 decimal digits");
    }
    let big = BigInt::parse_bytes(text.as_bytes(), 10).ok_or("not an integer")?;
    let (sign, magnitude) = big.to_bytes_le();
    write_long_bytes(sign == Sign::Minus, &magnitude, out);
    Ok(())
}

/// Decodes one marshal value that must span all of `data`, as a JSON value.
pub fn decode(data: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(data);
    r.json_only = true;
    let v = Json::deserialize(&mut r).map_err(|e| e.into_public(0))?;
    r.end().map_err(|e| e.into_public(0))?;
    Ok(v.0)
}

/// A JSON value built from the format in exact mode (for tuples as arrays
/// and ints past 128 bits as exact numbers).
struct Json(Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(VALUE_TOKEN, JsonVisitor)
    }
}

/// Most items reserved up front from the (already charged) count.
const MAX_PREALLOC: usize = 4096;

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-like value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json(Value::Null))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json(Value::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Json, E> {
        Ok(Json(Value::Number(Number::from_string_unchecked(
            v.to_string(),
        ))))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Json, E> {
        Ok(Json(Value::Number(Number::from_string_unchecked(
            v.to_string(),
        ))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        // Finite: the reader refuses NaN and infinities for JSON.
        Ok(Json(Value::Number(Number::from_string_unchecked(
            python_float_repr(v),
        ))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json(Value::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Json, A::Error> {
        items(seq).map(|v| Json(Value::Array(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: Json = map.next_value()?;
            out.insert(k, v.0);
        }
        Ok(Json(Value::Object(out)))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Json, A::Error> {
        let (kind, content): (Magic, _) = data.variant()?;
        match kind {
            Magic::Tuple => Ok(Json(Value::Array(content.newtype_variant::<Items>()?.0))),
            Magic::BigInt => {
                let payload = content.newtype_variant::<Payload>()?.0;
                let (negative, magnitude) = decode_bigint(&payload)
                    .ok_or_else(|| de::Error::custom("malformed big int payload"))?;
                let sign = if negative { Sign::Minus } else { Sign::Plus };
                let text = BigInt::from_bytes_le(sign, magnitude).to_string();
                Ok(Json(Value::Number(Number::from_string_unchecked(text))))
            }
            // The reader refuses these before they reach a JSON value.
            _ => Err(de::Error::custom("no JSON form")),
        }
    }
}

fn items<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Value>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
    while let Some(Json(item)) = seq.next_element()? {
        out.push(item);
    }
    Ok(out)
}

struct Items(Vec<Value>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Items, A::Error> {
                items(seq).map(Items)
            }
        }
        d.deserialize_seq(V)
    }
}

struct Payload(Vec<u8>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

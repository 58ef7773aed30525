//! The `serde_json::Value` codec that `format.rs` and `envelope.rs` still
//! call, as thin wrappers over the serde format (removed when the line
//! formats carry [`Value`](crate::Value)). Decoding refuses what JSON cannot
//! hold with the kinds it always reported (`Unsupported("bytes")`,
//! `NonStrKey`, `NonFinite`, `LoneSurrogate`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use num_bigint::{BigInt, Sign};
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};

use super::de::Reader;
use super::digits::magnitude_to_decimal;
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
    let cache = Cache::default();
    let v = Json(&cache)
        .deserialize(&mut r)
        .map_err(|e| e.into_public(0))?;
    r.end().map_err(|e| e.into_public(0))?;
    Ok(v)
}

/// Decimal text of each big int met, by payload: a back-reference decodes
/// the int again, and converting it again would be quadratic work.
type Cache = RefCell<HashMap<Vec<u8>, String>>;

/// Most items reserved up front from the (already charged) count.
const MAX_PREALLOC: usize = 4096;

/// A JSON value built from the format in exact mode (for tuples as arrays
/// and ints past 128 bits as exact numbers).
#[derive(Clone, Copy)]
struct Json<'c>(&'c Cache);

impl<'de> DeserializeSeed<'de> for Json<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_newtype_struct(VALUE_TOKEN, self)
    }
}

impl<'de> Visitor<'de> for Json<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-like value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Number(Number::from_string_unchecked(v.to_string())))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Number(Number::from_string_unchecked(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // Finite: the reader refuses NaN and infinities for JSON.
        Ok(Value::Number(Number::from_string_unchecked(
            python_float_repr(v),
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        items(self, seq).map(Value::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (kind, content): (Magic, _) = data.variant()?;
        match kind {
            Magic::Tuple => content.newtype_variant_seed(Items(self)).map(Value::Array),
            Magic::BigInt => {
                let payload = content.newtype_variant::<Payload>()?.0;
                if let Some(text) = self.0.borrow().get(&payload) {
                    return Ok(Value::Number(Number::from_string_unchecked(text.clone())));
                }
                let (negative, magnitude) = decode_bigint(&payload)
                    .ok_or_else(|| de::Error::custom("malformed big int payload"))?;
                // The reader refuses ints past 4300 digits before this.
                let text = magnitude_to_decimal(negative, magnitude)
                    .ok_or_else(|| de::Error::custom("integer too large"))?;
                self.0.borrow_mut().insert(payload, text.clone());
                Ok(Value::Number(Number::from_string_unchecked(text)))
            }
            // The reader refuses these before they reach a JSON value.
            _ => Err(de::Error::custom("no JSON form")),
        }
    }
}

fn items<'de, A: SeqAccess<'de>>(json: Json<'_>, mut seq: A) -> Result<Vec<Value>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
    while let Some(item) = seq.next_element_seed(json)? {
        out.push(item);
    }
    Ok(out)
}

/// A tuple's items.
struct Items<'c>(Json<'c>);

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Value>, A::Error> {
        items(self.0, seq)
    }
}

/// A big int's payload.
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

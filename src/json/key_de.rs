//! A dict key handed to serde: always a JSON string, read as the type
//! asked for where `json.dumps` would have converted that type to a str
//! (`"1"` → 1, `"true"` → true, `"NaN"` → nan), so a `HashMap<i64, _>`
//! written by Python reads back.

use serde::de::{self, value::BytesDeserializer, IntoDeserializer, Visitor};

use super::error::{DeError, Kind};
use super::unescape::Decoded;
use crate::value::magic::{visit_magic, Magic, VALUE_TOKEN};

type Result<T, E = DeError> = std::result::Result<T, E>;

enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
    Surrogates(Vec<u8>),
}

/// One key.
pub(crate) struct KeyDeserializer<'a> {
    text: Text<'a>,
    exact: bool,
}

impl<'a> KeyDeserializer<'a> {
    pub(crate) fn borrowed(s: &'a str) -> Self {
        KeyDeserializer {
            text: Text::Borrowed(s),
            exact: false,
        }
    }

    pub(crate) fn decoded(d: Decoded) -> Self {
        let text = match d {
            Decoded::Str(s) => Text::Owned(s),
            Decoded::Surrogates(b) => Text::Surrogates(b),
        };
        KeyDeserializer { text, exact: false }
    }

    fn str(&self) -> Option<&str> {
        match &self.text {
            Text::Borrowed(s) => Some(s),
            Text::Owned(s) => Some(s),
            Text::Surrogates(_) => None,
        }
    }

    /// Parses the key as `T` if it is such a key's text; else the visitor
    /// sees the str and names the mismatch.
    fn parsed<'de, T, V>(self, visitor: V, visit: fn(V, T) -> Result<V::Value>) -> Result<V::Value>
    where
        T: std::str::FromStr,
        V: Visitor<'de>,
    {
        match self.str().and_then(|s| s.parse::<T>().ok()) {
            Some(v) => visit(visitor, v),
            None => de::Deserializer::deserialize_any(self, visitor),
        }
    }
}

macro_rules! parsed_int {
    ($($method:ident $t:ty => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.parsed::<$t, V>(visitor, |v, x| v.$visit(x.into()))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'_> {
    type Error = DeError;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.text {
            Text::Borrowed(s) => visitor.visit_str(s),
            Text::Owned(s) => visitor.visit_string(s),
            Text::Surrogates(b) if self.exact => {
                visit_magic(visitor, Magic::Surrogates, BytesDeserializer::new(&b))
            }
            Text::Surrogates(_) => Err(DeError::new(Kind::LoneSurrogate, None)),
        }
    }

    parsed_int! {
        deserialize_i8 i8 => visit_i64,
        deserialize_i16 i16 => visit_i64,
        deserialize_i32 i32 => visit_i64,
        deserialize_i64 i64 => visit_i64,
        deserialize_i128 i128 => visit_i128,
        deserialize_u8 u8 => visit_u64,
        deserialize_u16 u16 => visit_u64,
        deserialize_u32 u32 => visit_u64,
        deserialize_u64 u64 => visit_u64,
        deserialize_u128 u128 => visit_u128,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.str() {
            Some("true") => visitor.visit_bool(true),
            Some("false") => visitor.visit_bool(false),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let special = match self.str() {
            Some("NaN") => Some(f64::NAN),
            Some("Infinity") => Some(f64::INFINITY),
            Some("-Infinity") => Some(f64::NEG_INFINITY),
            _ => None,
        };
        match special {
            Some(f) => visitor.visit_f64(f),
            None => self.parsed::<f64, V>(visitor, |v, x| v.visit_f64(x)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.str() {
            Some("null") => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.str() {
            Some("null") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.exact = name == VALUE_TOKEN;
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.text {
            Text::Borrowed(s) => visitor.visit_enum(s.into_deserializer()),
            Text::Owned(s) => visitor.visit_enum(s.into_deserializer()),
            Text::Surrogates(_) => Err(DeError::new(Kind::LoneSurrogate, None)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError::new(Kind::Unsupported("bytes"), None))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.text {
            // A struct's unknown key may hold a lone surrogate (Python
            // reads such a dict); as bytes it matches no field name.
            Text::Surrogates(b) => visitor.visit_byte_buf(b),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char str string unit_struct seq tuple tuple_struct map struct
    }
}

//! The serde `Deserializer` over a [`Reader`], its exact-mode twin, and the
//! accessors for sequences, dicts and enum dicts.

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::budget;
use super::codes::python_type;
use super::de::{Hint, Reader};
use super::error::DeError;
use crate::error::DecodeErrorKind;
use crate::value::magic::VALUE_TOKEN;

impl<'de> Deserializer<'de> for &mut Reader<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.value(Hint::Any, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.option(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == VALUE_TOKEN {
            visitor.visit_newtype_struct(Exact(self))
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.value(Hint::Enum, visitor)
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    fast_float! { deserialize_f32 deserialize_f64 }

    fast_int! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    serde::forward_to_deserialize_any! {
        bool char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// Typed float fields and items: a `g` is read without the general
/// dispatch (a `Vec<f64>` is all `g`s), anything else as usual.
macro_rules! fast_float {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let start = self.pos;
            match self.fast_f64()? {
                Some(f) => visitor.visit_f64(f).map_err(|e: DeError| e.within(start)),
                None => self.value(Hint::Any, visitor),
            }
        }
    )*};
}

/// Typed integer fields and items: an `i` is read without the general
/// dispatch, anything else as usual.
macro_rules! fast_int {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let start = self.pos;
            match self.fast_i32()? {
                Some(i) => visitor.visit_i64(i64::from(i)).map_err(|e: DeError| e.within(start)),
                None => self.value(Hint::Any, visitor),
            }
        }
    )*};
}

use {fast_float, fast_int};

/// The deserializer `visit_newtype_struct` gets when `Value` asks for exact
/// mode: its `deserialize_any` reports the magic kinds; everything else is
/// the plain reader's.
pub(crate) struct Exact<'r, 'de>(&'r mut Reader<'de>);

macro_rules! plain {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.0.value(Hint::Any, visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for Exact<'_, 'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.0.value(Hint::Exact, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.0.option(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.value(Hint::Enum, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.value(Hint::Any, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.value(Hint::Any, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.value(Hint::Any, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.0.value(Hint::Any, visitor)
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    plain! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }
}

/// The items of a tuple, list, set or frozenset (each charged already).
pub(crate) struct Items<'r, 'de> {
    pub(crate) de: &'r mut Reader<'de>,
    pub(crate) left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = DeError;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Checked against the bytes left when the count was read.
        Some(self.left)
    }
}

/// The entries of a dict, up to its `0`.
pub(crate) struct Entries<'r, 'de> {
    pub(crate) de: &'r mut Reader<'de>,
    pub(crate) first: bool,
    pub(crate) done: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        if self.done {
            return Ok(None);
        }
        if self.de.peek()? == b'0' {
            self.de.pos += 1;
            self.done = true;
            return Ok(None);
        }
        // Charged even when the key repeats (and replaces): every pair
        // costs, so decoding a dict again is paid for too.
        let base = if self.first { budget::MAP_BASE } else { 0 };
        self.first = false;
        self.de.charge(budget::ENTRY + base)?;
        if self.de.json_only {
            let code = self.de.key_code()?;
            if python_type(code) != "str" {
                return Err(DeError::at(
                    self.de.pos,
                    DecodeErrorKind::NonStrKey(python_type(code)),
                ));
            }
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(&mut *self.de)
    }
}

/// An enum variant with content: a dict's one key names it, its value is
/// the content (the reader checks the `0` after).
pub(crate) struct VariantDict<'r, 'de> {
    pub(crate) de: &'r mut Reader<'de>,
}

impl<'de> EnumAccess<'de> for VariantDict<'_, 'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        if self.de.peek()? == b'0' {
            return Err(DeError::at(
                self.de.pos,
                DecodeErrorKind::Mismatch("an empty dict names no enum variant".into()),
            ));
        }
        self.de.charge(budget::ENTRY + budget::MAP_BASE)?;
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for VariantDict<'_, 'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        serde::de::Deserialize::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.de.value(Hint::Any, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.de.value(Hint::Any, visitor)
    }
}

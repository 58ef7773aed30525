//! The accessors for sequences, dicts and enum dicts over a [`Reader`]:
//! each item goes back through the reader's serde `Deserializer` (in
//! [`de`](super::de)), which needs no import here.

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::budget;
use super::error::DeError;
use super::reader::Reader;
use crate::error::DecodeErrorKind;

/// The items of a tuple, list, set or frozenset (each charged already).
pub(crate) struct Items<'r, 'de> {
    pub(crate) de: &'r mut Reader<'de>,
    pub(crate) left: usize,
    /// A set's or frozenset's members: each is read as a key (hashable).
    pub(crate) members: bool,
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
        if self.members {
            return self
                .de
                .in_key("set member", |de| seed.deserialize(de))
                .map(Some);
        }
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
        self.de
            .in_key("dict key", |de| seed.deserialize(de))
            .map(Some)
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
        let variant = self.de.in_key("dict key", |de| seed.deserialize(de))?;
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
        self.de.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.de.deserialize_struct("", fields, visitor)
    }
}

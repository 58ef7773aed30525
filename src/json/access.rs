//! serde's views of a JSON array ([`Seq`]), object ([`Map`]) and an enum's
//! one-key object ([`Enum`]), stepping the deserializer's jiter.

use std::marker::PhantomData;

use serde::de::{
    self, value::StrDeserializer, DeserializeSeed, IgnoredAny, IntoDeserializer, Visitor,
};

use super::error::{DeError, Kind};
use super::key_de::KeyDeserializer;
use super::reader::{string_fallback, Deserializer, Result};
use super::unescape;

/// The elements of an array, read as serde asks for them.
pub(crate) struct Seq<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    started: bool,
    done: bool,
}

impl<'a, 'de> Seq<'a, 'de> {
    pub(crate) fn new(de: &'a mut Deserializer<'de>) -> Self {
        Seq {
            de,
            started: false,
            done: false,
        }
    }

    /// Moves to the next element: true if there is one.
    fn step(&mut self) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let r = if self.started {
            self.de.jiter.array_step()
        } else {
            self.started = true;
            self.de.jiter.known_array()
        };
        match r {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => Err(self.de.jerr(e)),
        }
    }

    /// After the visitor: the array must be at its end.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.step()? {
            return Err(DeError::at(
                Kind::Mismatch("array has more items than expected".into()),
                self.de.pos(),
            ));
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.step()? {
            seed.deserialize(&mut *self.de).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The entries of an object, read as serde asks for them.
pub(crate) struct Map<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    started: bool,
    done: bool,
}

fn skip_ws(data: &[u8], mut i: usize) -> usize {
    while matches!(data.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

impl<'a, 'de> Map<'a, 'de> {
    pub(crate) fn new(de: &'a mut Deserializer<'de>) -> Self {
        Map {
            de,
            started: false,
            done: false,
        }
    }

    /// After the visitor: skip what it left (serde's own visitors leave nothing).
    pub(crate) fn finish(&mut self) -> Result<()> {
        while de::MapAccess::next_key_seed(self, PhantomData::<IgnoredAny>)?.is_some() {
            de::MapAccess::next_value_seed(self, PhantomData::<IgnoredAny>)?;
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for Map<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Ok(None);
        }
        let data = self.de.data;
        let before = self.de.pos();
        let r = if self.started {
            self.de.jiter.next_key()
        } else {
            self.started = true;
            self.de.jiter.known_object()
        };
        let e = match r {
            Ok(Some(k)) => {
                return seed
                    .deserialize(KeyDeserializer::borrowed(k))
                    .map(Some)
                    .map_err(|e| {
                        // The key's opening quote: past the `{` or `,` and blanks.
                        let mut i = skip_ws(data, before);
                        if matches!(data.get(i), Some(b'{' | b',')) {
                            i = skip_ws(data, i + 1);
                        }
                        e.or_at(i)
                    });
            }
            Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Err(e) => e,
        };
        // jiter stops at the key's quote when it refuses the key itself.
        let at = self.de.pos();
        if !string_fallback(&e) || data.get(at) != Some(&b'"') {
            return Err(self.de.jerr(e));
        }
        let (decoded, end) = unescape::decode(data, at)?;
        let colon = skip_ws(data, end);
        if data.get(colon) != Some(&b':') {
            return Err(DeError::at(Kind::Syntax("expected `:`".into()), colon));
        }
        self.de.reseat(colon + 1);
        seed.deserialize(KeyDeserializer::decoded(decoded))
            .map(Some)
            .map_err(|e| e.or_at(at))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

/// An enum written as `{"Variant": content}`.
pub(crate) struct Enum<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    start: usize,
}

impl<'a, 'de> Enum<'a, 'de> {
    pub(crate) fn new(de: &'a mut Deserializer<'de>, start: usize) -> Self {
        Enum { de, start }
    }

    /// After the variant's content: the object must end.
    pub(crate) fn finish(de: &mut Deserializer<'de>) -> Result<()> {
        match de.jiter.next_key() {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(DeError::at(
                Kind::Mismatch("an enum's dict has more than one key".into()),
                de.pos(),
            )),
            Err(e) => Err(de.jerr(e)),
        }
    }
}

impl<'de> de::EnumAccess<'de> for Enum<'_, 'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let variant = match self.de.jiter.known_object() {
            Ok(Some(k)) => {
                let name: StrDeserializer<'_, DeError> = k.into_deserializer();
                seed.deserialize(name)?
            }
            Ok(None) => {
                return Err(DeError::at(
                    Kind::Mismatch(
                        "an enum's dict is empty; expected the variant as its key".into(),
                    ),
                    self.start,
                ))
            }
            Err(e) => return Err(self.de.jerr(e)),
        };
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_, 'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<()> {
        de::Deserialize::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_seq(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_struct(&mut *self.de, "", fields, visitor)
    }
}

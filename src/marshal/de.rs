//! The marshal deserializer: raw marshal v4 bytes to any `T:
//! Deserialize`, bounded by the input (see the module docs).
//!
//! One function, [`Reader::value`], reads every value: it follows `r`
//! back-references (decoding the referenced bytes again, charged again),
//! takes `FLAG_REF` slots, charges the budget, and hands the value to the
//! visitor in the form the hint asks for. Over it, serde's `Deserializer`
//! for `&mut Reader`. A [`Value`](crate::Value) (asked for with
//! `VALUE_TOKEN`) is not read here but built directly
//! ([`build`](super::build)) and handed over whole. The decoder's state
//! and primitive reads are in [`reader`](super::reader); the sequence,
//! dict and enum accessors in [`access`](super::access).

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer, StringDeserializer};
use serde::de::{Deserializer, Visitor};

use super::access::{Entries, Items, VariantDict};
use super::budget;
use super::codes::{refused, surrogates};
use super::error::DeError;
use super::reader::{Hint, Reader};
use super::FLAG_REF;
use crate::error::DecodeErrorKind;
use crate::value::magic::{hand_over, VALUE_TOKEN};

impl<'de> Reader<'de> {
    /// Reads one value for `visitor`; an error the visitor raises points at
    /// the value's first byte.
    pub(crate) fn value<V: Visitor<'de>>(
        &mut self,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let start = self.pos;
        self.value_at(start, hint, visitor)
            .map_err(|e| e.within(start))
    }

    /// `None` for `N`, otherwise `visit_some` on the value.
    pub(crate) fn option<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, DeError> {
        let start = self.pos;
        if self.peek()? & !FLAG_REF == b'N' {
            self.pos += 1;
            return visitor.visit_none().map_err(|e: DeError| e.within(start));
        }
        visitor.visit_some(self).map_err(|e| e.within(start))
    }

    fn value_at<V: Visitor<'de>>(
        &mut self,
        start: usize,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let code = self.u8()?;
        let ty = code & !FLAG_REF;
        // Singletons never take a slot, flagged or not (as in CPython).
        let flag = code & FLAG_REF != 0 && !self.replay;
        match ty {
            b'N' => visitor.visit_unit(),
            b'T' => visitor.visit_bool(true),
            b'F' => visitor.visit_bool(false),
            b'r' => {
                let idx = self.u32()?;
                self.follow(start, idx, hint, visitor)
            }
            b'i' => {
                let v = self.u32()? as i32;
                self.scalar_slot(flag, start)?;
                visitor.visit_i64(i64::from(v))
            }
            b'I' => {
                let v = i64::from_le_bytes(self.bytes8()?);
                self.scalar_slot(flag, start)?;
                visitor.visit_i64(v)
            }
            b'l' => self.long(start, flag, visitor),
            b'g' => {
                let f = self.f64()?;
                self.scalar_slot(flag, start)?;
                visitor.visit_f64(f)
            }
            b'y' => {
                let (re, im) = (self.f64()?, self.f64()?);
                self.scalar_slot(flag, start)?;
                visitor.visit_seq(SeqDeserializer::new([re, im].into_iter()))
            }
            b'z' | b'Z' => {
                let n = usize::from(self.u8()?);
                self.string(start, flag, n, true, hint, visitor)
            }
            b'a' | b'A' => {
                let n = self.u32()? as usize;
                self.string(start, flag, n, true, hint, visitor)
            }
            b'u' | b't' => {
                let n = self.u32()? as usize;
                self.string(start, flag, n, false, hint, visitor)
            }
            b's' => {
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                let bytes = self.take(n)?;
                self.scalar_slot(flag, start)?;
                self.charge(budget::heap(n))?;
                visitor.visit_borrowed_bytes(bytes)
            }
            b'(' | b')' | b'>' => self.sequence(start, ty, flag, visitor),
            b'[' | b'<' => {
                self.unhashable(start, ty)?;
                self.sequence(start, ty, flag, visitor)
            }
            b'{' => {
                self.unhashable(start, ty)?;
                self.dict(start, flag, hint, visitor)
            }
            _ => Err(DeError::at(start, refused(code))),
        }
    }

    /// Decodes the referenced object's bytes again where they stand; every
    /// byte it produces is charged again.
    fn follow<V: Visitor<'de>>(
        &mut self,
        start: usize,
        idx: u32,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let at = self.slot_start(start, idx)?;
        let (resume, was) = (self.pos, self.replay);
        self.pos = at;
        self.replay = true;
        let r = self.value_at(at, hint, visitor)?;
        self.pos = resume;
        self.replay = was;
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn string<V: Visitor<'de>>(
        &mut self,
        start: usize,
        flag: bool,
        n: usize,
        latin1: bool,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let n = self.count(n, 1)?;
        let at = self.pos;
        let bytes = self.take(n)?;
        self.scalar_slot(flag, start)?;
        if latin1 && !bytes.is_ascii() {
            let s = self.latin1(bytes)?;
            return match hint {
                Hint::Enum => visitor.visit_enum(StringDeserializer::new(s)),
                _ => visitor.visit_string(s),
            };
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.charge(budget::heap(n))?;
                match hint {
                    Hint::Enum => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
                    _ => visitor.visit_borrowed_str(s),
                }
            }
            Err(e) => {
                let first = at + e.valid_up_to();
                match surrogates(bytes) {
                    Err(bad) => Err(DeError::at(at + bad, DecodeErrorKind::InvalidUtf8)),
                    Ok(()) => Err(DeError::at(first, DecodeErrorKind::LoneSurrogate)),
                }
            }
        }
    }

    /// `l`: i32 signed digit count, then |count| u16 digits in base 2^15,
    /// least significant first.
    fn long<V: Visitor<'de>>(
        &mut self,
        start: usize,
        flag: bool,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (negative, digits) = self.long_digits(start, flag)?;
        if let Some(mag) = digits.to_u128() {
            if negative {
                if mag <= 1 << 63 {
                    return visitor.visit_i64((mag as i64).wrapping_neg());
                }
                if mag <= 1 << 127 {
                    return visitor.visit_i128((mag as i128).wrapping_neg());
                }
            } else if let Ok(v) = i64::try_from(mag) {
                return visitor.visit_i64(v);
            } else if let Ok(v) = u64::try_from(mag) {
                return visitor.visit_u64(v);
            } else if let Ok(v) = i128::try_from(mag) {
                return visitor.visit_i128(v);
            } else {
                return visitor.visit_u128(mag);
            }
        }
        // Past 128 bits only `Value` holds it (its own path, build.rs).
        Err(DeError::at(start, DecodeErrorKind::IntTooLarge))
    }

    fn sequence<V: Visitor<'de>>(
        &mut self,
        start: usize,
        ty: u8,
        flag: bool,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let name = match ty {
            b'<' => "set",
            b'>' => "frozenset",
            b'[' => "list",
            _ => "tuple",
        };
        let n = if ty == b')' {
            usize::from(self.u8()?)
        } else {
            self.u32()? as usize
        };
        let n = self.count(n, 1)?;
        self.enter(start)?;
        // The whole buffer is charged before the visitor may reserve it, so
        // the reservations of all open levels together stay in the budget.
        let each = if ty == b'<' || ty == b'>' {
            budget::ITEM + budget::MEMBER
        } else {
            budget::ITEM
        };
        self.charge(n.saturating_mul(each))?;
        let slot = self.reserve_slot(flag)?;
        let members = ty == b'<' || ty == b'>';
        let mut items = Items {
            de: self,
            left: n,
            members,
        };
        let v = visitor.visit_seq(&mut items)?;
        if items.left != 0 {
            return Err(DeError::at(
                start,
                DecodeErrorKind::Mismatch(format!(
                    "{name} of {n} items, of which the Rust type took {}",
                    n - items.left
                )),
            ));
        }
        self.leave();
        self.finish_slot(slot, start);
        Ok(v)
    }

    fn dict<V: Visitor<'de>>(
        &mut self,
        start: usize,
        flag: bool,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.enter(start)?;
        self.charge(budget::DICT)?;
        let slot = self.reserve_slot(flag)?;
        let v = if hint == Hint::Enum {
            let v = visitor.visit_enum(VariantDict { de: self })?;
            if self.peek()? != b'0' {
                return Err(DeError::at(
                    start,
                    DecodeErrorKind::Mismatch(
                        "an enum variant with content is a dict of exactly one entry".into(),
                    ),
                ));
            }
            self.pos += 1;
            v
        } else {
            let mut entries = Entries {
                de: self,
                first: true,
                done: false,
            };
            let v = visitor.visit_map(&mut entries)?;
            if !entries.done {
                return Err(DeError::at(
                    start,
                    DecodeErrorKind::Mismatch("dict has entries the Rust type did not read".into()),
                ));
            }
            v
        };
        self.leave();
        self.finish_slot(slot, start);
        Ok(v)
    }
}

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
            // Built directly (build.rs), then handed to `Value`'s visitor.
            let start = self.pos;
            let value = self.build()?;
            hand_over(visitor, value).map_err(|e: DeError| e.within(start))
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

//! The marshal deserializer: raw marshal v4 bytes to any `T:
//! Deserialize`, bounded by the input (see the module docs).
//!
//! One function, [`Reader::value`], reads every value: it follows `r`
//! back-references (decoding the referenced bytes again, charged again),
//! takes `FLAG_REF` slots, charges the budget, and hands the value to the
//! visitor in the form the hint asks for. The sequence, dict and enum
//! accessors are in `access.rs`.

use serde::de::value::{
    BorrowedBytesDeserializer, BorrowedStrDeserializer, BytesDeserializer, SeqAccessDeserializer,
    SeqDeserializer, StringDeserializer,
};
use serde::de::Visitor;

use super::access::{Entries, Items, VariantDict};
use super::budget::{self, Budget};
use super::codes::surrogates;
use super::error::DeError;
use super::long::{Digits, MAX_LONG_DIGITS};
use super::{FLAG_REF, MAX_DEPTH};
use crate::error::DecodeErrorKind;
use crate::value::magic::{visit_magic, Magic};

/// A reference slot whose container is not finished yet.
const PENDING: usize = usize::MAX;

/// What the caller asked of the next value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Plain serde data: a tuple, set or frozenset is a sequence, a
    /// complex a pair of floats; an int past 128 bits or a lone surrogate
    /// is an error.
    Any,
    /// Exact mode (`magic.rs`): the Python kinds serde has no word for are
    /// reported through `visit_magic`.
    Exact,
    /// An enum: a str is a unit variant, a dict of one entry a variant with
    /// content.
    Enum,
}

/// The decoder's state over one input.
pub(crate) struct Reader<'de> {
    data: &'de [u8],
    pub(crate) pos: usize,
    /// Per `FLAG_REF` slot, where its object starts (or [`PENDING`]).
    refs: Vec<usize>,
    pub(crate) budget: Budget,
    depth: usize,
    /// True while a back-reference's bytes are decoded again: their slots
    /// exist already.
    replay: bool,
    /// The `serde_json::Value` bridge: refuse what JSON cannot hold, with
    /// the kinds it always reported.
    pub(crate) json_only: bool,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(data: &'de [u8]) -> Self {
        Reader {
            data,
            pos: 0,
            refs: Vec::new(),
            budget: Budget::new(data.len()),
            depth: 0,
            replay: false,
            json_only: false,
        }
    }

    /// Refuses bytes after the value.
    pub(crate) fn end(&self) -> Result<(), DeError> {
        if self.pos != self.data.len() {
            return Err(DeError::at(self.pos, DecodeErrorKind::TrailingBytes));
        }
        Ok(())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8], DeError> {
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| DeError::at(data.len(), DecodeErrorKind::UnexpectedEnd))?;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, DeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, DeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    fn bytes8(&mut self) -> Result<[u8; 8], DeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }

    #[inline]
    fn f64(&mut self) -> Result<f64, DeError> {
        Ok(f64::from_le_bytes(self.bytes8()?))
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Result<u8, DeError> {
        self.data
            .get(self.pos)
            .copied()
            .ok_or_else(|| DeError::at(self.pos, DecodeErrorKind::UnexpectedEnd))
    }

    /// A count of items that must fit in the bytes left, each taking at
    /// least `min_item` bytes: a hostile count fails here, before anything
    /// is reserved for it.
    #[inline]
    fn count(&self, n: usize, min_item: usize) -> Result<usize, DeError> {
        if n.saturating_mul(min_item) > self.data.len() - self.pos {
            return Err(DeError::at(self.data.len(), DecodeErrorKind::UnexpectedEnd));
        }
        Ok(n)
    }

    #[inline]
    pub(crate) fn charge(&mut self, cost: usize) -> Result<(), DeError> {
        self.budget.charge(cost, self.pos)
    }

    /// The JSON bridge keeps every number as text: `len` bytes of it,
    /// charged there only (a `Value` or a typed field holds it inline).
    #[inline]
    fn text_charge(&mut self, len: usize) -> Result<(), DeError> {
        if self.json_only {
            self.charge(budget::heap(len))?;
        }
        Ok(())
    }

    /// A `g` float, flagged or not, read at once: the typed fast path for
    /// `f64` fields and items. `None` (nothing consumed) for anything else.
    #[inline]
    pub(crate) fn fast_f64(&mut self) -> Result<Option<f64>, DeError> {
        let start = self.pos;
        match self.data.get(start..start + 9) {
            Some(&[code, b0, b1, b2, b3, b4, b5, b6, b7])
                if code & !FLAG_REF == b'g' && !self.json_only =>
            {
                self.pos += 9;
                self.scalar_slot(code & FLAG_REF != 0 && !self.replay, start)?;
                Ok(Some(f64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7])))
            }
            _ => Ok(None),
        }
    }

    /// An `i` int, flagged or not, read at once: the typed fast path for
    /// integer fields and items. `None` (nothing consumed) for anything else.
    #[inline]
    pub(crate) fn fast_i32(&mut self) -> Result<Option<i32>, DeError> {
        let start = self.pos;
        match self.data.get(start..start + 5) {
            Some(&[code, b0, b1, b2, b3]) if code & !FLAG_REF == b'i' && !self.json_only => {
                self.pos += 5;
                self.scalar_slot(code & FLAG_REF != 0 && !self.replay, start)?;
                Ok(Some(i32::from_le_bytes([b0, b1, b2, b3])))
            }
            _ => Ok(None),
        }
    }

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
                self.text_charge(11)?;
                visitor.visit_i64(i64::from(v))
            }
            b'I' => {
                let v = i64::from_le_bytes(self.bytes8()?);
                self.scalar_slot(flag, start)?;
                self.text_charge(20)?;
                visitor.visit_i64(v)
            }
            b'l' => self.long(start, flag, hint, visitor),
            b'g' => {
                let f = self.f64()?;
                if self.json_only && !f.is_finite() {
                    return Err(DeError::at(start, DecodeErrorKind::NonFinite));
                }
                self.scalar_slot(flag, start)?;
                // Room for the repr text (24 bytes at most, in a buffer
                // that may have doubled).
                self.text_charge(64)?;
                visitor.visit_f64(f)
            }
            b'y' => {
                let (re, im) = (self.f64()?, self.f64()?);
                if self.json_only {
                    return Err(DeError::at(start, DecodeErrorKind::Unsupported("complex")));
                }
                self.scalar_slot(flag, start)?;
                let pair = SeqDeserializer::new([re, im].into_iter());
                match hint {
                    Hint::Exact => visit_magic(visitor, Magic::Complex, pair),
                    _ => visitor.visit_seq(pair),
                }
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
                if self.json_only {
                    return Err(DeError::at(start, DecodeErrorKind::Unsupported("bytes")));
                }
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                let bytes = self.take(n)?;
                self.scalar_slot(flag, start)?;
                self.charge(budget::heap(n))?;
                visitor.visit_borrowed_bytes(bytes)
            }
            b'(' | b')' | b'[' | b'<' | b'>' => self.sequence(start, ty, flag, hint, visitor),
            b'{' => self.dict(start, flag, hint, visitor),
            other => Err(DeError::at(
                start,
                match other {
                    b'c' => DecodeErrorKind::Unsupported("code"),
                    b'.' => DecodeErrorKind::Unsupported("Ellipsis"),
                    b'S' => DecodeErrorKind::Unsupported("StopIteration"),
                    b'x' => DecodeErrorKind::Unsupported("complex as text (marshal version < 2)"),
                    b'f' => DecodeErrorKind::Unsupported("float as text (marshal version < 2)"),
                    _ => DecodeErrorKind::UnknownCode(code),
                },
            )),
        }
    }

    /// A flagged scalar is finished at once: a reference decodes it again
    /// from `start`.
    #[inline]
    fn scalar_slot(&mut self, flag: bool, start: usize) -> Result<(), DeError> {
        if flag {
            self.charge(budget::SLOT)?;
            self.refs.push(start);
        }
        Ok(())
    }

    fn reserve_slot(&mut self, flag: bool) -> Result<Option<usize>, DeError> {
        if !flag {
            return Ok(None);
        }
        self.charge(budget::SLOT)?;
        self.refs.push(PENDING);
        Ok(Some(self.refs.len() - 1))
    }

    fn finish_slot(&mut self, slot: Option<usize>, start: usize) {
        if let Some(i) = slot {
            self.refs[i] = start;
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
        let at = match self.refs.get(idx as usize) {
            None => return Err(DeError::at(start, DecodeErrorKind::BadReference(idx))),
            Some(&PENDING) => {
                return Err(DeError::at(
                    start,
                    DecodeErrorKind::UnfinishedReference(idx),
                ))
            }
            Some(&at) => at,
        };
        let (resume, was) = (self.pos, self.replay);
        self.pos = at;
        self.replay = true;
        let r = self.value_at(at, hint, visitor)?;
        self.pos = resume;
        self.replay = was;
        Ok(r)
    }

    /// The type code a key starts with, through a back-reference (for the
    /// JSON bridge's str-key check).
    pub(crate) fn key_code(&self) -> Result<u8, DeError> {
        let code = self.peek()? & !FLAG_REF;
        if code != b'r' {
            return Ok(code);
        }
        let idx = self
            .data
            .get(self.pos + 1..self.pos + 5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match idx.and_then(|i| self.refs.get(i)) {
            Some(&at) if at != PENDING => Ok(self.data[at] & !FLAG_REF),
            // The read itself reports the bad reference.
            _ => Ok(b'z'),
        }
    }

    fn enter(&mut self, start: usize) -> Result<(), DeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DeError::at(start, DecodeErrorKind::TooDeep(MAX_DEPTH)));
        }
        self.depth += 1;
        Ok(())
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
            // Each byte from 0x80 up takes two in UTF-8.
            let high = bytes.iter().filter(|&&b| b >= 0x80).count();
            self.charge(budget::heap(n + high))?;
            let s: String = bytes.iter().map(|&b| char::from(b)).collect();
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
                    Ok(()) if hint == Hint::Exact && !self.json_only => {
                        self.charge(budget::heap(n))?;
                        visit_magic(
                            visitor,
                            Magic::Surrogates,
                            BorrowedBytesDeserializer::new(bytes),
                        )
                    }
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
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let count = self.u32()? as i32;
        let negative = count < 0;
        let n = count.unsigned_abs() as usize;
        if n > MAX_LONG_DIGITS {
            return Err(DeError::at(start, DecodeErrorKind::IntTooLarge));
        }
        let n = self.count(n, 2)?;
        let bytes = self.take(2 * n)?;
        let digits =
            Digits::check(bytes).map_err(|()| DeError::at(start, DecodeErrorKind::BadLongDigit))?;
        self.scalar_slot(flag, start)?;
        if let Some(mag) = digits.to_u128() {
            self.text_charge(40)?;
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
        if digits.too_many_decimal_digits() || hint != Hint::Exact {
            return Err(DeError::at(start, DecodeErrorKind::IntTooLarge));
        }
        self.charge(budget::big_int(n))?;
        let mut payload = Vec::with_capacity(digits.bits / 8 + 2);
        payload.push(u8::from(negative));
        digits.append_magnitude(&mut payload);
        visit_magic(visitor, Magic::BigInt, BytesDeserializer::new(&payload))
    }

    fn sequence<V: Visitor<'de>>(
        &mut self,
        start: usize,
        ty: u8,
        flag: bool,
        hint: Hint,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (kind, name) = match ty {
            b'<' => (Some(Magic::Set), "set"),
            b'>' => (Some(Magic::FrozenSet), "frozenset"),
            b'[' => (None, "list"),
            _ => (Some(Magic::Tuple), "tuple"),
        };
        if self.json_only && matches!(kind, Some(Magic::Set | Magic::FrozenSet)) {
            return Err(DeError::at(start, DecodeErrorKind::Unsupported(name)));
        }
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
        let mut items = Items { de: self, left: n };
        let v = match kind {
            Some(kind) if hint == Hint::Exact => {
                visit_magic(visitor, kind, SeqAccessDeserializer::new(&mut items))?
            }
            _ => visitor.visit_seq(&mut items)?,
        };
        if items.left != 0 {
            return Err(DeError::at(
                start,
                DecodeErrorKind::Mismatch(format!(
                    "{name} of {n} items, of which the Rust type took {}",
                    n - items.left
                )),
            ));
        }
        self.depth -= 1;
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
        self.depth -= 1;
        self.finish_slot(slot, start);
        Ok(v)
    }
}

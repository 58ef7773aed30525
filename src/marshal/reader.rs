//! The marshal decoder's state over one input: the position, the
//! reference table, the budget, the depth, the [`Hint`] a value is read
//! with, and the primitive reads (bounded by the bytes left) the value
//! function ([`de`](super::de)) and the accessors
//! ([`access`](super::access)) share; it imports neither.

use super::budget::{self, Budget};
use super::error::DeError;
use super::long::{Digits, MAX_LONG_DIGITS};
use super::{FLAG_REF, MAX_DEPTH};
use crate::error::DecodeErrorKind;

/// A reference slot whose container is not finished yet.
const PENDING: usize = usize::MAX;

/// What the caller asked of the next value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// Plain serde data: a tuple, set or frozenset is a sequence, a
    /// complex a pair of floats; an int past 128 bits or a lone surrogate
    /// is an error (only a `Value`, built by `build.rs`, holds them).
    Any,
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
    pub(super) replay: bool,
    /// Inside a dict key or set member: which (for the error), else `None`.
    key: Option<&'static str>,
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
            key: None,
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
    pub(super) fn take(&mut self, n: usize) -> Result<&'de [u8], DeError> {
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
    pub(super) fn u8(&mut self) -> Result<u8, DeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub(super) fn u32(&mut self) -> Result<u32, DeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(super) fn bytes8(&mut self) -> Result<[u8; 8], DeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }

    #[inline]
    pub(super) fn f64(&mut self) -> Result<f64, DeError> {
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
    pub(super) fn count(&self, n: usize, min_item: usize) -> Result<usize, DeError> {
        if n.saturating_mul(min_item) > self.data.len() - self.pos {
            return Err(DeError::at(self.data.len(), DecodeErrorKind::UnexpectedEnd));
        }
        Ok(n)
    }

    #[inline]
    pub(crate) fn charge(&mut self, cost: usize) -> Result<(), DeError> {
        self.budget.charge(cost, self.pos)
    }

    /// A `g` float, flagged or not, read at once: the typed fast path for
    /// `f64` fields and items. `None` (nothing consumed) for anything else.
    #[inline]
    pub(crate) fn fast_f64(&mut self) -> Result<Option<f64>, DeError> {
        let start = self.pos;
        match self.data.get(start..start + 9) {
            Some(&[code, b0, b1, b2, b3, b4, b5, b6, b7]) if code & !FLAG_REF == b'g' => {
                self.pos += 9;
                self.scalar_slot(code & FLAG_REF != 0 && !self.replay, start)?;
                Ok(Some(f64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7])))
            }
            _ => Ok(None),
        }
    }

    /// The next `g` floats without `FLAG_REF`, up to `max` of them, taken
    /// (nine bytes each, code included); empty when the next value is
    /// anything else.
    #[inline]
    pub(crate) fn float_run(&mut self, max: usize) -> &'de [u8] {
        let data = self.data;
        let rest = &data[self.pos..];
        let k = rest
            .chunks_exact(9)
            .take(max)
            .take_while(|g| g[0] == b'g')
            .count();
        let run = &rest[..9 * k];
        self.pos += 9 * k;
        run
    }

    /// An `i` int, flagged or not, read at once: the typed fast path for
    /// integer fields and items. `None` (nothing consumed) for anything else.
    #[inline]
    pub(crate) fn fast_i32(&mut self) -> Result<Option<i32>, DeError> {
        let start = self.pos;
        match self.data.get(start..start + 5) {
            Some(&[code, b0, b1, b2, b3]) if code & !FLAG_REF == b'i' => {
                self.pos += 5;
                self.scalar_slot(code & FLAG_REF != 0 && !self.replay, start)?;
                Ok(Some(i32::from_le_bytes([b0, b1, b2, b3])))
            }
            _ => Ok(None),
        }
    }

    /// A flagged scalar is finished at once: a reference decodes it again
    /// from `start`.
    #[inline]
    pub(super) fn scalar_slot(&mut self, flag: bool, start: usize) -> Result<(), DeError> {
        if flag {
            self.charge(budget::SLOT)?;
            self.refs.push(start);
        }
        Ok(())
    }

    /// An `l`'s body (after its code at `start`): its sign and checked
    /// digits, bounded by [`MAX_LONG_DIGITS`] and what is left of the line.
    pub(super) fn long_digits(
        &mut self,
        start: usize,
        flag: bool,
    ) -> Result<(bool, Digits<'de>), DeError> {
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
        Ok((negative, digits))
    }

    /// A latin-1 string's bytes (not all ASCII) as a `String`: each byte
    /// from 0x80 up takes two in UTF-8, charged so and sized exactly as
    /// charged (collecting would reserve `n` and then double past it; found
    /// by the fuzzer: 2x the charge).
    pub(super) fn latin1(&mut self, bytes: &[u8]) -> Result<String, DeError> {
        let high = bytes.iter().filter(|&&b| b >= 0x80).count();
        self.charge(budget::heap(bytes.len() + high))?;
        let mut s = String::with_capacity(bytes.len() + high);
        s.extend(bytes.iter().map(|&b| char::from(b)));
        Ok(s)
    }

    pub(super) fn reserve_slot(&mut self, flag: bool) -> Result<Option<usize>, DeError> {
        if !flag {
            return Ok(None);
        }
        self.charge(budget::SLOT)?;
        self.refs.push(PENDING);
        Ok(Some(self.refs.len() - 1))
    }

    pub(super) fn finish_slot(&mut self, slot: Option<usize>, start: usize) {
        if let Some(i) = slot {
            self.refs[i] = start;
        }
    }

    /// One more level of nesting, refused past `MAX_DEPTH`.
    pub(super) fn enter(&mut self, start: usize) -> Result<(), DeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DeError::at(start, DecodeErrorKind::TooDeep(MAX_DEPTH)));
        }
        self.depth += 1;
        Ok(())
    }

    /// Closes a level [`enter`](Self::enter) opened.
    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Runs `read` with the value it reads inside a dict key or set member
    /// (`what`): any list, dict or set met before it returns, at any depth
    /// and through references, is refused by [`unhashable`](Self::unhashable).
    #[inline]
    pub(super) fn in_key<R>(
        &mut self,
        what: &'static str,
        read: impl FnOnce(&mut Self) -> Result<R, DeError>,
    ) -> Result<R, DeError> {
        let was = self.key.replace(what);
        let r = read(self);
        self.key = was;
        r
    }

    /// Refuses a list, dict or set (type code `ty`, starting at `start`)
    /// inside a dict key or set member: Python cannot hash it, and
    /// `marshal.loads` raises `TypeError: unhashable type: 'list'`. Known
    /// where the container starts, so nothing is ever walked twice: a key
    /// is checked in the time it takes to read it.
    #[inline]
    pub(super) fn unhashable(&self, start: usize, ty: u8) -> Result<(), DeError> {
        let Some(what) = self.key else {
            return Ok(());
        };
        let kind = match ty {
            b'[' => "list",
            b'{' => "dict",
            b'<' => "set",
            _ => return Ok(()),
        };
        Err(DeError::at(
            start,
            DecodeErrorKind::Unhashable { what, kind },
        ))
    }

    /// Where the object of reference slot `idx` starts; `start` is where
    /// the `r` stands, for the error.
    pub(super) fn slot_start(&self, start: usize, idx: u32) -> Result<usize, DeError> {
        match self.refs.get(idx as usize) {
            None => Err(DeError::at(start, DecodeErrorKind::BadReference(idx))),
            Some(&PENDING) => Err(DeError::at(
                start,
                DecodeErrorKind::UnfinishedReference(idx),
            )),
            Some(&at) => Ok(at),
        }
    }
}

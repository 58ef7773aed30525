//! The marshal decoder's state over one input: the position, the
//! reference table, the budget, the depth, the [`Hint`] a value is read
//! with, and the primitive reads (bounded by the bytes left) the value
//! function ([`de`](super::de)) and the accessors
//! ([`access`](super::access)) share; it imports neither.

use super::budget::{self, Budget};
use super::error::DeError;
use super::{FLAG_REF, MAX_DEPTH};
use crate::error::DecodeErrorKind;

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
    pub(super) replay: bool,
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

    /// Refuses a dict key or set member that is a list, dict or set (through
    /// a reference too), as `marshal.loads` does (unhashable) and as the
    /// encoder does: only the outer type, as there. Reads nothing.
    pub(super) fn hashable(&self, what: &'static str) -> Result<(), DeError> {
        let at = self.pos;
        let mut code = self.peek()? & !FLAG_REF;
        if code == b'r' {
            let idx = self
                .data
                .get(at + 1..at + 5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            // A bad reference is the read's own error to report.
            let Some(Ok(slot)) = idx.map(|i| self.slot_start(at, i)) else {
                return Ok(());
            };
            code = self.data.get(slot).map_or(0, |c| c & !FLAG_REF);
        }
        let kind = match code {
            b'[' => "list",
            b'{' => "dict",
            b'<' => "set",
            _ => return Ok(()),
        };
        Err(DeError::at(at, DecodeErrorKind::Unhashable { what, kind }))
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

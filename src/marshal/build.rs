//! The decoder's direct path to a [`Value`]: the same reads, slots,
//! references, charges and errors as the serde path in
//! [`de`](super::de) (exact mode), building each `Value` in place instead
//! of passing it through a visitor.
//!
//! Why a second path: through serde every item of a list is a
//! `Result<Value, _>` returned through several generic layers, and a
//! 100,000-float list spent most of its decode moving those results
//! between stack slots. Here an item is read and written once, into a
//! buffer sized from the checked count (charged before, as in the serde
//! path), and a `g` item takes a fast path of its own.
//!
//! A dict key or set member is read [`in_key`](Reader::in_key): a list,
//! dict or set inside one is refused where it starts, so hashability costs
//! nothing beyond reading the key once.

use num_bigint::{BigInt, Sign};

use super::budget;
use super::codes::{refused, surrogates};
use super::error::DeError;
use super::reader::Reader;
use super::FLAG_REF;
use crate::error::DecodeErrorKind;
use crate::value::{Dict, Set, Value};

impl Reader<'_> {
    /// Reads one value as a [`Value`] (what the serde path gives `Value`
    /// in exact mode, byte for byte the same errors).
    pub(crate) fn build(&mut self) -> Result<Value, DeError> {
        let start = self.pos;
        let code = self.u8()?;
        let ty = code & !FLAG_REF;
        // Singletons never take a slot, flagged or not (as in CPython).
        let flag = code & FLAG_REF != 0 && !self.replay;
        Ok(match ty {
            b'N' => Value::None,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'r' => {
                let idx = self.u32()?;
                return self.build_follow(start, idx);
            }
            b'i' => {
                let v = self.u32()? as i32;
                self.scalar_slot(flag, start)?;
                Value::Int(i64::from(v))
            }
            b'I' => {
                let v = i64::from_le_bytes(self.bytes8()?);
                self.scalar_slot(flag, start)?;
                Value::Int(v)
            }
            b'l' => self.build_long(start, flag)?,
            b'g' => {
                let f = self.f64()?;
                self.scalar_slot(flag, start)?;
                Value::Float(f)
            }
            b'y' => {
                let (re, im) = (self.f64()?, self.f64()?);
                self.scalar_slot(flag, start)?;
                Value::Complex { re, im }
            }
            b'z' | b'Z' => {
                let n = usize::from(self.u8()?);
                self.build_str(start, flag, n, true)?
            }
            b'a' | b'A' => {
                let n = self.u32()? as usize;
                self.build_str(start, flag, n, true)?
            }
            b'u' | b't' => {
                let n = self.u32()? as usize;
                self.build_str(start, flag, n, false)?
            }
            b's' => {
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                let bytes = self.take(n)?;
                self.scalar_slot(flag, start)?;
                self.charge(budget::heap(n))?;
                Value::Bytes(bytes.to_vec())
            }
            b'(' | b')' | b'[' | b'<' | b'>' => {
                self.unhashable(start, ty)?;
                self.build_sequence(start, ty, flag)?
            }
            b'{' => {
                self.unhashable(start, ty)?;
                self.build_dict(start, flag)?
            }
            _ => return Err(DeError::at(start, refused(code))),
        })
    }

    /// Builds the referenced object again from its bytes (charged again).
    fn build_follow(&mut self, start: usize, idx: u32) -> Result<Value, DeError> {
        let at = self.slot_start(start, idx)?;
        let (resume, was) = (self.pos, self.replay);
        self.pos = at;
        self.replay = true;
        let v = self.build()?;
        self.pos = resume;
        self.replay = was;
        Ok(v)
    }

    fn build_str(
        &mut self,
        start: usize,
        flag: bool,
        n: usize,
        latin1: bool,
    ) -> Result<Value, DeError> {
        let n = self.count(n, 1)?;
        let at = self.pos;
        let bytes = self.take(n)?;
        self.scalar_slot(flag, start)?;
        if latin1 && !bytes.is_ascii() {
            return Ok(Value::Str(self.latin1(bytes)?));
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.charge(budget::heap(n))?;
                Ok(Value::Str(s.to_owned()))
            }
            Err(_) => match surrogates(bytes) {
                Err(bad) => Err(DeError::at(at + bad, DecodeErrorKind::InvalidUtf8)),
                Ok(()) => {
                    self.charge(budget::heap(n))?;
                    Value::from_generalized_utf8(bytes)
                        .ok_or_else(|| DeError::at(at, DecodeErrorKind::InvalidUtf8))
                }
            },
        }
    }

    /// `l`: as the serde path reads it, an `Int` when it fits `i64`.
    fn build_long(&mut self, start: usize, flag: bool) -> Result<Value, DeError> {
        let (negative, digits) = self.long_digits(start, flag)?;
        let sign = if negative { Sign::Minus } else { Sign::Plus };
        // Up to 128 bits (a negative one: its magnitude up to 2^127), no
        // charge, as the serde path's 128-bit visits.
        match digits.to_u128() {
            Some(mag) if negative && mag <= 1 << 63 => {
                return Ok(Value::Int((mag as i64).wrapping_neg()))
            }
            Some(mag) if !negative && mag <= i64::MAX as u128 => return Ok(Value::Int(mag as i64)),
            Some(mag) if !negative || mag <= 1 << 127 => {
                return Ok(Value::BigInt(Box::new(BigInt::from_biguint(
                    sign,
                    mag.into(),
                ))))
            }
            _ => {}
        }
        if digits.too_many_decimal_digits() {
            return Err(DeError::at(start, DecodeErrorKind::IntTooLarge));
        }
        self.charge(budget::big_int(digits.bytes.len() / 2))?;
        let magnitude = digits.magnitude_le();
        Ok(Value::BigInt(Box::new(BigInt::from_bytes_le(
            sign, &magnitude,
        ))))
    }

    fn build_sequence(&mut self, start: usize, ty: u8, flag: bool) -> Result<Value, DeError> {
        let n = if ty == b')' {
            usize::from(self.u8()?)
        } else {
            self.u32()? as usize
        };
        let n = self.count(n, 1)?;
        self.enter(start)?;
        let members = ty == b'<' || ty == b'>';
        // The whole buffer is charged before it is reserved (as the serde
        // path charges it), so the reservations of all open levels stay in
        // the budget; the count fits the bytes left.
        let each = if members {
            budget::ITEM + budget::MEMBER
        } else {
            budget::ITEM
        };
        self.charge(n.saturating_mul(each))?;
        let slot = self.reserve_slot(flag)?;
        let v = if members {
            let mut set = Set::with_capacity(n);
            for _ in 0..n {
                // An equal member already there stays (as `set.add`).
                set.insert(self.in_key("set member", Self::build)?);
            }
            if ty == b'<' {
                Value::Set(set)
            } else {
                Value::FrozenSet(set)
            }
        } else {
            let mut items = Vec::with_capacity(n);
            while items.len() < n {
                // A run of plain floats (a list of floats is one) in one
                // pass: `extend` writes each `Value` straight into the
                // buffer, where a `push` per item went through a temporary
                // and cost a store-forwarding stall each.
                let run = self.float_run(n - items.len());
                if run.is_empty() {
                    items.push(self.build()?);
                    continue;
                }
                items.extend(run.chunks_exact(9).map(|g| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&g[1..]);
                    Value::Float(f64::from_le_bytes(b))
                }));
            }
            if ty == b'[' {
                Value::List(items)
            } else {
                Value::Tuple(items)
            }
        };
        self.leave();
        self.finish_slot(slot, start);
        Ok(v)
    }

    fn build_dict(&mut self, start: usize, flag: bool) -> Result<Value, DeError> {
        self.enter(start)?;
        self.charge(budget::DICT)?;
        let slot = self.reserve_slot(flag)?;
        let mut dict = Dict::new();
        let mut base = budget::MAP_BASE;
        while self.peek()? != b'0' {
            // Charged even when the key repeats (and replaces).
            self.charge(budget::ENTRY + base)?;
            base = 0;
            let key = self.in_key("dict key", Self::build)?;
            let value = self.build()?;
            // A repeated key keeps its place and takes the last value.
            dict.insert(key, value);
        }
        self.pos += 1;
        self.leave();
        self.finish_slot(slot, start);
        Ok(Value::Dict(dict))
    }
}
